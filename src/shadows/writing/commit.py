"""Commit staged elements to a file, each atomically: built where no reader sees it, linked in last.

HDF5: an element is built under an anonymous group (created without a name, so not in the tree) and
hard-linked into place at the end; measured here, a writer killed before the link leaves every old
dataset intact and no trace of the new element, while growing a group in place can corrupt its
neighbours. anndata 0.12's ``write_elem`` cannot write into an anonymous group, so elements anndata
encodes (everything but streamed dask arrays) are encoded into an in-memory HDF5 file and copied.

Zarr: an element is built as its own hierarchy under ``.shadows-tmp/<id>/`` inside the store (a plain
directory, not a Zarr node, so readers never list it), renamed into place, and the consolidated
metadata (when the store has it) is rewritten; zarr writes each metadata file atomically.

A new obs/var column is linked into its dataframe group first and then named in ``column-order``;
anndata reads only the columns listed there, so until that last step the column is absent.

Replacing a stored element: in Zarr the new folder and the old one are swapped in one atomic call on
Linux (two renames elsewhere). The consolidated metadata is a copy of every node's metadata, so it cannot
change in the same step as a folder: before the first replacement or deletion it is dropped (one atomic
rewrite of the root's metadata), readers read each node's own metadata (which moves with its folder) until
the commit consolidates again, and a writer killed in between leaves a correct store without consolidated
metadata rather than one whose consolidated metadata describes chunks that are gone.

In HDF5 the old link is removed and the new one created between two flushes: both changes reach the file
in the same flush of HDF5's metadata cache.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import os
import re
import shutil
import stat
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shadows.backends import storage
from shadows.errors import FileBusyError, UnsafeTargetError
from shadows.writing.anndata_elems import write_elem as _write_elem
from shadows.writing.streams import is_dask, write_streamed

ZARR_SCRATCH = ".shadows-tmp"
#: Extra bytes reserved for HDF5's own structures (object headers, chunk indexes) with each element.
RESERVE_MARGIN = 2**20


class _Deleted:
    """The value of a staged deletion."""

    def __repr__(self) -> str:
        return "DELETED"


DELETED = _Deleted()


@dataclass
class ElementChange:
    """A staged element: ``value`` goes to ``path`` (absolute in the file)."""

    path: str
    value: Any
    replaces: bool
    written: Callable[[], None]


@dataclass
class ColumnChange:
    """A staged obs/var column: ``values`` become column ``key`` of the dataframe at ``frame_path``."""

    frame_path: str
    key: str
    values: pd.Series
    replaces: bool
    written: Callable[[], None]


@dataclass
class SlotSwap:
    """The value of a change that replaces several elements and deletes others in one step (HDF5 only).

    ``built`` is an in-memory HDF5 file holding each new element, already encoded, under the name
    ``replace`` gives for its path; ``streamed`` names dask arrays written into a new element (by its
    path) once it is copied to the file; ``delete`` lists elements removed. Everything is built aside,
    then every unlink and link happens between two flushes. Used to move slots anndata < 0.7 stored as
    structured datasets to today's encoding (:mod:`shadows.writing.legacy_upgrade`).
    """

    built: Any
    replace: dict[str, str]
    streamed: dict[str, dict[str, Any]]
    delete: list[str]


@dataclass
class GroupAttributes:
    """The value of a change that sets attributes of the existing group at the change's path (a MuData's
    ``mod-order``, written after the modalities it names). Attributes are written atomically by HDF5
    and Zarr alike.
    """

    attrs: dict[str, list[str]]


def _split(path: str) -> tuple[str, str]:
    parent, _, name = path.rpartition("/")
    return parent, name


def one_column_frame(change: ColumnChange) -> pd.DataFrame:
    """The column of ``change`` as the one-column dataframe anndata encodes for it."""
    values = change.values
    array = values.array if isinstance(values, pd.Series) else values
    return pd.DataFrame({change.key: array}, index=pd.RangeIndex(len(array)))


def _column_order(attrs: Any) -> list[str]:
    order = attrs.get("column-order", [])
    if isinstance(order, str):
        return [order]
    return [o.decode() if isinstance(o, bytes) else str(o) for o in np.asarray(order).reshape(-1)]


def write_value(group: Any, name: str, value: Any) -> None:
    """Write ``value`` as ``group[name]``: a dask array streamed block by block, anything else by anndata."""
    if is_dask(value):
        write_streamed(group, name, value)
    else:
        _write_elem(group, name, value)


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where that is unavailable.

    Python's ``os`` has no such call; without it replacing a folder takes two renames, and a writer
    killed between them leaves the element absent.
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


class Hdf5Commit:
    """Atomic element commits into an h5py.File open for writing."""

    def __init__(self, file: Any):
        self.file = file

    def _build(self, value: Any, name: str) -> Any:
        """``value`` built as child ``name`` of an anonymous group; returns the child."""
        import h5py

        scratch = self.file.create_group(None)
        if is_dask(value):
            # computed here: the file is open for writing, so a cluster's workers could not read from it
            write_streamed(scratch, name, value, reserve=self._reserve, cluster=False)
        else:
            buffer = io.BytesIO()
            with h5py.File(buffer, "w") as memory:
                _write_elem(memory, name, value)
                memory.flush()
                self._reserve(buffer.getbuffer().nbytes)
                memory.copy(memory[name], scratch, name=name)
        return scratch[name]

    def _reserve(self, nbytes: int) -> None:
        """Allocate disk space for ``nbytes`` more at the end of the file before HDF5 writes them.

        HDF5 records the file's new end before writing what lies there: if a write then fails for want
        of space, the file is left shorter than recorded and HDF5 refuses to open it ("truncated
        file"). Reserving first makes a full disk fail here, before HDF5 has changed anything. HDF5 trims
        unused space when it closes the file; a killed writer leaves zeros past the end, which readers
        ignore.
        """
        if not hasattr(os, "posix_fallocate"):  # not on macOS: no reservation there
            return
        need = int(nbytes * 1.05) + RESERVE_MARGIN
        fd = os.open(self.file.filename, os.O_WRONLY)
        try:
            end = max(os.fstat(fd).st_size, self.file.id.get_filesize())
            os.posix_fallocate(fd, end, need)
        finally:
            os.close(fd)

    def _parent(self, path: str) -> Any:
        """The group at ``path``, created (anonymously, then linked) with the dict encoding if missing."""
        if not path:
            return self.file
        if path in self.file:
            return self.file[path]
        above, name = _split(path)
        parent = self._parent(above)
        group = self.file.create_group(None)
        group.attrs["encoding-type"] = "dict"
        group.attrs["encoding-version"] = "0.1.0"
        parent[name] = group
        return parent[name]

    def element(self, change: ElementChange) -> None:
        if isinstance(change.value, SlotSwap):
            self.swap(change.value)
            return
        if isinstance(change.value, GroupAttributes):
            import h5py

            group = self._parent(change.path)
            for key, names in change.value.attrs.items():
                group.attrs.create(key, data=np.array(names, dtype=object), dtype=h5py.string_dtype())
            self.file.flush()
            return
        parent_path, name = _split(change.path)
        if change.value is DELETED:
            del self.file[change.path]
            self.file.flush()
            return
        built = self._build(change.value, name)
        parent = self._parent(parent_path)
        self.file.flush()  # the new element is in the file, unreachable; unlink and link go in one flush
        if name in parent:
            del parent[name]  # replacing: the unlink and the link below follow each other
        parent[name] = built
        self.file.flush()

    def swap(self, swap: SlotSwap) -> None:
        """Build every new element of ``swap`` as anonymous objects, then relink them all in one flush."""
        try:
            self._reserve(swap.built.id.get_filesize())
            built = {}
            for path, name in swap.replace.items():
                scratch = self.file.create_group(None)
                swap.built.copy(swap.built[name], scratch, name="element")
                built[path] = scratch["element"]
                for key, value in swap.streamed.get(path, {}).items():
                    write_streamed(built[path], key, value, reserve=self._reserve, cluster=False)
        finally:
            swap.built.close()
        self.file.flush()  # the new elements are in the file, unreachable; every relink goes in one flush
        for path, node in built.items():
            parent_path, name = _split(path)
            parent = self.file[parent_path] if parent_path else self.file
            del parent[name]
            parent[name] = node
        for path in swap.delete:
            del self.file[path]
        self.file.flush()

    @staticmethod
    def _set_column_order(frame: Any, order: list[str]) -> None:
        import h5py

        frame.attrs.create("column-order", data=np.array(order, dtype=object), dtype=h5py.string_dtype())

    def column(self, change: ColumnChange) -> None:
        frame = self.file[change.frame_path]
        order = _column_order(frame.attrs)
        if change.values is DELETED:  # unnamed first, so anndata no longer reads it, then unlinked
            self._set_column_order(frame, [c for c in order if c != change.key])
            del frame[change.key]
            self.file.flush()
            return
        built = self._build(one_column_frame(change), "frame")[change.key]
        if change.key in frame:
            del frame[change.key]
        frame[change.key] = built
        if change.key not in order:
            self._set_column_order(frame, [*order, change.key])
        self.file.flush()

    def finish(self) -> None:
        self.file.flush()


def check_no_zarr_writer(store: str) -> None:
    """Raise FileBusyError when another process is in the middle of a ``write()`` to the store.

    Writers hold an exclusive ``flock`` on ``.shadows-tmp/lock`` while they commit; the kernel drops it
    when the writer exits or is killed, so a stale lock file never blocks anyone.
    """
    lock_path = Path(store) / ZARR_SCRATCH / LOCK_NAME
    if not os.path.lexists(lock_path):
        return
    lock = _open_lock(lock_path, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise FileBusyError(f"{store}: cannot open for writing: another process is writing to this Zarr "
                            "store; open it 'r' to read, or retry when that write is done") from None
    finally:
        os.close(lock)


#: The lock file in the scratch folder, and the names of the scratch hierarchies writers make there.
LOCK_NAME = "lock"
_SCRATCH_NAME = re.compile(r"[0-9a-f]{32}")


def _open_lock(path: Path, flags: int) -> int:
    """Open the lock file without following a symbolic link (a link there is not ours: an error)."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as error:
        if error.errno != errno.ELOOP:
            raise
        raise UnsafeTargetError(f"{path}: the Zarr writers' lock file is a symbolic link; shadows does not follow "
                                "links out of a store. Remove it (it is not shadows') and write again") from None


def _lock_store(store: Path) -> tuple[Path, int]:
    """Make the store's scratch folder and hold its writers' lock: ``(folder, lock descriptor)``.

    The writer that finishes removes the lock file while it holds the lock, so a writer that opened the
    old file meanwhile may lock a file no longer in the store: after locking, the file at the path must
    be the one locked (same inode), or the writer tries again with the new one.
    """
    while True:
        base = scratch_folder(store)
        lock = _open_lock(base / LOCK_NAME, os.O_WRONLY | os.O_CREAT)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock)
            raise FileBusyError(f"{store}: another process is writing to this Zarr store") from None
        held = os.fstat(lock)
        try:
            current = os.lstat(base / LOCK_NAME)
        except FileNotFoundError:
            current = None
        if current is not None and (current.st_ino, current.st_dev) == (held.st_ino, held.st_dev):
            return base, lock
        os.close(lock)  # removed by the writer that just finished: lock the store anew


def scratch_folder(store: Path) -> Path:
    """The store's scratch folder (``.shadows-tmp``), created if missing; it must be a real folder.

    Created with ``mkdir`` and then checked with ``lstat``, so a symbolic link (to anywhere) or a file
    at its name is refused, never written through or cleaned.
    """
    base = store / ZARR_SCRATCH
    with contextlib.suppress(FileExistsError):
        os.mkdir(base)
    if not stat.S_ISDIR(os.lstat(base).st_mode):
        raise UnsafeTargetError(f"{base}: shadows' scratch folder is a symbolic link or not a folder; shadows writes "
                                "only into a real folder of its own inside the store. Remove it and write again")
    return base


def _drop_stale_scratch(base: Path) -> None:
    """Remove the scratch hierarchies a killed writer left; anything else there is refused, not removed."""
    entries = list(os.scandir(base))
    foreign = [e.name for e in entries if e.name != LOCK_NAME
               and not (_SCRATCH_NAME.fullmatch(e.name) and e.is_dir(follow_symlinks=False))]
    if foreign:
        raise UnsafeTargetError(f"{base}: holds {', '.join(sorted(foreign))}, which shadows did not write; it removes "
                                "only its own scratch data. Move them out of the folder and write again")
    for entry in entries:
        if entry.name != LOCK_NAME:
            shutil.rmtree(entry.path)  # removes links inside without following them


def link_problem(connection: Any, path: str) -> str | None:
    """Why writing the element at ``path`` would leave the file or store, or ``None``: shadows never writes
    through a link (:func:`shadows.backends.storage.link_problem`).
    """
    return storage.link_problem(connection.path, connection.format, connection.handle, path)


def stored(connection: Any, path: str) -> bool:
    """Whether the file or store holds something at ``path`` (what writing there would replace)."""
    return storage.holds(connection.path, connection.format, connection.handle, path)


class ZarrCommitBase:
    """What committing into a Zarr store means whatever holds it: the element is built in a scratch group
    (``self.scratch``), then put in place by :meth:`_place`; obs/var columns are named in ``column-order``
    last. Subclasses say how to place and remove (local folders rename; object stores copy).
    """

    root: Any  # the store's root group, open for writing
    scratch: Any  # a group outside the hierarchy, where elements are built
    consolidated: bool
    zarr_format: int
    #: Whether this commit dropped the store's consolidated metadata (it consolidates again at the end).
    unconsolidated: bool = False

    def _scratch_location(self, name: str) -> Any:
        """Where the scratch child ``name`` lies (a path, or an object-key prefix)."""
        raise NotImplementedError  # pragma: no cover - both subclasses define it

    def _place(self, built: Any, path: str) -> None:
        """Put the element built at ``built`` at ``path`` in the store, replacing what is there."""
        raise NotImplementedError  # pragma: no cover

    def _remove(self, path: str) -> None:
        """Remove the stored element at ``path``."""
        raise NotImplementedError  # pragma: no cover

    def _consolidation_target(self) -> Any:
        """What ``zarr.consolidate_metadata`` is given for this store."""
        raise NotImplementedError  # pragma: no cover

    def _read_document(self, key: str) -> bytes:
        """The metadata document ``key`` (relative to the store's root)."""
        raise NotImplementedError  # pragma: no cover

    def _write_document(self, key: str, content: bytes) -> None:
        """Replace the metadata document ``key`` in one step (readers see the old one or the new one)."""
        raise NotImplementedError  # pragma: no cover

    def _delete_document(self, key: str) -> None:
        """Remove the metadata document ``key`` when it exists."""
        raise NotImplementedError  # pragma: no cover

    def _drop_consolidation(self) -> None:
        """Drop the store's consolidated metadata before something it describes is replaced or removed.

        zarr has no call that removes consolidated metadata, so the documents are edited here: format 2
        keeps it in ``.zmetadata``, format 3 under ``consolidated_metadata`` in the root's ``zarr.json``
        (readers that find neither read each node's own metadata).
        """
        if not self.consolidated or self.unconsolidated:
            return
        if self.zarr_format == 2:
            self._delete_document(".zmetadata")
        else:
            root = json.loads(self._read_document("zarr.json"))
            if root.pop("consolidated_metadata", None) is not None:
                self._write_document("zarr.json", json.dumps(root, indent=2).encode())
        self.unconsolidated = True

    def _build(self, value: Any, name: str) -> Any:
        name = f"{name}-{uuid.uuid4().hex}"  # the node's name is its folder's: renaming it names it anew
        write_value(self.scratch, name, value)
        return self._scratch_location(name)

    def _parent(self, path: str) -> None:
        if not path or path in self.root:
            return
        above, _ = _split(path)
        self._parent(above)
        group = self.root.require_group(path)
        group.attrs.update({"encoding-type": "dict", "encoding-version": "0.1.0"})

    def element(self, change: ElementChange) -> None:
        if change.replaces or change.value is DELETED:
            self._drop_consolidation()
        if change.value is DELETED:
            self._remove(change.path)
            return
        if isinstance(change.value, GroupAttributes):
            self._parent(change.path)
            self.root[change.path].attrs.update(change.value.attrs)
            return
        parent_path, name = _split(change.path)
        built = self._build(change.value, name)
        self._parent(parent_path)
        self._place(built, change.path)

    def column(self, change: ColumnChange) -> None:
        frame = self.root[change.frame_path]
        order = _column_order(frame.attrs)
        if change.replaces or change.values is DELETED:
            self._drop_consolidation()
        if change.values is DELETED:  # unnamed first, so anndata no longer reads it, then removed
            frame.attrs["column-order"] = [c for c in order if c != change.key]
            self._remove(f"{change.frame_path}/{change.key}")
            return
        built = self._build(one_column_frame(change), "frame")
        self._place(f"{built}/{change.key}", f"{change.frame_path}/{change.key}")
        if change.key not in order:
            frame.attrs["column-order"] = [*order, change.key]

    def consolidate(self) -> None:
        """Rewrite the consolidated metadata (when the store has it) to list what was committed.

        zarr warns here about the scratch folder (not a Zarr node: the point of it) and, for format 3,
        that consolidated metadata is not in the specification (anndata writes it anyway): neither
        concerns the user.
        """
        import zarr

        if not self.consolidated:
            return
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
            warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
            zarr.consolidate_metadata(self._consolidation_target())


class ZarrCommit(ZarrCommitBase):
    """Atomic element commits into a local Zarr store (format 2 or 3)."""

    def __init__(self, store: str, consolidated: bool):
        import zarr

        self.store = Path(store)
        self.consolidated = consolidated
        self.root = zarr.open_group(store, mode="r+", use_consolidated=False)
        self.zarr_format = self.root.metadata.zarr_format
        self._base, self._lock = _lock_store(self.store)
        try:
            _drop_stale_scratch(self._base)
        except BaseException:
            os.close(self._lock)
            raise
        self.scratch_path = self._base / uuid.uuid4().hex
        self.scratch = zarr.open_group(str(self.scratch_path), mode="w", zarr_format=self.zarr_format)

    def _scratch_location(self, name: str) -> str:
        return str(self.scratch_path / name)

    def _place(self, built: Any, path: str) -> None:
        target = self.store / path
        if target.exists():
            if exchange(Path(built), target):  # the old element now lies in the scratch folder
                return
            os.rename(target, self.scratch_path / f"replaced-{uuid.uuid4().hex}")
        os.rename(built, target)

    def _remove(self, path: str) -> None:
        os.rename(self.store / path, self.scratch_path / f"deleted-{uuid.uuid4().hex}")

    def _consolidation_target(self) -> str:
        return str(self.store)

    def _read_document(self, key: str) -> bytes:
        return (self.store / key).read_bytes()

    def _write_document(self, key: str, content: bytes) -> None:
        staged = self.scratch_path / f"document-{uuid.uuid4().hex}"
        staged.write_bytes(content)
        os.replace(staged, self.store / key)

    def _delete_document(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.store / key)

    def finish(self) -> None:
        self.consolidate()
        self._release()

    def abort(self) -> None:
        self._release()

    def _release(self) -> None:
        """Leave the store as clean as before the write: the scratch hierarchy, the lock file and the
        scratch folder are removed, the lock last (while held: see :func:`_lock_store`).
        """
        shutil.rmtree(self.scratch_path, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.unlink(self._base / LOCK_NAME)
        with contextlib.suppress(OSError):
            os.rmdir(self._base)  # only when empty (a writer waiting for the lock may have made it again)
        os.close(self._lock)
