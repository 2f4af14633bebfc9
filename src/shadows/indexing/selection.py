"""What a view selects of one element: per element axis, the positions kept.

Element specs take a :data:`Selection` (:meth:`shadows.elements.base.ElementSpec.select_graph`,
``read_selection``, ``nbytes``); a view makes one for each element with :func:`selection_for`. Nothing
here reads a file or knows the element types.
"""

from __future__ import annotations

from typing import Any

from shadows.indexing.keys import AxisIndex, is_full
from shadows.schema import element_axes

Selection = tuple[AxisIndex | None, ...]
"""Per element axis: the positions kept, or ``None`` where the axis is not sliced; ``()``: everything.
Axes past its end are not sliced either."""


def selection_for(rel: str, spec: Any, view: tuple[AxisIndex, AxisIndex] | None) -> Selection:
    """The selection a view applies to an element (``rel``: its path in the AnnData; ``spec``: anything
    with the element's ``shape``); ``()`` when nothing needs slicing.
    """
    if view is None:
        return ()
    axes = element_axes(rel)
    selection = tuple(None if a is None else view[a] for a in axes)
    shape = spec.shape
    if all(s is None or is_full(s, shape[i]) for i, s in enumerate(selection)):
        return ()
    return selection


def axis_positions(selection: Selection, axis: int, n: int) -> AxisIndex:
    """The positions ``selection`` keeps along ``axis`` (of length ``n``): all of them where it does not
    slice that axis.
    """
    index = selection[axis] if axis < len(selection) else None
    return range(n) if index is None else index


def selected_shape(shape: tuple[int, ...], selection: Selection) -> tuple[int, ...]:
    """The shape of ``element[selection]``."""
    return tuple(n if i >= len(selection) or selection[i] is None else len(selection[i])
                 for i, n in enumerate(shape))


def selected_share(shape: tuple[int, ...], selection: Selection) -> float:
    """The share of an element of ``shape`` that ``selection`` keeps: the product, over the axes it
    slices, of the kept positions over the axis's length (1.0 for ``()``).
    """
    share = 1.0
    for axis, index in enumerate(selection):
        if index is not None and axis < len(shape) and shape[axis]:
            share *= len(index) / shape[axis]
    return share
