"""The markers of what a shadow holds in memory (ᐁ read and kept, ▲ changed), and the checksum that
tells whether a kept array was changed in place (:mod:`shadows.core.state` keeps the records).
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

CACHED = "ᐁ"
STAGED = "▲"


def _buffers(value: Any) -> list[np.ndarray] | None:
    if isinstance(value, np.ndarray):
        return [value] if value.dtype.kind in "biufcmM" else None
    parts = [getattr(value, name, None) for name in ("data", "indices", "indptr")]
    if all(isinstance(p, np.ndarray) for p in parts):  # scipy.sparse CSR/CSC
        return parts
    return None


def fingerprint(value: Any) -> int | None:
    """A checksum of a numeric numpy array's (or CSR/CSC matrix's) bytes; ``None`` for other values.

    Adler-32 (zlib, in C) runs at memory speed, a small cost beside reading the values: it is what lets
    ``clear_cache()`` keep a cached array that was changed in place (``np.log1p(X.data, out=X.data)``)
    instead of silently reverting it to the file's values.
    """
    buffers = _buffers(value)
    if buffers is None:
        return None
    check = 1
    for array in buffers:
        contiguous = np.ascontiguousarray(array)
        check = zlib.adler32(memoryview(contiguous.reshape(-1).view(np.uint8)), check)
    return check


def marker(cached: bool, staged: bool) -> str:
    """The repr marker of an element: ▲ for staged in memory, ᐁ for held in memory, else nothing."""
    return STAGED if staged else CACHED if cached else ""
