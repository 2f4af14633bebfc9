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


#: What anndata's ``backed`` takes (``None``/``False``: read-only here too, since a shadow is always lazy).
_BACKED = (None, False, True, "r", "r+")


def read_h5ad(filename: str | os.PathLike, *args: Any, backed: bool | str | None = None, mod: str | None = None,
              as_sparse: tuple[str, ...] | list[str] = (), as_sparse_fmt: Any = None, chunk_size: int = 6000,
              **kwargs: Any) -> AnnDataShadow:
    """An :class:`~shadows.AnnDataShadow` of an ``.h5ad`` file (``anndata.read_h5ad(filename, backed)``),
    or of modality ``mod`` of an ``.h5mu`` file (``mudata.read_h5ad(filename, mod, backed)``).

    Both habits work: a second argument that is a mode (``"r"``, ``"r+"``, ``True``, ``False``,
    ``None``) is anndata's ``backed``; any other names a modality, as in mudata, and a third is then the
    mode. A modality named ``"r"`` or ``"r+"`` is given as ``mod=``.

    anndata's ``as_sparse`` (read dense elements as sparse matrices) is not supported: a shadow shows
    what the file stores. ``as_sparse_fmt`` and ``chunk_size`` only serve ``as_sparse`` in anndata and
    are accepted for its calls' sake.
    """
    backed, mod = _backed_and_mod(args, backed, mod)
    if as_sparse:
        raise TypeError(f"{os.fspath(filename)}: as_sparse={tuple(as_sparse)!r} is not supported: a shadow shows "
                        "what the file stores. Convert after reading: adata.X = scipy.sparse.csr_matrix(adata.X)")
    del as_sparse_fmt, chunk_size  # anndata's, for as_sparse only
    path = os.fspath(filename)
    if mod is not None:
        path = f"{path.rstrip('/')}/mod/{mod}"
    return AnnDataShadow(path, **_mode(backed, {"format": "hdf5", **kwargs}))


def _backed_and_mod(args: tuple[Any, ...], backed: Any, mod: str | None) -> tuple[Any, str | None]:
    """``read_h5ad``'s positional arguments after the file: anndata's ``(backed,)`` or mudata's ``(mod,
    backed)``, merged with the keywords (given twice: a ``TypeError``, as Python raises).
    """
    if len(args) > 2:
        raise TypeError(f"read_h5ad takes at most 3 positional arguments ({len(args) + 1} given)")
    named: dict[str, Any] = {}
    if args:
        first_is_mode = isinstance(args[0], bool) or args[0] in _BACKED
        named = {"backed": args[0]} if first_is_mode and len(args) == 1 else {"mod": args[0]}
        if len(args) == 2:
            if first_is_mode:
                raise TypeError(f"read_h5ad: {args[0]!r} is a mode, not a modality: give the modality first, "
                                "as mudata.read_h5ad(filename, mod, backed)")
            named["backed"] = args[1]
    if "backed" in named and backed is not None:
        raise TypeError("read_h5ad got multiple values for argument 'backed'")
    if "mod" in named and mod is not None:
        raise TypeError("read_h5ad got multiple values for argument 'mod'")
    return named.get("backed", backed), named.get("mod", mod)


def read_h5mu(filename: str | os.PathLike, backed: bool | str | None = None, **kwargs: Any) -> MuDataShadow:
    """A :class:`~shadows.MuDataShadow` of an ``.h5mu`` file (``mudata.read_h5mu(filename, backed)``)."""
    return MuDataShadow(filename, **_mode(backed, {"format": "hdf5", **kwargs}))


def read_zarr(store: Any, backed: bool | str | None = None, **kwargs: Any) -> Shadow:
    """A shadow of a Zarr store (format 2 or 3): an :class:`~shadows.AnnDataShadow` for an AnnData store
    (``anndata.read_zarr``), a :class:`~shadows.MuDataShadow` for a MuData one (``mudata.read_zarr``).

    ``store`` is a path or URL, or, as anndata takes it, an open ``zarr.Group`` of a store on disk or
    behind fsspec (the shadow reopens it by its location, which is how its tasks read).
    """
    if not isinstance(store, (str, os.PathLike)):
        store, kwargs = _group_location(store, kwargs)
    return read(store, backed=backed, **{"format": "zarr", **kwargs})


def _group_location(group: Any, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The path (or URL, with its fsspec options) that opens the ``zarr.Group`` ``group`` again."""
    from shadows.backends.storage import zarr_group_location

    location, options = zarr_group_location(group)
    return location, kwargs if options is None else {"storage_options": options, **kwargs}


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
