"""Caching is persist: first access keeps the value (ᐁ); clear_cache frees it."""

from __future__ import annotations

import gc
import tracemalloc

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from conftest import read_oracle, write
from shadows import AnnDataShadow


def test_first_access_caches_and_marks(path):
    shadow = AnnDataShadow(path)
    assert "Xᐁ" not in repr(shadow)
    x = shadow.X
    assert shadow.X is x  # the same object: computed once
    assert "  Xᐁ" in repr(shadow)
    _ = shadow.obsm["X_pca"]
    assert "X_pcaᐁ" in repr(shadow.obsm) and repr(shadow.obsm).startswith("obsm:\t")
    shadow.clear_cache()
    assert "ᐁ" not in repr(shadow)


def test_clear_cache_frees_memory(tmp_path):
    layer = np.random.default_rng(0).normal(size=(4000, 500))  # 16 MB
    adata = ad.AnnData(sp.random(4000, 500, density=0.01, format="csr", dtype=np.float32), layers={"big": layer})
    path = write(adata, tmp_path / "big.h5ad", "h5ad")
    shadow = AnnDataShadow(path)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        _ = shadow.layers["big"]
        del _
        held = tracemalloc.get_traced_memory()[0] - before
        shadow.clear_cache()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held >= layer.nbytes
    assert after < layer.nbytes / 10, (held, after)


def test_persist_dask_backend(path):
    lazy = AnnDataShadow(path, array_backend="dask")
    assert "Xᐁ" not in repr(lazy)
    lazy.persist("X", "obsm/X_pca")
    assert "  Xᐁ" in repr(lazy) and "X_pcaᐁ" in repr(lazy.obsm)
    persisted = lazy.X
    assert len(persisted.dask) == persisted.npartitions  # only in-memory chunks remain
    lazy.clear_cache()
    assert "ᐁ" not in repr(lazy)


def test_staged_assignment_is_marked(path):
    shadow = AnnDataShadow(path)
    shadow.obsm["X_new"] = np.zeros((shadow.n_obs, 2))
    assert "X_new▲" in repr(shadow)
    import pytest

    with pytest.raises(ValueError, match=r"obsm\['bad'\]: expected leading dimensions \(60,\)"):
        shadow.obsm["bad"] = np.zeros((3, 2))


def test_obs_assignments_are_staged_and_survive_clear_cache(path):
    import pandas as pd

    shadow = AnnDataShadow(path)
    expected = read_oracle(path)
    shadow.obs["score"] = np.arange(shadow.n_obs, dtype=np.float32)
    shadow.obs[["a", "b"]] = pd.DataFrame({"a": 1, "b": "x"}, index=shadow.obs_names)  # as calculate_qc_metrics
    line = next(line for line in repr(shadow).split("\n") if line.startswith("  obs:"))
    assert line.endswith("score▲, a▲, b▲"), line
    shadow.clear_cache()
    assert list(shadow.obs.columns) == [*expected.obs.columns, "score", "a", "b"]
    assert shadow.obs_keys()[-3:] == ["score", "a", "b"]
    np.testing.assert_array_equal(shadow.obs_vector("score"), np.arange(shadow.n_obs, dtype=np.float32))
    # replacing obs as a whole stages what differs (deleted columns too)
    frame = shadow.obs.copy()
    frame["float"] = 0.0
    del frame["a"]
    shadow.obs = frame
    line = next(line for line in repr(shadow).split("\n") if line.startswith("  obs:"))
    assert {name[:-1] for name in line.split("\t")[1].split(", ") if name.endswith("▲")} == {"score", "b", "float"}
    shadow.obs = frame.drop(columns="cat")
    assert "cat" not in shadow.obs and "cat" not in shadow.obs_keys()
    assert shadow._elements.deleted_columns("obs") == {"cat"}
    with pytest.raises(ValueError, match=r"obs\['bad'\]: expected 60 values \(one per row\), got 3"):
        shadow.obs["bad"] = [1, 2, 3]
    with pytest.raises(ValueError, match=r"expected 60 rows, got 3"):
        shadow.obs = frame.iloc[:3]
    # other names (as AnnData's setter takes them): obs is replaced whole (obs▲), names and all columns
    renamed = frame.set_axis([f"x{i}" for i in range(shadow.n_obs)])
    shadow.obs = renamed
    assert list(shadow.obs_names) == list(renamed.index) and shadow.obs_keys() == list(renamed.columns)
    assert shadow._elements.deleted_columns("obs") == set() and shadow.obs is renamed
    shadow.clear_cache()
    assert list(shadow.obs_names) == list(renamed.index)
    assert all(name.endswith("▲") for name in repr(shadow).split("\n")[3].split("\t")[1].split(", ")[1:])


def test_views_see_their_roots_staged_elements_sliced(path):
    import pandas as pd

    shadow = AnnDataShadow(path)
    embedding = np.arange(120.0).reshape(60, 2)
    graph = sp.random(60, 60, density=0.2, format="csr", random_state=0)
    shadow.obsm["emb"] = embedding
    shadow.obsp["graph"] = graph
    shadow.varm["load"] = np.arange(15.0)[:, None]
    shadow.obs["score"] = np.arange(60)
    shadow.uns["note"] = "kept"
    rows, cols = [40, 2, 7], slice(3, 9)
    view = shadow[rows, cols]
    np.testing.assert_array_equal(view.obsm["emb"], embedding[rows])
    assert (view.obsp["graph"] != graph[rows][:, rows]).nnz == 0
    np.testing.assert_array_equal(view.varm["load"][:, 0], np.arange(3.0, 9.0))
    np.testing.assert_array_equal(view.obs["score"].to_numpy(), np.array(rows))
    assert view.obs_vector("score").tolist() == rows and view.uns["note"] == "kept"
    assert "emb▲" in repr(view) and "score▲" in repr(view)
    assert isinstance(view.to_memory().obs, pd.DataFrame) and "emb" in view.to_memory().obsm
