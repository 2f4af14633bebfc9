"""Changes in memory (▲): giving elements, columns and names new values, what a view sees of its
root's changes, a view becoming a shadow of its own when modified, in-place subsetting, and the
changes ``write()`` commits. The values live in the element records (:mod:`shadows.core.state`).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from shadows.core.frames import tracked
from shadows.core.state import NOTHING, ElementState
from shadows.errors import InvalidElementKeyError, ShapeError
from shadows.indexing.keys import as_positions, as_slice_or_array
from shadows.names import column_problem
from shadows.schema import ALIGNED_SLOT_AXES, FRAMES, element_axes
from shadows.writing import DELETED, ColumnChange, ElementChange


class ElementChanges:
    """Changing elements in memory: mixed into :class:`~shadows.core.base.ShadowBase`."""

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
                raise ShapeError(f"{self.filename}: {rel}: expected shape {shape}, got {got or type(value).__name__}")
        self._detach()
        if value is not None:
            self._state.change(rel, value)
        else:
            self._state.remove(rel, stored=self._layout.has(rel))

    def _deep_copy_changes(self) -> None:
        """Give this shadow its own copies of the values it holds as changes (``copy()``'s independence)."""
        self._state.map_changes(lambda _, value: _copied(value))

    def _detach(self) -> None:
        """Make a view an independent shadow of its selection, as anndata views become actual when
        modified: the root's changes it sees are copied in (sliced), nothing is read, and from then on
        neither sees the other's changes. Roots are left as they are.
        """
        if self._is_view:
            self._make_independent()

    def _keep_changes_in_place(self) -> None:
        """Make the arrays changed in place since they were read changes (▲); a view holding one
        becomes a shadow of its own first, as an AnnData view becomes actual when modified. What copies,
        views of views and writes call before they take this shadow's values.
        """
        if self._is_view and self._state.changed_in_place():
            self._detach()
        self._state.keep_changed_in_place()

    def _make_independent(self, root_checked: bool = False) -> None:
        """The body of :meth:`_detach` (a MuData's in-place subset uses it, whose views otherwise stay
        views when assigned to). ``root_checked``: the root's arrays changed in place were made changes
        just before (each check is a pass over every array the root holds).
        """
        root = self._root
        if not root_checked:
            root._state.keep_changed_in_place()  # the root's arrays changed in place are the view's values too
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
        else:
            self._state.remove(rel, stored=key in getattr(self._layout, frame_rel).columns)

    def _visible_staged_columns(self, frame_rel: str) -> dict[str, pd.Series]:
        """Columns assigned in memory: a view's own, and its root's taken at the view's rows (every
        column of a dataframe replaced whole).
        """
        whole = self._whole_frame(frame_rel)
        if whole is not None:
            return dict(whole.items())
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
            raise ShapeError(f"{self.filename}: {frame_rel}_names: expected {expected} names, got {len(index)}")
        if not all(isinstance(name, str) for name in index):
            import warnings

            warnings.warn(f"AnnData expects .{frame_rel}.index to contain strings; converting them", UserWarning,
                          stacklevel=3)
            index = index.astype(str)
        self._detach()
        index.name = self._names(frame_rel).name
        whole = self._whole_frame(frame_rel)
        if whole is not None:  # the names of a dataframe replaced whole are its index
            whole.index = index
            return
        self._state.change(self._index_rel(frame_rel), index)
        frame = self._state.held(frame_rel)
        if isinstance(frame, pd.DataFrame):
            frame.index = index
        mapping = self._slots.get(f"{frame_rel}m")
        for key in [] if mapping is None else mapping.own_keys():  # dataframes in obsm/varm follow, as in
            rel = f"{frame_rel}m/{key}"  # anndata: a stored one is read and changed (▲), to be written so
            if mapping.is_staged(key):
                if isinstance(mapping[key], pd.DataFrame):
                    mapping[key].index = index
            elif self._layout.spec(rel).role == "table":
                value = self._plain(rel).copy()
                value.index = index
                self._state.change(rel, value)

    def _set_frame(self, frame_rel: str, frame: pd.DataFrame) -> None:
        """``shadow.obs = frame``: stage the columns that differ from the current ones (▲).

        Stored columns missing from ``frame`` are deleted (from the file by ``write(overwrite=True)``);
        this is what ``mudata``'s ``pull_obs``/``pull_var`` do to a MuData shadow. A frame with other
        names than the current ones replaces the dataframe whole (:meth:`_replace_frame`), as AnnData's
        setter renames the observations.
        """
        where = f"{self.filename}: {frame_rel}"
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"{where}: expected a pandas DataFrame, got {type(frame).__name__}")
        for key in frame.columns:
            problem = column_problem(key)
            if problem is not None:
                raise InvalidElementKeyError(f"{where}[{key!r}]: invalid column name: {problem}")
        expected = self.n_obs if frame_rel == "obs" else self.n_vars
        if len(frame) != expected:
            raise ShapeError(f"{where}: expected {expected} rows, got {len(frame)}")
        if self._whole_frame(frame_rel) is not None or not frame.index.equals(self._names(frame_rel)):
            self._replace_frame(frame_rel, frame)
            return
        current = self._plain(frame_rel)
        self._detach()
        for key in [c for c in current.columns if c not in frame.columns]:
            self._stage_column(frame_rel, key, None)  # deleted (a stored one by write(overwrite=True))
        for key in frame.columns:  # a column deleted before and back now is not in current: assigned
            if key not in current.columns or not frame[key].equals(current[key]) \
                    or frame[key].dtype != current[key].dtype:
                self._state.change(f"{frame_rel}/{key}", frame[key])
        self._state.forget(frame_rel)

    def _replace_frame(self, frame_rel: str, frame: pd.DataFrame) -> None:
        """The dataframe ``frame_rel`` becomes ``frame`` whole (▲): its names and columns. ``write
        (overwrite=True)`` replaces the stored dataframe with it. Changes made to single columns or to
        the names before are superseded. Its length is not checked here (a MuData's ``update()`` can
        grow an axis; AnnData's setter checks it before).
        """
        self._detach()
        for key in self._state.children(frame_rel):
            self._state.revert(f"{frame_rel}/{key}")
        self._state.change(frame_rel, frame)

    def _set_private_frame(self, frame_rel: str, frame: pd.DataFrame) -> None:
        """``adata._obs = frame`` (anndata's private field), as muon's in-place filters use it: ``frame``
        holds some of the current rows (by name), and only obs changes at once.

        The shadow keeps those rows (an in-place subset: nothing read, reads pushed down); the elements
        aligned with the axis (X, layers, obsm, obsp, raw; for a MuData obsm, obsp, obsmap) keep showing
        their values from before, as an AnnData's private fields do, until each is assigned its kept
        rows (which muon does next). An element never assigned stays as it was, as in an AnnData.
        """
        where = f"{self.filename}: {frame_rel}"
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"{where}: expected a pandas DataFrame, got {type(frame).__name__}")
        names = self._names(frame_rel)
        if frame.index.equals(names):
            self._set_frame(frame_rel, frame)
            return
        positions = names.get_indexer(frame.index) if names.is_unique else np.array([-1])
        if (positions < 0).any() or not frame.index.is_unique:
            raise ValueError(f"{where}: a new {frame_rel} given this way must keep some of the current rows by "
                             f"unique names; assign .{frame_rel} (same names) or subset the shadow instead")
        self._detach()
        before = self._snapshot()
        axis = FRAMES.index(frame_rel)
        aligned = self._aligned_elements(axis)
        self._subset_in_place((positions, slice(None)) if axis == 0 else (slice(None), positions))
        self._before = before
        self._set_frame(frame_rel, frame)
        self._state.mark_stale(aligned)
        # only obs changed: uns keeps the category colors a subset would have cut to the kept categories
        for key in [k for k in before.uns.own_keys() if str(k).endswith("_colors")]:
            colors = before.uns[key]
            if key not in self.uns or not np.array_equal(np.asarray(self.uns[key]), np.asarray(colors)):
                self.uns[key] = colors

    def _aligned_elements(self, axis: int) -> list[str]:
        """The elements aligned with ``axis`` this shadow has (X, raw and every aligned slot's keys)."""
        rels = []
        if "layers" in self._SLOTS and self._has("X"):
            rels.append("X")
        if axis == 0 and "layers" in self._SLOTS and self.raw is not None:
            rels.append("raw")
        for slot, axes in ALIGNED_SLOT_AXES.items():
            if slot in self._slots and axis in axes:
                rels += [f"{slot}/{key}" for key in self._slots[slot].own_keys()]
        return rels

    def _snapshot(self) -> ElementChanges:
        """A copy of this (root) shadow as it is now, apart from it: the same changes and held values (not copied:
        an in-place subset replaces them with new objects, so they stay as they are).
        """
        before = object.__new__(type(self))
        before.__dict__.update(self.__dict__)
        before._root = before
        before._init_memory()
        for rel, value in self._state.changes().items():
            before._state.change(rel, value)
        for rel, value in self._state.held_items():
            before._state.hold(rel, value, check=False)
        return before

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

    def _subset_in_place(self, index: Any) -> None:
        """Keep only the rows and columns ``index`` selects, in place (what scanpy's filters ask through
        ``_inplace_subset_obs``/``_inplace_subset_var``). Nothing is read: the shadow becomes a shadow of
        the kept part of its file (reads are pushed down as a view's), what it holds in memory is
        dropped (stored values are read again, only the kept part) and its changes are sliced.
        """
        self._view_of(index)  # a bad index raises here, before anything changes
        self._keep_changes_in_place()
        self._detach()
        kept = self._view_of(index)
        frames = kept._root_frames()
        for rel, _ in list(self._state.held_items()):
            kept._root_part(rel)  # an array held in memory keeps its kept part, sliced in memory (not read again)
        kept._make_independent(root_checked=True)  # nothing ran since _keep_changes_in_place() above
        self.__dict__.update(kept.__dict__)
        self._root = self
        for mapping in [*self._slots.values(), *self._uns_levels.values()]:
            mapping._shadow = self
        for rel, frame in frames.items():
            self._state.hold(rel, tracked(frame, partial(self._stage_column, rel), f"{self.filename}: {rel}"),
                             check=False)

    def _root_frames(self) -> dict[str, pd.DataFrame]:
        """A view's part of obs and var as its root holds them in memory (pandas backend), as the view
        shows them (an AnnData's view drops unused categories): what an in-place subset keeps instead of
        reading them again. The names the root read alone are kept (sliced) in the view's records.
        """
        frames = {}
        for axis, rel in enumerate(FRAMES):
            length = self._root._axis_length(axis)  # a MuData's axis rebuilt by update() holds other rows
            names = self._root._state.held(self._index_rel(rel))
            if isinstance(names, pd.Index) and len(names) == length:  # the names read alone
                self._state.hold(self._index_rel(rel), names[as_slice_or_array(self._local[axis])], check=False)
            frame = self._root._state.held(rel)
            if self._table_backend.name != "pandas" or not isinstance(frame, pd.DataFrame) or len(frame) != length:
                continue
            part = pd.DataFrame(frame, copy=False).iloc[as_slice_or_array(self._local[axis])].copy()
            frames[rel] = self._view_value(rel, self._layout.spec(rel), part)
        return frames

    def _memory_state(self) -> dict[str, Any]:
        """The changes this shadow holds in memory (▲), as :meth:`_restore_memory` takes them back."""
        return self._state.changes()

    def _restore_memory(self, changes: dict[str, Any]) -> None:
        for rel, value in changes.items():
            self._state.change(rel, value)


def _copied(value: Any) -> Any:
    """A deep copy of a value held in memory (dask graphs are immutable: kept as they are)."""
    import copy

    return value if value is DELETED or hasattr(value, "dask") else copy.deepcopy(value)
