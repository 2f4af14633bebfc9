"""A Zarr store wrapper that checks Blosc-compressed chunks before zarr decodes them.

numcodecs' Blosc decoder (c-blosc 1) is given a chunk without its length: it trusts the sizes written in
the chunk's 16-byte header. A chunk cut short or with its header damaged is decompressed past the end of
its bytes (zarr, anndata and a shadow then return whatever memory lies there, and two reads differ), or
crashes the process; a header claiming a huge decompressed size allocates it. zarr does not check this,
and its codec pipeline has no per-array hook that would not change every zarr read of the process (the
codec registries are global), so shadows checks the bytes on their way out of the store: for chunks of
arrays whose chunks Blosc compresses last (format 2's ``compressor``, or format 3's ``blosc`` codec outside
a shard), the header's compressed size must be the chunk's length and, for fixed-size data types without
filters, its decompressed size the chunk's size. A failed check raises
:class:`~shadows.errors.UnreadableDataError` naming the store and the chunk.

Inner chunks of a sharded array are read by byte ranges and pass unchecked; format 3 stores compress with
Zstandard unless asked otherwise, whose frames carry their own sizes and which checks them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from zarr.storage import WrapperStore

from shadows.backends.nodes import store_location
from shadows.backends.zarr_meta import array_dtype
from shadows.errors import UnreadableDataError

#: c-blosc 1's header: version, compressor version, flags, type size, then three little-endian uint32:
#: decompressed size, block size, compressed size (the header included).
_HEADER = np.dtype([("version", "u1"), ("versionlz", "u1"), ("flags", "u1"), ("typesize", "u1"),
                    ("nbytes", "<u4"), ("blocksize", "<u4"), ("cbytes", "<u4")])
_METADATA_NAMES = {".zarray", ".zgroup", ".zattrs", ".zmetadata", "zarr.json"}


@dataclass(frozen=True)
class BloscChunks:
    """What a Blosc-compressed array's chunks must look like: ``nbytes`` decompressed (``None``: not
    known from the metadata alone, as for strings or with filters).
    """

    nbytes: int | None

    def check(self, head: bytes, size: int, where: str) -> None:
        """Raise :class:`UnreadableDataError` unless a chunk of ``size`` bytes starting with ``head`` (at
        least its first 16 bytes) holds a whole Blosc frame.
        """
        if size < _HEADER.itemsize:
            problem = f"{size} bytes, shorter than a Blosc header ({_HEADER.itemsize})"
        else:
            header = np.frombuffer(head[: _HEADER.itemsize], dtype=_HEADER)[0]
            problem = ""
            if int(header["cbytes"]) != size:
                problem = f"its header says {int(header['cbytes'])} compressed bytes, the chunk holds {size}"
            elif self.nbytes is not None and int(header["nbytes"]) != self.nbytes:
                problem = (f"its header says {int(header['nbytes'])} bytes decompressed, the array's chunks "
                           f"hold {self.nbytes}")
        if problem:
            raise UnreadableDataError(f"{where}: a damaged Blosc-compressed chunk ({problem}). The store is "
                                      "corrupt there: write this element again from a good copy.")


def blosc_chunks(metadata: dict[str, Any]) -> BloscChunks | None:
    """How the chunks of the array described by ``metadata`` (its ``.zarray`` or ``zarr.json``) are
    checked, or ``None``: not an array, or its chunks are not Blosc frames as stored.
    """
    if metadata.get("zarr_format") == 3:
        if metadata.get("node_type") != "array":
            return None
        codecs = [c.get("name") if isinstance(c, dict) else c for c in metadata.get("codecs", [])]
        if not codecs or codecs[-1] != "blosc":
            return None
        shape = metadata.get("chunk_grid", {}).get("configuration", {}).get("chunk_shape")
        plain = codecs in (["bytes", "blosc"], ["blosc"])
        return BloscChunks(_fixed_size(metadata, shape) if plain else None)
    compressor = metadata.get("compressor")
    if not isinstance(compressor, dict) or compressor.get("id") != "blosc":
        return None
    plain = not metadata.get("filters")
    return BloscChunks(_fixed_size(metadata, metadata.get("chunks")) if plain else None)


def _fixed_size(metadata: dict[str, Any], chunk_shape: Any) -> int | None:
    """Bytes of one chunk of ``chunk_shape`` of the array ``metadata`` describes, or ``None`` for a type
    without a fixed size or metadata this cannot read (zarr reports that when it reads the array).
    """
    if not isinstance(chunk_shape, (list, tuple)):
        return None
    try:
        parsed = array_dtype(metadata)
    except Exception:  # numpy and zarr raise TypeError, ValueError, SyntaxError... for what they cannot parse
        return None
    if parsed.kind in "OUSV" or parsed.hasobject:  # text and structured: leave them to the decoders
        return None
    return parsed.itemsize * math.prod(int(n) for n in chunk_shape)


class ChunkCheckingStore(WrapperStore):
    """Delegates to the wrapped store; checks each whole chunk of a Blosc-compressed array it returns.

    Which arrays compress with Blosc is learnt the first time one of its chunks is read: from the
    consolidated metadata once :meth:`describe` has given it, else from the array's own metadata file (one
    small read per node per store object). Attributes the wrapper does not have
    (``root``, ``fs``, ``path``) are the wrapped store's.
    """

    def __init__(self, store: Any) -> None:
        super().__init__(store)
        self._inner = store  # zarr's WrapperStore keeps it as ``_store`` too
        self._nodes: dict[str, BloscChunks | bool | None] = {}
        self._format: int | None = None
        self._consolidated: Any = None

    def describe(self, root: Any) -> None:
        """Learn the store's format and consolidated metadata from its opened root group ``root`` (the
        arrays are then looked up there, without reading their metadata files again).
        """
        self._format = root.metadata.zarr_format
        self._consolidated = root.metadata.consolidated_metadata

    @property
    def wrapped(self) -> Any:
        """The store this one checks the chunks of."""
        return self._inner

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_store", "_inner"):
            raise AttributeError(name)
        return getattr(self._inner, name)

    def __str__(self) -> str:
        return str(self._inner)

    def __repr__(self) -> str:
        return f"ChunkCheckingStore({self._inner!r})"

    def _with_store(self, store: Any) -> ChunkCheckingStore:
        """A copy of the wrapper over ``store`` (zarr makes them: ``with_read_only``), knowing what it learnt."""
        copy = type(self)(store)
        copy._nodes, copy._format, copy._consolidated = self._nodes, self._format, self._consolidated
        return copy

    # what the store learnt of the arrays goes with a change of metadata through it (a shadow open "r+"
    # hands out its writable group as shadow.file)
    def _forget(self, key: str) -> None:
        if key.rsplit("/", 1)[-1] in _METADATA_NAMES or key in ("", "/"):
            self._nodes = {}
            self._consolidated = None

    async def set(self, key: str, value: Any) -> None:
        self._forget(key)
        await self._inner.set(key, value)

    async def set_if_not_exists(self, key: str, value: Any) -> None:
        self._forget(key)
        await self._inner.set_if_not_exists(key, value)

    async def delete(self, key: str) -> None:
        self._forget(key)
        await self._inner.delete(key)

    async def delete_dir(self, prefix: str) -> None:
        self._nodes, self._consolidated = {}, None
        await self._inner.delete_dir(prefix)

    async def clear(self) -> None:
        self._nodes, self._consolidated = {}, None
        await self._inner.clear()

    # zarr's WrapperStore does not delegate these: Store's own getsize would read the whole value
    async def getsize(self, key: str) -> int:
        return await self._inner.getsize(key)

    async def getsize_prefix(self, prefix: str) -> int:
        return await self._inner.getsize_prefix(prefix)

    @property
    def supports_consolidated_metadata(self) -> bool:
        return self._inner.supports_consolidated_metadata

    async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
        buffer = await self._inner.get(key, prototype, byte_range)
        if buffer is None or byte_range is not None or key.rsplit("/", 1)[-1] in _METADATA_NAMES:
            return buffer
        array, chunks = await self._array_of(key)
        if chunks is not None:
            where = f"{store_location(self._inner)}: element {array!r}, chunk {key[len(array) + 1:]!r}"
            chunks.check(buffer[: _HEADER.itemsize].to_bytes(), len(buffer), where)
        return buffer

    async def _get_many(self, requests: Any) -> Any:
        """As zarr's, through :meth:`get` (so that the chunks it returns are checked too)."""
        for key, prototype, byte_range in requests:
            yield key, await self.get(key, prototype, byte_range)

    async def _array_of(self, key: str) -> tuple[str, BloscChunks | None]:
        """The array the chunk at ``key`` belongs to (the first of its parent paths that is an array) and
        the checks of its chunks (``None``: none).
        """
        parts = key.split("/")
        for end in range(1, len(parts)):
            path = "/".join(parts[:end])
            found = await self._node(path)
            if found is not False:
                return path, found
        return "", None

    async def _node(self, path: str) -> BloscChunks | bool | None:
        """``False`` if ``path`` is not an array, else its checks (``None``: none)."""
        if path not in self._nodes:
            if self._consolidated is not None:
                self._nodes[path] = self._consolidated_node(path)
            else:
                self._nodes[path] = await self._stored_node(path)
        return self._nodes[path]

    def _consolidated_node(self, path: str) -> BloscChunks | bool | None:
        """:meth:`_node` from the consolidated metadata (zarr's parsed classes), walked down by name."""
        metadata = self._consolidated
        for name in path.split("/"):
            children = getattr(metadata, "metadata", None)
            if not isinstance(children, Mapping) or name not in children:
                return False
            node = children[name]
            metadata = getattr(node, "consolidated_metadata", None)
        if not hasattr(node, "shape"):  # a group
            return False
        return blosc_chunks(node.to_dict())

    async def _stored_node(self, path: str) -> BloscChunks | bool | None:
        """:meth:`_node` from the node's own metadata file."""
        from zarr.core.buffer import default_buffer_prototype

        names = {2: (".zarray",), 3: ("zarr.json",)}.get(self._format, (".zarray", "zarr.json"))
        for name in names:
            raw = await self._inner.get(f"{path}/{name}", default_buffer_prototype())
            if raw is None:
                continue
            try:
                metadata = json.loads(raw.to_bytes())
            except ValueError:
                return False  # a damaged metadata file: zarr reports it when it reads it
            if isinstance(metadata, dict) and (name == ".zarray" or metadata.get("node_type") == "array"):
                return blosc_chunks(metadata)
            return False
        return False
