"""Compose a view of a view: positions relative to the parent become positions relative to the root."""

from __future__ import annotations

import numpy as np

from shadows.indexing.keys import AxisIndex, as_slice_or_array


def compose(parent: AxisIndex, child: AxisIndex) -> AxisIndex:
    """The root positions selected by ``child`` (given relative to ``parent``).

    Ranges compose to ranges (Python's range slicing is exact for any step); anything else becomes an
    array of positions.
    """
    if isinstance(parent, range) and isinstance(child, range):
        return parent[as_slice_or_array(child)]
    if isinstance(parent, range):
        return parent.start + parent.step * np.asarray(child, dtype=np.int64)
    return parent[as_slice_or_array(child)]
