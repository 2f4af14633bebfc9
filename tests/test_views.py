"""Views are graph slices: every element equals anndata's view of the same key, and views compose."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import read_oracle
from helpers import assert_shadow_matches, assert_value_equal
from shadows import AnnDataShadow

N_OBS, N_VARS = 60, 15


@functools.cache
def oracle_of(path):
    return read_oracle(path)


def axis_keys(n: int, names: list[str]):
    bound = st.integers(-n - 3, n + 3) | st.none()
    step = st.sampled_from([None, 1, 2, 3, -1, -2])
    slices = st.builds(slice, bound, bound, step)
    if n == 0:
        return st.one_of(slices, st.just(np.empty(0, dtype=np.int64)), st.just(np.zeros(0, dtype=bool)))
    ints = st.integers(-n, n - 1)
    positions = st.lists(st.integers(0, n - 1), unique=True, max_size=n)
    sorted_positions = positions.map(sorted).map(lambda p: np.array(p, dtype=np.int64))
    masks = st.lists(st.booleans(), min_size=n, max_size=n).map(np.array)
    series_masks = masks.map(pd.Series)
    name_lists = st.lists(st.sampled_from(names), unique=True, max_size=n)
    unsorted_positions = positions.map(lambda p: np.array(p, dtype=np.int64))
    return st.one_of(slices, ints, unsorted_positions, sorted_positions, masks, series_masks, name_lists,
                     name_lists.map(pd.Index), st.sampled_from(names))


def view_keys(n_obs: int, n_vars: int, obs_names: list[str], var_names: list[str]):
    obs = axis_keys(n_obs, obs_names)
    var = axis_keys(n_vars, var_names)
    return st.one_of(obs, st.tuples(obs, var))


def oracle_view(adata, key):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return adata[key]


OBS_NAMES = [f"cell{i}" for i in range(N_OBS)]
VAR_NAMES = [f"gene{i}" for i in range(N_VARS)]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=view_keys(N_OBS, N_VARS, OBS_NAMES, VAR_NAMES))
def test_view_matches_anndata_view(path, key):
    oracle = oracle_of(path)
    # anndata's own key semantics pick the positions; its view at those positions is the expectation
    # (given as two position arrays: some mixed keys, e.g. (array, slice with step), hit a scipy
    # reshape bug inside anndata's view of CSR X).
    expected = oracle_view(oracle, positions_of(oracle, key))
    view = AnnDataShadow(path)[key]
    assert view.is_view and type(view) is AnnDataShadow
    assert_shadow_matches(view, expected)


def positions_of(adata, key) -> tuple[np.ndarray, np.ndarray]:
    """The positions a key selects, by anndata's own key semantics on a frame of row numbers."""
    import anndata as ad

    numbers = ad.AnnData(obs=pd.DataFrame({"i": np.arange(adata.n_obs)}, index=adata.obs_names),
                         var=pd.DataFrame({"j": np.arange(adata.n_vars)}, index=adata.var_names))
    picked = oracle_view(numbers, key)
    return picked.obs["i"].to_numpy(), picked.var["j"].to_numpy()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_views_of_views_compose(path, data):
    """A view of a view equals anndata's view of the root at numpy's composition of both keys."""
    oracle = oracle_of(path)
    first = data.draw(view_keys(N_OBS, N_VARS, OBS_NAMES, VAR_NAMES))
    view1 = AnnDataShadow(path)[first]
    rows1, cols1 = positions_of(oracle, first)
    second = data.draw(view_keys(len(rows1), len(cols1), list(oracle.obs_names[rows1]),
                                 list(oracle.var_names[cols1])))
    view2 = view1[second]
    assert view2._elements.root is view1._elements.root  # a view keeps positions in the file, not a chain of views
    rows2, cols2 = positions_of(oracle[rows1, cols1], second)
    expected = oracle_view(oracle, (rows1[rows2], cols1[cols2]))  # numpy composes the positions
    assert_shadow_matches(view2, expected)


def test_three_levels_and_unsorted(path):
    oracle = oracle_of(path)
    shadow = AnnDataShadow(path)
    keys = [np.array([40, 3, 17, 8, 59, 0, 22]), (slice(None, None, -1), [3, 0, 7, 2]), (slice(1, None), "gene7")]
    view, rows, cols = shadow, np.arange(N_OBS), np.arange(N_VARS)
    for key in keys:
        view = view[key]
        picked_rows, picked_cols = positions_of(oracle[rows, cols], key)
        rows, cols = rows[picked_rows], cols[picked_cols]
        assert_shadow_matches(view, oracle_view(oracle, (rows, cols)))
    assert repr(view).startswith(f"View of AnnData Shadow object with n_obs × n_vars = {view.n_obs} × 1 "
                                 f"(original {N_OBS} × {N_VARS})")


def test_view_has_own_cache_and_repr(path):
    shadow = AnnDataShadow(path)
    view = shadow[:10]
    _ = view.X
    assert "  Xᐁ" in repr(view) and "  Xᐁ" not in repr(shadow)
    with pytest.raises(OSError, match="view"):
        view.write()
    view.obsm["new"] = np.zeros((10, 2))  # assigned to, the view becomes a shadow of its own (as in anndata)
    assert "new▲" in repr(view) and "new" not in shadow.obsm and not view.is_view
    view.clear_cache()
    assert "ᐁ" not in repr(view)
    with pytest.raises(OSError, match="subset in place"):
        view.write()  # its elements have the view's shape, not the file's


@pytest.mark.parametrize(
    "key,error,match",
    [
        (100, IndexError, "obs position 100 is out of range for 60 obs"),
        ((slice(None), 20), IndexError, "var position 20"),
        ("nope", KeyError, "not in obs_names: 'nope'"),
        ((slice(None), ["gene1", "GENE"]), KeyError, "not in var_names: 'GENE'"),
        (np.ones(5, dtype=bool), IndexError, "boolean obs mask has length 5"),
        (np.array([1, 70]), IndexError, r"obs positions out of range for 60 obs: \[70\]"),
        ((slice(None), slice(None), 1), IndexError, "2 axes"),
    ],
)
def test_bad_keys(path, key, error, match):
    from shadows import ShadowsError

    with pytest.raises(error, match=match) as info:
        AnnDataShadow(path)[key]
    assert isinstance(info.value, ShadowsError)


def test_building_a_view_reads_nothing(path, monkeypatch):
    from test_laziness import count_reads, data_reads

    shadow = AnnDataShadow(path)
    _ = shadow.obs_names, shadow.var_names  # names are read to resolve name keys; do it before counting
    with count_reads(monkeypatch) as reads:
        view = shadow[5:40:2, [3, 1, 4]][np.array([True, False] * 9)]
        repr(view)
        lazy = AnnDataShadow(path, array_backend="dask", table_backend="dask")[3:50]
        _ = lazy.X, lazy.layers["counts_csc"], lazy.obsm["X_pca"], lazy.obs, lazy.obsp["connectivities"]
    assert sum(data_reads(reads).values()) == 0, dict(reads)  # a dask obs knows its categories


def test_dask_backend_views(path):
    oracle = oracle_of(path)
    key = (np.array([9, 2, 30, 31, 32, 50]), slice(2, 12))
    view = AnnDataShadow(path, array_backend="dask", table_backend="dask")[key]
    expected = oracle_view(oracle, key)
    assert_value_equal(sp.csr_matrix(view.X.compute()), expected.X, "X")
    assert_value_equal(sp.csc_matrix(view.layers["counts_csc"].compute()), expected.layers["counts_csc"], "csc")
    np.testing.assert_array_equal(view.obsm["X_pca"].compute(), expected.obsm["X_pca"])
    np.testing.assert_array_equal(view.obs["float"].compute().to_numpy(), expected.obs["float"].to_numpy())
    assert list(view.obs.compute().index) == list(expected.obs_names)


def test_view_to_memory(path):
    key = (slice(5, 30), [0, 4, 9])
    memory = AnnDataShadow(path)[key].to_memory()
    expected = oracle_view(oracle_of(path), key)
    assert not memory.is_view and memory.shape == expected.shape
    assert_value_equal(memory.X, expected.X, "X")
    assert_value_equal(memory.obs, expected.obs, "obs")
