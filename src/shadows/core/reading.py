"""The one read path of a shadow: an element's value as the backends present it, kept per DESIGN.md
section 4 (read on first use, held until ``clear_cache()``), its dask graph, its plain numpy/pandas form,
and the columns and names of obs/var read alone. Changes (▲) come first: an element changed in memory
is never read from the file.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import pandas as pd

from shadows import convert, progress
from shadows.core.aligned import UnsMapping, as_slot_value
from shadows.core.frames import with_columns
from shadows.core.references import VECTORS_ARE_PANDAS_ARRAYS
from shadows.core.serving import ServedElement
from shadows.core.state import NOTHING
from shadows.elements.positions import read_column, read_index
from shadows.indexing import AxisIndex
from shadows.indexing.selection import selection_for
from shadows.schema import FRAMES, element_axes
from shadows.settings import settings
from shadows.writing import DELETED


class ElementReading:
    """Reading elements: mixed into :class:`~shadows.core.base.ShadowBase` (which provides the layout,
    the backends, the view's selection and the element records ``_state``).
    """

    def _backend_for(self, spec: Any) -> convert.Backend | None:
        """The backend that presents an element (by its role), ``None`` for values shown as read."""
        if spec.role == "array":
            return self._array_backend
        if spec.role == "table":
            return self._table_backend
        return None

    def _served(self, rel: str) -> ServedElement:
        """The element ``rel`` of this shadow: where its value comes from (:mod:`shadows.core.serving`)."""
        return ServedElement(self, rel)

    def _graph(self, rel: str) -> Any:
        def build() -> Any:
            spec = self._layout.spec(rel)
            selection = selection_for(rel, spec, self._view)
            graph = spec.select_graph(selection) if selection else spec.graph()
            return self._view_graph(rel, graph) if self._view is not None else graph

        return self._state.graph(rel, build)

    def _view_graph(self, rel: str, graph: Any) -> Any:
        """What a view changes in an element's graph besides slicing it (nothing, here)."""
        return graph

    def _view_value(self, rel: str, spec: Any, value: Any) -> Any:
        """What a view changes in an element's value besides slicing it (nothing, here)."""
        return value

    def _materialize(self, rel: str) -> Any:
        """Read the element (this view's part of it) as numpy/scipy/pandas, with staged columns.

        With ``shadows.settings.read_progress`` on, the read shows a bar (or counts on the one shown).
        """
        spec = self._layout.spec(rel)
        with progress.reading_job(lambda: self._read_nbytes([rel]), settings.read_progress):
            progress.reading_element(rel)
            value = spec.read_selection(selection_for(rel, spec, self._view))
        if self._view is not None:
            value = self._view_value(rel, spec, value)
        value = as_slot_value(rel, value)
        if rel in FRAMES:
            names = self._changed_value(self._index_rel(rel))
            if names is not NOTHING:
                value.index = names
            value = with_columns(value, self._visible_staged_columns(rel))
            value = value.drop(columns=[c for c in self._deleted_columns(rel) if c in value.columns])
        return value

    def _element(self, rel: str) -> Any:
        """The element at ``rel`` as the shadow's backends present it (kept per section 4 of DESIGN)."""
        return self._served(rel).shown()

    def _root_part(self, rel: str) -> Any:
        """A view's part of its root's value of ``rel`` in memory (changed ▲ or read ᐁ), or NOTHING.

        Views of an AnnData slice their parent's values in memory; so does a view of a shadow whose root
        holds the element (numpy backend): an array the root changed in place (``adata.X[0, 0] = v``) is
        seen by every view, never the file's value. The part is kept with a checksum and taken again at
        each access (as anndata's views do), unless the view's own array was changed in place since: the
        view then becomes a shadow of its own holding that change (▲), as an AnnData view becomes
        actual when modified. NOTHING for roots, other elements and a view's own changes.
        """
        if not self._is_view or not self._slices_root_value(rel) or self._state.changed(rel) is not NOTHING:
            return NOTHING
        root_value = changed = self._root._state.changed(rel)
        if root_value is NOTHING:
            root_value = self._root._state.held(rel)
        if root_value is NOTHING or root_value is DELETED:
            return NOTHING
        if self._state.is_changed_in_place(rel):
            value = self._state.held(rel)
            self._detach()
            self._state.change(rel, value)
            return value
        value = self._select_staged(rel, root_value)
        if changed is NOTHING:  # read from the file: shown as a view of it shows it
            value = self._view_value(rel, self._layout.spec(rel), value)
        return self._state.hold(rel, value)

    def _in_root_memory(self, rel: str) -> bool:
        """Whether this view takes ``rel`` from its root's memory (see :meth:`_root_part`): nothing read."""
        return self._is_view and self._slices_root_value(rel) and self._root._state.is_held(rel)

    def _slices_root_value(self, rel: str) -> bool:
        """Whether a view takes ``rel`` from its root's value in memory: arrays aligned with the axes
        (X, layers, obsm, varm, obsp, varp) under the numpy backend (other backends hold other types).
        """
        return (self._array_backend.name == "numpy" and rel.partition("/")[0] not in (*FRAMES, "raw", "uns")
                and any(axis is not None for axis in element_axes(rel)))

    def _lazy(self, rel: str, backend: convert.Backend) -> Any:
        """The element at ``rel`` as a lazy backend gives it: its dask graph, bare or labelled (xarray)."""
        if backend.name != "xarray":
            return self._graph(rel)
        from shadows import labelled  # imports xarray

        spec = self._layout.spec(rel)
        if spec.role == "table":
            rows = selection_for(rel, spec, self._view)
            return labelled.dataset(spec, rows[0] if rows else range(spec.shape[0]), self._frame_names(rel, spec),
                                    self._visible_staged_columns(rel) if rel in FRAMES else {},
                                    self._deleted_columns(rel) if rel in FRAMES else set())
        return labelled.data_array(rel, spec, selection_for(rel, spec, self._view), self._names,
                                   partial(self._view_graph, rel))

    def _frame_names(self, rel: str, spec: Any) -> pd.Index:
        """The names of the rows of the dataframe at ``rel`` this shadow sees."""
        if rel in FRAMES or rel == "raw/var":
            return self._names(rel)
        return read_index(spec, self._frame_rows(rel))

    def _plain(self, rel: str) -> Any:
        """The element at ``rel`` as numpy/scipy/pandas, whatever the backends (for to_memory)."""
        return self._served(rel).plain()

    def _uns_child(self, rel: str) -> Any:
        spec = self._layout.spec(rel)
        if spec.role != "mapping":
            return self._element(rel)
        if rel not in self._uns_levels:
            self._uns_levels[rel] = UnsMapping(self, rel, partial(self._stored_children, rel))
        return self._uns_levels[rel]

    def _is_cached(self, rel: str) -> bool:
        return self._state.is_held(rel)

    def _frame_rows(self, frame_rel: str) -> AxisIndex | None:
        """The rows of a dataframe element this shadow sees (``None``: all)."""
        spec = self._layout.spec(frame_rel)
        selection = selection_for(frame_rel, spec, self._view)
        return selection[0] if selection else None

    def _whole_frame(self, frame_rel: str) -> pd.DataFrame | None:
        """The dataframe ``frame_rel`` when it was replaced whole in memory (▲: new names, or a MuData's
        axis rebuilt by ``update()``), else ``None`` (stored, with any columns changed one by one).
        """
        changed = self._changed_value(frame_rel) if frame_rel in FRAMES else NOTHING
        return changed if isinstance(changed, pd.DataFrame) else None

    def _names(self, frame_rel: str) -> pd.Index:
        whole = self._whole_frame(frame_rel)
        if whole is not None:
            return whole.index
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
        frame = self._whole_frame(frame_rel)
        if frame is None and self._table_backend.name == "pandas":
            frame = self._state.held(frame_rel)
        if frame is not None and frame is not NOTHING:
            column = frame[key]
        else:
            staged = self._visible_staged_columns(frame_rel)
            column = staged[key] if key in staged else pd.Series(self._view_column(frame_rel, key), copy=False)
        return column.array if VECTORS_ARE_PANDAS_ARRAYS else column.values

    def _frame_keys(self, frame_rel: str) -> list[str]:
        whole = self._whole_frame(frame_rel)
        if whole is not None:
            return list(whole.columns)
        deleted = self._deleted_columns(frame_rel)
        stored = [c for c in getattr(self._layout, frame_rel).columns if c not in deleted]
        return stored + [k for k in self._visible_staged_columns(frame_rel) if k not in stored]

    def _slot_values(self, slot: str, read: Callable[[str], Any]) -> dict[str, Any]:
        """Every value of ``slot``: staged ones as assigned (sliced in a view), stored ones by ``read(rel)``."""
        mapping = self._slots[slot]
        return {k: (mapping[k] if mapping.is_staged(k) else read(f"{slot}/{k}")) for k in mapping.own_keys()}

    def _read_nbytes(self, rels: list[str]) -> int:
        """About how many bytes reading the elements ``rels`` (this view's part of them) reads from the
        file: their arrays' uncompressed sizes, each scaled by the share of its rows and columns the view
        keeps. What a reading progress bar counts against (metadata only).
        """
        total = 0.0
        for rel in rels:
            if not self._layout.has(rel) or self._changed_value(rel) is not NOTHING or self._in_root_memory(rel):
                continue
            spec = self._layout.spec(rel)
            total += spec.nbytes(selection_for(rel, spec, self._view))
        return int(total)

    def _stored_element_paths(self) -> list[str]:
        paths = [p for p in ("X", *FRAMES) if self._layout.has(p)]
        for slot in self._SLOTS:
            paths += [f"{slot}/{k}" for k in self._layout.mapping_keys(slot)]
        return paths

