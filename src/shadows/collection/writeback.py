"""Writing what was computed on an atlas back into its sources: ``atlas.write()``.

What an atlas holds in memory (▲) and its sources can store, each source its own rows:

- an obs column (``atlas.obs["score"] = ...``): the source's rows of it, as a column of its obs;
- an obsm entry: the source's rows;
- a layer: the source's rows, at the source's own genes in its own order (a source with a gene the atlas
  does not have, after an inner join, cannot take a layer: refused).

Three steps, so that a bad write is found before any file is touched:

1. **Plan**: each change cut into the sources' parts. X, var, uns, varm, obsp and deletions are refused;
   so is a source given as a view (its file has rows the atlas does not).
2. **Check every source**: each is opened (read-only: nothing of it changes), given its parts and
   checked as its own ``write()`` checks (unchanged since the catalog, writable by this user, not being
   written by another process, an element it stores replaced only with ``overwrite``...), then closed.
   Any problem: an error naming every source that has one, and nothing written.
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
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from shadows.backends import storage
from shadows.collection.catalog import SourceMeta
from shadows.collection.sources import check_unchanged
from shadows.errors import ReadOnlyError, ShadowsError
from shadows.writing.commit import check_no_zarr_writer

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
    atlas read, and a part computed after that from it would be refused. Computed on ``client`` (futures:
    the results stay in the workers' memory until the write tasks take them), else here. Parts that read
    only their own source stay lazy: each is computed in the task that writes it.
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
            # opened read-only: an HDF5 file opened for writing has its header touched (its time changes),
            # and the atlas's read tasks would find every source changed since its catalog
            _writable(part.source)
            with _opened(part, mode="r", compute=False) as shadow:  # lazy parts are checked as graphs
                checked_changes(shadow_elements(shadow), overwrite=overwrite, opened_for_writing=False)
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
    if client is not None:
        futures = [client.submit(write_part, *_for_task(p), overwrite, pure=False) for p in parts]
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


def _for_task(part: SourcePart) -> tuple[SourcePart, dict[str, Any]]:
    """A part as a write task's arguments: futures (parts computed on the cluster, :func:`settle`) apart,
    for distributed to hand over their results; every other value inside the part, which distributed
    passes as it is (a lazy part in the arguments themselves would be computed as tasks of their own, on
    any worker, whose read handles would then lock the writing worker out of the file).
    """
    from distributed import Future  # only called with a client: distributed is there

    futures = {rel: v for rel, v in part.values.items() if isinstance(v, Future)}
    rest = {rel: v for rel, v in part.values.items() if rel not in futures}
    return SourcePart(part.source, rest), futures


def write_part(part: SourcePart, futures: dict[str, Any] | None = None, overwrite: bool = False) -> str:
    """Write one source's part into it (its own ``write()``: checked, then committed atomically), with the
    results of ``futures`` among its values; its path.
    """
    if futures:
        part = SourcePart(part.source, {**part.values, **futures})
    with _opened(part) as shadow:
        shadow.write(overwrite=overwrite)
    return part.source.display


def _writable(source: SourceMeta) -> None:
    """Raise unless this user may write the source and no other process is writing it (as opening it
    for writing checks).
    """
    ref = source.ref
    storage.check_writable(ref.path, ref.format, ref.storage_options)
    if ref.capabilities.elements == "folders" and not ref.capabilities.remote:  # a local store's writers' lock
        check_no_zarr_writer(ref.path)


@contextlib.contextmanager
def _opened(part: SourcePart, mode: str = "r+", compute: bool = True) -> Any:
    """The source opened (for writing), unchanged since the catalog, with its part assigned (lazy values
    computed first, unless ``compute`` is off); closed after.
    """
    from shadows.io import read

    source = part.source
    check_unchanged(source.ref, source.identity)
    # read before the file is opened r+
    values = {rel: _computed(value) if compute else value for rel, value in part.values.items()}
    shadow = read(source.ref.full_path, format=source.ref.format, storage_options=source.ref.storage_options,
                  mode=mode)
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
