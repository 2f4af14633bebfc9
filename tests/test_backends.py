"""Backends: dask graphs with scipy chunks that plain dask and fast-array-utils consume; conversions."""

from __future__ import annotations

import pickle

import dask
import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp

from conftest import make_adata, read_oracle, write
from helpers import assert_value_equal
from shadows import AnnDataShadow


@pytest.fixture
def lazy_and_oracle(path):
    return AnnDataShadow(path, array_backend="dask"), read_oracle(path)


@pytest.mark.parametrize("key", ["X", "layers/counts_csc"])
def test_plain_dask_operations_on_sparse_chunks(lazy_and_oracle, key):
    lazy, oracle = lazy_and_oracle
    x = lazy.X if key == "X" else lazy.layers["counts_csc"]
    expected = oracle.X if key == "X" else oracle.layers["counts_csc"]
    assert isinstance(x, da.Array) and isinstance(x._meta, sp.spmatrix)
    dense = expected.toarray()
    np.testing.assert_allclose(x.sum(axis=0).compute(), dense.sum(axis=0), rtol=1e-6)
    np.testing.assert_allclose(x.sum(axis=1).compute(), dense.sum(axis=1), rtol=1e-6)
    np.testing.assert_allclose(x.sum().compute(), dense.sum(), rtol=1e-6)
    np.testing.assert_allclose(x.mean(axis=0).compute(), dense.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(x.max(axis=0).compute(), dense.max(axis=0))
    np.testing.assert_allclose(x.min(axis=1).compute(), dense.min(axis=1))
    log = np.log1p(x)
    assert isinstance(log, da.Array)
    np.testing.assert_allclose(log.compute().toarray(), np.log1p(dense), rtol=1e-6)
    np.testing.assert_array_equal(x[:, 3].compute(), dense[:, 3])
    np.testing.assert_array_equal(x[7].compute(), dense[7])
    np.testing.assert_array_equal(x[5:20].compute().toarray(), dense[5:20])
    np.testing.assert_array_equal(x[:, 2:9].compute().toarray(), dense[:, 2:9])


def test_fast_array_utils_stats(lazy_and_oracle):
    stats = pytest.importorskip("fast_array_utils.stats")
    lazy, oracle = lazy_and_oracle
    dense = oracle.X.toarray()
    np.testing.assert_allclose(np.asarray(stats.sum(lazy.X, axis=0).compute()), dense.sum(axis=0), rtol=1e-6)
    mean, var = stats.mean_var(lazy.X, axis=0)
    expected_mean, expected_var = stats.mean_var(oracle.X, axis=0)  # the library on in-memory scipy
    np.testing.assert_allclose(np.asarray(mean.compute()), expected_mean, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(var.compute()), expected_var, rtol=1e-4)


def test_many_chunks_sum(tmp_path, monkeypatch):
    """Force several tasks per matrix: results stay equal to scipy's."""
    import shadows.elements.sparse as sparse_module

    monkeypatch.setattr(sparse_module, "TARGET_NNZ_PER_TASK", 50)
    path = write(make_adata(n_obs=300, n_vars=40), tmp_path / "many.h5ad", "h5ad")
    lazy = AnnDataShadow(path, array_backend="dask")
    assert lazy.X.numblocks[0] > 5
    expected = read_oracle(path).X
    np.testing.assert_allclose(lazy.X.sum(axis=0).compute(), np.asarray(expected.sum(axis=0)).ravel(), rtol=1e-6)
    assert (sp.csr_matrix(lazy.X.compute()) != expected).nnz == 0
    numpy_shadow = AnnDataShadow(path)
    assert type(numpy_shadow.X) is sp.csr_matrix and (expected != numpy_shadow.X).nnz == 0


def test_graphs_pickle_and_run_in_another_process(files):
    """Every format's graphs, pickled, run in one pool of worker processes (one pool: starting one costs
    seconds) and give anndata's values.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    graphs, expected = [], []
    for path in files.values():
        lazy, oracle = AnnDataShadow(path, array_backend="dask", table_backend="dask"), read_oracle(path)
        graphs += [pickle.loads(pickle.dumps(g)) for g in (lazy.X, lazy.layers["dense"], lazy.obsm["X_pca"])]
        graphs.append(pickle.loads(pickle.dumps(lazy.obs))["float"])
        expected += [oracle.X, oracle.layers["dense"], oracle.obsm["X_pca"], oracle.obs["float"].to_numpy()]
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:  # jax: no fork
        results = [graph.compute(scheduler="processes", pool=pool) for graph in graphs]
    for got, want in zip(results, expected, strict=True):
        if sp.issparse(want):
            assert (sp.csr_matrix(got) != sp.csr_matrix(want)).nnz == 0
        else:
            np.testing.assert_array_equal(np.asarray(got), want)


def test_distributed_process_workers(files):
    distributed = pytest.importorskip("distributed")
    path = files["zarr3"]
    lazy = AnnDataShadow(path, array_backend="dask")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, distributed.Client(cluster):
        sums = lazy.X.sum(axis=0).compute()
    with dask.config.set(scheduler="threads"):
        np.testing.assert_allclose(sums, lazy.X.sum(axis=0).compute())


def test_shadow_pickles(path):
    """A pickled shadow (or view) opens the same file and keeps what it holds as changes (▲)."""
    shadow = AnnDataShadow(path)
    shadow.obsm["added"] = np.arange(120.0).reshape(60, 2)
    shadow.obs["added"] = np.arange(60)
    for subject in (shadow, shadow[3:9, 2:5]):
        restored = pickle.loads(pickle.dumps(subject))
        assert restored.shape == subject.shape and restored.filename == subject.filename
        assert restored.is_view == subject.is_view
        assert_value_equal(restored.X, subject.X, "X")
        assert_value_equal(restored.obs, subject.obs, "obs")
        np.testing.assert_array_equal(restored.obsm["added"], subject.obsm["added"])
        assert "added▲" in repr(restored)


def test_pydata_sparse_backend(path):
    sparse = pytest.importorskip("sparse")
    shadow = AnnDataShadow(path, array_backend="sparse")
    assert isinstance(shadow.X, sparse.SparseArray)
    np.testing.assert_array_equal(shadow.X.todense(), read_oracle(path).X.toarray())


@pytest.mark.parametrize("backend", ["polars", "pyarrow"])
def test_table_backends(path, backend):
    module = pytest.importorskip(backend)
    shadow = AnnDataShadow(path, table_backend=backend)
    obs = shadow.obs
    expected = read_oracle(path).obs
    if backend == "polars":
        assert isinstance(obs, module.DataFrame)
        np.testing.assert_array_equal(obs["float"].to_numpy(), expected["float"].to_numpy())
    else:
        assert isinstance(obs, module.Table)
        np.testing.assert_array_equal(obs.column("float").to_numpy(), expected["float"].to_numpy())
    assert obs.shape[0] == shadow.n_obs


def test_torch_backend(path):
    torch = pytest.importorskip("torch")  # CI installs the CPU wheel on Python 3.11
    shadow = AnnDataShadow(path, array_backend="torch")
    oracle = read_oracle(path)
    assert isinstance(shadow.layers["dense"], torch.Tensor)
    np.testing.assert_array_equal(shadow.layers["dense"].numpy(), oracle.layers["dense"])
    assert shadow.X.layout == torch.sparse_csr
    np.testing.assert_array_equal(shadow.X.to_dense().numpy(), oracle.X.toarray())


def test_jax_backend(path):
    jnp = pytest.importorskip("jax.numpy")
    shadow = AnnDataShadow(path, array_backend="jax")
    np.testing.assert_array_equal(np.asarray(shadow.layers["dense"]), read_oracle(path).layers["dense"])
    assert isinstance(shadow.layers["dense"], jnp.ndarray)


def test_scanpy_dask_functions(path):
    """scanpy's dask-aware preprocessing takes the sparse graphs and agrees with in-memory scipy."""
    sc = pytest.importorskip("scanpy")
    import anndata as ad

    lazy = AnnDataShadow(path, array_backend="dask")
    on_graph = ad.AnnData(X=lazy.X, obs=lazy.obs_names.to_frame(), var=lazy.var_names.to_frame())
    in_memory = ad.AnnData(X=read_oracle(path).X.copy(), obs=on_graph.obs.copy(), var=on_graph.var.copy())
    for adata in (on_graph, in_memory):
        sc.pp.normalize_total(adata, target_sum=1e4)
        sc.pp.log1p(adata)
    assert isinstance(on_graph.X, da.Array)
    np.testing.assert_allclose(on_graph.X.compute().toarray(), in_memory.X.toarray(), rtol=1e-5)
    hvg_graph = sc.pp.highly_variable_genes(on_graph, n_top_genes=5, inplace=False)
    hvg_memory = sc.pp.highly_variable_genes(in_memory, n_top_genes=5, inplace=False)
    np.testing.assert_array_equal(hvg_graph["highly_variable"].to_numpy(), hvg_memory["highly_variable"].to_numpy())


def test_chunks_keep_scipy_semantics_without_keepdims(lazy_and_oracle):
    lazy, _ = lazy_and_oracle
    chunk = lazy.X.blocks[0].compute()
    assert isinstance(chunk, sp.csr_matrix)
    assert isinstance(chunk.sum(axis=0), np.matrix)  # scipy's behaviour when keepdims is not passed
    assert chunk.sum(axis=(0,), keepdims=True).shape == (1, chunk.shape[1])
    assert chunk.sum(axis=1, keepdims=False).shape == (chunk.shape[0],)
