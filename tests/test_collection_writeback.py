"""``atlas.write()``: obs columns, obsm entries and layers computed on an atlas written back into its
sources, each source its own rows (a layer at the source's own genes, in its order), read back by anndata
file by file; every source checked before any is written; a failure midway lists what committed; on a
``distributed`` cluster of process workers, one task per source.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import shadows
from helpers import file_digest
from shadows.collection import writeback
from shadows.errors import ReadOnlyError
from test_collection import _read, _write_set, oracle


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> list[Path]:
    """h5ad and Zarr sources with sparse and dense X (copied by each test: they are written into)."""
    return _write_set(tmp_path_factory.mktemp("writeback"), 5, ["csr", "dense", "csc", "csr", "dense"])


@pytest.fixture
def sources(originals, tmp_path) -> list[Path]:
    copies = []
    for path in originals:
        target = tmp_path / path.name
        (shutil.copytree if path.is_dir() else shutil.copy)(path, target)
        copies.append(target)
    return copies


def _digests(paths: list[Path]) -> list[str]:
    return [file_digest(p) if p.is_file() else sorted(str(f.relative_to(p)) for f in p.rglob("*")) for p in paths]


def _dense(x) -> np.ndarray:
    return x.toarray() if sp.issparse(x) else np.asarray(x)


def test_results_computed_on_the_atlas_go_to_each_sources_rows(sources, tmp_path):
    catalog = tmp_path / "atlas.json"
    atlas = shadows.concat(sources, join="outer", catalog=catalog)
    n = atlas.n_obs
    rng = np.random.default_rng(0)
    score = rng.normal(size=n)
    group = pd.Categorical(rng.choice(["a", "b", "c"], n))
    embedding = rng.normal(size=(n, 2)).astype(np.float32)
    atlas.obs["result"] = score
    atlas.obs["group"] = group
    atlas.obsm["X_new"] = embedding
    atlas.layers["doubled"] = atlas.X * 2
    atlas.write()
    start = 0
    for path in sources:  # anndata reads each file: its rows of each result, the layer at its own genes
        adata = _read(path)
        rows = slice(start, start + adata.n_obs)
        start += adata.n_obs
        np.testing.assert_array_equal(adata.obs["result"].to_numpy(), score[rows])
        assert list(adata.obs["group"].astype(str)) == list(np.asarray(group)[rows].astype(str))
        np.testing.assert_array_equal(adata.obsm["X_new"], embedding[rows])
        np.testing.assert_allclose(_dense(adata.layers["doubled"]), _dense(adata.X) * 2, rtol=1e-6)
    # the atlas serves them from the files now (sources re-read; the catalog file rewritten)
    assert not atlas.obs_names.empty and "▲" not in repr(atlas)
    np.testing.assert_array_equal(atlas.obs["result"].to_numpy(), score)
    np.testing.assert_array_equal(atlas.obsm["X_new"], embedding)
    expected = oracle(sources, join="outer")
    np.testing.assert_allclose(_dense(atlas.layers["doubled"]), _dense(expected.layers["doubled"]))
    again = shadows.concat(sources, join="outer", catalog=catalog)  # touches no source
    np.testing.assert_array_equal(again.obs["result"].to_numpy(), score)


def test_nothing_is_written_when_any_source_cannot_take_its_part(sources):
    atlas = shadows.concat(sources, join="outer")
    before = _digests(sources)
    atlas.obsm["X_pca"] = np.zeros((atlas.n_obs, 3), dtype=np.float32)  # every source stores X_pca
    atlas.obs["fresh"] = 1.0
    with pytest.raises(shadows.AtlasWriteError, match="nothing was written") as caught:
        atlas.write()
    assert all(p.name in str(caught.value) for p in sources) and "overwrite" in str(caught.value)
    assert _digests(sources) == before
    atlas.write(overwrite=True)  # replaced when asked
    assert not _read(sources[0]).obsm["X_pca"].any()
    assert (_read(sources[-1]).obs["fresh"] == 1.0).all()


def test_changes_the_sources_cannot_store_are_refused_before_anything(sources):
    before = _digests(sources)
    atlas = shadows.concat(sources, join="outer")
    atlas.X = sp.csr_matrix(atlas.shape, dtype=np.float32)
    with pytest.raises(ReadOnlyError, match="X"):
        atlas.write()
    inner = shadows.concat(sources, join="inner")  # drops genes some sources measured
    inner.layers["doubled"] = inner.X * 2
    with pytest.raises(ReadOnlyError, match=r"lacks its genes.*join='outer'"):
        inner.write()
    viewed = shadows.concat([shadows.read(sources[0])[:2], sources[1]])
    viewed.obs["score"] = 1.0
    with pytest.raises(ReadOnlyError, match="views"):
        viewed.write()
    with pytest.raises(ReadOnlyError, match="view of an atlas"):
        atlas[:3].write()
    assert _digests(sources) == before


def test_a_source_failing_midway_is_named_with_what_committed(sources, monkeypatch):
    atlas = shadows.concat(sources, join="outer")
    atlas.obs["result"] = np.arange(atlas.n_obs, dtype=float)
    write_part = writeback.write_part

    def third_fails(part, futures=None, overwrite=False):
        if part.source.display.endswith(sources[2].name):
            raise OSError("disk on fire")
        return write_part(part, futures, overwrite)

    monkeypatch.setattr(writeback, "write_part", third_fails)
    with pytest.raises(shadows.AtlasWriteError, match="disk on fire") as caught:
        atlas.write()
    message = str(caught.value)
    committed = message.split("committed: ")[1].split("\n")[0]
    assert sources[0].name in committed and sources[1].name in committed and sources[3].name not in committed
    assert sources[3].name in message.split("not written: ")[1]
    assert "result" in _read(sources[1]).obs and "result" not in _read(sources[3]).obs
    # the atlas follows what the files store: the committed sources' rows are theirs now
    assert "result" in atlas.obs


def test_workers_of_a_cluster_write_the_sources_side_by_side(sources):
    distributed = pytest.importorskip("distributed")
    atlas = shadows.concat(sources, join="outer")
    atlas[:2].X  # noqa: B018 (this process reads some sources: its handles are let go before the workers write)
    rng = np.random.default_rng(1)
    score = rng.normal(size=atlas.n_obs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=None)
    with cluster, distributed.Client(cluster) as client:
        atlas.obs["result"] = score
        atlas.layers["doubled"] = atlas.X * 2
        atlas.write()
        written = client.run(lambda: True)
        assert len(written) == 2
    start = 0
    for path in sources:
        adata = _read(path)
        np.testing.assert_array_equal(adata.obs["result"].to_numpy(), score[start:start + adata.n_obs])
        np.testing.assert_allclose(_dense(adata.layers["doubled"]), _dense(adata.X) * 2, rtol=1e-6)
        start += adata.n_obs


def _slow(block):
    time.sleep(0.3)
    return block * 2


def test_a_worker_killed_while_writing_leaves_each_source_whole(sources, monkeypatch):
    """A worker killed while it writes a source: the task runs again elsewhere (the write completes) or
    the write fails naming the source; either way each source holds the new element whole, or not at all.
    """
    distributed = pytest.importorskip("distributed")
    atlas = shadows.concat(sources, join="outer", array_backend="dask")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=None)
        with cluster, distributed.Client(cluster) as client:
            atlas.obsm["slow"] = atlas.obsm["X_pca"].rechunk((3, -1)).map_blocks(_slow)  # ~1 s per source
            victim = next(iter(client.run(os.getpid).values()))
            killer = threading.Timer(1.0, os.kill, (victim, signal.SIGKILL))
            commit = writeback.commit

            def commit_then_kill(*args, **kwargs):  # the worker dies 1 s into the commit
                killer.start()
                return commit(*args, **kwargs)

            monkeypatch.setattr(writeback, "commit", commit_then_kill)
            started = time.perf_counter()
            try:
                atlas.write()
                failed = None
            except shadows.AtlasWriteError as error:
                failed = error
            finally:
                killer.join()
                took = time.perf_counter() - started
            assert victim not in client.run(os.getpid, on_error="ignore").values()  # killed (and replaced)
    print("killed worker", victim, f"write took {took:.1f} s:",
          "completed" if failed is None else f"failed: {failed!r}")
    for path in sources:
        adata = _read(path)
        if "slow" in adata.obsm:
            np.testing.assert_array_equal(adata.obsm["slow"], adata.obsm["X_pca"] * 2)
        else:
            assert failed is not None and path.name in str(failed), f"{path.name}: no element, and no error says so"
