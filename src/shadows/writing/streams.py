"""Stream dask arrays into an HDF5 or Zarr group, chunk by chunk, with anndata's encodings.

Dense arrays go through ``dask.array.store`` into a dataset/array whose chunks match the dask chunks
(so no two tasks write the same storage chunk). Sparse arrays (dask arrays of scipy CSR/CSC chunks)
computed in this process are written in one pass where no two blocks share a task: a few threads
compute the blocks, each from its own part of the graph, and they are appended in order to
``data``/``indices``/``indptr``, whole storage chunks at a time (:class:`_SparseAppender`). Under a cluster
whose workers write, and for blocks that share tasks (a reduction over the whole array), each block needs
its region before any is written: the non-zeros of every block are counted first (for whole stored
rows, a view's X or X itself, from the stored pointers the graph carries as its ``stored_blocks``:
:class:`~shadows.elements.sparse.StoredBlocks`; otherwise by computing the blocks), then every block
writes its regions. Only a few blocks are in memory at a time, so an element computed lazily
(``np.log1p(adata.X)``) is never materialized whole.

Under a ``distributed.Client`` (dask's scheduler), a Zarr target is filled by the cluster's workers: each
task computes its block and writes it into the element's build location itself, so no element data
passes through this process, which only plans and then commits (see :mod:`shadows.writing.commit`). The
build location must be reachable by the workers under the same name (an object store, or a folder
on a file system they share). An HDF5 file takes one writer: the blocks are computed on the cluster and
received here a few at a time (:data:`BLOCKS_IN_FLIGHT` per worker thread), written as they come.

anndata's encodings for these two ("array" 0.2.0, "csr_matrix"/"csc_matrix" 0.1.0) have been stable since
anndata 0.8; everything else is encoded by anndata itself (see :mod:`shadows.writing.commit`).
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp

from shadows import progress
from shadows.backends import storage
from shadows.backends.nodes import create_array, create_growing_array
from shadows.cluster import compute_on, current_client
from shadows.errors import ShadowsError
from shadows.writing.anndata_elems import write_elem

ARRAY_ENCODING = {"encoding-type": "array", "encoding-version": "0.2.0"}
Reserve = Callable[[int], None]
#: Rows (or columns) per written block are chosen so a dense block holds about this many bytes.
TARGET_BLOCK_BYTES = 16 * 2**20
#: Elements per storage chunk of a sparse array's ``data``, ``indices`` and ``indptr`` (fewer in a smaller array).
SPARSE_CHUNK = 2**20
#: Blocks an HDF5 target written under a distributed client has computing or waiting, per worker thread.
BLOCKS_IN_FLIGHT = 2


def is_dask(value: Any) -> bool:
    """Whether ``value`` is a dask array."""
    return type(value).__module__.startswith("dask.") and hasattr(value, "chunks") and hasattr(value, "dask")


def sparse_format(value: Any) -> str | None:
    """``"csr"``/``"csc"`` for a dask array of scipy sparse chunks, else ``None``."""
    meta = getattr(value, "_meta", None)
    if sp.issparse(meta):
        return "csc" if meta.format == "csc" else "csr"
    return None


def _set_attrs(node: Any, attrs: dict[str, Any]) -> None:
    for key, value in attrs.items():
        node.attrs[key] = value


def _lock_for(group: Any) -> Any:
    """Where writes take turns anyway (h5py serializes calls), an explicit lock keeps dask's threads from
    interleaving them.
    """
    return False if storage.of_group(group).parallel_writes else threading.Lock()


def _scheduler_for(group: Any) -> str:
    """The local dask scheduler that fills ``group``: dask's threads (never a ``dask.distributed``
    client's, whose process workers cannot hold this process's open file handles).

    HDF5 targets took one thread until scattered rows of HDF5 sources were read outside h5py
    (:mod:`shadows.backends.hdf5_raw`): h5py serializes every call on its global lock, so a second thread
    only kept more blocks alive. Now a block is read while another is written: the 10 % view export of
    the 4.8M-cell file (31 GB, page cache emptied) took 32 s with threads against 49 s with one (the raw
    read of the selected rows' bytes: 21-24 s), at the same peak (713 MiB); the 100k file's, 0.33 s at
    96 MiB against 0.52 s at 104 MiB. Zarr targets encode chunks in parallel (2.6 s vs 3.7 s for a 615 MB
    layer).
    """
    return "threads"


def _regular(array: Any) -> Any:
    """The array rechunked to equal chunks (the last may be shorter), about TARGET_BLOCK_BYTES each."""
    if array.ndim == 0:
        return array
    row_bytes = max(1, int(np.prod(array.shape[1:], dtype=np.int64)) * array.dtype.itemsize)
    rows = max(1, min(array.shape[0], TARGET_BLOCK_BYTES // row_bytes))
    return array.rechunk((rows, *array.shape[1:]))


def write_dense(group: Any, name: str, array: Any, reserve: Reserve | None = None, cluster: bool = True) -> None:
    """Write a dense dask array as ``group[name]`` (encoding "array"; text: see :func:`write_text`)."""
    import dask.array as da

    if np.dtype(array.dtype).kind in "OTU":
        write_text(group, name, array, reserve)
        return
    array = _regular(array)
    if reserve is not None:
        reserve(int(array.nbytes))
    target = create_array(group, name, array.shape, array.dtype, tuple(c[0] for c in array.chunks))
    bar = progress.current()
    client = current_client(array) if cluster else None
    if client is not None and storage.of_group(group).workers_write:
        # each task writes its own block, which is one storage chunk: no two tasks share a chunk
        compute_on(client, da.store(array, target, lock=False, compute=False), show_progress=bar is not None)
    elif client is not None:
        _receive_blocks(client, array, target, bar)
    else:
        da.store(array, target if bar is None else _Counted(target, bar), lock=_lock_for(group),
                 scheduler=_scheduler_for(group))
    _set_attrs(target, ARRAY_ENCODING)


def _receive_blocks(client: Any, array: Any, target: Any, bar: progress.JobProgress | None) -> None:
    """Fill an HDF5 ``target`` from ``array``'s blocks computed on ``client``'s workers."""
    from dask.array.core import slices_from_chunks

    keys = slices_from_chunks(array.chunks)  # in the order of to_delayed()'s blocks

    def write(block: Any, key: tuple[slice, ...]) -> None:
        target[key] = block
        if bar is not None:
            bar.advance()

    stream_blocks(client, array.to_delayed().reshape(-1), keys, write)


def stream_blocks(client: Any, blocks: list[Any], places: list[Any], write: Callable[[Any, Any], Any]) -> list[Any]:
    """Compute ``blocks`` (dask delayed objects) on ``client`` and call ``write(block, place)`` here for
    each as it arrives, with at most :data:`BLOCKS_IN_FLIGHT` per worker thread computing or waiting (this
    process holds at most those). Returns what the writes returned, in ``blocks`` order.
    """
    from distributed import as_completed

    threads = sum(client.nthreads().values()) or 1
    pending = iter(enumerate(zip(blocks, places, strict=True)))
    futures, where, results = as_completed(), {}, [None] * len(blocks)

    def submit(count: int) -> None:
        for i, (block, place) in itertools.islice(pending, count):
            future = client.compute(block)
            where[future.key] = (i, place)
            futures.add(future)

    submit(BLOCKS_IN_FLIGHT * threads)
    for future in futures:
        i, place = where.pop(future.key)
        results[i] = write(future.result(), place)
        future.release()
        submit(1)
    return results


def write_text(group: Any, name: str, array: Any, reserve: Reserve | None = None) -> None:
    """Write a dask array of strings (``object``, numpy's ``StringDType`` as zarr reads text, ``<U``) as
    ``group[name]``, computed whole and encoded by anndata ("string-array": HDF5 and Zarr store text in
    types of their own that a block-wise store into a numpy-typed target would get wrong).
    """
    if reserve is not None:
        reserve(int(array.nbytes))
    values = np.asarray(array.compute(scheduler=_scheduler_for(group)))
    write_elem(group, name, values)
    bar = progress.current()
    if bar is not None:
        bar.advance(progress.blocks_of(array))


class _Counted:
    """A store target that counts each block dask writes into it on the job's progress bar."""

    def __init__(self, target: Any, bar: progress.JobProgress):
        self._target, self._bar = target, bar
        self.shape, self.dtype = target.shape, target.dtype

    def __setitem__(self, key: Any, value: Any) -> None:
        self._target[key] = value
        self._bar.advance()


class _SparseRegions:
    """Where each block of a sparse array goes: its precomputed ranges of ``data``/``indices``/``indptr``.

    dask's ``store`` hands chunks it does not recognize as arrays to ``np.asanyarray`` (scipy matrices
    are not array-likes to dask), so blocks are written by tasks of our own, one per block.
    """

    def __init__(self, data: Any, indices: Any, indptr: Any, axis: int, lock: Any, on_cluster: bool = False):
        self.data, self.indices, self.indptr = data, indices, indptr
        self.axis = axis
        self.lock = lock  # region boundaries need not fall on storage chunks: writes take turns
        # taken along into dask's worker threads; a cluster's workers show distributed's bar instead
        self.bar = None if on_cluster else progress.current()

    def write(self, block: Any, major_start: int, offset: int) -> int:
        block = block.tocsc() if self.axis == 1 else block.tocsr()
        stop = offset + block.nnz
        with self.lock:
            if block.nnz:
                self.data[offset:stop] = block.data
                self.indices[offset:stop] = block.indices
            n_major = block.shape[self.axis]
            ends = block.indptr[1:].astype(np.int64) + offset
            self.indptr[major_start + 1: major_start + n_major + 1] = ends.astype(self.indptr.dtype)
        if self.bar is not None:
            self.bar.advance()
        return block.nnz


def write_sparse(group: Any, name: str, array: Any, reserve: Reserve | None = None, cluster: bool = True) -> None:
    """Write a dask array of scipy CSR/CSC chunks as ``group[name]`` (encoding "csr_matrix"/"csc_matrix")."""
    import dask

    fmt = sparse_format(array)
    axis = 1 if fmt == "csc" else 0
    # whole rows (CSR) or whole columns (CSC) per block: each block owns one contiguous region
    array = array.rechunk({1 - axis: -1})
    client = current_client(array) if cluster else None
    if client is None:
        blocks = _own_graphs(array)
        if blocks is not None:
            _append_sparse(group, name, array, blocks, fmt, reserve)
            return
    on_cluster = client is not None and storage.of_group(group).workers_write
    scheduler = client if client is not None else _scheduler_for(group)
    blocks = getattr(array, "stored_blocks", None)  # a selection of whole stored rows: counted from its pointers
    counts = blocks.nnz() if blocks is not None else None
    if counts is None or counts.size != len(array.chunks[axis]):
        counts = array.map_blocks(_block_nnz, dtype=np.int64, chunks=tuple((1,) * len(c) for c in array.chunks),
                                  meta=np.empty((0, 0), dtype=np.int64)).compute(scheduler=scheduler).reshape(-1)
    bounds = np.concatenate([[0], np.cumsum(array.chunks[axis])])
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    nnz = int(offsets[-1])
    index_dtype = np.int64 if max(nnz, *array.shape) > np.iinfo(np.int32).max else np.int32
    if reserve is not None:
        index_size = np.dtype(index_dtype).itemsize
        reserve(nnz * (array.dtype.itemsize + index_size) + (array.shape[axis] + 1) * index_size)
    element = _sparse_group(group, name, fmt, array.shape)
    chunk = max(1, min(nnz, SPARSE_CHUNK))
    data = create_array(element, "data", (nnz,), array.dtype, (chunk,))
    indices = create_array(element, "indices", (nnz,), index_dtype, (chunk,))
    indptr = create_array(element, "indptr", (array.shape[axis] + 1,), index_dtype,
                           (min(array.shape[axis] + 1, 2**20),))
    indptr[0:1] = np.zeros(1, dtype=index_dtype)
    if on_cluster:
        from distributed import Lock

        # regions share storage chunks at their ends: the workers take turns (a lock of the scheduler's)
        lock = Lock(f"shadows-write-{uuid.uuid4().hex}")
    else:
        lock = threading.Lock()
    regions = _SparseRegions(data, indices, indptr, axis, lock, on_cluster=on_cluster)
    blocks = array.to_delayed().reshape(-1)
    writes = [dask.delayed(regions.write)(block, int(start), int(offset))
              for block, start, offset in zip(blocks, bounds[:-1], offsets[:-1], strict=True)]
    if on_cluster:
        total = dask.delayed(sum)(writes)
        written = int(compute_on(client, total, show_progress=progress.current() is not None))
    elif client is not None:  # HDF5: the blocks are computed on the cluster and written here
        places = list(zip(bounds[:-1].tolist(), offsets[:-1].tolist(), strict=True))
        written = sum(stream_blocks(client, blocks, places, lambda block, at: regions.write(block, *at)))
    else:  # blocks that share tasks (a reduction over the whole array...): computed in one graph
        written = int(np.sum(dask.compute(*writes, scheduler=scheduler)))
    if written != nnz:
        raise ShadowsError(f"{name}: the array's blocks held {written} non-zeros when written but {nnz} when "
                           "counted: its graph does not compute the same values twice")


def _sparse_group(group: Any, name: str, fmt: str, shape: tuple[int, ...]) -> Any:
    """The group of a sparse element, with anndata's encoding attributes."""
    element = group.create_group(name)
    _set_attrs(element, {"encoding-type": f"{fmt}_matrix", "encoding-version": "0.1.0", "shape": list(shape)})
    return element


def _own_graphs(array: Any) -> list[tuple[dict, Any]] | None:
    """Each block of ``array`` with the tasks it alone needs (``(graph, key)``), or ``None`` where two
    blocks share a task (a rechunk across blocks, a reduction over the whole array): computed apart, the
    shared task would be computed for each.
    """
    import dask
    from dask.core import flatten, get_dependencies

    (array,) = dask.optimize(array)
    graph = dict(array.__dask_graph__())
    owner: dict[Any, int] = {}
    blocks = []
    for i, key in enumerate(flatten(array.__dask_keys__())):
        own, stack = {}, [key]
        while stack:
            task = stack.pop()
            if task in own:
                continue
            if owner.setdefault(task, i) != i:
                return None
            own[task] = graph[task]
            stack.extend(get_dependencies(graph, task))
        blocks.append((own, key))
    return blocks


def _append_sparse(group: Any, name: str, array: Any, blocks: list[tuple[dict, Any]], fmt: str,
                   reserve: Reserve | None) -> None:
    """Write a dask array of sparse chunks computed in this process, whose ``blocks`` share no task
    (:func:`_own_graphs`): one pass, the blocks computed by a few threads at a time, each block's graph
    apart, and appended in order (:class:`_SparseAppender`).

    Counting each block's non-zeros before writing computes every block twice (an export of a view over
    1,000 sources read each source twice); dask's scheduler, given the whole graph, computes blocks as
    fast as it can and in an order of its own, and blocks done before their turn wait in memory.
    """
    import os
    from concurrent.futures import ThreadPoolExecutor

    from dask.local import get_sync

    axis = 1 if fmt == "csc" else 0
    element = _sparse_group(group, name, fmt, array.shape)
    # the number of non-zeros is known only at the end: indexes are 64-bit where it could exceed 32 bits
    bound = int(np.prod(array.shape, dtype=np.float64))
    index_dtype = np.dtype(np.int64 if bound > np.iinfo(np.int32).max else np.int32)
    if reserve is not None:
        reserve((array.shape[axis] + 1) * index_dtype.itemsize)
    appender = _SparseAppender(element, array.dtype, index_dtype, array.shape[axis], axis, reserve)
    threads = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(threads) as pool:
        computing = iter(pool.submit(get_sync, graph, key) for graph, key in blocks)
        ahead = list(itertools.islice(computing, 2 * threads))
        while ahead:
            appender.write(ahead.pop(0).result())
            ahead.extend(itertools.islice(computing, 1))
    appender.close()


class _Appended:
    """An array written front to back in whole storage chunks: values are buffered until a chunk is full.

    Small blocks written where they fall would rewrite the storage chunk they share again and again (a
    Zarr chunk is read, decoded, changed and encoded anew at each write). ``size`` is the final length
    when known (``indptr``); otherwise the array grows as chunks fill (``data``, ``indices``), and an
    array that never fills one chunk is created at its length at the end (no chunk larger than the data).
    """

    def __init__(self, group: Any, name: str, dtype: np.dtype, size: int | None):
        self.group, self.name, self.dtype, self.size = group, name, np.dtype(dtype), size
        self.target: Any = None
        self.written = 0
        self.pending: list[np.ndarray] = []
        self.pending_size = 0

    def append(self, values: np.ndarray) -> None:
        if len(values):
            self.pending.append(np.asarray(values, dtype=self.dtype))
            self.pending_size += len(values)
        if self.pending_size >= SPARSE_CHUNK:
            self._flush(whole_chunks=True)

    def close(self) -> None:
        self._flush(whole_chunks=False)
        if self.target is None:  # nothing was appended
            self._create(self.size or 0)

    def _create(self, length: int) -> None:
        chunk = max(1, min(SPARSE_CHUNK, length if self.size is None else self.size))
        if self.size is not None:
            self.target = create_array(self.group, self.name, (self.size,), self.dtype, (chunk,))
        else:
            self.target = create_growing_array(self.group, self.name, self.dtype, chunk)

    def _flush(self, whole_chunks: bool) -> None:
        if not self.pending_size:
            return
        values = np.concatenate(self.pending) if len(self.pending) > 1 else self.pending[0]
        cut = (len(values) // SPARSE_CHUNK) * SPARSE_CHUNK if whole_chunks else len(values)
        if self.target is None:
            self._create(cut if self.size is None and not whole_chunks else SPARSE_CHUNK)
        stop = self.written + cut
        if self.size is None and stop > self.target.shape[0]:
            self.target.resize((stop,))
        self.target[self.written:stop] = values[:cut]
        self.written = stop
        rest = values[cut:]
        self.pending, self.pending_size = ([rest] if len(rest) else []), len(rest)


class _SparseAppender:
    """Appends a sparse array's blocks, in order, to its ``data``, ``indices`` and ``indptr``."""

    def __init__(self, element: Any, dtype: np.dtype, index_dtype: np.dtype, n_major: int, axis: int,
                 reserve: Reserve | None):
        self.data = _Appended(element, "data", dtype, None)
        self.indices = _Appended(element, "indices", index_dtype, None)
        self.indptr = _Appended(element, "indptr", index_dtype, n_major + 1)
        self.indptr.append(np.zeros(1, dtype=index_dtype))
        self.axis, self.reserve, self.index_size = axis, reserve, index_dtype.itemsize
        self.nnz = 0
        self.bar = progress.current()

    def write(self, block: Any) -> None:
        """Append the next block."""
        block = block.tocsc() if self.axis == 1 else block.tocsr()
        if self.reserve is not None and block.nnz:
            self.reserve(block.nnz * (block.data.itemsize + self.index_size))
        self.data.append(block.data)
        self.indices.append(block.indices)
        self.indptr.append(block.indptr[1:].astype(np.int64) + self.nnz)
        self.nnz += block.nnz
        if self.bar is not None:
            self.bar.advance()

    def close(self) -> None:
        """Write what the arrays hold back (their last, partial chunks)."""
        for part in (self.data, self.indices, self.indptr):
            part.close()


def _block_nnz(block: Any) -> np.ndarray:
    return np.array([[block.nnz]], dtype=np.int64)


def write_streamed(group: Any, name: str, array: Any, reserve: Reserve | None = None, cluster: bool = True) -> None:
    """Write a dask array (dense or sparse chunks) as ``group[name]``.

    ``reserve``, when given, is called with the number of bytes the element will take before anything
    of it is written (HDF5 targets reserve disk space with it: see :mod:`shadows.writing.commit`).
    ``cluster=False`` computes in this process even under a ``distributed.Client``: for an HDF5 file
    this process holds open for writing, which no other process may open, not even to read the blocks.
    """
    if sparse_format(array):
        write_sparse(group, name, array, reserve, cluster)
    else:
        write_dense(group, name, array, reserve, cluster)
