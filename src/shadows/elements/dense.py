"""Dense arrays (``array``) and arrays of strings (``string-array``): chunked dask arrays.

Shapes come from metadata, which a file can claim freely (an unwritten chunked HDF5 dataset or Zarr
array of shape ``(10**9, 10**9)`` takes a few bytes on disk). Before a dense element is read into memory
or a graph is built over it, its size is checked against the machine's memory (:meth:`DenseSpec.require_memory`,
:meth:`DenseSpec.graph`): what cannot fit fails at once with :class:`~shadows.errors.TooLargeError`
instead of swapping, being killed by the OOM killer, or building a graph for minutes.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from shadows.backends import nodes
from shadows.elements.base import TARGET_CHUNK_BYTES, ElementSpec, Rows, encoding_of
from shadows.elements.registry import register, register_sniffer
from shadows.errors import TooLargeError, element_message
from shadows.indexing.selection import Selection, selected_shape

#: What one task of a dask graph costs in memory (its key, its task, the scheduler's bookkeeping), about.
GRAPH_BYTES_PER_TASK = 1024
#: A graph may take at most this share of the machine's memory for its bookkeeping (1/16: 1.5 GiB, 1.5M
#: tasks on 24 GiB; a 30 GB array has about a thousand): more means metadata claiming an impossible shape,
#: refused before dask spends minutes and gigabytes planning it.
GRAPH_MEMORY_SHARE = 1 / 16


@functools.cache
def machine_memory() -> int:
    """The machine's physical memory in bytes (``psutil.virtual_memory().total``)."""
    import psutil

    return int(psutil.virtual_memory().total)


def _itemsize(dtype: Any) -> int:
    dtype = np.dtype(dtype)
    return max(dtype.itemsize, 8 if dtype.kind == "O" else 1)


def _size(nbytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if nbytes < 1024 or unit == "PiB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return ""  # pragma: no cover


class ArrayProxy:
    """A picklable stand-in for a stored array (or a box of it) that ``dask.array.from_array`` slices.

    It holds the element's spec, never an open array: each read goes to the element's
    :class:`~shadows.backends.abc.StoredArray` through the per-process handle cache, so it travels to
    process workers. ``__dask_tokenize__`` makes graph names depend on the file and element only.
    """

    def __init__(self, spec: DenseSpec, box: tuple[tuple[int, int], ...] | None = None):
        self.spec = spec
        #: The part of the stored array this one is: (start, stop) per axis (a view's box), or all of it.
        self.box = box if box is not None else tuple((0, n) for n in spec.shape)
        self.shape = tuple(stop - start for start, stop in self.box)
        self.dtype = spec.value_dtype()
        self.ndim = len(spec.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        return self.spec.read_block(_shifted(key, tuple(start for start, _ in self.box)))

    def __dask_tokenize__(self):
        return ("shadows.ArrayProxy", self.spec.ref, self.spec.path, self.shape, str(self.dtype), self.box)


def _shifted(key: Any, offsets: tuple[int, ...]) -> Any:
    """A basic selection of a box of an array (slices and ints, what dask's tasks ask for) as the same
    selection of the whole array, the box starting at ``offsets``.
    """
    if not any(offsets):
        return key
    parts = key if isinstance(key, tuple) else (key,)
    shifted = []
    for part, offset in zip(parts, offsets, strict=False):
        if isinstance(part, slice):
            start, stop = part.start or 0, part.stop
            part = slice(start + offset, None if stop is None else stop + offset, part.step)
        elif isinstance(part, int | np.integer):
            part = int(part) + offset
        shifted.append(part)
    return (*shifted, *parts[len(shifted):])


def _box_of(index: range | np.ndarray | None, n: int) -> tuple[tuple[int, int], slice | np.ndarray]:
    """The smallest (start, stop) holding an axis's selection ``index`` (``None``: all ``n``), and the
    selection relative to that start.
    """
    if index is None:
        return (0, n), slice(None)
    if len(index) == 0:
        return (0, 0), slice(0, 0)
    if isinstance(index, range):
        low = min(index[0], index[-1])
        start = index.start - low
        stop = start + index.step * len(index)
        return (low, max(index[0], index[-1]) + 1), slice(start, stop if stop >= 0 else None, index.step)
    positions = np.asarray(index, dtype=np.int64)
    low = int(positions.min())
    return (low, int(positions.max()) + 1), positions - low


def plan_chunks(shape: tuple[int, ...], dtype: np.dtype, stored: tuple[int, ...] | None,
                read: tuple[int, ...] | None = None):
    """Dask chunks aligned to the stored chunks, grouped up to about ``TARGET_CHUNK_BYTES`` per task.

    Rows are grouped first: row blocks of the full width when they fit, which is what row selections
    and per-row reductions want. ``read`` is the shape of the pieces a read decodes when it differs from
    ``stored`` (a Zarr shard's inner chunks): a shard larger than a task is split along its inner chunks,
    so that no inner chunk is decoded by two tasks (dask would otherwise cut the shard at any divisor).
    """
    from dask.array.core import normalize_chunks

    if not shape or 0 in shape:
        return tuple((s,) for s in shape)
    itemsize = max(np.dtype(dtype).itemsize, 8 if np.dtype(dtype).hasobject else 1)
    previous = stored if stored is not None else shape
    if read is not None and itemsize * math.prod(min(p, s) for p, s in zip(previous, shape, strict=True)) \
            > TARGET_CHUNK_BYTES:
        previous = read
    spec = {0: "auto", **{i: -1 for i in range(1, len(shape))}}
    row_bytes = itemsize * int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else itemsize
    if row_bytes * min(shape[0], previous[0]) > TARGET_CHUNK_BYTES and len(shape) > 1:
        spec = {i: "auto" for i in range(len(shape))}
    return normalize_chunks(
        tuple(spec[i] for i in range(len(shape))),
        shape=shape,
        limit=TARGET_CHUNK_BYTES,
        dtype=np.dtype(dtype) if not np.dtype(dtype).hasobject else np.dtype("f8"),  # records of strings too
        previous_chunks=previous,
    )


@register("array", "array", "0.2.0")
@register("array", "string-array", "0.2.0")
@register("array", "rec-array", "0.2.0")
@dataclass(frozen=True)
class DenseSpec(ElementSpec):
    """A dense n-d array (numbers, booleans or strings)."""

    kind = "dense"
    role = "array"

    @classmethod
    def from_node(cls, ref, node, path, attrs):
        encoding = encoding_of(attrs) if "encoding-type" in attrs else "array (unencoded)"
        dtype, extra = nodes.numpy_dtype(node), {"stored_chunks": nodes.chunks(node)}
        if nodes.read_chunks(node) != extra["stored_chunks"]:
            extra["read_chunks"] = nodes.read_chunks(node)  # a shard's inner chunks (plan_chunks)
        etype = attrs.get("encoding-type")
        if etype == "array" and nodes.stored_dtype(node).kind == "S":
            dtype = nodes.stored_dtype(node)  # fixed-length bytes: anndata reads them as bytes, not text
        elif etype == "array" and nodes.raw_text(node) == "bytes":
            extra["bytes_text"] = True  # HDF5 variable-length strings labelled "array": anndata gives bytes
        elif etype in ("array", "string-array") and nodes.raw_text(node) == "str":
            extra["zarr_text"] = True  # anndata reads Zarr text as zarr does: see value_dtype
        return cls(ref, path, encoding, tuple(node.shape), dtype, extra=extra)

    def value_dtype(self) -> np.dtype:
        """The dtype of the array anndata returns for the element (and of the element's dask graph).

        :attr:`dtype` says ``object`` for every text type (as a data frame's string column reads); anndata
        reads Zarr text arrays as zarr itself does (numpy's ``StringDType`` for variable-length strings in
        zarr 3, ``<U`` for fixed-length ones), which needs the array's zarr node (opened here).
        """
        return nodes.stored_dtype(self.node()) if self.extra.get("zarr_text") else self.dtype

    def _decode(self) -> bool:
        """Whether reads decode text to ``str`` objects: fixed-length bytes, HDF5 text labelled ``array``
        and Zarr text stay as h5py and zarr give them, as anndata reads them (a data frame's column too:
        pandas makes of zarr's numpy ``StringDType`` what it makes of it in anndata's frames).
        """
        return self.dtype.kind != "S" and not self.extra.get("bytes_text") and not self.extra.get("zarr_text")

    def memory_nbytes(self, shape: tuple[int, ...] | None = None) -> int:
        """Bytes of the array (or of ``shape`` of it) in memory (strings counted as pointers)."""
        return math.prod(self.shape if shape is None else shape) * _itemsize(self.dtype)

    def require_memory(self, shape: tuple[int, ...] | None = None) -> None:
        """Raise :class:`~shadows.errors.TooLargeError` when reading the array (or the part of it of
        ``shape``: a view's) into memory would need more memory than the machine has.
        """
        nbytes = self.memory_nbytes(shape)
        total = machine_memory()
        if nbytes <= total:
            return
        part = "it" if shape is None or tuple(shape) == tuple(self.shape) else \
            f"this view's part of it (shape {tuple(shape)} of {self.shape})"
        advice = ("uns is read into memory with every backend (as anndata holds it): its metadata is likely "
                  "wrong, or read it with h5py/zarr directly") if self.name.startswith("uns/") else \
            "open the shadow with array_backend='dask' to work on it lazily, or read a smaller view (shadow[:1000])"
        what = (f"reading {part} into memory (shape {self.shape}, {np.dtype(self.dtype)}) would need "
                f"{_size(nbytes)}, more than this machine's memory ({_size(total)}); {advice}")
        raise TooLargeError(element_message(self.ref.display, self.name, what))

    def _require_graph(self, tasks: int, estimated: bool, shape: tuple[int, ...] | None = None) -> None:
        total = machine_memory()
        if tasks * GRAPH_BYTES_PER_TASK <= total * GRAPH_MEMORY_SHARE:
            return
        part = f"its stored shape {self.shape}" if shape is None or shape == self.shape else \
            f"the part of its stored shape {self.shape} a view selects, {shape},"
        what = (f"{part} ({np.dtype(self.dtype)}, {_size(self.memory_nbytes(shape))}) would make a "
                f"dask graph of {'at least ' if estimated else ''}{tasks:,} tasks, whose bookkeeping alone "
                f"(~{_size(tasks * GRAPH_BYTES_PER_TASK)}) would take more than a sixteenth of this machine's "
                f"memory ({_size(total)}); its metadata is likely wrong. Views do not help (the graph covers the "
                "stored array); read a part of it directly through shadow.file (h5py/zarr)")
        raise TooLargeError(element_message(self.ref.display, self.name, what))

    def graph(self):
        """A dask array over the stored array, chunk-aligned.

        Raises :class:`~shadows.errors.TooLargeError` when the graph itself (about
        ``GRAPH_BYTES_PER_TASK`` per task) would take more than ``GRAPH_MEMORY_SHARE`` of the machine's
        memory, before planning it.
        """
        return self._box_graph(None)

    def select_graph(self, selection: Selection) -> Any:
        """A dask array of ``array[selection]`` (per axis: the positions kept, ``None`` for all of them).

        The graph covers the smallest box of the stored array that holds the selection, so a view's graph
        is sized by what it selects, not by the stored shape: ``shadow[:5, :5]`` of an array claiming
        10**12 × 10**12 (metadata cost nothing to write) reads its 25 values, where a graph over the whole
        array would be refused (:class:`~shadows.errors.TooLargeError`) before it could be sliced.
        """
        boxes = [_box_of(selection[a] if a < len(selection) else None, n) for a, n in enumerate(self.shape)]
        box = tuple(b for b, _ in boxes)
        graph = self._box_graph(None if box == tuple((0, n) for n in self.shape) else box)
        for axis, (_, inner) in enumerate(boxes):
            if not (isinstance(inner, slice) and inner == slice(None)):
                graph = graph[(slice(None),) * axis + (inner,)]
        return graph

    def read_selection(self, selection: Selection) -> Any:
        """``array[selection]`` as numpy (``()``: :meth:`materialize`), through :meth:`select_graph`.

        An array (or a view's part of it) that cannot fit in the machine's memory is refused with
        :class:`~shadows.errors.TooLargeError` before anything is read or planned (:meth:`require_memory`).
        """
        self.require_memory(selected_shape(self.shape, selection))
        return super().read_selection(selection)

    def _box_graph(self, box: tuple[tuple[int, int], ...] | None) -> Any:
        """A chunk-planned dask array over ``box`` of the stored array (all of it for ``None``)."""
        import dask.array as da

        proxy = ArrayProxy(self, box)
        shape = proxy.shape
        # Tasks hold at most TARGET_CHUNK_BYTES each: a lower bound on their number, known before planning.
        self._require_graph(-(-self.memory_nbytes(shape) // TARGET_CHUNK_BYTES), estimated=True, shape=shape)
        chunks = plan_chunks(shape, self.dtype, self.extra.get("stored_chunks"), self.extra.get("read_chunks"))
        self._require_graph(math.prod(len(c) for c in chunks), estimated=False, shape=shape)
        name = f"shadows-array-{self.name}-" + _token(proxy)
        meta = np.empty((0,) * len(self.shape), dtype=proxy.dtype)
        return da.from_array(proxy, chunks=chunks, name=name, meta=meta, asarray=False, inline_array=True)

    def read_block(self, key: Any) -> np.ndarray:
        """Read ``array[key]`` for a basic selection (what dask's tasks ask for)."""
        return self.stored().read(key, decode=self._decode())

    def materialize(self) -> np.ndarray:
        """Read the whole array in one read, decoded by anndata's own reader (the format authority)."""
        from anndata.io import read_elem

        self.require_memory()
        return read_elem(self.node())

    def read_rows(self, rows: Rows) -> np.ndarray:
        """Read the selected rows (first-axis positions) of the array."""
        if len(self.shape):
            n = len(range(*rows.indices(self.shape[0]))) if isinstance(rows, slice) else len(rows)
            self.require_memory((n, *self.shape[1:]))
        array, decode = self.stored(), self._decode()
        if isinstance(rows, slice) or len(self.shape) == 0:
            return array.read(rows if len(self.shape) else (), decode)
        return array.read(np.asarray(rows), decode)


def _token(obj: Any) -> str:
    from dask.base import tokenize

    return tokenize(obj)


def _is_plain_dataset(node: Any, attrs: dict[str, Any]) -> bool:
    """Arrays written by anndata < 0.7 carry no encoding attributes."""
    return not nodes.is_group(node) and len(node.shape) > 0


register_sniffer(_is_plain_dataset)(DenseSpec)
