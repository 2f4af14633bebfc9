"""Scalars in ``uns``: ``numeric-scalar``, ``string`` and ``null`` (None), read with anndata's own reader on access."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shadows.backends import nodes
from shadows.elements.base import ElementSpec, encoding_of
from shadows.elements.registry import register
from shadows.indexing.selection import Selection


@register("array", "numeric-scalar", "0.2.0")
@register("array", "string", "0.2.0")
@register("array", "null", "0.1.0")  # None in uns (anndata >= 0.12 writes it; scanpy's params.layer)
@dataclass(frozen=True)
class ScalarSpec(ElementSpec):
    """A 0-d value. It is metadata-sized, so it is read directly rather than through a graph."""

    kind = "scalar"

    @classmethod
    def from_node(cls, ref, node, path, attrs):
        return cls(ref, path, encoding_of(attrs), (), nodes.numpy_dtype(node))

    def materialize(self) -> Any:
        """The value, exactly as ``anndata.io.read_elem`` returns it (a Python str, int, float...)."""
        from anndata.io import read_elem

        return read_elem(self.node())

    def nbytes(self, selection: Selection = ()) -> int:
        """The value's bytes (a string counted as a pointer); none for ``None``, stored without a shape."""
        if self.encoding.split(" ", 1)[0] == "null":
            return 0
        return super().nbytes(selection)

    def graph(self):
        """A one-task dask graph (``dask.delayed``) producing the value."""
        import dask

        return dask.delayed(self.materialize, pure=True)()
