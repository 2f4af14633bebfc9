"""One stored array behind one interface, and what its storage does cheaply, declared once.

Element readers (``shadows.elements``) read values through a :class:`StoredArray`: one stored array
node (an ``h5py.Dataset``, a ``zarr.Array``, or any array a backend module wraps) with the operations
readers need (:meth:`~StoredArray.read`, :meth:`~StoredArray.read_ranges`, shape, dtype, chunks, sizes)
and a small frozen :class:`Capabilities` record saying what the storage does cheaply: how it reads
scattered ranges, the piece a read decodes, whether it is written, remote, or read on several threads
at once. Readers ask these; they never test what format a node is.

The model is xarray's ``BackendArray`` with its ``IndexingSupport``: the backend declares what its
indexing does well and the reader plans around it. Here the choice of how scattered ranges are read is
made once, when the array is wrapped (:func:`stored`), from metadata only, by the backend module that
registered the node's type (:func:`register`): :mod:`shadows.backends.hdf5_arrays` (raw preads, HDF5's
unions of hyperslabs), :mod:`shadows.backends.zarr_arrays` (shard files, zarrs' whole chunks, zarr's
orthogonal selections). A new storage is one new module that subclasses :class:`StoredArray` and
registers it; the element readers read it as they read files (``tests/test_storage_interface.py`` reads
a dict of numpy arrays so).

Wrapping is cheap (metadata only, nothing read); a shadow's read tasks reuse one wrapper per node, kept
beside the node in this process's file entry (:func:`shadows.backends.handles.read_stored`), so the
choice is made once per node looked up, not per read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any, Literal

import numpy as np

RangeReads = Literal["preads", "shard-reads", "hyperslab-unions", "whole-chunks", "positions", "loop"]
"""How an array reads many scattered ranges of its first axis in one call (:meth:`StoredArray.read_ranges`):

- ``"preads"``: one ``pread`` per range at the byte offsets the format reports (uncompressed HDF5 of a
  file open read-only: :mod:`shadows.backends.hdf5_raw`);
- ``"shard-reads"``: each touched inner chunk of a local shard file read and decoded once, on a thread
  per core (:mod:`shadows.backends.zarr_shards`);
- ``"hyperslab-unions"``: HDF5 selections, each a union of a few hundred ranges;
- ``"whole-chunks"``: slices over the runs of touched chunks, which zarrs decodes in parallel;
- ``"positions"``: orthogonal selections of the ranges' positions (zarr decodes each touched chunk once);
- ``"loop"``: one read per range.
"""


@dataclass(frozen=True)
class Capabilities:
    """What one stored array does cheaply, declared when it is wrapped (from metadata only).

    Parameters
    ----------
    ranges
        How scattered ranges of the first axis are read in one call (see :data:`RangeReads`).
    decode_unit
        Values along the first axis of the smallest piece a read decodes whole (a chunk, a shard's inner
        chunk); ``None`` when values lie as stored (contiguous, in memory).
    unit_reads
        Reads cost per decode unit touched, not per range: every unit a read touches is read and decoded
        whole (Zarr), so work on scattered positions is grouped by the storage's blocks and a span of
        positions is read rather than scattered pieces of it. ``False``: a read of scattered ranges costs
        per range (HDF5: one selection or ``pread`` each, decoded chunks kept in HDF5's chunk cache
        between calls; memory), and work is grouped by count.
    bounded_ranges
        A read of many ranges at once holds about its output plus one decode unit per thread. Not so for
        zarr's own pipeline selecting positions of a sharded array: it decodes every inner chunk the
        selection touches at once (1 % of the rows of the 100k-cell store, v3 sharded: 214 MiB in one
        read, 65 MiB in tasks).
    costly_ranges
        Each range of a read costs a call's worth of work (HDF5's selections: about 12 µs each), so a
        short gap between two ranges is cheaper read than skipped.
    parallel_reads
        Reads on several threads run at once (zarr's codecs, ``pread``); ``False``: they take turns
        (h5py holds one lock for every call).
    writable
        The array is open for writing.
    remote
        Reads go through fsspec (a URL) or a Python file object: each is a request.
    """

    ranges: RangeReads
    decode_unit: int | None
    unit_reads: bool
    bounded_ranges: bool
    costly_ranges: bool
    parallel_reads: bool
    writable: bool
    remote: bool


class StoredArray:
    """One stored array, wrapped once: what element readers read values through.

    Subclasses (one per storage, registered with :func:`register`) set :attr:`capabilities` in their
    constructor and implement :meth:`_read` and :meth:`_read_ranges`; they may override the metadata
    properties. Reads here count their bytes on the reading bar (:mod:`shadows.progress`) and turn the
    storage layer's failures into errors naming the file and the element.
    """

    #: What the storage does cheaply (set once, by the subclass's constructor).
    capabilities: Capabilities

    def __init__(self, node: Any):
        #: The wrapped node (an ``h5py.Dataset``, a ``zarr.Array``...): what the backend reads through.
        self.node = node

    # -- metadata ----------------------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.node.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def stored_dtype(self) -> np.dtype:
        """The numpy dtype the values are stored as."""
        from shadows.backends.nodes import stored_dtype

        return stored_dtype(self.node)

    @property
    def dtype(self) -> np.dtype:
        """The numpy dtype of the values a read returns (``object`` for text)."""
        from shadows.backends.nodes import numpy_dtype

        return numpy_dtype(self.node)

    @property
    def chunks(self) -> tuple[int, ...] | None:
        """The stored chunk (or shard) shape; ``None`` when contiguous."""
        from shadows.backends.nodes import chunks

        return chunks(self.node)

    @property
    def read_chunks(self) -> tuple[int, ...] | None:
        """The shape of the pieces a read decodes (a shard's inner chunks), else :attr:`chunks`."""
        from shadows.backends.nodes import read_chunks

        return read_chunks(self.node)

    @property
    def nbytes(self) -> int:
        """Bytes the values take once read (a string counted as a pointer)."""
        from shadows.backends.nodes import array_nbytes

        return array_nbytes(self.node)

    def location(self) -> tuple[str, str]:
        """The file (or store) and the path inside it, for messages."""
        from shadows.backends.nodes import location

        return location(self.node)

    # -- reads -------------------------------------------------------------------------------------

    def read(self, selection: Any = (), decode: bool = True) -> np.ndarray:
        """``array[selection]`` as numpy: text as an object array of ``str`` unless ``decode`` is false
        (then as the storage gives it). ``selection`` is a basic selection (slices, ints) or an
        increasing integer array of first-axis positions.
        """
        from shadows import progress
        from shadows.backends.nodes import reading_located

        with reading_located(self.location):
            values = self._read(selection, decode)
        progress.count_read(getattr(values, "nbytes", 0))
        return values

    def read_ranges(self, starts: np.ndarray, stops: np.ndarray, out: np.ndarray) -> None:
        """Read the increasing, disjoint ranges ``array[starts[i]:stops[i]]`` (a numeric 1-d array) one
        after another into ``out``, the way :attr:`capabilities` ``.ranges`` says (one range: a slice).
        """
        from shadows import progress
        from shadows.backends.nodes import reading_located

        lengths = stops - starts
        total = int(lengths.sum())
        if total != out.size:
            raise ValueError(f"{out.size} values to fill from ranges holding {total}")
        if total == 0:
            return
        with reading_located(self.location):
            if starts.size > 1:
                self._read_ranges(starts, lengths, out)
            else:
                read_each_range(self._slice, starts, lengths, out)
        progress.count_read(total * out.itemsize)

    # -- what a storage implements -------------------------------------------------------------------

    def _read(self, selection: Any, decode: bool) -> np.ndarray:
        raise NotImplementedError  # pragma: no cover - every registered storage defines it

    def _slice(self, start: int, stop: int) -> np.ndarray:
        """``array[start:stop]`` of a numeric 1-d array."""
        return self.node[start:stop]

    def _read_ranges(self, starts: np.ndarray, lengths: np.ndarray, out: np.ndarray) -> None:
        """More than one range (``lengths`` may hold zeros): here one read per range (``"loop"``)."""
        read_each_range(self._slice, starts, lengths, out)

    def __repr__(self) -> str:
        try:
            file, path = self.location()
        except Exception:  # its file closed
            file, path = "a closed file", "?"
        return f"<{type(self).__name__} {path} of {file}: {self.capabilities}>"


def read_each_range(read_slice: Callable[[int, int], np.ndarray], starts: np.ndarray, lengths: np.ndarray,
                    out: np.ndarray) -> None:
    """The ``"loop"`` way: ``out`` filled range after range by ``read_slice(start, stop)``."""
    at = 0
    for start, length in zip(starts.tolist(), lengths.tolist(), strict=True):
        out[at : at + length] = read_slice(start, start + length)
        at += length


# -- the registry of storages ----------------------------------------------------------------------

#: Node type tests and the wrappers they choose, newest first (a later registration is asked first).
_STORAGES: list[tuple[Callable[[Any], bool], Callable[[Any], StoredArray]]] = []
#: The storages shadows itself reads (imported on first use: they import h5py and zarr).
_BUILTIN = ("shadows.backends.hdf5_arrays", "shadows.backends.zarr_arrays")
_loaded = False


def register(takes: Callable[[Any], bool]) -> Callable[[type[StoredArray]], type[StoredArray]]:
    """Class decorator: ``cls(node)`` wraps the nodes for which ``takes(node)`` is true."""

    def decorate(cls: type[StoredArray]) -> type[StoredArray]:
        _STORAGES.insert(0, (takes, cls))
        return cls

    return decorate


def stored(node: Any) -> StoredArray:
    """``node`` wrapped by the storage registered for it, which chooses here, once, from metadata, how
    it reads (see :class:`Capabilities`). A node that is already a :class:`StoredArray` is returned.
    """
    global _loaded
    if isinstance(node, StoredArray):
        return node
    if not _loaded:
        for module in _BUILTIN:
            import_module(module)
        _loaded = True
    for takes, wrap in _STORAGES:
        if takes(node):
            return wrap(node)
    raise TypeError(f"no storage in shadows.backends reads a {type(node).__module__}.{type(node).__name__}")
