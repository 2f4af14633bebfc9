"""Compressed sparse matrices (``csr_matrix``/``csc_matrix``): dask arrays with scipy chunks.

Each task reads a contiguous run of major-axis rows (CSR rows, CSC columns): the run's slice of
``indptr``, then the matching byte range of ``data`` and ``indices``. Runs hold about
``TARGET_NNZ_PER_TASK`` non-zeros, planned from the arrays' lengths (metadata), so building the graph
reads nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
import scipy.sparse as sp

from shadows.backends import nodes
from shadows.backends.abc import StoredArray
from shadows.backends.ranges import concatenated_ranges
from shadows.elements.base import ElementSpec, array_part, encoding_of, translating
from shadows.elements.registry import register, register_sniffer
from shadows.elements.sparse_chunk import CHUNK_TYPES, to_plain
from shadows.errors import MalformedElementError, element_message
from shadows.indexing.keys import AxisIndex, as_positions, as_slice_or_array, is_full, sorted_unique
from shadows.indexing.selection import Selection, axis_positions

#: Non-zeros one task reads (data + indices: about 16 MiB for float32/int32; measured: 4M held the
#: gene-column peak of a Zarr file above 150 MiB on 2 threads, 2M keeps it under at the same speed).
TARGET_NNZ_PER_TASK = 2_000_000
#: Stored chunks of ``data`` a task of a Zarr matrix spans at least. Two neighbouring tasks both decode the
#: chunk their boundary falls in (rows do not end at chunk edges), so a task of ``n`` chunks decodes
#: ``n + 1``: with the 1M-value chunks of the 4.8M-cell benchmark store, tasks of 2M non-zeros decoded
#: half as much again as the store holds and the full pass took 1.3-1.45x zarr's own decode.
ZARR_CHUNKS_PER_TASK = 8
#: Non-zeros between two selected rows that one read spans rather than issuing two reads (16 KiB of
#: float32 data + int32 indices: about what one more read request costs).
COALESCE_GAP_NNZ = 2_048
#: Pointers read as one span however few of them are needed (32 KiB of int64): a read of ranges costs more
#: in its setup than this in bytes (one or two rows from each of hundreds of small files: a minibatch).
SPAN_POINTERS = 4_096
_PARTS = ("data", "indices", "indptr")


@register("group", "csr_matrix", "0.1.0")
@register("group", "csc_matrix", "0.1.0")
@dataclass(frozen=True)
class SparseSpec(ElementSpec):
    """A CSR or CSC matrix stored as ``data``, ``indices`` and ``indptr`` arrays."""

    kind = "sparse"
    role = "array"
    is_sparse = True

    @classmethod
    def from_node(cls, ref, node, path, attrs):
        if "encoding-type" in attrs:
            fmt = str(attrs["encoding-type"])[:3]
            shape = attrs.get("shape")
            encoding = encoding_of(attrs)
        else:  # anndata < 0.7 wrote h5sparse groups
            fmt = str(attrs["h5sparse_format"])
            shape = attrs.get("h5sparse_shape")
            encoding = f"{fmt}_matrix (h5sparse, anndata < 0.7)"
        for part in _PARTS:
            if not nodes.has_child(node, part):
                raise MalformedElementError(
                    element_message(ref.path, f"{path}/{part}", f"missing: a {fmt.upper()} matrix needs "
                                    "'data', 'indices' and 'indptr'")
                )
        shape = _shape(ref, path, shape)
        data, indices, indptr = (array_part(ref, node, path, part) for part in _PARTS)
        major = shape[0] if fmt == "csr" else shape[1]
        if indptr.shape != (major + 1,):
            raise MalformedElementError(
                element_message(ref.path, f"{path}/indptr", f"has {indptr.shape[0]} entries, but a {shape} "
                                f"{fmt.upper()} matrix needs {major + 1}")
            )
        for part, array in (("indices", indices), ("indptr", indptr)):
            if nodes.numpy_dtype(array).kind not in "iu":
                raise MalformedElementError(element_message(
                    ref.path, f"{path}/{part}", f"stored as {nodes.numpy_dtype(array)}; positions must be integers"))
        if nodes.numpy_dtype(data).kind not in "biufc":
            what = f"stored as {nodes.numpy_dtype(data)}; a sparse matrix holds numbers or booleans"
            raise MalformedElementError(element_message(ref.path, f"{path}/data", what))
        if data.shape != indices.shape:
            raise MalformedElementError(
                element_message(ref.path, f"{path}/indices", f"has {indices.shape[0]} entries but data has "
                                f"{data.shape[0]}")
            )
        return cls(ref, path, encoding, shape, nodes.numpy_dtype(data),
                   extra={"format": fmt, "nnz": int(data.shape[0])})

    @property
    def format(self) -> str:
        """``"csr"`` or ``"csc"``."""
        return self.extra["format"]

    @property
    def major_axis(self) -> int:
        """0 for CSR (runs of rows), 1 for CSC (runs of columns)."""
        return 0 if self.format == "csr" else 1

    def meta(self):
        """An empty chunk of the type the graph's tasks return."""
        return CHUNK_TYPES[self.format]((0, 0), dtype=self.dtype)

    def graph(self):
        """A dask array with one task per run of about ``TARGET_NNZ_PER_TASK`` non-zeros; scipy chunks."""
        return self.select_graph(())

    def materialize(self):
        """Read the whole matrix as the plain scipy matrix anndata returns."""
        return to_plain(read_major_run(self, 0, self.shape[self.major_axis]))

    def select_graph(self, selection: Selection):
        """A dask array of ``matrix[selection]`` (``()``: all of it) whose tasks read only the selected
        major positions.

        Selected major positions (CSR rows, CSC columns) are read in storage order, grouped into tasks
        of about ``TARGET_NNZ_PER_TASK`` non-zeros; inside a task the byte ranges of nearby positions
        are coalesced into one read. The minor selection is applied in each task. Unsorted or repeated
        keys are read once, then reordered by dask.
        """
        import dask.array as da
        from dask.base import tokenize
        from dask.highlevelgraph import HighLevelGraph

        groups, order, minor_key, n_minor_out = self._plan(selection)
        name = f"shadows-{self.format}-{self.name}-" + tokenize(self.ref, self.path, groups, minor_key)
        tasks = {}
        for i, group in enumerate(groups):
            key = (name, i, 0) if self.major_axis == 0 else (name, 0, i)
            tasks[key] = self._task(group, minor_key)
        blocks = tuple(len(g) for g in groups) or (0,)
        if not groups:
            tasks[(name, 0, 0)] = (read_major_positions, self, np.empty(0, dtype=np.int64), minor_key)
        chunks = (blocks, (n_minor_out,)) if self.major_axis == 0 else ((n_minor_out,), blocks)
        graph = da.Array(HighLevelGraph.from_collections(name, tasks, dependencies=()), name, chunks=chunks,
                         meta=self.meta())
        if minor_key is None and groups:  # whole rows (columns): each block's non-zeros are in indptr
            graph.stored_blocks = StoredBlocks(self, groups)
        if order is not None:
            graph = graph[order] if self.major_axis == 0 else graph[:, order]
        return graph

    def _plan(self, selection: Selection) -> tuple[list[range | np.ndarray], np.ndarray | None, Any, int]:
        """How ``matrix[selection]`` is read: the task groups of major positions (in storage order),
        the reordering that restores the key's order (or ``None``), the minor key applied in each task
        (``None``: all) and how many minor positions it keeps.
        """
        rows, cols = axis_positions(selection, 0, self.shape[0]), axis_positions(selection, 1, self.shape[1])
        major, minor = (rows, cols) if self.major_axis == 0 else (cols, rows)
        n_major, n_minor = self.shape[self.major_axis], self.shape[1 - self.major_axis]
        minor_key = None if is_full(minor, n_minor) else as_slice_or_array(minor)
        to_read, order = sorted_unique(major)
        groups = self._task_groups(to_read, n_major, self._task_nnz(whole=minor_key is None))
        return groups, order, minor_key, n_minor if minor_key is None else len(minor)

    def _task(self, group: range | np.ndarray, minor_key: Any) -> tuple:
        """The task reading one group of major positions (increasing)."""
        if isinstance(group, range):
            return (read_major_run, self, group.start, group.stop, minor_key)
        return (read_major_positions, self, group, minor_key)

    def read_selection(self, selection: Selection) -> Any:
        """``matrix[selection]`` as the plain scipy matrix anndata gives (``()``: :meth:`materialize`).

        Read here, without a dask graph, where :meth:`_read_here` can; else through :meth:`select_graph`.
        """
        if not selection:
            return self.materialize()
        value = self._read_here(selection)
        if value is not None:
            return to_plain(value)
        return super().read_selection(selection)

    def _read_here(self, selection: Selection) -> Any:
        """``matrix[selection]`` read here, without a dask graph, or ``None`` (use :meth:`select_graph`).

        Read here: what one task would read (a minibatch, a few cells: saves the scheduler's round trip
        through a worker thread), and whole major positions when no cluster computes (of an HDF5 matrix,
        or a Zarr one without shards, read from its shard files or decoded by zarrs): they are read
        straight into the result's buffers, so memory holds the selection once, not its blocks and their
        concatenation (1 % of the rows of the 1M-cell benchmark file: 250 MiB for 61 MiB selected through
        the graph; of the 4.8M-cell Zarr store: 1,078 MiB for 293 MiB).
        """
        from shadows.cluster import current_client

        groups, order, minor_key, _ = self._plan(selection)
        # not where reading many ranges at once holds more than the result (zarr's pipeline decodes every
        # inner chunk of the shards a selection of positions touches at once: Capabilities.bounded_ranges)
        whole_rows_here = (len(groups) > 1 and minor_key is None
                           and self.stored("data").capabilities.bounded_ranges
                           and current_client(reads=[self.ref.path]) is None)
        if whole_rows_here:
            chunk = _read_whole_selection(self, groups)
        elif len(groups) == 1:
            function, *args = self._task(groups[0], minor_key)
            chunk = function(*args)
        else:
            return None
        if order is not None:
            chunk = chunk[order] if self.major_axis == 0 else chunk[:, order]
        return chunk

    def block_nnz(self, groups: list[range | np.ndarray]) -> np.ndarray:
        """The non-zeros of the whole major positions of each of ``groups`` (increasing, in order), read
        from the stored pointers: what each block of :meth:`select_graph` holds when it keeps every minor
        position (its ``stored_blocks``, :class:`StoredBlocks`, asks this).
        """
        if all(isinstance(g, range) for g in groups):
            bounds = np.array([g.start for g in groups] + [groups[-1].stop], dtype=np.int64)
            # the pointers at the bounds: indptr[b] is where position b starts (the last: where b - 1 ends)
            lo, hi = _pointers(self, np.append(bounds[:-1], bounds[-1] - 1))
            return np.diff(np.append(lo[:-1], hi[-1]))
        positions = np.concatenate([as_positions(g) for g in groups])
        lo, hi = _pointers(self, positions)
        firsts = np.cumsum([0] + [len(g) for g in groups[:-1]])
        return np.add.reduceat(hi - lo, firsts)

    def _task_nnz(self, whole: bool) -> int:
        """Non-zeros per task: ``TARGET_NNZ_PER_TASK``, or for ``whole`` rows (columns of a CSC) of a Zarr
        matrix ``ZARR_CHUNKS_PER_TASK`` of its stored chunks of ``data`` (a shard's inner chunks) when that
        is more. Tasks that keep a few minor positions (one gene of a CSR) stay at the target: their peak
        memory is what that workload is judged by (the 100k-cell Zarr store's gene column: 148-164 MiB with
        the larger tasks, under 150 MiB without).
        """
        data = self.stored("data").capabilities
        if not data.unit_reads or not whole:
            return TARGET_NNZ_PER_TASK
        return max(TARGET_NNZ_PER_TASK, ZARR_CHUNKS_PER_TASK * (data.decode_unit or 0))

    def _task_groups(self, to_read: AxisIndex, n_major: int, task_nnz: int) -> list[range | np.ndarray]:
        """Split increasing major positions into per-task groups of about ``task_nnz`` non-zeros."""
        per_row = max(self.extra["nnz"] / max(n_major, 1), 1e-9)
        rows_per_task = int(max(1, task_nnz // per_row))
        if isinstance(to_read, range) and to_read.step == 1:
            return [range(a, min(a + rows_per_task, to_read.stop)) for a in range(to_read.start, to_read.stop,
                                                                                  rows_per_task)]
        positions = as_positions(to_read)
        if not self.stored("data").capabilities.unit_reads:
            # By count: each task about TARGET_NNZ_PER_TASK non-zeros of selected rows, however far apart they
            # lie (a task's scattered ranges cost per range: one HDF5 read). Split by the file's row blocks,
            # a random minibatch of 256 cells of a 100k-cell file made 40 tasks.
            sections = max(1, -(-positions.size // rows_per_task))
            return [part for part in np.array_split(positions, sections) if part.size]
        # Reads decode whole chunks (Zarr): by the file's row blocks, so that the chunks a task decodes are
        # its own (by count, a task's rows spread over the whole store, and every task decoded most chunks).
        edges = np.searchsorted(positions, np.arange(rows_per_task, n_major, rows_per_task))
        return [part for part in np.split(positions, edges) if part.size]


@dataclass(frozen=True)
class StoredBlocks:
    """What a graph of whole stored rows (CSR; columns for CSC) made by :meth:`SparseSpec.select_graph`
    carries as its ``stored_blocks``: the major positions each of its blocks reads, so that a writer can
    ask how many non-zeros each holds (:meth:`nnz`) from ``indptr`` (a few pointers) instead of computing
    every block once only to count it. Any array computed from the graph has none.
    """

    spec: SparseSpec
    groups: list[range | np.ndarray]

    def nnz(self) -> np.ndarray:
        """The non-zeros of each block along the major axis (:meth:`SparseSpec.block_nnz`)."""
        return self.spec.block_nnz(self.groups)


def _shape(ref: Any, path: str, shape: Any) -> tuple[int, int]:
    """The matrix's shape attribute, checked: two non-negative integers."""
    values = list(shape) if isinstance(shape, list | tuple | np.ndarray) else None
    if values is None or len(values) != 2 or not all(isinstance(v, int | np.integer) and v >= 0 for v in values):
        what = f"its 'shape' attribute is {shape!r}; a sparse matrix needs two non-negative integers"
        raise MalformedElementError(element_message(ref.path, path, what))
    return int(values[0]), int(values[1])


def _read_indptr(spec: SparseSpec, start: int, stop: int) -> np.ndarray:
    """``indptr[start:stop + 1]``, checked so a corrupt file fails with a message rather than garbage."""
    indptr = np.asarray(spec.stored("indptr").read(slice(start, stop + 1)))
    nnz = spec.extra["nnz"]
    if indptr.size and (indptr[0] < 0 or indptr[-1] > nnz or np.any(np.diff(indptr) < 0)):
        what = (f"pointers for positions {start}:{stop} run from {indptr[0]} to {indptr[-1]}, outside "
                f"data's {nnz} entries or decreasing")
        raise MalformedElementError(element_message(spec.ref.path, f"{spec.path}/indptr", what))
    return indptr


def _check_indices(spec: SparseSpec, indices: np.ndarray, n_minor: int) -> None:
    """Raise unless every stored minor index lies in ``[0, n_minor)``: scipy would otherwise place values
    out of range in the next row, silently. One pass over the block's indices: 0.17 ms per 4M indices;
    on the per-gene sums benchmark (100k × 20k, 80M non-zeros) 0.204 s against 0.195 s without the
    check, medians of 9 runs (+4 %).
    """
    if not indices.size:
        return
    # one pass: seen as unsigned, a negative index is huge, so the maximum alone catches both ends
    unsigned = indices.view(indices.dtype.str.replace("i", "u")) if indices.dtype.kind == "i" else indices
    if int(unsigned.max()) >= n_minor:
        low, high = int(indices.min()), int(indices.max())
        axis = "columns" if spec.major_axis == 0 else "rows"
        what = f"holds positions from {low} to {high}, outside the matrix's {n_minor} {axis}"
        raise MalformedElementError(element_message(spec.ref.path, f"{spec.path}/indices", what))


def _chunk(spec: SparseSpec, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, minor_key: Any) -> Any:
    """Build the chunk (these major positions × the selected minor positions) from entries read by
    :func:`read_major_entries` (their minor indices checked there).
    """
    n_major, n_minor = indptr.size - 1, spec.shape[1 - spec.major_axis]
    if minor_key is not None:
        data, indices, indptr, n_minor = _select_minor(data, indices, indptr, minor_key, n_minor)
    if indptr.size and indptr[-1] <= np.iinfo(indices.dtype).max:
        indptr = indptr.astype(indices.dtype, copy=False)  # same index dtype: scipy keeps the buffers
    shape = (n_major, n_minor) if spec.major_axis == 0 else (n_minor, n_major)
    return CHUNK_TYPES[spec.format]((data, indices, indptr), shape=shape, copy=False)


def _select_minor(data, indices, indptr, minor_key: Any, n_minor: int):
    """Keep the entries whose minor index is selected, renumbered in selection order.

    One pass over the entries' minor indices instead of building the full matrix and fancy-indexing
    it: this is what one gene of a CSR matrix costs per row block. A few selected positions are matched
    by comparison (no temporary the size of the block but a boolean mask); more go through a lookup
    table from old to new positions.
    """
    if isinstance(minor_key, slice) and (minor_key.step or 1) == 1:
        start, stop, _ = minor_key.indices(n_minor)
        hits = np.flatnonzero((indices >= start) & (indices < stop))
        new_indices = (indices[hits] - start).astype(indices.dtype, copy=False)
        n_out = max(stop - start, 0)
    else:
        positions = np.arange(n_minor)[minor_key] if isinstance(minor_key, slice) else np.asarray(minor_key)
        n_out = positions.size
        if np.unique(positions).size != n_out:  # repeated columns: let scipy duplicate them
            matrix = sp.csr_matrix((data, indices, indptr), shape=(indptr.size - 1, n_minor))[:, positions]
            return matrix.data, matrix.indices, matrix.indptr, n_out
        lookup = np.full(n_minor, -1, dtype=np.int64)
        lookup[positions] = np.arange(n_out)
        if n_out == 0:
            keep = np.zeros(indices.shape, dtype=bool)
        elif n_out <= 8:
            keep = indices == positions[0]
            for position in positions[1:]:
                keep |= indices == position
        else:
            keep = lookup[indices] >= 0
        hits = np.flatnonzero(keep)
        new_indices = lookup[indices[hits]].astype(indices.dtype, copy=False)
    # entries kept before each row boundary = the new row pointers
    new_indptr = np.searchsorted(hits, indptr, side="left")
    new_data = data[hits]
    if not isinstance(minor_key, slice) and n_out > 1:
        matrix = sp.csr_matrix((new_data, new_indices, new_indptr), shape=(indptr.size - 1, n_out))
        matrix.sort_indices()  # a reordered selection leaves rows unsorted
        return matrix.data, matrix.indices, matrix.indptr, n_out
    return new_data, new_indices, new_indptr, n_out


@translating
def read_major_run(spec: SparseSpec, start: int, stop: int, minor_key: Any = None) -> Any:
    """Read major-axis positions ``start:stop`` of a stored CSR/CSC matrix as one scipy chunk.

    Reads ``indptr[start:stop+1]`` and the one ``data``/``indices`` range it points to.
    """
    return _chunk(spec, *_major_entries(spec, range(start, stop)), minor_key)


def _read_whole_selection(spec: SparseSpec, groups: list[range | np.ndarray]) -> Any:
    """The increasing major positions of ``groups`` (task groups, in order) as one chunk read in one go:
    a contiguous run as one range; scattered positions without reading the gaps between them, so that
    the buffers read into are the result's.
    """
    if all(isinstance(g, range) for g in groups) and all(a.stop == b.start for a, b in pairwise(groups)):
        return read_major_run(spec, groups[0].start, groups[-1].stop)
    positions = np.concatenate([as_positions(g) for g in groups])
    return read_major_positions(spec, positions, merge_gaps=False)


def _coalesce(lo: np.ndarray, hi: np.ndarray, data: StoredArray, merge_gaps: bool = True
              ) -> tuple[np.ndarray, np.ndarray]:
    """Group selected ranges ``[lo, hi)`` (increasing) into reads: ``(first, end)`` indices of each group.

    Touching ranges always merge. Where each range of a read costs a call's worth of work (HDF5 read
    through its selections: ``costly_ranges``) and with ``merge_gaps``, ranges also merge across gaps of up
    to ``COALESCE_GAP_NNZ``: one longer range costs less than one more there. Elsewhere a gap would only
    cost memory: Zarr decodes each chunk once whatever the gaps, a ``pread`` per range reads nothing more.
    """
    gap_limit = COALESCE_GAP_NNZ if merge_gaps and data.capabilities.costly_ranges else 0
    breaks = np.flatnonzero(lo[1:] - hi[:-1] > gap_limit) + 1
    return np.concatenate([[0], breaks]).astype(np.int64), np.concatenate([breaks, [lo.size]]).astype(np.int64)


@translating
def read_major_positions(spec: SparseSpec, positions: np.ndarray, minor_key: Any = None,
                         merge_gaps: bool = True) -> Any:
    """Read the given increasing major-axis positions as one scipy chunk, reading only their ranges
    (:func:`read_major_entries`).
    """
    return _chunk(spec, *_major_entries(spec, positions, merge_gaps), minor_key)


def _major_entries(spec: SparseSpec, positions: AxisIndex, merge_gaps: bool = True
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The stored entries of the given increasing major-axis positions: ``(data, indices, indptr)``, the
    minor indices checked in range, not yet a scipy matrix (a caller that maps the minor positions on, an
    atlas placing a source's genes at its joined columns, does it in one pass over these).

    A run of positions is one range. Of other positions, the pointers of the span
    ``positions[0]..positions[-1]`` are read in one go (small); the data and indices ranges of the selected
    positions are merged when close (see :func:`_coalesce`; for HDF5 only when ``merge_gaps``), so nearby
    rows cost one read while far-apart rows never pull in what lies between them. Each read lands directly
    in one preallocated buffer.
    """
    if isinstance(positions, range) and positions.step == 1:
        indptr = _read_indptr(spec, positions.start, positions.stop)
        lo, hi = (int(indptr[0]), int(indptr[-1])) if indptr.size else (0, 0)
        indices = spec.stored("indices").read(slice(lo, hi))
        _check_indices(spec, indices, spec.shape[1 - spec.major_axis])
        return spec.stored("data").read(slice(lo, hi)), indices, indptr - lo
    positions = as_positions(positions)
    if positions.size == 0:
        return np.empty(0, dtype=spec.dtype), np.empty(0, dtype=np.int32), np.zeros(1, dtype=np.int64)
    lo, hi = _pointers(spec, positions)
    data_array, indices_array = spec.stored("data"), spec.stored("indices")
    starts, ends = _coalesce(lo, hi, data_array, merge_gaps)
    read_lo, read_hi = lo[starts], hi[ends - 1]
    read_len = read_hi - read_lo
    offsets = np.concatenate([[0], np.cumsum(read_len)])
    data = np.empty(int(offsets[-1]), dtype=data_array.dtype)
    indices = np.empty(int(offsets[-1]), dtype=indices_array.dtype)
    data_array.read_ranges(read_lo, read_hi, data)
    indices_array.read_ranges(read_lo, read_hi, indices)
    lengths = hi - lo
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    if offsets[-1] != indptr[-1]:  # gaps were read too: keep only the selected rows' entries
        group = np.repeat(np.arange(starts.size), ends - starts)
        row_start = offsets[:-1][group] + (lo - read_lo[group])
        take = concatenated_ranges(row_start, lengths)
        data, indices = data[take], indices[take]
    _check_indices(spec, indices, spec.shape[1 - spec.major_axis])
    return data, indices, indptr


#: :func:`_major_entries` for callers outside a read already translating its errors (:func:`read_major_run`
#: and :func:`read_major_positions` are, and call it undecorated: one translation and one count-in per read).
read_major_entries = translating(_major_entries)


def _pointers(spec: SparseSpec, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where the entries of each of the increasing major ``positions`` start and end in data/indices.

    Positions close together read the pointers of their whole span (one read); scattered ones (random
    cells of a large file) read only the pointers they need, in one read of ranges, rather than a span
    as long as the file, unless reads cost per chunk touched anyway (``unit_reads``: Zarr).
    """
    first, last = int(positions[0]), int(positions[-1])
    indptr = spec.stored("indptr")
    if last - first + 1 <= max(8 * positions.size, SPAN_POINTERS) or indptr.capabilities.unit_reads:
        span = _read_indptr(spec, first, last + 1)
        return span[positions - first].astype(np.int64), span[positions - first + 1].astype(np.int64)
    wanted = np.union1d(positions, positions + 1)  # each pointer once: neighbouring rows share one
    runs = np.flatnonzero(np.diff(wanted) != 1) + 1
    run_starts = wanted[np.concatenate([[0], runs])]
    run_stops = wanted[np.concatenate([runs - 1, [wanted.size - 1]])] + 1
    values = np.empty(wanted.size, dtype=indptr.dtype)
    indptr.read_ranges(run_starts, run_stops, values)
    lo = values[np.searchsorted(wanted, positions)].astype(np.int64)
    hi = values[np.searchsorted(wanted, positions + 1)].astype(np.int64)
    nnz = spec.extra["nnz"]
    if np.any(lo < 0) or np.any(hi > nnz) or np.any(hi < lo):
        what = (f"pointers of the selected positions {first}..{last} fall outside data's {nnz} entries or "
                "decrease")
        raise MalformedElementError(element_message(spec.ref.path, f"{spec.path}/indptr", what))
    return lo, hi


def _is_h5sparse(node: Any, attrs: dict[str, Any]) -> bool:
    return nodes.is_group(node) and attrs.get("h5sparse_format") in ("csr", "csc")


register_sniffer(_is_h5sparse)(SparseSpec)

