"""Awkward arrays (``awkward-array`` 0.1.0: ragged, nested records anndata stores in obsm, varm and uns),
read by anndata's own reader on access; ``awkward`` is needed only then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shadows.elements.base import ElementSpec, encoding_of
from shadows.elements.registry import register
from shadows.errors import BackendUnavailableError, element_message


@register("group", "awkward-array", "0.1.0")
@dataclass(frozen=True)
class AwkwardSpec(ElementSpec):
    """An ``ak.Array`` of ``length`` entries along its first axis (described from attributes only)."""

    kind = "awkward"

    @classmethod
    def from_node(cls, ref, node, path, attrs):
        return cls(ref, path, encoding_of(attrs), (int(attrs.get("length", 0)),), None)

    def materialize(self) -> Any:
        """The whole array, as ``anndata.io.read_elem`` returns it (an ``awkward.Array``)."""
        try:
            import awkward  # noqa: F401 - anndata needs it to decode the element
        except ImportError:
            what = "is an awkward array; reading it needs the 'awkward' package: pip install awkward"
            raise BackendUnavailableError(element_message(self.ref.path, self.name, what)) from None
        from anndata.io import read_elem

        return read_elem(self.node())

    def graph(self) -> Any:
        """A one-task dask graph (``dask.delayed``) producing the array; a view indexes it."""
        import dask

        return dask.delayed(self.materialize, pure=True)()
