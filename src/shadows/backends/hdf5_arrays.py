"""HDF5 datasets (h5py) as :class:`~shadows.backends.abc.StoredArray`: plain reads, and scattered ranges
read at HDF5's byte offsets or as HDF5 selections, the way chosen once when the dataset is wrapped.

Scattered ranges (:meth:`~shadows.backends.abc.StoredArray.read_ranges`):

- ``"preads"``: an uncompressed dataset of a file open read-only with HDF5's default driver is read at the
  byte offsets HDF5 reports, one ``pread`` per range (:mod:`shadows.backends.hdf5_raw`). Whether a dataset
  qualifies is declared from its metadata when wrapped (:func:`shadows.backends.hdf5_raw.eligible`); its
  offsets are looked up on its first read of ranges (walking its chunk index costs, and is not needed to
  plan). Should HDF5's offsets then prove unusable (a chunk never written, an address HDF5 misreports),
  the dataset goes through HDF5's selections from then on and its capabilities say so.
- ``"hyperslab-unions"``: any other dataset is read in few calls, each a selection that is the union of
  up to ``HYPERSLABS_PER_READ`` ranges (h5py's high-level indexing takes one range per call, and each
  call costs about as much as reading a short row).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from shadows.backends import hdf5_raw
from shadows.backends.abc import Capabilities, StoredArray, register
from shadows.backends.nodes import is_string_dtype

#: Rows between two selected rows that are read anyway rather than split into two reads (a read of
#: an array of positions: :func:`read_values`).
COALESCE_GAP_ROWS = 1024
#: Ranges joined into one HDF5 selection per read call (``"hyperslab-unions"``). HDF5 builds and walks a
#: union of hyperslabs in time that grows faster than their count: 10,000 row ranges of the 1M-cell
#: benchmark file took 2.1 s as one selection and 0.17 s as reads of 64-256 ranges (1,024: 0.21 s;
#: 2,500: 0.38 s; one h5py call per range: 0.20 s), measured on its warm X/data.
HYPERSLABS_PER_READ = 256


def _h5py():
    import h5py

    return h5py


def _takes(node: Any) -> bool:
    return isinstance(node, _h5py().Dataset)


@register(_takes)
class Hdf5Array(StoredArray):
    """An ``h5py.Dataset``."""

    def __init__(self, node: Any):
        super().__init__(node)
        raw = hdf5_raw.eligible(node)
        chunks = node.chunks
        self.capabilities = Capabilities(
            ranges="preads" if raw else "hyperslab-unions",
            decode_unit=int(chunks[0]) if chunks else None,
            unit_reads=False, bounded_ranges=True, costly_ranges=not raw, parallel_reads=False,
            writable=node.file.mode != "r", remote=node.file.driver == "fileobj")

    def _read(self, selection: Any, decode: bool) -> np.ndarray:
        return read_values(self.node, selection, decode)

    def _read_ranges(self, starts: np.ndarray, lengths: np.ndarray, out: np.ndarray) -> None:
        if self.capabilities.ranges == "preads":
            raw = hdf5_raw.layout(self.node)  # looked up once per dataset object (its file still open)
            if raw is not None:
                hdf5_raw.read_ranges(raw, starts, lengths, out)
                return
            if self.node.id.valid:  # HDF5's offsets do not hold for this dataset: its selections from now on
                self.capabilities = dataclasses.replace(self.capabilities, ranges="hyperslab-unions",
                                                        costly_ranges=True)
        read_hyperslab_unions(self.node, starts, lengths, out)


def read_values(node: Any, selection: Any, decode: bool = True) -> np.ndarray:
    """``node[selection]`` (see :meth:`~shadows.backends.abc.StoredArray.read`); an increasing integer
    array of first-axis positions is read as a few contiguous spans (h5py's point selection is slow).
    """
    if isinstance(selection, np.ndarray):
        return _read_spans(node, selection, decode)
    if decode and is_string_dtype(node):
        h5py = _h5py()
        if node.dtype.kind == "S" or h5py.check_string_dtype(node.dtype) is not None:
            out = node.asstr()[selection]
        else:
            out = node[selection]
        return np.asarray(out, dtype=object) if isinstance(out, np.ndarray) else out
    return node[selection]


def row_spans(rows: np.ndarray, gap: int = COALESCE_GAP_ROWS) -> list[tuple[int, int, np.ndarray]]:
    """Group increasing positions into spans ``(start, stop, positions - start)``, merging small gaps."""
    if rows.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(rows) > gap) + 1
    spans = []
    for part in np.split(rows, breaks):
        start = int(part[0])
        spans.append((start, int(part[-1]) + 1, part - start))
    return spans


def _read_spans(node: Any, rows: np.ndarray, decode: bool = True) -> np.ndarray:
    spans = row_spans(rows)
    if not spans:
        return read_values(node, slice(0, 0), decode)
    parts = [read_values(node, slice(start, stop), decode)[offsets] for start, stop, offsets in spans]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def read_hyperslab_unions(node: Any, starts: np.ndarray, lengths: np.ndarray, out: np.ndarray) -> None:
    """Scattered ranges of a dataset through HDF5: ``HYPERSLABS_PER_READ`` ranges per read call."""
    h5s = _h5py().h5s
    at = 0
    for first in range(0, starts.size, HYPERSLABS_PER_READ):
        batch_starts = starts[first : first + HYPERSLABS_PER_READ].tolist()
        batch_lengths = lengths[first : first + HYPERSLABS_PER_READ].tolist()
        count = sum(batch_lengths)
        if not count:
            continue
        file_space = node.id.get_space()
        file_space.select_none()
        for start, length in zip(batch_starts, batch_lengths, strict=True):
            if length:
                file_space.select_hyperslab((start,), (length,), op=h5s.SELECT_OR)
        node.id.read(h5s.create_simple((count,)), file_space, out[at : at + count])
        at += count
