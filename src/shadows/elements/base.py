"""What every element reader provides: metadata from the node, and a dask graph that reads by path."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from shadows.backends import nodes

if TYPE_CHECKING:
    from shadows.backends import FileRef

#: Target size of one dask task's read; stored chunks are grouped up to about this many bytes.
TARGET_CHUNK_BYTES = 32 * 2**20

Rows = slice | np.ndarray
"""A row selection handed to readers: a slice, or a sorted array of unique row positions."""


@dataclass(frozen=True)
class ElementSpec:
    """Metadata of one stored element and the recipe to read it.

    Instances are small and picklable: they hold a :class:`~shadows.backends.FileRef` and the element's
    path, never an open handle, so they can travel inside dask graphs to other processes.

    Parameters
    ----------
    ref
        The file the element lives in.
    path
        Absolute path of the element inside the file.
    encoding
        ``"<encoding-type> <encoding-version>"``, or a description of a legacy layout.
    shape
        The element's shape, from metadata.
    dtype
        The dtype of its values (``object`` for strings, ``category`` for categoricals...).
    """

    kind: ClassVar[str] = "element"

    ref: FileRef
    path: str
    encoding: str
    shape: tuple[int, ...] = ()
    dtype: Any = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @classmethod
    def from_node(cls, ref: FileRef, node: Any, path: str, attrs: dict[str, Any]) -> ElementSpec:
        """Build the spec from an open node and its decoded attributes (metadata only)."""
        raise NotImplementedError  # pragma: no cover - every registered reader overrides this

    @property
    def name(self) -> str:
        """The element path relative to the AnnData root (what users and messages call it)."""
        root = self.ref.root
        return self.path[len(root) + 1 :] if root and self.path.startswith(root + "/") else self.path

    def node(self, *parts: str) -> Any:
        """Open this element's node (or a child of it) through the process's read handle."""
        return self.ref.node("/".join((self.path, *parts)) if parts else self.path)

    def graph(self) -> Any:
        """A dask collection that reads this element by path (no data is read to build it)."""
        raise NotImplementedError(f"{type(self).__name__} has no graph")  # pragma: no cover

    def materialize(self) -> Any:
        """Read the whole element into the type anndata returns for it."""
        return self.graph().compute()

    def info(self) -> dict[str, Any]:
        """Shape, dtype, encoding, chunking and size on disk, from metadata and listings only."""
        node = self.node()
        return {
            "shape": self.shape,
            "dtype": str(self.dtype),
            "encoding": self.encoding,
            "chunks": _describe_chunks(node),
            "stored": nodes.stored_nbytes(node),
        }


def _describe_chunks(node: Any) -> str:
    if nodes.is_group(node):
        parts = []
        for key in nodes.child_names(node):
            child = node[key]
            if not nodes.is_group(child):
                parts.append(f"{key}:{nodes.chunks(child) or 'contiguous'}")
        return " ".join(parts)
    return str(nodes.chunks(node) or "contiguous")


def encoding_of(attrs: dict[str, Any]) -> str:
    """``"<type> <version>"`` from decoded attributes."""
    return f"{attrs.get('encoding-type')} {attrs.get('encoding-version', '')}".strip()

