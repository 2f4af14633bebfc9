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
