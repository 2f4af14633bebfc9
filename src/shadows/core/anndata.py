"""AnnDataShadow: an AnnData whose elements stay in the file until asked for."""

from __future__ import annotations

import os
from typing import Any

import anndata
import numpy as np
import pandas as pd

from shadows import convert
from shadows.backends import FileRef, resolve
from shadows.backends.handles import open_file, open_metadata, release
from shadows.cache import ElementCache
from shadows.core import view_categories
from shadows.core.aligned import SLOT_AXES, ElementMapping, UnsMapping
from shadows.core.layout import Layout
from shadows.core.raw import RawShadow
from shadows.elements.sparse_chunk import to_plain
from shadows.errors import MissingElementError, ReadOnlyError, ShadowsError, element_message
from shadows.indexing import AxisIndex, compose, normalize_key
from shadows.indexing.apply import (
    element_axes,
    materialize_selection,
    read_column,
    read_index,
    select_graph,
    selection_for,
)
from shadows.indexing.keys import as_positions

READ_ONLY_MESSAGE = (
    "File is open in read-only mode. Changes can't be pushed. Reopen it with .reopen('r+') to enable writing."
)
_MODES = ("r", "r+")


class AnnDataShadow(anndata.AnnData):
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

    def __init__(
        self,
        filepath: str | os.PathLike,
        array_backend: str = "numpy",
        table_backend: str = "pandas",
        mode: str = "r",
        format: str | None = None,
    ):
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        self._ref: FileRef = resolve(filepath, format)
        self._array_backend = convert.array_backend(array_backend)
        self._table_backend = convert.table_backend(table_backend)
        self._connect(mode)
        self._root = self
        self._view: tuple[AxisIndex, AxisIndex] | None = None
        self._init_memory()

    def _init_memory(self) -> None:
        """Fresh in-memory state: cache, graphs, and the mapping slots (a view gets its own)."""
        self._cache = ElementCache()
        self._graphs: dict[str, Any] = {}
        self._slots = {slot: ElementMapping(self, slot, self._layout.mapping_keys(slot)) for slot in SLOT_AXES}
        uns_keys = self._layout.mapping_keys("uns")
        if self._view is not None:
            hidden = view_categories.hidden_color_keys(self._layout)
            uns_keys = [k for k in uns_keys if k not in hidden]
        self._slots["uns"] = UnsMapping(self, "uns", uns_keys)
        self._uns_levels: dict[str, UnsMapping] = {"uns": self._slots["uns"]}

    @classmethod
    def _make_view(cls, root: AnnDataShadow, obs: AxisIndex, var: AxisIndex) -> AnnDataShadow:
        """A view of ``root`` keeping positions ``obs`` and ``var`` (relative to the root)."""
        view = cls.__new__(cls)
        view._ref, view._array_backend, view._table_backend = root._ref, root._array_backend, root._table_backend
        view._root = root
        view._view = (obs, var)
        view._init_memory()
        return view

    @property
    def _layout(self) -> Layout:
        return self._root._file_layout

    @property
    def _mode(self) -> str:
        return self._root._file_mode

    def _connect(self, mode: str) -> None:
        """Open the file's metadata in ``mode`` and map its layout (no data is read)."""
        self._file_mode = mode
        if mode != "r":
            # HDF5 refuses to open a file for writing while this process holds it open read-only: drop
            # the read handles graph tasks keep (they reopen, sharing the writable handle).
            release(self._ref.path)
        self._handle = open_metadata(self._ref.path, self._ref.format, mode)
        self._zarr_group = None
        try:
            self._file_layout = Layout(self._ref, self._handle)
        except BaseException:
            self._close_handle()
            raise

    # -- reading elements ------------------------------------------------------------------------

    def _backend_for(self, kind: str) -> convert.Backend | None:
        if kind in ("dense", "sparse"):
            return self._array_backend
        if kind == "dataframe":
            return self._table_backend
        return None

    def _graph(self, rel: str) -> Any:
        if rel not in self._graphs:
            spec = self._layout.spec(rel)
            selection = selection_for(rel, spec, self._view)
            self._graphs[rel] = select_graph(spec, selection) if selection else spec.graph()
        return self._graphs[rel]

    def _materialize(self, rel: str) -> Any:
        """Read the element (this view's part of it) as numpy/scipy/pandas."""
        spec = self._layout.spec(rel)
        value = materialize_selection(spec, selection_for(rel, spec, self._view))
        if self._view is not None and view_categories.enabled():
            if spec.kind == "dataframe" and element_axes(rel):  # obs, var and dataframes in obsm/varm
                value = view_categories.drop_unused(value)
            elif rel.startswith("uns/"):
                value = view_categories.subset_colors(rel[4:], value, self._layout, self._view_column)
        return value

    def _view_column(self, frame_rel: str, key: str) -> Any:
        """One obs/var column of this view, with unused categories dropped as AnnData's views do."""
        values = read_column(self._layout.spec(frame_rel).column(key), self._frame_rows(frame_rel))
        return view_categories.drop_unused_values(values) if self._view is not None else values

    def _element(self, rel: str) -> Any:
        """The element at ``rel`` as the shadow's backends present it (cached per section 4 of DESIGN)."""
        spec = self._layout.spec(rel)
        backend = self._backend_for(spec.kind)
        if rel in self._cache:
            return self._cache[rel]
        if backend is not None and backend.lazy:
            return self._graph(rel)
        if backend is None:
            return self._cache.get(rel, lambda: self._materialize(rel))
        return self._cache.get(rel, lambda: backend.convert(self._materialize(rel)))

    def _plain(self, rel: str) -> Any:
        """The element at ``rel`` as numpy/scipy/pandas, whatever the backends (for to_memory)."""
        spec = self._layout.spec(rel)
        backend = self._backend_for(spec.kind)
        if backend is not None and backend.name in ("numpy", "pandas") and rel in self._cache:
            return self._cache[rel]
        if spec.kind == "mapping":
            return self._uns_child(rel).materialize()
        return self._materialize(rel)

    def _uns_child(self, rel: str) -> Any:
        spec = self._layout.spec(rel)
        if spec.kind != "mapping":
            return self._element(rel)
        if rel not in self._uns_levels:
            self._uns_levels[rel] = UnsMapping(self, rel, self._layout.children(rel))
        return self._uns_levels[rel]

    def _is_cached(self, rel: str) -> bool:
        return rel in self._cache

    def _frame_rows(self, frame_rel: str) -> AxisIndex | None:
        """The rows of a dataframe element this shadow sees (``None``: all)."""
        spec = self._layout.spec(frame_rel)
        selection = selection_for(frame_rel, spec, self._view)
        return selection[0] if selection else None

    def _names(self, frame_rel: str) -> pd.Index:
        if frame_rel in self._cache and self._table_backend.name == "pandas":
            return self._cache[frame_rel].index
        spec = self._layout.spec(frame_rel)
        return self._cache.get(f"{frame_rel}/_index", lambda: read_index(spec, self._frame_rows(frame_rel)))

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
    def obsm(self) -> ElementMapping:
        """Multi-dimensional annotations of observations."""
        return self._slots["obsm"]

    @property
    def varm(self) -> ElementMapping:
        """Multi-dimensional annotations of variables."""
        return self._slots["varm"]

    @property
    def obsp(self) -> ElementMapping:
        """Pairwise annotations of observations."""
        return self._slots["obsp"]

    @property
    def varp(self) -> ElementMapping:
        """Pairwise annotations of variables."""
        return self._slots["varp"]

    @property
    def uns(self) -> UnsMapping:
        """Unstructured annotations, a lazy nested mapping."""
        return self._slots["uns"]

    @property
    def obs(self) -> Any:
        """Annotations of observations (a pandas DataFrame under the default table backend)."""
        return self._element("obs")

    @property
    def var(self) -> Any:
        """Annotations of variables."""
        return self._element("var")

    @property
    def obs_names(self) -> pd.Index:
        """Names of observations (read alone, without the obs columns)."""
        return self._names("obs")

    @property
    def var_names(self) -> pd.Index:
        """Names of variables."""
        return self._names("var")

    @property
    def raw(self) -> RawShadow | None:
        """The raw slot, or ``None`` when the file has none."""
        if not (self._layout.has("raw") or self._layout.has("raw/X")):
            return None
        if "raw" not in self._graphs:
            self._graphs["raw"] = RawShadow(self)
        return self._graphs["raw"]

    @property
    def n_obs(self) -> int:
        """Number of observations."""
        return self._layout.n_obs if self._view is None else len(self._view[0])

    @property
    def n_vars(self) -> int:
        """Number of variables."""
        return self._layout.n_vars if self._view is None else len(self._view[1])

    @property
    def shape(self) -> tuple[int, int]:
        """(n_obs, n_vars)."""
        return (self.n_obs, self.n_vars)

    @property
    def is_view(self) -> bool:
        """Whether this shadow is a view (``shadow[...]``) of the file's AnnData."""
        return self._view is not None

    @property
    def isbacked(self) -> bool:
        """True: a shadow's data lives in its file."""
        return True

    @property
    def filename(self) -> str:
        """Path of the file or store (plus the modality path for one modality of a MuData)."""
        return self._ref.display

    @property
    def file(self) -> Any:
        """The open ``h5py.File`` or ``zarr.Group`` (a Zarr group is opened on first use)."""
        root = self._root
        if root._ref.format == "hdf5":
            return root._handle
        if root._zarr_group is None:
            root._zarr_group = open_file(root._ref.path, "zarr", root._file_mode)
        return root._zarr_group

    def obs_keys(self) -> list[str]:
        """Names of the obs columns."""
        return list(self._layout.obs.columns)

    def var_keys(self) -> list[str]:
        """Names of the var columns."""
        return list(self._layout.var.columns)

    def obsm_keys(self) -> list[str]:
        """Keys of obsm."""
        return list(self.obsm)

    def varm_keys(self) -> list[str]:
        """Keys of varm."""
        return list(self.varm)

    def uns_keys(self) -> list[str]:
        """Keys of uns."""
        return list(self.uns)

    def _frame_column(self, frame_rel: str, key: str) -> np.ndarray:
        if frame_rel in self._cache and self._table_backend.name == "pandas":
            return self._cache[frame_rel][key].to_numpy()
        return pd.Series(self._view_column(frame_rel, key), copy=False).to_numpy()

    def obs_vector(self, k: str, *, layer: str | None = None) -> np.ndarray:
        """Values of obs column ``k``, or of variable ``k`` across observations (from X or ``layer``)."""
        if k in self._layout.obs.columns:
            return self._frame_column("obs", k)
        names = self.var_names
        if k not in names:
            raise MissingElementError(element_message(self.filename, "obs", f"'{k}' is neither an obs column "
                                                      "nor a var name"))
        return self._column_of("X" if layer is None else f"layers/{layer}", names.get_loc(k))

    def var_vector(self, k: str, *, layer: str | None = None) -> np.ndarray:
        """Values of var column ``k``, or of observation ``k`` across variables."""
        if k in self._layout.var.columns:
            return self._frame_column("var", k)
        names = self.obs_names
        if k not in names:
            raise MissingElementError(element_message(self.filename, "var", f"'{k}' is neither a var column "
                                                      "nor an obs name"))
        return self._row_of("X" if layer is None else f"layers/{layer}", names.get_loc(k))

    # -- memory ----------------------------------------------------------------------------------

    def persist(self, *keys: str) -> AnnDataShadow:
        """Keep the graphs of ``keys`` (element paths such as ``"X"``, ``"obsm/X_pca"``; all when none
        are given) computed in memory, locally or on the cluster; they are marked ᐁ.
        """
        keys = keys or tuple(self._stored_element_paths())
        for rel in keys:
            spec = self._layout.spec(rel)
            backend = self._backend_for(spec.kind)
            if backend is not None and backend.lazy:
                self._cache.put(rel, self._graph(rel).persist())
            else:
                self._element(rel)
        return self

    def clear_cache(self) -> None:
        """Drop every element held in memory so its memory is freed (in-memory additions stay)."""
        self._cache.clear()

    def _stored_element_paths(self) -> list[str]:
        paths = [p for p in ("X", "obs", "var") if self._layout.has(p)]
        for slot in SLOT_AXES:
            paths += [f"{slot}/{k}" for k in self._layout.mapping_keys(slot)]
        return paths

    def __sizeof__(self) -> int:
        total = object.__sizeof__(self)
        for key in self._cache:
            value = self._cache[key]
            total += int(getattr(value, "nbytes", 0) or 0) or _sparse_nbytes(value) or _frame_nbytes(value)
        return total

    # -- file connection -------------------------------------------------------------------------

    def _close_handle(self) -> None:
        root = self._root if hasattr(self, "_root") else self
        for handle in (root._handle, getattr(root, "_zarr_group", None)):
            close = getattr(handle, "close", None)
            if close is not None:
                close()

    def close(self) -> None:
        """Close the connection to the file (cached and staged elements stay in memory)."""
        self._close_handle()

    def reopen(self, mode: str = "r") -> AnnDataShadow:
        """Reopen the file in ``mode`` (``"r"`` or ``"r+"``), keeping in-memory additions."""
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        self._close_handle()
        self._root._connect(mode)
        return self

    def write(self, clear_cache: bool = False) -> AnnDataShadow:
        """Push in-memory additions to the file; the file must be open with ``mode="r+"``."""
        if self.is_view:
            msg = (f"{self.filename}: a view cannot be written to its file; write the shadow it was taken "
                   "from, or export the view with .to_memory()")
            raise ReadOnlyError(msg)
        if self._mode == "r":
            raise ReadOnlyError(READ_ONLY_MESSAGE)
        staged = [f"{s}/{k}" for s, m in self._slots.items() for k in m if m.is_staged(k)]
        if staged:
            msg = (f"{self.filename}: writing staged elements ({', '.join(staged)}) is not supported by this "
                   "version of shadows; export with .to_memory().write_h5ad(...) instead")
            raise ShadowsError(msg)
        if clear_cache:
            self.clear_cache()
        return self

    # -- conversions -----------------------------------------------------------------------------

    def to_memory(self) -> anndata.AnnData:
        """A real in-memory AnnData with every element read (equal to anndata's own read)."""
        plain = {}
        for slot in SLOT_AXES:
            mapping = self._slots[slot]
            plain[slot] = {k: (mapping[k] if mapping.is_staged(k) else self._plain(f"{slot}/{k}")) for k in mapping}
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

    def copy(self, filename: str | None = None) -> anndata.AnnData:
        """An in-memory copy (``to_memory()``); with ``filename``, also written there as h5ad."""
        adata = self.to_memory()
        if filename is not None:
            adata.write_h5ad(filename)
        return adata

    def __getitem__(self, index: Any) -> AnnDataShadow:
        """A view: a shadow of its own whose elements are this shadow's, sliced by ``index``.

        Keys are those of AnnData (slices, ints, masks, positions, names, and pairs of them). A view of
        a view keeps positions relative to the file, so views compose to any depth. Building a view
        reads no data.
        """
        obs, var = normalize_key(index, self.shape, (lambda: self.obs_names, lambda: self.var_names))
        if self._view is not None:
            obs, var = compose(self._view[0], obs), compose(self._view[1], var)
        return AnnDataShadow._make_view(self._root, obs, var)

    def __repr__(self) -> str:
        from shadows._repr import text_repr

        return text_repr(self)

    def __reduce__(self):
        args = (self._ref, self._array_backend.name, self._table_backend.name, self._mode, self._view)
        return (_reopen, args)


def _reopen(ref: FileRef, array_backend: str, table_backend: str, mode: str,
            view: tuple[AxisIndex, AxisIndex] | None = None) -> AnnDataShadow:
    shadow = AnnDataShadow(ref.display, array_backend=array_backend, table_backend=table_backend, mode=mode,
                           format=ref.format)
    return shadow if view is None else AnnDataShadow._make_view(shadow, *view)


def _sparse_nbytes(value: Any) -> int:
    if hasattr(value, "indptr"):
        return int(value.data.nbytes + value.indices.nbytes + value.indptr.nbytes)
    return 0


def _frame_nbytes(value: Any) -> int:
    if isinstance(value, pd.DataFrame):
        return int(value.memory_usage(deep=True).sum())
    return 0
