"""Bad files and bad input fail with errors that name the file and the element."""

from __future__ import annotations

import sys

import anndata as ad
import h5py
import numpy as np
import pytest

from conftest import drop_consolidated, make_adata, write
from shadows import (
    AnnDataShadow,
    BackendUnavailableError,
    MalformedElementError,
    MissingElementError,
    NotAnnDataError,
    ShadowsError,
    ShadowsFileNotFoundError,
    UnknownBackendError,
    UnknownEncodingError,
)


def small_h5ad(tmp_path):
    return write(ad.AnnData(np.ones((4, 3), dtype=np.float32)), tmp_path / "small.h5ad", "h5ad")


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.h5ad") as info:
        AnnDataShadow(tmp_path / "missing.h5ad")
    assert isinstance(info.value, ShadowsFileNotFoundError)


@pytest.mark.parametrize("content", [b"", b"not an hdf5 file at all" * 10])
def test_not_hdf5(tmp_path, content):
    bad = tmp_path / "bad.h5ad"
    bad.write_bytes(content)
    with pytest.raises(NotAnnDataError, match=r"bad\.h5ad"):
        AnnDataShadow(bad)


def test_hdf5_that_is_not_anndata(tmp_path):
    bad = tmp_path / "other.h5"
    with h5py.File(bad, "w") as f:
        f["something"] = np.arange(3)
    with pytest.raises(ValueError, match="not an AnnData file") as info:
        AnnDataShadow(bad)
    assert isinstance(info.value, ShadowsError)


def test_directory_that_is_not_zarr(tmp_path):
    (tmp_path / "plain.zarr").mkdir()
    with pytest.raises(NotAnnDataError, match="not a Zarr store"):
        AnnDataShadow(tmp_path / "plain.zarr")


def test_unknown_encoding(tmp_path):
    path = small_h5ad(tmp_path)
    with h5py.File(path, "r+") as f:
        f["X"].attrs["encoding-type"] = "fancy_matrix"
    shadow = AnnDataShadow(path)  # opening reads only what it needs
    with pytest.raises(UnknownEncodingError, match=r"small.h5ad: element 'X': unknown encoding-type 'fancy_matrix'"):
        _ = shadow.X


def test_unknown_encoding_version(tmp_path):
    path = small_h5ad(tmp_path)
    with h5py.File(path, "r+") as f:
        f["X"].attrs["encoding-version"] = "9.9.9"
    with pytest.raises(UnknownEncodingError, match=r"version '9.9.9'.*reads versions 0.2.0"):
        _ = AnnDataShadow(path).X


def test_sparse_without_indptr(tmp_path, fmt):
    path = write(make_adata(), tmp_path / f"s{'.h5ad' if fmt == 'h5ad' else '.zarr'}", fmt)
    if fmt == "h5ad":
        with h5py.File(path, "r+") as f:
            del f["X/indptr"]
    else:
        import shutil

        shutil.rmtree(path / "X" / "indptr")
        drop_consolidated(path)
    shadow = AnnDataShadow(path)
    with pytest.raises(MalformedElementError, match=r"element 'X/indptr': missing"):
        _ = shadow.X


def test_indptr_past_data(tmp_path):
    path = write(make_adata(), tmp_path / "p.h5ad", "h5ad")
    with h5py.File(path, "r+") as f:
        indptr = f["X/indptr"][...]
        indptr[-1] = indptr[-1] + 1000
        f["X/indptr"][...] = indptr
    with pytest.raises(MalformedElementError, match=r"element 'X/indptr'.*outside"):
        _ = AnnDataShadow(path).X


def test_obs_index_names_missing_column(tmp_path):
    path = small_h5ad(tmp_path)
    with h5py.File(path, "r+") as f:
        f["obs"].attrs["_index"] = "no_such_column"
    with pytest.raises(MalformedElementError, match=r"small.h5ad: element 'obs/no_such_column'"):
        AnnDataShadow(path)


def test_missing_key(path):
    with pytest.raises(KeyError, match=r"element 'obsm/nope': no such key") as info:
        AnnDataShadow(path).obsm["nope"]
    assert isinstance(info.value, MissingElementError)


def test_missing_backend_package(path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(ImportError, match="pip install torch") as info:
        AnnDataShadow(path, array_backend="torch")
    assert isinstance(info.value, BackendUnavailableError)


def test_unknown_backend(path):
    with pytest.raises(UnknownBackendError, match="numpy, dask"):
        AnnDataShadow(path, array_backend="fortran")


def test_mudata_root_is_not_anndata(tmp_path):
    mudata = pytest.importorskip("mudata")
    mdata = mudata.MuData({"rna": make_adata(), "atac": make_adata(seed=1)})
    mdata.write_h5mu(tmp_path / "m.h5mu")
    with pytest.raises(NotAnnDataError, match=r"MuData file.*mod/<name>.*atac, rna"):
        AnnDataShadow(tmp_path / "m.h5mu")
    with pytest.raises(KeyError, match=r"element 'mod/prot': not in the file; available: atac, rna"):
        AnnDataShadow(tmp_path / "m.h5mu/mod/prot")

