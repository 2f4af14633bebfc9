"""Opening files, and the handles graph tasks read through.

Opening an HDF5 file or a Zarr group costs milliseconds; a graph has thousands of tasks. Each process
(the user's, or a distributed worker) keeps one handle per file in its
:mod:`~shadows.backends.registry` and reuses it: for HDF5 the very ``h5py.File`` the shadows of that file
read their metadata from, so a process never holds two HDF5 ids of one file. Entries are keyed by process
id too, so a forked worker never reuses its parent's HDF5 handle; tasks carry a
:class:`~shadows.backends.fileref.FileRef`, so graphs pickle to process workers, which open their own.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator, Mapping
from typing import Any

from shadows.backends import hdf5_heaps, registry


def open_hdf5(path: str, mode: str = "r"):
    """Open an HDF5 file with h5py; what h5py refuses gets an error that says why and what to do."""
    import h5py

    try:
        return h5py.File(path, mode)
    except OSError as error:
        raise _open_error(path, mode, error) from error


def _open_error(path: str, mode: str, error: OSError) -> Exception:
    """Translate h5py's refusal to open a file (HDF5's wording, matched here) into a shadows error.

    HDF5 (1.10+) takes an OS lock (``flock``) on every file it opens: shared for reading, exclusive for
    writing; the kernel drops it when the process dies. Files written with superblock version 3
    (``libver="latest"``) also carry an "open for writing" mark in the file itself, which a killed writer
    leaves behind.
    """
    from shadows.errors import FileBusyError, PermissionDeniedError, UnreadableDataError

    text = str(error).lower()
    if getattr(error, "errno", None) in (errno.EACCES, errno.EPERM) or "errno = 13," in text \
            or "permission denied" in text:
        return PermissionDeniedError(f"{path}: cannot open {'for writing' if mode != 'r' else 'for reading'} "
                                     f"(mode {mode!r}): permission denied; check the file's permissions. {error}")
    if "truncated file" in text:
        return UnreadableDataError(f"{path}: the file is truncated (shorter than HDF5 recorded it; an interrupted "
                                   f"copy or download?): {error}")
    if "already open for write" in text:
        return FileBusyError(
            f"{path}: HDF5 marks this file as open for writing (a superblock-v3 file whose writer did not close "
            "it: killed, or still running elsewhere). If no process is writing it, clear the mark with "
            f"`h5clear -s {path}` (HDF5's command-line tools) and open it again. Elements committed before "
            f"the writer stopped are intact. {error}")
    if mode != "r" and ("lock" in text or "already open" in text):
        return FileBusyError(
            f"{path}: cannot open for writing (mode {mode!r}): the file is open elsewhere: in another process "
            "(HDF5 file locking), or in this one outside shadows (an h5py.File, a backed AnnData: close it). "
            f"{error}")
    if "lock" in text:
        return FileBusyError(f"{path}: cannot open for reading: another process holds it for writing "
                             f"(HDF5 file locking). {error}")
    return UnreadableDataError(f"{path}: HDF5 cannot open this file: {error}")


def _open_root(store: Any, mode: str) -> Any:
    """The root group of ``store``; without its consolidated metadata when zarr refuses that as a whole
    (one array's metadata zarr cannot parse, a data type of a newer zarr: zarr then rejects every node),
    so that the other elements read and the bad one fails alone, named, when it is read.
    """
    import zarr
    from zarr.errors import NodeNotFoundError

    try:
        return zarr.open_group(store, mode=mode)
    except NodeNotFoundError:
        raise
    except (ValueError, TypeError, KeyError) as error:
        try:
            return zarr.open_group(store, mode=mode, use_consolidated=False)
        except Exception as again:
            raise error from again


def open_zarr(path: str, mode: str = "r", storage_options: Mapping[str, Any] | None = None, element: str = ""):
    """Open a Zarr group (format 2 or 3, consolidated metadata used when present), local or at a URL,
    its Blosc-compressed chunks checked before they are decoded (:mod:`shadows.backends.checked_chunks`).

    ``element`` names, in errors, what the opening is for.
    """
    from zarr.storage import LocalStore

    from shadows.backends import remote
    from shadows.backends.checked_chunks import ChunkCheckingStore

    if remote.is_url(path):
        with remote.network_errors(path, element):
            store = ChunkCheckingStore(remote.zarr_store(path, storage_options, read_only=mode == "r"))
            root = _open_root(store, mode)
    else:
        store = ChunkCheckingStore(LocalStore(path, read_only=mode == "r"))
        root = _open_root(store, mode)
    store.describe(root)
    return root


def open_file(path: str, format: str, mode: str = "r", storage_options: Mapping[str, Any] | None = None,
              element: str = ""):
    """Open a file or store by format (``"hdf5"`` or ``"zarr"``), local or at an fsspec URL (``element``
    names, in errors, what the opening is for).
    """
    if format == "zarr":
        return open_zarr(path, mode, storage_options, element)
    from shadows.backends import remote

    if remote.is_url(path):
        with remote.network_errors(path, element):
            return remote.open_hdf5(path, storage_options)
    return open_hdf5(path, mode)


def open_metadata(path: str, format: str, mode: str = "r", storage_options: Mapping[str, Any] | None = None):
    """What a shadow reads its layout from: the h5py.File itself, or the Zarr store's JSON metadata."""
    if format == "hdf5":
        return open_file(path, format, mode, storage_options)
    from shadows.backends.zarr_meta import ZarrMetadata

    return ZarrMetadata(path, storage_options)


def _open_metadata_handle(path: str, format: str, mode: str, storage_options: Mapping[str, Any] | None,
                          element: str = "") -> Any:
    if format == "hdf5":
        return open_file(path, format, mode, storage_options, element)
    return open_metadata(path, format, mode, storage_options)


def _open_group(path: str, mode: str, storage_options: Mapping[str, Any] | None, element: str = "") -> Any:
    return open_zarr(path, mode, storage_options, element)


#: How this process's file entries open what they hold.
OPENERS = registry.Openers(metadata=_open_metadata_handle, group=_open_group)


def connect(user: Any, path: str, format: str, mode: str, storage_options: Mapping[str, Any] | None = None
            ) -> registry.FileEntry:
    """Attach ``user`` (a shadow's connection) to this process's entry of the file, in ``mode``."""
    return registry.attach(user, path, format, mode, storage_options, OPENERS)


def _entry(ref: Any) -> registry.FileEntry:
    entry = registry.entry(ref.path, ref.format, ref.storage_options, OPENERS)
    stamp = getattr(ref, "content", None)
    if stamp is not None and stamp[0] != entry.pid:  # planned in another process, which may have written
        entry.follow(stamp)
    return entry


@contextlib.contextmanager
def reading(ref: Any, transient: bool = False) -> Iterator[registry.FileEntry]:
    """Read the file of ``ref`` inside this block: its handle in this process stays open until the block
    ends, even if the last shadow of the file is closed or collected meanwhile; ``transient``: closed then,
    unless a shadow holds it (see :func:`shadows.backends.registry.reading`).
    """
    # a reference of another storage (an in-memory store) has no options: its entry opens nothing, and an
    # entry that opened nothing is forgotten when the read ends
    options = getattr(ref, "storage_options", None)
    with registry.reading(ref.path, ref.format, options, OPENERS, transient) as entry:
        yield entry


def read_handle(ref: Any, element: str = ""):
    """The handle this process reads the file of ``ref`` through: the ``h5py.File`` its shadows share (opened
    read-only on first use when none is attached), or a read-only ``zarr.Group``.
    """
    return _entry(ref).task_handle(element)


def read_node(ref: Any, elem_path: str):
    """The node at ``elem_path`` through this process's read handle, looked up once per handle.

    Resolving a path in an HDF5 file costs about as much as reading a row of X; read tasks ask for the
    same few arrays thousands of times.
    """
    from shadows.settings import settings

    entry = _entry(ref)
    # a Zarr array is looked up once per choice of pipeline: a change of shadows.settings.zarrs holds at once
    key = (elem_path, settings.zarrs) if ref.format == "zarr" else elem_path
    node = entry.nodes.get(key)
    if node is None:
        from shadows.backends import nodes
        from shadows.backends.zarr_pipeline import through_zarrs

        generation = entry.generation
        handle = entry.task_handle(elem_path)
        with nodes.reading_element(ref.display, elem_path):
            node = handle[elem_path] if elem_path else handle
            if ref.format == "zarr" and not nodes.is_group(node):
                node = through_zarrs(node)
        hdf5_heaps.check_node(node, ref.display, elem_path, values=True)  # before HDF5 reads heap objects
        if entry.generation == generation:  # not looked up in a handle replaced meanwhile
            entry.nodes[key] = node
    return node


def read_stored(ref: Any, elem_path: str, node: Any) -> Any:
    """The :class:`~shadows.backends.abc.StoredArray` of ``node`` (the node at ``elem_path``, looked up
    through this process's read handle: :func:`read_node`), wrapped once per node: the way it reads is
    chosen once, and forgotten with the node when the handle is replaced.
    """
    from shadows.backends.abc import stored

    entry = _entry(ref)
    found = entry.arrays.get(elem_path)
    if found is None or found.node is not node:
        generation = entry.generation
        found = stored(node)
        if entry.generation == generation:  # not for a handle replaced meanwhile
            entry.arrays[elem_path] = found
    return found


def release(path: str) -> None:
    """Drop this process's cached read handles and nodes of ``path`` (a file about to be replaced, for
    example); a handle shadows share stays open (see :func:`shadows.backends.registry.release`).
    """
    registry.release(path)
