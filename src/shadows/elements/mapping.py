"""Mappings (``dict``): uns, layers, obsm, ... and nested dicts inside uns.

A mapping spec lists its keys from metadata; each child is described on demand.
"""

from __future__ import annotations

from dataclasses import dataclass

from shadows.backends import nodes
from shadows.elements.base import ElementSpec, encoding_of
from shadows.elements.registry import describe, register, register_sniffer
from shadows.indexing.selection import Selection


@register("group", "dict", "0.1.0")
@register("group", "raw", "0.1.0")
@dataclass(frozen=True)
class MappingSpec(ElementSpec):
    """A group of named elements."""

    kind = "mapping"
    role = "mapping"

    @classmethod
    def from_node(cls, ref, node, path, attrs):
        encoding = encoding_of(attrs) if "encoding-type" in attrs else "dict (unencoded)"
        return cls(ref, path, encoding, (), None, extra={"keys": tuple(nodes.child_names(node))})

    def keys(self) -> tuple[str, ...]:
        """Names of the children, from metadata."""
        return self.extra["keys"]

    def child(self, key: str) -> ElementSpec:
        """Describe one child element."""
        path = f"{self.path}/{key}" if self.path else key
        return describe(self.ref, self.ref.node(path), path)

    def materialize(self) -> dict:
        """The whole mapping, each child read as anndata reads it."""
        return {k: self.child(k).materialize() for k in self.keys()}

    def graph(self):
        """A dict of the children's graphs."""
        return {k: self.child(k).graph() for k in self.keys()}

    def nbytes(self, selection: Selection = ()) -> int:
        """The children's bytes, each as it counts them (a mapping is never sliced)."""
        return sum(self.child(k).nbytes() for k in self.keys())


def _is_plain_group(node, attrs) -> bool:
    return nodes.is_group(node)


register_sniffer(_is_plain_group, priority=100)(MappingSpec)
