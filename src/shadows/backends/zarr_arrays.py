"""Zarr arrays as :class:`~shadows.backends.abc.StoredArray`: plain reads, and scattered ranges read from
shard files, as slices of whole chunks or as orthogonal selections, the way chosen once when the array
is wrapped.

Scattered ranges (:meth:`~shadows.backends.abc.StoredArray.read_ranges`), the first way that applies:

- ``"shard-reads"``: a local sharded array in the layouts :mod:`shadows.backends.zarr_shards` takes
  (anndata 0.13's) is read from its shard files, each touched inner chunk decoded once on a thread per
  core;
- ``"whole-chunks"``: an array zarrs decodes (:mod:`shadows.backends.zarr_pipeline`), as slices of the
  whole chunks the ranges touch (zarrs hands integer selections back to zarr's pipeline);
- ``"positions"``: any other array as one orthogonal selection of the ranges' positions per
  ``ZARR_POSITIONS_PER_READ`` values: zarr then decodes each chunk (or a shard's inner chunk) the ranges
  touch once, concurrently.

The way depends on the array's metadata, its store and the codec pipeline it was opened with (zarr's
configuration then): a read handle's arrays are looked up once per choice of pipeline
(:func:`shadows.backends.handles.read_node`), and wrapped once each.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shadows.backends import zarr_shards
from shadows.backends.abc import Capabilities, StoredArray, register
from shadows.backends.nodes import is_string_dtype, read_chunks
from shadows.backends.ranges import concatenated_ranges
from shadows.backends.zarr_pipeline import uses_zarrs

#: Values one Zarr read of scattered ranges selects (``"positions"``; its positions take 8 bytes each).
#: One orthogonal selection instead of a call per range: zarr decodes each chunk the ranges touch once
#: and concurrently; 1 % of the rows of the 100k-cell benchmark store took 1.0 s range by range and 0.3 s
#: as one selection (X/data, Zarr v3 sharded; v2: 0.58 s and 0.15 s).
ZARR_POSITIONS_PER_READ = 1 << 21
#: Values one read of an array zarrs decodes takes (``"whole-chunks"``): whole chunks, as a slice. Of the
#: 100k-cell benchmark store in anndata 0.13's layout (Zarr v3 sharded), 1 % of the rows (X/data and
#: X/indices) took 0.36 s as orthogonal selections, which zarrs hands back to zarr's pipeline, and as
#: slices of the chunks they touch 0.30 s in slices of 2M or 4M values, 0.27 s of 8M, 0.28 s of 16M.
ZARRS_VALUES_PER_READ = 1 << 23


def _takes(node: Any) -> bool:
    import zarr

    return isinstance(node, zarr.Array)


@register(_takes)
class ZarrArray(StoredArray):
    """A ``zarr.Array`` (format 2 or 3)."""

    def __init__(self, node: Any):
        from zarr.storage import FsspecStore

        super().__init__(node)
        self._shards = zarr_shards.layout(node)
        if self._shards is not None:
            ranges = "shard-reads"
        elif uses_zarrs(node):
            ranges = "whole-chunks"
        else:
            ranges = "positions"
        sharded = getattr(node, "shards", None) is not None
        unit = read_chunks(node)
        store = node.store
        self.capabilities = Capabilities(
            ranges=ranges, decode_unit=int(unit[0]) if unit else None, unit_reads=True,
            bounded_ranges=not (ranges == "positions" and sharded), costly_ranges=False, parallel_reads=True,
            writable=not store.read_only, remote=isinstance(getattr(store, "wrapped", store), FsspecStore))

    def _read(self, selection: Any, decode: bool) -> np.ndarray:
        return read_values(self.node, selection, decode)

    def _read_ranges(self, starts: np.ndarray, lengths: np.ndarray, out: np.ndarray) -> None:
        if self._shards is not None:
            zarr_shards.read_ranges(self._shards, starts, lengths, out)
        elif self.capabilities.ranges == "whole-chunks":
            read_whole_chunks(self.node, starts, lengths, out)
        else:
            read_positions(self.node, starts, lengths, out)


def read_values(node: Any, selection: Any, decode: bool = True) -> np.ndarray:
    """``node[selection]`` (see :meth:`~shadows.backends.abc.StoredArray.read`): an integer array of
    positions as an orthogonal selection; text decoded to ``str`` objects unless ``decode`` is false.
    """
    out = node.oindex[selection] if isinstance(selection, np.ndarray) else node[selection]
    if decode and is_string_dtype(node) and isinstance(out, np.ndarray):
        out = out.astype(object)
        if out.size and isinstance(out.flat[0], bytes):
            out = np.vectorize(bytes.decode, otypes=[object])(out)
    return out


def read_positions(node: Any, starts: np.ndarray, lengths: np.ndarray, out: np.ndarray) -> None:
    """``"positions"``: the ranges' positions as orthogonal selections of at most about
    ``ZARR_POSITIONS_PER_READ`` values (a range is never split).
    """
    ends = np.cumsum(lengths)
    first, at = 0, 0
    while first < starts.size:
        last = max(int(np.searchsorted(ends, at + ZARR_POSITIONS_PER_READ, side="right")), first + 1)
        count = int(ends[last - 1]) - at
        out[at : at + count] = node.oindex[concatenated_ranges(starts[first:last], lengths[first:last])]
        first, at = last, at + count


def read_whole_chunks(node: Any, starts: np.ndarray, lengths: np.ndarray, out: np.ndarray) -> None:
    """``"whole-chunks"``: the chunks the ranges touch (a shard's inner chunks), as slices of at most
    ``ZARRS_VALUES_PER_READ`` values over runs of touched chunks (joined across one untouched chunk), the
    ranges' values copied out of each. zarrs decodes a slice's chunks in parallel; memory holds one slice
    beside ``out``.
    """
    chunk = int(node.chunks[0])
    step = max(chunk, ZARRS_VALUES_PER_READ // chunk * chunk)
    keep = lengths > 0
    starts, lengths = starts[keep], lengths[keep]
    stops = starts + lengths
    out_at = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    first, last = starts // chunk, (stops - 1) // chunk
    breaks = np.flatnonzero(first[1:] > last[:-1] + 2) + 1  # ranges are increasing: so are first and last
    run_lo = first[np.concatenate([[0], breaks])] * chunk
    run_hi = np.minimum((last[np.concatenate([breaks - 1, [last.size - 1]])] + 1) * chunk, node.shape[0])
    for lo, hi in zip(run_lo.tolist(), run_hi.tolist(), strict=True):
        for begin in range(lo, hi, step):
            end = min(begin + step, hi)
            a, b = int(np.searchsorted(stops, begin, side="right")), int(np.searchsorted(starts, end))
            clipped_lo, clipped_hi = np.maximum(starts[a:b], begin), np.minimum(stops[a:b], end)
            counts = clipped_hi - clipped_lo
            block = node[begin:end]
            source = concatenated_ranges(clipped_lo - begin, counts)
            target = concatenated_ranges(out_at[a:b] + (clipped_lo - starts[a:b]), counts)
            out[target] = block[source]
