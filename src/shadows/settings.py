"""``shadows.settings``: process-wide options.

``read_progress``
    Show a progress bar (see :mod:`shadows.progress`) for every element read from a file, labelled with
    the element and counting its bytes; ``False`` by default. ``to_memory(progress=True)`` shows one for
    a single call.

``zarrs``
    Read Zarr arrays through the ``zarrs`` codec pipeline where it is installed (``shadows[zarrs]``), as
    :mod:`shadows.backends.zarr_pipeline` describes; ``True`` by default. Applies to the reads made after
    the change.

``idle_files``
    The most files (or Zarr stores) this process keeps open for read tasks while no shadow is attached to
    them: an atlas's reads touch one source after another, and each open HDF5 file holds a descriptor and
    its metadata cache (about 0.9 MB). Past it, the least recently read of them are closed, and reopened
    when read again: a read spread over more sources than this reopens every one of them each time (a row
    of each of 1,000 files: 1.4 s with the files open, 9 s reopening them). Half the process's descriptor
    limit, between 16 and 2,048, by default; files shadows are attached to are never closed for it. An
    export (``write_h5ad``/``write_zarr``) reads each source once or twice, in order, and lowers it to 64
    while it runs, so that its memory does not grow with the number of sources.

Set an option for the whole process (``shadows.settings.read_progress = True``) or for a block::

    with shadows.settings.override(read_progress=True):
        adata.X
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field, fields


def _default_idle_files() -> int:
    """Half the soft limit on open file descriptors, between 16 and 2,048 (512 where unknown)."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return 512
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 2048
    return max(16, min(2048, soft // 2))


@dataclass
class Settings:
    """shadows' options (one instance: ``shadows.settings``)."""

    read_progress: bool = False
    zarrs: bool = True
    idle_files: int = field(default_factory=_default_idle_files)

    @contextlib.contextmanager
    def override(self, **options: bool | int) -> Iterator[Settings]:
        """Set ``options`` while the block runs, then restore them."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise AttributeError(f"shadows.settings has no option {', '.join(map(repr, unknown))}: "
                                 f"the options are {', '.join(sorted(known))}")
        previous = {name: getattr(self, name) for name in options}
        for name, value in options.items():
            setattr(self, name, value)
        try:
            yield self
        finally:
            for name, value in previous.items():
                setattr(self, name, value)


settings = Settings()
