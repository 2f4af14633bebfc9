"""Dask tasks of a Zarr v3 array stored in shards (anndata 0.13's layout): a task covers whole shards when
they fit in one, else whole inner chunks, so that no inner chunk is decoded by two tasks; and what the
tasks read is what anndata reads."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pytest
import zarr

from conftest import write
from shadows import AnnDataShadow, settings
from shadows.backends import handles
from shadows.elements import dense

INNER_ROWS, SHARD_ROWS = 300, 3000


@pytest.fixture(scope="module")
def sharded_obsm(tmp_path_factory):
    """6,000 × 64 float32 (1.5 MiB) in shards of 3,000 rows (750 KiB) of inner chunks of 300 rows."""
    x = np.random.default_rng(1).normal(size=(6_000, 64)).astype(np.float32)
    path = tmp_path_factory.mktemp("shards") / "obsm.zarr"
    write(ad.AnnData(obs={"n": np.arange(6_000)}), path, "zarr3")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        array = zarr.open_group(path / "obsm", mode="r+").create_array("emb", data=x, chunks=(INNER_ROWS, 64),
                                                                        shards=(SHARD_ROWS, 64))
        array.attrs.update({"encoding-type": "array", "encoding-version": "0.2.0"})
        zarr.consolidate_metadata(str(path))
    return path, x


@pytest.mark.parametrize("task_bytes", [64 * 2**20, 300 * 1024, 100 * 1024],
                         ids=["shards fit a task", "a shard is larger", "a few inner chunks per task"])
@pytest.mark.parametrize("zarrs", [True, False], ids=["zarrs", "zarr"])
def test_tasks_cover_whole_shards_or_whole_inner_chunks(sharded_obsm, monkeypatch, task_bytes, zarrs):
    path, x = sharded_obsm
    monkeypatch.setattr(dense, "TARGET_CHUNK_BYTES", task_bytes)
    handles.release(str(path))
    with settings.override(zarrs=zarrs):
        graph = AnnDataShadow(path, array_backend="dask").obsm["emb"]
        edges = np.cumsum((0, *graph.chunks[0]))
        unit = SHARD_ROWS if task_bytes >= SHARD_ROWS * 64 * 4 else INNER_ROWS
        assert len(graph.chunks[0]) > 1 or unit == SHARD_ROWS
        assert all(edge % unit == 0 for edge in edges[:-1]), graph.chunks[0]
        assert max(graph.chunks[0]) * 64 * 4 <= max(task_bytes, unit * 64 * 4)
        np.testing.assert_array_equal(graph.compute(), x)
        np.testing.assert_array_equal(AnnDataShadow(path).obsm["emb"], x)
    handles.release(str(path))


def test_tasks_of_a_zarr_csr_span_several_chunks_so_few_are_decoded_twice(tmp_path, monkeypatch):
    """Rows do not end at chunk edges: two neighbouring tasks both decode the chunk their boundary falls
    in. Whole-row tasks of a Zarr matrix span ``ZARR_CHUNKS_PER_TASK`` chunks of ``data`` at least, so a
    full pass decodes at most 1 + 1/ZARR_CHUNKS_PER_TASK times the chunks stored; tasks keeping one gene
    stay at the target size (their peak memory)."""
    import scipy.sparse as sp

    from helpers import count_reads, rechunk_sparse_x
    from shadows.elements import sparse

    x = sp.random(4_000, 30, density=0.2, format="csr", random_state=np.random.default_rng(2), dtype=np.float32)
    path = write(ad.AnnData(X=x), tmp_path / "chunks.zarr", "zarr2")
    rechunk_sparse_x(path, chunks=(500,))  # 48 chunks
    n_chunks = -(-x.nnz // 500)
    monkeypatch.setattr(sparse, "TARGET_NNZ_PER_TASK", 700)  # tasks of 700 non-zeros would decode 2-3 chunks
    handles.release(str(path))
    shadow = AnnDataShadow(path, array_backend="dask")
    whole, column = shadow.X, shadow[:, 5].X
    assert len(whole.chunks[0]) == pytest.approx(x.nnz / (sparse.ZARR_CHUNKS_PER_TASK * 500), abs=1)
    assert len(column.chunks[0]) == pytest.approx(x.nnz / 700, abs=1)
    with count_reads(monkeypatch) as reads:
        np.testing.assert_array_equal(whole.compute().toarray(), x.toarray())
    assert n_chunks <= reads["X/data"] <= n_chunks * (1 + 1 / sparse.ZARR_CHUNKS_PER_TASK) + 1, (reads, n_chunks)
    np.testing.assert_array_equal(column.compute().toarray(), x[:, [5]].toarray())
    handles.release(str(path))
