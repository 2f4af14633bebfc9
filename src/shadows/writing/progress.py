"""One progress bar for a whole write or export (``progress=True``).

It counts the blocks of every element the job writes (a dask array's blocks, or 1 for an element
written at once) and names the element being written::

    writing [##############----------------]  47%  12/27 blocks  obsm/X_pca

The writer sets the bar for the job (:func:`job`); the places that write blocks take it along into
dask's worker threads (context variables do not follow them) and advance it. dask's own progress bar
showed one unlabelled bar per compute, which is one per element and more.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, TextIO

_CURRENT: ContextVar[JobProgress | None] = ContextVar("shadows_progress", default=None)
_WIDTH = 30


class JobProgress:
    """The bar of one job: ``total`` blocks, advanced from any thread, drawn on one line of ``stream``."""

    def __init__(self, total: int, verb: str, stream: TextIO):
        self.total = max(int(total), 1)
        self.done = 0
        self.verb = verb
        self.stream = stream
        self.label = ""
        self._lock = threading.Lock()
        self._drawn: tuple[int, str] | None = None

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

    def _draw(self) -> None:
        percent = self.done * 100 // self.total
        if self._drawn == (percent, self.label):  # draw only what changes the line
            return
        self._drawn = (percent, self.label)
        filled = self.done * _WIDTH // self.total
        bar = "#" * filled + "-" * (_WIDTH - filled)
        self.stream.write(f"\r{self.verb} [{bar}] {percent:3d}%  {self.done}/{self.total} blocks  {self.label}")
        self.stream.flush()

    def finish(self) -> None:
        with self._lock:
            self.done, self.label = self.total, "done"
            self._draw()
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
def job(total: int, enabled: bool, verb: str = "writing", stream: TextIO | None = None) -> Iterator[None]:
    """Show one bar of ``total`` blocks while the body runs (nothing when not ``enabled``)."""
    if not enabled:
        yield
        return
    bar = JobProgress(total, verb, stream or sys.stderr)
    token = _CURRENT.set(bar)
    try:
        yield
        bar.finish()
    finally:
        _CURRENT.reset(token)
