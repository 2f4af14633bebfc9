"""Many files as one lazy AnnData (``shadows.concat``) against ``anndata.concat`` of the same files read
with anndata, over seeded random file sets: different gene panels and orders, obs columns present in
some files only with different categories and int/float/nullable/string/bool dtypes, an empty file,
dense and sparse (CSR and CSC) X, h5ad and Zarr v2/v3 mixed; for the atlas and for views of it.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import warnings
from collections import Counter
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata.tests.helpers import assert_equal

import shadows
from conftest import FORMATS, write
from helpers import file_digest, fork_server
from shadows.backends import FileRef
from shadows.collection import MEASURED_KEY, AtlasShadow, Catalog
from shadows.collection import arrays as atlas_arrays
from shadows.errors import MalformedElementError, ReadOnlyError

GENES = [f"g{i:02d}" for i in range(30)]
CORE = GENES[:6]  # measured by every file, so that inner joins keep genes


def _obs(rng: np.random.Generator, i: int, n: int) -> pd.DataFrame:
    """obs with columns present in some files only, categories differing by file."""
    cats = list(rng.choice(["B", "T", "NK", "Mono", "DC"], size=3, replace=False))
    columns: dict[str, object] = {"cell_type": pd.Categorical(rng.choice(cats, n), categories=sorted(cats))}
    stages = sorted(rng.choice([f"s{k}" for k in (1, 2, 9, 10, 11)], size=3, replace=False))
    columns["stage"] = pd.Categorical(rng.choice(stages, n), categories=stages)  # merged in natural order
    if i % 2 == 0:
        columns["count"] = rng.integers(0, 100, n)  # int in some files: float (NaN) in an outer join
        columns["grade"] = pd.Categorical(rng.choice(["lo", "mid", "hi"], n), categories=["lo", "mid", "hi"],
                                          ordered=True)
    if i % 3 != 1:
        columns["score"] = rng.normal(size=n).astype(np.float32 if i % 2 else np.float64)
    if i % 3 == 0:
        columns["flag"] = rng.choice([True, False], n)  # bool missing elsewhere: nullable boolean
    if i % 4 == 1:
        columns["level"] = pd.array(rng.integers(0, 5, n), dtype="Int64")
    if i % 2 == 1:
        columns["donor"] = np.array([f"d{k % 3}" for k in range(n)], dtype=object)
    names = [f"c{k}" for k in range(n)] if i % 2 else [f"f{i}c{k}" for k in range(n)]  # some names clash
    return pd.DataFrame(columns, index=pd.Index(names))


def _make(rng: np.random.Generator, i: int, n: int, storage: str) -> ad.AnnData:
    extra = list(rng.choice(GENES[6:], size=int(rng.integers(6, 18)), replace=False))
    panel = list(rng.permutation(CORE + extra))  # each file its own gene order
    if storage == "dense_int":
        X = rng.integers(0, 5, (n, len(panel))).astype(np.int32)
    else:
        dense = rng.random((n, len(panel)))
        dense[dense < 0.6] = 0
        X = {"dense": dense.astype(np.float32), "csr": sp.csr_matrix(dense.astype(np.float32)),
             "csc": sp.csc_matrix(dense)}[storage]
    adata = ad.AnnData(X=X, obs=_obs(rng, i, n), var=pd.DataFrame(index=panel))
    adata.layers["counts"] = sp.csr_matrix(np.round(np.asarray(X.toarray() if sp.issparse(X) else X) * 10))
    adata.obsm["X_pca"] = rng.normal(size=(n, 3)).astype(np.float32)
    if i % 2 == 0:  # in some files only: an outer join fills it with NaN elsewhere, an inner one drops it
        adata.obsm["X_umap"] = rng.normal(size=(n, 2)).astype(np.float32)
    return adata


def _write_set(root: Path, seed: int, storages: list[str]) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for i, storage in enumerate(storages):
        n = 0 if i == 2 else int(rng.integers(3, 12))  # the third file is empty
        fmt = FORMATS[i % len(FORMATS)]
        path = root / (f"s{i}.h5ad" if fmt == "h5ad" else f"s{i}.zarr")
        paths.append(write(_make(rng, i, n, storage), path, fmt))
    return paths


@pytest.fixture(scope="session")
def sparse_set(tmp_path_factory) -> list[Path]:
    """Files with CSR, CSC and dense X mixed (anndata.concat's X is then CSR)."""
    root = tmp_path_factory.mktemp("atlas_sparse")
    return _write_set(root, 7, ["csr", "csc", "dense", "csr", "dense", "csc", "csr"])


@pytest.fixture(scope="session")
def dense_set(tmp_path_factory) -> list[Path]:
    """Files with dense X only (float and int): outer joins fill with NaN."""
    root = tmp_path_factory.mktemp("atlas_dense")
    return _write_set(root, 11, ["dense", "dense_int", "dense", "dense", "dense_int"])


def _read(path: Path) -> ad.AnnData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ad.read_h5ad(path) if path.suffix == ".h5ad" else ad.read_zarr(path)


def _open_sources(paths: list[str]) -> list[str]:
    """Which of ``paths`` this process holds open (its registry's entries)."""
    from shadows.backends import registry

    return [entry[0] for entry in registry.open_paths() if entry[0] in paths]


def oracle(paths: list[Path], **kwargs) -> ad.AnnData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ad.concat([_read(p) for p in paths], **kwargs)


def atlas_memory(atlas) -> ad.AnnData:
    """``atlas.to_memory()`` without the one element anndata.concat has no counterpart of."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = atlas.to_memory()
    del adata.varm[MEASURED_KEY]
    return adata


def check_same(got: ad.AnnData, expected: ad.AnnData) -> None:
    assert dict(got.obs.dtypes) == dict(expected.obs.dtypes)
    assert list(got.obs.columns) == list(expected.obs.columns)
    assert got.obs_names.equals(expected.obs_names)
    assert list(got.var_names) == list(expected.var_names)
    assert sp.issparse(got.X) == sp.issparse(expected.X)
    assert got.X.dtype == expected.X.dtype
    assert_equal(got, expected)


OPTIONS = [
    {"join": "inner"},
    {"join": "outer"},
    {"join": "outer", "label": "batch", "index_unique": "-"},
    {"join": "inner", "label": "sample", "keys": list("abcdefg"), "index_unique": "_"},
    {"join": "outer", "fill_value": -1},
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items())[:40])
@pytest.mark.parametrize("which", ["sparse_set", "dense_set"])
def test_atlas_equals_anndata_concat(which, options, request):
    paths = request.getfixturevalue(which)
    if "keys" in options:
        options = {**options, "keys": options["keys"][: len(paths)]}
    atlas = shadows.concat(paths, **options)
    assert isinstance(atlas, ad.AnnData) and isinstance(atlas, shadows.AnnDataShadow)
    expected = oracle(paths, **options)
    assert atlas.shape == expected.shape
    check_same(atlas_memory(atlas), expected)


@pytest.mark.parametrize("join", ["inner", "outer"])
@pytest.mark.parametrize("which", ["sparse_set", "dense_set"])
def test_views_equal_anndata_views(which, join, request):
    paths = request.getfixturevalue(which)
    atlas = shadows.concat(paths, join=join, label="batch", index_unique="-")
    expected = oracle(paths, join=join, label="batch", index_unique="-")
    rng = np.random.default_rng(3)
    cells = rng.permutation(atlas.n_obs)[: atlas.n_obs // 3]  # unsorted, from some files only
    genes = rng.permutation(atlas.n_vars)[: max(2, atlas.n_vars // 2)]
    repeated = np.concatenate([genes[:2], genes[:2]])  # a gene asked twice: each source's column read twice
    for key in [(cells,), (slice(None), genes), (cells, genes), (slice(2, None, 3), genes[:3]), (cells, repeated)]:
        view = atlas[key]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = expected[key].copy()
        check_same(atlas_memory(view), want)
        got_x = view.X
        assert_equal(got_x, want.X)


def test_attributes_read_alone(sparse_set):
    atlas = shadows.concat(sparse_set, join="outer", label="batch")
    expected = oracle(sparse_set, join="outer", label="batch")
    assert_equal(atlas.X, expected.X)
    pd.testing.assert_frame_equal(atlas.obs, expected.obs)
    pd.testing.assert_frame_equal(atlas.var, expected.var)
    np.testing.assert_array_equal(atlas.obsm["X_pca"], expected.obsm["X_pca"])
    assert_equal(atlas.layers["counts"], expected.layers["counts"])
    np.testing.assert_array_equal(np.asarray(atlas.obs_vector("cell_type")),
                                  np.asarray(expected.obs_vector("cell_type")))
    gene = expected.var_names[4]
    np.testing.assert_array_equal(atlas.obs_vector(gene), expected.obs_vector(gene))
    assert list(atlas.obs.columns) == list(expected.obs.columns)


def test_measured_matrix(sparse_set):
    """varm["shadows_measured"]: genes × sources, True where the source measured the gene; kept by views
    and exports.
    """
    atlas = shadows.concat(sparse_set, join="outer")
    measured = atlas.varm[MEASURED_KEY]
    assert measured.shape == (atlas.n_vars, len(sparse_set))
    for j, path in enumerate(sparse_set):
        panel = set(_read(path).var_names)
        assert set(atlas.var_names[measured[:, j].toarray().ravel()]) == panel
    view = atlas[:5, 3:9]
    assert_equal(view.varm[MEASURED_KEY], measured[3:9])


def test_reads_of_an_atlas_hold_its_sources_and_leave_nothing_else_open(sparse_set):
    """Every read counts itself in on the handle of the file it reads (so the handle is not closed under
    it); the atlas's own reference names no file, and its reads keep no entry for it."""
    from shadows.backends import registry

    atlas = shadows.concat(sparse_set, join="outer")
    np.testing.assert_array_equal(atlas[::7].X.toarray(), oracle(sparse_set, join="outer")[::7].X.toarray())
    open_paths = {entry[0] for entry in registry.open_paths()}
    assert atlas._elements.ref.path not in open_paths
    assert open_paths & {str(p.absolute()) for p in sparse_set}


def test_opening_an_atlas_leaves_no_source_open(sparse_set):
    """The catalog reads each source's metadata once: its handle is closed after (a thousand sources held
    open took 1.5 GB of HDF5 metadata caches and as many descriptors); a shadow of a source keeps its own."""
    from shadows.backends import registry

    paths = [str(p.absolute()) for p in sparse_set]
    for path in paths:
        registry.release(path)  # what read tasks of earlier tests keep open

    held = shadows.read_h5ad(sparse_set[0])
    shadows.concat(sparse_set, join="outer")
    assert _open_sources(paths) == [paths[0]]
    held.close()
    assert _open_sources(paths) == []


def test_reads_keep_at_most_idle_files_sources_open(sparse_set):
    """Read tasks keep the sources they read open for the reads to come, but past
    ``settings.idle_files`` the least recently read are closed (a thousand-file atlas held a descriptor
    and a metadata cache per source it ever read); a source a shadow holds is never closed for it, and
    reads after the closes read the same values."""
    from shadows.backends import registry

    paths = [str(p.absolute()) for p in sparse_set]
    for path in paths:
        registry.release(path)

    expected = oracle(sparse_set, join="outer").X.toarray()
    held = shadows.read_h5ad(sparse_set[0])
    atlas = shadows.concat(sparse_set, join="outer")
    with shadows.settings.override(idle_files=1):
        for _ in range(2):
            for start in range(len(expected)):  # one row at a time: the sources are read one after another
                np.testing.assert_array_equal(atlas[start:start + 1].X.toarray(), expected[start:start + 1])
            assert paths[0] in _open_sources(paths)
            # the held source, and at most the limit and a half past it (of 7)
            assert len(_open_sources(paths)) <= 1 + 2
    held.close()


def test_an_export_reads_each_source_once_and_keeps_few_open(sparse_set, tmp_path, monkeypatch):
    """An export of a view over every source reads each source's arrays once (their non-zeros were counted
    by reading every block before writing them), visits each source once for obs (index and all columns),
    and keeps at most ``EXPORT_IDLE_FILES`` sources open (each open HDF5 file holds about 1.5 MB)."""
    from shadows.backends import registry
    from shadows.collection import arrays, frames
    from shadows.writing import export

    paths = [str(p.absolute()) for p in sparse_set]
    for path in paths:
        registry.release(path)
    x_reads, obs_visits, most_open = Counter(), Counter(), [0]
    read_block, source_element = arrays.read_block, frames.source_element

    def counted_block(ref, identity, rel, *args):
        x_reads[ref.full_path, rel] += 1
        most_open[0] = max(most_open[0], len(_open_sources(paths)))
        return read_block(ref, identity, rel, *args)

    def counted_element(source, rel):
        obs_visits[source.ref.full_path] += 1
        return source_element(source, rel)

    monkeypatch.setattr(arrays, "read_block", counted_block)
    monkeypatch.setattr(frames, "source_element", counted_element)
    monkeypatch.setattr(export, "EXPORT_IDLE_FILES", 2)
    atlas = shadows.concat(sparse_set, join="outer")
    view = atlas[::2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oracle(sparse_set, join="outer")[::2].write_h5ad(tmp_path / "want.h5ad")  # as anndata writes it
    expected = ad.read_h5ad(tmp_path / "want.h5ad")
    for target in (tmp_path / "v.h5ad", tmp_path / "v.zarr"):
        x_reads.clear(), obs_visits.clear()
        (view.write_h5ad if target.suffix == ".h5ad" else view.write_zarr)(target)
        read = {path for path, rel in x_reads if rel == "X"}
        assert len(read) >= len(paths) - 1 and set(x_reads.values()) == {1}  # each array of each source once
        assert set(obs_visits) == read and set(obs_visits.values()) == {1}
        back = ad.read_h5ad(target) if target.suffix == ".h5ad" else ad.read_zarr(target)
        assert_equal(back.X, expected.X)
        pd.testing.assert_frame_equal(back.obs, expected.obs)
    # the limit, half of it more before the open ones are counted again, and the two being read (two
    # threads): fewer than the sources (without the limit, every source read stays open)
    assert most_open[0] <= 2 + 1 + 2 < len(paths)


def test_small_reads_of_local_hdf5_sources_run_in_the_calling_thread(sparse_set, monkeypatch):
    """h5py makes one call at a time per process: dask's threads only take turns on small reads of HDF5
    files, so those run in the calling thread; a scheduler the user chose, or a Zarr source, keeps dask's."""
    import threading

    import dask

    threads: set[int] = set()
    read_block = atlas_arrays.read_block

    def recording(*args):
        threads.add(threading.get_ident())
        return read_block(*args)

    monkeypatch.setattr(atlas_arrays, "read_block", recording)
    h5ad = [p for p in sparse_set if p.suffix == ".h5ad"]
    expected = oracle(h5ad, join="outer")
    atlas = shadows.concat(h5ad, join="outer")
    np.testing.assert_array_equal(atlas[::2].X.toarray(), expected[::2].X.toarray())
    assert threads == {threading.get_ident()}
    mixed = shadows.concat(sparse_set, join="outer")
    threads.clear()
    with dask.config.set(scheduler="threads", num_workers=2):
        np.testing.assert_array_equal(atlas[::2].X.toarray(), expected[::2].X.toarray())
    with dask.config.set(num_workers=2):
        assert mixed[::2].X.shape[0] == (mixed.n_obs + 1) // 2
    assert threading.get_ident() not in threads


def test_view_opens_only_selected_files(sparse_set, monkeypatch):
    """A view's X and obs read only the files with selected rows, and only those rows."""
    atlas = shadows.concat(sparse_set, join="outer", label="batch")
    offsets = np.cumsum([0] + [_read(p).n_obs for p in sparse_set])
    opened: set[str] = set()
    rows_read: list[tuple[str, list[int]]] = []
    original_node = FileRef.node
    original_read = atlas_arrays.read_block

    def node(self, path):
        opened.add(self.path)
        return original_node(self, path)

    def read(ref, identity, rel, rows, *args):
        rows_read.append((ref.path, list(rows)))
        return original_read(ref, identity, rel, rows, *args)

    monkeypatch.setattr(FileRef, "node", node)
    monkeypatch.setattr(atlas_arrays, "read_block", read)
    cells = [offsets[1] + 1, offsets[4], offsets[4] + 2]  # rows of the second and fifth files
    view = atlas[cells]
    view.X  # noqa: B018
    view.obs  # noqa: B018
    view.layers["counts"]
    wanted = {str(sparse_set[1].absolute()), str(sparse_set[4].absolute())}
    assert opened == wanted
    second, fifth = (str(sparse_set[k].absolute()) for k in (1, 4))
    assert sorted(rows_read) == sorted([(second, [1]), (fifth, [0, 2])] * 2)  # X and the layer


def test_opening_reads_no_obs_index_and_no_x(sparse_set, monkeypatch):
    """Opening reads metadata only: no obs index, nothing of X (its arrays' metadata aside)."""
    looked_up: list[str] = []
    original_node = FileRef.node

    def node(self, path):
        looked_up.append(path)
        return original_node(self, path)

    monkeypatch.setattr(FileRef, "node", node)
    shadows.concat(sparse_set, join="outer")
    assert not any(p.startswith("obs/_index") or p.startswith("X/") for p in looked_up)


def test_catalog_round_trip_touches_no_source(sparse_set, tmp_path, monkeypatch):
    path = tmp_path / "atlas.catalog.json"
    first = shadows.concat(sparse_set, join="outer", catalog=path)
    assert path.exists() and path.stat().st_size < 20_000
    touched: list[str] = []
    monkeypatch.setattr(FileRef, "node", lambda self, p: touched.append(self.path))
    again = shadows.concat(sparse_set, join="outer", catalog=path)
    assert touched == []
    loaded = Catalog.load(path)
    assert [s.identity for s in loaded.sources] == [s.identity for s in first.catalog.sources]
    assert all(a.var_names.equals(b.var_names) for a, b in zip(loaded.sources, first.catalog.sources, strict=True))
    assert [s.obs_dtypes for s in loaded.sources] == [s.obs_dtypes for s in first.catalog.sources]
    assert shadows.concat(None, join="outer", catalog=path).n_obs == again.n_obs
    assert touched == []
    monkeypatch.undo()
    # a catalog of version 2 (each panel a list of names) still opens, to the same entries
    doc = json.loads(path.read_text())
    names = np.array(doc.pop("names"), dtype=object)
    doc["panels"] = [list(names[np.frombuffer(base64.b64decode(p), "<i4")]) for p in doc["panels"]]
    (tmp_path / "v2.json").write_text(json.dumps({**doc, "version": 2}))
    old = Catalog.load(tmp_path / "v2.json")
    assert all(a.var_names.equals(b.var_names) for a, b in zip(old.sources, loaded.sources, strict=True))
    assert [s.obs_dtypes for s in old.sources] == [s.obs_dtypes for s in loaded.sources]
    check_same(atlas_memory(again), oracle(sparse_set, join="outer"))
    fewer = shadows.concat(sparse_set[:3], join="outer", catalog=path)  # other sources: the catalog follows
    check_same(atlas_memory(fewer), oracle(sparse_set[:3], join="outer"))
    assert len(Catalog.load(path)) == 3
    check_same(atlas_memory(shadows.concat(loaded, join="inner")), oracle(sparse_set, join="inner"))


def test_changed_and_missing_sources_are_named(tmp_path):
    rng = np.random.default_rng(0)
    paths = [write(_make(rng, i, 4, "csr"), tmp_path / f"a{i}.h5ad", "h5ad") for i in range(3)]
    catalog = tmp_path / "c.json"
    shadows.concat(paths, catalog=catalog)
    replacement = _make(np.random.default_rng(9), 1, 6, "csr")
    write(replacement, tmp_path / "new.h5ad", "h5ad")
    os.replace(tmp_path / "new.h5ad", paths[1])  # changed after the catalog was written
    atlas = shadows.concat(paths, catalog=catalog)  # opening from the catalog touches nothing
    assert atlas.n_obs == 12
    atlas[:4].X  # noqa: B018  (the first file is unchanged)
    with pytest.raises(shadows.SourceChangedError, match=r"a1\.h5ad"):
        atlas[4:6].X  # noqa: B018
    with pytest.raises(shadows.SourceChangedError, match=r"a1\.h5ad"):
        Catalog.load(catalog).check()  # every source's identity, checked at once
    refreshed = shadows.concat(paths, catalog=catalog, on_change="refresh")
    Catalog.load(catalog).check()  # the refreshed catalog was written back
    assert refreshed.n_obs == 14
    check_same(atlas_memory(refreshed), oracle(paths))
    paths[2].unlink()
    with pytest.raises(shadows.SourceMissingError, match=r"a2\.h5ad"):
        refreshed[-1:].X  # noqa: B018
    with pytest.raises(shadows.ShadowsError, match=r"a2\.h5ad"):
        shadows.concat(paths)


def test_a_source_held_for_writing_in_the_process_reads_until_it_is_written(tmp_path):
    """HDF5 rewrites the superblock of a file open for writing (its time and size move) whenever a handle
    of it is flushed or closed: reading such a source is not a change (it used to raise
    SourceChangedError at the atlas's first read); the holder's write is, and is named."""
    rng = np.random.default_rng(3)
    paths = [write(_make(rng, i, 5, "csr"), tmp_path / f"h{i}.h5ad", "h5ad") for i in range(3)]
    catalog = tmp_path / "c.json"
    shadows.concat(paths, join="outer", catalog=catalog)  # identities read before the writer opens
    writer = shadows.AnnDataShadow(paths[0], mode="r+")
    atlas = shadows.concat(paths, join="outer")
    check_same(atlas_memory(atlas[:7]), oracle(paths, join="outer")[:7].copy())
    from_catalog = shadows.concat(paths, join="outer", catalog=catalog)
    check_same(atlas_memory(from_catalog[:7]), oracle(paths, join="outer")[:7].copy())
    writer.obs["new"] = np.arange(writer.n_obs)
    writer.write()
    with pytest.raises(shadows.SourceChangedError, match=r"h0\.h5ad"):
        atlas[:2].obs  # noqa: B018
    after = shadows.concat(paths, join="outer")  # opened after the write, while the writer still holds it
    writer.close()
    check_same(atlas_memory(after), oracle(paths, join="outer"))
    assert list(after.obs["new"][:5]) == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_unreadable_source_and_duplicate_genes_are_named(tmp_path):
    rng = np.random.default_rng(1)
    good = write(_make(rng, 0, 4, "csr"), tmp_path / "good.h5ad", "h5ad")
    bad = tmp_path / "bad.h5ad"
    bad.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(shadows.ShadowsError, match=r"bad\.h5ad"):
        shadows.concat([good, bad])
    dup = _make(rng, 1, 4, "csr")
    dup.var_names = ["g00"] * 2 + list(dup.var_names[2:])
    dup_path = write(dup, tmp_path / "dup.h5ad", "h5ad")
    with pytest.raises(MalformedElementError, match=r"dup\.h5ad.*not unique"):
        shadows.concat([good, dup_path])


def test_many_local_hdf5_sources_are_read_in_worker_processes(sparse_set, tmp_path, monkeypatch):
    """Past PROCESS_MIN_SOURCES local HDF5 sources, their metadata is read by worker processes (h5py reads
    one call at a time in a process), Zarr ones in threads meanwhile: the same catalog, in order; a bad
    source's error comes back from its worker naming it."""
    from shadows.collection import catalog

    monkeypatch.setattr(catalog, "PROCESS_MIN_SOURCES", 2)
    monkeypatch.setattr(catalog, "PROCESS_BATCH", 4)
    monkeypatch.setattr(catalog.os, "cpu_count", lambda: 2)
    h5ad = [p for p in sparse_set if p.suffix == ".h5ad"]
    mixed = h5ad * 10 + [p for p in sparse_set if p.suffix != ".h5ad"]  # 30 local HDF5 sources
    import joblib

    workers, parallel = [], joblib.Parallel

    def counting(*args, **kwargs):
        workers.append(kwargs.get("n_jobs"))
        return parallel(*args, **kwargs)

    monkeypatch.setattr(joblib, "Parallel", counting)
    got = catalog.Catalog.build(mixed)
    expected = [catalog.read_source(r) for r, _ in catalog.expand(mixed)]
    assert workers == [2]
    assert [s.ref.path for s in got.sources] == [s.ref.path for s in expected]
    for a, b in zip(got.sources, expected, strict=True):
        assert (a.n_obs, list(a.var_names), a.obs_dtypes, a.arrays) == (b.n_obs, list(b.var_names), b.obs_dtypes,
                                                                          b.arrays)
    bad = tmp_path / "bad.h5ad"
    bad.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(shadows.ShadowsError, match=r"bad\.h5ad"):
        catalog.Catalog.build(h5ad * 10 + [bad])


def test_sources_globs_shadows_and_errors(sparse_set):
    root = sparse_set[0].parent
    by_glob = shadows.concat(str(root / "s*"))
    assert by_glob.sources == sorted(str(p.absolute()) for p in sparse_set)
    one = shadows.read(sparse_set[0])
    mixed = shadows.concat([one, sparse_set[1]])
    assert mixed.n_obs == one.n_obs + _read(sparse_set[1]).n_obs
    edited = shadows.read(sparse_set[1])
    edited.obs["new"] = 1
    with pytest.raises(ValueError, match=r"s1\.zarr.*obs.*write\(\)"):
        shadows.concat([one, edited])
    with pytest.raises(shadows.ShadowsFileNotFoundError, match="nothing-here"):
        shadows.concat(str(root / "nothing-here*"))


def _view_keys(rng: np.random.Generator, adata: ad.AnnData, i: int) -> tuple[object, object]:
    """A row and a gene selection of one file, of every kind a user writes (or the whole file)."""
    n = adata.n_obs
    rows = [slice(None), rng.random(n) < 0.6, slice(None, None, -2), rng.permutation(n)[: max(0, n - 2)],
            slice(1, None)][i % 5]
    genes = list(adata.var_names)
    kept = [g for g in genes if g in CORE or rng.random() < 0.5]
    cols = [slice(None), list(rng.permutation(kept)), slice(None), np.arange(len(genes))[::-1], kept][i % 5]
    return rows, cols


@pytest.mark.parametrize("join", ["inner", "outer"])
@pytest.mark.parametrize("which", ["sparse_set", "dense_set"])
def test_views_as_sources_equal_anndata_concat_of_anndata_views(which, join, request, tmp_path):
    """Views of shadows given as sources: each keeps its rows (any order) and genes, with the categories
    its rows use, as anndata's views of the files do; for the atlas, views of it, and a catalog saved
    and loaded again.
    """
    paths = request.getfixturevalue(which)
    rng = np.random.default_rng(3)
    keys = [_view_keys(rng, _read(p), i) for i, p in enumerate(paths)]
    views = [shadows.read(p)[k] for p, k in zip(paths, keys, strict=True)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = ad.concat([_read(p)[k] for p, k in zip(paths, keys, strict=True)], join=join, label="batch",
                             index_unique="-")
    saved = tmp_path / "views.catalog.json"
    atlas = shadows.concat(views, join=join, label="batch", index_unique="-", catalog=saved)
    assert atlas.shape == expected.shape
    check_same(atlas_memory(atlas), expected)
    cells = np.sort(rng.choice(atlas.n_obs, size=min(9, atlas.n_obs), replace=False))
    genes = np.arange(0, atlas.n_vars, 2)
    check_same(atlas_memory(atlas[cells, genes]), expected[cells].copy()[:, genes])
    # the catalog keeps each view's subset: reopened without a view given, it reads the same
    again = shadows.concat(None, join=join, label="batch", index_unique="-", catalog=saved)
    check_same(atlas_memory(again), expected)
    assert json.loads(saved.read_text())["version"] == 3
    # the same file given whole and as a view: two sources, matched by their subsets in the catalog
    both = shadows.concat([paths[0], views[0]], catalog=tmp_path / "both.json")
    assert both.n_obs == _read(paths[0]).n_obs + views[0].n_obs
    assert shadows.concat([paths[0], views[0]], catalog=tmp_path / "both.json").n_obs == both.n_obs


def test_read_only_and_exports(sparse_set, tmp_path):
    atlas = shadows.concat(sparse_set, join="outer", label="batch", index_unique="-")
    before = [file_digest(p) for p in sparse_set if p.suffix == ".h5ad"]
    atlas.write()  # nothing changed: nothing written (write-back: test_collection_writeback)
    assert [file_digest(p) for p in sparse_set if p.suffix == ".h5ad"] == before
    with pytest.raises(ReadOnlyError, match="no file to reopen"):
        atlas.reopen("r+")
    expected = oracle(sparse_set, join="outer", label="batch", index_unique="-")
    cells = np.array([0, 3, 5, 12, 20, atlas.n_obs - 1])
    view = atlas[cells, 2:20]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = expected[cells, 2:20].copy()
        want.write_h5ad(tmp_path / "want.h5ad")  # what anndata's own export of its concat reads back as
        want = ad.read_h5ad(tmp_path / "want.h5ad")
        view.write_h5ad(tmp_path / "v.h5ad")
        view.write_zarr(tmp_path / "v.zarr")
        copied = view.copy(tmp_path / "copy.h5ad")
        assert type(copied) is shadows.AnnDataShadow
        for back in (ad.read_h5ad(tmp_path / "v.h5ad"), ad.read_zarr(tmp_path / "v.zarr"), copied.to_memory()):
            assert_equal(back.varm[MEASURED_KEY], atlas.varm[MEASURED_KEY][2:20])
            del back.varm[MEASURED_KEY]
            check_same(back, want)


def test_obs_filter_and_pickle(sparse_set, monkeypatch):
    """An obs filter reads the sources' columns; of a categorical, the codes alone (its categories are
    the catalog's: no file's categories are read again)."""
    from shadows.elements.categorical import CategoricalSpec

    atlas = shadows.concat(sparse_set, join="outer", label="batch")
    expected = oracle(sparse_set, join="outer", label="batch")
    categories_read = []
    categories = CategoricalSpec.categories
    monkeypatch.setattr(CategoricalSpec, "categories", lambda self: categories_read.append(self) or categories(self))
    assert_equal(atlas.obs_vector("cell_type"), expected.obs_vector("cell_type"))
    assert categories_read == []
    mask = (atlas.obs["cell_type"] == "T").to_numpy()
    view = atlas[mask]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_same(atlas_memory(view), expected[mask].copy())
    again = pickle.loads(pickle.dumps(view))
    assert isinstance(again, AtlasShadow) and again.is_view
    assert_equal(again.X, view.X)


@pytest.mark.parametrize("merge", [None, "same", "unique", "first", "only"])
def test_merge_strategies(tmp_path_factory, merge):
    root = tmp_path_factory.mktemp(f"merge_{merge}")
    rng = np.random.default_rng(5)
    paths = []
    for i in range(3):
        adata = _make(rng, i, 4, "csr")
        adata.var["gene_id"] = [f"E{g}" for g in adata.var_names]  # the same for a gene in every file
        adata.var["file"] = i  # differs between files
        if i == 0:
            adata.var["only_first"] = "x"
        adata.uns = {"shared": 1, "varies": i, "nested": {"same": "s", "own": i}, f"key{i}": [i, i]}
        paths.append(write(adata, root / f"m{i}.h5ad", "h5ad"))
    for join in ("inner", "outer"):
        atlas = shadows.concat(paths, join=join, merge=merge, uns_merge=merge)
        expected = oracle(paths, join=join, merge=merge, uns_merge=merge)
        pd.testing.assert_frame_equal(atlas.var, expected.var)
        assert_equal(dict(atlas.uns), dict(expected.uns))


@pytest.mark.parametrize("join", ["inner", "outer"])
def test_every_atlas_element_answers_the_element_protocol(sparse_set, join):
    """Each element of an atlas (X, layers, obsm, obs and its columns, var), through the element protocol
    (``read_selection``, ``select_graph``, ``nbytes``) with the selections views make, agrees with the
    element of anndata.concat's result: the checks every stored element type passes.
    """
    from test_element_protocol import check_element, elements, oracle_value, selections

    atlas = shadows.concat(sparse_set, join=join, label="batch", index_unique="-")
    expected = oracle(sparse_set, join=join, label="batch", index_unique="-")
    checked = set()
    for rel, spec in elements(atlas):
        if rel == f"varm/{MEASURED_KEY}":
            continue
        value = oracle_value(expected, rel)
        axes = tuple(spec.shape[:1] if spec.role == "table" else spec.shape)  # a table's selection: rows
        for selection in selections(axes):
            check_element(spec, value, selection, rel)
        checked.add(rel.split("::")[0])
    assert {"X", "obs", "var", "layers/counts", "obsm/X_pca"} <= checked
    catalog = atlas.catalog
    for rel in ("X", "layers/counts", "obsm/X_pca"):
        spec = atlas._elements.layout.spec(rel)
        stored = [s.arrays[rel].nbytes if rel in s.arrays and s.n_obs else 0 for s in catalog.sources]
        assert spec.nbytes(()) == sum(stored)
        start = sum(s.n_obs for s in catalog.sources[:3])  # the rows of the fourth file: its bytes only
        assert spec.nbytes((range(start, start + catalog.sources[3].n_obs),)) == stored[3]
        assert spec.nbytes((range(0),)) == 0


def test_url_sources_and_globs_mixed_with_local_files(sparse_set, s3, tmp_path):
    """Zarr stores in S3 (named one by one and by a glob) beside local files: the atlas equals
    anndata.concat of the same files, a view reads, and a store changed in S3 is named on read."""
    options, fs = s3
    zarrs = [p for p in sparse_set if p.suffix == ".zarr"]
    for path in zarrs:
        fs.put(str(path), f"data/atlas/{path.name}", recursive=True)
    urls = [f"s3://data/atlas/{p.name}" for p in zarrs]
    local = [p for p in sparse_set if p.suffix != ".zarr"]
    atlas = shadows.concat([*urls, *local], join="outer", label="batch", storage_options=options)
    expected = oracle([*zarrs, *local], join="outer", label="batch")
    check_same(atlas_memory(atlas), expected)
    check_same(atlas_memory(atlas[1:9, ::2]), expected[1:9, ::2].copy())
    globbed = shadows.concat("s3://data/atlas/*.zarr", join="inner", storage_options=options)
    check_same(atlas_memory(globbed), oracle(sorted(zarrs, key=lambda p: p.name), join="inner"))
    catalog = tmp_path / "url.catalog.json"
    shadows.concat(urls, join="outer", storage_options=options, catalog=catalog)
    changed = zarrs[0].name
    root = f"data/atlas/{changed}/" + ("zarr.json" if fs.exists(f"data/atlas/{changed}/zarr.json") else ".zattrs")
    fs.pipe(root, fs.cat(root) + b" ")  # rewritten (as a writer would): a new version of the root's metadata
    # a URL found unchanged is not asked again in a process: the catalog is reopened in a new one
    script = """
import json, sys, shadows
urls, options, catalog = json.loads(sys.argv[1])
atlas = shadows.concat(urls, join="outer", storage_options=options, catalog=catalog)  # touches no source
atlas[-1:].X  # the last store is unchanged
try:
    atlas.X
except shadows.SourceChangedError as error:
    print(error)
"""
    code, out, err = fork_server().run(script, json.dumps([urls, options, str(catalog)]))
    assert code == 0, err
    assert changed in out and "changed since the atlas's catalog was written" in out
