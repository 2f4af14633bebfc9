"""Layouts written by old anndata releases.

- anndata < 0.7 stored obs/var as one structured (compound) array whose first field is the index, kept
  categorical columns as integer codes with their categories in ``uns["<column>_categories"]``, and
  wrote scalars in uns without encoding attributes.
- anndata 0.7 stored categorical dataframe columns as a codes array with a ``categories`` attribute that
  points (HDF5 object reference, or a name in Zarr) at the categories array.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from shadows.backends import nodes, reads
from shadows.elements.base import ElementSpec, Rows
from shadows.elements.dense import DenseSpec
from shadows.elements.framegraph import FrameSpec
from shadows.elements.positions import ColumnSpec
from shadows.elements.registry import describe, register_sniffer
from shadows.elements.scalars import ScalarSpec


@dataclass(frozen=True)
class LegacyCategoricalSpec(ColumnSpec):
    """A 0.7-era categorical column: codes with a ``categories`` attribute naming the categories."""

    @classmethod
    def from_node(cls, ref, node, path, attrs):
        categories_path = nodes.reference_path(node, node.attrs["categories"], path)
        return cls(ref, path, "categorical (anndata 0.7)", tuple(node.shape), "category",
                   extra={"categories": categories_path})

    def categories(self) -> pd.Index:
        """The categories (small: read whole)."""
        node = self.ref.node(self.extra["categories"])
        return pd.Index(describe(self.ref, node, self.extra["categories"]).materialize())

    def read_rows(self, rows: Rows) -> pd.Categorical:
        """The selected rows as a ``pandas.Categorical``."""
        ordered = bool(nodes.attrs(self.ref.node(self.extra["categories"])).get("ordered", False))
        return pd.Categorical.from_codes(reads.read(self.node(), rows), self.categories(), ordered=ordered)


def is_structured(node: Any) -> bool:
    """Whether ``node`` is a structured (compound) array: pre-0.7 obs/var/obsm/varm."""
    return not nodes.is_group(node) and getattr(node.dtype, "names", None) is not None


@dataclass(frozen=True)
class StructuredFieldSpec(DenseSpec):
    """One field of a pre-0.7 structured obsm/varm array (``obsm["X_pca"]``), read as a dense array."""

    @classmethod
    def from_field(cls, ref, node, path: str, field: str) -> StructuredFieldSpec:
        """Describe field ``field`` of the structured array at ``path``."""
        base = node.dtype.fields[field][0]
        shape = (int(node.shape[0]), *base.shape)
        return cls(ref, path, "structured array field (anndata < 0.7)", shape, base.base,
                   extra={"stored_chunks": None, "field": field})

    def read_block(self, key: Any) -> np.ndarray:
        """Read ``key`` of the field: whole records for the rows, then the field, then the rest."""
        key = key if isinstance(key, tuple) else (key,)
        records = self.node()[key[0] if key else slice(None)]
        return np.asarray(records[self.extra["field"]])[(slice(None), *key[1:])]

    def materialize(self) -> np.ndarray:
        """The whole field, as anndata converts it (a strided view of the records)."""
        self.require_memory()
        return self.read_block((slice(None),))

    def read_rows(self, rows: Rows) -> np.ndarray:
        """The selected rows of the field."""
        n = len(range(*rows.indices(self.shape[0]))) if isinstance(rows, slice) else len(rows)
        self.require_memory((n, *self.shape[1:]))
        return self.read_block((rows if isinstance(rows, slice) else np.asarray(rows),))


@dataclass(frozen=True)
class LegacyFrameSpec(FrameSpec):
    """A pre-0.7 obs/var: one structured array, first field the index.

    ``extra["categories"]`` maps column names to the uns paths holding their categories; the AnnData
    layout fills it in, since only it knows where uns is.
    """

    @classmethod
    def from_node(cls, ref, node, path, attrs):
        names = list(node.dtype.names)
        return cls(ref, path, "structured array (anndata < 0.7)", (int(node.shape[0]), len(names) - 1),
                   None, extra={"fields": names, "categories": {}})

    def with_categories(self, categories: dict[str, str]) -> LegacyFrameSpec:
        """A copy that turns the named columns into categoricals from the given uns paths."""
        return LegacyFrameSpec(self.ref, self.path, self.encoding, self.shape, self.dtype,
                               extra={**self.extra, "categories": dict(categories)})

    @property
    def index_key(self) -> str:
        """The index field's name."""
        return self.extra["fields"][0]

    @property
    def columns(self) -> list[str]:
        """Column names (every field after the index)."""
        return self.extra["fields"][1:]

    def read(self, rows: Rows = slice(None), columns: list[str] | None = None) -> pd.DataFrame:
        """Decode the records as anndata does, then apply categories kept in uns."""
        records = self.node()[rows if isinstance(rows, slice) else np.asarray(rows)]
        decoded = {}
        for name in self.extra["fields"]:
            values = records[name]
            if values.dtype.kind == "S":
                values = values.astype(f"U{values.dtype.itemsize}")
            elif values.dtype.kind == "O":
                values = np.array([v.decode() if isinstance(v, bytes) else v for v in values], dtype=object)
            decoded[name] = values
        frame = pd.DataFrame(decoded).set_index(self.index_key)
        for column, uns_path in self.extra["categories"].items():
            categories = describe(self.ref, self.ref.node(uns_path), uns_path).materialize()
            if isinstance(categories, str | int):
                categories = [categories]
            codes = frame[column].to_numpy()
            if np.all(codes < len(categories)):
                frame[column] = pd.Categorical.from_codes(codes, categories)
        if columns is not None:
            frame = frame[list(columns)]
        return frame

    def read_index(self, rows: Rows = slice(None)) -> pd.Index:
        """The index for the selected rows."""
        return self.read(rows, columns=[]).index

    def column(self, key: str) -> ElementSpec:
        """A column as an element of its own (read through the whole records)."""
        return _LegacyFieldSpec(self.ref, self.path, f"field of {self.encoding}", (self.shape[0],), None,
                                extra={"frame": self, "field": key})

    def meta(self) -> pd.DataFrame:
        """An empty frame with the columns' dtypes (reads no records)."""
        return self.read(slice(0, 0))


@dataclass(frozen=True)
class _LegacyFieldSpec(ColumnSpec):
    def read_rows(self, rows: Rows):
        return self.extra["frame"].read(rows, [self.extra["field"]])[self.extra["field"]].array


def _is_unencoded_scalar(node: Any, attrs: dict[str, Any]) -> bool:
    return not nodes.is_group(node) and len(node.shape) == 0


@register_sniffer(_is_unencoded_scalar)
@dataclass(frozen=True)
class LegacyScalarSpec(ScalarSpec):
    """A 0-d dataset without encoding attributes (uns scalars before anndata 0.7), read as anndata reads
    it (:class:`~shadows.elements.scalars.ScalarSpec`).
    """

    @classmethod
    def from_node(cls, ref, node, path, attrs):
        return cls(ref, path, "scalar (unencoded)", (), nodes.numpy_dtype(node))
