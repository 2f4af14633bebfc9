"""A file or store as a whole: what it allows (:class:`FileCapabilities`), and the questions about it that
writers and connections ask (may it be written, is something stored at a path, would a write there
follow a link), answered here for each format so that nothing outside ``backends`` tests one.

The arrays inside a file have capabilities of their own (:class:`shadows.backends.abc.Capabilities`).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from shadows.backends import nodes, remote

Elements = Literal["in-file", "folders", "objects"]
"""Where a file's elements lie: ``"in-file"``, objects inside one file (HDF5: a commit links them in, in
one flush of its metadata); ``"folders"``, folders of a local store (Zarr: a commit renames them in,
writers take a lock file in the store, names are limited by the file system); ``"objects"``, key
prefixes of an object store behind a URL (Zarr: a commit copies them in)."""


@dataclass(frozen=True)
class FileCapabilities:
    """What a file or store allows, from its format and location alone (nothing is opened).

    Parameters
    ----------
    elements
        Where its elements lie (see :data:`Elements`).
    remote
        Behind a URL (fsspec): every read is a request.
    workers_write
        Processes other than this one (a ``distributed`` cluster's workers) may write an element's chunks
        into it, each its own (Zarr); ``False``: one process writes (HDF5, whose file lock admits one
        writer).
    parallel_writes
        Threads of this process may write at once (Zarr encodes chunks in parallel); ``False``: writes
        take turns (h5py holds one lock for every call).
    lookups_follow_links
        Looking a path up may follow a link into another file (HDF5 external links: h5py opens that
        file), so a path is checked before it is looked up (:mod:`shadows.backends.containment`).
    parallel_reads
        Threads of this process gain by reading it at once; ``False`` for a local HDF5 file: h5py makes
        one call at a time, so threads only take turns, which costs more than small reads (a remote
        file's reads wait on the network, which threads still overlap).
    """

    elements: Elements
    remote: bool
    workers_write: bool
    parallel_writes: bool
    lookups_follow_links: bool
    parallel_reads: bool


def capabilities(path: str, format: str) -> FileCapabilities:
    """The capabilities of the file or store at ``path`` (a local path or a URL) in ``format``."""
    return _capabilities(format, remote.is_url(path))


def _capabilities(format: str, url: bool) -> FileCapabilities:
    if format == "hdf5":
        return FileCapabilities("in-file", url, workers_write=False, parallel_writes=False,
                                lookups_follow_links=True, parallel_reads=url)
    return FileCapabilities("objects" if url else "folders", url, workers_write=True, parallel_writes=True,
                            lookups_follow_links=False, parallel_reads=True)


def of_group(group: Any) -> FileCapabilities:
    """The capabilities of the file an open group (a write target: an ``h5py.Group``, a ``zarr.Group``)
    lies in.
    """
    if nodes.is_hdf5(group):
        return _capabilities("hdf5", group.file.driver == "fileobj")
    from zarr.storage import FsspecStore

    return _capabilities("zarr", isinstance(getattr(group.store, "wrapped", group.store), FsspecStore))


def check_writable(path: str, format: str, storage_options: Mapping[str, Any] | None) -> None:
    """Raise unless this user may write the file or store at ``path``: ``ReadOnlyError`` for an HDF5 file
    behind a URL or a filesystem that takes no writes (HTTP), ``PermissionDeniedError`` for a local file
    (or the store's folders that a commit renames in and out of: its root, its slots and their elements)
    this user may not write.
    """
    from shadows.errors import PermissionDeniedError, ReadOnlyError

    if remote.is_url(path):
        if format == "hdf5":
            raise ReadOnlyError(f"{remote.redact(path)}: an HDF5 file behind a URL can only be read; open it with "
                                "mode='r' (or copy it to a local disk to write to it)")
        if not remote.supports_writes(path, storage_options):
            raise ReadOnlyError(f"{remote.redact(path)}: this filesystem does not take writes (HTTP); open it with "
                                "mode='r'")
        return
    places = [path]
    if format == "zarr":
        root = Path(path)
        slots = [e for e in os.scandir(root) if e.is_dir(follow_symlinks=False)]
        places += [e.path for e in slots]
        places += [e.path for slot in slots for e in os.scandir(slot.path) if e.is_dir(follow_symlinks=False)]
    denied = [p for p in places if not os.access(p, os.W_OK)]
    if denied:
        shown = ", ".join(denied[:3]) + (f" and {len(denied) - 3} more" if len(denied) > 3 else "")
        raise PermissionDeniedError(f"{path}: cannot open for writing (mode 'r+'): permission denied ({shown} not "
                                    "writable by this user); check the permissions, or open it with mode='r'")


def link_problem(path: str, format: str, handle: Any, element: str) -> str | None:
    """Why writing the element at ``element`` (absolute in the file) would leave the file or store, or
    ``None``: a symbolic link (local Zarr) or an HDF5 soft or external link on the way to it (or at it)
    would carry the write, or the removal of what it replaces, somewhere else. ``handle`` is the file's
    metadata handle (the ``h5py.File``).
    """
    if format == "hdf5":
        return _hdf5_link_problem(handle, element)
    if remote.is_url(path):
        return None  # object stores have no links
    current = Path(path)
    for part in element.split("/"):
        current = current / part
        if current.is_symlink():
            return f"'{current}' is a symbolic link"
        if not current.exists():
            return None
    return None


def _hdf5_link_problem(file: Any, path: str) -> str | None:
    import h5py

    group = file
    parts = path.split("/")
    for depth, part in enumerate(parts):
        link = group.get(part, getlink=True)
        if link is None:
            return None
        if not isinstance(link, h5py.HardLink):
            return f"'/{'/'.join(parts[: depth + 1])}' is an HDF5 {type(link).__name__}"
        group = group[part]
        if not isinstance(group, h5py.Group):
            return None
    return None


def holds(path: str, format: str, handle: Any, element: str) -> bool:
    """Whether the file or store at ``path`` holds something at ``element`` (what writing there would
    replace); ``handle`` is its metadata handle (the ``h5py.File``, or the store's metadata).
    """
    if format == "hdf5":
        try:
            return handle.get(element, getlink=True) is not None
        except (KeyError, ValueError):
            return False
    if remote.is_url(path):
        return element in handle
    return os.path.lexists(Path(path) / element)


def overlaps(path: Path, source: str) -> bool:
    """Whether a file written at the local ``path`` would be, lie inside or hold the file or store at
    ``source`` (symbolic links and ``..`` resolved); never for a ``source`` behind a URL.
    """
    if remote.is_url(source):
        return False
    real, real_source = path.resolve(), Path(source).resolve()
    return real == real_source or real.is_relative_to(real_source) or real_source.is_relative_to(real)


@contextlib.contextmanager
def new_file(path: Path, format: str, userblock: bytes | None = None, zarr_format: int = 2) -> Iterator[Any]:
    """Create a file (HDF5) or store (Zarr) at ``path``, where nothing may exist yet, and give its root
    group to fill. On leaving, an HDF5 file is closed and ``userblock`` (512 bytes, or a larger power of
    two: the MuData mark) written before its first byte of HDF5; a Zarr store (of ``zarr_format``) gets
    consolidated metadata. A store has no userblock: ``userblock`` is for HDF5 files only.
    """
    if format == "hdf5":
        import h5py

        with h5py.File(path, "w-", userblock_size=len(userblock) if userblock else None) as file:
            yield file
        if userblock:
            with path.open("r+b") as raw:
                raw.write(userblock)
        return
    import zarr

    os.mkdir(path)  # fails on anything already there, a symbolic link included
    yield zarr.open_group(str(path), mode="w-", zarr_format=zarr_format)
    with warnings.catch_warnings():  # anndata writes v3 consolidated metadata too (zarr warns)
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        zarr.consolidate_metadata(str(path))


def zarr_group_location(group: Any) -> tuple[str, dict[str, Any] | None]:
    """The path or URL that opens the open ``zarr.Group`` ``group`` again, and for a URL the fsspec
    options to open it with. ``TypeError`` for anything else, or a group of a store that has no location
    (in memory).
    """
    import zarr

    if not isinstance(group, zarr.Group):
        raise TypeError(f"read_zarr takes a path, a URL or a zarr.Group, not {type(group).__name__}")
    store = group.store
    inner = group.path.strip("/")
    options = None
    if isinstance(store, zarr.storage.LocalStore):
        root = os.fspath(store.root)
    elif isinstance(store, zarr.storage.FsspecStore):
        root = store.path.rstrip("/")
        if "://" not in root:  # s3, gs...: the bucket and key (HTTP keeps the whole URL as its path)
            protocol = store.fs.protocol[0] if isinstance(store.fs.protocol, tuple) else store.fs.protocol
            root = f"{protocol}://{root}"
        # zarr opened the filesystem asynchronous: shadows' own readers take the options synchronous
        options = {k: v for k, v in (getattr(store.fs, "storage_options", {}) or {}).items()
                   if k not in ("asynchronous", "loop")}
    else:
        raise TypeError(f"read_zarr: a zarr.Group in a {type(store).__name__} cannot be shadowed: a shadow's tasks "
                        "reopen the store by its location. Write it to a directory (or an fsspec URL) first")
    return (f"{root.rstrip('/')}/{inner}" if inner else root), options
