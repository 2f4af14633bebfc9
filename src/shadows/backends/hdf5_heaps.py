"""Check the HDF5 global heap collections an object's attributes point into, before HDF5 reads them.

Why this exists: h5py stores string attributes (every ``encoding-type``, ``column-order``, ...) as
variable-length strings, whose bytes live in *global heap collections* ("GCOL" blocks) elsewhere in the
file. When HDF5 loads a collection it walks its objects, each step advancing by the object's stored size;
an object whose index and size read 0 (zeroed or damaged bytes) makes it advance by nothing, and HDF5
(at least up to 2.0) spins there forever, inside one C call that holds the GIL: neither a timeout nor
Ctrl-C ends it. anndata hangs on such a file too.

So before any attribute of an HDF5 node is read, this module reads the node's object header itself
(h5py gives its address, ``h5o.get_info``), finds the attribute messages whose datatype is
variable-length, takes the collection addresses from their heap IDs and walks each collection the way
HDF5 will, refusing one that would not end. This is hand-written because no library reads HDF5's
on-disk structures below h5py (h5py exposes no raw attribute bytes, and a vlen read is what hangs). It
follows the HDF5 file format specification (version 3, sections III.A-C, IV.A.1, IV.A.2.d/f/m, IV.E):
object headers of version 1 and 2 with their continuation blocks, attribute messages of versions 1-3.
Whatever it does not know (attributes stored densely in a fractal heap, shared datatypes, drivers it
cannot read raw bytes from) it leaves to HDF5 unchecked; each collection is checked once per file.
"""

from __future__ import annotations

import collections
import os
import struct
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

#: Message types (HDF5 format spec IV.A.2): continuation, attribute.
_CONTINUATION, _ATTRIBUTE = 0x0010, 0x000C
#: Datatype class of variable-length sequences and strings.
_VLEN_CLASS = 9
#: HDF5 never makes a collection smaller than this (H5HG_MINSIZE); anything larger than the file is damage.
_MIN_COLLECTION = 4096
#: A safety bound on the continuation blocks followed per object header (a loop of them is damage too).
_MAX_BLOCKS = 1024

Reader = Callable[[int, int], bytes]
_UNKNOWN = object()


class DamagedHeap(Exception):
    """A global heap collection HDF5 cannot load; the message says where and why (no file name)."""


class _FileHeaps:
    """What is known of one open HDF5 file: how to read its bytes and the collections already checked."""

    def __init__(self, read: Reader, base: int, offset_size: int, length_size: int, size: int) -> None:
        self.read, self.base, self.size = read, base, size
        # HDF5 reports a dataset's and a chunk's address counting the userblock (``base``) from 1.14.4 on,
        # without it before; the addresses stored in the file (object headers, heap IDs) never count it
        self.data_base = 0 if _hdf5_version() >= (1, 14, 4) else base
        self.offset_size, self.length_size = offset_size, length_size
        self.fd: int | None = None  # the descriptor of a file read through its own (sec2)
        self.checked: set[int] = set()
        self.headers: set[int] = set()  # object headers whose attributes were checked
        self.values: set[int] = set()  # ... and datasets whose values were

    def unpack(self, data: bytes, at: int, width: int) -> int:
        return int.from_bytes(data[at : at + width], "little")


def _hdf5_version() -> tuple[int, ...]:
    import h5py

    return tuple(h5py.version.hdf5_version_tuple[:3])


#: What is known of each open HDF5 file, by its HDF5 identifier (the same integer for every ``FileID``
#: h5py makes of one open file: ``node.file`` makes a new one each time, so a cache keyed by those objects
#: forgot a file as soon as the lookup's own object went, and every node checked its collections again).
#: HDF5 does not reuse identifiers within a process; the file's descriptor is compared too, and the
#: least recently used files are forgotten past :data:`_FILES_KEPT`.
_files: collections.OrderedDict[int, _FileHeaps | None] = collections.OrderedDict()
_FILES_KEPT = 4096


def check_node(node: Any, display: str | None = None, path: str | None = None, values: bool = False) -> None:
    """Refuse an HDF5 node (an h5py group or dataset; anything else passes) whose attributes, or with
    ``values`` whose variable-length values (strings), point into a damaged global heap collection, with
    an :class:`~shadows.errors.UnreadableDataError` naming the file (``display``, else the file's name)
    and the element (``path``, else the node's name), before HDF5 loads the collection and hangs.
    """
    import h5py

    if not isinstance(node, h5py.HLObject):
        return  # a Zarr node: its attributes are JSON
    try:
        check_attribute_heaps(node)
        if values and isinstance(node, h5py.Dataset) and h5py.check_vlen_dtype(node.dtype) is not None:
            check_value_heaps(node)
    except DamagedHeap as error:
        from shadows.errors import UnreadableDataError, element_message

        what = (f"its metadata is damaged ({error}): HDF5 would hang reading it. The file is corrupted: "
                "restore it from a copy")
        where = display or node.file.filename
        raise UnreadableDataError(element_message(where, path or node.name or "/", what)) from None


def check_attribute_heaps(node: Any) -> None:
    """Raise :class:`DamagedHeap` if reading ``node``'s attributes (an h5py group or dataset) would make
    HDF5 load a damaged global heap collection; return quietly otherwise, or when it cannot tell.
    """
    heaps = _heaps_of(node.file)
    if heaps is None:
        return
    from h5py import h5o

    info = h5o.get_info(node.id)
    if info.num_attrs == 0 or info.addr in heaps.headers:
        return
    for collection in _vlen_collections(heaps, info.addr):
        if collection not in heaps.checked:
            _check_collection(heaps, collection)
            heaps.checked.add(collection)
    heaps.headers.add(info.addr)


def check_value_heaps(dataset: Any) -> None:
    """Raise :class:`DamagedHeap` if reading the variable-length values of ``dataset`` (an h5py dataset of
    strings, say ``obs/_index``) would make HDF5 load a damaged global heap collection.

    The heap IDs are read raw (16 bytes a value: a contiguous dataset in one read, a chunked one chunk by
    chunk, deflate decoded); a dataset stored another way is left to HDF5 unchecked.
    """
    from h5py import h5o

    heaps = _heaps_of(dataset.file)
    if heaps is None:
        return
    address = h5o.get_info(dataset.id).addr
    if address in heaps.values:
        return
    raw = _raw_values(heaps, dataset)
    if raw is None:
        return
    id_dtype = np.dtype([("length", "<u4"), ("collection", f"<u{heaps.offset_size}"), ("index", "<u4")])
    usable = len(raw) // id_dtype.itemsize * id_dtype.itemsize
    collections = np.unique(np.frombuffer(raw[:usable], dtype=id_dtype)["collection"])
    for collection in collections.tolist():
        if collection and collection not in heaps.checked:
            _check_collection(heaps, collection)
            heaps.checked.add(collection)
    heaps.values.add(address)


def _raw_values(heaps: _FileHeaps, dataset: Any) -> bytes | None:
    from h5py import h5d, h5z

    plist = dataset.id.get_create_plist()
    layout = plist.get_layout()
    if layout == h5d.CONTIGUOUS:
        offset = dataset.id.get_offset()
        if offset is None:
            return b""  # never written: no values, no heap
        return heaps.read(heaps.data_base + offset, dataset.id.get_storage_size())
    if layout != h5d.CHUNKED:
        return None
    filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    if any(f != h5z.FILTER_DEFLATE for f in filters):
        return None
    parts = []
    for i in range(dataset.id.get_num_chunks()):
        info = dataset.id.get_chunk_info(i)
        data = heaps.read(heaps.data_base + info.byte_offset, info.size)
        if filters and not info.filter_mask & 1:
            try:
                data = zlib.decompress(data)
            except zlib.error as error:
                raise DamagedHeap(f"a chunk at byte {info.byte_offset} does not decompress ({error})") from None
        parts.append(data)
    return b"".join(parts)


def _heaps_of(file: Any) -> _FileHeaps | None:
    fid = file.id
    key = fid.id
    known = _files.get(key, _UNKNOWN)
    if known is None or (known is not _UNKNOWN and known.fd == fid.get_vfd_handle()):
        _files.move_to_end(key)
        if known is not None:
            known.size = os.fstat(known.fd).st_size  # a file written through this process's handle grows
        return known
    heaps = None
    if file.driver == "sec2":
        fd = fid.get_vfd_handle()
        plist = fid.get_create_plist()
        offset_size, length_size = plist.get_sizes()
        size = os.fstat(fd).st_size

        def read(offset: int, count: int) -> bytes:
            return os.pread(fd, count, offset)

        heaps = _FileHeaps(read, plist.get_userblock(), offset_size, length_size, size)
        heaps.fd = fd
    _files[key] = heaps
    while len(_files) > _FILES_KEPT:
        _files.popitem(last=False)
    return heaps


# -- object headers --------------------------------------------------------------------------------


def _vlen_collections(heaps: _FileHeaps, address: int) -> set[int]:
    """The collection addresses the variable-length attributes of the object header at ``address`` use."""
    found: set[int] = set()
    for data in _attribute_messages(heaps, address):
        found.update(_collections_in_attribute(heaps, data))
    return found


def _attribute_messages(heaps: _FileHeaps, address: int) -> list[bytes]:
    """The data of every attribute message in the object header at ``address`` (both versions); an
    empty list where the header is not one this module reads (HDF5 then reports it itself).
    """
    start = heaps.base + address
    prefix = heaps.read(start, 16)
    if prefix[:4] == b"OHDR":
        return _messages_v2(heaps, start)
    if len(prefix) == 16 and prefix[0] == 1:
        return _messages_v1(heaps, start, prefix)
    return []


def _messages_v1(heaps: _FileHeaps, start: int, prefix: bytes) -> list[bytes]:
    count, first_size = struct.unpack_from("<H", prefix, 2)[0], struct.unpack_from("<I", prefix, 8)[0]
    blocks = [(start + 16, first_size)]
    found: list[bytes] = []
    seen = 0
    while blocks and seen < count and len(blocks) <= _MAX_BLOCKS:
        at, size = blocks.pop(0)
        block = heaps.read(at, size)
        pos = 0
        while pos + 8 <= len(block) and seen < count:
            kind, length = struct.unpack_from("<HH", block, pos)
            data = block[pos + 8 : pos + 8 + length]
            seen += 1
            if kind == _ATTRIBUTE:
                found.append(data)
            elif kind == _CONTINUATION:
                blocks.append(_continuation(heaps, data))
            pos += 8 + length
    return found


def _messages_v2(heaps: _FileHeaps, start: int) -> list[bytes]:
    head = heaps.read(start, 4 + 2 + 16 + 4 + 8)
    flags = head[5]
    pos = 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
    width = 1 << (flags & 0x03)
    first_size = heaps.unpack(head, pos, width)
    blocks = [(start + pos + width, first_size, False)]
    creation_order = 2 if flags & 0x04 else 0
    found: list[bytes] = []
    followed = 0
    while blocks and followed <= _MAX_BLOCKS:
        at, size, is_continuation = blocks.pop(0)
        followed += 1
        block = heaps.read(at, size)
        pos = 4 if is_continuation else 0  # a continuation block starts with "OCHK"
        end = len(block) - (4 if is_continuation else 0)  # ... and ends with its checksum
        header = 4 + creation_order
        while pos + header <= end:
            kind, length = block[pos], struct.unpack_from("<H", block, pos + 1)[0]
            data = block[pos + header : pos + header + length]
            if kind == _ATTRIBUTE:
                found.append(data)
            elif kind == _CONTINUATION:
                at_next, size_next = _continuation(heaps, data)
                blocks.append((at_next, size_next, True))
            pos += header + length
    return found


def _continuation(heaps: _FileHeaps, data: bytes) -> tuple[int, int]:
    offset = heaps.unpack(data, 0, heaps.offset_size)
    length = heaps.unpack(data, heaps.offset_size, heaps.length_size)
    return heaps.base + offset, length


# -- attribute messages ----------------------------------------------------------------------------


def _collections_in_attribute(heaps: _FileHeaps, data: bytes) -> set[int]:
    """The collections the values of one attribute message point into (none unless it is variable-length)."""
    if len(data) < 8:
        return set()
    version, flags = data[0], data[1]
    name_size, type_size, space_size = struct.unpack_from("<HHH", data, 2)
    if version == 1:
        pos = 8
        pad = _pad8
    elif version in (2, 3):
        pos = 8 if version == 2 else 9
        pad = _no_pad
    else:
        return set()
    if flags & 0x01:
        return set()  # a shared (committed) datatype: its class is stored elsewhere
    pos += pad(name_size)
    datatype = data[pos : pos + type_size]
    pos += pad(type_size)
    dataspace = data[pos : pos + space_size]
    pos += pad(space_size)
    if not datatype or datatype[0] & 0x0F != _VLEN_CLASS or flags & 0x02:
        return set()
    element_size = struct.unpack_from("<I", datatype, 4)[0]
    count = _element_count(dataspace)
    values = data[pos:]
    id_width = 4 + heaps.offset_size + 4  # sequence length, collection address, object index
    if element_size < id_width or count is None:
        return set()
    found = set()
    for i in range(min(count, len(values) // element_size)):
        at = i * element_size + 4
        address = heaps.unpack(values, at, heaps.offset_size)
        if address:  # 0: an empty string, stored without a heap object
            found.add(address)
    return found


def _element_count(dataspace: bytes) -> int | None:
    if len(dataspace) < 4:
        return None
    version, rank = dataspace[0], dataspace[1]
    if version == 1:
        dims_at = 8
    elif version == 2:
        if dataspace[3] == 2:  # a null dataspace
            return 0
        dims_at = 4
    else:
        return None
    count = 1
    for i in range(rank):
        count *= int.from_bytes(dataspace[dims_at + 8 * i : dims_at + 8 * i + 8], "little")
    return count


def _pad8(size: int) -> int:
    return (size + 7) // 8 * 8


def _no_pad(size: int) -> int:
    return size


# -- global heap collections -----------------------------------------------------------------------


def _check_collection(heaps: _FileHeaps, address: int) -> None:
    """Walk the collection at ``address`` as HDF5's loader does (H5HG__cache_heap_deserialize) and raise
    :class:`DamagedHeap` where that walk would not advance or would run past the collection.
    """
    at = heaps.base + address
    header_size = 8 + heaps.length_size
    head = heaps.read(at, header_size)
    where = f"the global heap collection at byte {at}"
    if head[:4] != b"GCOL":
        return  # HDF5 refuses a collection without its signature itself (an error, no hang)
    size = heaps.unpack(head, 8, heaps.length_size)
    if size < _MIN_COLLECTION or at + size > heaps.size:
        return  # ... and one it cannot read whole
    chunk = heaps.read(at, size)
    # index (2), reference count (2), reserved (4), size: one unpack per object
    width = {2: "H", 4: "I", 8: "Q"}.get(heaps.length_size)
    if width is None:
        return  # lengths of a size HDF5 files do not use in practice: left to HDF5
    object_header = struct.Struct(f"<H6x{width}")
    pos = header_size
    while pos < size:
        if pos + object_header.size > size:
            return  # too small for an object: HDF5 takes it as free space
        index, length = object_header.unpack_from(chunk, pos)
        need = object_header.size + _pad8(length) if index > 0 else length
        if need == 0:
            raise DamagedHeap(f"{where} holds an object of index 0 and size 0 at byte {at + pos}, on which "
                              "HDF5's reader would loop forever")
        if pos + need > size:
            raise DamagedHeap(f"{where} holds an object at byte {at + pos} that runs {pos + need - size} "
                              "bytes past the collection")
        pos += need
