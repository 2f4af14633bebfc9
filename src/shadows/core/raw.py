"""``adata.raw`` of a shadow: X, var and varm of the raw group, read lazily like the rest."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import pandas as pd

from shadows.core.aligned import ElementMapping, in_memory

if TYPE_CHECKING:
    from shadows.core.interface import ShadowLike


class RawShadow:
    """The raw slot: shares obs with its shadow, has its own var, X and varm."""

    def __init__(self, shadow: ShadowLike):
        self._shadow = shadow
        self._varm = ElementMapping(shadow, "raw/varm", partial(shadow._stored_children, "raw/varm"))

    @property
    def X(self) -> Any:
        """The raw matrix.

        With ``array_backend="dask"`` it is what an in-memory AnnData holds (scipy CSR/CSC or numpy,
        this view's rows), read on first access and held (ᐁ) until ``clear_cache()``: scanpy uses raw
        for the tests of ``rank_genes_groups`` (wilcoxon takes no dask array), ``get.obs_df(use_raw=True)``
        and the genes its plots draw. Its dask graph is ``element_value("raw/X")`` (what exports stream).
        Other backends present it as they present X.
        """
        shadow = self._shadow
        if shadow._array_backend.name == "dask" and not shadow._state.is_stale("raw/X"):
            return in_memory(shadow, "raw/X")
        return shadow._element("raw/X")

    @property
    def var(self) -> Any:
        """The raw var dataframe."""
        return self._shadow._element("raw/var")

    @property
    def varm(self) -> ElementMapping:
        """The raw varm mapping."""
        return self._varm

    @property
    def var_names(self) -> pd.Index:
        """Names of the raw variables."""
        return self._shadow._names("raw/var")

    @property
    def obs_names(self) -> pd.Index:
        """Names of the observations (the shadow's)."""
        return self._shadow.obs_names

    @property
    def n_obs(self) -> int:
        """Number of observations."""
        return self._shadow.n_obs

    @property
    def n_vars(self) -> int:
        """Number of raw variables."""
        return int(self._shadow._layout.spec("raw/var").shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """(n_obs, n_vars) of raw."""
        return (self.n_obs, self.n_vars)

    def var_vector(self, k: str) -> Any:
        """Values of raw X for observation ``k`` (by name)."""
        return self._shadow._row_of("raw/X", self.obs_names.get_loc(k))

    def obs_vector(self, k: str) -> Any:
        """Values of raw X for variable ``k`` (by name)."""
        j = self.var_names.get_loc(k)
        return self._shadow._column_of("raw/X", j)

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

        shadow = self._shadow
        return anndata.AnnData(X=shadow._plain("raw/X"), var=shadow._plain("raw/var"), varm=self._varm_memory(),
                               obs=shadow._plain("obs"), obsm=shadow._slot_values("obsm", shadow._plain),
                               obsp=shadow._slot_values("obsp", shadow._plain), uns=shadow.uns.materialize())

    def _subset(self, index: Any):
        """``raw[cells, genes]`` as anndata gives it: an ``anndata.Raw`` of the selected part, reading only
        the selected rows and columns of raw X.
        """
        import anndata

        from shadows.indexing import normalize_key
        from shadows.indexing.keys import as_positions
        from shadows.indexing.selection import selection_for

        rows, columns = index if isinstance(index, tuple) else (index, slice(None))
        shadow = self._shadow if isinstance(rows, slice) and rows == slice(None) else self._shadow[rows]
        _, kept = normalize_key((slice(None), columns), (shadow.n_obs, self.n_vars),
                                (lambda: shadow.obs_names, lambda: self.var_names))
        positions = as_positions(kept)
        spec = shadow._layout.spec("raw/X")
        selection = selection_for("raw/X", spec, shadow._view) or (None, None)
        X = spec.read_selection((selection[0], positions))
        var = shadow.raw.var.iloc[positions]
        varm = {k: self._shadow._plain(f"raw/varm/{k}")[positions] for k in self._varm}
        return anndata.Raw(shadow, X=X, var=var, varm=varm)

    def _varm_memory(self) -> dict:
        return {k: self._shadow._plain(f"raw/varm/{k}") for k in self._varm}

    def __repr__(self) -> str:
        var = self._shadow._layout.spec("raw/var")
        return (f"Raw Shadow with n_obs × n_vars = {self.n_obs} × {self.n_vars}\n"
                f"  var: {', '.join(var.columns)}\n  {self._varm!r}")


class PendingRaw:
    """``adata.raw`` between a private ``adata._obs = ...`` (muon's in-place filters) and the assignment
    of its kept rows: the raw of before, until ``raw._X`` is given the kept rows (then raw▲ holds them).
    """

    def __init__(self, shadow: Any, before: Any):
        self._shadow = shadow
        self._before = before

    def __getattr__(self, name: str) -> Any:
        return getattr(self._before, name)

    @property
    def _X(self) -> Any:
        return self._before.X

    @_X.setter
    def _X(self, value: Any) -> None:
        self._shadow._set_raw_matrix(value, self._before)
