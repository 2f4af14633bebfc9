"""What every element reader provides: metadata from the node, and a dask graph that reads by path.

:class:`ElementSpec` is the one interface every element implements (dense and sparse arrays, dataframes,
their columns, categoricals, nullable arrays, awkward arrays, mappings, scalars, the layouts of old anndata
releases): what it is to a shadow (:attr:`~ElementSpec.role`), and for a :data:`Selection` (per axis, the
positions a view keeps) its dask graph (:meth:`~ElementSpec.select_graph`), its values
(:meth:`~ElementSpec.read_selection`) and about how many bytes reading them reads
(:meth:`~ElementSpec.nbytes`). Callers outside ``elements/`` ask these, never an element's ``kind``.

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

from shadows import cluster
from shadows.backends import nodes
from shadows.backends.handles import reading
from shadows.elements.sparse_chunk import to_plain
from shadows.errors import MalformedElementError, element_message, translated
from shadows.indexing.keys import as_slice_or_array
from shadows.indexing.selection import Selection, selected_share

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
                "select_graph", "read_selection", "nbytes", "info")


def translating(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` (a method of an element spec, or a function whose first argument is one) with library
    errors translated into shadows errors naming the file and the element, reading the file inside
    :func:`~shadows.backends.handles.reading` (its handle is not closed under the read, should the last
    shadow of the file be collected meanwhile).
    """

    @functools.wraps(method)
    def read(self: ElementSpec, *args: Any, **kwargs: Any) -> Any:
        with translated(self.ref.display, self.name), reading(self.ref):
            return method(self, *args, **kwargs)

    read.translating = True
    return read


@dataclass(frozen=True)
class ElementSpec:
    """Metadata of one stored element and the recipe to read it: the one interface every element
    implements.

    What callers ask of any element, whatever its type:

    - :attr:`role`: what it is to a shadow (``"array"``, ``"table"``, ``"mapping"`` or ``"value"``);
      :attr:`is_sparse`: whether its values are sparse matrices;
    - :meth:`select_graph` ``(selection)``: its dask graph restricted to a selection (``()``: all of it);
    - :meth:`read_selection` ``(selection)``: the values of ``element[selection]`` as anndata gives them,
      reading no more than the element can avoid (``()``: :meth:`materialize`);
    - :meth:`nbytes` ``(selection)``: about how many bytes reading that selection reads (metadata only);
    - :meth:`graph`, :meth:`materialize`, :meth:`info`: the whole element.

    A selection (:data:`~shadows.indexing.selection.Selection`) holds, per element axis, the positions
    kept (a range or an array of positions, in the order asked for) or ``None`` for all of them. This
    class gives the generic versions (the whole graph sliced axis by axis, computed); element types
    override them with what they can push down (a sparse matrix reads only the selected rows, a
    dataframe only the selected rows of each column).

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
    #: Whether its values are sparse matrices (scipy in memory, scipy chunks in its graph).
    is_sparse: ClassVar[bool] = False

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
    def select_graph(self, selection: Selection) -> Any:
        """A dask collection of ``element[selection]`` (``()``: :meth:`graph`): here the whole graph,
        sliced along each selected axis.
        """
        graph = self.graph()
        for axis, index in enumerate(selection):
            if index is not None:
                graph = graph[(slice(None),) * axis + (as_slice_or_array(index),)]
        return graph

    @translating
    def read_selection(self, selection: Selection) -> Any:
        """The values of ``element[selection]`` as anndata gives them (numpy, scipy, pandas...); ``()``
        reads the whole element (:meth:`materialize`). Here: :meth:`select_graph`, computed (on the
        ``distributed.Client`` when one is dask's scheduler and a reading bar is shown).
        """
        if not selection:
            return self.materialize()
        return to_plain(cluster.compute(self.select_graph(selection)))

    @translating
    def nbytes(self, selection: Selection = ()) -> int:
        """About how many bytes reading ``element[selection]`` reads (metadata only): its stored arrays'
        sizes once read (uncompressed; a string counted as a pointer), scaled by the share of each axis
        the selection keeps.
        """
        return int(nodes.array_nbytes(self.node()) * selected_share(self.shape, selection))

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

