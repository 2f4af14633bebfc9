"""Per-process cache of read-only file handles used by graph tasks.

Opening an HDF5 file or a Zarr group costs milliseconds; a graph has thousands of tasks. Each process
(the user's, or a distributed worker) keeps one read handle per file and reuses it. Handles are keyed by
process id too, so a forked worker never reuses its parent's HDF5 handle.
"""

from __future__ import annotations

import os
import threading
from typing import Any

_lock = threading.Lock()
_handles: dict[tuple[int, str, str], Any] = {}
_nodes: dict[tuple[int, str, str, str], Any] = {}


def open_hdf5(path: str, mode: str = "r"):
    """Open an HDF5 file with h5py; a file held elsewhere gets an error that says so."""
    import h5py

    try:
        return h5py.File(path, mode)
    except OSError as error:
        if mode == "r" or ("open" not in str(error).lower() and "lock" not in str(error).lower()):
            raise
        from shadows.errors import FileBusyError

        msg = (f"{path}: cannot open for writing (mode {mode!r}): the file is open elsewhere, read-only in "
               f"this process (another shadow: close() it) or in another process (HDF5 file locking). {error}")
        raise FileBusyError(msg) from error


def open_zarr(path: str, mode: str = "r"):
    """Open a Zarr group (format 2 or 3, consolidated metadata used when present)."""
    import zarr

    return zarr.open_group(path, mode=mode)


def open_file(path: str, format: str, mode: str = "r"):
    """Open a file or store by format (``"hdf5"`` or ``"zarr"``)."""
    return open_hdf5(path, mode) if format == "hdf5" else open_zarr(path, mode)


def open_metadata(path: str, format: str, mode: str = "r"):
    """What a shadow reads its layout from: the h5py.File itself, or the Zarr store's JSON metadata."""
    if format == "hdf5":
        return open_hdf5(path, mode)
    from shadows.backends.zarr_meta import ZarrMetadata

    return ZarrMetadata(path)


def read_handle(path: str, format: str):
    """Return this process's shared read-only handle for ``path``, opening it on first use."""
    key = (os.getpid(), path, format)
    handle = _handles.get(key)
    if handle is not None:
        return handle
    with _lock:
        handle = _handles.get(key)
        if handle is None:
            handle = open_file(path, format, "r")
            _handles[key] = handle
    return handle


def read_node(path: str, format: str, elem_path: str):
    """The node at ``elem_path`` through this process's read handle, looked up once per process.

    Resolving a path in an HDF5 file costs about as much as reading a row of X; read tasks ask for the
    same few arrays thousands of times.
    """
    key = (os.getpid(), path, format, elem_path)
    node = _nodes.get(key)
    if node is None:
        handle = read_handle(path, format)
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
