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

from shadows.backends import nodes
from shadows.elements.base import ElementSpec, encoding_of
from shadows.elements.registry import register, register_sniffer
from shadows.elements.sparse_chunk import CHUNK_TYPES, to_plain
from shadows.errors import MalformedElementError, element_message

#: Non-zeros one task reads (data + indices: about 32 MiB for float32/int32).
TARGET_NNZ_PER_TASK = 4_000_000
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


def read_major_run(spec: SparseSpec, start: int, stop: int) -> Any:
    """Read major-axis positions ``start:stop`` of a stored CSR/CSC matrix as one scipy chunk.

    Reads ``indptr[start:stop+1]`` and the ``data``/``indices`` range it points to, checking that the
    pointers are consistent so a corrupt file fails with a message rather than garbage.
    """
    group = spec.node()
    indptr = np.asarray(group["indptr"][start : stop + 1])
    nnz = spec.extra["nnz"]
    if indptr.size and (indptr[0] < 0 or indptr[-1] > nnz or np.any(np.diff(indptr) < 0)):
        what = (f"pointers for positions {start}:{stop} run from {indptr[0]} to {indptr[-1]}, outside "
                f"data's {nnz} entries or decreasing")
        raise MalformedElementError(element_message(spec.ref.path, f"{spec.path}/indptr", what))
    lo, hi = (int(indptr[0]), int(indptr[-1])) if indptr.size else (0, 0)
    data = nodes.read(group["data"], slice(lo, hi))
    indices = nodes.read(group["indices"], slice(lo, hi))
    minor = spec.shape[1 - spec.major_axis]
    run_shape = (stop - start, minor) if spec.major_axis == 0 else (minor, stop - start)
    cls = CHUNK_TYPES[spec.format]
    indptr = indptr - lo
    if indptr.size and indptr[-1] <= np.iinfo(indices.dtype).max:
        indptr = indptr.astype(indices.dtype, copy=False)  # same index dtype: scipy keeps the buffers
    return cls((data, indices, indptr), shape=run_shape)


def _is_h5sparse(node: Any, attrs: dict[str, Any]) -> bool:
    return nodes.is_group(node) and attrs.get("h5sparse_format") in ("csr", "csc")


register_sniffer(_is_h5sparse)(SparseSpec)

