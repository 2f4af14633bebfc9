"""Dataframe elements (stored dataframes, pre-0.7 structured frames): what they share as elements
(:class:`FrameSpec`), and dask dataframes over them, partitions of rows read by column, so dask's column
projection reads only the columns a computation uses.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import pandas as pd

from shadows.elements.base import ElementSpec
from shadows.elements.positions import read_frame
from shadows.indexing.selection import Selection

#: Rows per partition of a dataframe graph.
ROWS_PER_PARTITION = 1_000_000


def frame_graph(spec: Any, rows: Any = None):
    """A dask dataframe over any frame spec (``read(rows, columns)``, ``meta()``, ``columns``).

    ``rows`` (a range or array of positions, for views) restricts it to those rows, in that order.
    """
    import dask.dataframe as dd

    n = spec.shape[0] if rows is None else len(rows)
    bounds = [*range(0, n, ROWS_PER_PARTITION), n]
    parts = list(itertools.pairwise(bounds)) or [(0, 0)]
    return dd.from_map(FrameReader(spec, rows), parts, meta=known_categories(spec, spec.meta()),
                       enforce_metadata=False, label=f"shadows-frame-{spec.name}")


def known_categories(spec: Any, meta: pd.DataFrame) -> pd.DataFrame:
    """``meta`` with the stored categories of its categorical columns (each a small array, read here),
    which every partition has: dask then knows them (``.cat.known``), as pandas would.
    """
    for key, dtype in meta.dtypes.items():
        column = spec.column(key) if isinstance(dtype, pd.CategoricalDtype) else None
        if column is not None and hasattr(column, "categories"):
            dtype = pd.CategoricalDtype(column.categories(), ordered=dtype.ordered)
            meta[key] = pd.Series(pd.Categorical([], dtype=dtype), index=meta.index[:0])
    return meta


class FrameReader:
    """Reads one partition of a frame spec; its ``columns=`` keyword lets dask prune unread columns."""

    def __init__(self, spec: Any, rows: Any = None):
        self.spec = spec
        self.rows = rows

    def __call__(self, part: tuple[int, int], columns: list[str] | None = None) -> pd.DataFrame:
        start, stop = part
        rows = range(start, stop) if self.rows is None else self.rows[start:stop]
        return read_frame(self.spec, rows, None if columns is None else list(columns))

    def __dask_tokenize__(self):
        from dask.base import tokenize

        return ("shadows.FrameReader", self.spec.ref, self.spec.path, tokenize(self.rows))


@dataclass(frozen=True)
class FrameSpec(ElementSpec):
    """A dataframe element: read by rows and columns (``read(rows, columns)``, ``read_index(rows)``,
    ``meta()``, ``columns``, ``column(key)``, which subclasses provide), a selection keeping rows.
    """

    kind = "dataframe"
    role = "table"

    def materialize(self) -> pd.DataFrame:
        """The whole dataframe, read column by column."""
        return self.read()

    def graph(self):
        """A dask dataframe, one partition per ``ROWS_PER_PARTITION`` rows, with column projection."""
        return frame_graph(self)

    def select_graph(self, selection: Selection):
        """A dask dataframe of the selected rows (``()``: all of them), in the selection's order."""
        return frame_graph(self, selection[0] if selection else None)

    def read_selection(self, selection: Selection) -> pd.DataFrame:
        """The selected rows (``()``: all of them), each read once, in storage order, then reordered."""
        if not selection:
            return self.materialize()
        return read_frame(self, selection[0])
