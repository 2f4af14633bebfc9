"""Compressed sparse matrices (``csr_matrix``/``csc_matrix``): dask arrays with scipy chunks.

Each task reads a contiguous run of major-axis rows (CSR rows, CSC columns): the run's slice of
``indptr``, then the matching byte range of ``data`` and ``indices``. Runs hold about
``TARGET_NNZ_PER_TASK`` non-zeros, planned from the arrays' lengths (metadata), so building the graph
reads nothing.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from shadows.backends import nodes
from shadows.elements.base import ElementSpec, encoding_of
from shadows.elements.registry import register, register_sniffer
from shadows.elements.sparse_chunk import CHUNK_TYPES, to_plain
from shadows.errors import MalformedElementError, element_message
from shadows.indexing.keys import AxisIndex, as_positions, as_slice_or_array, is_full, sorted_unique

#: Non-zeros one task reads (data + indices: about 32 MiB for float32/int32).
TARGET_NNZ_PER_TASK = 4_000_000
#: Non-zeros between two selected rows that one read spans rather than issuing two reads (16 KiB of
#: float32 data + int32 indices: about what one more read request costs).
COALESCE_GAP_NNZ = 2_048
_PARTS = ("data", "indices", "indptr")


@register("group", "csr_matrix", "0.1.0")
@register("group", "csc_matrix", "0.1.0")
@dataclass(frozen=True)
class SparseSpec(ElementSpec):
    """A CSR or CSC matrix stored as ``data``, ``indices`` and ``indptr`` arrays."""

    kind = "sparse"

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
        if shape is None or len(shape) != 2:
            raise MalformedElementError(element_message(ref.path, path, "sparse matrix without a 2-d "
                                                        "'shape' attribute"))
        shape = (int(shape[0]), int(shape[1]))
        data, indices, indptr = node["data"], node["indices"], node["indptr"]
        major = shape[0] if fmt == "csr" else shape[1]
        if indptr.shape != (major + 1,):
            raise MalformedElementError(
                element_message(ref.path, f"{path}/indptr", f"has {indptr.shape[0]} entries, but a {shape} "
                                f"{fmt.upper()} matrix needs {major + 1}")
            )
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

    def major_blocks(self) -> tuple[int, ...]:
        """Sizes of the major-axis runs the graph's tasks read."""
        n_major = self.shape[self.major_axis]
        if n_major == 0:
            return (0,)
        per_row = max(self.extra["nnz"] / n_major, 1e-9)
        run = int(max(1, min(n_major, TARGET_NNZ_PER_TASK // per_row)))
        full, rest = divmod(n_major, run)
        return (run,) * full + ((rest,) if rest else ())

    def meta(self):
        """An empty chunk of the type the graph's tasks return."""
        return CHUNK_TYPES[self.format]((0, 0), dtype=self.dtype)

    def graph(self):
        """A dask array with one task per major-axis run; chunks are scipy matrices."""
        import dask.array as da
        from dask.base import tokenize
        from dask.highlevelgraph import HighLevelGraph

        blocks = self.major_blocks()
        name = f"shadows-{self.format}-{self.name}-" + tokenize(self.ref, self.path, self.shape, blocks)
        starts = np.concatenate([[0], np.cumsum(blocks)]).tolist()
        tasks = {}
        for i, (start, stop) in enumerate(itertools.pairwise(starts)):
            key = (name, i, 0) if self.major_axis == 0 else (name, 0, i)
            tasks[key] = (read_major_run, self, start, stop)
        minor = self.shape[1 - self.major_axis]
        chunks = (blocks, (minor,)) if self.major_axis == 0 else ((minor,), blocks)
        hlg = HighLevelGraph.from_collections(name, tasks, dependencies=())
        return da.Array(hlg, name, chunks=chunks, meta=self.meta())

    def materialize(self):
        """Read the whole matrix as the plain scipy matrix anndata returns."""
        return to_plain(read_major_run(self, 0, self.shape[self.major_axis]))

    def select_graph(self, rows: AxisIndex, cols: AxisIndex):
        """A dask array of ``matrix[rows][:, cols]`` whose tasks read only the selected major positions.

        Selected major positions (CSR rows, CSC columns) are read in storage order, grouped into tasks
        of about ``TARGET_NNZ_PER_TASK`` non-zeros; inside a task the byte ranges of nearby positions
        are coalesced into one read. The minor selection is applied in each task. Unsorted or repeated
        keys are read once, then reordered by dask.
        """
        import dask.array as da
        from dask.base import tokenize
        from dask.highlevelgraph import HighLevelGraph

        major, minor = (rows, cols) if self.major_axis == 0 else (cols, rows)
        n_major, n_minor = self.shape[self.major_axis], self.shape[1 - self.major_axis]
        minor_key = None if is_full(minor, n_minor) else as_slice_or_array(minor)
        n_minor_out = n_minor if minor_key is None else len(minor)
        to_read, order = sorted_unique(major)
        groups = self._task_groups(to_read, n_major)
        name = f"shadows-{self.format}-select-{self.name}-" + tokenize(self.ref, self.path, groups, minor_key)
        tasks = {}
        for i, group in enumerate(groups):
            key = (name, i, 0) if self.major_axis == 0 else (name, 0, i)
            if isinstance(group, range):
                tasks[key] = (read_major_run, self, group.start, group.stop, minor_key)
            else:
                tasks[key] = (read_major_positions, self, group, minor_key)
        blocks = tuple(len(g) for g in groups) or (0,)
        if not groups:
            tasks[(name, 0, 0)] = (read_major_positions, self, np.empty(0, dtype=np.int64), minor_key)
        chunks = (blocks, (n_minor_out,)) if self.major_axis == 0 else ((n_minor_out,), blocks)
        graph = da.Array(HighLevelGraph.from_collections(name, tasks, dependencies=()), name, chunks=chunks,
                         meta=self.meta())
        if order is not None:
            graph = graph[order] if self.major_axis == 0 else graph[:, order]
        return graph

    def _task_groups(self, to_read: AxisIndex, n_major: int) -> list[range | np.ndarray]:
        """Split increasing major positions into per-task groups of about the target non-zeros."""
        per_row = max(self.extra["nnz"] / max(n_major, 1), 1e-9)
        rows_per_task = int(max(1, TARGET_NNZ_PER_TASK // per_row))
        if isinstance(to_read, range) and to_read.step == 1:
            return [range(a, min(a + rows_per_task, to_read.stop)) for a in range(to_read.start, to_read.stop,
                                                                                  rows_per_task)]
        positions = as_positions(to_read)
        return [positions[a : a + rows_per_task] for a in range(0, positions.size, rows_per_task)]


def _read_indptr(spec: SparseSpec, start: int, stop: int) -> np.ndarray:
    """``indptr[start:stop + 1]``, checked so a corrupt file fails with a message rather than garbage."""
    indptr = np.asarray(spec.node("indptr")[start : stop + 1])
    nnz = spec.extra["nnz"]
    if indptr.size and (indptr[0] < 0 or indptr[-1] > nnz or np.any(np.diff(indptr) < 0)):
        what = (f"pointers for positions {start}:{stop} run from {indptr[0]} to {indptr[-1]}, outside "
                f"data's {nnz} entries or decreasing")
        raise MalformedElementError(element_message(spec.ref.path, f"{spec.path}/indptr", what))
    return indptr


def _chunk(spec: SparseSpec, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, minor_key: Any) -> Any:
    """Build the chunk (major positions × all minor) and apply the minor selection."""
    n_major, minor = indptr.size - 1, spec.shape[1 - spec.major_axis]
    if indptr.size and indptr[-1] <= np.iinfo(indices.dtype).max:
        indptr = indptr.astype(indices.dtype, copy=False)  # same index dtype: scipy keeps the buffers
    shape = (n_major, minor) if spec.major_axis == 0 else (minor, n_major)
    plain = (sp.csr_matrix if spec.format == "csr" else sp.csc_matrix)((data, indices, indptr), shape=shape)
    if minor_key is not None:
        plain = plain[:, minor_key] if spec.major_axis == 0 else plain[minor_key, :]
        plain = plain.asformat(spec.format)
    cls = CHUNK_TYPES[spec.format]
    return cls((plain.data, plain.indices, plain.indptr), shape=plain.shape, copy=False)


def read_major_run(spec: SparseSpec, start: int, stop: int, minor_key: Any = None) -> Any:
    """Read major-axis positions ``start:stop`` of a stored CSR/CSC matrix as one scipy chunk.

    Reads ``indptr[start:stop+1]`` and the one ``data``/``indices`` range it points to.
    """
    indptr = _read_indptr(spec, start, stop)
    lo, hi = (int(indptr[0]), int(indptr[-1])) if indptr.size else (0, 0)
    data = nodes.read(spec.node("data"), slice(lo, hi))
    indices = nodes.read(spec.node("indices"), slice(lo, hi))
    return _chunk(spec, data, indices, indptr - lo, minor_key)


def read_major_positions(spec: SparseSpec, positions: np.ndarray, minor_key: Any = None) -> Any:
    """Read the given increasing major-axis positions as one scipy chunk, reading only their ranges.

    The pointers of the span ``positions[0]..positions[-1]`` are read in one go (small); the data and
    indices ranges of the selected positions are merged when less than ``COALESCE_GAP_NNZ`` apart, so
    nearby rows cost one read while far-apart rows never pull in what lies between them.
    """
    if positions.size == 0:
        empty = np.zeros(1, dtype=np.int64)
        dtype_data = spec.dtype
        return _chunk(spec, np.empty(0, dtype=dtype_data), np.empty(0, dtype=np.int32), empty, minor_key)
    first = int(positions[0])
    span = _read_indptr(spec, first, int(positions[-1]) + 1)
    lo, hi = span[positions - first], span[positions - first + 1]
    data_node, indices_node = spec.node("data"), spec.node("indices")
    # Zarr decodes whole chunks: ranges closer than a chunk share one read, so no chunk is decoded twice.
    stored_chunk = 0 if nodes.is_hdf5(data_node) else (nodes.chunks(data_node) or (0,))[0]
    breaks = np.flatnonzero(lo[1:] - hi[:-1] > max(COALESCE_GAP_NNZ, stored_chunk)) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [positions.size]])
    data_parts, index_parts, take = [], [], []
    offset = 0
    for a, b in zip(starts, ends, strict=True):
        read_lo, read_hi = int(lo[a]), int(hi[b - 1])
        data_parts.append(nodes.read(data_node, slice(read_lo, read_hi)))
        index_parts.append(nodes.read(indices_node, slice(read_lo, read_hi)))
        lengths = hi[a:b] - lo[a:b]
        # positions inside the concatenated buffer of each selected row's entries
        row_starts = offset + (lo[a:b] - read_lo)
        take.append(np.repeat(row_starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
                    + np.arange(int(lengths.sum())))
        offset += read_hi - read_lo
    buffer_data = np.concatenate(data_parts)
    buffer_indices = np.concatenate(index_parts)
    take = np.concatenate(take)
    indptr = np.concatenate([[0], np.cumsum(hi - lo)])
    return _chunk(spec, buffer_data[take], buffer_indices[take], indptr, minor_key)


def _is_h5sparse(node: Any, attrs: dict[str, Any]) -> bool:
    return nodes.is_group(node) and attrs.get("h5sparse_format") in ("csr", "csc")


register_sniffer(_is_h5sparse)(SparseSpec)

