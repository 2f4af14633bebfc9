"""Pandas nullable arrays: ``nullable-integer``, ``nullable-boolean``, ``nullable-string-array``."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from shadows.backends import nodes, reads
from shadows.elements.base import Rows, array_part, encoding_of
from shadows.elements.positions import ColumnSpec
from shadows.elements.registry import register
from shadows.errors import MalformedElementError, element_message


@functools.cache
def anndata_string_dtype(na_value: str) -> pd.StringDtype:
    """The dtype the installed anndata gives a ``nullable-string-array`` whose ``na-value`` attribute is
    ``na_value``: anndata 0.13 follows the attribute (``"NaN"``: pandas 3's ``str``), anndata 0.12 ignores
    it and always gives ``pd.StringDtype()`` (``tests/test_encodings.py`` reads both releases' files on
    both stacks against anndata's own read).
    """
    from importlib.metadata import version

    from packaging.version import Version

    if Version(version("anndata")) < Version("0.13"):
        return pd.StringDtype()
    return pd.StringDtype(na_value=np.nan if na_value == "NaN" else pd.NA)


@register("group", "nullable-integer", "0.1.0")
@register("group", "nullable-boolean", "0.1.0")
@register("group", "nullable-string-array", "0.1.0")
@dataclass(frozen=True)
class NullableSpec(ColumnSpec):
    """``values`` plus a boolean ``mask`` (True = missing), rebuilt as a pandas extension array."""

    @classmethod
    def from_node(cls, ref, node, path, attrs):
        for part in ("values", "mask"):
            if not nodes.has_child(node, part):
                raise MalformedElementError(element_message(ref.path, f"{path}/{part}", "missing from a "
                                                            "nullable array"))
        etype = attrs["encoding-type"]
        values, mask = array_part(ref, node, path, "values"), array_part(ref, node, path, "mask")
        if nodes.numpy_dtype(mask).kind != "b":
            what = f"stored as {nodes.numpy_dtype(mask)}; a mask holds booleans (True: missing)"
            raise MalformedElementError(element_message(ref.display, f"{path}/mask", what))
        if tuple(mask.shape) != tuple(values.shape):
            what = f"has {mask.shape[0]} entries, but values has {values.shape[0]}"
            raise MalformedElementError(element_message(ref.display, f"{path}/mask", what))
        if etype == "nullable-integer":
            name = np.dtype(nodes.numpy_dtype(values)).name  # int32 -> Int32, uint8 -> UInt8
            dtype = pd.api.types.pandas_dtype("UInt" + name[4:] if name.startswith("u") else "Int" + name[3:])
        elif etype == "nullable-boolean":
            dtype = pd.BooleanDtype()
        else:
            dtype = anndata_string_dtype(str(attrs.get("na-value", "NA")))
        return cls(ref, path, encoding_of(attrs), tuple(values.shape), dtype, extra={"type": etype})

    def read_rows(self, rows: Rows):
        """The selected rows as a pandas extension array with missing values masked."""
        values = reads.read(self.node("values"), rows)
        mask = np.asarray(reads.read(self.node("mask"), rows), dtype=bool)
        etype = self.extra["type"]
        if etype == "nullable-integer":
            return pd.arrays.IntegerArray(values, mask=mask)
        if etype == "nullable-boolean":
            return pd.arrays.BooleanArray(values.astype(bool, copy=False), mask=mask)
        values = np.asarray(values, dtype=object)
        values[mask] = None
        return pd.array(values, dtype=self.dtype)
