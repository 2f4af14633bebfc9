"""Normalize what users pass to ``shadow[...]`` into positions along each axis.

An axis index is a ``range`` (slices, single ints: cheap and exact) or a 1-d int64 array of positions
(masks, integer arrays, names), always relative to the object being indexed. Keys follow AnnData:
slices, ints, boolean masks (numpy or pandas), integer arrays (sorted or not), names (str, list of str,
pandas Index), and a 2-tuple of any of these.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from shadows.errors import InvalidKeyError, UnknownNameError

AxisIndex = range | np.ndarray
_AXES = ("obs", "var")


def split_key(key: Any) -> tuple[Any, Any]:
    """``key`` → (obs key, var key); a single key selects observations."""
    if isinstance(key, tuple):
        if len(key) == 1:
            return key[0], slice(None)
        if len(key) == 2:
            return key
        raise InvalidKeyError(f"a shadow has 2 axes, got a key with {len(key)} parts: {key!r}")
    return key, slice(None)


def normalize_key(key: Any, shape: tuple[int, int], names: tuple[Callable[[], pd.Index], Callable[[], pd.Index]]
                  ) -> tuple[AxisIndex, AxisIndex]:
    """Turn a user key into (obs positions, var positions).

    Parameters
    ----------
    key
        What was passed to ``shadow[key]``.
    shape
        (n_obs, n_vars) of the object indexed.
    names
        Callables returning obs_names and var_names, called only for keys given as names.

    Raises
    ------
    IndexError
        Positions out of range, or a boolean mask of the wrong length.
    KeyError
        Names that are not in obs_names/var_names.
    """
    obs_key, var_key = split_key(key)
    return (normalize_axis(obs_key, shape[0], names[0], "obs"), normalize_axis(var_key, shape[1], names[1], "var"))


def normalize_axis(key: Any, n: int, names: Callable[[], pd.Index], axis: str) -> AxisIndex:
    """Positions selected by ``key`` along an axis of length ``n``."""
    if isinstance(key, slice):
        return range(n)[key]
    if key is Ellipsis:
        return range(n)
    if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
        position = int(key)
        if not -n <= position < n:
            raise InvalidKeyError(f"{axis} position {position} is out of range for {n} {axis}")
        position %= n
        return range(position, position + 1)
    if isinstance(key, str):
        return _names_to_positions(np.array([key], dtype=object), names(), axis)
    if isinstance(key, pd.Series | pd.Index):
        key = key.to_numpy()
    values = np.asarray(key)
    if values.ndim != 1:
        raise InvalidKeyError(f"{axis} key must be 1-dimensional, got shape {values.shape}")
    if values.dtype == bool:
        if values.size != n:
            raise InvalidKeyError(f"boolean {axis} mask has length {values.size}, but there are {n} {axis}")
        return np.flatnonzero(values)
    if values.size == 0:
        return np.empty(0, dtype=np.int64)
    if values.dtype.kind in "iu":
        positions = values.astype(np.int64)
        bad = (positions < -n) | (positions >= n)
        if bad.any():
            raise InvalidKeyError(f"{axis} positions out of range for {n} {axis}: {positions[bad][:5].tolist()}")
        return np.where(positions < 0, positions + n, positions)
    if values.dtype.kind in "OUS" or pd.api.types.is_string_dtype(values.dtype):
        return _names_to_positions(values.astype(object), names(), axis)
    raise InvalidKeyError(f"cannot index {axis} with a key of dtype {values.dtype}")


def _names_to_positions(wanted: np.ndarray, names: pd.Index, axis: str) -> np.ndarray:
    positions = names.get_indexer(wanted) if names.is_unique else _first_positions(names, wanted)
    missing = wanted[positions < 0]
    if missing.size:
        shown = ", ".join(repr(m) for m in missing[:5]) + (" ..." if missing.size > 5 else "")
        raise UnknownNameError(f"not in {axis}_names: {shown}")
    return positions.astype(np.int64)


def _first_positions(names: pd.Index, wanted: np.ndarray) -> np.ndarray:
    first = pd.Series(np.arange(len(names)), index=names)
    first = first[~first.index.duplicated()]
    return first.reindex(wanted).fillna(-1).to_numpy(dtype=np.int64)


def as_positions(index: AxisIndex) -> np.ndarray:
    """The index as an int64 array of positions."""
    if isinstance(index, range):
        return np.arange(index.start, index.stop, index.step, dtype=np.int64)
    return index


def as_slice_or_array(index: AxisIndex) -> slice | np.ndarray:
    """A numpy/dask-compatible key: a slice for ranges (empty or not), positions otherwise."""
    if isinstance(index, range):
        if len(index) == 0:
            return slice(0, 0)
        stop = index.start + index.step * len(index)
        return slice(index.start, stop if stop >= 0 else None, index.step)
    return index


def sorted_unique(index: AxisIndex) -> tuple[AxisIndex, np.ndarray | None]:
    """Positions to read in storage order, and how to reorder them into the key's order.

    Returns ``(to_read, order)``: ``to_read`` is an increasing range or array; ``order`` is ``None``
    when ``to_read`` is already in the key's order, else the take() that restores it.
    """
    if isinstance(index, range):
        if len(index) <= 1:
            return (range(index[0], index[0] + 1) if len(index) else range(0, 0)), None
        if index.step > 0:
            return index, None
        increasing = range(index[-1], index[0] + 1, -index.step)
        return increasing, np.arange(len(index) - 1, -1, -1)
    if index.size == 0 or np.all(index[1:] > index[:-1]):
        return index, None
    unique, inverse = np.unique(index, return_inverse=True)
    return unique, inverse.reshape(-1)


def is_full(index: AxisIndex, n: int) -> bool:
    """Whether ``index`` selects every position of an axis of length ``n``, in order."""
    return isinstance(index, range) and index == range(n)
