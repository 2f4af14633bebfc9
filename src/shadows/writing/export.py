"""Export a shadow or a view to a new h5ad/h5mu/Zarr file, out of core.

Matrices (X, layers, obsm/varm/obsp/varp arrays, raw.X) are written from their dask graphs block by block
(a view's graphs read only its selection); dataframes, uns and small staged values are encoded by
anndata. String columns of obs, var and raw.var are written as categoricals where anndata's writers
make them so (``strings_to_categoricals``), and an AnnData shadow keeps its obs and var so converted
(▲), as anndata's ``write_h5ad`` leaves the AnnData it writes. The file is built under a temporary
name next to the target and renamed into place at the end, so an interrupted export leaves no
half-written file at the target path.
"""

from __future__ import annotations

import os
import shutil
import uuid
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from shadows import progress as progress_bar
from shadows.backends import storage
from shadows.cluster import writes_on_cluster
from shadows.errors import ElementExistsError, UnsafeTargetError
from shadows.writing.anndata_elems import write_elem as _write_elem
from shadows.writing.commit import write_value
from shadows.writing.streams import is_dask

if TYPE_CHECKING:
    from shadows.core.description import Description, ElementInfo
    from shadows.core.interface import ShadowLike

DICT_ENCODING = {"encoding-type": "dict", "encoding-version": "0.1.0"}
MUDATA_HEADER_BYTES = 512  # mudata marks .h5mu files with a text header in the HDF5 user block
MUDATA_HEADER = b"MuData (format-version=0.1.0;creator=shadows)".ljust(MUDATA_HEADER_BYTES, b"\0")


def _group(parent: Any, name: str, attrs: dict[str, Any]) -> Any:
    group = parent.create_group(name)
    for key, value in attrs.items():
        group.attrs[key] = value
    return group


def _put(group: Any, name: str, value: Any, label: str) -> None:
    """Write one element (a dask array streamed), named on the job's progress bar, which counts it."""
    bar = progress_bar.current()
    if bar is not None:
        bar.element(label)
    if is_dask(value):
        write_value(group, name, value)  # counts its blocks
        return
    _write_elem(group, name, value)
    if bar is not None:
        bar.advance()


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


def _annotation(shadow: ShadowLike, rel: str, stage: bool) -> Any:
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
    shown = getattr(shadow, rel) if stage and converted else None
    for key, values in converted.items() if stage else ():
        if isinstance(shown, pd.DataFrame):  # the pandas backend's frame: it stages what is assigned
            shown[key] = values
        else:
            shadow._stage_column(rel, key, pd.Series(values, index=frame.index, name=key))
    return with_categoricals(frame, converted)


def _write_annotations(shadow: ShadowLike, described: Description, target: Any, attrs: dict[str, Any],
                       where: str) -> None:
    """What AnnData and MuData groups share: their encoding, obs, var, the aligned slots and uns."""
    for key, value in attrs.items():
        target.attrs[key] = value
    stage = described.kind != "MuData"  # an AnnData's were converted (and staged) by write_anndata
    _put(target, "obs", _annotation(shadow, "obs", stage), f"{where}obs")
    _put(target, "var", _annotation(shadow, "var", stage), f"{where}var")
    for slot in _slots(described):
        group = _group(target, slot, DICT_ENCODING)
        for element in described.slot(slot):
            _put(group, element.key, shadow.element_value(f"{slot}/{element.key}"), f"{where}{slot}/{element.key}")
    _put(target, "uns", shadow.element_value("uns"), f"{where}uns")


def _slots(described: Description) -> tuple[str, ...]:
    extra = ("obsmap", "varmap") if described.kind == "MuData" else ("layers",)
    return ("obsm", "varm", "obsp", "varp", *extra)


def write_anndata(shadow: ShadowLike, target: Any, where: str = "") -> None:
    """Every element of an AnnData shadow (or view) into the group ``target`` (``where``: its path, for
    the progress bar).
    """
    from shadows.elements.sparse_chunk import to_plain

    for rel in ("obs", "var"):  # first: a view that stages them becomes a shadow of its own
        _annotation(shadow, rel, stage=True)
    described = shadow.describe()
    _write_annotations(shadow, described, target, {"encoding-type": "anndata", "encoding-version": "0.1.0"}, where)
    if described.has("X"):
        x = shadow.element_value("X")
        _put(target, "X", x if is_dask(x) else to_plain(x), f"{where}X")
    if described.has("raw"):
        group = _group(target, "raw", {"encoding-type": "raw", "encoding-version": "0.1.0"})
        for part in ("X", "var", "varm"):
            value = shadow.element_value(f"raw/{part}")
            if part == "var" and isinstance(value, pd.DataFrame):  # as anndata's writers convert raw.var
                value = _raw_var(shadow, value)
            _put(group, part, value, f"{where}raw/{part}")


def _raw_var(shadow: ShadowLike, var: pd.DataFrame) -> pd.DataFrame:
    """raw.var to write, its string columns made categoricals. A raw assigned in memory (an
    ``anndata.Raw``) keeps them, as anndata's writers leave it; the stored raw of a shadow is converted
    in what is written only (raw is changed in memory as a whole, not column by column).
    """
    converted = string_categoricals(var)
    raw = shadow.raw
    if converted and isinstance(getattr(raw, "var", None), pd.DataFrame) and raw.var is var:
        for key, values in converted.items():
            var[key] = values
        return var
    return with_categoricals(var, converted)


def write_mudata(shadow: ShadowLike, target: Any) -> None:
    """Every element of a MuData shadow (or view) and of its modalities into the group ``target``; a
    modality given in memory as an AnnData is written by anndata.
    """
    described = shadow.describe()
    _write_annotations(shadow, described, target,
                       {"encoding-type": "MuData", "encoding-version": "0.1.0", "axis": described.axis}, "")
    mods = target.create_group("mod")
    mods.attrs["mod-order"] = list(shadow.mod)
    for name, modality in shadow.mod.items():
        if described.modalities[name].source is None:  # an AnnData in memory: converted as mudata does
            modality.strings_to_categoricals()
            if modality.raw is not None:
                modality.strings_to_categoricals(modality.raw.var)
            _put(mods, name, modality, f"mod/{name}")
        else:
            write_anndata(modality, mods.create_group(name), f"mod/{name}/")


def blocks_to_write(shadow: ShadowLike) -> int:
    """What an export of ``shadow`` counts on its progress bar (see :mod:`shadows.progress`)."""
    described = shadow.describe()
    total = 3  # obs, var, uns
    for slot in _slots(described):
        total += sum(_blocks(shadow, f"{slot}/{e.key}", e) for e in described.slot(slot))
    if described.kind == "MuData":
        for name, modality in shadow.mod.items():
            total += 1 if described.modalities[name].source is None else blocks_to_write(modality)
        return total
    for x in described.slot("X"):
        total += _blocks(shadow, "X", x)
    raw = described.slot("raw")
    if raw:
        total += _blocks(shadow, "raw/X", raw[0]) + 2  # raw's X, then its var and varm at once
    return total


def _blocks(shadow: ShadowLike, rel: str, element: ElementInfo) -> int:
    """The blocks writing ``rel`` counts. Only a matrix (stored, or changed in memory) can be a dask array
    written block by block; anything else stored is written at once and not read to be counted.
    """
    if not element.changed and element.kind not in ("dense", "sparse"):
        return 1
    return progress_bar.blocks_of(shadow.element_value(rel))


def export(shadow: ShadowLike, path: str | os.PathLike, format: str, *, progress: bool = False,
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
    import anndata

    path = Path(os.path.expanduser(os.fspath(path))).absolute()
    described = shadow.describe()
    check_target(path, described.source, overwrite)
    scratch = path.with_name(f".{path.name}.shadows-tmp-{uuid.uuid4().hex}")
    mudata_file = described.kind == "MuData"
    writer = write_mudata if mudata_file else write_anndata
    reads = [] if described.source is None else [described.source]
    try:
        with progress_bar.job(blocks_to_write(shadow) if progress else 0, progress, verb="exporting",
                              on_cluster=writes_on_cluster(storage.capabilities(str(path), format).workers_write,
                                                           reads=reads)), \
                storage.new_file(scratch, format, MUDATA_HEADER if mudata_file else None,
                                 zarr_format=zarr_write_format(anndata)) as root:
            writer(shadow, root)
        _replace(scratch, path)
    except BaseException:
        if scratch.is_dir():
            shutil.rmtree(scratch, ignore_errors=True)
        elif scratch.exists():
            scratch.unlink()
        raise
    return path


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
