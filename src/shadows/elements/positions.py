"""Reading selected rows of an element in the order a key asks for them: storage order on disk (each
row once, increasing), then reordered. What every spec and view shares, and the elements a dataframe
holds as columns (:class:`ColumnSpec`), read that way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from shadows.elements.base import ElementSpec
from shadows.indexing.keys import AxisIndex, as_slice_or_array, sorted_unique
from shadows.indexing.selection import Selection


def in_key_order(read: Callable[[Any], Any], rows: AxisIndex | None, reorder: Callable[[Any, Any], Any]) -> Any:
    """``read`` the selected rows in storage order (increasing, each once), then ``reorder`` them into
    the key's order; ``rows=None`` reads everything.
    """
    if rows is None:
        return read(slice(None))
    to_read, order = sorted_unique(rows)
    values = read(as_slice_or_array(to_read))
    return values if order is None else reorder(values, order)


def read_frame(spec: Any, rows: AxisIndex | None, columns: list[str] | None = None) -> pd.DataFrame:
    """Selected rows of a dataframe."""
    return in_key_order(lambda key: spec.read(key, columns), rows, lambda frame, order: frame.iloc[order])


def read_column(spec: ElementSpec, rows: AxisIndex | None) -> Any:
    """Selected rows of one dataframe column (a pandas-ready array)."""
    return in_key_order(spec.read_rows, rows, lambda values, order: values[order])


def read_index(spec: Any, rows: AxisIndex | None) -> pd.Index:
    """Selected entries of a dataframe's index."""
    return in_key_order(spec.read_index, rows, lambda index, order: index[order])


@dataclass(frozen=True)
class ColumnSpec(ElementSpec):
    """A 1-d element read by rows (``read_rows(rows)``, which subclasses provide) into a pandas array: a
    dataframe's categorical or nullable column (also stored alone, in uns). A selection keeps rows.
    """

    kind = "column"

    def materialize(self) -> Any:
        """The whole column."""
        return self.read_rows(slice(None))

    def graph(self) -> Any:
        """A one-task dask graph (``dask.delayed``) producing the whole column."""
        return self.select_graph(())

    def select_graph(self, selection: Selection) -> Any:
        """A one-task dask graph (``dask.delayed``) reading the selected rows (a pandas array is no dask
        array's chunk).
        """
        import dask

        return dask.delayed(self.read_selection, pure=True)(selection)

    def read_selection(self, selection: Selection) -> Any:
        """The selected rows (``()``: all of them), each read once, in storage order, then reordered."""
        if not selection:
            return self.materialize()
        return read_column(self, selection[0])
