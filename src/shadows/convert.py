"""Array and table backends: what a materialized element becomes.

``array_backend``: ``numpy`` (default; numpy arrays and scipy CSR/CSC, exactly what AnnData holds),
``dask`` (the graphs themselves), ``xarray`` (the graphs as labelled ``DataArray`` s, see
:mod:`shadows.labelled`), ``jax``, ``torch``, ``cupy``, ``sparse`` (pydata). ``table_backend``: ``pandas``
(default), ``dask``, ``xarray`` (read_lazy's ``Dataset2D``), ``polars``, ``pyarrow``. A backend whose
package is missing raises :class:`~shadows.errors.BackendUnavailableError` naming what to install.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from shadows.errors import BackendUnavailableError, UnknownBackendError


@dataclass(frozen=True)
class Backend:
    """How stored values are handed to users.

    Parameters
    ----------
    name
        The backend's name, as users pass it.
    lazy
        Whether elements are returned as dask graphs, bare or labelled (nothing is computed or cached).
    convert
        Turns the default in-memory value (numpy/scipy or pandas) into the backend's type.
    """

    name: str
    lazy: bool
    convert: Callable[[Any], Any]


def _require(module: str, backend: str, pip_name: str | None = None):
    try:
        return importlib.import_module(module)
    except ImportError as error:
        msg = (f"the '{backend}' backend needs the '{pip_name or module}' package, which is not installed: "
               f"pip install {pip_name or module}")
        raise BackendUnavailableError(msg) from error


def _identity(value: Any) -> Any:
    return value


def _to_jax(value: Any) -> Any:
    jnp = _require("jax.numpy", "jax", "jax")
    if sp.issparse(value):
        jsparse = _require("jax.experimental.sparse", "jax", "jax")
        return jsparse.BCSR.from_scipy_sparse(sp.csr_matrix(value))
    return jnp.asarray(value) if isinstance(value, np.ndarray) and value.dtype.kind != "O" else value


def _to_torch(value: Any) -> Any:
    torch = _require("torch", "torch")
    if sp.issparse(value):
        csr = sp.csr_matrix(value)
        return torch.sparse_csr_tensor(torch.from_numpy(csr.indptr.astype(np.int64)),
                                       torch.from_numpy(csr.indices.astype(np.int64)),
                                       torch.from_numpy(csr.data), size=csr.shape)
    return torch.from_numpy(value) if isinstance(value, np.ndarray) and value.dtype.kind != "O" else value


def _to_cupy(value: Any) -> Any:
    cupy = _require("cupy", "cupy", "cupy-cuda12x")
    if sp.issparse(value):
        cusparse = _require("cupyx.scipy.sparse", "cupy", "cupy-cuda12x")
        return cusparse.csr_matrix(sp.csr_matrix(value)) if value.format == "csr" else cusparse.csc_matrix(value)
    return cupy.asarray(value) if isinstance(value, np.ndarray) and value.dtype.kind != "O" else value


def _to_pydata_sparse(value: Any) -> Any:
    sparse = _require("sparse", "sparse")
    if sp.issparse(value):
        return sparse.GCXS.from_scipy_sparse(value)
    return value


def _to_polars(frame: Any) -> Any:
    polars = _require("polars", "polars")
    _require("pyarrow", "polars", "pyarrow")  # polars converts pandas frames through pyarrow
    return polars.from_pandas(frame, include_index=True)


def _to_pyarrow(frame: Any) -> Any:
    pyarrow = _require("pyarrow", "pyarrow")
    return pyarrow.Table.from_pandas(frame, preserve_index=True)


_ARRAY_BACKENDS: dict[str, tuple[bool, Callable[[Any], Any], str | None]] = {
    "numpy": (False, _identity, None),
    "dask": (True, _identity, "dask"),
    "xarray": (True, _identity, "xarray"),
    "jax": (False, _to_jax, "jax"),
    "torch": (False, _to_torch, "torch"),
    "cupy": (False, _to_cupy, "cupy"),
    "sparse": (False, _to_pydata_sparse, "sparse"),
}
_TABLE_BACKENDS: dict[str, tuple[bool, Callable[[Any], Any], str | None]] = {
    "pandas": (False, _identity, None),
    "dask": (True, _identity, "dask.dataframe"),
    "xarray": (True, _identity, "xarray"),
    "polars": (False, _to_polars, "polars"),
    "pyarrow": (False, _to_pyarrow, "pyarrow"),
}


def _get(kind: str, table: dict, name: str) -> Backend:
    if not isinstance(name, str) or name.lower() not in table:
        msg = f"unknown {kind} {name!r}: choose one of {', '.join(table)}"
        raise UnknownBackendError(msg)
    name = name.lower()
    lazy, convert, module = table[name]
    if module is not None:
        _require(module, name, {"cupy": "cupy-cuda12x", "dask.dataframe": "dask[dataframe]"}.get(module))
    return Backend(name, lazy, convert)


def array_backend(name: str) -> Backend:
    """The array backend called ``name``; raises if its package is missing."""
    return _get("array_backend", _ARRAY_BACKENDS, name)


def table_backend(name: str) -> Backend:
    """The table backend called ``name``; raises if its package is missing."""
    return _get("table_backend", _TABLE_BACKENDS, name)


def persisted(value: Any) -> Any:
    """A lazy backend's value (a dask collection, an xarray object, read_lazy's ``Dataset2D``) with its
    dask graphs computed and kept in memory (locally, or on the cluster under a ``distributed.Client``).
    """
    if hasattr(value, "persist"):
        return value.persist()
    return type(value)(value.ds.persist())  # Dataset2D wraps an xarray.Dataset
