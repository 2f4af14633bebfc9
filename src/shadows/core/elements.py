"""The machinery behind a shadow: its elements (:class:`ShadowElements`).

A shadow (:mod:`shadows.core.base`) is the AnnData/MuData surface only; everything it shows comes from
one :class:`ShadowElements`: the file's layout, the element records (:mod:`shadows.core.state`), the view
key (the root, and the rows and columns kept), the connection and the backends. Each element is served by
one :class:`~shadows.core.element.Element` (the one serving order), cached per path here.

This is the one place where a view's records meet its root's: :meth:`ShadowElements.changed_value`,
:meth:`~ShadowElements.root_part`, :meth:`~ShadowElements.mapping_changes`,
:meth:`~ShadowElements.visible_staged_columns`, :meth:`~ShadowElements.deleted_columns` and
:meth:`~ShadowElements.make_independent` (a view becoming a shadow of its own). What a private axis change
(``adata._obs = ...``) leaves stale, and the in-place subset that swaps this object's contents for its
kept part's, are here too.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from shadows import convert, progress
from shadows.backends import FileRef
from shadows.core.aligned import ElementMapping, UnsMapping, as_slot_value
from shadows.core.annotations import index_rel, names, set_frame, whole_frame
from shadows.core.connection import Connection
from shadows.core.element import Element
from shadows.core.frames import tracked, with_columns
from shadows.core.layout import ElementMap, Layout
from shadows.core.state import NOTHING, ElementState
from shadows.elements.positions import read_column, read_index
from shadows.errors import ShapeError
from shadows.indexing import AxisIndex, compose, normalize_key
from shadows.indexing.keys import as_positions, as_slice_or_array
from shadows.indexing.selection import selection_for
from shadows.schema import ALIGNED_SLOT_AXES, FRAMES, element_axes
from shadows.settings import settings
from shadows.writing import DELETED, ColumnChange, ElementChange


class MappingChanges:
    """What a mapping slot (or uns level) shows besides the file, merged from a view's records and its
    root's (see :meth:`ShadowElements.mapping_changes`). The file's keys are listed only when asked for
    (:attr:`stored`; :attr:`inherited` needs them when the root assigned keys): asking whether a key is
    staged reads no metadata.

    Attributes
    ----------
    staged
        Values assigned in memory (▲) in this shadow.
    deleted
        Stored keys deleted in memory (here, or in a view's root unless assigned here).
    """

    __slots__ = ("__dict__", "_root_assigned", "_stored_keys", "deleted", "staged")

    def __init__(self, staged: dict[str, Any], deleted: set[str], root_assigned: dict[str, Any],
                 stored_keys: Callable[[], list[str]]) -> None:
        self.staged, self.deleted = staged, deleted
        self._root_assigned, self._stored_keys = root_assigned, stored_keys

    @functools.cached_property
    def stored(self) -> list[str]:
        """Keys the file stores, less the deleted ones."""
        return [k for k in self._stored_keys() if k not in self.deleted]

    @functools.cached_property
    def inherited(self) -> dict[str, Any]:
        """In a view: the root's assigned values (not sliced) of keys neither assigned here nor stored."""
        if not self._root_assigned:
            return {}
        stored = set(self.stored)
        return {k: v for k, v in self._root_assigned.items() if k not in stored}


class ShadowElements:
    """The elements of one shadow (root or view): layout + element records + view key + connection.

    A root (``root is self``) owns the layout of its group; a view is its root plus positions kept on
    each axis (:attr:`view`, of the file's group; :attr:`local`, of the root), so views of views compose.
    A root subset in place keeps its positions in :attr:`view` too. Subclasses add what AnnData's and
    MuData's views and elements do differently (:mod:`shadows.core.anndata_elements`,
    :mod:`shadows.core.mudata_elements`).

    Parameters
    ----------
    ref
        The AnnData/MuData group.
    arrays, tables
        The array and table backends.
    connection
        The connection to the file (shared with views and modalities).
    wrap
        Makes the shadow (the AnnData/MuData surface) of a :class:`ShadowElements` of the same kind: what
        views are handed out as.
    """

    #: The layout of the group (AnnData's or MuData's).
    LAYOUT: ClassVar[type[Layout]] = Layout
    #: The aligned mapping slots of this kind of object (``uns`` is always there too).
    SLOTS: ClassVar[tuple[str, ...]] = ()
    #: "AnnData" or "MuData", for messages and the repr.
    KIND: ClassVar[str] = ""

    def __init__(self, ref: FileRef, arrays: convert.Backend, tables: convert.Backend, connection: Connection,
                 wrap: Callable[[ShadowElements], Any]) -> None:
        self.ref, self.arrays, self.tables, self.connection, self.wrap = ref, arrays, tables, connection, wrap
        self.root: ShadowElements = self
        #: The rows and columns of the file's group kept (``None``: all).
        self.view: tuple[AxisIndex, AxisIndex] | None = None
        #: A view's rows and columns as positions in its root (``None`` for roots).
        self.local: tuple[AxisIndex, AxisIndex] | None = None
        #: Whether this is a view (a root, also one subset in place, is not).
        self.is_view = False
        #: The shadow showing these elements (set by ``wrap``).
        self.shadow: Any = None
        self._build_layout()
        self.init_memory()

    def make_view(self, obs: AxisIndex, var: AxisIndex, local: tuple[AxisIndex, AxisIndex] | None = None
                  ) -> ShadowElements:
        """The elements of a view of this root keeping positions ``obs`` and ``var`` of the file's group;
        ``local`` are the same rows and columns as positions in this root (they differ when it is a subset).
        """
        view = copy.copy(self)
        view.root, view.view, view.is_view = self, (obs, var), True
        view.local = local if local is not None else (obs, var)
        view.shadow = None
        view.init_memory()
        return view

    def init_memory(self) -> None:
        """Fresh in-memory state: the element records (:mod:`shadows.core.state`) and the slots."""
        connection = self.connection
        self.state = ElementState(lambda: connection.content, DELETED)
        self.raw_slot: Any = None
        self.slots: dict[str, ElementMapping] = {
            slot: ElementMapping(self, slot, partial(self.stored_children, slot)) for slot in self.SLOTS}
        self.slots["uns"] = UnsMapping(self, "uns", self.visible_uns_keys)
        self._uns_levels: dict[str, UnsMapping] = {"uns": self.slots["uns"]}
        self._served: dict[str, Element] = {}
        #: These elements as they were before a private axis change (``adata._obs = ...``): what is stale.
        self.before: ShadowElements | None = None

    def _build_layout(self) -> None:
        self._file_layout = self.new_layout()
        self._layout_generation = self.connection.generation

    def new_layout(self) -> ElementMap:
        """The layout of the group, read from the connection's current handle (a subclass may answer
        it otherwise: an atlas's is decided when it opens).
        """
        # the specs (and so every read task) carry which content of the file they were planned against
        planned = dataclasses.replace(self.ref, content=(os.getpid(), self.connection.content))
        return self.LAYOUT(planned, self.connection.handle)

    @property
    def layout(self) -> ElementMap:
        """The root's layout, rebuilt from the new handle after the file was reopened."""
        root = self.root
        if root._layout_generation != root.connection.generation:
            root._build_layout()
        return root._file_layout

    @property
    def filename(self) -> str:
        """The file (and group) as messages name it."""
        return self.ref.display

    def element(self, rel: str) -> Element:
        """The :class:`~shadows.core.element.Element` at ``rel`` (kept: one per path)."""
        served = self._served.get(rel)
        if served is None:
            served = self._served[rel] = Element(self, rel)
        return served

    def stored_children(self, rel: str) -> list[str]:
        """Keys the file stores under the mapping ``rel`` (a slot, a uns level, raw's varm)."""
        return self.layout.children(rel)

    def visible_uns_keys(self) -> list[str]:
        """The uns keys this shadow shows of the file's."""
        return self.layout.mapping_keys("uns")

    def axis_length(self, axis: int) -> int:
        """Length of an axis: of the dataframe replaced whole in memory (a MuData's ``update()`` may grow
        it), else of the kept positions, else of the file's group.
        """
        if not self.is_view:
            whole = self.state.changed(FRAMES[axis])
            if isinstance(whole, pd.DataFrame):
                return len(whole)
        if self.view is not None:
            return len(self.view[axis])
        return self.layout.n_obs if axis == 0 else self.layout.n_vars

    @property
    def shape(self) -> tuple[int, int]:
        """(n_obs, n_vars)."""
        return (self.axis_length(0), self.axis_length(1))

    def view_of(self, index: Any) -> ShadowElements:
        """The elements of a view of these, sliced by ``index`` (AnnData's keys; see
        :func:`shadows.indexing.normalize_key`). A view of a view keeps positions relative to the file.
        Reads no data.
        """
        obs, var = normalize_key(index, self.shape, (lambda: names(self, "obs"), lambda: names(self, "var")))
        if self.is_view:
            self.keep_changes_in_place()  # a view's arrays changed in place: it is actual, its views see them
        local = (compose(self.local[0], obs), compose(self.local[1], var)) if self.is_view else (obs, var)
        if self.view is not None:
            obs, var = compose(self.view[0], obs), compose(self.view[1], var)
        return self.root.make_view(obs, var, local)

    # -- hooks: what a view changes in an element besides slicing it (nothing, here) ----------------

    def view_graph(self, rel: str, graph: Any) -> Any:
        """What a view changes in an element's graph besides slicing it."""
        return graph

    def view_value(self, rel: str, spec: Any, value: Any) -> Any:
        """What a view changes in an element's value besides slicing it."""
        return value

    def mask_source(self, rel: str) -> str | None:
        """The stored element ``rel`` is computed from, if it is computed (a MuData's modality masks)."""
        return None

    # -- reading -------------------------------------------------------------------------------------

    def backend_for(self, spec: Any) -> convert.Backend | None:
        """The backend that presents an element (by its role), ``None`` for values shown as read."""
        if spec.role == "array":
            return self.arrays
        if spec.role == "table":
            return self.tables
        return None

    def graph(self, rel: str) -> Any:
        """The dask graph of the stored element ``rel`` (this view's part), built once from metadata."""
        source = self.mask_source(rel)
        if source is not None:
            return self.mask_of(self.graph(source))

        def build() -> Any:
            spec = self.layout.spec(rel)
            selection = selection_for(rel, spec, self.view)
            graph = spec.select_graph(selection) if selection else spec.graph()
            return self.view_graph(rel, graph) if self.view is not None else graph

        return self.state.graph(rel, build)

    def mask_of(self, value: Any) -> Any:
        """The element computed from ``value`` of its :meth:`mask_source` (see the MuData subclass)."""
        return value

    def materialize(self, rel: str) -> Any:
        """Read the element (this view's part of it) as numpy/scipy/pandas, with staged columns.

        With ``shadows.settings.read_progress`` on, the read shows a bar (or counts on the one shown).
        """
        source = self.mask_source(rel)
        if source is not None:
            return self.mask_of(np.asarray(self.materialize(source)))
        spec = self.layout.spec(rel)
        with progress.reading_job(lambda: self.read_nbytes([rel]), settings.read_progress):
            progress.reading_element(rel)
            value = spec.read_selection(selection_for(rel, spec, self.view))
        if self.view is not None:
            value = self.view_value(rel, spec, value)
        value = as_slot_value(rel, value)
        if rel in FRAMES:
            names = self.changed_value(index_rel(rel))
            if names is not NOTHING:
                value.index = names
            value = with_columns(value, self.visible_staged_columns(rel))
            value = value.drop(columns=[c for c in self.deleted_columns(rel) if c in value.columns])
        return value

    def root_part(self, rel: str) -> Any:
        """A view's part of its root's value of ``rel`` in memory (changed ▲ or read ᐁ), or NOTHING.

        Views of an AnnData slice their parent's values in memory; so does a view of a shadow whose root
        holds the element (numpy backend): an array the root changed in place (``adata.X[0, 0] = v``) is
        seen by every view, never the file's value. The part is kept with a checksum and taken again at
        each access (as anndata's views do), unless the view's own array was changed in place since: the
        view then becomes a shadow of its own holding that change (▲), as an AnnData view becomes
        actual when modified. NOTHING for roots, other elements and a view's own changes.
        """
        if not self.is_view or not self.slices_root_value(rel) or self.state.changed(rel) is not NOTHING:
            return NOTHING
        root_value = changed = self.root.state.changed(rel)
        if root_value is NOTHING:
            root_value = self.root.state.held(rel)
        if root_value is NOTHING or root_value is DELETED:
            return NOTHING
        if self.state.is_changed_in_place(rel):
            value = self.state.held(rel)
            self.detach()
            self.state.change(rel, value)
            return value
        value = self.select_staged(rel, root_value)
        if changed is NOTHING:  # read from the file: shown as a view of it shows it
            value = self.view_value(rel, self.layout.spec(rel), value)
        return self.state.hold(rel, value)

    def in_root_memory(self, rel: str) -> bool:
        """Whether this view takes ``rel`` from its root's memory (see :meth:`root_part`): nothing read."""
        return self.is_view and self.slices_root_value(rel) and self.root.state.is_held(rel)

    def slices_root_value(self, rel: str) -> bool:
        """Whether a view takes ``rel`` from its root's value in memory: arrays aligned with the axes
        (X, raw.X, layers, obsm, varm, obsp, varp) under the numpy backend (other backends hold other types).
        """
        return (self.arrays.name == "numpy" and rel.partition("/")[0] not in (*FRAMES, "uns")
                and any(axis is not None for axis in element_axes(rel)))

    def lazy(self, rel: str, backend: convert.Backend) -> Any:
        """The element at ``rel`` as a lazy backend gives it: its dask graph, bare or labelled (xarray)."""
        if backend.name != "xarray":
            return self.graph(rel)
        source = self.mask_source(rel)
        if source is not None:  # dims as for any obsm/varm entry: the axis, then one named after the key
            return (self.lazy(source, backend) > 0).expand_dims({rel.split("/", 1)[1]: 1}, axis=1)
        from shadows import labelled  # imports xarray

        spec = self.layout.spec(rel)
        if spec.role == "table":
            rows = selection_for(rel, spec, self.view)
            return labelled.dataset(spec, rows[0] if rows else range(spec.shape[0]), self._frame_names(rel, spec),
                                    self.visible_staged_columns(rel) if rel in FRAMES else {},
                                    self.deleted_columns(rel) if rel in FRAMES else set())
        return labelled.data_array(rel, spec, selection_for(rel, spec, self.view), partial(names, self),
                                   partial(self.view_graph, rel))

    def _frame_names(self, rel: str, spec: Any) -> pd.Index:
        """The names of the rows of the dataframe at ``rel`` this shadow sees."""
        if rel in FRAMES or rel == "raw/var":
            return names(self, rel)
        return read_index(spec, self.frame_rows(rel))

    def uns_child(self, rel: str) -> Any:
        """The uns element ``rel``: a nested :class:`~shadows.core.aligned.UnsMapping` for a group."""
        spec = self.layout.spec(rel)
        if spec.role != "mapping":
            return self.element(rel).value()
        if rel not in self._uns_levels:
            self._uns_levels[rel] = UnsMapping(self, rel, partial(self.stored_children, rel))
        return self._uns_levels[rel]

    def is_held(self, rel: str) -> bool:
        """Whether ``rel`` is held in memory (ᐁ)."""
        return self.state.is_held(rel)

    def frame_rows(self, frame_rel: str) -> AxisIndex | None:
        """The rows of a dataframe element this shadow sees (``None``: all)."""
        spec = self.layout.spec(frame_rel)
        selection = selection_for(frame_rel, spec, self.view)
        return selection[0] if selection else None

    def view_column(self, frame_rel: str, key: str) -> Any:
        """One stored obs/var column of this shadow (as the frame of this shadow would hold it)."""
        return read_column(self.layout.spec(frame_rel).column(key), self.frame_rows(frame_rel))

    def slot_values(self, slot: str, read: Callable[[str], Any]) -> dict[str, Any]:
        """Every value of ``slot``: staged ones as assigned (sliced in a view), stored ones by ``read(rel)``."""
        mapping = self.slots[slot]
        return {k: (mapping[k] if mapping.is_staged(k) else read(f"{slot}/{k}")) for k in mapping.own_keys()}

    def plain(self, rel: str) -> Any:
        """The element at ``rel`` as numpy/scipy/pandas, whatever the backends (for ``to_memory``)."""
        return self.element(rel).plain()

    def read_nbytes(self, rels: list[str]) -> int:
        """About how many bytes reading the elements ``rels`` (this view's part of them) reads from the
        file: their arrays' uncompressed sizes, each scaled by the share of its rows and columns the view
        keeps. What a reading progress bar counts against (metadata only).
        """
        total = 0.0
        for rel in rels:
            if not self.layout.has(rel) or self.is_changed(rel) or self.in_root_memory(rel):
                continue
            spec = self.layout.spec(rel)
            total += spec.nbytes(selection_for(rel, spec, self.view))
        return int(total)

    def stored_element_paths(self) -> list[str]:
        """X, obs, var and every aligned slot's stored keys."""
        paths = [p for p in ("X", *FRAMES) if self.layout.has(p)]
        for slot in self.SLOTS:
            paths += [f"{slot}/{k}" for k in self.layout.mapping_keys(slot)]
        return paths

    def release(self) -> None:
        """Drop everything held in memory (``clear_cache()``); changes stay (see
        :meth:`~shadows.core.state.ElementState.release`).
        """
        self.state.release()

    def held_nbytes(self) -> int:
        """Bytes of the values held in memory (what ``sys.getsizeof(shadow)`` adds to the object's own)."""
        total = 0
        for _, value in self.state.held_items():
            total += int(getattr(value, "nbytes", 0) or 0) or _sparse_nbytes(value) or _frame_nbytes(value)
        return total

    def persist(self, keys: tuple[str, ...]) -> None:
        """Keep the elements ``keys`` (all stored ones when empty) computed in memory (ᐁ)."""
        for rel in keys or tuple(self.stored_element_paths()):
            self.element(rel).persist()

    # -- a view's records and its root's: merged here, and only here -------------------------------

    def changed_value(self, rel: str) -> Any:
        """The value ``rel`` was given in memory (DELETED when removed), or NOTHING. A view sees its
        root's, sliced.
        """
        changed = self._change_record(rel)
        if changed is not NOTHING and changed is not DELETED and self.state.changed(rel) is NOTHING:
            changed = self.select_staged(rel, changed)  # the root's, as this view sees it
        return changed

    def _change_record(self, rel: str) -> Any:
        """What :meth:`changed_value` gives, a root's value not sliced for a view: enough to tell whether
        ``rel`` was changed or deleted (slicing a large array only to ask that costs a copy of it).
        """
        changed = self.state.changed(rel)
        if changed is NOTHING and self.is_view:
            changed = self.root.state.changed(rel)
        return changed

    def mapping_changes(self, parent: str, stored_keys: Callable[[], list[str]]) -> MappingChanges:
        """The changes of the mapping ``parent`` (a slot or uns level) this shadow shows, with the keys
        ``stored_keys()`` the file stores (see :class:`MappingChanges`).
        """
        own = self.state.children(parent)
        staged = {k: v for k, v in own.items() if v is not DELETED}
        deleted = {k for k, v in own.items() if v is DELETED}
        root = self.root.state.children(parent) if self.is_view else {}
        deleted |= {k for k, v in root.items() if v is DELETED and k not in own}
        assigned = {k: v for k, v in root.items() if v is not DELETED and k not in own}
        return MappingChanges(staged, deleted, assigned, stored_keys)

    def visible_staged_columns(self, frame_rel: str) -> dict[str, pd.Series]:
        """Columns assigned in memory: a view's own, and its root's taken at the view's rows (every
        column of a dataframe replaced whole).
        """
        whole = whole_frame(self, frame_rel)
        if whole is not None:
            return dict(whole.items())
        own = _column_changes(self.state, frame_rel)
        if not self.is_view:
            return own
        rows = as_positions(self.local[FRAMES.index(frame_rel)])
        root = _column_changes(self.root.state, frame_rel)
        inherited = {k: v.iloc[rows] for k, v in root.items() if k not in own}
        return {**inherited, **own}

    def deleted_columns(self, frame_rel: str) -> set[str]:
        """Stored columns of ``frame_rel`` deleted in memory (here, or in a view's root)."""
        states = [self.state, self.root.state] if self.is_view else [self.state]
        return {k for state in states for k, v in state.children(frame_rel).items() if v is DELETED}

    def make_independent(self, root_checked: bool = False) -> None:
        """A view becomes an independent shadow of its selection (the body of :meth:`detach`): the root's
        changes it sees are copied in (sliced), nothing is read. ``root_checked``: the root's arrays
        changed in place were made changes just before (each check is a pass over every array it holds).
        """
        root = self.root
        if not root_checked:
            root.state.keep_changed_in_place()  # the root's arrays changed in place are the view's values too
        for rel, change in root.state.changes().items():
            if self.state.changed(rel) is NOTHING:
                self.state.change(rel, change if change is DELETED else self.select_staged(rel, change))
        self._file_layout, self._layout_generation = root.layout, root._layout_generation
        self.root, self.is_view, self.local = self, False, None

    def select_staged(self, rel: str, value: Any) -> Any:
        """A root's staged ``value`` (of a slot, or of the element ``rel`` names) as this view sees it:
        sliced along its aligned axes, and never sharing memory with the root's value (an in-place
        change of one must not change the other).
        """
        original = value
        for position, axis in enumerate(element_axes(rel)):
            if axis is None:
                continue
            index = as_slice_or_array(self.local[axis])
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

    # -- changes (▲) ---------------------------------------------------------------------------------

    def is_changed(self, rel: str) -> bool:
        """Whether ``rel`` was given a new value (or deleted) in memory (▲)."""
        return self._change_record(rel) is not NOTHING

    def has(self, rel: str) -> bool:
        """Whether the element exists for this shadow: changed in memory, or stored and not deleted."""
        changed = self._change_record(rel)
        return self.layout.has(rel) if changed is NOTHING else changed is not DELETED

    def change(self, rel: str, value: Any) -> None:
        """``rel`` takes ``value`` in memory (▲); a view becomes a shadow of its own first."""
        self.detach()
        self.state.change(rel, value)

    def remove(self, rel: str) -> None:
        """``rel`` is gone (▲ deleted when stored, forgotten when only assigned); a view detaches first."""
        self.detach()
        self.state.remove(rel, stored=self.layout.has(rel))

    def set_whole(self, rel: str, value: Any, shape: tuple[int, ...]) -> None:
        """Give element ``rel`` a new value in memory (▲; ``None`` deletes it), checked to be ``shape``.

        A view becomes an independent shadow of its selection first, as an AnnData view becomes actual.
        """
        if value is not None:
            got = tuple(getattr(value, "shape", ()))
            if got != shape:
                raise ShapeError(f"{self.filename}: {rel}: expected shape {shape}, got {got or type(value).__name__}")
            self.change(rel, value)
        else:
            self.remove(rel)

    def deep_copy_changes(self) -> None:
        """Give these elements their own copies of the values held as changes (``copy()``'s independence)."""
        self.state.map_changes(lambda _, value: _copied(value))

    def detach(self) -> None:
        """Make a view an independent shadow of its selection, as anndata views become actual when
        modified: the root's changes it sees are copied in (sliced), nothing is read, and from then on
        neither sees the other's changes. Roots are left as they are.
        """
        if self.is_view:
            self.make_independent()

    def keep_changes_in_place(self) -> None:
        """Make the arrays changed in place since they were read changes (▲); a view holding one
        becomes a shadow of its own first, as an AnnData view becomes actual when modified. What copies,
        views of views and writes call before they take this shadow's values.
        """
        if self.is_view and self.state.changed_in_place():
            self.detach()
        self.state.keep_changed_in_place()

    def stage_column(self, frame_rel: str, key: str, values: pd.Series | None) -> None:
        """A column assigned in memory (``values``), or deleted (``None``: a stored one is deleted from the
        file by ``write(overwrite=True)``).
        """
        self.detach()
        rel = f"{frame_rel}/{key}"
        if values is not None:
            self.state.change(rel, values)
        else:
            self.state.remove(rel, stored=key in getattr(self.layout, frame_rel).columns)

    def shown_frame(self, frame_rel: str, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` as the pandas backend hands obs/var out: a frame whose assignments are staged (▲)."""
        return tracked(frame, partial(self.stage_column, frame_rel), f"{self.filename}: {frame_rel}")

    # -- a private axis change (``adata._obs = ...``): the elements aligned with it go stale ------------

    def set_private_frame(self, frame_rel: str, frame: pd.DataFrame) -> None:
        """``adata._obs = frame`` (anndata's private field), as muon's in-place filters use it: ``frame``
        holds some of the current rows (by name), and only obs changes at once.

        The shadow keeps those rows (an in-place subset: nothing read, reads pushed down); the elements
        aligned with the axis (X, layers, obsm, obsp, raw; for a MuData obsm, obsp, obsmap) keep showing
        their values from before (:attr:`before`), as an AnnData's private fields do, until each is
        assigned its kept rows (which muon does next). An element never assigned stays as it was.
        """
        where = f"{self.filename}: {frame_rel}"
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"{where}: expected a pandas DataFrame, got {type(frame).__name__}")
        current = names(self, frame_rel)
        if frame.index.equals(current):
            set_frame(self, frame_rel, frame)
            return
        positions = current.get_indexer(frame.index) if current.is_unique else np.array([-1])
        if (positions < 0).any() or not frame.index.is_unique:
            raise ValueError(f"{where}: a new {frame_rel} given this way must keep some of the current rows by "
                             f"unique names; assign .{frame_rel} (same names) or subset the shadow instead")
        self.detach()
        before = self._snapshot()
        axis = FRAMES.index(frame_rel)
        aligned = self._aligned_elements(axis)
        self.subset_in_place((positions, slice(None)) if axis == 0 else (slice(None), positions))
        self.before = before
        set_frame(self, frame_rel, frame)
        self.state.mark_stale(aligned)
        # only obs changed: uns keeps the category colors a subset would have cut to the kept categories
        uns, uns_before = self.slots["uns"], before.slots["uns"]
        for key in [k for k in uns_before.own_keys() if str(k).endswith("_colors")]:
            colors = uns_before[key]
            if key not in uns or not np.array_equal(np.asarray(uns[key]), np.asarray(colors)):
                uns[key] = colors

    def is_stale(self, rel: str) -> bool:
        """Whether ``rel`` still shows its value from before a private axis change (:attr:`before`)."""
        return self.state.is_stale(rel)

    def _aligned_elements(self, axis: int) -> list[str]:
        """The elements aligned with ``axis`` this shadow has (X, raw and every aligned slot's keys)."""
        rels = []
        if "layers" in self.SLOTS and self.has("X"):
            rels.append("X")
        if axis == 0 and "layers" in self.SLOTS and self.has_raw():
            rels.append("raw")
        for slot, axes in ALIGNED_SLOT_AXES.items():
            if slot in self.slots and axis in axes:
                rels += [f"{slot}/{key}" for key in self.slots[slot].own_keys()]
        return rels

    def has_raw(self) -> bool:
        """Whether there is a raw (none here: see the AnnData subclass)."""
        return False

    def _snapshot(self) -> ShadowElements:
        """A copy of these (root) elements as they are now, apart from them: the same changes and held
        values (not copied: an in-place subset replaces them with new objects, so they stay as they are).
        """
        before = copy.copy(self)
        before.root = before
        before.init_memory()
        for rel, value in self.state.changes().items():
            before.state.change(rel, value)
        for rel, value in self.state.held_items():
            before.state.hold(rel, value, check=False)
        return before

    # -- in-place subsets ------------------------------------------------------------------------------

    def subset_in_place(self, index: Any) -> None:
        """Keep only the rows and columns ``index`` selects, in place (what scanpy's filters ask through
        ``_inplace_subset_obs``/``_inplace_subset_var``). Nothing is read: the shadow becomes a shadow of
        the kept part of its file (reads are pushed down as a view's), what it holds in memory is
        dropped (stored values are read again, only the kept part) and its changes are sliced.

        These elements take over the kept view's contents (this object stays the shadow's, so its slots
        and views keep pointing at it).
        """
        self.view_of(index)  # a bad index raises here, before anything changes
        self.keep_changes_in_place()
        self.detach()
        kept, shadow = self.view_of(index), self.shadow
        self.wrap(kept)  # the kept part's own shadow, what a raw assigned in memory is sliced for
        frames = kept._root_frames()
        for rel, _ in list(self.state.held_items()):
            kept.root_part(rel)  # an array held in memory keeps its kept part, sliced in memory (not read again)
        kept.make_independent(root_checked=True)  # nothing ran since keep_changes_in_place() above
        self.__dict__.update(kept.__dict__)
        self.root, self.shadow, self._served, self.raw_slot = self, shadow, {}, None
        for mapping in [*self.slots.values(), *self._uns_levels.values()]:
            mapping.elements = self
        for rel, frame in frames.items():
            self.state.hold(rel, self.shown_frame(rel, frame), check=False)

    def _root_frames(self) -> dict[str, pd.DataFrame]:
        """A view's part of obs and var as its root holds them in memory (pandas backend), as the view
        shows them (an AnnData's view drops unused categories): what an in-place subset keeps instead of
        reading them again. The names the root read alone are kept (sliced) in the view's records.
        """
        frames = {}
        for axis, rel in enumerate(FRAMES):
            length = self.root.axis_length(axis)  # a MuData's axis rebuilt by update() holds other rows
            names = self.root.state.held(index_rel(rel))
            if isinstance(names, pd.Index) and len(names) == length:  # the names read alone
                self.state.hold(index_rel(rel), names[as_slice_or_array(self.local[axis])], check=False)
            frame = self.root.state.held(rel)
            if self.tables.name != "pandas" or not isinstance(frame, pd.DataFrame) or len(frame) != length:
                continue
            part = pd.DataFrame(frame, copy=False).iloc[as_slice_or_array(self.local[axis])].copy()
            frames[rel] = self.view_value(rel, self.layout.spec(rel), part)
        return frames

    def copied(self) -> ShadowElements:
        """Independent elements of the same data (``copy()``): a view's copy is not a view; nothing is
        read, changes held in memory (▲) are copied.
        """
        self.keep_changes_in_place()  # an array changed in place is copied as changed (▲)
        clone = self.view_of((slice(None), slice(None)))
        own = self.memory_state()
        clone.detach()
        if self.is_view:  # the view's own changes, besides the root's the clone took over
            clone.restore_memory(own)
        if self.view is None:
            clone.view = None  # a copy of the whole group, not a subset of it
        clone.deep_copy_changes()
        return clone

    # -- write() and pickles ---------------------------------------------------------------------------

    def staged_changes(self) -> tuple[list[ElementChange], list[ColumnChange]]:
        """What ``write()`` commits, built from the element records: elements (with absolute paths) and
        obs/var columns; ``replaces`` is decided by the transaction, which asks the file.
        """
        elements, columns = [], []
        for rel, value in self.state.changes().items():
            frame, _, key = rel.rpartition("/")
            written = partial(self._written, rel)
            if frame in FRAMES and rel != index_rel(frame):
                columns.append(ColumnChange(self.layout.path(frame), key, value, False, written))
                continue
            if rel in (index_rel(f) for f in FRAMES):  # new names: stored as anndata stores an index
                rel = f"{frame}/{self.layout.spec(frame).index_key}"
                value = np.asarray(value.astype(str), dtype=object)
            path = self.layout.path(rel) if self.layout.has(rel) else self.ref.element_path(rel)
            elements.append(ElementChange(path, value, False, written))
        return elements, columns

    def _written(self, rel: str) -> None:
        """``rel``'s change is in the file: nothing of it is held, nor of the dataframe it is a column of."""
        self.state.written(rel)
        frame = rel.rpartition("/")[0]
        if frame in FRAMES:
            self.state.forget(frame)

    def memory_state(self) -> dict[str, Any]:
        """The changes held in memory (▲), as :meth:`restore_memory` takes them back."""
        return self.state.changes()

    def restore_memory(self, changes: dict[str, Any]) -> None:
        """Hold ``changes`` (as :meth:`memory_state` gave them) again."""
        for rel, value in changes.items():
            self.state.change(rel, value)

    def pickle_state(self) -> tuple:
        """What a pickle of the shadow keeps: the file, the backends, the mode, the root's selection and
        changes, and a view's (see :meth:`restored`).
        """
        root = self.root
        view = (self.view, self.local, self.memory_state()) if self.is_view else None
        return (self.ref, self.arrays.name, self.tables.name, self.connection.mode, root.view, root.memory_state(),
                view)

    def restored(self, selection: tuple[AxisIndex, AxisIndex] | None, state: dict[str, Any] | None,
                 view: tuple[Any, Any, dict[str, Any]] | None) -> ShadowElements:
        """These (freshly opened root) elements given what :meth:`pickle_state` kept; a view's elements
        when it kept a view.
        """
        self.view = selection
        if state is not None:
            self.restore_memory(state)
        if view is None:
            return self
        positions, local, view_state = view
        out = self.make_view(*positions, local)
        out.restore_memory(view_state)
        return out


def _column_changes(state: ElementState, frame_rel: str) -> dict[str, pd.Series]:
    """The columns assigned in ``state`` to the dataframe ``frame_rel`` (not its names)."""
    return {k: v for k, v in state.children(frame_rel).items() if v is not DELETED and k != "_index"}


def _copied(value: Any) -> Any:
    """A deep copy of a value held in memory (dask graphs are immutable: kept as they are)."""
    return value if value is DELETED or hasattr(value, "dask") else copy.deepcopy(value)


def _sparse_nbytes(value: Any) -> int:
    if hasattr(value, "indptr"):
        return int(value.data.nbytes + value.indices.nbytes + value.indptr.nbytes)
    return 0


def _frame_nbytes(value: Any) -> int:
    if isinstance(value, pd.DataFrame):
        return int(value.memory_usage(deep=True).sum())
    return 0
