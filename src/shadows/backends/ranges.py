"""Ranges of a one-dimensional array: cut at the edges of its chunks (what the readers that take values
straight from a file, :mod:`shadows.backends.hdf5_raw` and :mod:`shadows.backends.zarr_shards`, read per
chunk), and turned into the positions they hold.
"""

from __future__ import annotations

import numpy as np


def chunk_pieces(starts: np.ndarray, lengths: np.ndarray, chunk: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The ranges ``[starts[i], starts[i] + lengths[i])``, read one after another into an output, cut
    where they cross a multiple of ``chunk``; empty ranges give no piece.

    Returns, per piece in the ranges' order: its chunk, its first position inside that chunk, its length
    and its position in the output (all int64).
    """
    starts, lengths = starts.astype(np.int64, copy=False), lengths.astype(np.int64, copy=False)
    at = np.cumsum(lengths) - lengths
    keep = lengths > 0
    starts, lengths, at = starts[keep], lengths[keep], at[keep]
    stops = starts + lengths
    first, last = starts // chunk, (stops - 1) // chunk
    per_range = last - first + 1
    owner = np.repeat(np.arange(starts.size), per_range)
    chunks = first[owner] + np.arange(owner.size) - np.repeat(np.cumsum(per_range) - per_range, per_range)
    lo = np.maximum(starts[owner], chunks * chunk)
    hi = np.minimum(stops[owner], (chunks + 1) * chunk)
    return chunks, lo - chunks * chunk, hi - lo, at[owner] + (lo - starts[owner])


def concatenated_ranges(firsts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The positions ``firsts[i] : firsts[i] + counts[i]``, one range after another."""
    total = int(counts.sum())
    return np.repeat(firsts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts) + np.arange(total)
