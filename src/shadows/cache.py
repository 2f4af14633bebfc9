"""The markers of what a shadow holds in memory (ᐁ read and kept, ▲ changed), and the checksum that
tells whether a kept array was changed in place (:mod:`shadows.core.state` keeps the records).
"""

from __future__ import annotations

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


#: Words a block of the checksum: 2 MiB of weights, read from cache while the block streams past.
_BLOCK = 1 << 18
_MASK = (1 << 64) - 1
#: An odd 64-bit constant (the golden ratio's) chaining the block sums in order.
_CHAIN = 0x9E3779B97F4A7C15
_weights: np.ndarray | None = None


def _block_weights() -> np.ndarray:
    global _weights
    if _weights is None:  # fixed: a checksum taken now compares with one taken later in this process
        rng = np.random.default_rng(0x5AD0)
        _weights = rng.integers(0, 2**64, size=_BLOCK, dtype=np.uint64, endpoint=False) | np.uint64(1)
    return _weights


def _checksum(data: np.ndarray, check: int) -> int:
    """Chain the bytes of ``data`` (C-contiguous) into ``check``: per block of 64-bit words, the dot
    product with fixed odd weights (wrapping), the blocks chained in order, then the leftover bytes.

    Written by hand because nothing installed hashes at memory speed: ``zlib.adler32`` ran at ~3 GB/s
    and the hashes of ``hashlib`` slower, while numpy's integer dot product runs at ~13 GB/s, and a
    checksum is taken of every array a shadow holds, before and after every in-place subset. With odd
    weights, any change of one word changes the sum (the difference times an odd number is never 0
    modulo 2^64); moving a word moves it to another weight.
    """
    flat = data.reshape(-1).view(np.uint8)
    whole = len(flat) // 8 * 8
    words = flat[:whole].view(np.uint64)
    weights = _block_weights()
    for start in range(0, len(words), _BLOCK):
        block = words[start : start + _BLOCK]
        check = (check * _CHAIN + int(np.dot(block, weights[: len(block)]))) & _MASK
    tail = int.from_bytes(flat[whole:].tobytes(), "little")
    return (check * _CHAIN + tail + len(flat)) & _MASK


def fingerprint(value: Any) -> int | None:
    """A checksum of a numeric numpy array's (or CSR/CSC matrix's) bytes; ``None`` for other values.

    It runs at memory speed (:func:`_checksum`), a small cost beside reading the values: it is what lets
    ``clear_cache()``, copies, views and writes keep an array that was changed in place
    (``np.log1p(X.data, out=X.data)``) instead of silently reverting it to the file's values.
    """
    buffers = _buffers(value)
    if buffers is None:
        return None
    check = 1
    for array in buffers:
        check = _checksum(np.ascontiguousarray(array), check)
    return check


def marker(cached: bool, staged: bool) -> str:
    """The repr marker of an element: ▲ for staged in memory, ᐁ for held in memory, else nothing."""
    return STAGED if staged else CACHED if cached else ""
