"""Categorical columns (``categorical``): integer codes plus a small categories array."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from shadows.backends import nodes, reads
from shadows.elements.base import Rows, array_part, encoding_of
from shadows.elements.positions import ColumnSpec
from shadows.elements.registry import describe, register
from shadows.errors import MalformedElementError, element_message


@register("group", "categorical", "0.2.0")
@dataclass(frozen=True)
class CategoricalSpec(ColumnSpec):
    """A pandas Categorical stored as ``codes`` (``-1`` = missing) and ``categories``."""

    @classmethod
    def from_node(cls, ref, node, path, attrs):
        for part in ("codes", "categories"):
            if not nodes.has_child(node, part):
                raise MalformedElementError(element_message(ref.path, f"{path}/{part}", "missing from a "
                                                            "categorical"))
        codes = array_part(ref, node, path, "codes")
        array_part(ref, node, path, "categories")
        if nodes.numpy_dtype(codes).kind not in "iu":
            what = f"stored as {nodes.numpy_dtype(codes)}; codes must be integers"
            raise MalformedElementError(element_message(ref.display, f"{path}/codes", what))
        return cls(ref, path, encoding_of(attrs), tuple(codes.shape), "category",
                   extra={"ordered": bool(attrs.get("ordered", False)), "codes": f"{path}/codes",
                          "categories": f"{path}/categories"})

    def categories(self) -> pd.Index:
        """The categories, read the way anndata reads them (small: read whole)."""
        node = self.ref.node(self.extra["categories"])
        values = describe(self.ref, node, self.extra["categories"]).materialize()
        return pd.Index(values)

    def n_categories(self) -> int:
        """How many categories are stored (from metadata: nothing read)."""
        return int(self.ref.node(self.extra["categories"]).shape[0])

    def read_rows(self, rows: Rows) -> pd.Categorical:
        """The selected rows as a ``pandas.Categorical``."""
        categories = self.categories()
        codes = self.read_codes(rows, len(categories))
        return pd.Categorical.from_codes(codes, categories=categories, ordered=self.extra["ordered"])

    def read_codes(self, rows: Rows, n_categories: int) -> np.ndarray:
        """The selected rows' codes (no category read: a caller that knows them, an atlas's catalog, says
        how many there are), checked to lie in ``[-1, n_categories)``.
        """
        codes = reads.read(self.ref.node(self.extra["codes"]), rows)
        if codes.size and (int(codes.min()) < -1 or int(codes.max()) >= n_categories):
            what = (f"holds codes from {int(codes.min())} to {int(codes.max())}; with {n_categories} "
                    f"categories they must lie in [-1, {n_categories - 1}] (-1: missing)")
            raise MalformedElementError(element_message(self.ref.display, self.extra["codes"], what))
        return codes
