"""Export a shadow or a view to a new h5ad/h5mu/Zarr file, out of core.

anndata writes the file (``write_dispatched``): its layout, attributes, dataframes, uns and small
staged values. It is handed the shadow's elements in an in-memory AnnData, matrices as their dask graphs
(a view's read only its selection), and a callback streams these (X, layers, obsm/varm/obsp/varp arrays,
raw.X) block by block with shadows' own writer and counts every element on the progress bar.

String columns of obs, var and raw.var are written as categoricals where anndata's writers make them
so (``strings_to_categoricals``), and an AnnData shadow keeps its obs and var so converted (▲), as
anndata's ``write_h5ad`` leaves the AnnData it writes. The file is built under a temporary name next to
the target and renamed into place at the end, so an interrupted export leaves no half-written file at
the target path.
"""

from __future__ import annotations

import os
import shutil
import uuid
import warnings
from collections.abc import Callable, Collection
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import pandas as pd

from shadows import progress as progress_bar
from shadows.backends import storage
from shadows.cluster import writes_on_cluster
from shadows.errors import ElementExistsError, UnsafeTargetError
from shadows.settings import settings
from shadows.writing.anndata_elems import anndata_writing, write_dispatched
from shadows.writing.commit import write_value
from shadows.writing.streams import is_dask

MUDATA_HEADER_BYTES = 512  # mudata marks .h5mu files with a text header in the HDF5 user block
ANNDATA_SLOTS = ("obsm", "varm", "obsp", "varp", "layers")
MUDATA_SLOTS = ("obsm", "varm", "obsp", "varp", "obsmap", "varmap")
#: Files an export's read tasks keep open while no shadow is attached to them (``settings.idle_files``
#: during the export): an export reads each source of an atlas once or twice, in order, and each open HDF5
#: file holds about 1.5 MB in this process with its metadata (an export of a view over 1,000 sources
#: held 1.9 GB, most of it the sources left open; with 16 of them open, the same reads took 15 % longer).
EXPORT_IDLE_FILES = 64
MUDATA_HEADER = b"MuData (format-version=0.1.0;creator=shadows)".ljust(MUDATA_HEADER_BYTES, b"\0")


class Exportable(Protocol):
    """What an export reads of a shadow or view (an AnnData or MuData shadow; a MuData's also has ``mod``)."""

    def describe(self) -> Any: ...  # its elements (shadows.core.description.Description)

    def element_value(self, path: str) -> Any: ...  # the element at path to write (a matrix: its dask graph)


def streamer(counted: Collection[str]) -> Callable[..., None]:
    """The callback of anndata's ``write_dispatched``: it writes an element with anndata's ``write_func``,
    but streams a dask array at one of the ``counted`` paths (``X``, ``obsm/X_pca``, ``mod/rna/raw/X``...:
    from the file's root, each counted as a whole) with :func:`shadows.writing.commit.write_value`, which
    counts its blocks. An element at a ``counted`` path is named on the job's progress bar and counted.
    """
    def callback(write_func: Any, store: Any, elem_name: str, elem: Any, *, iospec: Any, dataset_kwargs: Any) -> None:
        path = (elem_name if elem_name.startswith("/") else f"{store.name}/{elem_name}").strip("/")
        bar = progress_bar.current() if path in counted else None
        if bar is not None:
            bar.element(path)
        if path in counted and is_dask(elem):
            write_value(store, PurePosixPath(elem_name).name, elem)  # counts its blocks
            return
        write_func(store, elem_name, elem, dataset_kwargs=dataset_kwargs)
        if bar is not None:
            bar.advance()

    return callback


def string_categoricals(frame: pd.DataFrame) -> dict[str, pd.Categorical]:
    """The string columns of ``frame`` that anndata's writers store as categoricals, converted.

    anndata decides: its public ``AnnData.strings_to_categoricals(df)`` (what ``write_h5ad`` and
    ``write_zarr`` call first) converts a column of strings (object dtype, or pandas 3's ``str``) with
    fewer distinct values than rows, its categories in natural order. It runs on a shallow copy, so
    ``frame`` is left as it is.

    Parameters
    ----------
    frame
        An obs, var or raw var dataframe, in memory.

    Returns
    -------
    The converted columns by name (none: nothing to convert).
    """
    import anndata

    probe = pd.DataFrame(frame, copy=False).copy(deep=False)
    anndata.AnnData().strings_to_categoricals(probe)
    categorical = pd.CategoricalDtype
    return {key: probe[key].array for key in probe.columns
            if isinstance(probe[key].dtype, categorical) and not isinstance(frame[key].dtype, categorical)}


def with_categoricals(frame: pd.DataFrame, converted: dict[str, pd.Categorical]) -> pd.DataFrame:
    """``frame`` with the columns ``converted`` replaced (a new frame: ``frame`` is left as it is)."""
    if not converted:
        return frame
    frame = frame.copy(deep=False)
    for key, values in converted.items():
        frame[key] = values
    return frame


def _annotation(shadow: Exportable, rel: str, stage: bool) -> Any:
    """The obs or var dataframe of ``shadow`` to write, its string columns made categoricals as anndata's
    writers make them; with ``stage`` the shadow keeps them so in memory (▲), as anndata's
    ``write_h5ad`` leaves the AnnData it writes (a view becomes a shadow of its own, as anndata's view
    becomes an actual AnnData). A MuData's global obs and var are converted in what is written only, as
    mudata does.
    """
    frame = shadow.element_value(rel)
    if not isinstance(frame, pd.DataFrame):  # a lazy table backend's frame (not converted)
        return frame
    converted = string_categoricals(frame)
    written = with_categoricals(frame, converted)
    shown = getattr(shadow, rel) if stage and converted else None
    if isinstance(shown, pd.DataFrame):  # the pandas backend's frame: it stages what is assigned
        for key, values in converted.items():
            shown[key] = values
    elif shown is not None:  # another table backend's: assigned whole (the columns that differ are staged)
        setattr(shadow, rel, written)
    return written


def in_memory(shadow: Exportable) -> Any:
    """An AnnData of the elements of an AnnData shadow (or view) as written: matrices as their dask graphs,
    obs, var and raw.var with string columns made categoricals (see :func:`_annotation`).
    """
    import anndata

    from shadows.elements.sparse_chunk import to_plain

    obs, var = (_annotation(shadow, rel, stage=True) for rel in ("obs", "var"))  # first: a view staging them
    described = shadow.describe()                                                # becomes a shadow of its own
    x = shadow.element_value("X") if described.has("X") else None
    slots = {s: {e.key: shadow.element_value(f"{s}/{e.key}") for e in described.slot(s)} for s in ANNDATA_SLOTS}
    with anndata_writing():
        adata = anndata.AnnData(X=to_plain(x), obs=obs, var=var, uns=shadow.element_value("uns"), **slots)
        if described.has("raw"):
            adata.raw = anndata.AnnData(X=shadow.element_value("raw/X"), obs=pd.DataFrame(index=adata.obs_names),
                                        var=_raw_var(shadow, shadow.element_value("raw/var")),
                                        varm=shadow.element_value("raw/varm"))
    return adata


def _counted(adata: Any, prefix: str = "") -> dict[str, Any]:
    """The elements of ``adata`` written at ``prefix`` that the progress bar counts, by path."""
    raw = {} if adata.raw is None else {"raw/X": adata.raw.X, "raw/var": adata.raw.var, "raw/varm": adata.raw.varm}
    counted = {"obs": adata.obs, "var": adata.var, "uns": adata.uns, "X": adata.X, **raw,
               **{f"{slot}/{key}": value for slot in ANNDATA_SLOTS for key, value in getattr(adata, slot).items()}}
    return {prefix + path: value for path, value in counted.items() if value is not None}


def _raw_var(shadow: Exportable, var: Any) -> Any:
    """raw.var to write, its string columns made categoricals. A raw assigned in memory (an
    ``anndata.Raw``) keeps them, as anndata's writers leave it; the stored raw of a shadow is converted
    in what is written only (raw is changed in memory as a whole, not column by column).
    """
    if not isinstance(var, pd.DataFrame):  # a lazy table backend's frame (not converted)
        return var
    converted = string_categoricals(var)
    raw = shadow.raw
    if converted and isinstance(getattr(raw, "var", None), pd.DataFrame) and raw.var is var:
        for key, values in converted.items():
            var[key] = values
        return var
    return with_categoricals(var, converted)


def anndata_job(shadow: Exportable) -> tuple[dict[str, Any], Callable[[Any], None]]:
    """The elements the bar counts, by path, and what writes an AnnData shadow (or view) into a group."""
    adata = in_memory(shadow)
    counted = _counted(adata)
    return counted, lambda target: write_dispatched(target, "/", adata, streamer(counted))


def mudata_job(shadow: Exportable) -> tuple[dict[str, Any], Callable[[Any], None]]:
    """The elements the bar counts, by path, and what writes a MuData shadow (or view) into a group.

    anndata has no writer for a MuData (mudata's ``write_h5mu`` writes the root group itself, element by
    element), so only the root's attributes, ``mod`` and ``mod-order`` are written here; anndata's
    ``write_dispatched`` writes each of its elements and modalities (see :func:`in_memory`).
    """
    described = shadow.describe()
    elements = {"obs": _annotation(shadow, "obs", stage=False), "var": _annotation(shadow, "var", stage=False),
                "uns": shadow.element_value("uns"),
                **{slot: {e.key: shadow.element_value(f"{slot}/{e.key}") for e in described.slot(slot)}
                   for slot in MUDATA_SLOTS}}
    counted = {"obs": elements["obs"], "var": elements["var"], "uns": elements["uns"],
               **{f"{slot}/{key}": value for slot in MUDATA_SLOTS for key, value in elements[slot].items()}}
    modalities = {}
    for name, modality in shadow.mod.items():
        if described.modalities[name].source is None:  # an AnnData in memory: converted as mudata does
            modality.strings_to_categoricals()
            if modality.raw is not None:
                modality.strings_to_categoricals(modality.raw.var)
            modalities[name] = counted[f"mod/{name}"] = modality
        else:
            modalities[name] = in_memory(modality)
            counted.update(_counted(modalities[name], f"mod/{name}/"))

    def write(target: Any) -> None:
        target.attrs.update({"encoding-type": "MuData", "encoding-version": "0.1.0", "axis": described.axis})
        callback = streamer(counted)
        for key, value in elements.items():
            write_dispatched(target, key, value, callback)
        mods = target.create_group("mod")
        mods.attrs["mod-order"] = list(modalities)
        for name, adata in modalities.items():
            write_dispatched(mods, name, adata, callback)

    return counted, write


def export(shadow: Exportable, path: str | os.PathLike, format: str, *, progress: bool = False,
           overwrite: bool = False) -> Path:
    """Write ``shadow`` (AnnData or MuData, root or view) as a new file at ``path``.

    Parameters
    ----------
    shadow
        What to export.
    path
        The new file (``format="hdf5"``) or Zarr store (``format="zarr"``).
    format
        ``"hdf5"`` or ``"zarr"`` (Zarr format from ``anndata.settings.zarr_write_format``).
    progress
        Show one progress bar for the whole export, counting the blocks written and naming the element.
    overwrite
        Replace what exists at ``path``: a file, or a folder that is a Zarr store (never another folder).

    Raises
    ------
    ElementExistsError
        Something exists at ``path`` and ``overwrite`` is False.
    UnsafeTargetError
        ``path`` is the shadow's own file or store (however spelled: symbolic links and ``..`` are
        resolved), lies inside it or holds it; or it is a symbolic link, or a folder that is not a store.
    """
    path = Path(os.path.expanduser(os.fspath(path))).absolute()
    described = shadow.describe()
    check_target(path, described.source, overwrite)
    scratch = path.with_name(f".{path.name}.shadows-tmp-{uuid.uuid4().hex}")
    with settings.override(idle_files=min(settings.idle_files, EXPORT_IDLE_FILES)):
        _export(shadow, described, path, scratch, format, progress)
    return path


def _export(shadow: Exportable, described: Any, path: Path, scratch: Path, format: str, progress: bool) -> None:
    """:func:`export` once the target is checked: the file built at ``scratch``, then moved to ``path``."""
    import anndata

    mudata_file = described.is_mudata
    counted, writer = (mudata_job if mudata_file else anndata_job)(shadow)
    reads = [] if described.source is None else [described.source]
    try:
        with progress_bar.job(sum(map(progress_bar.blocks_of, counted.values())), progress, verb="exporting",
                              on_cluster=writes_on_cluster(storage.capabilities(str(path), format).workers_write,
                                                           reads=reads)), \
                storage.new_file(scratch, format, MUDATA_HEADER if mudata_file else None,
                                 zarr_format=zarr_write_format(anndata)) as root:
            writer(root)
        _replace(scratch, path)
    except BaseException:
        if scratch.is_dir():
            shutil.rmtree(scratch, ignore_errors=True)
        elif scratch.exists():
            scratch.unlink()
        raise


def zarr_write_format(anndata: Any) -> int:
    """The Zarr format anndata writes (``anndata.settings.zarr_write_format``, which users may set;
    anndata 0.13 deprecates reading it, not its effect, so the deprecation is not passed on).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return getattr(anndata.settings, "zarr_write_format", 2)


def check_target(path: Path, source: str, overwrite: bool) -> None:
    """Raise unless exporting to ``path`` (absolute) may replace what is there, reading from ``source``."""
    from shadows.backends.fileref import is_zarr_dir

    if storage.overlaps(path, source):
        raise UnsafeTargetError(f"{path}: cannot export a shadow onto the file it reads ({Path(source).resolve()}), "
                                "into it, or onto a folder that holds it; write to another path")
    if not os.path.lexists(path):
        return
    if not overwrite:
        raise ElementExistsError(f"{path}: already exists; pass overwrite=True to replace it")
    if path.is_symlink():
        raise UnsafeTargetError(f"{path}: is a symbolic link; export to the path it points at, or remove the link")
    if path.is_dir() and not is_zarr_dir(path):
        raise UnsafeTargetError(f"{path}: is a folder that is not a Zarr store; exports replace only files and "
                                "stores. Choose another path, or remove the folder yourself")


def _replace(built: Path, path: Path) -> None:
    """Move ``built`` to ``path``, replacing what is there (a file atomically; a store's folder last).

    This process's cached read handles of a replaced file are dropped: graph tasks reopen by path and
    must read the new file, not the old one. (Shadows still open on the old file keep their metadata.)
    """
    from shadows.backends.handles import release

    release(str(path))
    if path.is_dir():
        trash = path.with_name(f".{path.name}.shadows-replaced-{uuid.uuid4().hex}")
        os.rename(path, trash)
        os.rename(built, path)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(built, path)
