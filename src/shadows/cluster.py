"""Computing on a ``dask.distributed`` cluster when one is dask's scheduler.

A shadow's graphs reopen the file by path, so they run on process workers. A ``distributed.Client``
created as usual becomes dask's default scheduler; the functions here find it (:func:`current_client`)
and run a computation on it with distributed's own progress bar (:func:`compute_on`).
"""

from __future__ import annotations

from typing import Any


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
