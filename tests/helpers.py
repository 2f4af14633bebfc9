"""Comparisons of shadows against anndata's reads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp


def _plain(expected: Any) -> Any:
    """anndata's view types (ArrayView, sparse and DataFrame views) as the plain types they wrap."""
    if isinstance(expected, pd.DataFrame) and type(expected) is not pd.DataFrame:
        return pd.DataFrame(expected)
    if sp.issparse(expected) and type(expected) not in (sp.csr_matrix, sp.csc_matrix):
        return (sp.csr_matrix if expected.format == "csr" else sp.csc_matrix)(expected)
    if isinstance(expected, np.ndarray) and type(expected) is not np.ndarray:
        return np.asarray(expected)
    return expected


def assert_value_equal(got: Any, expected: Any, where: str = "") -> None:
    """Equal type family, dtype and values (NaN-aware), recursively for mappings."""
    expected = _plain(expected)
    if isinstance(expected, Mapping):
        assert isinstance(got, Mapping), where
        got_keys = set(got.keys())
        assert got_keys == set(expected.keys()), (where, got_keys, set(expected.keys()))
        for key in expected:
            assert_value_equal(got[key], expected[key], f"{where}/{key}")
        return
    if isinstance(expected, pd.DataFrame):
        assert isinstance(got, pd.DataFrame), where
        pd.testing.assert_frame_equal(got, expected, check_exact=True, obj=where)
        assert got.index.name == expected.index.name, where
        return
    if isinstance(expected, pd.Series):
        pd.testing.assert_series_equal(got, expected, check_exact=True, obj=where)
        return
    if isinstance(expected, pd.Index):
        pd.testing.assert_index_equal(got, expected, exact=True, obj=where)
        return
    if sp.issparse(expected):
        assert sp.issparse(got), where
        assert type(got) is type(expected), (where, type(got), type(expected))
        assert got.dtype == expected.dtype, where
        assert got.shape == expected.shape, where
        assert (got != expected).nnz == 0, where
        return
    if isinstance(expected, np.ndarray):
        assert isinstance(got, np.ndarray), (where, type(got))
        assert got.dtype == expected.dtype, (where, got.dtype, expected.dtype)
        if expected.dtype.names is None and expected.dtype.kind in "fc":
            np.testing.assert_array_equal(got, expected, err_msg=where)
        else:
            assert got.shape == expected.shape and (got == expected).all(), where
        return
    assert type(got) is type(expected), (where, type(got), type(expected))
    assert got == expected or (got != got and expected != expected), (where, got, expected)


def assert_shadow_matches(shadow, oracle) -> None:
    """Every element of the shadow equals anndata's in-memory read."""
    assert shadow.shape == oracle.shape
    assert_value_equal(shadow.obs_names, oracle.obs_names, "obs_names")
    assert_value_equal(shadow.var_names, oracle.var_names, "var_names")
    assert_value_equal(shadow.obs, oracle.obs, "obs")
    assert_value_equal(shadow.var, oracle.var, "var")
    if oracle.X is None:
        assert shadow.X is None
    else:
        assert_value_equal(shadow.X, oracle.X, "X")
    for slot in ("layers", "obsm", "varm", "obsp", "varp"):
        mapping = getattr(shadow, slot)
        expected = getattr(oracle, slot)
        expected_keys = {k for k in expected if k is not None}  # anndata 0.13: layers[None] is X
        assert set(mapping.keys()) == expected_keys, slot
        for key in expected_keys:
            assert_value_equal(mapping[key], expected[key], f"{slot}/{key}")
    assert_value_equal(shadow.uns.materialize(), dict(oracle.uns), "uns")
    if oracle.raw is None:
        assert shadow.raw is None
    else:
        assert_value_equal(shadow.raw.X, oracle.raw.X, "raw/X")
        assert_value_equal(shadow.raw.var, oracle.raw.var, "raw/var")
        assert_value_equal(shadow.raw.var_names, oracle.raw.var_names, "raw/var_names")
        assert set(shadow.raw.varm.keys()) == set(oracle.raw.varm.keys())
