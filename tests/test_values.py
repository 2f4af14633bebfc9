"""Every element of a shadow equals what anndata reads from the same file."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from conftest import make_adata, read_oracle, suffix, write
from helpers import assert_shadow_matches, assert_value_equal, count_reads
from shadows import AnnDataShadow


def test_every_element_matches_anndata(path):
    shadow = AnnDataShadow(path)
    assert_shadow_matches(shadow, read_oracle(path))


def test_isinstance_and_api(path):
    shadow = AnnDataShadow(path)
    oracle = read_oracle(path)
    assert isinstance(shadow, ad.AnnData) and isinstance(shadow, AnnDataShadow)
    assert type(shadow) is AnnDataShadow
    assert shadow.n_obs == oracle.n_obs and shadow.n_vars == oracle.n_vars and len(shadow) == oracle.n_obs
    assert shadow.obs_keys() == oracle.obs_keys()
    assert shadow.var_keys() == oracle.var_keys()
    assert sorted(shadow.obsm_keys()) == sorted(oracle.obsm_keys())
    assert not shadow.is_view and not shadow.isbacked
    assert shadow.filename == str(path)
    np.testing.assert_array_equal(shadow.obs_vector("float"), oracle.obs_vector("float"))
    np.testing.assert_array_equal(shadow.obs_vector("gene3"), oracle.obs_vector("gene3"))
    np.testing.assert_array_equal(shadow.obs_vector("gene3", layer="dense"), oracle.obs_vector("gene3", layer="dense"))
    np.testing.assert_array_equal(shadow.var_vector("cell5"), oracle.var_vector("cell5"))
    np.testing.assert_array_equal(shadow.var_vector("gene_ids"), oracle.var_vector("gene_ids"))
    pd.testing.assert_series_equal(pd.Series(shadow.obs_vector("cat")), pd.Series(oracle.obs_vector("cat")))


def test_to_memory_equals_anndata_read(path):
    memory = AnnDataShadow(path).to_memory()
    assert type(memory) is ad.AnnData
    assert_shadow_matches_memory = assert_shadow_matches
    oracle = read_oracle(path)
    assert_value_equal(memory.obs, oracle.obs, "obs")
    assert_value_equal(memory.X, oracle.X, "X")
    assert_value_equal(dict(memory.uns), dict(oracle.uns), "uns")
    for slot in ("layers", "obsm", "varm", "obsp", "varp"):
        assert_value_equal(dict(getattr(memory, slot)), dict(getattr(oracle, slot)), slot)
    assert_value_equal(memory.raw.X, oracle.raw.X, "raw/X")
    assert_value_equal(memory.raw.var, oracle.raw.var, "raw/var")
    del assert_shadow_matches_memory


def test_obs_column_reads_alone(path, monkeypatch):
    shadow = AnnDataShadow(path)
    expected = read_oracle(path).obs["cat"]
    with count_reads(monkeypatch) as reads:
        values = shadow.obs_vector("cat")
    assert_value_equal(pd.Series(values, index=expected.index, name="cat"), expected, "cat")
    touched = {key for key in reads if reads[key]}
    assert touched and all(key.startswith("obs/cat") for key in touched), touched  # one column, not the frame
    assert not shadow._elements.is_held("obs")


def test_pbmc68k_legacy_file(pbmc_path):
    """scanpy's bundled file was written by anndata < 0.7: structured obs/var/obsm, h5sparse raw."""
    shadow = AnnDataShadow(pbmc_path)
    oracle = read_oracle(pbmc_path)
    assert_shadow_matches(shadow, oracle)
    assert "bulk_labels_categories" not in shadow.uns
    assert shadow.obs["bulk_labels"].dtype == "category"
    assert sorted(shadow.obsp) == sorted(oracle.obsp)


def test_csc_and_dense_layers_types(path):
    shadow = AnnDataShadow(path)
    assert isinstance(shadow.layers["counts_csc"], sp.csc_matrix)
    assert isinstance(shadow.layers["dense"], np.ndarray)
    assert isinstance(shadow.X, sp.csr_matrix) and type(shadow.X) is sp.csr_matrix


@pytest.mark.parametrize("array_backend", ["dask"])
def test_dask_backend_values(path, array_backend):
    shadow = AnnDataShadow(path, array_backend=array_backend, table_backend="dask")
    oracle = read_oracle(path)
    import dask.array as da
    import dask.dataframe as dd

    assert isinstance(shadow.X, da.Array)
    assert isinstance(shadow.obs, dd.DataFrame)
    assert_value_equal(sp.csr_matrix(shadow.X.compute()), oracle.X, "X")
    np.testing.assert_array_equal(shadow.layers["dense"].compute(), oracle.layers["dense"])
    # dask turns object strings into its own string dtype (dataframe.convert-string); values must agree.
    pd.testing.assert_frame_equal(shadow.obs.compute(), oracle.obs, check_dtype=False, check_index_type=False,
                                  check_categorical=False)
    assert_value_equal(shadow.obs["float"].compute().to_numpy(), oracle.obs["float"].to_numpy(), "obs/float")


def test_modes_and_close(path, tmp_path):
    import shutil

    copy = tmp_path / path.name  # a file no other shadow of this test session holds open
    (shutil.copytree if path.is_dir() else shutil.copy)(path, copy)
    path = copy
    shadow = AnnDataShadow(path, mode="r+")
    if path.suffix == ".h5ad":
        assert shadow.file.mode == "r+"
    else:
        assert not shadow.file.read_only
    shadow.reopen("r")
    if path.suffix == ".h5ad":
        assert shadow.file.mode == "r"
    else:
        assert shadow.file.read_only
    shadow.obsm["extra"] = np.zeros((shadow.n_obs, 1))
    shadow.close()
    shadow.reopen("r")
    assert "extra▲" in repr(shadow.obsm)  # in-memory additions survive reopening
    with pytest.raises(OSError, match=r"read-only mode.*reopen\('r\+'\)"):
        shadow.write()
    with pytest.raises(ValueError, match="mode"):
        AnnDataShadow(path, mode="w")
    other = AnnDataShadow(path, mode="r+")  # one connection per file per process: upgraded beside `shadow`
    assert other._elements.connection.mode == "r+" and shadow._elements.connection.mode == "r"
    with pytest.raises(OSError, match="read-only mode"):
        shadow.write()  # its own mode stays read-only
    other.close()
    assert "extra▲" in repr(shadow.obsm) and shadow.n_obs == other.n_obs


def test_a_file_without_raw(fmt, tmp_path):
    # anndata writes a missing raw to Zarr as a null element: the shadow's raw is None too
    adata = make_adata()
    adata.raw = None
    path = write(adata, tmp_path / f"noraw{suffix(fmt)}", fmt)
    shadow = AnnDataShadow(path)
    assert shadow.raw is None and "raw" not in repr(shadow)
    assert_shadow_matches(shadow, read_oracle(path))
    shadow[:10].write_h5ad(tmp_path / "out.h5ad")
    assert read_oracle(tmp_path / "out.h5ad").raw is None
