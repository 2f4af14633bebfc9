"""The xarray backends, with anndata as the oracle: ``array_backend="xarray"`` gives labelled DataArrays over
the shadow's dask graphs, ``table_backend="xarray"`` gives dataframes as read_lazy's Dataset2D.
"""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import xarray as xr

from conftest import read_oracle
from helpers import count_reads
from shadows import AnnDataShadow, read
from shadows.labelled import PushdownArray

pytest.importorskip("sparse")


def dense(value):
    """A DataArray's values (pydata sparse chunks densified) or a scipy/numpy oracle, as numpy."""
    value = value.data.compute() if isinstance(value, xr.DataArray) else value
    if hasattr(value, "todense") and not isinstance(value, np.ndarray):
        value = value.todense()
    return np.asarray(value)


@pytest.fixture(params=["shadow", "view"])
def pair(request, path):
    """(xarray-backed shadow or view of one, anndata's read of the same cells)."""
    oracle = read_oracle(path)
    shadow = AnnDataShadow(path, array_backend="xarray", table_backend="xarray")
    if request.param == "view":
        cells = oracle.obs_names[[7, 2, 30, 31, 50]]
        return shadow[cells, 1:12], oracle[cells, 1:12]
    return shadow, oracle


def test_matrices_are_labelled_data_arrays_over_pushdown_graphs(pair):
    shadow, oracle = pair
    checks = {"X": (oracle.X, ("obs", "var")), "layers/dense": (oracle.layers["dense"], ("obs", "var")),
              "layers/counts_csc": (oracle.layers["counts_csc"], ("obs", "var")),
              "obsm/X_pca": (oracle.obsm["X_pca"], ("obs", "X_pca")),
              "varm/PCs": (oracle.varm["PCs"], ("var", "PCs")),
              "obsp/connectivities": (oracle.obsp["connectivities"], ("obs_i", "obs_j")),
              "varp/corr": (oracle.varp["corr"], ("var_i", "var_j"))}
    for rel, (expected, dims) in checks.items():
        slot, _, key = rel.partition("/")
        got = getattr(shadow, slot) if not key else getattr(shadow, slot)[key]
        assert isinstance(got, xr.DataArray) and isinstance(got.data, PushdownArray), rel
        assert got.dims == dims, rel
        for dim in dims:
            if dim.startswith(("obs", "var")):
                names = oracle.obs_names if dim.startswith("obs") else oracle.var_names
                assert list(got.indexes[dim]) == list(names), (rel, dim)
        np.testing.assert_array_equal(dense(got), dense(expected), err_msg=rel)
    raw = shadow.raw.X
    assert raw.dims == ("obs", "var") and list(raw.indexes["var"]) == list(oracle.raw.var_names)
    np.testing.assert_array_equal(dense(raw), dense(oracle.raw.X))
    assert dense(shadow.uns["nested"]["level1"]["level2"]["array"]).tolist() == [[1, 1], [1, 1]]


def test_label_selection_gives_anndata_values_in_the_order_asked(pair):
    shadow, oracle = pair
    cells = list(oracle.obs_names[[3, 0, 2]])
    genes = list(oracle.var_names[[4, 1]])
    for slot in ("X", "layers"):
        got = shadow.X if slot == "X" else shadow.layers["counts_csc"]
        expected = oracle[cells, genes].X if slot == "X" else oracle[cells, genes].layers["counts_csc"]
        selected = got.sel(obs=cells, var=genes)
        assert isinstance(selected.data, PushdownArray)
        assert list(selected.indexes["obs"]) == cells and list(selected.indexes["var"]) == genes
        np.testing.assert_array_equal(dense(selected), dense(expected))
    np.testing.assert_array_equal(dense(shadow.X.isel(obs=1, var=slice(0, 3))), dense(oracle.X[1, :3]).ravel())
    np.testing.assert_array_equal(dense(shadow.obsm["X_pca"].isel(obs=[2, 0])), oracle.obsm["X_pca"][[2, 0]])


def test_positional_indexing_of_the_dask_array_plans_a_new_graph(path):
    shadow = AnnDataShadow(path, array_backend="xarray")
    data = shadow.X.data
    picked = data[np.array([5, 1])][:, 2:6]
    assert isinstance(picked, PushdownArray) and picked.name != data.name
    oracle = read_oracle(path)
    np.testing.assert_array_equal(dense(picked.compute()), oracle.X[[5, 1]][:, 2:6].toarray())
    np.testing.assert_array_equal(dense(data[3].compute()), oracle.X[3].toarray().ravel())
    with pytest.raises(NotImplementedError):  # numpy's pointwise keys are left to dask, which refuses them
        data[[1, 2], [3, 4]]


def test_tables_are_read_lazy_datasets(pair):
    shadow, oracle = pair
    from anndata.experimental.backed import Dataset2D

    for slot in ("obs", "var"):
        got, expected = getattr(shadow, slot), getattr(oracle, slot)
        assert isinstance(got, Dataset2D)
        assert list(got.index) == list(expected.index)
        assert list(got.keys()) == list(expected.columns)
        memory = got.ds.to_dataframe()
        for column in expected.columns:
            values = memory[column]
            assert values.dtype == expected[column].dtype or column == "string", (slot, column)
            pd.testing.assert_series_equal(values.reset_index(drop=True).astype(object),
                                           expected[column].reset_index(drop=True).astype(object),
                                           check_names=False, check_categorical=False)
    assert isinstance(shadow.obs.ds["float"].data, PushdownArray)
    frame = shadow.obsm["frame"]
    assert isinstance(frame, Dataset2D) and list(frame.index) == list(oracle.obsm["frame"].index)


def test_a_column_selection_reads_only_its_rows(path, monkeypatch):
    shadow, expected = AnnDataShadow(path, table_backend="xarray"), read_oracle(path).obs
    cells = list(expected.index[[10, 4]])
    obs = shadow.obs
    with count_reads(monkeypatch) as reads:
        picked = obs.ds["cat"].sel({obs.index_dim: cells}).values
    assert list(picked) == list(expected.loc[cells, "cat"])
    assert reads and all(key.startswith("obs/cat/") for key in reads), reads


def test_changes_in_memory_show_in_the_dataset(path):
    shadow = AnnDataShadow(path, table_backend="xarray")
    frame = shadow.element_value("obs")
    frame["new"] = np.arange(shadow.n_obs)
    frame = frame.drop(columns=["float"])
    shadow.obs = frame  # same names: column changes (▲), the rest stays on disk
    obs = shadow.obs
    assert "new" in obs and "float" not in obs
    assert obs.ds["new"].values.tolist() == list(range(shadow.n_obs))
    view = shadow[[4, 1]]
    assert view.obs.ds["new"].values.tolist() == [4, 1]


def test_persist_keeps_the_labelled_values(path):
    shadow = AnnDataShadow(path, array_backend="xarray", table_backend="xarray")
    shadow.persist("X", "obs")
    assert isinstance(shadow.X, xr.DataArray) and list(shadow.X.indexes["obs"]) == list(shadow.obs.index)


def test_sparse_without_pydata_sparse_names_what_to_install(path, monkeypatch):
    import sys

    from shadows import BackendUnavailableError

    monkeypatch.setitem(sys.modules, "sparse", None)
    shadow = read(path, array_backend="xarray")
    with pytest.raises(BackendUnavailableError, match=r"element 'X'.*pip install sparse"):
        _ = shadow.X
    assert shadow.obsm["X_pca"].dims == ("obs", "X_pca")  # dense arrays need no sparse


def test_xarray_backends_on_a_pre_0_7_file(pbmc_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oracle = ad.read_h5ad(pbmc_path)
    shadow = AnnDataShadow(pbmc_path, array_backend="xarray", table_backend="xarray")
    assert list(shadow.obs.keys()) == list(oracle.obs.columns)
    got = shadow.obs.ds[oracle.obs.columns[0]].values
    assert list(got) == list(oracle.obs.iloc[:, 0])
    cells = list(oracle.obs_names[:3])
    X = oracle.X.toarray() if sp.issparse(oracle.X) else oracle.X
    np.testing.assert_array_equal(dense(shadow.X.sel(obs=cells)), X[:3])
