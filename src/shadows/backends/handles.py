"""Per-process cache of read-only file handles used by graph tasks.

Opening an HDF5 file or a Zarr group costs milliseconds; a graph has thousands of tasks. Each process
(the user's, or a distributed worker) keeps one read handle per file and reuses it. Handles are keyed by
process id too, so a forked worker never reuses its parent's HDF5 handle.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

_lock = threading.Lock()
_handles: dict[tuple[int, str, str], Any] = {}
_nodes: dict[tuple[int, str, str, str], Any] = {}


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
    from shadows.errors import FileBusyError, UnreadableDataError

    text = str(error).lower()
    if "truncated file" in text:
        return UnreadableDataError(f"{path}: the file is truncated (shorter than HDF5 recorded it; an interrupted "
                                   f"copy or download?): {error}")
    if "already open for write" in text:
        return FileBusyError(
            f"{path}: HDF5 marks this file as open for writing (a superblock-v3 file whose writer did not close "
            "it: killed, or still running elsewhere). If no process is writing it, clear the mark with "
            f"`h5clear -s {path}` (HDF5's command-line tools) and open it again. Elements committed before "
            f"the writer stopped are intact. {error}")
    if mode != "r" and ("lock" in text or "open" in text):
        return FileBusyError(
            f"{path}: cannot open for writing (mode {mode!r}): the file is open elsewhere, read-only in this "
            f"process (another shadow: close() it) or in another process (HDF5 file locking). {error}")
    if "lock" in text:
        return FileBusyError(f"{path}: cannot open for reading: another process holds it for writing "
                             f"(HDF5 file locking). {error}")
    return UnreadableDataError(f"{path}: HDF5 cannot open this file: {error}")


def open_zarr(path: str, mode: str = "r", storage_options: Mapping[str, Any] | None = None, element: str = ""):
    """Open a Zarr group (format 2 or 3, consolidated metadata used when present), local or at a URL.

    ``element`` names, in errors, what the opening is for.
    """
    import zarr

    from shadows.backends import remote

    if remote.is_url(path):
        with remote.network_errors(path, element):
            return zarr.open_group(remote.zarr_store(path, storage_options, read_only=mode == "r"), mode=mode)
    return zarr.open_group(path, mode=mode)


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


def _key(ref: Any) -> tuple[int, str, str]:
    return (os.getpid(), ref.path, ref.format)


def read_handle(ref: Any, element: str = ""):
    """Return this process's shared read-only handle for the file of ``ref``, opening it on first use."""
    key = _key(ref)
    handle = _handles.get(key)
    if handle is not None:
        return handle
    with _lock:
        handle = _handles.get(key)
        if handle is None:
            handle = open_file(ref.path, ref.format, "r", ref.storage_options, element)
            _handles[key] = handle
    return handle


def read_node(ref: Any, elem_path: str):
    """The node at ``elem_path`` through this process's read handle, looked up once per process.

    Resolving a path in an HDF5 file costs about as much as reading a row of X; read tasks ask for the
    same few arrays thousands of times.
    """
    key = (*_key(ref), elem_path)
    node = _nodes.get(key)
    if node is None:
        from shadows.backends import nodes

        handle = read_handle(ref, elem_path)
        with nodes.reading_element(ref.display, elem_path):
            node = handle[elem_path] if elem_path else handle
        _nodes[key] = node
    return node


def release(path: str) -> None:
    """Close and forget this process's read handles of ``path`` (before writing to it, for example)."""
    with _lock:
        for key in [k for k in _nodes if k[1] == path]:
            del _nodes[key]
        for key in [k for k in _handles if k[1] == path]:
            handle = _handles.pop(key)
            close = getattr(handle, "close", None)
            if close is not None and key[0] == os.getpid():
                close()
