"""What every element reader provides: metadata from the node, and a dask graph that reads by path.

Every method of a reader that reads stored values (:data:`READ_METHODS`) is the element read boundary:
whatever h5py, zarr, its codecs, numpy, pandas or anndata raise in it about a damaged file reaches the
user as a :class:`~shadows.errors.ShadowsError` naming the file and the element (see
:func:`~shadows.errors.as_shadows_error`), the library's error chained as its cause. Subclasses get this
by defining the methods; nothing to call.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from shadows.backends import nodes
from shadows.errors import MalformedElementError, element_message, translated

if TYPE_CHECKING:
    from shadows.backends import FileRef

#: Target size of one dask task's read; stored chunks are grouped up to about this many bytes.
TARGET_CHUNK_BYTES = 32 * 2**20

Role = Literal["array", "table", "mapping", "value"]
"""What an element is to a shadow, the one question callers ask of an element instead of its ``kind``:
``"array"`` (X, layers, obsm...: the array backend presents it), ``"table"`` (a dataframe: the table
backend presents it), ``"mapping"`` (a group of elements, as in uns) or ``"value"`` (read as it is:
scalars, awkward arrays, a dataframe's columns)."""

Rows = slice | np.ndarray
"""A row selection handed to readers: a slice, or a sorted array of unique row positions."""

#: Methods of element readers that read stored values (or plan reads), where library errors are translated.
READ_METHODS = ("materialize", "read_rows", "read_block", "read", "read_index", "categories", "graph",
                "select_graph", "info")


def translating(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` (a method of an element spec, or a function whose first argument is one) with library
    errors translated into shadows errors naming the file and the element.
    """

    @functools.wraps(method)
    def read(self: ElementSpec, *args: Any, **kwargs: Any) -> Any:
        with translated(self.ref.display, self.name):
            return method(self, *args, **kwargs)

    read.translating = True
    return read


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
    #: What the element is to a shadow (see :data:`Role`); what callers outside ``elements/`` ask.
    role: ClassVar[Role] = "value"

    ref: FileRef
    path: str
    encoding: str
    shape: tuple[int, ...] = ()
    dtype: Any = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in READ_METHODS:
            method = cls.__dict__.get(name)
            if callable(method) and not getattr(method, "translating", False):
                setattr(cls, name, translating(method))

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

    def stored(self, *parts: str) -> Any:
        """The element's array (or a child array of it) as a :class:`~shadows.backends.abc.StoredArray`:
        what readers read values through and ask what the storage does cheaply (its ``capabilities``).
        """
        return self.ref.stored("/".join((self.path, *parts)) if parts else self.path)

    def graph(self) -> Any:
        """A dask collection that reads this element by path (no data is read to build it)."""
        raise NotImplementedError(f"{type(self).__name__} has no graph")  # pragma: no cover

    @translating
    def materialize(self) -> Any:
        """Read the whole element into the type anndata returns for it."""
        return self.graph().compute()

    @translating
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


def array_part(ref: FileRef, node: Any, path: str, part: str, ndim: int | None = 1) -> Any:
    """The child ``part`` of a group element that must be an array (of ``ndim`` dimensions, unless
    ``None``): a sparse matrix's ``indptr``, a categorical's ``codes``...

    Raises
    ------
    MalformedElementError
        The child is a group, or an array of another number of dimensions.
    """
    child = node[part]
    found = "a group" if nodes.is_group(child) else None
    if found is None and ndim is not None and len(child.shape) != ndim:
        found = f"an array of shape {tuple(child.shape)}"
    if found is not None:
        what = f"expected a {ndim}-d array" if ndim is not None else "expected an array"
        raise MalformedElementError(element_message(ref.display, f"{path}/{part}", f"{what}, found {found}"))
    return child


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

