"""Dense arrays (``array``) and arrays of strings (``string-array``): chunked dask arrays."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from shadows.backends import nodes
from shadows.elements.base import TARGET_CHUNK_BYTES, ElementSpec, Rows, encoding_of
from shadows.elements.registry import register, register_sniffer


class StoredArray:
    """A picklable stand-in for a stored array that ``dask.array.from_array`` slices.

    It reopens the file through the per-process handle cache on every read, so it travels to process
    workers. ``__dask_tokenize__`` makes graph names depend on the file and element only.
    """

    def __init__(self, spec: ElementSpec):
        self.spec = spec
        self.shape = spec.shape
        self.dtype = spec.dtype
        self.ndim = len(spec.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        return self.spec.read_block(key)

    def __dask_tokenize__(self):
        return ("shadows.StoredArray", self.spec.ref, self.spec.path, self.shape, str(self.dtype))


def plan_chunks(shape: tuple[int, ...], dtype: np.dtype, stored: tuple[int, ...] | None):
    """Dask chunks aligned to the stored chunks, grouped up to about ``TARGET_CHUNK_BYTES`` per task.

    Rows are grouped first: row blocks of the full width when they fit, which is what row selections
    and per-row reductions want.
    """
    from dask.array.core import normalize_chunks

    if not shape or 0 in shape:
        return tuple((s,) for s in shape)
    itemsize = max(np.dtype(dtype).itemsize, 8 if np.dtype(dtype).kind == "O" else 1)
    previous = stored if stored is not None else shape
    spec = {0: "auto", **{i: -1 for i in range(1, len(shape))}}
    row_bytes = itemsize * int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else itemsize
    if row_bytes * min(shape[0], previous[0]) > TARGET_CHUNK_BYTES and len(shape) > 1:
        spec = {i: "auto" for i in range(len(shape))}
    return normalize_chunks(
        tuple(spec[i] for i in range(len(shape))),
        shape=shape,
        limit=TARGET_CHUNK_BYTES,
        dtype=np.dtype(dtype) if np.dtype(dtype).kind != "O" else np.dtype("f8"),
        previous_chunks=previous,
    )


@register("array", "array", "0.2.0")
@register("array", "string-array", "0.2.0")
@register("array", "rec-array", "0.2.0")
@dataclass(frozen=True)
class DenseSpec(ElementSpec):
    """A dense n-d array (numbers, booleans or strings)."""

    kind = "dense"

    @classmethod
    def from_node(cls, ref, node, path, attrs):
        encoding = encoding_of(attrs) if "encoding-type" in attrs else "array (unencoded)"
        return cls(ref, path, encoding, tuple(node.shape), nodes.numpy_dtype(node),
                   extra={"stored_chunks": nodes.chunks(node)})

    def graph(self):
        """A dask array over the stored array, chunk-aligned."""
        import dask.array as da

        chunks = plan_chunks(self.shape, self.dtype, self.extra.get("stored_chunks"))
        proxy = StoredArray(self)
        name = f"shadows-array-{self.name}-" + _token(proxy)
        meta = np.empty((0,) * len(self.shape), dtype=self.dtype)
        return da.from_array(proxy, chunks=chunks, name=name, meta=meta, asarray=False, inline_array=True)

    def read_block(self, key: Any) -> np.ndarray:
        """Read ``array[key]`` for a basic selection (what dask's tasks ask for)."""
        return nodes.read(self.node(), key)

    def materialize(self) -> np.ndarray:
        """Read the whole array in one read, decoded by anndata's own reader (the format authority)."""
        from anndata.io import read_elem

        return read_elem(self.node())

    def read_rows(self, rows: Rows) -> np.ndarray:
        """Read the selected rows (first-axis positions) of the array."""
        node = self.node()
        if isinstance(rows, slice) or len(self.shape) == 0:
            return nodes.read(node, rows if len(self.shape) else ())
        return nodes.read(node, np.asarray(rows))


def _token(obj: Any) -> str:
    from dask.base import tokenize

    return tokenize(obj)


def _is_plain_dataset(node: Any, attrs: dict[str, Any]) -> bool:
    """Arrays written by anndata < 0.7 carry no encoding attributes."""
    return not nodes.is_group(node) and len(node.shape) > 0


register_sniffer(_is_plain_dataset)(DenseSpec)
