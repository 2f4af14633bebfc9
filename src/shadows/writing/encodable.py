"""Whether anndata can store a value assigned in memory, asked before ``write()`` writes anything.

anndata finds out only while writing (an ``IORegistryError`` for an unknown type, a ``TypeError`` for a
dtype), which would leave the elements committed before it in the file. Arrays are judged by their
dtype (their size makes a trial write too costly: a dask array is not even computed); everything else
(uns values, dataframes, scalars, lists) is written once into an HDF5 file held in memory, by anndata
itself, so the answer is anndata's own.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np

#: numpy dtype kinds anndata writes: bool, integers, floats, complex, bytes, str, records (object arrays
#: are checked by their values).
_ARRAY_KINDS = set("biufcSUV")


def encoding_problem(value: Any) -> str | None:
    """Why anndata cannot write ``value`` (``None`` if it can)."""
    import anndata

    if isinstance(value, anndata.AnnData):
        return _anndata_problem(value)
    dtype = getattr(value, "dtype", None)
    if dtype is not None and hasattr(value, "shape") and not hasattr(value, "columns"):  # an array of any kind
        return _array_problem(value)
    return _trial_problem(value)


def _array_problem(value: Any) -> str | None:
    if hasattr(value.dtype, "categories"):  # a pandas categorical: anndata's own encoding
        return None
    dtype = np.dtype(value.dtype)
    if dtype.kind in _ARRAY_KINDS:
        return None
    if dtype.kind == "O":  # by the values (a dask array's are known only when computed)
        return None if hasattr(value, "dask") else _trial_problem(np.asarray(value))
    return _trial_problem(np.zeros((1,) * max(len(value.shape), 1), dtype=dtype))  # anndata decides


def _anndata_problem(adata: Any) -> str | None:
    """An AnnData's arrays by dtype, its dataframes and uns by trial."""
    parts = {"X": adata.X, **{f"layers/{k}": v for k, v in adata.layers.items() if k is not None}}
    for slot in ("obsm", "varm", "obsp", "varp"):
        parts.update({f"{slot}/{k}": v for k, v in getattr(adata, slot).items()})
    parts.update({"obs": adata.obs, "var": adata.var, "uns": dict(adata.uns)})
    for name, part in parts.items():
        problem = None if part is None else encoding_problem(part)
        if problem is not None:
            return f"{name}: {problem}"
    return None


def _trial_problem(value: Any) -> str | None:
    import h5py

    from shadows.writing.anndata_elems import write_elem as _write_elem

    with contextlib.closing(h5py.File(io.BytesIO(), "w")) as trial:
        try:
            _write_elem(trial, "value", value)
        except Exception as error:
            return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}".rstrip(": ")
    return None
