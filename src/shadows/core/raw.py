"""``adata.raw`` of a shadow: X, var and varm of the raw group, read lazily like the rest."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import pandas as pd

from shadows.core import annotations
from shadows.core.aligned import ElementMapping

if TYPE_CHECKING:
    from shadows.core.elements import ShadowElements


class RawShadow:
    """The raw slot: shares obs with its shadow, has its own var, X and varm.

    Parameters
    ----------
    elements
        The elements of the shadow (:class:`~shadows.core.elements.ShadowElements`); raw's are
        ``raw/X``, ``raw/var`` and ``raw/varm/<key>`` among them.
    """

    def __init__(self, elements: ShadowElements):
        self._elements = elements
        self._varm = ElementMapping(elements, "raw/varm", partial(elements.stored_children, "raw/varm"))

    @property
    def X(self) -> Any:
        """The raw matrix.

        With ``array_backend="dask"`` it is what an in-memory AnnData holds (scipy CSR/CSC or numpy,
        this view's rows), read on first access and held (ᐁ) until ``clear_cache()``: scanpy uses raw
        for the tests of ``rank_genes_groups`` (wilcoxon takes no dask array), ``get.obs_df(use_raw=True)``
        and the genes its plots draw. Its dask graph is ``element_value("raw/X")`` (what exports stream).
        Other backends present it as they present X.
        """
        elements = self._elements
        if elements.arrays.name == "dask" and not elements.is_stale("raw/X"):
            return elements.element("raw/X").memory_value()
        return elements.element("raw/X").value()

    @property
    def var(self) -> Any:
        """The raw var dataframe."""
        return self._elements.element("raw/var").value()

    @property
    def varm(self) -> ElementMapping:
        """The raw varm mapping."""
        return self._varm

    @property
    def var_names(self) -> pd.Index:
        """Names of the raw variables."""
        return annotations.names(self._elements, "raw/var")

    @property
    def obs_names(self) -> pd.Index:
        """Names of the observations (the shadow's)."""
        return annotations.names(self._elements, "obs")

    @property
    def n_obs(self) -> int:
        """Number of observations."""
        return self._elements.axis_length(0)

    @property
    def n_vars(self) -> int:
        """Number of raw variables."""
        return int(self._elements.layout.spec("raw/var").shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """(n_obs, n_vars) of raw."""
        return (self.n_obs, self.n_vars)

    def var_vector(self, k: str) -> Any:
        """Values of raw X for observation ``k`` (by name)."""
        return self._elements.element("raw/X").vector((self.obs_names.get_loc(k), slice(None)))

    def obs_vector(self, k: str) -> Any:
        """Values of raw X for variable ``k`` (by name)."""
        return self._elements.element("raw/X").vector((slice(None), self.var_names.get_loc(k)))

    def __getitem__(self, index: Any) -> Any:
        """``raw[cells, genes]`` (an ``anndata.Raw`` of that part, see :meth:`_subset`), or for
        ``adata.raw[A.X[:, "CD3E"]]`` (an ``anndata.acc`` reference, anndata >= 0.13) that array.

        scanpy's plotting asks raw for a gene this way. anndata resolves ``A.X[...]`` through
        ``raw[idx].X``; here a gene or a cell is read here
        as :meth:`obs_vector`/:meth:`var_vector` read it (one column or row of raw X). Other
        references (``A.var[k]``, ``A.varm[k]``) go through anndata.
        """
        from shadows.core.references import ARRAY_REFERENCES, get_by_reference

        if not isinstance(index, ARRAY_REFERENCES):
            return self._subset(index)
        from anndata.acc import AdRef, LayerAcc  # importable: index is one of its references

        if isinstance(index, AdRef) and isinstance(index.acc, LayerAcc) and index.acc.k is None:  # A.X[...]
            rows, columns = index.idx
            if isinstance(columns, str) and rows == slice(None):
                return self.obs_vector(columns)
            if isinstance(rows, str) and columns == slice(None):
                return self.var_vector(rows)
            if rows == slice(None) and columns == slice(None):
                return self.X
        return get_by_reference(self, index)

    def to_adata(self):
        """The raw slot as an in-memory AnnData, as anndata's ``Raw.to_adata``: raw's X, var and varm with
        the shadow's obs, obsm, obsp and uns.
        """
        import anndata

        elements = self._elements
        return anndata.AnnData(X=elements.plain("raw/X"), var=elements.plain("raw/var"), varm=self._varm_memory(),
                               obs=elements.plain("obs"), obsm=elements.slot_values("obsm", elements.plain),
                               obsp=elements.slot_values("obsp", elements.plain),
                               uns=elements.slots["uns"].materialize())

    def _subset(self, index: Any):
        """``raw[cells, genes]`` as anndata gives it: an ``anndata.Raw`` of the selected part, reading only
        the selected rows and columns of raw X.
        """
        import anndata

        from shadows.indexing import normalize_key
        from shadows.indexing.keys import as_positions

        rows, columns = index if isinstance(index, tuple) else (index, slice(None))
        whole = isinstance(rows, slice) and rows == slice(None)
        elements = self._elements if whole else self._elements.view_of((rows, slice(None)))
        _, kept = normalize_key((slice(None), columns), (elements.axis_length(0), self.n_vars),
                                (lambda: annotations.names(elements, "obs"), lambda: self.var_names))
        positions = as_positions(kept)
        X = elements.element("raw/X").columns(positions)
        var = elements.element("raw/var").value().iloc[positions]
        varm = {k: self._elements.plain(f"raw/varm/{k}")[positions] for k in self._varm}
        shadow = self._elements.shadow if whole else self._elements.wrap(elements)
        return anndata.Raw(shadow, X=X, var=var, varm=varm)

    def _varm_memory(self) -> dict:
        return {k: self._elements.plain(f"raw/varm/{k}") for k in self._varm}

    def __repr__(self) -> str:
        var = self._elements.layout.spec("raw/var")
        return (f"Raw Shadow with n_obs × n_vars = {self.n_obs} × {self.n_vars}\n"
                f"  var: {', '.join(var.columns)}\n  {self._varm!r}")


class PendingRaw:
    """``adata.raw`` between a private ``adata._obs = ...`` (muon's in-place filters) and the assignment
    of its kept rows: the raw of before, until ``raw._X`` is given the kept rows (then raw▲ holds them).
    """

    def __init__(self, elements: Any, before: Any):
        self._elements = elements
        self._before = before

    def __getattr__(self, name: str) -> Any:
        return getattr(self._before, name)

    @property
    def _X(self) -> Any:
        return self._before.X

    @_X.setter
    def _X(self, value: Any) -> None:
        self._elements.set_raw_matrix(value, self._before)
