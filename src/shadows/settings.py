"""``shadows.settings``: process-wide options.

``read_progress``
    Show a progress bar (see :mod:`shadows.progress`) for every element read from a file, labelled with
    the element and counting its bytes; ``False`` by default. ``to_memory(progress=True)`` shows one for
    a single call.

``zarrs``
    Read Zarr arrays through the ``zarrs`` codec pipeline where it is installed (``shadows[zarrs]``), as
    :mod:`shadows.backends.zarr_pipeline` describes; ``True`` by default. Applies to the reads made after
    the change.

Set an option for the whole process (``shadows.settings.read_progress = True``) or for a block::

    with shadows.settings.override(read_progress=True):
        adata.X
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, fields


@dataclass
class Settings:
    """shadows' options (one instance: ``shadows.settings``)."""

    read_progress: bool = False
    zarrs: bool = True

    @contextlib.contextmanager
    def override(self, **options: bool) -> Iterator[Settings]:
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
