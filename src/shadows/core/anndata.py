"""AnnDataShadow: an AnnData whose elements stay in the file until asked for."""

from __future__ import annotations

import os
import warnings
from typing import Any

import anndata
import numpy as np
from anndata import ImplicitModificationWarning
from scipy import sparse

from shadows import progress as progress_bar
from shadows.core import view_categories
from shadows.core.aligned import ElementMapping
from shadows.core.base import READ_ONLY_MESSAGE, ShadowBase
from shadows.core.layout import AnnDataLayout
from shadows.core.raw import PendingRaw, RawShadow
from shadows.core.reading import computed
from shadows.core.references import ARRAY_REFERENCES, get_by_reference, view_x_writes_through
from shadows.core.state import NOTHING
from shadows.elements.sparse_chunk import to_plain
from shadows.errors import MissingElementError, ShapeError, element_message
from shadows.indexing.keys import as_positions, as_slice_or_array
from shadows.indexing.selection import selection_for
from shadows.schema import SLOT_AXES, element_axes
from shadows.settings import settings
from shadows.writing import DELETED
from shadows.writing.export import export

__all__ = ["ARRAY_REFERENCES", "READ_ONLY_MESSAGE", "AnnDataShadow", "get_by_reference"]


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
    storage_options
        fsspec's options for a URL (credentials, endpoint); never printed.
    allow_external
        ``False`` (default) refuses, with :class:`~shadows.errors.ExternalDataError`, elements whose bytes
        lie outside the file: HDF5 external links, external storage, virtual datasets with sources
        elsewhere, symbolic links out of a Zarr store. ``True`` follows them, as anndata does.
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

        A value assigned in memory (▲) or held (ᐁ; for a view, its root's) is indexed as it is. A
        sparse element not held in memory gets a graph that selects the one row/column inside its
        read tasks (for CSC X a gene is one contiguous read; for CSR X row blocks are scanned in
        parallel, in bounded memory).
        """
        spec = None
        held = self._root_part(rel)
        if held is NOTHING and (self._state.is_stale(rel) or self._changed_value(rel) is not NOTHING):
            held = self._element(rel)  # a value changed in memory (▲)
            if held is None:
                raise MissingElementError(element_message(self.filename, rel, "deleted in memory"))
        elif held is NOTHING:
            spec = self._layout.spec(rel)
            held = self._state.held(rel)
        if spec is not None and spec.kind == "sparse" and held is NOTHING:
            selection = selection_for(rel, spec, self._view) or (None, None)
            axes = [range(n) if s is None else s for s, n in zip(selection, spec.shape, strict=True)]
            axis = 0 if isinstance(key[0], int | np.integer) else 1
            axes[axis] = np.asarray([as_positions(axes[axis])[key[axis]]])
            vector = to_plain(spec.select_graph((axes[0], axes[1])).compute())
        else:
            value = held if held is not NOTHING else self._graph(rel)
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
        """The main matrix (``None`` when there is none); assigning keeps the new one in memory (X▲)."""
        return self._element("X") if self._has("X") else None

    def _has_X(self) -> bool:
        """Whether there is an X (anndata asks views this way)."""
        return self._has("X")

    @X.setter
    def X(self, value: Any) -> None:
        if self._is_view and value is not None:
            self._set_view_X(value)
            return
        self._set_whole("X", value, self.shape)

    def _set_view_X(self, value: Any) -> None:
        """``view.X = value`` as the installed anndata does it: anndata 0.12 (``copy_on_write_X`` off)
        writes the values into the parent's X at the view's rows and columns (with its warnings), the
        view staying a view; from anndata 0.13 on the view becomes an independent shadow holding
        ``value`` (▲). A scalar fills the view's shape, a vector of the right length is reshaped.
        """
        if np.isscalar(value):
            if not view_x_writes_through():
                value = np.full(self.shape, value)
        elif getattr(value, "shape", None) != self.shape:
            size = int(np.prod(getattr(value, "shape", (len(value),))))
            if 1 not in self.shape or size != max(self.shape):
                raise ShapeError(element_message(self.filename, "X", f"expected shape {self.shape}, got "
                                                 f"{getattr(value, 'shape', None)}"))
            value = value.reshape(self.shape)
        if view_x_writes_through():
            warnings.warn("Setting element `.X` of view of `AnnData` object will obey copy-on-write semantics in "
                          "the next minor release.", FutureWarning, stacklevel=3)
        else:
            warnings.warn("Setting element `.X` of view, initializing view as actual.", ImplicitModificationWarning,
                          stacklevel=3)
            self._set_whole("X", value, self.shape)
            return
        root = self._root
        parent = root.X
        if sparse.issparse(parent) and isinstance(value, np.ndarray):
            value = (sparse.coo_array if isinstance(parent, sparse.sparray) else sparse.coo_matrix)(value)
        elif sparse.issparse(value) and isinstance(parent, np.ndarray):
            warnings.warn("Trying to set a dense array with a sparse array on a view. Densifying the sparse "
                          "array. This may incur excessive memory usage", UserWarning, stacklevel=3)
            value = value.toarray()
        warnings.warn("Modifying `X` on a view results in data being overridden", ImplicitModificationWarning,
                      stacklevel=3)
        rows, columns = (as_slice_or_array(index) for index in self._local)
        if isinstance(rows, np.ndarray) and isinstance(columns, np.ndarray):
            rows, columns = np.ix_(rows, columns)
        parent[rows, columns] = value  # the root's X in memory, changed in place: its change (X▲)
        root._state.change("X", parent)

    @X.deleter
    def X(self) -> None:
        self._set_whole("X", None, self.shape)

    @property
    def layers(self) -> ElementMapping:
        """Layers: matrices shaped like X."""
        return self._slots["layers"]

    @layers.setter
    def layers(self, values: Any) -> None:
        self._slots["layers"].replace_all(values)

    @layers.deleter
    def layers(self) -> None:
        self._slots["layers"].replace_all({})  # as AnnData: no layers

    @property
    def raw(self) -> RawShadow | anndata.Raw | None:
        """The raw slot (``None`` when there is none); assigning (``adata.raw = adata``) keeps an
        ``anndata.Raw`` in memory (raw▲), ``del adata.raw`` deletes it, both until ``write()``.
        """
        if self._state.is_stale("raw"):
            return PendingRaw(self, self._before.raw)
        changed = self._changed_value("raw")
        if changed is not NOTHING:
            return None if changed is DELETED else changed
        if not self._layout.has_raw:
            return None
        if self._raw_slot is None:
            self._raw_slot = RawShadow(self)
        return self._raw_slot

    @raw.setter
    def raw(self, value: anndata.AnnData | None) -> None:
        if value is None:
            del self.raw
            return
        if not isinstance(value, anndata.AnnData):
            raise ValueError("Can only init raw attribute with an AnnData object.")
        # anndata's Raw shares value.X (as AnnData's setter does); var is copied so that the raw's var
        # is a plain frame, not one that stages columns into this shadow's var. Made (and so checked)
        # before a view becomes a shadow of its own: a refused raw leaves the view a view.
        raw = anndata.Raw(self, X=value.X, var=value.var.copy(), varm=dict(value.varm))
        self._detach()
        self._state.change("raw", raw)

    @raw.deleter
    def raw(self) -> None:
        self._detach()
        self._state.remove("raw", stored=self._layout.has_raw)

    def _set_raw_matrix(self, X: Any, source: Any) -> None:
        """``adata.raw._X = X`` after a private axis change: raw becomes ``X`` with the variables of
        ``source`` (the raw of before), in memory (raw▲).
        """
        if getattr(X, "shape", (None,))[0] != self.n_obs:
            raise ShapeError(f"{self.filename}: raw.X: expected {self.n_obs} rows, got {getattr(X, 'shape', None)}")
        self._state.change("raw", anndata.Raw(self, X=X, var=source.var.copy(), varm=dict(source.varm)))

    def _select_staged(self, slot: str, value: Any) -> Any:
        """A raw assigned in the root, as a view sees it: the view's observations of it."""
        if isinstance(value, anndata.Raw):
            rows = as_positions(self._local[0])
            return anndata.Raw(self, X=value.X[rows], var=value.var.copy(), varm=dict(value.varm))
        return super()._select_staged(slot, value)

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

    def element_value(self, path: str) -> Any:
        """As :meth:`ShadowBase.element_value`; also raw's ``"raw/X"``, ``"raw/var"`` and ``"raw/varm"`` (a
        dict), from a raw assigned in memory (raw▲) where there is one.
        """
        if not path.startswith("raw/"):
            return super().element_value(path)
        raw = self.raw
        if isinstance(raw, anndata.Raw):  # assigned in memory
            return {"X": raw.X, "var": raw.var, "varm": dict(raw.varm)}[path[4:]]
        if path == "raw/varm":
            return {k: self._plain(f"raw/varm/{k}") for k in raw.varm}
        return super().element_value(path)

    # -- conversions -----------------------------------------------------------------------------

    def to_memory(self, progress: bool = False) -> anndata.AnnData:
        """A real in-memory AnnData with every element read (equal to anndata's own read).

        ``progress=True`` (or ``shadows.settings.read_progress``) shows one bar for the whole read,
        labelled with the element being read and counting bytes (see :mod:`shadows.progress`).
        """
        with progress_bar.reading_job(self._to_memory_nbytes, progress or settings.read_progress):
            return self._to_memory()

    def _to_memory_nbytes(self) -> int:
        """Bytes ``to_memory()`` reads (about; see ``_read_nbytes``)."""
        raw = [rel for rel in ("raw/X", "raw/var") if self._layout.has(rel)]
        if self._layout.has("raw/varm"):
            raw += [f"raw/varm/{k}" for k in self._layout.mapping_keys("raw/varm")]
        return self._read_nbytes([*self._stored_element_paths(), "uns", *raw])

    def _to_memory(self) -> anndata.AnnData:
        plain = {slot: self._slot_values(slot, self._plain) for slot in self._SLOTS}
        adata = anndata.AnnData(
            X=to_plain(self._plain("X")) if self._has("X") else None,
            obs=self._plain("obs"),
            var=self._plain("var"),
            uns=self.uns.materialize(),
            **plain,
        )
        raw = self.raw
        if isinstance(raw, anndata.Raw):
            adata.raw = anndata.AnnData(X=computed(raw.X), var=raw.var.copy(), varm=dict(raw.varm))
        elif raw is not None:
            adata.raw = raw.to_adata()
        return adata

    def transpose(self) -> anndata.AnnData:
        """Observations and variables swapped, as an AnnData (as anndata's ``transpose``; ignores raw).

        The values are the shadow's: read (default backend) or its dask graphs (``array_backend="dask"``,
        still lazy). Like anndata, a view must be copied first.
        """
        if self.is_view:
            raise ValueError("You're trying to transpose a view of an `AnnData` (a shadow's view), which is not "
                             "implemented. Call `.copy()` before transposing.")
        x = self.X
        return anndata.AnnData(
            X=None if x is None else x.T,
            layers={k: self.layers[k].T for k in self.layers.own_keys()},
            obs=self._plain("var"),
            var=self._plain("obs"),
            uns=self.uns.materialize(),
            obsm=dict(self.varm),
            varm=dict(self.obsm),
            obsp=dict(self.varp),
            varp=dict(self.obsp),
        )

    @property
    def T(self) -> anndata.AnnData:
        """:meth:`transpose`."""
        return self.transpose()

    def copy(self, filename: str | os.PathLike | None = None, *, overwrite: bool = False,
             progress: bool = False) -> AnnDataShadow:
        """An independent shadow of the same data (a view's copy is not a view); nothing is read: stored
        elements stay in the file, changes held in memory (▲) are copied. With ``filename``, this shadow
        (or view) is written there out of core and the new file is opened (see ``write_h5ad``).
        ``to_memory()`` gives an in-memory AnnData.
        """
        if filename is not None:
            return super().copy(filename, overwrite=overwrite, progress=progress)
        self._keep_changes_in_place()  # an array changed in place is copied as changed (▲)
        clone = self._view_of((slice(None), slice(None)))
        own = self._memory_state()
        clone._detach()
        if self._is_view:  # the view's own changes, besides the root's the clone took over
            clone._restore_memory(own)
        if self._view is None:
            clone._view = None  # a copy of the whole group, not a subset of it
        clone._deep_copy_changes()
        return clone

    def write_h5ad(self, filename: str | os.PathLike, *, progress: bool = False, overwrite: bool = False,
                   **_: Any) -> None:
        """Write this shadow (or view: only its selection) to a new ``.h5ad`` file, out of core.

        Matrices stream from the file block by block; ``progress=True`` shows one bar for the whole
        export (blocks written, and the element being written). An
        existing file is replaced only with ``overwrite=True``; the shadow's own file never is.
        anndata's compression options are not supported and ignored.
        """
        export(self, filename, "hdf5", progress=progress, overwrite=overwrite)

    def __getitem__(self, index: Any) -> AnnDataShadow:
        """A view (see :meth:`ShadowBase._view_of`); ``type(view) is AnnDataShadow``.

        An ``anndata.acc`` reference (``adata[A.obs["louvain"]]``, anndata >= 0.13) returns the array it
        points at, as AnnData does.
        """
        if isinstance(index, ARRAY_REFERENCES):
            return get_by_reference(self, index)
        return self._view_of(index)
