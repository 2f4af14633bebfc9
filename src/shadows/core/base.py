"""What AnnDataShadow and MuDataShadow share: a file connection, a layout, element reading with
caching and views, the obs/var/obsm/varm/obsp/varp/uns slots, memory and connection management.

The classes built on it add their own slots (X and layers; modalities and obsmap/varmap) and their own
rules for views.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, ClassVar

import pandas as pd

from shadows import convert
from shadows.backends import FileRef, resolve
from shadows.backends.fileref import suffix_format
from shadows.cache import ElementCache
from shadows.core.aligned import ElementMapping, UnsMapping
from shadows.core.connection import Connection, check_mode
from shadows.core.frames import tracked, with_columns
from shadows.core.layout import Layout
from shadows.errors import ElementExistsError, ReadOnlyError
from shadows.indexing import AxisIndex, compose, normalize_key
from shadows.indexing.apply import (
    ALIGNED_SLOT_AXES,
    materialize_selection,
    read_column,
    read_index,
    select_graph,
    selection_for,
)
from shadows.indexing.keys import as_positions, as_slice_or_array
from shadows.writing import DELETED, ColumnChange, ElementChange, commit
from shadows.writing.export import export

READ_ONLY_MESSAGE = (
    "File is open in read-only mode. Changes can't be pushed. Reopen it with .reopen('r+') to enable writing."
)
FRAMES = ("obs", "var")


class ShadowBase:
    """The file-backed part of a shadow (mixed into the AnnData/MuData subclasses).

    A shadow is either a root (``_root is self``, ``_view is None``) that owns the layout of its group,
    or a view: the root plus positions kept on each axis, relative to the root, so views of views
    compose. Roots of one file share one :class:`~shadows.core.connection.Connection`.
    """

    _LAYOUT: ClassVar[type[Layout]]
    #: Aligned mapping slots of this kind of shadow (``uns`` is always there too).
    _SLOTS: ClassVar[tuple[str, ...]]
    #: "AnnData" or "MuData", for messages and the repr.
    _KIND: ClassVar[str]

    # -- construction ----------------------------------------------------------------------------

    def __init__(
        self,
        filepath: str | os.PathLike,
        array_backend: str = "numpy",
        table_backend: str = "pandas",
        mode: str = "r",
        format: str | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ):
        check_mode(mode)
        ref = resolve(filepath, format, storage_options)
        arrays, tables = convert.array_backend(array_backend), convert.table_backend(table_backend)
        connection = Connection(ref.path, ref.format, mode, ref.storage_options)
        try:
            self._attach(ref, arrays, tables, connection)
        except BaseException:
            connection.close()
            raise

    def _attach(self, ref: FileRef, arrays: convert.Backend, tables: convert.Backend, connection: Connection) -> None:
        """Make this shadow the root of the group at ``ref``, read through ``connection``."""
        self._ref = ref
        self._array_backend, self._table_backend = arrays, tables
        self._conn = connection
        self._root = self
        self._view: tuple[AxisIndex, AxisIndex] | None = None
        self._build_layout()
        self._init_memory()

    @classmethod
    def _attached(cls, ref: FileRef, arrays: convert.Backend, tables: convert.Backend,
                  connection: Connection) -> ShadowBase:
        """A root shadow of the group at ``ref`` sharing an open ``connection`` (a MuData's modality)."""
        shadow = cls.__new__(cls)
        shadow._attach(ref, arrays, tables, connection)
        return shadow

    @classmethod
    def _make_view(cls, root: ShadowBase, obs: AxisIndex, var: AxisIndex) -> ShadowBase:
        """A view of ``root`` keeping positions ``obs`` and ``var`` (relative to the root)."""
        view = cls.__new__(cls)
        view._ref, view._conn = root._ref, root._conn
        view._array_backend, view._table_backend = root._array_backend, root._table_backend
        view._root = root
        view._view = (obs, var)
        view._init_memory()
        return view

    def _init_memory(self) -> None:
        """Fresh in-memory state: cache, graphs, staged columns and the mapping slots."""
        self._cache = ElementCache()
        self._graphs: dict[str, Any] = {}
        self._staged_columns: dict[str, dict[str, pd.Series]] = {frame: {} for frame in FRAMES}
        self._deleted_columns: dict[str, set[str]] = {frame: set() for frame in FRAMES}
        self._slots = {slot: ElementMapping(self, slot, self._layout.mapping_keys(slot)) for slot in self._SLOTS}
        self._slots["uns"] = UnsMapping(self, "uns", self._visible_uns_keys())
        self._uns_levels: dict[str, UnsMapping] = {"uns": self._slots["uns"]}

    def _visible_uns_keys(self) -> list[str]:
        return self._layout.mapping_keys("uns")

    def _build_layout(self) -> None:
        self._file_layout = self._LAYOUT(self._ref, self._conn.handle)
        self._layout_generation = self._conn.generation

    @property
    def _layout(self) -> Layout:
        """The root's layout, rebuilt from the new handle after the file was reopened."""
        root = self._root
        if root._layout_generation != root._conn.generation:
            root._build_layout()
        return root._file_layout

    @property
    def _mode(self) -> str:
        return self._conn.mode

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
            graph = select_graph(spec, selection) if selection else spec.graph()
            self._graphs[rel] = self._view_graph(rel, graph) if self._view is not None else graph
        return self._graphs[rel]

    def _view_graph(self, rel: str, graph: Any) -> Any:
        """What a view changes in an element's graph besides slicing it (nothing, here)."""
        return graph

    def _view_value(self, rel: str, spec: Any, value: Any) -> Any:
        """What a view changes in an element's value besides slicing it (nothing, here)."""
        return value

    def _materialize(self, rel: str) -> Any:
        """Read the element (this view's part of it) as numpy/scipy/pandas, with staged columns."""
        spec = self._layout.spec(rel)
        value = materialize_selection(spec, selection_for(rel, spec, self._view))
        if self._view is not None:
            value = self._view_value(rel, spec, value)
        if rel in FRAMES:
            value = with_columns(value, self._visible_staged_columns(rel))
            value = value.drop(columns=[c for c in self._deleted_columns[rel] if c in value.columns])
        return value

    def _element(self, rel: str) -> Any:
        """The element at ``rel`` as the shadow's backends present it (cached per section 4 of DESIGN)."""
        if rel in self._cache:
            return self._cache[rel]
        spec = self._layout.spec(rel)
        backend = self._backend_for(spec.kind)
        if backend is not None and backend.lazy:
            return self._graph(rel)
        if backend is None:
            return self._cache.get(rel, lambda: self._materialize(rel))
        if rel in FRAMES and backend.name == "pandas":
            where = f"{self.filename}: {rel}"
            return self._cache.get(rel, lambda: tracked(self._materialize(rel), partial(self._stage_column, rel),
                                                        where))
        return self._cache.get(rel, lambda: backend.convert(self._materialize(rel)))

    def _plain(self, rel: str) -> Any:
        """The element at ``rel`` as numpy/scipy/pandas, whatever the backends (for to_memory)."""
        spec = self._layout.spec(rel)
        backend = self._backend_for(spec.kind)
        if backend is not None and backend.name in ("numpy", "pandas") and rel in self._cache:
            value = self._cache[rel]
            return value.copy(deep=False) if rel in FRAMES else value
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

    def _stage_column(self, frame_rel: str, key: str, values: pd.Series | None) -> None:
        """A column assigned in memory (``values``), or deleted (``None``: a stored one is deleted from the
        file by ``write(overwrite=True)``).
        """
        if values is not None:
            self._staged_columns[frame_rel][key] = values
            return
        self._staged_columns[frame_rel].pop(key, None)
        if key in getattr(self._layout, frame_rel).columns:
            self._deleted_columns[frame_rel].add(key)

    # -- what a view sees of its root's staged elements (sliced, as an AnnData view would) ---------

    def _visible_staged_columns(self, frame_rel: str) -> dict[str, pd.Series]:
        """Columns assigned in memory: a view's own, and its root's taken at the view's rows."""
        own = self._staged_columns[frame_rel]
        if self._view is None:
            return own
        rows = as_positions(self._view[FRAMES.index(frame_rel)])
        inherited = {k: v.iloc[rows] for k, v in self._root._staged_columns[frame_rel].items() if k not in own}
        return {**inherited, **own}

    def _staging_mapping(self, slot: str) -> ElementMapping | None:
        """The mapping of ``slot`` (a slot or a nested uns level) if this shadow has built it."""
        mapping = self._slots.get(slot)
        return mapping if mapping is not None else self._uns_levels.get(slot)

    def _select_staged(self, slot: str, value: Any) -> Any:
        """A root's staged ``value`` as this view sees it: sliced along the slot's aligned axes."""
        for position, axis in enumerate(ALIGNED_SLOT_AXES.get(slot, ())):
            index = as_slice_or_array(self._view[axis])
            if isinstance(value, pd.DataFrame | pd.Series):
                value = value.iloc[index]
            else:
                value = value[(slice(None),) * position + (index,)]
        return value

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

    def _view_column(self, frame_rel: str, key: str) -> Any:
        """One stored obs/var column of this shadow (as the frame of this shadow would hold it)."""
        return read_column(self._layout.spec(frame_rel).column(key), self._frame_rows(frame_rel))

    def _frame_column(self, frame_rel: str, key: str) -> Any:
        """One obs/var column as AnnData's ``obs_vector`` returns it, read alone unless the frame is in memory.

        That is ``Series.values``: numpy for numpy dtypes, else the pandas array (a ``Categorical``, a
        masked array). scanpy's plotting tells categorical colors from continuous ones by that dtype.
        """
        if frame_rel in self._cache and self._table_backend.name == "pandas":
            return self._cache[frame_rel][key].values
        staged = self._visible_staged_columns(frame_rel)
        if key in staged:
            return staged[key].values
        return pd.Series(self._view_column(frame_rel, key), copy=False).values

    def _frame_keys(self, frame_rel: str) -> list[str]:
        deleted = self._deleted_columns[frame_rel]
        stored = [c for c in getattr(self._layout, frame_rel).columns if c not in deleted]
        return stored + [k for k in self._visible_staged_columns(frame_rel) if k not in stored]

    # -- attributes shared by AnnData and MuData -------------------------------------------------

    @property
    def obs(self) -> Any:
        """Annotations of observations (a pandas DataFrame under the default table backend)."""
        return self._element("obs")

    @obs.setter
    def obs(self, frame: pd.DataFrame) -> None:
        self._set_frame("obs", frame)

    @property
    def var(self) -> Any:
        """Annotations of variables."""
        return self._element("var")

    @var.setter
    def var(self, frame: pd.DataFrame) -> None:
        self._set_frame("var", frame)

    def _set_frame(self, frame_rel: str, frame: pd.DataFrame) -> None:
        """``shadow.obs = frame``: stage the columns that differ from the current ones (▲).

        The names must stay those of the file (a shadow cannot rename observations); stored columns
        missing from ``frame`` are deleted (from the file by ``write(overwrite=True)``). This is what
        ``mudata``'s ``pull_obs``/``pull_var`` do to a MuData shadow.
        """
        where = f"{self.filename}: {frame_rel}"
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"{where}: expected a pandas DataFrame, got {type(frame).__name__}")
        current = self._plain(frame_rel)
        if len(frame) != len(current):
            raise ValueError(f"{where}: expected {len(current)} rows, got {len(frame)}")
        if not frame.index.equals(current.index):
            raise ValueError(f"{where}: the index differs from the file's {frame_rel}_names; a shadow cannot "
                             "rename them (export with .to_memory() to do so)")
        for key in [c for c in current.columns if c not in frame.columns]:
            self._stage_column(frame_rel, key, None)  # deleted (a stored one by write(overwrite=True))
        self._deleted_columns[frame_rel] -= set(frame.columns)
        staged = self._staged_columns[frame_rel]
        for key in [k for k in staged if k not in frame.columns]:
            del staged[key]
        for key in frame.columns:
            if key not in current.columns or not frame[key].equals(current[key]) \
                    or frame[key].dtype != current[key].dtype:
                staged[key] = frame[key]
        self._cache.discard(frame_rel)

    @property
    def obs_names(self) -> pd.Index:
        """Names of observations (read alone, without the obs columns)."""
        return self._names("obs")

    @property
    def var_names(self) -> pd.Index:
        """Names of variables."""
        return self._names("var")

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

    def __len__(self) -> int:
        return self.n_obs

    @property
    def is_view(self) -> bool:
        """Whether this shadow is a view (``shadow[...]``) of the file's object."""
        return self._view is not None

    @property
    def isbacked(self) -> bool:
        """True: a shadow's data lives in its file."""
        return True

    @property
    def filename(self) -> str:
        """Path of the file or store (plus the group path for one modality of a MuData)."""
        return self._ref.display

    @property
    def file(self) -> Any:
        """The open ``h5py.File`` or ``zarr.Group`` (a Zarr group is opened on first use)."""
        return self._conn.file

    def obs_keys(self) -> list[str]:
        """Names of the obs columns (stored, then assigned in memory)."""
        return self._frame_keys("obs")

    def var_keys(self) -> list[str]:
        """Names of the var columns (stored, then assigned in memory)."""
        return self._frame_keys("var")

    def obsm_keys(self) -> list[str]:
        """Keys of obsm."""
        return list(self.obsm)

    def varm_keys(self) -> list[str]:
        """Keys of varm."""
        return list(self.varm)

    def uns_keys(self) -> list[str]:
        """Keys of uns."""
        return list(self.uns)

    # -- memory ----------------------------------------------------------------------------------

    def persist(self, *keys: str) -> ShadowBase:
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

    def _slot_values(self, slot: str, read: Callable[[str], Any]) -> dict[str, Any]:
        """Every value of ``slot``: staged ones as assigned (sliced in a view), stored ones by ``read(rel)``."""
        mapping = self._slots[slot]
        return {k: (mapping[k] if mapping.is_staged(k) else read(f"{slot}/{k}")) for k in mapping}

    def _stored_element_paths(self) -> list[str]:
        paths = [p for p in ("X", *FRAMES) if self._layout.has(p)]
        for slot in self._SLOTS:
            paths += [f"{slot}/{k}" for k in self._layout.mapping_keys(slot)]
        return paths

    def _staging_mappings(self) -> list[ElementMapping]:
        """Every mapping that can hold staged elements: the slots, nested uns levels and raw's varm."""
        mappings = [m for slot, m in self._slots.items() if slot != "uns"]
        mappings += list(self._uns_levels.values())
        raw = self._graphs.get("raw")
        if raw is not None:
            mappings.append(raw.varm)
        return mappings

    def _staged_changes(self) -> tuple[list[ElementChange], list[ColumnChange]]:
        """What ``write()`` commits: staged elements and staged obs/var columns, with absolute paths."""
        elements = []
        for mapping in self._staging_mappings():
            changed = {**dict.fromkeys(mapping._deleted, DELETED), **mapping._staged}
            for key, value in changed.items():
                rel = mapping._path(key)
                replaces = mapping.replaces(key)
                path = self._layout.path(rel) if replaces else self._ref.element_path(rel)
                elements.append(ElementChange(path, value, replaces, partial(self._element_written, mapping, key)))
        columns = []
        for frame in FRAMES:
            stored = set(getattr(self._layout, frame).columns)
            changed = {**dict.fromkeys(self._deleted_columns[frame], DELETED), **self._staged_columns[frame]}
            for key, values in changed.items():
                columns.append(ColumnChange(self._layout.path(frame), key, values, key in stored,
                                            partial(self._column_written, frame, key)))
        return elements, columns

    def _element_written(self, mapping: ElementMapping, key: str) -> None:
        mapping.mark_written(key)
        rel = mapping._path(key)
        self._cache.discard(rel)
        self._graphs.pop(rel, None)

    def _column_written(self, frame: str, key: str) -> None:
        self._staged_columns[frame].pop(key, None)
        self._deleted_columns[frame].discard(key)
        self._cache.discard(frame)
        self._graphs.pop(frame, None)

    def __sizeof__(self) -> int:
        total = object.__sizeof__(self)
        for key in self._cache:
            value = self._cache[key]
            total += int(getattr(value, "nbytes", 0) or 0) or _sparse_nbytes(value) or _frame_nbytes(value)
        return total

    # -- file connection -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection to the file (cached and staged elements stay in memory)."""
        self._conn.close()

    def reopen(self, mode: str = "r") -> ShadowBase:
        """Reopen the file in ``mode`` (``"r"`` or ``"r+"``), keeping in-memory additions.

        The connection is the file's: every modality and view of it follows.
        """
        self._conn.open(mode)
        return self

    def write(self, clear_cache: bool = False, overwrite: bool = False) -> ShadowBase:
        """Push staged elements (▲) to the file, each committed atomically; returns the shadow.

        The file must be open with ``mode="r+"`` (``reopen("r+")``). Dask arrays are streamed block by
        block, so an element computed lazily is never held in memory whole. Replacing an element or
        column the file already has needs ``overwrite=True``. With ``clear_cache=True`` what is held in
        memory is dropped afterwards.
        """
        if self.is_view:
            msg = (f"{self.filename}: a view cannot be written to its file; write the shadow it was taken "
                   "from, or export the view with .write_h5ad() / .write_zarr()")
            raise ReadOnlyError(msg)
        if self._mode == "r":
            raise ReadOnlyError(READ_ONLY_MESSAGE)
        elements, columns = self._staged_changes()
        replacing = [c.path for c in elements if c.replaces] + [f"{c.frame_path}/{c.key}" for c in columns
                                                                if c.replaces]
        if replacing and not overwrite:
            msg = (f"{self.filename}: writing would replace or delete stored elements ({', '.join(replacing)}); "
                   "pass overwrite=True to do so")
            raise ElementExistsError(msg)
        if elements or columns:
            try:
                commit(self._conn, elements, columns)
            except BaseException:
                self._conn.recover()
                raise
            self._conn.open(self._conn.mode)  # read the new layout; drop handles to replaced nodes
        if clear_cache:
            self.clear_cache()
        return self

    # -- copies and exports ---------------------------------------------------------------------

    def copy(self, filename: str | os.PathLike | None = None) -> Any:
        """An in-memory copy (``to_memory()``); with ``filename``, this shadow (or view) written there out
        of core (HDF5 or Zarr by the suffix) and opened as a new shadow with the same backends.
        """
        if filename is None:
            return self.to_memory()
        fmt = suffix_format(filename) or "hdf5"
        export(self, filename, fmt)
        return type(self)(filename, array_backend=self._array_backend.name, table_backend=self._table_backend.name,
                          format=fmt)

    def write_zarr(self, store: str | os.PathLike, *, progress: bool = False, **_: Any) -> None:
        """Write this shadow (or view: only its selection) to a new Zarr store, out of core (Zarr format
        from ``anndata.settings.zarr_write_format``; anndata's compression options are ignored).
        """
        export(self, store, "zarr", progress=progress)

    # -- views and pickling ----------------------------------------------------------------------

    def _view_of(self, index: Any) -> ShadowBase:
        """A view: a shadow of its own whose elements are this shadow's, sliced by ``index``.

        Keys are those of AnnData (slices, ints, masks, positions, names, and pairs of them). A view of
        a view keeps positions relative to the file, so views compose to any depth. Building a view
        reads no data.
        """
        obs, var = normalize_key(index, self.shape, (lambda: self.obs_names, lambda: self.var_names))
        if self._view is not None:
            obs, var = compose(self._view[0], obs), compose(self._view[1], var)
        return type(self)._make_view(self._root, obs, var)

    def __repr__(self) -> str:
        from shadows._repr import text_repr

        return text_repr(self)

    def _repr_html_(self) -> str:
        """Jupyter's rich repr: slots, keys, encodings, shapes and dtypes from metadata (reads no data).

        (mudata's own HTML repr, which a MuData shadow would otherwise inherit, reads every modality's
        obs and var to print them.)
        """
        from shadows._repr_html import html_repr

        return html_repr(self)

    def __reduce__(self):
        args = (type(self), self._ref, self._array_backend.name, self._table_backend.name, self._mode, self._view)
        return (_reopen, args)


def _reopen(cls: type, ref: FileRef, array_backend: str, table_backend: str, mode: str,
            view: tuple[AxisIndex, AxisIndex] | None = None) -> ShadowBase:
    shadow = cls(ref.full_path, array_backend=array_backend, table_backend=table_backend, mode=mode,
                 format=ref.format, storage_options=ref.storage_options)
    return shadow if view is None else cls._make_view(shadow, *view)


def _sparse_nbytes(value: Any) -> int:
    if hasattr(value, "indptr"):
        return int(value.data.nbytes + value.indices.nbytes + value.indptr.nbytes)
    return 0


def _frame_nbytes(value: Any) -> int:
    if isinstance(value, pd.DataFrame):
        return int(value.memory_usage(deep=True).sum())
    return 0
