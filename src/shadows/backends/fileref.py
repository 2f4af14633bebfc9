"""A picklable reference to an AnnData inside a file, and how a user's path becomes one.

Tasks in dask graphs carry a :class:`FileRef` (never an open handle) and reopen the file by path in
whatever process runs them, so graphs pickle to ``dask.distributed`` process workers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from shadows.errors import NotAnnDataError, ShadowsFileNotFoundError

Format = Literal["hdf5", "zarr"]

_FORMAT_ALIASES: dict[str, Format] = {
    "hdf5": "hdf5",
    "h5": "hdf5",
    "h5ad": "hdf5",
    "h5mu": "hdf5",
    "zarr": "zarr",
}
_HDF5_SUFFIXES = {".h5ad", ".h5mu", ".h5", ".hdf5"}
_ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray")


@dataclass(frozen=True)
class FileRef:
    """Where an AnnData lives: a file or store on disk plus the group inside it.

    Parameters
    ----------
    path
        Absolute path of the HDF5 file or of the Zarr store's root directory.
    format
        ``"hdf5"`` or ``"zarr"``.
    root
        Path of the AnnData group inside the file: ``""`` for an ``.h5ad``, ``"mod/rna"`` for one
        modality of a MuData file.
    """

    path: str
    format: Format
    root: str = ""

    def element_path(self, *parts: str) -> str:
        """Absolute path inside the file of an element given relative to the AnnData root."""
        joined = "/".join(p.strip("/") for p in (self.root, *parts) if p and p.strip("/"))
        return joined

    @property
    def display(self) -> str:
        """The path as users wrote it: the file, plus the modality path when there is one."""
        return f"{self.path}/{self.root}" if self.root else self.path

    def node(self, elem_path: str):
        """Open (or reuse this process's open handle of) the file and return the node at ``elem_path``.

        ``elem_path`` is absolute inside the file (see :meth:`element_path`).
        """
        from shadows.backends.handles import read_node

        return read_node(self.path, self.format, elem_path)


def normalize_format(fmt: str | None) -> Format | None:
    """Map user spellings of a format (``"h5"``, ``"hdf5"``, ``"zarr"``...) to ``"hdf5"``/``"zarr"``."""
    if fmt is None:
        return None
    try:
        return _FORMAT_ALIASES[fmt.lower()]
    except KeyError:
        msg = f"Unknown format {fmt!r}: use 'hdf5' (or 'h5') or 'zarr'."
        raise ValueError(msg) from None


def _is_zarr_dir(path: Path) -> bool:
    return path.is_dir() and any((path / marker).exists() for marker in _ZARR_MARKERS)


def resolve(filepath: str | os.PathLike, format: str | None = None) -> FileRef:
    """Turn a user path (possibly ``file.h5mu/mod/rna``) into a :class:`FileRef`.

    The format comes from ``format`` when given, else from what is on disk (an HDF5 file or a Zarr
    directory), which also covers paths without a known suffix.

    Raises
    ------
    ShadowsFileNotFoundError
        Nothing exists at the path (nor at any of its parents that could hold the element path).
    NotAnnDataError
        The path exists but is neither an HDF5 file nor a Zarr store, or contradicts ``format``.
    """
    import h5py

    wanted = normalize_format(format)
    path = Path(os.path.expanduser(os.fspath(filepath))).absolute()

    existing, inner = path, []
    while not existing.exists():
        if existing.parent == existing:
            msg = f"No such file or Zarr store: '{os.fspath(filepath)}'"
            raise ShadowsFileNotFoundError(msg)
        inner.insert(0, existing.name)
        existing = existing.parent

    if existing.is_file():
        if inner and not h5py.is_hdf5(existing):
            msg = f"No such file or Zarr store: '{os.fspath(filepath)}'"
            raise ShadowsFileNotFoundError(msg)
        if wanted == "zarr":
            msg = f"{existing}: format='zarr' was asked for, but this is a file, not a Zarr store directory."
            raise NotAnnDataError(msg)
        if not h5py.is_hdf5(existing):
            kind = "empty file" if existing.stat().st_size == 0 else "file that is not HDF5"
            msg = f"{existing}: cannot open as AnnData: it is an {kind} (expected .h5ad/.h5mu or Zarr)."
            raise NotAnnDataError(msg.replace("an file", "a file"))
        return FileRef(str(existing), "hdf5", "/".join(inner))

    if inner:
        # A directory exists but the rest of the path does not: a missing element of a Zarr store.
        msg = f"No such file or Zarr store: '{os.fspath(filepath)}'"
        raise ShadowsFileNotFoundError(msg)
    if wanted == "hdf5":
        msg = f"{existing}: format='hdf5' was asked for, but this is a directory."
        raise NotAnnDataError(msg)
    if not _is_zarr_dir(existing):
        msg = f"{existing}: this directory is not a Zarr store (no zarr.json or .zgroup)."
        raise NotAnnDataError(msg)
    # The store root is the top-most Zarr directory; what lies below it is the AnnData's group path.
    store = existing
    while _is_zarr_dir(store.parent) and store.parent != store:
        inner.insert(0, store.name)
        store = store.parent
    return FileRef(str(store), "zarr", "/".join(inner))


def suffix_format(path: str | os.PathLike) -> Format | None:
    """Format suggested by a path's suffix alone (used for messages and for new files)."""
    suffix = Path(os.fspath(path)).suffix.lower()
    if suffix in _HDF5_SUFFIXES:
        return "hdf5"
    if suffix == ".zarr":
        return "zarr"
    return None
