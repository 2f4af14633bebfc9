"""AnnDataShadow: an AnnData whose elements stay in the file until asked for."""

from __future__ import annotations

import os
from typing import Any

import anndata
import numpy as np

from shadows.core import view_categories
from shadows.core.aligned import ElementMapping
from shadows.core.base import READ_ONLY_MESSAGE, ShadowBase
from shadows.core.layout import AnnDataLayout
from shadows.core.raw import RawShadow
from shadows.elements.sparse_chunk import to_plain
from shadows.errors import MissingElementError, element_message
from shadows.indexing.apply import SLOT_AXES, element_axes, selection_for
from shadows.indexing.keys import as_positions
from shadows.writing.export import export

try:  # anndata >= 0.13: ``adata[A.obs["louvain"]]``, ``adata[A.X[:, "CD3E"]]`` (scanpy's plotting uses them)
    from anndata.acc import AdRef, MapAcc, RefAcc

    ARRAY_REFERENCES: tuple[type, ...] = (AdRef, RefAcc, MapAcc)
except ImportError:  # older anndata has no array references; nothing is one
    ARRAY_REFERENCES = ()

__all__ = ["ARRAY_REFERENCES", "READ_ONLY_MESSAGE", "AnnDataShadow", "get_by_reference"]


def get_by_reference(data: Any, index: Any) -> Any:
    """The array an ``anndata.acc`` reference points at in ``data``, as ``AnnData.__getitem__`` returns it.

    anndata resolves a reference through public attributes only (``data.obs[k].array``,
    ``data[:, "CD3E"].X``, ``data.obsm[k]``), so on a shadow it reads just what that needs. Called for
    an ``index`` that is an instance of :data:`ARRAY_REFERENCES`.
    """
    if isinstance(index, AdRef):
        return index.acc.get(data, index.idx)
    if isinstance(index, RefAcc):
        return index.get(data)
    raise IndexError(f"Cannot index with {index} because this is not a path to an array-like structure.")


class AnnDataShadow(ShadowBase, anndata.AnnData):
    """An AnnData backed by a file that reads only what is asked for.

    Opening reads metadata only. Each stored element is a dask graph reading from the file by path;
    with the default backends an element is computed on first access and kept in memory (ᐁ in the
    repr) until :meth:`clear_cache`.

    Parameters
    ----------
    filepath
        An ``.h5ad`` file, an AnnData Zarr store (format 2 or 3), or one modality of a MuData file as
        ``file.h5mu/mod/<name>``.
    array_backend
        ``"numpy"`` (numpy and scipy.sparse, as AnnData), ``"dask"`` (the graphs), ``"jax"``,
        ``"torch"``, ``"cupy"`` or ``"sparse"`` (pydata).
    table_backend
        ``"pandas"``, ``"dask"``, ``"polars"`` or ``"pyarrow"``.
    mode
        ``"r"`` (default) or ``"r+"``.
    format
        ``"hdf5"``/``"h5"`` or ``"zarr"``; inferred from the path when omitted.
    """

    _LAYOUT = AnnDataLayout
    _SLOTS = tuple(SLOT_AXES)
    _KIND = "AnnData"

    # -- what AnnData's views change besides slicing -------------------------------------------

    def _visible_uns_keys(self) -> list[str]:
        keys = self._layout.mapping_keys("uns")
        if self._view is not None:
            hidden = view_categories.hidden_color_keys(self._layout)
            keys = [k for k in keys if k not in hidden]
        return keys

    def _view_value(self, rel: str, spec: Any, value: Any) -> Any:
        """AnnData's views drop unused categories and subset ``uns["<column>_colors"]`` to match."""
        if not view_categories.enabled():
            return value
        if spec.kind == "dataframe" and element_axes(rel):  # obs, var and dataframes in obsm/varm
            return view_categories.drop_unused(value)
        if rel.startswith("uns/"):
            return view_categories.subset_colors(rel[4:], value, self._layout, self._view_column)
        return value

    def _view_column(self, frame_rel: str, key: str) -> Any:
        """One obs/var column of this view, with unused categories dropped as AnnData's views do."""
        values = super()._view_column(frame_rel, key)
        return view_categories.drop_unused_values(values) if self._view is not None else values

    # -- reading vectors -------------------------------------------------------------------------

    def _vector_of(self, rel: str, key: tuple) -> np.ndarray:
        """One row or column of a matrix element as a 1-d numpy array (reads only what it needs).

        A sparse element not held in memory gets a graph that selects the one row/column inside its
        read tasks (for CSC X a gene is one contiguous read; for CSR X row blocks are scanned in
        parallel, in bounded memory).
        """
        spec = self._layout.spec(rel)
        if spec.kind == "sparse" and rel not in self._cache:
            selection = selection_for(rel, spec, self._view) or (None, None)
            axes = [range(n) if s is None else s for s, n in zip(selection, spec.shape, strict=True)]
            axis = 0 if isinstance(key[0], int | np.integer) else 1
            axes[axis] = np.asarray([as_positions(axes[axis])[key[axis]]])
            vector = to_plain(spec.select_graph(axes[0], axes[1]).compute())
        else:
            value = self._cache[rel] if rel in self._cache else self._graph(rel)
            vector = value[key]
            vector = vector.compute() if hasattr(vector, "dask") else vector
        if hasattr(vector, "toarray"):
            vector = vector.toarray()
        return np.asarray(vector).reshape(-1)

    def _column_of(self, rel: str, j: int) -> np.ndarray:
        """Column ``j`` of a matrix element."""
        return self._vector_of(rel, (slice(None), j))

    def _row_of(self, rel: str, i: int) -> np.ndarray:
        """Row ``i`` of a matrix element."""
        return self._vector_of(rel, (i, slice(None)))

    # -- AnnData's attributes ----------------------------------------------------------------------

    @property
    def X(self) -> Any:
        """The main matrix (``None`` when the file has none)."""
        return self._element("X") if self._layout.has("X") else None

    @property
    def layers(self) -> ElementMapping:
        """Layers: matrices shaped like X."""
        return self._slots["layers"]

    @property
    def raw(self) -> RawShadow | None:
        """The raw slot, or ``None`` when the file has none."""
        if not self._layout.has_raw:
            return None
        if "raw" not in self._graphs:
            self._graphs["raw"] = RawShadow(self)
        return self._graphs["raw"]

    def obs_vector(self, k: str, *, layer: str | None = None) -> Any:
        """Values of obs column ``k``, or of variable ``k`` across observations (from X or ``layer``)."""
        if k in self.obs_keys():
            return self._frame_column("obs", k)
        names = self.var_names
        if k not in names:
            raise MissingElementError(element_message(self.filename, "obs", f"'{k}' is neither an obs column "
                                                      "nor a var name"))
        return self._column_of("X" if layer is None else f"layers/{layer}", names.get_loc(k))

    def var_vector(self, k: str, *, layer: str | None = None) -> Any:
        """Values of var column ``k``, or of observation ``k`` across variables."""
        if k in self.var_keys():
            return self._frame_column("var", k)
        names = self.obs_names
        if k not in names:
            raise MissingElementError(element_message(self.filename, "var", f"'{k}' is neither a var column "
                                                      "nor an obs name"))
        return self._row_of("X" if layer is None else f"layers/{layer}", names.get_loc(k))

    # -- conversions -----------------------------------------------------------------------------

    def to_memory(self) -> anndata.AnnData:
        """A real in-memory AnnData with every element read (equal to anndata's own read)."""
        plain = {slot: self._slot_values(slot, self._plain) for slot in self._SLOTS}
        adata = anndata.AnnData(
            X=to_plain(self._plain("X")) if self._layout.has("X") else None,
            obs=self._plain("obs"),
            var=self._plain("var"),
            uns=self.uns.materialize(),
            **plain,
        )
        if self.raw is not None:
            adata.raw = self.raw.to_adata()
        return adata

    def write_h5ad(self, filename: str | os.PathLike, *, progress: bool = False, **_: Any) -> None:
        """Write this shadow (or view: only its selection) to a new ``.h5ad`` file, out of core.

        Matrices stream from the file block by block; ``progress=True`` shows dask's progress bar.
        anndata's compression options are not supported and ignored.
        """
        export(self, filename, "hdf5", progress=progress)

    def __getitem__(self, index: Any) -> AnnDataShadow:
        """A view (see :meth:`ShadowBase._view_of`); ``type(view) is AnnDataShadow``.

        An ``anndata.acc`` reference (``adata[A.obs["louvain"]]``, anndata >= 0.13) returns the array it
        points at, as AnnData does.
        """
        if isinstance(index, ARRAY_REFERENCES):
            return get_by_reference(self, index)
        return self._view_of(index)
