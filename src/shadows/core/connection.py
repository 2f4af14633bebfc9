"""The open file behind a shadow: one metadata handle and one mode, shared by a MuData shadow, its
modalities and every view taken from them.

Graph tasks never use this handle (they reopen the file by path, see :mod:`shadows.backends.handles`);
it is what layouts are read from and what ``.file`` returns. Each (re)open bumps :attr:`generation`,
which tells layouts built from an older handle to rebuild themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shadows.backends.handles import open_file, open_metadata, release
from shadows.backends.remote import is_url, redact, supports_writes
from shadows.errors import ReadOnlyError
from shadows.writing.commit import check_no_zarr_writer

MODES = ("r", "r+")


def check_mode(mode: str) -> str:
    """``mode`` if it is one a shadow can be opened in, else a ValueError."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return mode


class Connection:
    """An open HDF5 file or Zarr store.

    Parameters
    ----------
    path
        The file or store on disk.
    format
        ``"hdf5"`` or ``"zarr"``.
    mode
        ``"r"`` or ``"r+"``.
    """

    def __init__(self, path: str, format: str, mode: str, storage_options: Mapping[str, Any] | None = None):
        self.path = path
        self.format = format
        self.storage_options = storage_options
        self.generation = 0
        self.handle: Any = None
        self._zarr_group: Any = None
        self.open(mode)

    def open(self, mode: str) -> None:
        """(Re)open in ``mode``; a handle open before is closed first."""
        check_mode(mode)
        self.close()
        if mode != "r":
            # HDF5 refuses to open a file for writing while this process holds it open read-only: drop
            # the read handles graph tasks keep (they reopen, sharing the writable handle).
            release(self.path)
            if is_url(self.path):
                check_remote_writable(self.path, self.format, self.storage_options)
            elif self.format == "zarr":
                check_no_zarr_writer(self.path)
        self.handle = open_metadata(self.path, self.format, mode, self.storage_options)
        self.mode = mode
        self.generation += 1

    def recover(self) -> None:
        """Reopen after a failed write: HDF5 may refuse to close cleanly what it could not write."""
        try:
            self.close()
        except (OSError, RuntimeError):
            self.handle = None  # h5py closes the file id when the object goes; readers open anew
        self.open(self.mode)

    def close(self) -> None:
        """Close the handles (graph tasks keep working: they reopen the file by path)."""
        for handle in (self.handle, self._zarr_group):
            close = getattr(handle, "close", None)
            if close is not None:
                close()
        self._zarr_group = None

    @property
    def file(self) -> Any:
        """The open ``h5py.File``, or the ``zarr.Group`` (opened on first use)."""
        if self.format == "hdf5":
            return self.handle
        if self._zarr_group is None:
            self._zarr_group = open_file(self.path, "zarr", self.mode, self.storage_options)
        return self._zarr_group


def check_remote_writable(url: str, format: str, storage_options: Mapping[str, Any] | None) -> None:
    """Raise ReadOnlyError unless ``url`` is a Zarr store on a filesystem that takes writes."""
    if format == "hdf5":
        raise ReadOnlyError(f"{redact(url)}: an HDF5 file behind a URL can only be read; open it with mode='r' "
                            "(or copy it to a local disk to write to it)")
    if not supports_writes(url, storage_options):
        raise ReadOnlyError(f"{redact(url)}: this filesystem does not take writes (HTTP); open it with mode='r'")
