"""Writing what was computed on an atlas back into its sources: ``atlas.write()``.

What an atlas holds in memory (▲) and its sources can store, each source its own rows:

- an obs column (``atlas.obs["score"] = ...``): the source's rows of it, as a column of its obs;
- an obsm entry: the source's rows;
- a layer: the source's rows, at the source's own genes in its own order (a source with a gene the atlas
  does not have, after an inner join, cannot take a layer: refused).

Three steps, so that a bad write is found before any file is touched:

1. **Plan**: each change cut into the sources' parts. X, var, uns, varm, obsp and deletions are refused;
   so is a source given as a view (its file has rows the atlas does not).
2. **Check every source**: each is opened for writing, given its parts and checked as its own
   ``write()`` checks (unchanged since the catalog, writable, not being written, an element it stores
   replaced only with ``overwrite``...), then closed again. Any problem: an error naming every source
   that has one, and nothing written.
3. **Commit**: lazy parts that read other sources than their own are computed first (see :func:`settle`);
   then each source's parts are written by that source's own ``write()``, atomic per element as
   for one file: on the ``distributed.Client`` dask computes on, one task per source, so that the
   workers write the sources side by side; else one source after another here. If a source fails,
   :class:`AtlasWriteError` lists which sources committed and which did not.

Then the atlas reads its sources' metadata again (their identities changed) and serves the new
elements from the files; a catalog file the atlas was opened with is rewritten.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from shadows.collection.catalog import SourceMeta
from shadows.collection.sources import check_unchanged, identity
from shadows.errors import ReadOnlyError, ShadowsError

#: Slots whose entries an atlas writes back into its sources.
WRITABLE = ("obs", "obsm", "layers")


class AtlasWriteError(ShadowsError, RuntimeError):
    """Writing an atlas into its sources failed for some sources; the message lists which committed."""


@dataclass
class SourcePart:
    """What one source receives: the slice of each change that covers its rows (by element path)."""

    source: SourceMeta
    values: dict[str, Any]


def plan(name: str, sources: list[SourceMeta], offsets: np.ndarray, columns: list[np.ndarray],
         changes: Mapping[str, Any], deleted: Any) -> list[SourcePart]:
    """Each source's part of ``changes`` (see the module's docstring).

    Raises
    ------
    ReadOnlyError
        A change no source can store, or a source that is a view.
    """
    refused = [rel for rel, value in changes.items() if value is deleted or rel.split("/", 1)[0] not in WRITABLE
               or "/" not in rel]
    if refused:
        raise ReadOnlyError(f"{name}: write() writes obs columns, obsm entries and layers into the sources; "
                            f"these changes cannot be written there: {', '.join(refused)}. Export the atlas "
                            "with write_h5ad(path) or write_zarr(path) to keep them")
    views = [s.display for s in sources if s.subset is not None]
    if views and changes:
        raise ReadOnlyError(f"{name}: these sources were given as views, whose files hold rows the atlas does not: "
                            f"{', '.join(views[:5])}; write() cannot give those rows values. Export the atlas "
                            "instead")
    parts = []
    for i, source in enumerate(sources):
        rows = slice(int(offsets[i]), int(offsets[i + 1]))
        values = {rel: _part(name, source, rel, value, rows, columns[i]) for rel, value in changes.items()}
        parts.append(SourcePart(source, values))
    return parts


def _part(name: str, source: SourceMeta, rel: str, value: Any, rows: slice, joined: np.ndarray) -> Any:
    """The rows ``rows`` of one change, as the source stores them."""
    slot = rel.split("/", 1)[0]
    if slot == "obs":  # positions, not names: the atlas's names may carry index_unique's suffixes
        return value.array[rows] if isinstance(value, pd.Series) else np.asarray(value)[rows]
    if slot == "obsm":
        return value.iloc[rows] if isinstance(value, pd.DataFrame) else value[rows]
    # a layer: the source's genes, in its own order (joined[j]: the source's column of joined gene j)
    genes = np.full(len(source.var_names), -1, dtype=np.int64)
    present = np.flatnonzero(joined >= 0)
    genes[joined[present]] = present
    if (genes < 0).any():
        missing = source.var_names[genes < 0][:5]
        raise ReadOnlyError(f"{name}: {rel} cannot be written into {source.display}: the atlas lacks its genes "
                            f"{', '.join(map(str, missing))}... (an inner join); open the atlas with join='outer' "
                            "to write layers back")
    block = value[rows]
    return block[:, genes]


def settle(parts: list[SourcePart], client: Any = None) -> None:
    """Compute lazy parts before any source is written, when one of them reads sources other than its
    own (a computation whose chunks span sources): once a source is written it is no longer what the
    atlas read, and a part computed after that from it would be refused. Kept in the workers' memory
    (persisted) on ``client``, else computed here. Parts that read only their own source stay lazy: each
    is computed in the task that writes it.
    """
    from shadows.cluster import files_read_by

    lazy = [(part, rel) for part in parts for rel, value in part.values.items() if _is_lazy(value)]
    spans = any((files_read_by(part.values[rel]) or {None}) - {part.source.ref.path} for part, rel in lazy)
    if not spans:
        return
    values = [part.values[rel] for part, rel in lazy]
    if client is not None:  # futures of the computed parts: each write task receives its own
        done = client.compute(values)
    else:
        import dask

        done = dask.compute(*values)
    for (part, rel), value in zip(lazy, done, strict=True):
        part.values[rel] = value


def _is_lazy(value: Any) -> bool:
    return hasattr(value, "dask") and hasattr(value, "compute")


def check(parts: list[SourcePart], overwrite: bool) -> None:
    """Check every source's write as its own ``write()`` would, writing nothing.

    Raises
    ------
    AtlasWriteError
        Naming each source with a problem, and the problem.
    """
    from shadows.core.base import shadow_elements
    from shadows.core.committing import checked_changes

    problems = []
    for part in parts:
        try:
            with _opened(part) as shadow:
                checked_changes(shadow_elements(shadow), overwrite=overwrite)
            # an HDF5 file opened for writing has its header touched (its time changes): what the writer
            # checks it against is the file as this check left it, found unchanged before it opened it
            part.source = replace(part.source, identity=identity(part.source.ref))
        except Exception as error:  # every source's problem is reported, not only the first
            problems.append(f"- {part.source.display}: {error}")
    if problems:
        raise AtlasWriteError(f"nothing was written: {len(problems)} of {len(parts)} sources cannot take the "
                              "atlas's changes:\n" + "\n".join(problems))


def commit(parts: list[SourcePart], overwrite: bool, client: Any = None) -> None:
    """Write each source's part (one task per source on ``client``, else one after another here).

    Raises
    ------
    AtlasWriteError
        A source failed: which committed, which failed (and why), which were not written.
    """
    outcomes: list[BaseException | None] = [None] * len(parts)
    if client is not None:  # the values apart: futures among them are resolved on the worker
        futures = [client.submit(write_part, SourcePart(p.source, {}), overwrite, p.values, pure=False)
                   for p in parts]
        for i, future in enumerate(futures):
            with contextlib.suppress(BaseException):
                future.result()
            if future.status != "finished":
                outcomes[i] = future.exception() or RuntimeError(f"task {future.status}")
    else:
        for i, part in enumerate(parts):
            try:
                write_part(part, overwrite=overwrite)
            except Exception as error:
                outcomes[i] = error
                outcomes[i + 1:] = [_NOT_WRITTEN] * (len(parts) - i - 1)
                break
    failed = [i for i, outcome in enumerate(outcomes) if outcome is not None and outcome is not _NOT_WRITTEN]
    if failed:
        committed = [p.source.display for p, o in zip(parts, outcomes, strict=True) if o is None]
        skipped = [p.source.display for p, o in zip(parts, outcomes, strict=True) if o is _NOT_WRITTEN]
        lines = [f"- {parts[i].source.display}: {type(outcomes[i]).__name__}: {outcomes[i]}" for i in failed]
        raise AtlasWriteError(
            f"{len(failed)} of {len(parts)} sources failed (each holds each new element whole or not at all: "
            "a source's elements are committed atomically):\n" + "\n".join(lines)
            + f"\ncommitted: {', '.join(committed) or 'none'}"
            + (f"\nnot written: {', '.join(skipped)}" if skipped else "")
            + "\nThe atlas keeps every change: write(overwrite=True) writes them into every source again.")


#: A source not written because one before it failed (without a cluster, sources are written in order).
_NOT_WRITTEN = RuntimeError("not written")


def write_part(part: SourcePart, overwrite: bool, values: dict[str, Any] | None = None) -> str:
    """Write one source's part (or ``values`` for its source) into it (its own ``write()``: checked, then
    committed atomically); its path.
    """
    if values is not None:
        part = SourcePart(part.source, values)
    with _opened(part) as shadow:
        shadow.write(overwrite=overwrite)
    return part.source.display


@contextlib.contextmanager
def _opened(part: SourcePart) -> Any:
    """The source opened for writing, unchanged since the catalog, with its part assigned (closed after)."""
    from shadows.io import read

    source = part.source
    check_unchanged(source.ref, source.identity)
    values = {rel: _computed(value) for rel, value in part.values.items()}  # read before the file is opened r+
    shadow = read(source.ref.full_path, format=source.ref.format, storage_options=source.ref.storage_options,
                  mode="r+")
    try:
        for rel, value in values.items():
            _assign(shadow, rel, value)
        yield shadow
    finally:
        shadow.close()


def _assign(shadow: Any, rel: str, value: Any) -> None:
    slot, key = rel.split("/", 1)
    if slot == "obs":
        shadow.obs[key] = value
    else:
        getattr(shadow, slot)[key] = value


def _computed(value: Any) -> Any:
    """A lazy part computed here (in the task that writes it: on a worker, from the sources it reads)."""
    if _is_lazy(value):
        import dask

        with dask.config.set(scheduler="synchronous"):
            return value.compute()
    return value


def written_back(catalog_path: Any, sources: list[SourceMeta], reopen: Callable[[list[SourceMeta]], Any]) -> Any:
    """The atlas's new layout once its sources were written: their metadata read again (and saved to the
    catalog file, when the atlas has one).
    """
    from shadows.collection.catalog import Catalog

    catalog = Catalog(sources).refreshed()
    if catalog_path is not None:
        catalog.save(catalog_path)
    return reopen(catalog.sources)
