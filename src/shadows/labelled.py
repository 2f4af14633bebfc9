"""The xarray backends: stored elements as labelled, lazy xarray objects over the shadow's own reads.

``array_backend="xarray"``
    Matrices and arrays (``X``, ``layers``, ``obsm``, ``varm``, ``obsp``, ``varp``, ``raw.X``, arrays in
    ``uns``) are :class:`xarray.DataArray` s over the same dask graphs ``array_backend="dask"`` gives, with
    ``obs_names``/``var_names`` as coordinates of their ``obs``/``var`` dimensions (see :func:`dims_for`).
    Sparse matrices get pydata ``sparse.COO`` chunks (xarray's sparse type; scipy's it cannot hold).
    The dask array inside is a :class:`PushdownArray`: indexing it, which is what xarray's ``.sel`` and
    ``.isel`` do, plans a new graph for the selected positions (as a view of the shadow does) instead of
    slicing the full graph, so a label selection reads what a view of those cells reads.
``table_backend="xarray"``
    Dataframes (``obs``, ``var``, dataframes in ``obsm``/``varm``/``uns``) are given in the shape anndata's
    ``read_lazy`` gives them: an :class:`anndata.experimental.backed.Dataset2D` (where the installed
    anndata has it, else the :class:`xarray.Dataset` it wraps) with one dimension named after the stored
    index key and the names as its coordinate (read on first use, as xarray keeps coordinates in memory).
    Numeric columns are dask arrays (:class:`PushdownArray`); categorical, nullable and string columns are
    lazily indexed and read, only for the selected rows, when their values are asked for.

This module imports xarray: the shadow imports it only when one of these backends is chosen.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from xarray.backends import BackendArray
from xarray.core.extension_array import PandasExtensionArray
from xarray.core.indexing import LazilyIndexedArray

from shadows.errors import BackendUnavailableError, element_message
from shadows.indexing.compose import compose
from shadows.indexing.keys import AxisIndex, is_full, normalize_axis
from shadows.schema import element_axes

_AXIS_NAMES = ("obs", "var")


def pushdown_array(spec: Any, selection: tuple[AxisIndex, ...], pydata_chunks: bool = False) -> Any:
    """A :class:`PushdownArray` over ``spec[selection]`` (one range or position array per axis).

    ``pydata_chunks`` turns a sparse matrix's scipy chunks into pydata ``sparse.COO`` arrays, the sparse
    type xarray holds (it cannot hold scipy matrices).
    """
    from dask.array.utils import meta_from_array

    partial = tuple(s if not is_full(s, n) else None for s, n in zip(selection, spec.shape, strict=True))
    graph = spec.select_graph(partial if any(s is not None for s in partial) else ())
    if pydata_chunks:
        import sparse

        empty = sparse.COO.from_numpy(np.zeros((0,) * len(spec.shape), dtype=spec.dtype))
        graph = graph.map_blocks(sparse.COO.from_scipy_sparse, dtype=spec.dtype, meta=empty)
    array = PushdownArray(graph.dask, graph.name, graph.chunks, meta=meta_from_array(graph))
    array.__dict__["_pushdown"] = (spec, tuple(selection), pydata_chunks)
    return array


def _orthogonal(key: Any, shape: tuple[int, ...]) -> tuple[list[AxisIndex], list[bool]] | None:
    """``key`` as positions per axis and which axes it drops (integers), when it is a key a re-planned
    graph can serve exactly: slices, integers, and at most one 1-d integer or boolean array (numpy's
    pointwise meaning of several arrays is left to dask). ``None`` for anything else.
    """
    key = key if isinstance(key, tuple) else (key,)
    if any(k is None for k in key) or sum(k is Ellipsis for k in key) > 1:
        return None
    if any(k is Ellipsis for k in key):
        at = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:at] + (slice(None),) * (len(shape) - len(key) + 1) + key[at + 1:]
    if len(key) > len(shape):
        return None
    key = key + (slice(None),) * (len(shape) - len(key))
    positions, drops, arrays = [], [], 0
    for part, n in zip(key, shape, strict=True):
        if isinstance(part, slice) or (isinstance(part, int | np.integer) and not isinstance(part, bool | np.bool_)):
            positions.append(normalize_axis(part, n, _no_names, "axis"))
            drops.append(not isinstance(part, slice))
            continue
        if not isinstance(part, list | np.ndarray):
            return None
        values = np.asarray(part) if len(part) else np.empty(0, dtype=np.int64)
        if values.ndim != 1 or values.dtype.kind not in "iub":
            return None
        arrays += 1
        positions.append(normalize_axis(values, n, _no_names, "axis"))
        drops.append(False)
    return (positions, drops) if arrays <= 1 else None


def _no_names() -> pd.Index:
    raise TypeError("an array axis has no names: index it by position")


class PushdownArray(da.Array):
    """A dask array over a stored element that plans a new graph when it is indexed.

    Slicing a dask array keeps its tasks and cuts their results, so every task touching the selection
    reads its whole block. Indexing this array by positions (slices, integers, one integer or boolean
    array) builds the element's graph for the selected positions instead, with the tasks a view of the
    shadow would have: a sparse matrix reads only the selected rows. Every other operation is dask's and
    gives plain dask arrays. (dask has no hook for this: its slice fusion joins slices, not position arrays.)
    """

    __slots__ = ()

    def __getitem__(self, key: Any) -> Any:
        pushdown = self.__dict__.get("_pushdown")
        parts = None if pushdown is None else _orthogonal(key, self.shape)
        if parts is None:
            return super().__getitem__(key)
        spec, selection, pydata_chunks = pushdown
        positions, drops = parts
        array = pushdown_array(spec, tuple(compose(s, p) for s, p in zip(selection, positions, strict=True)),
                               pydata_chunks)
        if any(drops):
            return da.Array.__getitem__(array, tuple(0 if d else slice(None) for d in drops))
        return array


def dims_for(rel: str, ndim: int) -> tuple[str, ...]:
    """Dimension names of the element at ``rel``: ``obs``/``var`` along the axes it is aligned to (raw's
    variables too), ``obs_i``/``obs_j`` for a pairwise ``obsp`` matrix (``var_i``/``var_j`` for varp), and
    ``<key>`` (``<key>_<axis>`` beyond two axes) for other axes, e.g. ``("obs", "X_pca")``.
    """
    axes = (0, 1) if rel == "raw/X" else (1,) if rel.startswith("raw/varm/") else element_axes(rel)
    leaf = rel.rsplit("/", 1)[-1]
    dims = []
    for i in range(ndim):
        axis = axes[i] if i < len(axes) else None
        if axis is not None:
            dims.append(_AXIS_NAMES[axis])
        else:
            dims.append(leaf if ndim == 2 and i == 1 and axes else f"{leaf}_{i}")
    if len(set(dims)) < len(dims):  # obsp/varp: one axis twice
        dims = [f"{d}_{'ij'[i]}" if dims.count(d) > 1 else d for i, d in enumerate(dims)]
    return tuple(dims)


def data_array(rel: str, spec: Any, selection: tuple, names: Callable[[str], pd.Index],
               relabel: Callable[[Any], Any]) -> Any:
    """The element at ``rel`` as an :class:`xarray.DataArray` over a :class:`PushdownArray`.

    Parameters
    ----------
    rel
        The element's path in the AnnData/MuData.
    spec
        Its element spec.
    selection
        The view's selection of it (``()`` or one entry per axis, ``None`` where not sliced).
    names
        Called with ``"obs"`` or ``"var"`` (``"raw/var"`` for raw's variables): the names of that axis
        in this shadow, used as coordinates.
    relabel
        What the shadow's view changes in the graph besides slicing it (MuData's obsmap/varmap).
    """
    full = tuple(range(n) if i >= len(selection) or selection[i] is None else selection[i]
                 for i, n in enumerate(spec.shape))
    if spec.is_sparse:
        require_pydata_sparse(rel, spec)
    data = relabel(pushdown_array(spec, full, pydata_chunks=spec.is_sparse))
    dims = dims_for(rel, len(spec.shape))
    coords = {}
    raw = rel == "raw/X" or rel.startswith("raw/varm/")
    for dim in dims:
        axis = dim.split("_", 1)[0]
        if axis in _AXIS_NAMES and (dim == axis or dim[len(axis):] in ("_i", "_j")):
            coords[dim] = (dim, names("raw/var" if raw and axis == "var" else axis))
    return xr.DataArray(data, dims=dims, coords=coords, name=rel.rsplit("/", 1)[-1])


def require_pydata_sparse(rel: str, spec: Any) -> None:
    """Raise :class:`~shadows.errors.BackendUnavailableError` when pydata ``sparse`` is missing: xarray
    holds sparse matrices only as its arrays.
    """
    try:
        import sparse  # noqa: F401
    except ImportError as error:
        what = ("is a sparse matrix, which array_backend='xarray' gives with pydata sparse chunks (the sparse "
                "arrays xarray holds); install them: pip install sparse (or pip install 'shadows[sparse]')")
        raise BackendUnavailableError(element_message(spec.ref.display, rel, what)) from error


class LazyColumn(BackendArray):
    """One dataframe column, lazily indexed by xarray: a read of the selected rows, when asked for.

    An :class:`xarray.backends.BackendArray` (``shape``, ``dtype``, ``__getitem__`` taking an explicit
    indexer). Pandas extension values (categoricals, nullable arrays) come back wrapped as xarray
    wraps them, so the column keeps its pandas dtype, as anndata's lazy categorical and masked arrays do.
    """

    def __init__(self, frame: Any, key: str, rows: AxisIndex):
        self.frame, self.key, self.rows = frame, key, rows
        self.shape = (len(rows),)

    @cached_property
    def dtype(self) -> Any:
        dtype = self.frame.meta()[self.key].dtype
        if isinstance(dtype, pd.CategoricalDtype):  # the categories are small: read them for the dtype
            column = self.frame.column(self.key)
            categories = column.categories() if hasattr(column, "categories") else \
                column.read_rows(slice(0, 0)).categories
            return pd.CategoricalDtype(categories, ordered=dtype.ordered)
        if isinstance(dtype, pd.StringDtype):  # xarray holds no pandas string arrays: object, as read_lazy
            return np.dtype(object)
        return dtype

    def __getitem__(self, key: Any) -> Any:
        from shadows.elements.positions import read_column

        (part,) = key.tuple
        rows = compose(self.rows, normalize_axis(part, self.shape[0], _no_names, "row"))
        values = pd.Series(read_column(self.frame.column(self.key), rows), copy=False).array
        if isinstance(values, pd.arrays.NumpyExtensionArray) or isinstance(values.dtype, pd.StringDtype):
            values = values.to_numpy(dtype=self.dtype)
        if isinstance(part, int | np.integer):
            return np.asarray(values)[0]
        return values if isinstance(values, np.ndarray) else PandasExtensionArray(values)


def dataset(frame: Any, rows: AxisIndex, index: pd.Index, staged: dict[str, pd.Series],
            deleted: set[str]) -> Any:
    """A stored dataframe (the ``rows`` of it a view keeps) as read_lazy's ``Dataset2D``.

    Parameters
    ----------
    frame
        The dataframe's element spec (stored or pre-0.7 layout).
    rows
        The rows this shadow sees, as positions in the stored frame.
    index
        Their names (the coordinate).
    staged
        Columns changed or added in memory (▲), already aligned to ``rows``.
    deleted
        Stored columns deleted in memory.
    """
    dim = frame.index_key
    variables: dict[str, Any] = {}
    meta = frame.meta()
    for key in frame.columns:
        if key in deleted or key in staged:
            continue
        column = frame.column(key)
        dtype = meta[key].dtype
        plain_array = getattr(column, "role", None) == "array" and not column.is_sparse  # no codes, no mask
        if plain_array and isinstance(dtype, np.dtype) and dtype.kind in "iufb":
            variables[key] = xr.Variable(dim, pushdown_array(column, (rows,)))
        else:
            variables[key] = xr.Variable(dim, LazilyIndexedArray(LazyColumn(frame, key, rows)))
    for key, values in staged.items():
        variables[key] = xr.Variable(dim, values.array)
    ds = xr.Dataset(variables, coords={dim: (dim, index)}, attrs={"is_backed": True})
    try:
        from anndata.experimental.backed import Dataset2D
    except ImportError:  # anndata < 0.12 has no Dataset2D: the Dataset it would wrap
        return ds
    return Dataset2D(ds)
