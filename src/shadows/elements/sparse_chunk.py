"""scipy CSR/CSC matrices that behave like numpy arrays where dask needs them to.

dask reduces chunks with numpy's protocol: ``np.sum(chunk, axis=(0,), keepdims=True)``, and slices them
expecting numpy's dimensionality (``chunk[:, 3]`` is 1-d). scipy matrices take no ``keepdims``, want an
int axis, and keep two dimensions on integer indexing, so plain dask operations on scipy-chunked arrays
fail (anndata's ``read_lazy`` raises TypeError on ``X.sum(axis=0)``). These subclasses fix exactly those
entry points and run scipy's own kernels underneath, so reductions stay at scipy speed. Everything else
(``isinstance(chunk, scipy.sparse.csr_matrix)``, ``fast_array_utils``, scanpy's dask paths) sees an
ordinary scipy matrix. Written by hand because no library provides numpy-protocol scipy chunks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp


def _single_axis(axis: Any, ndim: int = 2) -> int | None:
    """Normalize numpy's axis argument (None, int or tuple) to None or one non-negative int."""
    if axis is None:
        return None
    if isinstance(axis, tuple):
        if len(axis) == ndim:
            return None
        if len(axis) != 1:
            raise ValueError(f"invalid axis {axis!r} for a 2-d sparse chunk")
        axis = axis[0]
    return int(axis) % ndim


_SCIPY_DEFAULT = object()  # marks "keepdims not passed": then behave exactly like scipy


class _NumpyProtocolMixin:
    """Reductions with numpy's signature and numpy's indexing dimensionality for scipy matrices.

    Without ``keepdims`` a reduction behaves exactly as scipy's (an ``np.matrix`` result: code written
    for scipy matrices, such as scanpy's dask helpers, relies on that). With ``keepdims`` (what dask
    passes) it follows numpy: a dense ndarray with the reduced axes kept or dropped.
    """

    def _reduce(self, method: str, axis, dtype=None, out=None, keepdims=_SCIPY_DEFAULT):
        ax = _single_axis(axis)
        base = getattr(super(), method)
        kwargs = {"dtype": dtype} if dtype is not None else {}
        if keepdims is _SCIPY_DEFAULT:
            return base(axis=ax, out=out, **kwargs) if out is not None else base(axis=ax, **kwargs)
        result = base(axis=ax, **kwargs)
        result = np.asarray(result.todense() if sp.issparse(result) else result)
        if ax is None:
            result = result.reshape((1, 1) if keepdims else ())
        else:
            result = result.reshape(-1)
            if keepdims:
                result = result.reshape((1, -1) if ax == 0 else (-1, 1))
        if out is not None:
            out[...] = result
            return out
        return result

    def sum(self, axis=None, dtype=None, out=None, keepdims=_SCIPY_DEFAULT, **kwargs):
        """Sum; takes numpy's ``keepdims`` and tuple axes (then returns a dense ndarray)."""
        return self._reduce("sum", axis, dtype, out, keepdims)

    def mean(self, axis=None, dtype=None, out=None, keepdims=_SCIPY_DEFAULT, **kwargs):
        """Mean; takes numpy's ``keepdims`` and tuple axes (then returns a dense ndarray)."""
        return self._reduce("mean", axis, dtype, out, keepdims)

    def max(self, axis=None, out=None, keepdims=_SCIPY_DEFAULT, **kwargs):
        """Maximum; takes numpy's ``keepdims`` and tuple axes (then returns a dense ndarray)."""
        return self._reduce("max", axis, None, out, keepdims)

    def min(self, axis=None, out=None, keepdims=_SCIPY_DEFAULT, **kwargs):
        """Minimum; takes numpy's ``keepdims`` and tuple axes (then returns a dense ndarray)."""
        return self._reduce("min", axis, None, out, keepdims)

    def __getitem__(self, key):
        result = super().__getitem__(key)
        if not isinstance(key, tuple):
            key = (key,)
        integer_axes = sum(isinstance(k, (int, np.integer)) for k in key)
        if integer_axes == 0 or not sp.issparse(result):
            return result
        # numpy drops an axis for each integer index; scipy matrices stay 2-d.
        return np.asarray(result.todense()).reshape(-1)


class ChunkCSR(_NumpyProtocolMixin, sp.csr_matrix):
    """A CSR matrix chunk of a dask array (see the module docstring)."""


class ChunkCSC(_NumpyProtocolMixin, sp.csc_matrix):
    """A CSC matrix chunk of a dask array (see the module docstring)."""


CHUNK_TYPES = {"csr": ChunkCSR, "csc": ChunkCSC}


def to_plain(matrix: Any) -> Any:
    """Return the chunk as the plain scipy matrix anndata holds in memory (no copy of the buffers)."""
    if isinstance(matrix, ChunkCSR):
        return sp.csr_matrix((matrix.data, matrix.indices, matrix.indptr), shape=matrix.shape, copy=False)
    if isinstance(matrix, ChunkCSC):
        return sp.csc_matrix((matrix.data, matrix.indices, matrix.indptr), shape=matrix.shape, copy=False)
    return matrix
