"""Process-wide connections: one open handle and one layout generation per file per process.

Every shadow of a file in this process (its views, a MuData's modalities, and a modality opened alone by
its ``file.h5mu/mod/rna`` path) and every graph task reading that file here go through one
:class:`FileEntry`, keyed by (process id, path, format, storage options). The model is xarray's
``CachingFileManager``: a per-process cache of open files with a count of their users, the file closed
when the last user lets go, and nothing open ever pickled (tasks carry a
:class:`~shadows.backends.fileref.FileRef` and find, or make, the entry of whatever process runs them).

An entry holds

- the metadata handle: the ``h5py.File`` (HDF5), or the store's JSON metadata
  (:class:`~shadows.backends.zarr_meta.ZarrMetadata`, Zarr);
- for HDF5, that same ``h5py.File`` is what read tasks read through: a process never holds two HDF5 ids
  of one file (HDF5 refuses ``r+`` beside a read-only id of the same file in one process);
- for Zarr, a read-only ``zarr.Group`` for tasks and the groups ``.file`` returns (one per mode);
- the nodes tasks looked up (resolving a path costs about as much as reading a row of X);
- the users (connections, see :class:`shadows.core.connection.Connection`) and the mode each asked for.
  The handle is open ``r+`` while any user holds ``r+`` and goes back to ``r`` when none does (so other
  processes may open the file again); it is closed, with everything above, when the last user leaves.
- a generation: a number, unique in the process, that changes whenever the handle is replaced or the
  file was written through it, so layouts built from older metadata rebuild themselves.

An entry that tasks opened while no shadow was attached (a worker process, reads of a closed shadow, an
atlas's reads of its sources) stays for the reads to come, until :func:`release`, the end of the process,
or until more than ``shadows.settings.idle_files`` such entries are open: then the least recently read of
them are closed (an atlas over thousands of files would otherwise hold a descriptor and a metadata cache
per file it ever read, and run out of descriptors).

Readers that are not attached (read tasks, an atlas's metadata threads) read inside :func:`reading`, which
counts them in for as long as they read: when the last user leaves (the garbage collector may drop the
last shadow of a file in any thread, at any time) or :func:`release` forgets the entry while such reads
are in flight, the handle is closed by the last of them to finish, never under them.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from shadows.backends.remote import collection_paused, is_url
from shadows.settings import settings

_lock = threading.RLock()
_depth = 0  # how many locked sections are open (in the thread holding the lock)
_pending: collections.deque[tuple[FileEntry, int]] = collections.deque()
_entries: dict[tuple[int, str, str, str], FileEntry] = {}
_generations = itertools.count(1)
#: Order of reads: an entry's last read (the least recent are closed first past settings.idle_files).
_reads_order = itertools.count(1)
#: The number of entries at which the idle ones are counted next (see _trim_idle).
_next_trim = 0
#: Numbers of the file's contents as this process knows them: a new one at each write through it.
_contents = itertools.count(1)
#: HDF5 rewrites the superblock of a file open for writing whenever a handle of it is flushed or closed
#: (and trims the space a write reserved): its size and time move while its content does not. Here, per
#: HDF5 file this process opened for writing, the (size, mtime_ns) it has shown since the process last
#: wrote to it (HDF5's lock keeps other writers out meanwhile): each says the same content.
_unwritten_stats: dict[str, set[tuple[int, int]]] = {}


def _stat(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


def observed(path: str, stat: tuple[int, int]) -> None:
    """``stat`` was read from the HDF5 file at ``path``: while this process holds it open for writing, it
    shows the content the process last wrote (see :func:`same_content`).
    """
    # every file opened for writing has a record (_note_writable): the scan of every entry is skipped for
    # the others (a read task of each of a thousand sources made it once each)
    if path in _unwritten_stats and path in hdf5_open_for_writing():
        _unwritten_stats.setdefault(path, set()).add(stat)


def same_content(path: str, before: tuple[int, int], now: tuple[int, int]) -> bool:
    """Whether the HDF5 file at ``path`` showed ``before`` and ``now`` with one content: both around this
    process's writable handle of it, with no write by the process between them.
    """
    seen = _unwritten_stats.get(path, set())
    return before in seen and now in seen


@dataclass(frozen=True)
class Openers:
    """How an entry opens what it holds (given by :mod:`shadows.backends.handles`, which knows the formats).

    ``metadata(path, format, mode, storage_options, element)`` opens the metadata handle (HDF5: the
    ``h5py.File`` tasks read through too); ``group(path, mode, storage_options, element)`` a ``zarr.Group``.
    ``element`` names, in errors, what the opening is for.
    """

    metadata: Callable[[str, str, str, Mapping[str, Any] | None, str], Any]
    group: Callable[[str, str, Mapping[str, Any] | None, str], Any]


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """The registry's lock; users let go by the garbage collector are counted out first (see
    :func:`detach_soon`).
    """
    global _depth
    with _lock:
        _depth += 1
        try:
            if _depth == 1:
                _drain()
            yield
        finally:
            _depth -= 1


def _drain() -> None:
    while _pending:
        found, uid = _pending.popleft()
        found._detach(uid)


def detach_soon(found: FileEntry, user: Any) -> None:
    """Count ``user`` out of ``found`` from a finalizer: never waits for the lock.

    The garbage collector runs finalizers in whatever thread allocates at the time: zarr's event-loop
    thread while this one holds the lock and waits for zarr, say. Waiting there would hang both, so the
    user is queued and counted out now if the lock is free, else by the next registry operation.
    """
    _pending.append((found, id(user)))
    if _lock.acquire(blocking=False):
        try:
            if _depth == 0:  # not in the middle of a locked section of this very thread
                with _locked():
                    pass  # drains
        finally:
            _lock.release()


def _options_token(storage_options: Mapping[str, Any] | None) -> str:
    """A hashable stand-in for fsspec options (URLs opened with other credentials get entries of their own)."""
    if not storage_options:
        return ""
    return repr(sorted(storage_options.items(), key=lambda item: str(item[0])))


def _key(path: str, format: str, storage_options: Mapping[str, Any] | None) -> tuple[int, str, str, str]:
    return (os.getpid(), path, format, _options_token(storage_options))


def _close(handle: Any) -> None:
    close = getattr(handle, "close", None)
    if close is not None:
        close()


def _close_quietly(handle: Any) -> None:
    """Close ``handle``; HDF5 may refuse to close cleanly what it could not write (h5py then closes the id
    when the object goes).
    """
    with contextlib.suppress(OSError, RuntimeError, ValueError):
        _close(handle)


class FileEntry:
    """A file (or Zarr store) open in this process: one handle shared by every shadow and read task of it.

    Users attach with :meth:`attach` and leave with :meth:`detach`; see the module's docstring.
    """

    def __init__(self, path: str, format: str, storage_options: Mapping[str, Any] | None, openers: Openers):
        self.path = path
        self.openers = openers
        self.format = format
        self.storage_options = storage_options
        self.pid = os.getpid()
        #: The mode the handle is open in: ``"r+"`` while a user holds ``"r+"``.
        self.mode = "r"
        self.generation = next(_generations)
        #: Changes when something was written to the file through this entry (or it was opened anew):
        #: values read before may be stale, unlike after a mere reopen of the handle.
        self.content = next(_contents)
        self._handle: Any = None
        self._task_group: Any = None
        self._groups: dict[str, Any] = {}
        self.nodes: dict[Any, Any] = {}  # by path (Zarr: path and pipeline, handles.read_node)
        #: The stored arrays read tasks read through, each wrapping the node looked up (handles.read_stored).
        self.arrays: dict[str, Any] = {}
        self._modes: dict[int, str] = {}
        self._users: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
        #: The planner's content stamp (a FileRef's ``content``) last seen by read tasks, in a process
        #: that reads for another one (a distributed worker): see :meth:`follow`.
        self._followed: tuple[int, int] | None = None
        #: Reads in flight (:func:`reading`), counted under their own lock: entering and leaving a read
        #: must not wait for the registry's lock, held while files open.
        self._reads_lock = threading.Lock()
        self._reads = 0
        #: Closing was asked for (no user left, or :func:`release`) while reads were in flight: the last
        #: read to finish closes.
        self._close_after_reads = False
        #: Closed for good and no longer in the registry: a read finding it looks the entry up again.
        self._closed = False
        #: When the last read began (:data:`_reads_order`).
        self._last_read = 0

    # -- what users and tasks read through ---------------------------------------------------------

    def metadata(self, element: str = "") -> Any:
        """The metadata handle (HDF5: the ``h5py.File``), opened in :attr:`mode` when none is open (the
        first use, or after a reopen failed). ``element`` names, in errors, what it is opened for.
        """
        handle = self._handle
        if handle is None:
            with _locked():
                if self._handle is None:
                    self._handle = self.openers.metadata(self.path, self.format, self.mode, self.storage_options,
                                                         element)
                    self.generation = next(_generations)
                handle = self._handle
        return handle

    def wrote(self) -> None:
        """Something was written to the file: values read from it before may be stale."""
        self.content = next(_contents)
        _unwritten_stats[self.path] = set()

    def task_handle(self, element: str = "") -> Any:
        """What read tasks read through: the shared ``h5py.File``, or a read-only ``zarr.Group``."""
        if self.format == "hdf5":
            return self.metadata(element)
        group = self._task_group
        if group is None:
            with _locked():
                if self._task_group is None:
                    self._task_group = self.openers.group(self.path, "r", self.storage_options, element)
                group = self._task_group
        return group

    def group(self, mode: str) -> Any:
        """The ``zarr.Group`` a shadow in ``mode`` returns as ``.file`` (opened on first use)."""
        group = self._groups.get(mode)
        if group is None:
            with _locked():
                group = self._groups.get(mode)
                if group is None:
                    group = self._groups[mode] = self.openers.group(self.path, mode, self.storage_options, "")
        return group

    def user_file(self, mode: str) -> Any:
        """What a shadow in ``mode`` gives as its ``.file``: the shared ``h5py.File`` (whose mode is the
        handle's), or a ``zarr.Group`` in ``mode``.
        """
        if self.format == "hdf5":
            return self.metadata()
        return self.group(mode)

    @property
    def users(self) -> int:
        """How many connections are attached."""
        return len(self._modes)

    # -- users coming, changing mode and going ------------------------------------------------------

    def attach(self, user: Any, mode: str) -> None:
        """Count ``user`` (a connection) in, with ``mode``; the handle is upgraded to ``r+`` if needed.
        A Zarr store's metadata is read anew (another process may have changed the store meanwhile;
        attached users rebuild their layouts on next use). An HDF5 handle is kept: while it is open, HDF5
        file locking keeps other processes from writing.

        On failure nothing changed for the users: the entry is in its old mode (an HDF5 handle the
        upgrade had to close is reopened on next use) and ``user`` is not counted.
        """
        with _locked():
            if self.format != "hdf5" and self._handle is not None:
                self._reload()  # another process may have written the store since its metadata was read
            self._set(user, mode)
            self._users[id(user)] = user
            with self._reads_lock:
                self._close_after_reads = False

    def set_mode(self, user: Any, mode: str) -> None:
        """``user`` (attached) now wants ``mode``: the handle follows (``r+`` while anyone holds it)."""
        with _locked():
            self._set(user, mode)

    def _set(self, user: Any, mode: str) -> None:
        others = [m for uid, m in self._modes.items() if uid != id(user)]
        wanted = "r+" if mode == "r+" or "r+" in others else "r"
        if wanted != self.mode or self._handle is None:
            self._switch(wanted)
        self._modes[id(user)] = mode

    def detach(self, user: Any) -> None:
        """Count ``user`` out. The last user closes every handle and forgets the entry; when no user holds
        ``r+`` any more the handle goes back to ``r`` (a failure to reopen is left for the next use).
        """
        with _locked():
            self._detach(id(user))

    def _detach(self, uid: int) -> None:
        if self._modes.pop(uid, None) is None:
            return
        self._users.pop(uid, None)
        if self.pid != os.getpid():
            return  # a forked child's copy: the parent's handles are not ours to close
        if not self._modes:
            self._close_unless_read()
        elif self.mode == "r+" and "r+" not in self._modes.values():
            try:
                self._switch("r")
            except Exception:  # reopened, read-only, on next use
                self.mode, self._handle = "r", None

    @property
    def key(self) -> tuple[int, str, str, str]:
        return (self.pid, self.path, self.format, _options_token(self.storage_options))

    # -- replacing the handle -----------------------------------------------------------------------

    def _drop_derived(self) -> None:
        """Forget what was read through the handle: looked-up nodes (and their stored arrays), Zarr groups
        (their metadata).
        """
        self.nodes.clear()
        self.arrays.clear()
        self._task_group = None
        self._groups.clear()

    def _switch(self, mode: str) -> None:
        """Open the handle in ``mode``. HDF5 closes the old handle first (it refuses ``r+`` beside a
        read-only id of the same file); if ``mode`` is refused, the refusal is raised and the entry is back
        in its old mode, its handle opened again on next use (so a refused upgrade holds nothing open
        that could block another process meanwhile). A Zarr store's metadata does not depend on the
        mode: nothing is reopened.
        """
        if self.format != "hdf5" and self._handle is not None:
            self.mode = mode
            return
        old_mode, old = self.mode, self._handle
        self._handle = None
        self._drop_derived()
        self.generation = next(_generations)
        if old is not None:
            _close_quietly(old)
        self._note_writable(old_mode if old is not None else "r", mode)
        self.mode = mode
        try:
            self.metadata()
        except BaseException:
            self.mode = old_mode  # the old mode's handle is opened again on next use
            self._handle = None
            raise

    def follow(self, stamp: tuple[int, int]) -> None:
        """Read tasks planned elsewhere (in a distributed worker) carry the planner's content stamp; when it
        changed since this process last read, the planner wrote to the file: drop every handle and node
        looked up before (a Zarr store's consolidated metadata, an HDF5 metadata cache) and read anew.
        """
        if self._followed == stamp:
            return
        with _locked():
            if self._followed != stamp:
                if self._handle is not None or self._task_group is not None or self.nodes:
                    self._reload()
                self._followed = stamp

    def refresh(self) -> list[Any]:
        """Reopen the handle in its mode (after a write through it, or to see the file anew); returns the
        attached users, for them to learn what changed.
        """
        with _locked():
            self._reload()
            return list(self._users.values())

    def _reload(self) -> None:
        old = self._handle
        self._handle = None
        self._drop_derived()
        self.generation = next(_generations)
        if old is not None:
            _close_quietly(old)
        try:
            self.metadata()
        except Exception:  # reopened on next use, where the error is seen
            self._handle = None

    def close_all(self) -> None:
        """Close every handle of the file held here (the metadata handle, task handles, Zarr groups)."""
        handles = [self._handle, self._task_group, *self._groups.values()]
        was_open = self._handle is not None
        self._handle = None
        self._drop_derived()
        self.generation = next(_generations)
        for handle in handles:
            if handle is not None:
                _close_quietly(handle)
        if was_open:
            self._note_writable(self.mode, "r")

    # -- reads in flight --------------------------------------------------------------------------

    def _close_unless_read(self) -> None:
        """With no user left (under the registry's lock): forget the entry and close its handles, now if no
        read is in flight, else when the last one finishes (:meth:`_leave`).
        """
        with self._reads_lock:
            if self._reads:
                self._close_after_reads = True
                return
            self._closed = True
        self._forget_and_close()

    def _forget_and_close(self) -> None:
        if _entries.get(self.key) is self:
            del _entries[self.key]
        self.close_all()

    def _enter(self) -> bool:
        """Count a read in; ``False`` if the entry was closed for good (look it up again)."""
        with self._reads_lock:
            if self._closed:
                return False
            self._reads += 1
            self._last_read = next(_reads_order)
            return True

    def _leave(self) -> None:
        """Count a read out; the last one closes the entry if closing was asked for meanwhile and no user
        came back.
        """
        with self._reads_lock:
            self._reads -= 1
            if self._reads or not (self._close_after_reads or self._holds_nothing()):
                return
        with _locked():
            with self._reads_lock:
                if self._reads:  # read again meanwhile: that read's end decides
                    return
                if self._modes:  # a user attached meanwhile: the entry is theirs
                    self._close_after_reads = False
                    return
                if not (self._close_after_reads or self._holds_nothing()):
                    return
                self._close_after_reads = False
                self._closed = True
            self._forget_and_close()

    def _close_if_idle(self) -> None:
        """Forget the entry and close its handles if no user is attached and no read is in flight (under
        the registry's lock).
        """
        with self._reads_lock:
            if self._reads or self._modes:
                return
            self._closed = True
        self._forget_and_close()

    def _holds_nothing(self) -> bool:
        """Nothing open and no user: an entry made for reads that opened nothing (the reference of an
        atlas, which names no file of its own, say) is not kept.
        """
        return self._handle is None and self._task_group is None and not self._groups and not self._modes

    def _note_writable(self, before: str, after: str) -> None:
        """Keep the stats an HDF5 file shows just before this process opens it for writing and just after
        it closes its writable handle (:data:`_unwritten_stats`).
        """
        if self.format != "hdf5" or (before == "r") == (after == "r"):
            return
        stat = _stat(self.path)
        if stat is None:
            if after != "r":
                _unwritten_stats[self.path] = set()  # a record for every file opened for writing (observed)
            return
        if after != "r":  # opening for writing: a file that is not as last seen starts a new record
            seen = _unwritten_stats.get(self.path, set())
            _unwritten_stats[self.path] = seen if stat in seen else {stat}
        else:
            _unwritten_stats.setdefault(self.path, set()).add(stat)

    def release_tasks(self) -> None:
        """Drop what tasks cached; with no user attached, close the handle too (once reads in flight are
        done).
        """
        if not self._modes:
            self._close_unless_read()
        else:
            self.nodes.clear()
            self.arrays.clear()
            self._task_group = None


def hdf5_open_for_writing() -> list[str]:
    """The HDF5 files this process holds open for writing (which HDF5's lock keeps every other process,
    a distributed worker too, from opening).
    """
    return [e.path for e in list(_entries.values()) if e.format == "hdf5" and e.mode != "r" and e.pid == os.getpid()]


def entry(path: str, format: str, storage_options: Mapping[str, Any] | None, openers: Openers) -> FileEntry:
    """The entry of the file at ``path`` in this process (made, with nothing open yet, if there is none)."""
    key = _key(path, format, storage_options)
    found = _entries.get(key)
    if found is None:
        with _locked():
            found = _entries.get(key)
            if found is None:
                found = _entries[key] = FileEntry(path, format, storage_options, openers)
                _trim_idle()
    return found


def _trim_idle() -> None:
    """Past ``settings.idle_files`` open entries with no user, close the least recently read (down to half
    the limit; an entry being read is skipped). Under the registry's lock, when an entry is made: entries
    are counted only once their number grew by half the limit since the last count.
    """
    global _next_trim
    limit = max(1, settings.idle_files)
    if len(_entries) <= max(limit, _next_trim):
        return
    pid = os.getpid()
    idle = [e for e in list(_entries.values()) if e.pid == pid and not e._holds_nothing() and not e._modes]
    if len(idle) > limit:
        idle.sort(key=lambda e: e._last_read)
        for found in idle[:len(idle) - limit // 2]:
            found._close_if_idle()
    _next_trim = len(_entries) + max(1, limit // 2)


@contextlib.contextmanager
def reading(path: str, format: str, storage_options: Mapping[str, Any] | None, openers: Openers,
            transient: bool = False) -> Iterator[FileEntry]:
    """The entry of the file at ``path``, counted as read for the duration: its handle is not closed under
    the reads made inside (see the module's docstring). Reads nest.

    ``transient``: a read made once (an atlas's catalog reads each of a thousand sources' metadata once):
    unless a user is attached, the handle is closed when the last read ends, instead of staying open for
    read tasks to come.
    """
    while True:
        found = entry(path, format, storage_options, openers)
        if found._enter():
            break
        with _locked():  # closed for good by a thread still forgetting it: wait for that, then look again
            pass
    try:
        if found.format == "hdf5" and is_url(path):
            with collection_paused():  # h5py reads a remote file on fsspec's thread: see the pause
                yield found
        else:
            yield found
    finally:
        if transient:
            with found._reads_lock:
                found._close_after_reads = not found._modes
        found._leave()


def attach(user: Any, path: str, format: str, mode: str, storage_options: Mapping[str, Any] | None,
           openers: Openers) -> FileEntry:
    """Attach ``user`` to the file's entry in ``mode`` (opening or upgrading its handle); an entry made
    for this and refused is forgotten again.
    """
    with _locked():
        found = entry(path, format, storage_options, openers)
        try:
            found.attach(user, mode)
        except BaseException:
            if not found.users and found._handle is None and _entries.get(found.key) is found:
                del _entries[found.key]
            raise
    return found


def release(path: str) -> None:
    """Forget this process's entries of ``path`` (every format and option set): what read tasks cached is
    dropped, and an entry no shadow is attached to is closed. One that shadows are attached to stays
    theirs (they keep reading the file they opened, should it be replaced) but is no longer found: new
    shadows and read tasks open ``path`` anew.
    """
    with _locked():
        for key, found in list(_entries.items()):
            if key[0] != os.getpid() or found.path != path:
                continue
            found.release_tasks()
            if _entries.get(key) is found:
                del _entries[key]


def open_paths() -> list[tuple[str, str, int, str]]:
    """``(path, format, users, mode)`` of every entry of this process (for tests and debugging)."""
    pid = os.getpid()
    return [(e.path, e.format, e.users, e.mode) for k, e in list(_entries.items()) if k[0] == pid]
