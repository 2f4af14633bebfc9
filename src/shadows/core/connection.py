"""A shadow's connection to its file: its own mode, over the one open handle this process shares for
that file.

A :class:`Connection` is made by a shadow's constructor and shared by that shadow, its views, and (for a
MuData) its modalities. It is one user of the file's process-wide entry
(:mod:`shadows.backends.registry`): every connection to one file in this process reads through the same
handle and the same generation. In detail:

- **Mode.** Each connection keeps the mode it was opened or reopened in (``shadow._mode``); ``write()``
  refuses unless it is ``"r+"``. The shared handle is open ``r+`` while any connection holds ``r+``, and
  goes back to ``r`` when none does. So for HDF5 ``shadow.file.mode`` (the one ``h5py.File``) reports the
  handle's mode, which may be ``"r+"`` for a shadow whose own mode is ``"r"``; a Zarr shadow's ``.file``
  is a group opened in the shadow's own mode.
- **Generation.** :attr:`Connection.generation` is the entry's: it changes when the handle is replaced
  (an upgrade or downgrade of an HDF5 file, a reopen) or the file was written through it, and layouts
  built before rebuild themselves on next use.
- **Writes are seen by all.** ``write()`` reopens the connection in its mode: the entry's handle is
  reopened for everyone and the generation changes, so every shadow of the file rebuilds its layout
  on next use (its slots list the keys the file stores now) and drops what it read or planned before
  (its element records carry the generation they were read under: :mod:`shadows.core.state`).
- **Close.** ``close()`` counts the connection out; the last connection of a file closes every handle
  the process holds on it, graph tasks' included. Closing twice is harmless. A connection no shadow
  holds any more is closed when it is garbage-collected.
- **A refused (re)open changes nothing**: the mode, the handle others read through and the shadow's
  staged changes stay as they were.

Graph tasks never hold a connection: they carry a FileRef and find the entry of the process that runs
them (:func:`shadows.backends.handles.read_node`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import Any

from shadows.backends import storage
from shadows.backends.handles import connect
from shadows.backends.registry import detach_soon
from shadows.backends.remote import redact
from shadows.errors import ShadowsError
from shadows.writing.commit import check_no_zarr_writer

MODES = ("r", "r+")


def check_mode(mode: str) -> str:
    """``mode`` if it is one a shadow can be opened in, else a ValueError."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return mode


class ClosedConnectionError(ShadowsError, ValueError):
    """The shadow was closed: reopen it with ``.reopen()`` to read from or write to its file again."""


class Connection:
    """One shadow's (with its views' and modalities') connection to an HDF5 file or Zarr store.

    Parameters
    ----------
    path
        The file or store on disk (or its URL).
    format
        ``"hdf5"`` or ``"zarr"``.
    mode
        ``"r"`` or ``"r+"``.
    storage_options
        fsspec's options for a URL.
    """

    def __init__(self, path: str, format: str, mode: str, storage_options: Mapping[str, Any] | None = None):
        self.path = path
        self.format = format
        self.storage_options = storage_options
        #: What the file or store allows (:class:`~shadows.backends.storage.FileCapabilities`).
        self.capabilities = storage.capabilities(path, format)
        self.mode = check_mode(mode)
        self._entry: Any = None
        self._generation = 0
        self._content = 0
        self.open(mode)

    # -- opening and closing ----------------------------------------------------------------------

    def open(self, mode: str) -> None:
        """(Re)open in ``mode``. In the same mode the file's handle is reopened, for every shadow of it (a
        new generation: they read what it now stores); to another mode the shared handle follows (``r+``
        while any connection holds it). When the file refuses, nothing changed.
        """
        check_mode(mode)
        entry = self._current()
        if mode == "r+" and (entry is None or self.mode != "r+"):
            self._check_writable()
        if entry is None:
            self._entry = connect(self, self.path, self.format, mode, self.storage_options)
            self.mode = mode
        elif mode == self.mode:
            entry.refresh()
        else:
            entry.set_mode(self, mode)
            self.mode = mode

    def _current(self) -> Any:
        """The entry this connection is attached to (``None`` when closed). In a forked child the parent's
        entry is left alone and the connection attaches to the child's own.
        """
        entry = self._entry
        if entry is not None and entry.pid != os.getpid():
            self._entry = None
            self._entry = entry = connect(self, self.path, self.format, self.mode, self.storage_options)
        return entry

    def _check_writable(self) -> None:
        storage.check_writable(self.path, self.format, self.storage_options)
        if self.capabilities.elements == "folders":  # writers of a local store take a lock file in it
            check_no_zarr_writer(self.path)

    def recover(self) -> None:
        """Reopen after a failed write (HDF5 may refuse to close cleanly what it could not write); the
        shadows of the file see what the write committed before it failed.
        """
        self.open(self.mode)

    def close(self) -> None:
        """Count this connection out of the file's entry (the last one closes every handle). Cached and
        staged elements of the shadows stay in memory; graph tasks keep working (they reopen by path).
        """
        entry, self._entry = self._entry, None
        if entry is not None:
            self._generation, self._content = entry.generation, entry.content
            entry.detach(self)

    def __del__(self) -> None:
        entry, self._entry = getattr(self, "_entry", None), None
        if entry is not None:
            with contextlib.suppress(Exception):  # at interpreter exit the registry may be gone already
                detach_soon(entry, self)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (and no reopen since)."""
        return self._entry is None

    # -- what shadows read through ------------------------------------------------------------------

    def _attached(self) -> Any:
        entry = self._current()
        if entry is None:
            raise ClosedConnectionError(f"{redact(self.path)}: the shadow was closed; reopen it with .reopen('r') "
                                        "(or .reopen('r+')) to use its file again")
        return entry

    @property
    def handle(self) -> Any:
        """The metadata handle: the ``h5py.File`` (shared in this process), or the Zarr store's metadata."""
        return self._attached().metadata()

    @property
    def generation(self) -> int:
        """Changes whenever layouts read from this connection's handle must be rebuilt."""
        entry = self._current()
        return self._generation if entry is None else entry.generation

    @property
    def content(self) -> int:
        """Changes whenever the file was written through this process's entry of it (or opened anew):
        values read before may be stale (:mod:`shadows.core.state` drops them).
        """
        entry = self._current()
        return self._content if entry is None else entry.content

    def wrote(self) -> None:
        """Something was (or may have been, after a failure) written to the file through this connection."""
        self._attached().wrote()

    @property
    def file(self) -> Any:
        """The open ``h5py.File`` (shared), or a ``zarr.Group`` in this connection's mode (opened on first use)."""
        return self._attached().user_file(self.mode)
