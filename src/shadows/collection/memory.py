"""Elements of an atlas that are decided when it opens and live in memory: var (the joined var names,
with the columns ``merge`` keeps), uns (what ``uns_merge`` keeps), and ``varm["shadows_measured"]``
(which genes each source measured). They answer the element protocol as stored elements do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from shadows.elements.base import ElementSpec, Rows
from shadows.elements.framegraph import FrameSpec
from shadows.elements.positions import ColumnSpec
from shadows.indexing.keys import as_slice_or_array
from shadows.indexing.selection import Selection


def _index(rows: Rows) -> Any:
    return rows if isinstance(rows, slice) else np.asarray(rows)


@dataclass(frozen=True)
class MemoryFrameSpec(FrameSpec):
    """A dataframe held in memory (``extra["frame"]``)."""

    kind = "memory-dataframe"

    @property
    def index_key(self) -> str:
        """The index's name (``"_index"``: unnamed)."""
        return self.extra["frame"].index.name or "_index"

    @property
    def columns(self) -> list[str]:
        return list(self.extra["frame"].columns)

    def column(self, key: str) -> ElementSpec:
        values = self.extra["frame"][key]
        return MemoryColumnSpec(self.ref, f"{self.path}/{key}", "in memory", (len(values),), values.dtype,
                                extra={"values": values.array})

    def read_index(self, rows: Rows = slice(None)) -> pd.Index:
        return self.extra["frame"].index[_index(rows)]

    def read(self, rows: Rows = slice(None), columns: list[str] | None = None) -> pd.DataFrame:
        frame = self.extra["frame"]
        frame = frame if columns is None else frame[list(columns)]
        return frame.iloc[_index(rows)].copy()

    def meta(self) -> pd.DataFrame:
        return self.extra["frame"].iloc[:0].copy()

    def nbytes(self, selection: Any = ()) -> int:
        return 0

    def info(self) -> dict[str, Any]:
        return {"shape": self.shape, "dtype": "", "encoding": self.encoding, "chunks": "", "stored": 0}


@dataclass(frozen=True)
class MemoryColumnSpec(ColumnSpec):
    """A column held in memory (``extra["values"]``, a pandas array)."""

    kind = "memory-column"

    def read_rows(self, rows: Rows) -> Any:
        return self.extra["values"][_index(rows)]

    def nbytes(self, selection: Any = ()) -> int:
        return 0

    def info(self) -> dict[str, Any]:
        return {"shape": self.shape, "dtype": str(self.dtype), "encoding": self.encoding, "chunks": "", "stored": 0}


@dataclass(frozen=True)
class MemoryArraySpec(ElementSpec):
    """A dense array held in memory (``extra["value"]``); :class:`MemorySparseSpec` for a sparse one."""

    kind = "memory-array"
    role = "array"

    def graph(self) -> Any:
        import dask.array as da

        value = self.extra["value"]
        return da.from_array(value, chunks=value.shape, asarray=False, name=False,
                             meta=value[:0, :0] if value.ndim == 2 else None)

    def materialize(self) -> Any:
        return self.extra["value"].copy()

    def read_selection(self, selection: Selection) -> Any:
        value = self.extra["value"]
        for axis, index in enumerate(selection):
            if index is not None:
                key = as_slice_or_array(index)
                value = value[key] if axis == 0 else value[:, key]
        return value.copy()

    def select_graph(self, selection: Selection) -> Any:
        import dask.array as da

        value = self.read_selection(selection)
        return da.from_array(value, chunks=value.shape, asarray=False, name=False,
                             meta=value[:0, :0] if value.ndim == 2 else None)

    def nbytes(self, selection: Any = ()) -> int:
        return 0

    def info(self) -> dict[str, Any]:
        return {"shape": self.shape, "dtype": str(self.dtype), "encoding": self.encoding, "chunks": "", "stored": 0}


@dataclass(frozen=True)
class MemorySparseSpec(MemoryArraySpec):
    """A sparse matrix held in memory."""

    is_sparse = True


@dataclass(frozen=True)
class ValueSpec(ElementSpec):
    """A value of uns held in memory (``extra["value"]``), given as it is."""

    kind = "memory-value"
    role = "value"

    def graph(self) -> Any:
        import dask

        return dask.delayed(self.materialize, pure=True)()

    def materialize(self) -> Any:
        import copy

        return copy.deepcopy(self.extra["value"])

    def read_selection(self, selection: Selection) -> Any:
        return self.materialize()

    def nbytes(self, selection: Any = ()) -> int:
        return 0

    def info(self) -> dict[str, Any]:
        return {"shape": self.shape, "dtype": str(self.dtype), "encoding": self.encoding, "chunks": "", "stored": 0}


@dataclass(frozen=True)
class MappingSpec(ValueSpec):
    """A nested mapping of uns (its keys are the layout's children)."""

    kind = "memory-mapping"
    role = "mapping"


def measured_matrix(columns: list[np.ndarray], n_vars: int) -> sparse.csr_matrix:
    """Genes × sources, True where the source measured the gene (from each source's gene positions)."""
    rows, cols = [], []
    for j, positions in enumerate(columns):
        genes = np.flatnonzero(positions >= 0)
        rows.append(genes)
        cols.append(np.full(genes.size, j))
    r = np.concatenate(rows) if rows else np.empty(0, np.int64)
    c = np.concatenate(cols) if cols else np.empty(0, np.int64)
    return sparse.csr_matrix((np.ones(r.size, dtype=bool), (r, c)), shape=(n_vars, len(columns)))
