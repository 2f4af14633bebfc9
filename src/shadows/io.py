"""``shadows.read_h5ad``, ``read_zarr``, ``read_h5mu`` and ``read``: shadows opened the way
``anndata.read_*`` and ``mudata.read_*`` open files, with the same names and habits.

They take the keyword arguments of :class:`~shadows.AnnDataShadow` / :class:`~shadows.MuDataShadow`
(``array_backend``, ``table_backend``, ``mode``, ``storage_options``, ``allow_external``) and anndata's
``backed`` (``"r"`` or ``"r+"``: the mode; a shadow is always file-backed and lazy).
"""

from __future__ import annotations

import os
from typing import Any

from shadows.core.anndata import AnnDataShadow
from shadows.core.mudata import MuDataShadow
from shadows.errors import NotAnnDataError, NotMuDataError

Shadow = AnnDataShadow | MuDataShadow


def _mode(backed: bool | str | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Anndata's ``backed=`` as the shadow's ``mode`` (``True`` is ``"r+"``, as in anndata)."""
    if backed in (None, False):
        return kwargs
    mode = "r+" if backed is True else backed
    if "mode" in kwargs and kwargs["mode"] != mode:
        raise ValueError(f"backed={backed!r} and mode={kwargs['mode']!r} disagree; give one of them")
    return {**kwargs, "mode": mode}


def read_h5ad(filename: str | os.PathLike, mod: str | None = None, *, backed: bool | str | None = None,
              **kwargs: Any) -> AnnDataShadow:
    """An :class:`~shadows.AnnDataShadow` of an ``.h5ad`` file (``anndata.read_h5ad``), or of modality
    ``mod`` of an ``.h5mu`` file (``mudata.read_h5ad(filename, mod)``).
    """
    path = os.fspath(filename)
    if mod is not None:
        path = f"{path.rstrip('/')}/mod/{mod}"
    return AnnDataShadow(path, **_mode(backed, {"format": "hdf5", **kwargs}))


def read_h5mu(filename: str | os.PathLike, *, backed: bool | str | None = None, **kwargs: Any) -> MuDataShadow:
    """A :class:`~shadows.MuDataShadow` of an ``.h5mu`` file (``mudata.read_h5mu``)."""
    return MuDataShadow(filename, **_mode(backed, {"format": "hdf5", **kwargs}))


def read_zarr(store: str | os.PathLike, *, backed: bool | str | None = None, **kwargs: Any) -> Shadow:
    """A shadow of a Zarr store (format 2 or 3): an :class:`~shadows.AnnDataShadow` for an AnnData store
    (``anndata.read_zarr``), a :class:`~shadows.MuDataShadow` for a MuData one (``mudata.read_zarr``).
    """
    return read(store, backed=backed, **{"format": "zarr", **kwargs})


def read(path: str | os.PathLike, *, backed: bool | str | None = None, **kwargs: Any) -> Shadow:
    """A shadow of any file shadows opens: an :class:`~shadows.AnnDataShadow` or a
    :class:`~shadows.MuDataShadow`, as the file says (format from the suffix or the contents, or
    ``format=``).
    """
    kwargs = _mode(backed, kwargs)
    try:
        return AnnDataShadow(path, **kwargs)
    except NotMuDataError:
        raise
    except NotAnnDataError as error:
        try:
            return MuDataShadow(path, **kwargs)
        except NotMuDataError:
            raise error from None
