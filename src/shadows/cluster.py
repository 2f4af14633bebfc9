"""Where a shadow's graphs compute: on a ``dask.distributed`` cluster when one is dask's scheduler, and
in forked processes too.

A shadow's graphs reopen the file by path, so they run on process workers. A ``distributed.Client``
created as usual becomes dask's default scheduler; the functions here find it (:func:`current_client`)
and run a computation on it with distributed's own progress bar (:func:`compute_on`).

A forked process (a ``torch`` DataLoader worker, ``multiprocessing`` with fork) inherits dask's thread
pool of the parent without its threads: dask's threaded scheduler would wait forever for them. dask does
not reset it after a fork, so shadows does (:func:`_forget_dask_threads_after_fork`).
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any


def _forget_dask_threads_after_fork() -> None:
    """In a forked child: drop dask's thread pools inherited from the parent (their threads did not
    follow), so the threaded scheduler starts its own.
    """
    threaded = sys.modules.get("dask.threaded")
    if threaded is None:
        return
    threaded.default_pool = None
    threaded.pools.clear()
    threaded.pools_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_dask_threads_after_fork)


def current_client() -> Any:
    """The ``distributed.Client`` dask computes on now, or ``None`` (none, or a local scheduler chosen
    with ``dask.config.set(scheduler=...)``), or ``None`` while this process holds an HDF5 file open for
    writing: HDF5's lock keeps the workers from opening it, and the graphs at hand may read from it.
    """
    import dask

    from shadows.backends import registry

    if registry.hdf5_open_for_writing():
        return None
    if dask.config.get("scheduler", None) not in (None, "dask.distributed", "distributed"):
        return None
    try:
        from distributed import default_client
    except ImportError:
        return None
    try:
        return default_client()
    except ValueError:  # no client
        return None


def compute_on(client: Any, collection: Any, show_progress: bool) -> Any:
    """Compute ``collection`` on ``client`` and return its result, showing distributed's progress bar
    (text in a terminal, a widget in Jupyter) while it runs when ``show_progress``.
    """
    future = client.compute(collection)
    if show_progress:
        from distributed import progress

        progress(future)
    return future.result()
