"""Uniform access to HDF5 and Zarr nodes: attributes, children, reads, storage facts.

h5py and zarr agree on most of their API (``group[key]``, ``.attrs``, ``dataset[sel]``); the few places
they differ (string decoding, attribute types, storage size, object references) are handled here so the
element readers above stay format-agnostic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from shadows.backends import hdf5_heaps
from shadows.backends.zarr_meta import MetaArray, MetaGroup, MetaNode
from shadows.errors import ShadowsError, UnreadableDataError, element_message


def _h5py():
    import h5py

    return h5py


def is_hdf5(node: Any) -> bool:
    """Whether ``node`` is an h5py object."""
    return type(node).__module__.startswith("h5py")


def is_group(node: Any) -> bool:
    """Whether ``node`` is a group (HDF5, Zarr, or Zarr metadata)."""
    if is_hdf5(node):
        return isinstance(node, _h5py().Group)
    if isinstance(node, MetaNode):
        return isinstance(node, MetaGroup)
    import zarr

    return isinstance(node, zarr.Group)


def storage_kind(node: Any) -> str:
    """``"group"`` or ``"array"``: the storage half of a registry key."""
    return "group" if is_group(node) else "array"


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OSU":
            return [_decode(v) for v in value.tolist()]
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def attrs(node: Any) -> dict[str, Any]:
    """The node's attributes as plain Python values (bytes decoded, numpy scalars unwrapped).

    An HDF5 node's are checked first (:func:`shadows.backends.hdf5_heaps.check_node`): damaged metadata
    behind a string attribute would make HDF5 hang.
    """
    hdf5_heaps.check_node(node)
    return {k: _decode(v) for k, v in node.attrs.items()}


def child_names(group: Any) -> list[str]:
    """Names of a group's children, in a stable (sorted) order for both formats."""
    return sorted(group.keys())


def has_child(group: Any, name: str) -> bool:
    """Whether ``group`` has a child called ``name``."""
    try:
        return name in group
    except (KeyError, ValueError):
        return False


def is_string_dtype(node: Any) -> bool:
    """Whether an array stores strings (vlen or fixed-length, HDF5 or Zarr)."""
    if is_hdf5(node):
        dtype = node.dtype
        if dtype.kind in "SU":
            return True
        return _h5py().check_string_dtype(dtype) is not None
    dtype = node.dtype
    kind = getattr(dtype, "kind", None)
    return kind in ("O", "U", "S", "T") or "str" in str(dtype).lower()


def numpy_dtype(node: Any) -> np.dtype:
    """The numpy dtype of the values a read returns (``object`` for strings)."""
    if is_string_dtype(node):
        return np.dtype(object)
    return stored_dtype(node)


def stored_dtype(node: Any) -> np.dtype:
    """The numpy dtype the array is stored as (zarr 3's own data types turned into numpy's)."""
    dtype = node.dtype
    return dtype if isinstance(dtype, np.dtype) else np.dtype(getattr(dtype, "to_native_dtype", lambda: dtype)())


def raw_text(node: Any) -> str | None:
    """What a plain read of a text array gives (as anndata reads one labelled ``array``): ``"bytes"``
    (h5py's variable-length strings), or ``"str"`` in the storage's own text type (zarr: numpy's
    ``StringDType`` or ``<U``); ``None`` for an array that holds no text.
    """
    if not is_string_dtype(node):
        return None
    return "bytes" if is_hdf5(node) else "str"


def reference_path(node: Any, target: Any, path: str) -> str:
    """The path in the file (no leading ``/``) of the node that ``target``, an attribute of the node at
    ``path`` pointing at another node, names: an HDF5 object reference, or in Zarr a name beside ``path``.
    """
    if is_hdf5(node):
        return node.file[target].name.lstrip("/")
    return f"{path.rsplit('/', 1)[0]}/{target}"


def create_array(group: Any, name: str, shape: tuple[int, ...], dtype: np.dtype, chunks: tuple[int, ...]) -> Any:
    """A dataset (h5py) or array (zarr) ``group[name]`` to be filled region by region, in chunks of
    ``chunks`` (cut to the shape; an empty array is contiguous in HDF5).
    """
    chunks = tuple(max(1, min(c, n)) for c, n in zip(chunks, shape, strict=True)) if all(shape) else None
    if is_hdf5(group):
        return group.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks)
    return group.create_array(name, shape=shape, dtype=dtype, chunks=chunks or (1,) * len(shape))


def create_growing_array(group: Any, name: str, dtype: np.dtype, chunk: int) -> Any:
    """An empty 1-d dataset (h5py) or array (zarr) ``group[name]`` that grows with ``resize``, in chunks of
    ``chunk`` elements.
    """
    if is_hdf5(group):
        return group.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(chunk,))
    return group.create_array(name, shape=(0,), dtype=dtype, chunks=(chunk,))


def location(node: Any) -> tuple[str, str]:
    """The file (or store) a node lives in and its path inside it, for error messages."""
    if is_hdf5(node):
        return node.file.filename, node.name
    return store_location(getattr(node, "store", None)), str(getattr(node, "path", ""))


def store_location(store: Any) -> str:
    """A Zarr store as messages name it: a local store's folder, an fsspec store's URL."""
    root = getattr(store, "root", None)
    if root is None and hasattr(store, "path") and hasattr(store, "fs"):  # FsspecStore: show the URL
        protocol = store.fs.protocol[0] if isinstance(store.fs.protocol, tuple) else store.fs.protocol
        root = f"{protocol}://{store.path}"
    return str(root if root is not None else store)


@contextmanager
def reading(node: Any) -> Iterator[None]:
    """Turn a failure of the storage layer under a read into an error naming the file and the element.

    h5py raises OSError for unreadable bytes (a truncated file), Zarr's codecs RuntimeError or
    ValueError (a corrupted chunk); for remote files, the HTTP or object-store client its own errors.
    """
    with reading_located(lambda: location(node)):
        yield


@contextmanager
def reading_element(filename: str, element: str) -> Iterator[None]:
    """:func:`reading` for an element given by name (a lookup that may fail before there is a node)."""
    with reading_located(lambda: (filename, element)):
        yield


@contextmanager
def reading_located(locate: Callable[[], tuple[str, str]]) -> Iterator[None]:
    """:func:`reading`, the file and element named by ``locate()``, called only when a read fails: an HDF5
    node's file name costs an h5py ``File`` object (~0.1 ms), more than a small read of an open file.
    """
    from shadows.backends.remote import is_transport_error

    try:
        yield
    except ShadowsError:
        raise
    except Exception as error:
        if not isinstance(error, (OSError, RuntimeError, ValueError)) and not is_transport_error(error):
            raise
        try:
            filename, element = locate()
        except Exception:  # the node no longer resolves (its file closed under the read)
            filename, element = "(a file closed during the read)", "(unknown element)"
        what = f"cannot read its stored bytes (truncated file or corrupted chunk?): {type(error).__name__}: {error}"
        if is_transport_error(error):
            what = f"the request for its bytes failed: {type(error).__name__}: {error}"
        raise UnreadableDataError(element_message(filename, element, what)) from error


def missing_chunks(node: Any, positions: np.ndarray) -> list[str]:
    """Keys of the stored chunks (shards) of a 1-d Zarr array in a local store that hold some of
    ``positions`` and are missing from the store; ``[]`` for HDF5, n-d arrays and remote stores.

    zarr reads a missing chunk as its fill value: right for arrays written sparsely (zarr skips chunks
    that hold only the fill value), wrong where the values must be there (a dataframe's index, whose
    lost chunk would read as empty names).
    """
    if is_hdf5(node) or len(node.shape) != 1 or not positions.size:
        return []
    from zarr.storage import LocalStore

    store = node.store
    local = getattr(store, "wrapped", store)  # shadows' ChunkCheckingStore
    if not isinstance(local, LocalStore):
        return []
    folder = Path(str(local.root)) / node.path
    size = int((getattr(node, "shards", None) or node.chunks)[0])
    keys = [node.metadata.encode_chunk_key((int(i),)) for i in np.unique(np.asarray(positions) // size)]
    return [key for key in keys if not (folder / key).exists()]


def chunks(node: Any) -> tuple[int, ...] | None:
    """Stored chunk shape, or ``None`` for a contiguous HDF5 dataset."""
    return tuple(node.chunks) if node.chunks is not None else None


def read_chunks(node: Any) -> tuple[int, ...] | None:
    """The shape of the pieces a read decodes: a Zarr shard's inner chunks, else :func:`chunks`."""
    inner = getattr(node, "read_chunks", None)  # a shard's, from metadata (zarr_meta.MetaArray)
    return tuple(inner) if inner is not None else chunks(node)  # zarr's own arrays say the inner chunks


def array_nbytes(node: Any) -> int:
    """Bytes the node's arrays take once read (uncompressed; a string is counted as the pointer numpy's
    object arrays hold), from metadata only.
    """
    if is_group(node):
        return sum(array_nbytes(node[k]) for k in node)
    itemsize = 8 if is_string_dtype(node) else numpy_dtype(node).itemsize
    return int(np.prod(node.shape, dtype=np.int64)) * itemsize


def stored_nbytes(node: Any) -> int:
    """Bytes the node's data takes on disk (after compression), from metadata and listings only."""
    if is_group(node):
        return sum(stored_nbytes(node[k]) for k in node)
    if is_hdf5(node):
        return int(node.id.get_storage_size())
    if isinstance(node, MetaArray):
        store = node.store
        if store.url is not None:
            from shadows.backends import remote

            fs, path = remote.filesystem(f"{store.url}/{node.path}", store.storage_options)
            return int(fs.du(path))
        directory = store.root / node.path
        return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
    return int(node.nbytes_stored())
