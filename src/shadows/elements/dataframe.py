"""Dataframes (``dataframe``): obs, var, and dataframes inside obsm/varm/uns.

Each column is an element of its own (dense, string, categorical or nullable), read independently, so a
column can be read without touching the others. Under the dask table backend the frame is a
``dask.dataframe`` built with :func:`dask.dataframe.from_map` and a reader that takes ``columns=``
(dask's column projection), so ``ddf["col"].compute()`` reads that column only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from shadows.backends import nodes
from shadows.elements.base import ElementSpec, Rows, encoding_of
from shadows.elements.framegraph import FrameSpec
from shadows.elements.registry import describe, register
from shadows.errors import MalformedElementError, UnreadableDataError, element_message

#: Rows per partition of a dask dataframe.


@register("group", "dataframe", "0.2.0", "0.1.0")
@dataclass(frozen=True)
class DataFrameSpec(FrameSpec):
    """A dataframe: an index element plus ordered column elements."""

    @classmethod
    def from_node(cls, ref, node, path, attrs):
        index_key = attrs.get("_index")
        if index_key is None:
            raise MalformedElementError(element_message(ref.path, path, "dataframe without an '_index' "
                                                        "attribute"))
        if not isinstance(index_key, str):
            what = f"its '_index' attribute is {index_key!r}; it must name the index column"
            raise MalformedElementError(element_message(ref.path, path, what))
        columns = list(attrs.get("column-order", []))
        if not all(isinstance(c, str) for c in columns):
            what = f"its 'column-order' attribute is {columns!r}; it must list column names"
            raise MalformedElementError(element_message(ref.path, path, what))
        repeated = sorted(str(k) for k, n in Counter(columns).items() if n > 1)
        if repeated:  # anndata would read the column twice, as two columns of one name
            what = f"'column-order' names {', '.join(repeated)} more than once; each column must be listed once"
            raise MalformedElementError(element_message(ref.path, path, what))
        stored = set(nodes.child_names(node))
        for key in [index_key, *columns]:
            if key not in stored:
                role = "index" if key == index_key else "column"
                what = f"the dataframe's {role} '{key}' is listed in its attributes but not stored"
                raise MalformedElementError(element_message(ref.path, f"{path}/{key}", what))
        legacy = attrs.get("encoding-version") == "0.1.0"
        index = _describe_column(ref, node[index_key], f"{path}/{index_key}", legacy)
        cols = LazyColumns(ref, path, [str(k) for k in columns], legacy)
        return cls(ref, path, encoding_of(attrs), (index.shape[0], len(columns)), None,
                   extra={"index_key": index_key, "index": index, "columns": cols})

    @property
    def index_key(self) -> str:
        """Name of the stored index column (``"_index"`` when the index is unnamed)."""
        return self.extra["index_key"]

    @property
    def columns(self) -> list[str]:
        """Column names in stored order."""
        return list(self.extra["columns"])

    def column(self, key: str) -> ElementSpec:
        """The element spec of one column."""
        return self.extra["columns"][key]

    def read_index(self, rows: Rows = slice(None)) -> pd.Index:
        """The index (obs_names/var_names) for the selected rows, named as anndata names it."""
        self._check_index_length(self.columns[:1])  # one column's metadata is enough to judge it
        index = pd.Index(self._index_values(rows))
        index.name = None if self.index_key == "_index" else self.index_key
        return index

    def read(self, rows: Rows = slice(None), columns: list[str] | None = None) -> pd.DataFrame:
        """Read the selected rows and columns, built exactly as anndata builds dataframes."""
        columns = self.columns if columns is None else list(columns)
        # first: an index whose length the columns contradict is named as such (from metadata), before
        # its length sizes anything; then one claiming too many rows is refused as too large
        self._check_index_length(columns)
        index = self._index_values(rows)
        self._check_lengths(columns)
        frame = pd.DataFrame(
            {k: self.column(k).read_rows(rows) for k in columns},
            index=index,
            columns=columns if columns else None,
        )
        if not columns:
            # anndata's AnnData/Raw give column-less frames string-typed (not Range) column indexes.
            frame.columns = frame.columns.astype(str)
        if self.index_key != "_index":
            frame.index.name = self.index_key
        return frame

    def _check_index_length(self, columns: list[str]) -> None:
        """Raise :class:`~shadows.errors.MalformedElementError` naming the index when ``columns`` agree on
        a length the index does not have (from metadata): the index is then the odd one out, and its
        length must not size a read (10**12 claimed rows would be refused as too large, not inconsistent).
        """
        index = self.extra["index"]
        lengths = {self.column(key).shape[0] for key in columns}
        if len(lengths) != 1 or index.shape[0] in lengths:
            return
        what = (f"its stored length, {index.shape[0]}, is inconsistent with the dataframe's columns, which "
                f"have {lengths.pop()} rows: the index is damaged")
        raise MalformedElementError(element_message(self.ref.display, index.name, what))

    def _index_values(self, rows: Rows) -> np.ndarray:
        """The index's values for ``rows``, refused when a chunk of a Zarr index is missing (zarr would
        give its names as empty strings: anndata then fails comparing indexes, a shadow would not fail).
        """
        index = self.extra["index"]
        values = index.read_rows(rows)
        empty = _empty_names(values)
        if empty.size:  # an empty name is legal but rare: only then are the chunk files looked for
            stored = np.arange(*rows.indices(index.shape[0])) if isinstance(rows, slice) else np.asarray(rows)
            node = index.node()
            if nodes.is_group(node):  # a nullable string array (anndata 0.13 on pandas 3): its values
                node = index.node("values")
            missing = nodes.missing_chunks(node, stored[empty])
            if missing:
                what = (f"its chunk(s) {', '.join(missing[:5])} are missing from the store (zarr would read "
                        "them as empty names): the store is incomplete; write the element again from a good copy")
                raise UnreadableDataError(element_message(self.ref.display, index.name, what))
        return values

    def _check_lengths(self, columns: list[str]) -> None:
        """Raise unless each of ``columns`` is as long as the index (from metadata)."""
        rows = self.extra["index"].shape[0]
        for key in columns:
            length = self.column(key).shape[0]
            if length != rows:
                what = f"has {length} rows, but the dataframe's index has {rows}"
                raise MalformedElementError(element_message(self.ref.display, self.column(key).name, what))

    def meta(self) -> pd.DataFrame:
        """An empty frame with the dtypes partitions will have (categories left unknown: no data read)."""
        from dask.dataframe.utils import UNKNOWN_CATEGORIES

        def empty(spec: ElementSpec) -> Any:
            if spec.dtype == "category":
                dtype = pd.CategoricalDtype([UNKNOWN_CATEGORIES], ordered=spec.extra.get("ordered", False))
                return pd.Series([], dtype=dtype)
            if isinstance(spec.dtype, np.dtype) and spec.dtype.kind == "O":
                # Whatever pandas infers for an object array of str (object, or "str" on pandas >= 3).
                return pd.Series(np.array(["x"], dtype=object)).iloc[:0]
            return pd.Series([], dtype=spec.dtype)

        index = pd.Index(empty(self.extra["index"]))
        index.name = None if self.index_key == "_index" else self.index_key
        data = {k: empty(self.column(k)).array for k in self.columns}
        return pd.DataFrame(data, index=index, columns=self.columns or None)


def _empty_names(values: Any) -> np.ndarray:
    """Positions of the empty strings among an index's ``values`` (numpy text, object or pandas strings;
    none for numbers).
    """
    if isinstance(values, np.ndarray):  # object, fixed-width or numpy 2's StringDType (zarr 3's text)
        if values.dtype.kind not in "OUT":
            return np.empty(0, np.int64)
        return np.flatnonzero(np.asarray(values == "", dtype=bool))
    if not pd.api.types.is_string_dtype(values.dtype):
        return np.empty(0, np.int64)
    return np.flatnonzero(pd.Series(values, copy=False).eq("").fillna(False).to_numpy(dtype=bool))


class LazyColumns(Mapping):
    """A dataframe's columns by name, each described (its metadata read) when first asked for: opening
    a dataframe of 20,000 columns took 5.9 s describing them all; now it reads only the dataframe's own
    attributes and listing, whatever the number of columns.
    """

    def __init__(self, ref: Any, path: str, names: list[str], legacy: bool):
        self._ref, self._path, self._names, self._legacy = ref, path, names, legacy
        self._known = set(names)
        self._specs: dict[str, ElementSpec] = {}

    def __getitem__(self, key: str) -> ElementSpec:
        spec = self._specs.get(key)
        if spec is None:
            if key not in self._known:
                raise KeyError(key)
            path = f"{self._path}/{key}"
            spec = self._specs[key] = _describe_column(self._ref, self._ref.node(path), path, self._legacy)
        return spec

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def _describe_column(ref, node, path: str, legacy: bool) -> ElementSpec:
    """Describe a column; in 0.7-era frames a dataset with a ``categories`` attribute is categorical."""
    if legacy and not nodes.is_group(node) and "categories" in node.attrs:
        from shadows.elements.legacy import LegacyCategoricalSpec

        return LegacyCategoricalSpec.from_node(ref, node, path, nodes.attrs(node))
    spec = describe(ref, node, path)
    if not hasattr(spec, "read_rows") or len(spec.shape) != 1:
        what = f"a dataframe column must be a 1-d array, found {spec.encoding} with shape {spec.shape}"
        raise MalformedElementError(element_message(ref.path, path, what))
    return spec
