"""One progress bar for a whole write, export or read (``progress=True``).

A write counts the blocks of every element it writes (a dask array's blocks, or 1 for an element
written at once) and names the element being written::

    writing [##############----------------]  47%  12/27 blocks  obsm/X_pca

On a terminal the bar is redrawn in place (carriage returns). Where the stream is not a terminal (a log
file, a pipe, a notebook's captured output) nothing is redrawn: a plain line is printed when the job
starts, at most one every :data:`PLAIN_INTERVAL` seconds while it runs, and one when it ends::

    writing  47%  12/27 blocks  obsm/X_pca

A job that raises leaves its bar as it was, labelled ``stopped at`` the element it was on, and ends the
line, so that the traceback (or whatever is printed next) starts on a line of its own.

The writer sets the bar for the job (:func:`job`); the places that write blocks take it along into
dask's worker threads (context variables do not follow them) and advance it. dask's own progress bar
showed one unlabelled bar per compute, which is one per element and more. Under a ``distributed.Client``
a Zarr target is filled by the cluster's workers and distributed's bar shows it instead; an HDF5 target
(one writer: this process) receives the blocks computed on the cluster and keeps this bar.

A read (``to_memory(progress=True)``, or every element read while ``shadows.settings.read_progress`` is
on) counts the bytes read from the file against the uncompressed size of what it reads::

    reading [######------------------------]  21%  12.6/60.0 MB  layers/counts

Every read of stored values goes through :func:`shadows.backends.nodes.read`, which reports its bytes
here (:func:`count_read`); the reading bar is one per process, so that reads in dask's worker threads
count too. Under a ``distributed.Client`` the parts of a read that run on the cluster show distributed's
own progress bar (:func:`compute`).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, TextIO

_CURRENT: ContextVar[JobProgress | None] = ContextVar("shadows_progress", default=None)
_WIDTH = 30
#: Seconds between two plain lines of progress where the stream is not a terminal (the first and the last
#: are always printed).
PLAIN_INTERVAL = 5.0


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal, where a bar is redrawn in place; elsewhere (a log, a pipe) progress
    is printed as plain lines, a few of them.

    Parameters
    ----------
    stream
        Where the progress is printed.
    """
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (OSError, ValueError):  # a closed or detached stream
        return False


class JobProgress:
    """The bar of one job: ``total`` blocks (or bytes), advanced from any thread, drawn on one line of
    ``stream``.
    """

    def __init__(self, total: int, verb: str, stream: TextIO, unit: str = "blocks", on_cluster: bool = False):
        self.total = max(int(total), 1)
        self.done = 0
        self.verb = verb
        self.stream = stream
        self.unit = unit
        #: the job's blocks are written by a distributed cluster's workers, whose progress distributed
        #: shows (see :mod:`shadows.cluster`): this bar only records that progress was asked for
        self.on_cluster = on_cluster
        self.label = ""
        self._lock = threading.Lock()
        self._drawn: tuple[int, str] | None = None
        self._ended = False  # the line is ended (finish, stop): nothing more is drawn on it
        #: redraw the bar in place (a terminal), or print plain lines now and then (a log, a pipe)
        self.terminal = is_terminal(stream)
        self._printed_at: float | None = None  # when the last plain line was printed

    def element(self, label: str) -> None:
        """Name the element being written."""
        with self._lock:
            self.label = label
            self._draw()

    def advance(self, blocks: int = 1) -> None:
        """Count ``blocks`` more as written."""
        with self._lock:
            self.done = min(self.done + blocks, self.total)
            self._draw()

    def _count(self) -> str:
        if self.unit == "bytes":
            return f"{self.done / 1e6:.1f}/{self.total / 1e6:.1f} MB"
        return f"{self.done}/{self.total} {self.unit}"

    def _draw(self, last: bool = False) -> None:
        if self.on_cluster or self._ended:
            return
        percent = self.done * 100 // self.total
        if not self.terminal:
            now = time.monotonic()
            if last or self._printed_at is None or now - self._printed_at >= PLAIN_INTERVAL:
                self._printed_at = now
                self.stream.write(f"{self.verb} {percent:3d}%  {self._count()}  {self.label}\n")
                self.stream.flush()
            return
        if self._drawn == (percent, self.label):  # draw only what changes the line
            return
        self._drawn = (percent, self.label)
        filled = self.done * _WIDTH // self.total
        bar = "#" * filled + "-" * (_WIDTH - filled)
        self.stream.write(f"\r{self.verb} [{bar}] {percent:3d}%  {self._count()}  {self.label}")
        self.stream.flush()

    def finish(self) -> None:
        """Draw the bar full, labelled "done", and end its line."""
        with self._lock:
            self.done, self.label = self.total, "done"
            self._end()

    def stop(self) -> None:
        """End the bar's line where the job stopped (it raised): the bar left as it was, labelled
        "stopped at" the element being written or read, so that what is printed next starts a new line.
        """
        with self._lock:
            self.label = f"stopped at {self.label}" if self.label else "stopped"
            self._end()

    def _end(self) -> None:
        if self.on_cluster or self._ended:
            return
        self._draw(last=True)
        self._ended = True  # draws from threads still running (dask's workers) stay off the next line
        if self.terminal:
            self.stream.write("\n")
            self.stream.flush()


def current() -> JobProgress | None:
    """The bar of the job running in this thread (``None``: no bar)."""
    return _CURRENT.get()


def blocks_of(value: Any) -> int:
    """How many blocks writing ``value`` counts: a dask array's blocks, else 1."""
    numblocks = getattr(value, "numblocks", None)
    if numblocks is None or not hasattr(value, "dask"):
        return 1
    count = 1
    for n in numblocks:
        count *= n
    return count


@contextlib.contextmanager
def job(total: int, enabled: bool, verb: str = "writing", stream: TextIO | None = None,
        on_cluster: bool = False) -> Iterator[None]:
    """Show one bar of ``total`` blocks while the body runs (nothing when not ``enabled``).

    ``on_cluster``: a Zarr target written under a ``distributed.Client`` is filled by the cluster's
    workers (:func:`shadows.writing.streams.write_dense`): distributed's own bar shows their progress, this
    one stays silent (see :func:`shadows.cluster.writes_on_cluster`).
    """
    if not enabled:
        yield
        return
    bar = JobProgress(total, verb, stream or sys.stderr, on_cluster=on_cluster)
    token = _CURRENT.set(bar)
    try:
        with _shown(bar):
            yield
    finally:
        _CURRENT.reset(token)


@contextlib.contextmanager
def _shown(bar: JobProgress) -> Iterator[None]:
    """The body's bar: finished when the body returns, stopped (its line ended) when it raises."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):  # the body's error is the one to see
            bar.stop()
        raise
    bar.finish()


# -- reads -----------------------------------------------------------------------------------------

_READING: JobProgress | None = None
_READING_LOCK = threading.Lock()


@contextlib.contextmanager
def reading_job(total: Callable[[], int], enabled: bool, stream: TextIO | None = None) -> Iterator[None]:
    """Show one bar counting the bytes read while the body runs, against ``total()`` bytes.

    Nothing is shown when not ``enabled``, or when a read already shows a bar (the reads of this body
    then count on that one: ``to_memory()`` reading its elements).
    """
    global _READING
    with _READING_LOCK:
        start = enabled and _READING is None
        if start:
            _READING = JobProgress(total(), "reading", stream or sys.stderr, unit="bytes")
    if not start:
        yield
        return
    try:
        with _shown(_READING):
            yield
    finally:
        with _READING_LOCK:
            _READING = None


def reading_element(label: str) -> None:
    """Name the element being read on the reading bar, if one is shown."""
    bar = _READING
    if bar is not None:
        bar.element(label)


def count_read(nbytes: int) -> None:
    """Count ``nbytes`` read from a file on the reading bar, if one is shown (from any thread)."""
    bar = _READING
    if bar is not None:
        bar.advance(int(nbytes))


def showing_reads() -> bool:
    """Whether a reading bar is shown now (see :func:`reading_job`)."""
    return _READING is not None
