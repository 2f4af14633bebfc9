"""``shadows.concat``: many files as one lazy AnnData.

The atlas is an :class:`~shadows.core.anndata.AnnDataShadow` (so ``isinstance(atlas, anndata.AnnData)``)
whose layout is an :class:`~shadows.collection.layout.AtlasLayout`: its elements are graphs over the
sources (:mod:`shadows.collection.arrays`, :mod:`shadows.collection.frames`), and views, exports,
``to_memory``, the repr and scanpy use them as they use a file's. It is read-only: ``write()`` into its
sources is refused; ``write_h5ad``/``write_zarr`` export it (or a view) to one new file.

obs names are not read when the atlas opens: an observation is (source, row) until names are asked for
(``atlas.obs_names``, ``atlas.obs``, keys given as names), and then only the selected rows' names are read
(a view's, from the files it selects).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from shadows import cluster, convert
from shadows.backends import FileRef
from shadows.backends.fileref import suffix_format
from shadows.backends.handles import release
from shadows.collection import writeback
from shadows.collection.arrays import AtlasArraySpec, AtlasSparseSpec
from shadows.collection.catalog import Catalog, SourceMeta
from shadows.collection.frames import AtlasFrameSpec
from shadows.collection.join import Plan, plan
from shadows.collection.layout import AtlasLayout
from shadows.collection.memory import (
    MappingSpec,
    MemoryFrameSpec,
    MemorySparseSpec,
    ValueSpec,
    measured_matrix,
)
from shadows.collection.reading import source_element
from shadows.core.anndata import AnnDataShadow
from shadows.core.anndata_elements import AnnDataElements
from shadows.core.base import attached, shadow_elements
from shadows.core.layout import ElementMap
from shadows.errors import ReadOnlyError
from shadows.indexing import AxisIndex
from shadows.writing.export import export

#: The varm key of the genes × sources matrix of which genes each source measured.
MEASURED_KEY = "shadows_measured"


class AtlasConnection:
    """What a shadow asks of its connection, for an atlas: nothing to open or close (tasks open each source
    by path, through the process's handles). It carries the atlas's layout, which :class:`AtlasElements`
    serves in place of a file's; :meth:`replaced` swaps it once ``write()`` wrote into the sources.
    """

    mode = "r"
    closed = False

    def __init__(self, layout: AtlasLayout):
        self.layout = layout
        self.name = layout.ref.display
        self.content = 0
        self.generation = 0

    def replaced(self, layout: AtlasLayout) -> None:
        """The atlas's sources were written: its new layout, and what was read before is stale."""
        self.layout = layout
        self.content += 1
        self.generation += 1

    def open(self, mode: str) -> None:
        if mode != "r":
            raise ReadOnlyError(_read_only(self.name))

    def close(self) -> None:
        """Nothing to close: the sources' handles are the process's."""

    @property
    def handle(self) -> Any:
        raise ReadOnlyError(f"{self.name}: an atlas has no file handle of its own")

    @property
    def file(self) -> Any:
        raise ReadOnlyError(f"{self.name}: an atlas has no file of its own; its sources are atlas.sources")


def _read_only(name: str) -> str:
    return (f"{name}: an atlas has no file to reopen for writing: write() writes its new obs columns, obsm "
            "entries and layers into its sources; write_h5ad(path) or write_zarr(path) export it")


class AtlasElements(AnnDataElements):
    """The elements of an atlas: an AnnData's, over the atlas's layout (carried by its
    :class:`AtlasConnection`) instead of a file's.
    """

    def new_layout(self) -> ElementMap:
        """The atlas's layout: decided when the atlas opened, never rebuilt from a file."""
        return self.connection.layout


class AtlasShadow(AnnDataShadow):
    """An AnnData over many files (see :func:`concat`); its layout is an
    :class:`~shadows.collection.layout.AtlasLayout`.
    """

    _ELEMENTS = AtlasElements

    @classmethod
    def over(cls, layout: AtlasLayout, array_backend: str = "numpy", table_backend: str = "pandas"
             ) -> AtlasShadow:
        """The atlas whose elements ``layout`` holds, with these backends."""
        return attached(cls, layout.ref, convert.array_backend(array_backend), convert.table_backend(table_backend),
                        AtlasConnection(layout))

    @property
    def sources(self) -> list[str]:
        """The sources' paths, in order (the columns of ``varm["shadows_measured"]``)."""
        return [s.display for s in shadow_elements(self).layout.obs.extra["sources"]]

    @property
    def catalog(self) -> Catalog:
        """The atlas's catalog (``atlas.catalog.save(path)`` writes it)."""
        return Catalog(list(shadow_elements(self).layout.obs.extra["sources"]))

    def write(self, filename: Any = None, clear_cache: bool = False, overwrite: bool = False, *,
              progress: bool = False, **kwargs: Any) -> AtlasShadow:
        """``write()``: the obs columns, obsm entries and layers computed on the atlas (▲) written into
        its sources, each source its rows (see :mod:`shadows.collection.writeback`): every source checked
        before any is written, each source's elements committed atomically, on the ``distributed.Client``
        when there is one (one task per source). ``write(path)``: export to a new h5ad (AnnData's alias).

        Raises
        ------
        ReadOnlyError
            A view, a change the sources cannot store (X, var, uns...; a layer after an inner join that
            dropped genes), or sources given as views.
        AtlasWriteError
            A source cannot take its part (nothing written), or one failed while writing: the message
            lists which sources committed.
        """
        if filename is not None and not isinstance(filename, bool):
            return super().write(filename, clear_cache, overwrite, progress=progress, **kwargs)
        elements = shadow_elements(self)
        if elements.is_view:
            raise ReadOnlyError(f"{self.filename}: a view of an atlas cannot be written into the sources; write "
                                "the atlas, or export the view with write_h5ad(path) / write_zarr(path)")
        _write_back(elements, overwrite)
        if clear_cache or filename is True:
            self.clear_cache()
        return self

    def copy(self, filename: str | os.PathLike | None = None, *, overwrite: bool = False,
             progress: bool = False) -> Any:
        """An in-memory copy (``to_memory()``); with ``filename``, the atlas (or view) exported there out
        of core and opened as a one-file :class:`~shadows.AnnDataShadow` with the same backends.
        """
        if filename is None:
            return self.to_memory()
        fmt = suffix_format(filename) or "hdf5"
        export(self, filename, fmt, overwrite=overwrite, progress=progress)
        elements = shadow_elements(self)
        return AnnDataShadow(filename, array_backend=elements.arrays.name, table_backend=elements.tables.name,
                             format=fmt)

    def reopen(self, mode: str = "r") -> AtlasShadow:
        """An atlas is read-only: only ``"r"``."""
        shadow_elements(self).connection.open(mode)
        return self

    def __reduce__(self):
        elements = shadow_elements(self)
        view = (elements.view, elements.local) if elements.is_view else None
        return (_reopened, (elements.root.connection.layout, elements.arrays.name, elements.tables.name, view))


def _reopened(layout: AtlasLayout, array_backend: str, table_backend: str,
              view: tuple[tuple[AxisIndex, AxisIndex], tuple[AxisIndex, AxisIndex]] | None) -> AtlasShadow:
    shadow = AtlasShadow.over(layout, array_backend, table_backend)
    if view is None:
        return shadow
    root = shadow_elements(shadow)
    return root.wrap(root.make_view(*view[0], view[1]))


def concat(sources: Any, *, join: str = "inner", label: str | None = None, keys: Sequence[Any] | None = None,
           index_unique: str | None = None, merge: Any = None, uns_merge: Any = None, fill_value: Any = None,
           catalog: str | os.PathLike | Catalog | None = None, on_change: str = "raise",
           storage_options: Mapping[str, Any] | None = None, array_backend: str = "numpy",
           table_backend: str = "pandas") -> AtlasShadow:
    """Many AnnData files as one lazy AnnData, with ``anndata.concat``'s semantics along obs.

    Parameters
    ----------
    sources
        Paths, globs, fsspec URLs, shadows (their files) and views of shadows (their files' selected rows,
        in the view's order, and genes, with the categories those rows use, as anndata's views have them),
        h5ad and Zarr mixed; or a :class:`~shadows.collection.catalog.Catalog`; or ``None`` with
        ``catalog``: the catalog's sources. A shadow holding changes its file lacks is refused (the atlas
        reads files: ``write()`` it first).
    join, label, keys, index_unique, merge, uns_merge, fill_value
        As for :func:`anndata.concat` (``axis="obs"``): var joined ``"inner"`` or ``"outer"`` (missing
        genes filled with 0 in sparse results, NaN in dense ones, or ``fill_value``; layers those every
        source has, obsm those every source has, or, outer, all, filled where missing); ``merge`` and
        ``uns_merge`` read each source's var and uns when the atlas opens.
    catalog
        A :class:`Catalog`, or the path of a catalog file: read when it exists (no source is touched;
        sources it does not list are read and added, and the file rewritten), else written there after
        the sources' metadata is read.
    on_change
        For a catalog file: ``"raise"`` (a source changed since is reported when read) or ``"refresh"``
        (every source's identity checked now; changed ones read again, and the file rewritten).
    storage_options
        fsspec's options for URLs.
    array_backend, table_backend
        As for :class:`~shadows.AnnDataShadow`.

    Returns
    -------
    AtlasShadow
        An :class:`~shadows.AnnDataShadow` (an ``anndata.AnnData``) whose elements are graphs over the
        sources. ``varm["shadows_measured"]`` (genes × sources, sparse boolean) says which genes each
        source measured: a gene's 0 (or NaN) in a source that did not measure it is "not measured", not
        zero. Read-only.
    """
    cat = _catalog(sources, catalog, on_change, storage_options)
    name = os.fspath(catalog) if isinstance(catalog, str | os.PathLike) else f"atlas of {len(cat)} sources"
    options = {"join": join, "label": label, "keys": keys, "index_unique": index_unique, "merge": merge,
               "uns_merge": uns_merge, "fill_value": fill_value}
    layout = _planned(name, cat.sources, options)
    layout.catalog_path = os.fspath(catalog) if isinstance(catalog, str | os.PathLike) else None
    return AtlasShadow.over(layout, array_backend, table_backend)


def _planned(name: str, metas: list[SourceMeta], options: dict[str, Any]) -> AtlasLayout:
    """The layout of the atlas of ``metas`` joined with ``options`` (:func:`concat`'s)."""
    vars_ = [_source_var(s) for s in metas] if options["merge"] is not None else None
    uns = [_source_uns(s) for s in metas] if options["uns_merge"] is not None else None
    decided = plan(metas, **options, vars=vars_, uns=uns)
    layout = _layout(name, metas, decided)
    layout.options, layout.columns = options, decided.columns
    return layout


def _let_go(paths: list[str]) -> None:
    """Close this process's read handles of ``paths`` (those no shadow holds)."""
    for path in paths:
        release(path)


def _write_back(elements: Any, overwrite: bool) -> None:
    """``atlas.write()``: its changes into its sources, then the atlas over what they store now."""
    connection: AtlasConnection = elements.connection
    layout = connection.layout
    elements.state.keep_changed_in_place()
    changes = elements.state.changes()
    if not changes:
        return
    sources = layout.obs.extra["sources"]
    parts = writeback.plan(layout.ref.display, sources, layout.obs.extra["offsets"], layout.columns, changes,
                           elements.state.deleted)
    paths = [s.ref.path for s in sources]
    client = cluster.current_client(reads=paths)
    writeback.check(parts, overwrite)
    writeback.settle(parts, client)
    if client is not None:  # read handles the workers hold (they read for the atlas) would lock writers out
        client.run(_let_go, paths, on_error="ignore")  # a worker gone has nothing open
    _let_go(paths)  # and this process's read tasks' handles, before the files are opened for writing
    try:
        writeback.commit(parts, overwrite, client)
    finally:  # what was committed is in the files, also when another source failed
        new = writeback.written_back(layout.catalog_path, sources,
                                     lambda metas: _planned(layout.ref.display, metas, layout.options))
        new.catalog_path = layout.catalog_path
        connection.replaced(new)
    for rel in changes:
        elements.state.written(rel)


def _catalog(sources: Any, catalog: Any, on_change: str, storage_options: Mapping[str, Any] | None) -> Catalog:
    """The catalog of ``sources``: given, loaded from the file ``catalog`` (its entries for the sources it
    lists, the others read and the file rewritten), or read from the sources (and written to ``catalog``).
    """
    if isinstance(sources, Catalog):
        return sources.with_options(storage_options)
    if isinstance(catalog, Catalog):
        return catalog.with_options(storage_options) if sources is None else catalog.updated(sources, storage_options)
    if catalog is not None and os.path.exists(catalog):
        loaded = Catalog.load(catalog, on_change=on_change, storage_options=storage_options)
        updated = loaded if sources is None else loaded.updated(sources, storage_options)
        if on_change == "refresh" or updated is not loaded:
            updated.save(catalog)
        return updated
    if sources is None:
        raise ValueError("shadows.concat: no sources given, and no catalog to read them from")
    built = Catalog.build(sources, storage_options)
    if catalog is not None:
        built.save(catalog)
    return built


def _source_var(source: SourceMeta) -> Any:
    """A source's var (a view's genes only)."""
    var = source_element(source, "var").read()
    return var if source.subset is None or source.subset.cols is None else var.iloc[source.subset.cols]


def _source_uns(source: SourceMeta) -> dict[str, Any]:
    from shadows.io import read

    shadow = read(source.ref.full_path, format=source.ref.format, storage_options=source.ref.storage_options)
    try:
        return shadow.uns.materialize()
    finally:
        shadow.close()


def _layout(name: str, sources: list[SourceMeta], decided: Plan) -> AtlasLayout:
    ref = FileRef(name, "hdf5")
    offsets = np.concatenate([[0], np.cumsum([s.n_obs for s in sources])]).astype(np.int64)
    n_obs, n_vars = int(offsets[-1]), len(decided.var)
    names = {s.obs_index_name for s in sources}
    frame_extra = {"sources": sources, "offsets": offsets, "plan": decided,
                   "index_name": names.pop() if len(names) == 1 else None}
    specs: dict[str, Any] = {
        "obs": AtlasFrameSpec(ref, "obs", "atlas dataframe", (n_obs, len(decided.obs_dtypes)), None,
                              extra=frame_extra),
        "var": MemoryFrameSpec(ref, "var", "joined var", (n_vars, decided.var.shape[1]), None,
                               extra={"frame": decided.var}),
    }
    children: dict[str, list[str]] = {"layers": [], "obsm": []}
    for rel, array in decided.arrays.items():
        cls = AtlasSparseSpec if array.sparse else AtlasArraySpec
        width = n_vars if array.joined_columns else array.n_cols
        specs[rel] = cls(ref, rel, f"atlas {'csr' if array.sparse else 'dense'} array", (n_obs, width),
                         array.dtype, extra={"sources": sources, "offsets": offsets, "plan": array,
                                             "columns": decided.columns if array.joined_columns else None})
        if "/" in rel:
            slot, key = rel.split("/", 1)
            children[slot].append(key)
    measured = measured_matrix(decided.columns, n_vars)
    specs[f"varm/{MEASURED_KEY}"] = MemorySparseSpec(ref, f"varm/{MEASURED_KEY}", "genes × sources measured",
                                                     measured.shape, measured.dtype, extra={"value": measured})
    children["varm"] = [MEASURED_KEY]
    _add_uns(ref, "uns", decided.uns, specs, children)
    return AtlasLayout(ref, specs, children)


def _add_uns(ref: FileRef, rel: str, value: Mapping[str, Any], specs: dict[str, Any],
             children: dict[str, list[str]]) -> None:
    specs[rel] = MappingSpec(ref, rel, "dict", (), None, extra={"value": dict(value)})
    children[rel] = [str(k) for k in value]
    for key, item in value.items():
        child = f"{rel}/{key}"
        if isinstance(item, Mapping):
            _add_uns(ref, child, item, specs, children)
        else:
            specs[child] = ValueSpec(ref, child, "in memory", tuple(getattr(item, "shape", ())),
                                     getattr(item, "dtype", None), extra={"value": item})
