"""Writing with anndata's own writers, as shadows needs it: quietly, and for any value users can assign.
Shared by the commits, the exports and the streamed writers.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any


def write_elem(group: Any, name: str, value: Any) -> None:
    """``anndata.io.write_elem(group, name, value)``, with the opt-ins and silences of :func:`anndata_writing`."""
    from anndata.io import write_elem as anndata_write_elem

    with anndata_writing():
        anndata_write_elem(group, name, value)


def write_dispatched(group: Any, name: str, value: Any, callback: Callable[..., None]) -> None:
    """``anndata.experimental.write_dispatched(group, name, value, callback)``: anndata writes ``value``
    (an AnnData, a dataframe, a dict...) and its layout, and hands each element it reaches, down to the
    columns of a dataframe, to ``callback(write_func, store, elem_name, elem, *, iospec, dataset_kwargs)``
    (the same on anndata 0.12 and 0.13), which writes it (with ``write_func`` or otherwise). With the
    opt-ins and silences of :func:`anndata_writing`.
    """
    from anndata.experimental import write_dispatched as anndata_write_dispatched

    with anndata_writing():
        anndata_write_dispatched(group, name, value, callback)


@contextlib.contextmanager
def anndata_writing() -> Iterator[None]:
    """While anndata writes for shadows (or builds the AnnData it is to write).

    anndata 0.12 refuses pandas' string arrays (obs columns of dtype "string") unless opted in, for the
    sake of readers older than anndata 0.11; a column users assigned must not fail to write. anndata 0.12
    announces its next default for Zarr v3 (autosharding) on every array it writes; it is anndata's to
    tell its own users, not a concern of a shadow's write; so is anndata 0.13's reading of pandas options
    that pandas 3 deprecates (``future.infer_string``).
    """
    import anndata
    import pandas as pd

    with _allow_nullable_strings(anndata), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="zarr v3 autosharding will be the default", category=UserWarning)
        if hasattr(pd.errors, "Pandas4Warning"):  # pandas >= 3
            warnings.simplefilter("ignore", pd.errors.Pandas4Warning)
        yield


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
