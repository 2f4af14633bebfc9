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

import numpy as np
import pandas as pd

from shadows import convert
from shadows.backends import FileRef, resolve
from shadows.backends.fileref import suffix_format
from shadows.core.aligned import ElementMapping, UnsMapping
from shadows.core.connection import Connection, check_mode
from shadows.core.frames import tracked, with_columns
from shadows.core.layout import Layout
from shadows.core.references import VECTORS_ARE_PANDAS_ARRAYS
from shadows.core.state import NOTHING, ElementState
from shadows.elements.positions import read_column, read_index
from shadows.errors import InvalidElementKeyError, ReadOnlyError
from shadows.indexing import AxisIndex, compose, normalize_key
from shadows.indexing.apply import element_axes, materialize_selection, select_graph, selection_for
from shadows.indexing.keys import as_positions, as_slice_or_array
from shadows.names import column_problem
from shadows.writing import DELETED, ColumnChange, ElementChange, commit, legacy_upgrade, transaction
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
    #: Whether this shadow is a view (a root, also one subset in place, is not; views set their own).
    _is_view: bool = False
    #: A view's rows and columns as positions in its root (``None`` for roots).
    _local: tuple[AxisIndex, AxisIndex] | None = None

    # -- construction ----------------------------------------------------------------------------

    def __init__(
        self,
        filepath: str | os.PathLike,
        array_backend: str = "numpy",
        table_backend: str = "pandas",
        mode: str = "r",
        format: str | None = None,
        storage_options: Mapping[str, Any] | None = None,
        *,
        allow_external: bool = False,
    ):
        """Open the AnnData/MuData at ``filepath`` (see the class's parameters).

        ``allow_external=True`` lets reads follow what leads out of the file: HDF5 external links,
        external storage and virtual datasets with sources in other files, symbolic links out of a Zarr
        store. By default an element using one is refused with
        :class:`~shadows.errors.ExternalDataError` when it is accessed (anndata and h5py follow them
        silently); see :mod:`shadows.backends.containment`. Pickles (and dask workers) keep the choice.
        """
        check_mode(mode)
        ref = resolve(filepath, format, storage_options, allow_external=allow_external)
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
    def _make_view(cls, root: ShadowBase, obs: AxisIndex, var: AxisIndex,
                   local: tuple[AxisIndex, AxisIndex] | None = None) -> ShadowBase:
        """A view of ``root`` keeping positions ``obs`` and ``var`` of the file's group; ``local`` are the
        same rows and columns as positions in ``root`` (which differ when ``root`` is itself a subset).
        """
        view = cls.__new__(cls)
        view._ref, view._conn = root._ref, root._conn
        view._array_backend, view._table_backend = root._array_backend, root._table_backend
        view._root = root
        view._view = (obs, var)
        view._is_view = True
        view._local = local if local is not None else (obs, var)
        view._init_memory()
        return view

    def _init_memory(self) -> None:
        """Fresh in-memory state: the element records (:mod:`shadows.core.state`) and the slots."""
        connection = self._conn
        self._state = ElementState(lambda: connection.content, DELETED)
        self._raw_slot: Any = None
        self._slots = {slot: ElementMapping(self, slot, partial(self._stored_children, slot)) for slot in self._SLOTS}
        self._slots["uns"] = UnsMapping(self, "uns", self._visible_uns_keys)
        self._uns_levels: dict[str, UnsMapping] = {"uns": self._slots["uns"]}

    def _stored_children(self, rel: str) -> list[str]:
        """Keys the file stores under the mapping ``rel`` (a slot, a uns level, raw's varm)."""
        return self._layout.children(rel)

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
        def build() -> Any:
            spec = self._layout.spec(rel)
            selection = selection_for(rel, spec, self._view)
            graph = select_graph(spec, selection) if selection else spec.graph()
            return self._view_graph(rel, graph) if self._view is not None else graph

        return self._state.graph(rel, build)

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
            names = self._changed_value(self._index_rel(rel))
            if names is not NOTHING:
                value.index = names
            value = with_columns(value, self._visible_staged_columns(rel))
            value = value.drop(columns=[c for c in self._deleted_columns(rel) if c in value.columns])
        return value

    def _element(self, rel: str) -> Any:
        """The element at ``rel`` as the shadow's backends present it (kept per section 4 of DESIGN)."""
        changed = self._changed_value(rel)
        if changed is not NOTHING:
            return None if changed is DELETED else changed
        held = self._state.held(rel)
        if held is not NOTHING:
            return held
        spec = self._layout.spec(rel)
        backend = self._backend_for(spec.kind)
        if backend is not None and backend.lazy:
            return self._graph(rel)
        if backend is None:
            return self._state.hold(rel, self._materialize(rel))
        if rel in FRAMES and backend.name == "pandas":
            where = f"{self.filename}: {rel}"
            return self._state.hold(rel, tracked(self._materialize(rel), partial(self._stage_column, rel), where))
        return self._state.hold(rel, backend.convert(self._materialize(rel)))

    def _plain(self, rel: str) -> Any:
        """The element at ``rel`` as numpy/scipy/pandas, whatever the backends (for to_memory)."""
        changed = self._changed_value(rel)
        if changed is not NOTHING:
            return None if changed is DELETED else computed(changed)
        spec = self._layout.spec(rel)
        backend = self._backend_for(spec.kind)
        held = self._state.held(rel)
        if backend is not None and backend.name in ("numpy", "pandas") and held is not NOTHING:
            return held.copy(deep=False) if rel in FRAMES else held
        if spec.kind == "mapping":
            return self._uns_child(rel).materialize()
        return self._materialize(rel)

    def _uns_child(self, rel: str) -> Any:
        spec = self._layout.spec(rel)
        if spec.kind != "mapping":
            return self._element(rel)
        if rel not in self._uns_levels:
            self._uns_levels[rel] = UnsMapping(self, rel, partial(self._stored_children, rel))
        return self._uns_levels[rel]

    def _is_cached(self, rel: str) -> bool:
        return self._state.is_held(rel)

    # -- whole elements changed in memory (X, raw/X) ---------------------------------------------

    def _changed_value(self, rel: str) -> Any:
        """The value ``rel`` was given in memory (DELETED when removed), or NOTHING. A view sees its
        root's, sliced.
        """
        changed = self._state.changed(rel)
        if changed is NOTHING and self._is_view:
            changed = self._root._state.changed(rel)
            if changed is not NOTHING and changed is not DELETED:
                changed = self._select_staged(rel, changed)
        return changed

    def _is_changed(self, rel: str) -> bool:
        """Whether ``rel`` was given a new value (or deleted) in memory (▲)."""
        return self._changed_value(rel) is not NOTHING

    def _has(self, rel: str) -> bool:
        """Whether the element exists for this shadow: changed in memory, or stored and not deleted."""
        changed = self._changed_value(rel)
        return self._layout.has(rel) if changed is NOTHING else changed is not DELETED

    def _set_whole(self, rel: str, value: Any, shape: tuple[int, ...]) -> None:
        """Give element ``rel`` a new value in memory (▲; ``None`` deletes it), checked to be ``shape``.

        A view becomes an independent shadow of its selection first, as an AnnData view becomes actual.
        """
        if value is not None:
            got = tuple(getattr(value, "shape", ()))
            if got != shape:
                raise ValueError(f"{self.filename}: {rel}: expected shape {shape}, got {got or type(value).__name__}")
        self._detach()
        if value is not None:
            self._state.change(rel, value)
        elif self._layout.has(rel):
            self._state.delete(rel)
        else:
            self._state.revert(rel)

    def _deep_copy_changes(self) -> None:
        """Give this shadow its own copies of the values it holds as changes (``copy()``'s independence)."""
        self._state.map_changes(lambda _, value: _copied(value))

    def _detach(self) -> None:
        """Make a view an independent shadow of its selection, as anndata views become actual when
        modified: the root's changes it sees are copied in (sliced), nothing is read, and from then on
        neither sees the other's changes. Roots are left as they are.
        """
        if not self._is_view:
            return
        root = self._root
        for rel, change in root._state.changes().items():
            if self._state.changed(rel) is NOTHING:
                self._state.change(rel, change if change is DELETED else self._select_staged(rel, change))
        self._file_layout, self._layout_generation = root._layout, root._layout_generation
        self._root, self._is_view, self._local = self, False, None

    def _stage_column(self, frame_rel: str, key: str, values: pd.Series | None) -> None:
        """A column assigned in memory (``values``), or deleted (``None``: a stored one is deleted from the
        file by ``write(overwrite=True)``).
        """
        self._detach()
        rel = f"{frame_rel}/{key}"
        if values is not None:
            self._state.change(rel, values)
        elif key in getattr(self._layout, frame_rel).columns:
            self._state.delete(rel)
        else:
            self._state.revert(rel)

    # -- what a view sees of its root's staged elements (sliced, as an AnnData view would) ---------

    def _visible_staged_columns(self, frame_rel: str) -> dict[str, pd.Series]:
        """Columns assigned in memory: a view's own, and its root's taken at the view's rows."""
        own = self._column_changes(self._state, frame_rel)
        if not self._is_view:
            return own
        rows = as_positions(self._local[FRAMES.index(frame_rel)])
        root = self._column_changes(self._root._state, frame_rel)
        inherited = {k: v.iloc[rows] for k, v in root.items() if k not in own}
        return {**inherited, **own}

    def _column_changes(self, state: ElementState, frame_rel: str) -> dict[str, pd.Series]:
        """The columns assigned in ``state`` to the dataframe ``frame_rel`` (not its names)."""
        names = self._index_rel(frame_rel).rpartition("/")[2]
        return {k: v for k, v in state.children(frame_rel).items() if v is not DELETED and k != names}

    def _deleted_columns(self, frame_rel: str) -> set[str]:
        """Stored columns of ``frame_rel`` deleted in memory (here, or in a view's root)."""
        states = [self._state, self._root._state] if self._is_view else [self._state]
        return {k for state in states for k, v in state.children(frame_rel).items() if v is DELETED}

    def _select_staged(self, slot: str, value: Any) -> Any:
        """A root's staged ``value`` (of ``slot``, or of the element ``slot`` names) as this view sees it:
        sliced along its aligned axes, and never sharing memory with the root's value (an in-place
        change of one must not change the other).
        """
        original = value
        for position, axis in enumerate(element_axes(slot)):
            if axis is None:
                continue
            index = as_slice_or_array(self._local[axis])
            if isinstance(value, pd.DataFrame | pd.Series):
                value = value.iloc[index]
            elif isinstance(value, pd.Index):
                value = value[index]
            else:
                value = value[(slice(None),) * position + (index,)]
        shares = isinstance(value, np.ndarray) and isinstance(original, np.ndarray) \
            and np.shares_memory(value, original)
        if shares or (isinstance(value, pd.DataFrame | pd.Series) and value is not original):
            value = value.copy()
        return value

    def _frame_rows(self, frame_rel: str) -> AxisIndex | None:
        """The rows of a dataframe element this shadow sees (``None``: all)."""
        spec = self._layout.spec(frame_rel)
        selection = selection_for(frame_rel, spec, self._view)
        return selection[0] if selection else None

    @staticmethod
    def _index_rel(frame_rel: str) -> str:
        """The record of a dataframe's names: ``obs/_index`` (a name no column may take, whatever name
        the file stores the index under).
        """
        return f"{frame_rel}/_index"

    def _set_names(self, frame_rel: str, names: Any) -> None:
        """``adata.obs_names = names``: new names for the rows of obs/var, kept in memory (▲) until
        ``write(overwrite=True)`` replaces the stored index. Non-string names become strings, as anndata
        makes them (with its warning).
        """
        index = pd.Index(names)
        expected = self.n_obs if frame_rel == "obs" else self.n_vars
        if len(index) != expected:
            raise ValueError(f"{self.filename}: {frame_rel}_names: expected {expected} names, got {len(index)}")
        if not all(isinstance(name, str) for name in index):
            import warnings

            warnings.warn(f"AnnData expects .{frame_rel}.index to contain strings; converting them", UserWarning,
                          stacklevel=3)
            index = index.astype(str)
        self._detach()
        index.name = self._names(frame_rel).name
        self._state.change(self._index_rel(frame_rel), index)
        frame = self._state.held(frame_rel)
        if isinstance(frame, pd.DataFrame):
            frame.index = index
        for mapping in (self._slots.get(f"{frame_rel}m"),):  # dataframes in obsm/varm follow, as in anndata
            for key in [] if mapping is None else list(mapping):
                value = mapping[key] if mapping.is_staged(key) else None
                if isinstance(value, pd.DataFrame):
                    value.index = index

    def _names(self, frame_rel: str) -> pd.Index:
        changed = self._changed_value(self._index_rel(frame_rel))
        if changed is not NOTHING:
            return changed
        frame = self._state.held(frame_rel)
        if frame is not NOTHING and self._table_backend.name == "pandas":
            return frame.index
        spec = self._layout.spec(frame_rel)
        return self._state.held_or_read(self._index_rel(frame_rel),
                                        lambda: read_index(spec, self._frame_rows(frame_rel)))

    def _view_column(self, frame_rel: str, key: str) -> Any:
        """One stored obs/var column of this shadow (as the frame of this shadow would hold it)."""
        return read_column(self._layout.spec(frame_rel).column(key), self._frame_rows(frame_rel))

    def _frame_column(self, frame_rel: str, key: str) -> Any:
        """One obs/var column as AnnData's ``obs_vector`` returns it, read alone unless the frame is in memory.

        That is ``Series.values`` up to anndata 0.12 (numpy for numpy dtypes, else the pandas array: a
        ``Categorical``, a masked array), and ``Series.array`` from anndata 0.13 on (which resolves
        ``adata[A.obs[k]]``). scanpy's plotting tells categorical colors from continuous ones by it.
        """
        frame = self._state.held(frame_rel)
        if frame is not NOTHING and self._table_backend.name == "pandas":
            column = frame[key]
        else:
            staged = self._visible_staged_columns(frame_rel)
            column = staged[key] if key in staged else pd.Series(self._view_column(frame_rel, key), copy=False)
        return column.array if VECTORS_ARE_PANDAS_ARRAYS else column.values

    def _frame_keys(self, frame_rel: str) -> list[str]:
        deleted = self._deleted_columns(frame_rel)
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
        for key in frame.columns:
            problem = column_problem(key)
            if problem is not None:
                raise InvalidElementKeyError(f"{where}[{key!r}]: invalid column name: {problem}")
        current = self._plain(frame_rel)
        self._detach()
        if len(frame) != len(current):
            raise ValueError(f"{where}: expected {len(current)} rows, got {len(frame)}")
        if not frame.index.equals(current.index):
            raise ValueError(f"{where}: the index differs from the file's {frame_rel}_names; a shadow cannot "
                             "rename them (export with .to_memory() to do so)")
        for key in [c for c in current.columns if c not in frame.columns]:
            self._stage_column(frame_rel, key, None)  # deleted (a stored one by write(overwrite=True))
        for key in frame.columns:  # a column deleted before and back now is not in current: assigned
            if key not in current.columns or not frame[key].equals(current[key]) \
                    or frame[key].dtype != current[key].dtype:
                self._state.change(f"{frame_rel}/{key}", frame[key])
        self._state.forget(frame_rel)

    @property
    def obs_names(self) -> pd.Index:
        """Names of observations (read alone, without the obs columns); assignable (▲)."""
        return self._names("obs")

    @obs_names.setter
    def obs_names(self, names: Any) -> None:
        self._set_names("obs", names)

    @property
    def var_names(self) -> pd.Index:
        """Names of variables; assignable (▲)."""
        return self._names("var")

    @var_names.setter
    def var_names(self, names: Any) -> None:
        self._set_names("var", names)

    @property
    def obsm(self) -> ElementMapping:
        """Multi-dimensional annotations of observations."""
        return self._slots["obsm"]

    @obsm.setter
    def obsm(self, values: Mapping[str, Any]) -> None:
        self._slots["obsm"].replace_all(values)

    @property
    def varm(self) -> ElementMapping:
        """Multi-dimensional annotations of variables."""
        return self._slots["varm"]

    @varm.setter
    def varm(self, values: Mapping[str, Any]) -> None:
        self._slots["varm"].replace_all(values)

    @property
    def obsp(self) -> ElementMapping:
        """Pairwise annotations of observations."""
        return self._slots["obsp"]

    @obsp.setter
    def obsp(self, values: Mapping[str, Any]) -> None:
        self._slots["obsp"].replace_all(values)

    @property
    def varp(self) -> ElementMapping:
        """Pairwise annotations of variables."""
        return self._slots["varp"]

    @varp.setter
    def varp(self, values: Mapping[str, Any]) -> None:
        self._slots["varp"].replace_all(values)

    @property
    def uns(self) -> UnsMapping:
        """Unstructured annotations, a lazy nested mapping."""
        return self._slots["uns"]

    @uns.setter
    def uns(self, values: Mapping[str, Any]) -> None:
        self._slots["uns"].replace_all(values)

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
        """Whether this shadow is a view (``shadow[...]``) of another; a modified view is not (it became
        an independent shadow of its selection, as AnnData views become actual).
        """
        return self._is_view

    @property
    def isbacked(self) -> bool:
        """False, as for an in-memory AnnData: a shadow behaves like one (changes live in memory), so
        scanpy and anndata take their in-memory paths. ``filename`` and ``file`` still give the file.
        """
        return False

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
                self._state.hold(rel, self._graph(rel).persist(), check=False)
            else:
                self._element(rel)
        return self

    def clear_cache(self) -> None:
        """Drop every element held in memory so its memory is freed.

        Changes are not dropped: elements assigned or deleted in memory (▲) stay, and so does a cached
        array that was changed in place since it was read (``np.log1p(adata.X, out=adata.X)``): it is
        kept as a change (▲), for ``write(overwrite=True)`` to store, never reverted to the file's values.
        """
        self._state.release()



    def _slot_values(self, slot: str, read: Callable[[str], Any]) -> dict[str, Any]:
        """Every value of ``slot``: staged ones as assigned (sliced in a view), stored ones by ``read(rel)``."""
        mapping = self._slots[slot]
        return {k: (mapping[k] if mapping.is_staged(k) else read(f"{slot}/{k}")) for k in mapping.own_keys()}

    def _stored_element_paths(self) -> list[str]:
        paths = [p for p in ("X", *FRAMES) if self._layout.has(p)]
        for slot in self._SLOTS:
            paths += [f"{slot}/{k}" for k in self._layout.mapping_keys(slot)]
        return paths



    def _staged_changes(self) -> tuple[list[ElementChange], list[ColumnChange]]:
        """What ``write()`` commits, built from the element records: elements (with absolute paths) and
        obs/var columns; ``replaces`` is decided by the transaction, which asks the file.
        """
        elements, columns = [], []
        for rel, value in self._state.changes().items():
            frame, _, key = rel.rpartition("/")
            written = partial(self._written, rel)
            if frame in FRAMES and rel != self._index_rel(frame):
                columns.append(ColumnChange(self._layout.path(frame), key, value, False, written))
                continue
            if rel in (self._index_rel(f) for f in FRAMES):  # new names: stored as anndata stores an index
                rel = f"{frame}/{self._layout.spec(frame).index_key}"
                value = np.asarray(value.astype(str), dtype=object)
            path = self._layout.path(rel) if self._layout.has(rel) else self._ref.element_path(rel)
            elements.append(ElementChange(path, value, False, written))
        return elements, columns

    def _written(self, rel: str) -> None:
        """``rel``'s change is in the file: nothing of it is held, nor of the dataframe it is a column of."""
        self._state.written(rel)
        frame = rel.rpartition("/")[0]
        if frame in FRAMES:
            self._state.forget(frame)





    def __sizeof__(self) -> int:
        total = object.__sizeof__(self)
        for _, value in self._state.held_items():
            total += int(getattr(value, "nbytes", 0) or 0) or _sparse_nbytes(value) or _frame_nbytes(value)
        return total

    # -- file connection -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection to the file (cached and staged elements stay in memory; closing twice is
        harmless). The last shadow of a file to close releases every handle this process holds on it,
        graph tasks' included; other shadows of the file keep working.
        """
        self._conn.close()

    def reopen(self, mode: str = "r") -> ShadowBase:
        """Reopen the file in ``mode`` (``"r"`` or ``"r+"``), keeping in-memory additions.

        The connection is this shadow's, its views' and modalities': they all follow. Other shadows of
        the same file keep their own mode; they read through the one handle this process holds, which
        is upgraded to ``r+`` in place and back to ``r`` when no shadow holds ``r+``. If the file refuses
        (another process writing it, permissions), the shadow stays exactly as it was.
        """
        self._conn.open(mode)
        return self

    def __enter__(self) -> ShadowBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, filename: str | os.PathLike | bool | None = None, clear_cache: bool = False,
              overwrite: bool = False, **kwargs: Any) -> ShadowBase:
        """Push staged elements (▲) to the file, each committed atomically; returns the shadow.

        The file must be open with ``mode="r+"`` (``reopen("r+")``). Dask arrays are streamed block by
        block, so an element computed lazily is never held in memory whole. Replacing an element or
        column the file already has needs ``overwrite=True``. With ``clear_cache=True`` what is held in
        memory is dropped afterwards.

        ``write(filename)`` is AnnData's alias of ``write_h5ad(filename)`` (``write_h5mu`` for MuData):
        an export to a new file (``overwrite=True`` to replace one), and the shadow is returned.
        """
        if isinstance(filename, bool):  # write(True): the first parameter before AnnData's alias existed
            clear_cache = filename
        elif filename is not None:
            self._export_alias(filename, overwrite=overwrite, **kwargs)
            return self
        if self.is_view:
            msg = (f"{self.filename}: a view cannot be written to its file; write the shadow it was taken "
                   "from, or export the view with .write_h5ad() / .write_zarr()")
            raise ReadOnlyError(msg)
        if self._view is not None:
            msg = (f"{self.filename}: this shadow was subset in place ({self.n_obs} × {self.n_vars} of the file's "
                   f"{self._layout.n_obs} × {self._layout.n_vars}); its elements no longer fit the file. Export "
                   "it with .write_h5ad() / .write_zarr()")
            raise ReadOnlyError(msg)
        if self._mode == "r":
            raise ReadOnlyError(READ_ONLY_MESSAGE)
        elements, columns = self._staged_changes()
        transaction.check(self._conn, self.filename, elements, columns, overwrite)
        # pre-0.7 slots written into move to today's encoding, checked before anything is written too
        elements, columns = legacy_upgrade.fold(self._conn, self.filename, elements, columns, overwrite,
                                                forget=self._state.forget)
        if elements or columns:
            before = self._conn.content
            try:
                commit(self._conn, elements, columns)
            except BaseException:
                self._conn.wrote()  # part of it may be in the file
                self._conn.recover()
                self._state.carry_over(before)  # what this shadow holds was not touched by its own write
                raise
            self._conn.wrote()  # other shadows of the file drop what they read before
            self._conn.open(self._conn.mode)  # read the new layout; drop handles to replaced nodes
            self._state.carry_over(before)
        if clear_cache:
            self.clear_cache()
        return self

    def _init_as_actual(self, X: Any = None, *args: Any, **kwargs: Any) -> None:
        """What anndata and scanpy call to turn a view into an actual object (``view_to_actual``:
        ``adata._init_as_actual(adata.copy())``): a shadow becomes an independent shadow of its
        selection (nothing read). Any other data cannot become a shadow: a TypeError says so.
        """
        if isinstance(X, ShadowBase) and X._ref == self._ref and X.shape == self.shape:
            self._detach()
            return
        raise TypeError(f"{self.filename}: a shadow cannot be re-initialized from other data; use the AnnData it "
                        "came from, or .to_memory() for an in-memory copy")

    # -- copies and exports ---------------------------------------------------------------------

    def _export_alias(self, filename: str | os.PathLike, **kwargs: Any) -> None:
        """What ``write(filename)`` does: AnnData's ``write_h5ad`` (MuData's ``write_h5mu``)."""
        raise NotImplementedError  # pragma: no cover - AnnDataShadow and MuDataShadow define it

    def copy(self, filename: str | os.PathLike | None = None, *, overwrite: bool = False) -> Any:
        """An in-memory copy (``to_memory()``); with ``filename``, this shadow (or view) written there out
        of core (HDF5 or Zarr by the suffix; what exists there is replaced only with ``overwrite=True``)
        and opened as a new shadow with the same backends.
        """
        if filename is None:
            return self.to_memory()
        fmt = suffix_format(filename) or "hdf5"
        export(self, filename, fmt, overwrite=overwrite)
        return type(self)(filename, array_backend=self._array_backend.name, table_backend=self._table_backend.name,
                          format=fmt)

    def write_zarr(self, store: str | os.PathLike, *, progress: bool = False, overwrite: bool = False,
                   **_: Any) -> None:
        """Write this shadow (or view: only its selection) to a new Zarr store, out of core (Zarr format
        from ``anndata.settings.zarr_write_format``; anndata's compression options are ignored). An
        existing store is replaced only with ``overwrite=True``; the shadow's own store never is.
        """
        export(self, store, "zarr", progress=progress, overwrite=overwrite)

    # -- views and pickling ----------------------------------------------------------------------

    def _view_of(self, index: Any) -> ShadowBase:
        """A view: a shadow of its own whose elements are this shadow's, sliced by ``index``.

        Keys are those of AnnData (slices, ints, masks, positions, names, and pairs of them). A view of
        a view keeps positions relative to the file, so views compose to any depth. Building a view
        reads no data.
        """
        obs, var = normalize_key(index, self.shape, (lambda: self.obs_names, lambda: self.var_names))
        local = (compose(self._local[0], obs), compose(self._local[1], var)) if self._is_view else (obs, var)
        if self._view is not None:
            obs, var = compose(self._view[0], obs), compose(self._view[1], var)
        return type(self)._make_view(self._root, obs, var, local)

    def _subset_in_place(self, index: Any) -> None:
        """Keep only the rows and columns ``index`` selects, in place (what scanpy's filters ask through
        ``_inplace_subset_obs``/``_inplace_subset_var``). Nothing is read: the shadow becomes a shadow of
        the kept part of its file (reads are pushed down as a view's), what it holds in memory is
        dropped (stored values are read again, only the kept part) and its changes are sliced.
        """
        self._state.keep_changed_in_place()
        self._detach()
        kept = self._view_of(index)
        kept._detach()
        self.__dict__.update(kept.__dict__)
        self._root = self
        for mapping in [*self._slots.values(), *self._uns_levels.values()]:
            mapping._shadow = self

    def _inplace_subset_obs(self, index: Any) -> None:
        """Keep the observations ``index`` selects (``adata = adata[index]``, in place)."""
        self._subset_in_place((index, slice(None)))

    def _inplace_subset_var(self, index: Any) -> None:
        """Keep the variables ``index`` selects (``adata = adata[:, index]``, in place)."""
        self._subset_in_place((slice(None), index))

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
        """Pickled as the file's path, the selection and the changes held in memory (not the cache)."""
        root = self._root
        view = (self._view, self._local, self._memory_state()) if self._is_view else None
        args = (type(self), self._ref, self._array_backend.name, self._table_backend.name, self._mode,
                root._view, root._memory_state(), view)
        return (_reopen, args)

    def _memory_state(self) -> dict[str, Any]:
        """The changes this shadow holds in memory (▲), as :meth:`_restore_memory` takes them back."""
        return self._state.changes()

    def _restore_memory(self, changes: dict[str, Any]) -> None:
        for rel, value in changes.items():
            self._state.change(rel, value)

def _reopen(cls: type, ref: FileRef, array_backend: str, table_backend: str, mode: str,
            selection: tuple[AxisIndex, AxisIndex] | None = None, state: dict[str, Any] | None = None,
            view: tuple[Any, Any, dict[str, Any]] | None = None) -> ShadowBase:
    shadow = cls(ref.full_path, array_backend=array_backend, table_backend=table_backend, mode=mode,
                 format=ref.format, storage_options=ref.storage_options, allow_external=ref.allow_external)
    shadow._view = selection
    if state is not None:
        shadow._restore_memory(state)
    if view is None:
        return shadow
    positions, local, view_state = view
    out = cls._make_view(shadow, *positions, local)
    out._restore_memory(view_state)
    return out


def _copied(value: Any) -> Any:
    """A deep copy of a value held in memory (dask graphs are immutable: kept as they are)."""
    import copy

    return value if value is DELETED or hasattr(value, "dask") else copy.deepcopy(value)


def computed(value: Any) -> Any:
    """A value assigned in memory as numpy/scipy (a dask array computed)."""
    if hasattr(value, "dask"):
        from shadows.elements.sparse_chunk import to_plain

        return to_plain(value.compute())
    return value


def _sparse_nbytes(value: Any) -> int:
    if hasattr(value, "indptr"):
        return int(value.data.nbytes + value.indices.nbytes + value.indptr.nbytes)
    return 0


def _frame_nbytes(value: Any) -> int:
    if isinstance(value, pd.DataFrame):
        return int(value.memory_usage(deep=True).sum())
    return 0
