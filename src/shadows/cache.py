"""What a shadow holds in memory: materialized elements (ᐁ) and graphs kept with ``persist``.

Caching is persist: an element computed once is kept until :meth:`ElementCache.clear`.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

CACHED = "ᐁ"
STAGED = "▲"


class ElementCache:
    """Values held in memory, keyed by element path relative to the AnnData root (``"obsm/X_pca"``)."""

    def __init__(self) -> None:
        self._values: dict[str, Any] = {}
        self._fingerprints: dict[str, int] = {}

    def get(self, key: str, compute: Callable[[], Any]) -> Any:
        """The cached value for ``key``, computing and keeping it on first use (with the fingerprint of
        an array, to tell later whether it was changed in place).
        """
        if key not in self._values:
            value = compute()
            self._values[key] = value
            checksum = fingerprint(value)
            if checksum is not None:
                self._fingerprints[key] = checksum
        return self._values[key]

    def changed_in_place(self) -> list[str]:
        """Keys of cached arrays whose values differ from what was read (changed in place since)."""
        return [k for k, p in self._fingerprints.items() if k in self._values and fingerprint(self._values[k]) != p]

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def put(self, key: str, value: Any) -> None:
        """Keep ``value`` for ``key`` (a persisted graph, say)."""
        self._values[key] = value
        self._fingerprints.pop(key, None)

    def discard(self, key: str) -> None:
        """Forget the value of ``key`` (if any)."""
        self._values.pop(key, None)
        self._fingerprints.pop(key, None)

    def __contains__(self, key: str) -> bool:
        return key in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._values))

    def __len__(self) -> int:
        return len(self._values)

    def clear(self) -> None:
        """Drop every held value so its memory can be freed."""
        self._values.clear()
        self._fingerprints.clear()


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
