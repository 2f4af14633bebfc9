"""Writing one element with anndata's own ``write_elem``, as shadows needs it: quietly, and for any
value users can assign. Shared by the commits, the exports and the streamed writers.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any


def write_elem(group: Any, name: str, value: Any) -> None:
    """``anndata.io.write_elem(group, name, value)``, with the opt-ins and silences below."""
    import anndata
    from anndata.io import write_elem as anndata_write_elem

    # anndata 0.12 refuses pandas' string arrays (obs columns of dtype "string") unless opted in, for the
    # sake of readers older than anndata 0.11; a column users assigned must not fail to write
    # anndata 0.12 announces its next default for Zarr v3 (autosharding) on every array it writes; it is
    # anndata's to tell its own users, not a concern of a shadow's write
    with _allow_nullable_strings(anndata), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="zarr v3 autosharding will be the default", category=UserWarning)
        anndata_write_elem(group, name, value)


@contextlib.contextmanager
def _allow_nullable_strings(anndata: Any) -> Iterator[None]:
    settings = anndata.settings
    if not hasattr(settings, "allow_write_nullable_strings"):
        yield
        return
    previous = settings.allow_write_nullable_strings
    settings.allow_write_nullable_strings = True
    try:
        yield
    finally:
        settings.allow_write_nullable_strings = previous
