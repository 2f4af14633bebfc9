"""A picklable reference to an AnnData inside a file, and how a user's path becomes one.

Tasks in dask graphs carry a :class:`FileRef` (never an open handle) and reopen the file by path in
whatever process runs them, so graphs pickle to ``dask.distributed`` process workers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from shadows.backends import containment as _containment
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
    storage_options
        For a URL: fsspec's options (credentials, endpoint). Kept out of the repr and of comparisons, and
        never put in messages.
    allow_external
        Whether reads may follow what leads out of the file: HDF5 external links, external storage and
        virtual datasets with sources in other files, symbolic links out of a Zarr store (see
        :mod:`shadows.backends.containment`). ``False`` (the default) refuses them with
        :class:`~shadows.errors.ExternalDataError`. Kept out of comparisons.
    content
        Which content of the file the graphs carrying this reference were planned against: the planning
        process's id and its count of writes to the file (see :mod:`shadows.backends.registry`).
        Another process (a distributed worker) seeing a new one reopens the file, so that it never reads
        through a handle or metadata cached before a write. ``None``: not planned by a shadow.
    """

    path: str
    format: Format
    root: str = ""
    storage_options: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)
    allow_external: bool = field(default=False, compare=False)
    content: tuple[int, int] | None = None

    def element_path(self, *parts: str) -> str:
        """Absolute path inside the file of an element given relative to the AnnData root."""
        joined = "/".join(p.strip("/") for p in (self.root, *parts) if p and p.strip("/"))
        return joined

    @property
    def full_path(self) -> str:
        """The path that opens this group again: the file, plus the modality path when there is one."""
        return f"{self.path}/{self.root}" if self.root else self.path

    @property
    def display(self) -> str:
        """The path as users wrote it: the file, plus the modality path when there is one (user names and
        passwords in URLs left out).
        """
        from shadows.backends.remote import redact

        return redact(self.full_path)

    def node(self, elem_path: str):
        """Open (or reuse this process's open handle of) the file and return the node at ``elem_path``.

        ``elem_path`` is absolute inside the file (see :meth:`element_path`). Every read of stored values
        goes through here: unless :attr:`allow_external`, the node is checked once per process to lie in
        the file (:func:`shadows.backends.containment.contained_node`) before it is returned.
        """
        if self.allow_external:
            return _containment.read_node(self, elem_path)
        return _containment.contained_node(self, elem_path)

    def stored(self, elem_path: str):
        """The array at ``elem_path`` (as :meth:`node` returns it, checked) wrapped as a
        :class:`~shadows.backends.abc.StoredArray`: what element readers read values through. Wrapped
        once per node looked up in this process (:func:`shadows.backends.handles.read_stored`).
        """
        from shadows.backends.handles import read_stored

        return read_stored(self, elem_path, self.node(elem_path))

    @property
    def capabilities(self):
        """What the file or store allows, from its format and location
        (:class:`~shadows.backends.storage.FileCapabilities`).
        """
        from shadows.backends.storage import capabilities

        return capabilities(self.path, self.format)


def normalize_format(fmt: str | None) -> Format | None:
    """Map user spellings of a format (``"h5"``, ``"hdf5"``, ``"zarr"``...) to ``"hdf5"``/``"zarr"``."""
    if fmt is None:
        return None
    try:
        return _FORMAT_ALIASES[fmt.lower()]
    except KeyError:
        msg = f"Unknown format {fmt!r}: use 'hdf5' (or 'h5') or 'zarr'."
        raise ValueError(msg) from None


def is_zarr_dir(path: Path) -> bool:
    """Whether ``path`` is a folder holding a Zarr store's root metadata (format 2 or 3)."""
    return path.is_dir() and any((path / marker).exists() for marker in _ZARR_MARKERS)


def resolve(filepath: str | os.PathLike, format: str | None = None,
            storage_options: Mapping[str, Any] | None = None, allow_external: bool = False) -> FileRef:
    """Turn a user path (possibly ``file.h5mu/mod/rna``) or an fsspec URL into a :class:`FileRef`.

    The format comes from ``format`` when given, else from what is on disk (an HDF5 file or a Zarr
    directory), which also covers paths without a known suffix. ``allow_external`` is kept in the
    reference (see :class:`FileRef`).

    Raises
    ------
    ShadowsFileNotFoundError
        Nothing exists at the path (nor at any of its parents that could hold the element path).
    NotAnnDataError
        The path exists but is neither an HDF5 file nor a Zarr store, or contradicts ``format``.
    """
    import h5py

    from shadows.backends.remote import is_url

    wanted = normalize_format(format)
    if is_url(filepath):
        ref = _resolve_url(os.fspath(filepath), wanted, storage_options)
        return replace(ref, allow_external=True) if allow_external else ref
    text = os.fspath(filepath)
    path = Path(os.path.expanduser(text[len("file://"):] if text.startswith("file://") else text)).absolute()

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
        return FileRef(str(existing), "hdf5", "/".join(inner), allow_external=allow_external)

    if inner:
        # A directory exists but the rest of the path does not: a missing element of a Zarr store.
        msg = f"No such file or Zarr store: '{os.fspath(filepath)}'"
        raise ShadowsFileNotFoundError(msg)
    if wanted == "hdf5":
        msg = f"{existing}: format='hdf5' was asked for, but this is a directory."
        raise NotAnnDataError(msg)
    if not is_zarr_dir(existing):
        msg = f"{existing}: this directory is not a Zarr store (no zarr.json or .zgroup)."
        raise NotAnnDataError(msg)
    # The store root is the top-most Zarr directory; what lies below it is the AnnData's group path.
    store = existing
    while is_zarr_dir(store.parent) and store.parent != store:
        inner.insert(0, store.name)
        store = store.parent
    return FileRef(str(store), "zarr", "/".join(inner), allow_external=allow_external)


def suffix_format(path: str | os.PathLike) -> Format | None:
    """Format suggested by a path's suffix alone (used for messages and for new files)."""
    suffix = Path(os.fspath(path)).suffix.lower()
    if suffix in _HDF5_SUFFIXES:
        return "hdf5"
    if suffix == ".zarr":
        return "zarr"
    return None


#: Where a URL names an element inside a file or store: ``….h5mu/mod/rna``.
_CONTAINER_SUFFIXES = (".h5mu", ".h5ad", ".zarr", ".h5", ".hdf5")


def _split_url(url: str) -> tuple[str, str]:
    """``(file or store URL, group path inside it)``: the path after the last known container suffix."""
    head, _, tail = url.partition("://")
    for suffix in _CONTAINER_SUFFIXES:
        marker = f"{suffix}/"
        at = tail.rfind(marker)
        if at >= 0 and tail[at + len(marker):].strip("/"):
            return f"{head}://{tail[: at + len(suffix)]}", tail[at + len(marker):].strip("/")
    return url.rstrip("/"), ""


def _resolve_url(url: str, wanted: Format | None, storage_options: Mapping[str, Any] | None) -> FileRef:
    """A :class:`FileRef` for an fsspec URL: the format from ``format``, the suffix, or the bytes."""
    from shadows.backends import remote

    store, inner = _split_url(url)
    fmt = wanted or suffix_format(store)
    with remote.network_errors(store):
        if fmt is None:
            fmt = remote.sniff_format(store, storage_options)
            if fmt is None:
                if not remote.exists(store, storage_options):
                    raise ShadowsFileNotFoundError(f"No such file or Zarr store: '{remote.redact(url)}'")
                msg = (f"{remote.redact(store)}: cannot open as AnnData: neither a Zarr store (no zarr.json, "
                       ".zgroup or .zmetadata) nor an HDF5 file")
                raise NotAnnDataError(msg)
        elif not remote.exists(store, storage_options):
            raise ShadowsFileNotFoundError(f"No such file or Zarr store: '{remote.redact(url)}'")
    return FileRef(store, fmt, inner, storage_options=dict(storage_options or {}))
