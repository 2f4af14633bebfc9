"""Scattered ranges of an uncompressed HDF5 dataset read straight from the file, at the byte offsets
HDF5 itself reports for its storage.

HDF5 spends about 12 µs per range of a selection (a union of hyperslabs,
:func:`shadows.backends.hdf5_arrays.read_hyperslab_unions`): for the 256 scattered rows of a training
minibatch that is most of the batch's time, and no HDF5 or h5py call reads many ranges faster. When a
dataset's values lie in the file as they are (no filter, native byte order, contiguous or in allocated
chunks), each range is a byte range of the file: one ``pread`` into the destination buffer per range
(per piece of a range that crosses a chunk boundary). h5py gives what this needs: the file's descriptor
(``get_vfd_handle``), a contiguous dataset's offset and each chunk's (``chunk_iter``, HDF5 ≥ 1.12.3);
nothing is guessed from the format.

Only for files this process holds open read-only with HDF5's default file driver: while a file is open
for writing, values written through h5py may still sit in HDF5's caches, not in the file. Whether a
dataset qualifies is said from its metadata alone (:func:`eligible`: what a wrapped dataset declares,
:mod:`shadows.backends.hdf5_arrays`); what its layout is gets looked up once per dataset object (the
read handle's node cache keeps them; a handle opened anew after a write has new objects and new
layouts), and checked then: the first and last values of the dataset read both ways must agree (HDF5
before 1.14.4 reported chunk addresses without the file's userblock, which ``.h5mu`` files have: such
files are left to HDF5, and are not eligible to begin with). The reads go through the
descriptor HDF5 holds (the process keeps one per file), checked before each batch of reads to still be
that file (its device and inode), so a number a closed file gave back and another file took is not read.
"""

from __future__ import annotations

import os
import threading
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from shadows.backends.ranges import chunk_pieces

_H5D_CONTIGUOUS, _H5D_CHUNKED = 1, 2
_layouts: weakref.WeakKeyDictionary[Any, RawLayout | None] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


@dataclass(frozen=True)
class RawLayout:
    """Where a 1-d dataset of ``size`` values lies in its file: ``starts[i]`` is the byte offset of the
    values from position ``i * chunk`` on (one entry and ``chunk`` 0 for a contiguous dataset), read
    through the descriptor ``fd`` of the file ``file_id``.
    """

    fd: int
    itemsize: int
    chunk: int
    starts: np.ndarray
    size: int
    file_id: tuple[int, int]  # the file's (device, inode), as fstat gives them for fd


def layout(dataset: Any) -> RawLayout | None:
    """The raw layout of ``dataset`` (an ``h5py.Dataset``), or ``None`` when its values must go through
    HDF5 (filters, another byte order or dimensionality, a file open for writing or through another
    driver, external or virtual storage, unallocated chunks).
    """
    if not dataset.id.valid:  # its file was closed: the descriptor may be another file's by now
        return None
    try:
        return _layouts[dataset]
    except KeyError:
        pass
    found = _find(dataset)
    if found is not None and not _agrees(dataset, found):
        found = None
    with _lock:
        _layouts[dataset] = found
    return found


def eligible(dataset: Any) -> bool:
    """Whether ``dataset``'s values lie in its file as they are, as far as its metadata says (no chunk
    index walked, nothing read): the conditions of :func:`layout` but its chunks being all allocated and
    HDF5's offsets agreeing with its reads, which :func:`layout` finds out on first use. A dataset
    declared so is read by ``pread`` (:mod:`shadows.backends.hdf5_arrays`).
    """
    if not dataset.id.valid:
        return False
    file = dataset.file
    dtype = dataset.dtype
    if not hasattr(os, "preadv") or file.mode != "r" or file.driver != "sec2" or dataset.ndim != 1 \
            or dtype.kind not in "biuf" or not dtype.isnative or dataset.size == 0:
        return False
    plist = dataset.id.get_create_plist()
    if plist.get_nfilters() or plist.get_external_count():
        return False
    kind = plist.get_layout()
    if kind == _H5D_CONTIGUOUS:
        return dataset.id.get_offset() is not None
    if kind != _H5D_CHUNKED or not hasattr(dataset.id, "chunk_iter"):
        return False
    import h5py

    # HDF5 before 1.14.4 reports chunk addresses without the userblock (.h5mu files have one): the check
    # of :func:`_agrees` would refuse them, so they are not declared raw at all
    return file.userblock_size == 0 or h5py.version.hdf5_version_tuple >= (1, 14, 4)


def _find(dataset: Any) -> RawLayout | None:
    """The layout as HDF5 reports it, reading through the file's own descriptor."""
    if not eligible(dataset):
        return None
    file = dataset.file
    dtype = dataset.dtype
    plist = dataset.id.get_create_plist()
    fd, size = file.id.get_vfd_handle(), int(dataset.size)
    stat = os.fstat(fd)
    file_id = (stat.st_dev, stat.st_ino)
    kind = plist.get_layout()
    if kind == _H5D_CONTIGUOUS:
        offset = dataset.id.get_offset()
        if offset is None:
            return None
        return RawLayout(fd, dtype.itemsize, 0, np.array([offset], dtype=np.int64), size, file_id)
    chunk = int(dataset.chunks[0])
    found: dict[int, int] = {}
    dataset.id.chunk_iter(lambda info: found.__setitem__(int(info.chunk_offset[0]) // chunk, int(info.byte_offset)))
    n_chunks = -(-size // chunk)
    if len(found) != n_chunks:  # unallocated chunks read as the fill value: HDF5's to give
        return None
    starts = np.array([found[i] for i in range(n_chunks)], dtype=np.int64)
    return RawLayout(fd, dtype.itemsize, chunk, starts, size, file_id)


def _agrees(dataset: Any, raw: RawLayout) -> bool:
    """Whether up to 64 values at the start of the dataset and at the start of its last chunk (or its end)
    read the same through the layout as through HDF5: addresses misreported by the library (the
    userblock before HDF5 1.14.4) fail here.
    """
    import h5py

    last = (raw.size - 1) // raw.chunk * raw.chunk if raw.chunk else max(raw.size - 64, 0)
    starts = np.unique([0, last])
    lengths = np.minimum(64, raw.size - starts)
    got = np.empty(int(lengths.sum()), dtype=dataset.dtype)
    try:
        read_ranges(raw, starts, lengths, got)
    except OSError:
        return False
    expected = np.empty_like(got)
    at = 0
    for start, count in zip(starts.tolist(), lengths.tolist(), strict=True):  # through HDF5, in one call each
        file_space = dataset.id.get_space()
        file_space.select_hyperslab((start,), (count,))
        dataset.id.read(h5py.h5s.create_simple((count,)), file_space, expected[at : at + count])
        at += count
    return got.tobytes() == expected.tobytes()


def read_ranges(raw: RawLayout, starts: np.ndarray, lengths: np.ndarray, out: np.ndarray) -> None:
    """Read the ranges ``[starts[i], starts[i] + lengths[i])`` of the dataset one after another into
    ``out`` (C-contiguous, of the dataset's dtype), one ``pread`` per range and chunk it lies in.
    """
    starts = starts.astype(np.int64, copy=False)
    lengths = lengths.astype(np.int64, copy=False)
    if starts.size and (starts.min() < 0 or (starts + lengths).max() > raw.size):
        raise ValueError(f"ranges outside the dataset's {raw.size} values")
    if out.itemsize != raw.itemsize or not out.flags.c_contiguous or out.size != int(lengths.sum()):
        raise ValueError("the destination is not a contiguous buffer of the ranges' values")
    try:
        stat = os.fstat(raw.fd)
    except OSError:
        stat = None
    if stat is None or (stat.st_dev, stat.st_ino) != raw.file_id:
        raise OSError("the HDF5 file was closed while being read")
    # a contiguous dataset is one chunk; a range crossing chunk edges is read piece by piece (rare for rows
    # in large chunks)
    chunks, within, lengths, at = chunk_pieces(starts, lengths, raw.chunk or raw.size)
    offsets = raw.starts[chunks] + within * raw.itemsize
    view = memoryview(out).cast("B")
    size = raw.itemsize
    for offset, begin, count in zip(offsets.tolist(), (at * size).tolist(), (lengths * size).tolist(), strict=True):
        while count:  # a read returns at most about 2 GiB (Linux), or less than asked near the end
            got = os.preadv(raw.fd, [view[begin : begin + count]], offset)
            if got <= 0:
                raise OSError(f"read nothing at offset {offset} ({count} bytes to go): the file is shorter "
                              "than HDF5 says")
            offset, begin, count = offset + got, begin + got, count - got

