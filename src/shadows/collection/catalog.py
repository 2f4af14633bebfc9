"""What an atlas knows of its sources without reading their data: the catalog.

Opening an atlas reads each source's metadata once (many local HDF5 files in worker processes, remote
sources and Zarr stores in threads, see :func:`read_sources`): its identity
(:func:`~shadows.collection.sources.identity`), the number of observations, the var names (the one thing
of the data the join needs), obs column names with their dtypes (categories included) and which of X,
layers and obsm exist with their storage (dense or CSR/CSC), dtype, shape and size. No obs index is read.

:meth:`Catalog.save` writes it as a small JSON file beside the data; :meth:`Catalog.load` reopens it
without touching any source. JSON, not parquet: the metadata is nested and uneven (per source, per column
a dtype with its categories, per element a storage), which JSON keeps as it is while a table would have to
flatten it; it needs no pyarrow import (which alone costs longer than reading a thousand-source catalog);
and it stays readable by people and other tools. Every var name is stored once (``names``), and each
distinct gene panel as the positions of its names in that list (little-endian int32, base64): a thousand
files with a thousand panels of 2,000 of 3,000 genes store 3,000 names and 8 MB of positions (as name
lists: 24.7 MB of JSON, 0.24 s of parsing and 0.27 s of making the indexes again).

A source that changed since the catalog was written is found when the atlas reads from it
(:class:`~shadows.collection.sources.SourceChangedError` naming it), or at load with
``on_change="refresh"``, which reads the changed sources' metadata again.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from shadows.backends import FileRef, nodes
from shadows.backends.handles import reading
from shadows.backends.remote import redact
from shadows.collection.sources import (
    SourceChangedError,
    Subset,
    UnreadableSourceError,
    expand,
    identity,
    stamped,
)
from shadows.collection.sources import paths as source_paths
from shadows.core import view_categories
from shadows.elements.registry import describe
from shadows.errors import MalformedElementError, ShadowsError
from shadows.indexing.compose import compose
from shadows.indexing.keys import AxisIndex, as_positions, as_slice_or_array, sorted_unique

#: Format marker and version of catalog files (version 2 added the subset a view given as a source keeps;
#: version 1 files, which have none, are read as they are; version 3 stores panels as positions into one
#: list of names, versions 1 and 2 as lists of names).
CATALOG_FORMAT = "shadows-atlas-catalog"
CATALOG_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
#: Threads reading the metadata of sources that are not local HDF5 files (remote ones wait on the network,
#: Zarr stores on the disk) when an atlas is opened.
METADATA_THREADS = 16
#: Local HDF5 sources are read in worker processes when there are at least this many (and more than one
#: core): h5py holds one lock through every call, so threads read them one at a time, and slower than one
#: thread does (300 sources: 4.4 s in one thread, 8.3 s in 2, 10.6 s in 16). Workers start in a few
#: seconds (each imports shadows; they are kept for later opens), which fewer sources do not repay.
PROCESS_MIN_SOURCES = 200
#: Sources one worker process reads per task.
PROCESS_BATCH = 25
#: Mapping slots of arrays whose elements an atlas serves (besides X).
ARRAY_SLOTS = ("layers", "obsm")


@dataclass(frozen=True)
class ArrayInfo:
    """One stored array of a source (X, a layer, an obsm entry): its storage and size, from metadata."""

    sparse: str | None  #: ``"csr"``, ``"csc"``, or ``None`` for a dense array
    dtype: str
    shape: tuple[int, ...]
    nbytes: int  #: bytes read to read all of it (uncompressed)

    def to_json(self) -> dict[str, Any]:
        return {"sparse": self.sparse, "dtype": self.dtype, "shape": list(self.shape), "nbytes": self.nbytes}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ArrayInfo:
        return cls(data["sparse"], data["dtype"], tuple(data["shape"]), int(data["nbytes"]))


@dataclass(frozen=True)
class SourceMeta:
    """One source of an atlas as its catalog describes it (see the module's docstring).

    ``ref`` opens it again; ``obs_dtypes`` are the pandas dtypes of its obs columns as anndata reads them
    (categorical dtypes with their categories); ``arrays`` maps ``"X"``, ``"layers/<k>"`` and
    ``"obsm/<k>"`` to their :class:`ArrayInfo`.

    A view given as a source is its file with a ``subset`` (:class:`~shadows.collection.sources.Subset`):
    then ``n_obs``, ``var_names``, the arrays' shapes and the categories are the view's, as anndata's
    view of the file has them (unused categories dropped), and :meth:`file_rows` / :meth:`file_cols`
    turn positions in the view into positions in the file.
    """

    ref: FileRef
    identity: list[Any]
    n_obs: int
    var_names: pd.Index
    obs_dtypes: dict[str, Any]
    obs_index_name: str | None
    arrays: dict[str, ArrayInfo] = field(default_factory=dict)
    #: The dtype anndata reads the obs names with (``object`` for an empty source on pandas 3, ``str``
    #: else): it decides the joined names' dtype as it does in anndata.concat.
    obs_index_dtype: Any = field(default_factory=lambda: np.dtype(object))

    subset: Subset | None = None

    @property
    def display(self) -> str:
        """The source's path as messages give it."""
        return self.ref.display

    def file_rows(self, rows: AxisIndex) -> AxisIndex:
        """Rows of the source (positions in it) as rows of its file: in the view's order, which need not be
        the file's (see :func:`read_in_order`).
        """
        if self.subset is None or self.subset.rows is None:
            return rows
        return compose(self.subset.rows, rows)

    def file_cols(self, cols: np.ndarray) -> np.ndarray:
        """Columns of the source (-1: none) as columns of its file."""
        if self.subset is None or self.subset.cols is None:
            return cols
        mapped = as_positions(self.subset.cols)[np.maximum(cols, 0)]
        return np.where(cols >= 0, mapped, -1)

    @property
    def key(self) -> tuple[str, str]:
        """The file's full path and the subset's key: what a catalog's entries are matched by."""
        return self.ref.full_path, self.subset.key if self.subset is not None else ""

    def slot_keys(self, slot: str) -> list[str]:
        """Keys of ``slot`` (``"layers"``, ``"obsm"``) this source stores."""
        return [rel.split("/", 1)[1] for rel in self.arrays if rel.startswith(slot + "/")]


def read_in_order(rows: AxisIndex, read: Any, *, slices: bool = True) -> Any:
    """``read(key)`` of a file's rows ``rows`` (positions in any order, repeats allowed), with readers that
    take increasing rows: read in the file's order, then put in ``rows``'s. ``key`` is a slice or positions
    (``slices``), else a range or positions (an :data:`~shadows.indexing.AxisIndex`).
    """
    to_read, order = sorted_unique(rows)
    values = read(as_slice_or_array(to_read) if slices else to_read)
    return values if order is None else values[order]


def read_source(ref: FileRef) -> SourceMeta:
    """Read one source's catalog entry (metadata, the var names and obs categories; no X, no obs index).

    Raises
    ------
    ShadowsError
        The source is missing, is not an AnnData, or its metadata is damaged; the message names it.
    """
    try:
        ident = identity(ref)
        ref = stamped(ref, ident)  # read anew if this process read an older content of the path
        # the handle stays open under these reads, should a shadow of the file go; and is closed after them
        # (a thousand sources' handles and HDF5 metadata caches held open took 1.5 GB, and as many descriptors)
        with reading(ref, transient=True):
            return _read_source(ref, ident)
    except ShadowsError:
        raise
    except Exception as error:  # h5py/zarr/OS errors the element readers did not translate
        raise UnreadableSourceError(f"{ref.display}: cannot read this source's metadata: {error}") from error


def _read_source(ref: FileRef, ident: Any) -> SourceMeta:
    """What :func:`read_source` reads, inside its read of the file."""
    obs = _element(ref, "obs")
    var = _element(ref, "var")
    names = var.read_index()
    _check_unique(ref, names)
    dtypes = {key: _column_dtype(obs.column(key)) for key in obs.columns}
    arrays: dict[str, ArrayInfo] = {}
    root = ref.node(ref.element_path())
    if nodes.has_child(root, "X"):
        arrays["X"] = _array_info(_element(ref, "X"))
    for slot in ARRAY_SLOTS:
        if nodes.has_child(root, slot):
            for key in nodes.child_names(ref.node(ref.element_path(slot))):
                spec = _element(ref, f"{slot}/{key}")
                if spec.role == "array":  # dataframes in obsm are not served by an atlas yet
                    arrays[f"{slot}/{key}"] = _array_info(spec)
    # anndata reads stored names as strings (str on pandas 3), an empty index as object: no name read
    index_dtype = pd.Index(np.array([], dtype=object) if obs.shape[0] == 0 else ["a"]).dtype
    return SourceMeta(replace(ref, content=None), ident, int(obs.shape[0]), names, dtypes, _index_name(obs), arrays,
                      index_dtype)


def with_subset(meta: SourceMeta, subset: Subset | None) -> SourceMeta:
    """The catalog entry of the view of ``meta``'s file that keeps ``subset``: its rows, genes, array
    shapes and, as anndata's views do (``anndata.settings.remove_unused_categories``), only the categories
    its rows use (the codes of its categorical obs columns are read for that).
    """
    if subset is None:
        return meta
    for axis, positions, n in (("rows", subset.rows, meta.n_obs), ("genes", subset.cols, len(meta.var_names))):
        if positions is not None and len(positions) and not 0 <= np.min(positions) <= np.max(positions) < n:
            raise SourceChangedError(f"{meta.display}: the view given as a source keeps {axis} past the file's "
                                     f"{n}; the file changed since the view was made: make the view again")
    n_obs = meta.n_obs if subset.rows is None else len(subset.rows)
    names = meta.var_names if subset.cols is None else meta.var_names[as_slice_or_array(subset.cols)]
    row_share = n_obs / max(1, meta.n_obs)
    col_share = len(names) / max(1, len(meta.var_names))
    arrays = {}
    for rel, info in meta.arrays.items():
        genes = rel == "X" or rel.startswith("layers/")
        shape = (n_obs, len(names) if genes else info.shape[1], *info.shape[2:])
        arrays[rel] = replace(info, shape=shape, nbytes=int(info.nbytes * row_share * (col_share if genes else 1)))
    dtypes, recode = dict(meta.obs_dtypes), {}
    if view_categories.enabled():
        with reading(stamped(meta.ref, meta.identity), transient=True):
            for key, dtype in meta.obs_dtypes.items():
                if isinstance(dtype, pd.CategoricalDtype):
                    dtypes[key], recode[key] = _used_categories(meta, key, dtype, subset.rows)
    index_dtype = pd.Index(np.array([], dtype=object) if n_obs == 0 else ["a"]).dtype
    return replace(meta, n_obs=n_obs, var_names=names, obs_dtypes=dtypes, arrays=arrays, obs_index_dtype=index_dtype,
                   subset=replace(subset, recode=recode))


def _used_categories(meta: SourceMeta, key: str, dtype: pd.CategoricalDtype, rows: AxisIndex | None
                     ) -> tuple[pd.CategoricalDtype, np.ndarray]:
    """The categories of column ``key`` that rows ``rows`` (``None``: all) use, in the file's order, and
    each stored code's code among them (-1: unused).
    """
    spec = _element(meta.ref, "obs").column(key)
    to_read = range(meta.n_obs) if rows is None else sorted_unique(rows)[0]
    if hasattr(spec, "read_codes"):
        codes = np.asarray(spec.read_codes(as_slice_or_array(to_read), len(dtype.categories)))
    else:  # a layout without separate codes (pre-0.7 records): decoded by the catalog's categories
        values = pd.Categorical(spec.read_rows(as_slice_or_array(to_read)), dtype=dtype)
        codes = values.codes
    used = np.zeros(len(dtype.categories), dtype=bool)
    used[codes[codes >= 0]] = True
    recode = np.where(used, np.cumsum(used) - 1, -1).astype(np.int64)
    return pd.CategoricalDtype(dtype.categories[used], ordered=dtype.ordered), recode


def _element(ref: FileRef, rel: str) -> Any:
    path = ref.element_path(rel)
    return describe(ref, ref.node(path), path)


def _check_unique(ref: FileRef, names: pd.Index) -> None:
    if not names.is_unique:
        dup = names[names.duplicated()].unique()[:5]
        what = (f"its var names are not unique ({', '.join(map(str, dup))}...): a join by gene name is ambiguous "
                "(anndata.concat fails on it too); make them unique in that file (var_names_make_unique)")
        raise MalformedElementError(f"{ref.display}: var: {what}")


def _column_dtype(spec: Any) -> Any:
    """The pandas dtype anndata reads the column with (no rows read; a categorical's categories are)."""
    dtype = spec.dtype
    if spec.role == "array" and not spec.is_sparse and isinstance(dtype, np.dtype) and dtype.kind in "biuf":
        return dtype  # a plain numeric array: read as it is stored (no read needed to tell)
    return pd.Series(spec.read_rows(slice(0, 0))).dtype


def _index_name(frame: Any) -> str | None:
    key = frame.extra.get("index_key", "_index")
    return None if key == "_index" else key


def _array_info(spec: Any) -> ArrayInfo:
    sparse = spec.format if spec.is_sparse else None
    return ArrayInfo(sparse, str(np.dtype(spec.dtype)), tuple(int(n) for n in spec.shape), int(spec.nbytes(())))


@dataclass
class Catalog:
    """The metadata of an atlas's sources (see the module's docstring)."""

    sources: list[SourceMeta]

    @classmethod
    def build(cls, sources: Any, storage_options: Mapping[str, Any] | None = None) -> Catalog:
        """Read the metadata of ``sources`` (paths, globs, URLs, shadows, views), in parallel
        (:func:`read_sources`).
        """
        return cls(_read_wanted(expand(sources, storage_options)))

    def updated(self, sources: Any, storage_options: Mapping[str, Any] | None = None) -> Catalog:
        """The catalog of ``sources``: the entries of this one for the sources it lists (untouched), the
        metadata of the others read now; ``self`` when it lists exactly these sources.
        """
        wanted = source_paths(sources, storage_options)
        if wanted == [s.key for s in self.sources]:
            return self
        known = {s.key: s for s in self.sources}
        new = [(ref, subset) for (ref, subset), key in zip(expand(sources, storage_options), wanted, strict=True)
               if key not in known]
        known |= {m.key: m for m in _read_wanted(new)}
        return Catalog([known[key] for key in wanted])

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def refs(self) -> list[FileRef]:
        """The sources' references, in order."""
        return [s.ref for s in self.sources]

    def save(self, path: str | os.PathLike) -> None:
        """Write the catalog as JSON at ``path`` (replaced atomically)."""
        panels: dict[tuple[str, ...], int] = {}
        entries = []
        for source in self.sources:
            panel = panels.setdefault(tuple(map(str, source.var_names)), len(panels))
            entries.append({
                "path": source.ref.path, "format": source.ref.format, "root": source.ref.root,
                "identity": source.identity, "n_obs": source.n_obs, "panel": panel,
                "var_index_name": source.var_names.name, "var_index_dtype": str(source.var_names.dtype),
                "obs_index_name": source.obs_index_name, "obs_index_dtype": str(source.obs_index_dtype),
                "obs": {k: _dtype_to_json(d) for k, d in source.obs_dtypes.items()},
                "arrays": {k: a.to_json() for k, a in source.arrays.items()},
                "subset": source.subset.to_json() if source.subset is not None else None,
            })
        names = dict.fromkeys(name for panel in panels for name in panel)
        number = {name: i for i, name in enumerate(names)}
        doc = {"format": CATALOG_FORMAT, "version": CATALOG_VERSION, "names": list(names),
               "panels": [_positions_to_json([number[name] for name in panel]) for panel in panels],
               "sources": entries}
        target = os.fspath(path)
        tmp = f"{target}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, separators=(",", ":"))
        os.replace(tmp, target)

    @classmethod
    def load(cls, path: str | os.PathLike, *, on_change: str = "raise",
             storage_options: Mapping[str, Any] | None = None) -> Catalog:
        """Read a catalog written by :meth:`save`, touching no source (``on_change="raise"``, the
        default: a changed source is reported when the atlas reads from it), or checking every source's
        identity now and reading the changed ones' metadata again (``on_change="refresh"``).
        """
        if on_change not in ("raise", "refresh"):
            raise ValueError(f"on_change must be 'raise' or 'refresh', got {on_change!r}")
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        if doc.get("format") != CATALOG_FORMAT or doc.get("version") not in READABLE_VERSIONS:
            raise ShadowsError(f"{os.fspath(path)}: not a shadows atlas catalog (versions "
                               f"{', '.join(map(str, READABLE_VERSIONS))})")
        if doc["version"] >= 3:
            names = np.array(doc["names"], dtype=object)
            panels = [pd.Index(names[_positions_from_json(p)], dtype=object) for p in doc["panels"]]
        else:
            panels = [pd.Index(p, dtype=object) for p in doc["panels"]]
        # sources sharing a panel, or a dtype, share one object of it (made once, not per source)
        var_names: dict[tuple[int, str, Any], pd.Index] = {}
        dtypes: dict[str, Any] = {}
        sources = []
        for e in doc["sources"]:
            ref = FileRef(e["path"], e["format"], e["root"], storage_options=storage_options)
            key = (e["panel"], e["var_index_dtype"], e["var_index_name"])
            if key not in var_names:
                var_names[key] = panels[e["panel"]].astype(pd.api.types.pandas_dtype(e["var_index_dtype"]))
                var_names[key].name = e["var_index_name"]
            obs = {}
            for k, d in e["obs"].items():
                described = json.dumps(d, sort_keys=True)
                if described not in dtypes:
                    dtypes[described] = _dtype_from_json(d)
                obs[k] = dtypes[described]
            sources.append(SourceMeta(ref, e["identity"], int(e["n_obs"]), var_names[key], obs, e["obs_index_name"],
                                      {k: ArrayInfo.from_json(a) for k, a in e["arrays"].items()},
                                      pd.api.types.pandas_dtype(e["obs_index_dtype"]),
                                      Subset.from_json(e.get("subset"))))
        catalog = cls(sources)
        if on_change == "refresh":
            catalog = catalog.refreshed()
        return catalog

    def refreshed(self) -> Catalog:
        """The catalog with the sources whose identity changed read again (every source is stat'ed)."""
        stale = [i for i, s in enumerate(self.sources) if identity(s.ref) != s.identity]
        fresh = _read_wanted([(self.sources[i].ref, self.sources[i].subset) for i in stale])
        sources = list(self.sources)
        for i, meta in zip(stale, fresh, strict=True):
            sources[i] = meta
        return Catalog(sources)

    def check(self) -> None:
        """Raise :class:`SourceChangedError` naming the first source that changed since it was read."""
        for source in self.sources:
            if identity(source.ref) != source.identity:
                raise SourceChangedError(f"{redact(source.ref.path)}: this source changed since the atlas's catalog "
                                         "was written; reopen the atlas without the catalog, or load it with "
                                         "on_change='refresh'")

    def with_options(self, storage_options: Mapping[str, Any] | None) -> Catalog:
        """The catalog with ``storage_options`` on every source (credentials are never saved)."""
        if storage_options is None:
            return self
        return Catalog([replace(s, ref=replace(s.ref, storage_options=storage_options)) for s in self.sources])


def _read_wanted(wanted: list[tuple[FileRef, Subset | None]]) -> list[SourceMeta]:
    """The entries of files and the subsets of them views keep (each file's metadata read once)."""
    files = list(dict.fromkeys(ref for ref, _ in wanted))
    metas = dict(zip(files, read_sources(files), strict=True))
    return [with_subset(metas[ref], subset) for ref, subset in wanted]


def read_sources(refs: list[FileRef]) -> list[SourceMeta]:
    """Each source's :class:`SourceMeta`, in order: local HDF5 files in this thread or, when there are many,
    in worker processes (:data:`PROCESS_MIN_SOURCES`); the others in parallel threads meanwhile.
    """
    local = [i for i, r in enumerate(refs) if not r.capabilities.parallel_reads]
    others = sorted(set(range(len(refs))) - set(local))
    found: list[SourceMeta | None] = [None] * len(refs)
    pool = ThreadPoolExecutor(max_workers=min(METADATA_THREADS, len(others))) if len(others) > 1 else None
    try:
        pending = {i: pool.submit(read_source, refs[i]) for i in others} if pool is not None else {}
        for i, meta in zip(local, _read_local_hdf5([refs[i] for i in local]), strict=True):
            found[i] = meta
        for i in others:
            found[i] = pending[i].result() if pool is not None else read_source(refs[i])
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return found  # type: ignore[return-value]


def _read_local_hdf5(refs: list[FileRef]) -> list[SourceMeta]:
    """The metadata of local HDF5 sources: in worker processes when there are many, else one by one here."""
    workers = min(os.cpu_count() or 1, max(2, len(refs) // 100))
    if len(refs) < PROCESS_MIN_SOURCES or workers < 2:
        return [read_source(r) for r in refs]
    # joblib's loky workers, not multiprocessing's: they do not run the user's script again on start (a
    # script without a ``__main__`` guard works), and stay for the next atlas opened in this process
    from joblib import Parallel, delayed

    batches = [refs[i:i + PROCESS_BATCH] for i in range(0, len(refs), PROCESS_BATCH)]
    try:
        done = Parallel(n_jobs=workers, backend="loky")(delayed(_read_batch)(batch) for batch in batches)
    except ShadowsError:
        raise  # a source's own error, raised in a worker: it names the source
    except Exception:  # no worker could start, or one died: read them here instead
        return [read_source(r) for r in refs]
    return [meta for batch in done for meta in batch]


def _read_batch(refs: list[FileRef]) -> list[SourceMeta]:
    """:func:`read_source` of each of ``refs`` (one task of a worker process)."""
    return [read_source(r) for r in refs]


def _dtype_to_json(dtype: Any) -> dict[str, Any]:
    if isinstance(dtype, pd.CategoricalDtype):
        cats = dtype.categories
        return {"categories": [_plain(v) for v in cats], "categories_dtype": str(cats.dtype),
                "ordered": bool(dtype.ordered)}
    return {"dtype": str(dtype)}


def _positions_to_json(positions: list[int]) -> str:
    """Positions as base64 of their little-endian int32 bytes (a JSON list of numbers parses ~10x slower)."""
    return base64.b64encode(np.asarray(positions, dtype="<i4").tobytes()).decode("ascii")


def _positions_from_json(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<i4")


def _dtype_from_json(data: Mapping[str, Any]) -> Any:
    if "categories" in data:
        cats = pd.Index(data["categories"], dtype=pd.api.types.pandas_dtype(data["categories_dtype"]))
        return pd.CategoricalDtype(cats, ordered=data["ordered"])
    return pd.api.types.pandas_dtype(data["dtype"])


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
