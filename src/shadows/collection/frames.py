"""obs over many files: one dataframe element whose columns read each selected source's rows of that
column alone, cast to the dtype anndata.concat gives the joined column (categories merged, integers with
missing values as floats, booleans as nullable booleans...), missing values where a source has no such
column; plus ``label`` (the source of each row) and obs names (each source's index, with
``index_unique``), read only when asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from shadows.collection.arrays import split_rows
from shadows.collection.catalog import SourceMeta, read_in_order
from shadows.collection.join import Plan
from shadows.collection.reading import source_element
from shadows.elements.base import ElementSpec, Rows
from shadows.elements.framegraph import FrameSpec
from shadows.elements.positions import ColumnSpec
from shadows.indexing.keys import AxisIndex


def _as_index(rows: Rows | AxisIndex, n: int) -> AxisIndex:
    """Rows as readers get them (a slice or increasing positions) as a range or an array."""
    return range(*rows.indices(n)) if isinstance(rows, slice) else rows


@dataclass(frozen=True)
class AtlasFrameSpec(FrameSpec):
    """obs of an atlas: ``extra`` holds ``sources``, ``offsets`` and the join's ``plan``."""

    kind = "atlas-dataframe"

    @property
    def _plan(self) -> Plan:
        return self.extra["plan"]

    @property
    def index_key(self) -> str:
        """The index's name as stored (``"_index"``: unnamed)."""
        return self.extra["index_name"] or "_index"

    @property
    def columns(self) -> list[str]:
        """The joined columns, in anndata.concat's order (``label`` last)."""
        return list(self._plan.obs_dtypes)

    def column(self, key: str) -> ElementSpec:
        """One joined column as an element."""
        if key not in self._plan.obs_dtypes:
            raise KeyError(key)
        return AtlasColumnSpec(self.ref, f"{self.path}/{key}", "atlas column", (self.shape[0],),
                               self._plan.obs_dtypes[key], extra={"frame": self, "key": key})

    def read_index(self, rows: Rows = slice(None)) -> pd.Index:
        """The obs names of the selected rows: each source's own, joined with its key by ``index_unique``."""
        return self.read(rows, columns=[]).index

    def read(self, rows: Rows = slice(None), columns: list[str] | None = None) -> pd.DataFrame:
        """The selected rows (increasing) and columns, as anndata.concat's obs has them.

        Each selected source is visited once, for its index and all the columns asked for (one check that
        it is unchanged, its file opened once): column by column, an export of a view spread over 1,000
        sources opened each of them six times.
        """
        columns = self.columns if columns is None else list(columns)
        rows = _as_index(rows, self.shape[0])
        sources: list[SourceMeta] = self.extra["sources"]
        names, codes, pieces = [], [], {key: [] for key in columns}
        for i, local in split_rows(rows, self.extra["offsets"]):
            obs = source_element(sources[i], "obs")
            names.append(read_in_order(sources[i].file_rows(local), obs.read_index).to_series())
            codes.append(np.full(len(local), i))
            for key in columns:
                pieces[key].append(self._piece(key, i, local, obs))
        index = self._joined_index(names, codes)
        # Series with the joined dtype: an object column stays object (pandas 3 infers "str" from an array)
        data = {key: pd.Series(self._joined(key, pieces[key]), index=index, dtype=self._plan.obs_dtypes[key],
                               copy=False) for key in columns}
        frame = pd.DataFrame(data, index=index, columns=columns if columns else None)
        if not columns:
            frame.columns = frame.columns.astype(str)
        return frame

    def column_values(self, key: str, rows: Rows) -> Any:
        """One joined column's values for the selected rows (increasing), read from the selected sources."""
        rows = _as_index(rows, self.shape[0])
        sources: list[SourceMeta] = self.extra["sources"]
        pieces = []
        for i, local in split_rows(rows, self.extra["offsets"]):
            stored = key != self._plan.label and key in sources[i].obs_dtypes
            pieces.append(self._piece(key, i, local, source_element(sources[i], "obs") if stored else None))
        return self._joined(key, pieces)

    def _piece(self, key: str, i: int, local: AxisIndex, obs: Any) -> pd.Series:
        """Source ``i``'s rows ``local`` of the joined column ``key``, in the joined dtype (``obs``: the
        source's obs element; a column it lacks is missing values).
        """
        dtype = self._plan.obs_dtypes[key]
        source: SourceMeta = self.extra["sources"][i]
        if key == self._plan.label:
            return pd.Series(pd.Categorical.from_codes(np.full(len(local), i), dtype=dtype))
        if key in source.obs_dtypes:
            return pd.Series(_source_column(source, obs, key, local), copy=False).astype(dtype)
        return pd.Series(np.full(len(local), np.nan)).astype(dtype)

    def _joined(self, key: str, pieces: list[pd.Series]) -> Any:
        """The sources' pieces of one column as one array of its joined dtype."""
        dtype = self._plan.obs_dtypes[key]
        series = pd.concat(pieces, ignore_index=True) if pieces else pd.Series([], dtype=dtype)
        return series.to_numpy() if isinstance(series.dtype, np.dtype) else series.array

    def _joined_index(self, names: list[pd.Series], codes: list[np.ndarray]) -> pd.Index:
        """The sources' obs names (``codes``: each name's source) joined as anndata.concat joins them."""
        dtype = self._plan.obs_index_dtype
        if not names:
            index = pd.Index([], dtype=dtype)
        else:
            series = pd.concat(names, ignore_index=True).astype(dtype)
            if self._plan.index_unique is not None:
                keys = np.asarray(self._plan.keys.astype(str), dtype=object)[np.concatenate(codes)]
                series = series.str.cat(keys, sep=self._plan.index_unique)
            index = pd.Index(series, dtype=dtype)
        index.name = self.extra["index_name"]
        return index

    def meta(self) -> pd.DataFrame:
        """An empty frame with the joined dtypes (categories known)."""
        index = self.read_index(slice(0, 0))
        data = {k: pd.Series([], index=index, dtype=d) for k, d in self._plan.obs_dtypes.items()}
        return pd.DataFrame(data, index=index, columns=self.columns or None)

    def nbytes(self, selection: Any = ()) -> int:
        """About how many bytes reading the selected rows reads (8 per value: an estimate, from the catalog)."""
        n = self.shape[0] if not selection or selection[0] is None else len(selection[0])
        return int(n * (len(self.columns) + 1) * 8)

    def info(self) -> dict[str, Any]:
        """Shape and encoding, from the catalog."""
        return {"shape": self.shape, "dtype": "", "encoding": self.encoding, "chunks": "one run per source",
                "stored": 0}


@dataclass(frozen=True)
class AtlasColumnSpec(ColumnSpec):
    """One obs column of an atlas (``extra``: its ``frame`` and ``key``)."""

    kind = "atlas-column"

    def read_rows(self, rows: Rows) -> Any:
        """The selected rows (increasing) of the column."""
        return self.extra["frame"].column_values(self.extra["key"], rows)

    def categories(self) -> pd.Index:
        """The joined categories of a categorical column."""
        return self.dtype.categories

    def nbytes(self, selection: Any = ()) -> int:
        n = self.shape[0] if not selection or selection[0] is None else len(selection[0])
        return int(n * 8)

    def info(self) -> dict[str, Any]:
        return {"shape": self.shape, "dtype": str(self.dtype), "encoding": self.encoding, "chunks": "",
                "stored": 0}


def _source_column(source: SourceMeta, obs: Any, key: str, rows: Any) -> Any:
    """Rows ``rows`` (increasing positions) of the obs column ``key`` of one source (``obs``: its obs
    element, looked up by :func:`~shadows.collection.reading.source_element`). A categorical's codes
    alone are read: its categories are the catalog's (checked current when the source was looked up), not
    read again from each file (reading them took 40 % of an obs read over 1,000 files).
    """
    spec = obs.column(key)
    dtype = source.obs_dtypes[key]
    rows = source.file_rows(rows)
    if isinstance(dtype, pd.CategoricalDtype) and hasattr(spec, "read_codes"):
        # a view given as a source has only the categories its rows use: the stored codes are recoded
        recode = source.subset.recode.get(key) if source.subset is not None else None
        stored = len(dtype.categories) if recode is None else len(recode)
        codes = np.asarray(read_in_order(rows, lambda key: spec.read_codes(key, stored)))
        if recode is not None:
            codes = np.where(codes >= 0, recode[np.maximum(codes, 0)], -1)
        return pd.Categorical.from_codes(codes, dtype=dtype)
    return read_in_order(rows, spec.read_rows)
