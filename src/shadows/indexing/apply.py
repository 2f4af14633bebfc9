"""Apply a view's per-axis positions to an element: graphs for the dask backends, values otherwise.

This is the pushdown: sparse matrices build tasks for the selected major positions only (see
:meth:`shadows.elements.sparse.SparseSpec.select_graph`), dense arrays are sliced as dask graphs (only
the chunks holding the selection are read), and dataframes read only the selected rows of each column.
"""

from __future__ import annotations

from typing import Any

from shadows import cluster
from shadows.elements.base import ElementSpec
from shadows.elements.framegraph import frame_graph
from shadows.elements.positions import read_frame
from shadows.elements.sparse_chunk import to_plain
from shadows.indexing.keys import AxisIndex, as_slice_or_array, is_full
from shadows.schema import element_axes

Selection = tuple[AxisIndex | None, ...]
"""Per element axis: the positions kept, or ``None`` where the axis is not sliced."""

def selection_for(rel: str, spec: ElementSpec, view: tuple[AxisIndex, AxisIndex] | None) -> Selection:
    """The selection a view applies to an element; ``()`` when nothing needs slicing."""
    if view is None:
        return ()
    axes = element_axes(rel)
    selection = tuple(None if a is None else view[a] for a in axes)
    shape = spec.shape
    if all(s is None or is_full(s, shape[i]) for i, s in enumerate(selection)):
        return ()
    return selection


def _full(selection: Selection, i: int, n: int) -> AxisIndex:
    s = selection[i] if i < len(selection) else None
    return range(n) if s is None else s


def select_graph(spec: ElementSpec, selection: Selection) -> Any:
    """The element's dask graph restricted to ``selection``."""
    if spec.kind == "sparse":
        return spec.select_graph(_full(selection, 0, spec.shape[0]), _full(selection, 1, spec.shape[1]))
    if spec.kind == "dataframe":
        return frame_graph(spec, selection[0])
    if spec.kind == "dense":  # a graph over the selection's box only, not over the whole stored array
        return spec.select_graph(selection)
    graph = spec.graph()
    for axis, index in enumerate(selection):
        if index is not None:
            graph = graph[(slice(None),) * axis + (as_slice_or_array(index),)]
    return graph


def selected_shape(shape: tuple[int, ...], selection: Selection) -> tuple[int, ...]:
    """The shape of ``element[selection]``."""
    return tuple(n if i >= len(selection) or selection[i] is None else len(selection[i])
                 for i, n in enumerate(shape))


def materialize_selection(spec: ElementSpec, selection: Selection) -> Any:
    """Read ``element[selection]`` as the in-memory type anndata gives it.

    A dense element (or a view's part of it) that cannot fit in the machine's memory is refused with
    :class:`~shadows.errors.TooLargeError` before anything is read or planned (see
    :meth:`shadows.elements.dense.DenseSpec.require_memory`).
    """
    if spec.kind == "dense":
        spec.require_memory(selected_shape(spec.shape, selection))
    if not selection:
        return spec.materialize()
    if spec.kind == "dataframe":
        return read_frame(spec, selection[0])
    if spec.kind == "sparse":
        value = spec.read_selection(_full(selection, 0, spec.shape[0]), _full(selection, 1, spec.shape[1]))
        if value is not None:
            return to_plain(value)
    value = cluster.compute(select_graph(spec, selection))
    return to_plain(value)
