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
from collections.abc import Iterable
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


def current_client(collection: Any = None, reads: Iterable[str] | None = None) -> Any:
    """The ``distributed.Client`` dask computes on now, or ``None``: none, a local scheduler chosen with
    ``dask.config.set(scheduler=...)``, or ``collection``'s graph (or the files ``reads`` names, when
    given instead) reads an HDF5 file this process holds open for writing (HDF5's lock keeps the workers
    from opening it). Without either, any HDF5 file open for writing in this process counts.
    """
    import dask

    from shadows.backends import registry

    held = registry.hdf5_open_for_writing()
    if held:
        if reads is not None:
            read: set[str] | None = set(reads)
        else:
            read = None if collection is None else files_read_by(collection)
        if read is None or not set(held).isdisjoint(read):
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


def files_read_by(collection: Any) -> set[str] | None:
    """The paths of the files whose :class:`~shadows.backends.fileref.FileRef` the tasks of
    ``collection``'s graph carry; ``None`` when the graph does not pickle (it may hold anything, an open
    h5py dataset too: it is not sent to a cluster).

    Found by pickling the graph into nothing and noting every reference met on the way: a graph's
    tasks are dask's own (versioned) objects holding shadows' specs, and pickling is the one traversal
    that reaches everything a worker would receive, whatever their layout. Buffers (numpy arrays in the
    graph) are passed out of band, so they are not copied.
    """
    import io
    import pickle

    import cloudpickle

    from shadows.backends.fileref import FileRef

    paths: set[str] = set()

    class _Noting(cloudpickle.Pickler):
        def persistent_id(self, obj: Any) -> Any:
            if isinstance(obj, FileRef):
                paths.add(obj.path)
            return None

    from dask.core import flatten

    graph = collection.__dask_graph__()
    if hasattr(graph, "cull"):  # only the tasks the collection's keys need (a slice reads only its chunks)
        graph = graph.cull(set(flatten(collection.__dask_keys__())))
    graph = dict(graph)
    try:
        _Noting(io.BytesIO(), protocol=pickle.HIGHEST_PROTOCOL, buffer_callback=lambda _: None).dump(graph)
    except Exception:  # whatever stops pickling: the graph stays in this process
        return None
    return paths


def compute_on(client: Any, collection: Any, show_progress: bool) -> Any:
    """Compute ``collection`` on ``client`` and return its result, showing distributed's progress bar
    (text in a terminal, a widget in Jupyter) while it runs when ``show_progress``.
    """
    future = client.compute(collection)
    if show_progress:
        from distributed import progress

        progress(future)
    return future.result()


def writes_on_cluster(workers_write: bool, reads: Iterable[str]) -> bool:
    """Whether a write into a target that workers may write (``workers_write``: Zarr, see
    :class:`~shadows.backends.storage.FileCapabilities`) of what is read from the files ``reads`` (the
    shadow's own) runs on a ``distributed.Client``'s workers: which progress bar shows. Values that read
    other files too are decided per element by :mod:`shadows.writing.streams`, which looks at their graphs.
    """
    return workers_write and current_client(reads=reads) is not None


def compute(collection: Any) -> Any:
    """``collection.compute()``; while a reading bar is shown (:mod:`shadows.progress`) and a
    ``distributed.Client`` is dask's scheduler, on that client with distributed's own progress bar (the
    bytes are read on the workers, where this process's bar cannot count them).
    """
    from shadows import progress

    client = current_client(collection) if progress.showing_reads() else None
    if client is None:
        return collection.compute()
    return compute_on(client, collection, show_progress=True)
