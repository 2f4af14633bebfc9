"""``shadows.read_h5ad``, ``read_zarr``, ``read_h5mu`` and ``read`` open shadows the way ``anndata.read_*``
and ``mudata.read_*`` open files."""

from __future__ import annotations

import warnings

import anndata as ad
import pytest

import shadows
from conftest import FORMATS, make_adata, suffix, write
from helpers import assert_value_equal
from shadows import AnnDataShadow, MuDataShadow, NotAnnDataError


@pytest.fixture(scope="module")
def anndata_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("io")
    adata = make_adata()
    return {fmt: write(adata, root / f"io_{fmt}{suffix(fmt)}", fmt) for fmt in FORMATS}


@pytest.mark.parametrize("fmt", FORMATS)
def test_read_functions_open_anndata_files_as_anndata_does(anndata_files, fmt):
    path = anndata_files[fmt]
    shadow = shadows.read_h5ad(path) if fmt == "h5ad" else shadows.read_zarr(path, array_backend="dask")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = ad.read_h5ad(path) if fmt == "h5ad" else ad.read_zarr(path)
    assert type(shadow) is AnnDataShadow and shadow.shape == expected.shape
    assert_value_equal(shadow.to_memory().X, expected.X, "X")
    assert type(shadows.read(path)) is AnnDataShadow


def test_backed_is_the_mode(anndata_files):
    path = anndata_files["h5ad"]
    writable = shadows.read_h5ad(path, backed="r+")
    assert writable.file.mode == "r+"
    writable.close()  # the process's one handle of the file is read-only again
    assert shadows.read_h5ad(path, backed="r").file.mode == "r"
    assert shadows.read_h5ad(path).file.mode == "r"
    with pytest.raises(ValueError, match="disagree"):
        shadows.read_h5ad(path, backed="r", mode="r+")


def test_read_functions_open_mudata_files(tmp_path):
    mudata = pytest.importorskip("mudata")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mdata = mudata.MuData({"rna": make_adata(), "atac": make_adata(seed=3)})
        mdata.write_h5mu(tmp_path / "m.h5mu")
        mdata.write_zarr(tmp_path / "m.zarr")
    for shadow in (shadows.read_h5mu(tmp_path / "m.h5mu"), shadows.read(tmp_path / "m.h5mu"),
                   shadows.read_zarr(tmp_path / "m.zarr")):
        assert type(shadow) is MuDataShadow and shadow.shape == mdata.shape and list(shadow.mod) == ["rna", "atac"]
    rna = shadows.read_h5ad(tmp_path / "m.h5mu", "rna")  # mudata.read_h5ad(filename, mod)
    assert type(rna) is AnnDataShadow and rna.shape == mdata["rna"].shape


def test_read_of_something_else_names_what_it_is(tmp_path):
    import h5py

    with h5py.File(tmp_path / "other.h5", "w") as file:
        file["data"] = [1, 2, 3]
    with pytest.raises(NotAnnDataError, match=r"other\.h5"):
        shadows.read(tmp_path / "other.h5")


def test_the_second_argument_is_anndatas_backed_or_mudatas_modality(tmp_path):
    mudata = pytest.importorskip("mudata")
    adata_path = write(make_adata(), tmp_path / "a.h5ad", "h5ad")
    assert shadows.read_h5ad(adata_path, "r").file.mode == "r"  # anndata.read_h5ad(filename, backed)
    writable = shadows.read_h5ad(adata_path, "r+")
    assert writable.file.mode == "r+"
    writable.close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mudata.MuData({"rna": make_adata(), "r": make_adata(seed=2)}).write_h5mu(tmp_path / "m.h5mu")
    rna = shadows.read_h5ad(tmp_path / "m.h5mu", "rna", "r+")  # mudata.read_h5ad(filename, mod, backed)
    assert rna.file.mode == "r+" and rna.shape == make_adata().shape
    rna.close()
    assert shadows.read_h5ad(tmp_path / "m.h5mu", "rna", backed="r").file.mode == "r"
    with pytest.raises(TypeError, match="multiple values"):
        shadows.read_h5ad(adata_path, "r", backed="r+")
    with pytest.raises(TypeError, match="a mode, not a modality"):
        shadows.read_h5ad(tmp_path / "m.h5mu", "r+", "rna")
    assert shadows.read_h5ad(tmp_path / "m.h5mu", mod="r").shape == make_adata(seed=2).shape
    assert shadows.read_h5mu(tmp_path / "m.h5mu", "r").n_mod == 2  # mudata.read_h5mu(filename, backed)
    with pytest.raises(TypeError, match="as_sparse"):
        shadows.read_h5ad(adata_path, as_sparse=("X",))
    assert shadows.read_h5ad(adata_path, as_sparse=(), chunk_size=100).shape == make_adata().shape


@pytest.mark.parametrize("fmt", ["zarr2", "zarr3"])
def test_read_zarr_takes_an_open_group_as_anndata_does(anndata_files, fmt, tmp_path):
    import zarr

    path = anndata_files[fmt]
    shadow = shadows.read_zarr(zarr.open_group(path, mode="r"))
    assert type(shadow) is AnnDataShadow and shadow.filename == AnnDataShadow(path).filename
    assert_value_equal(shadow.obsm["X_pca"], ad.read_zarr(path).obsm["X_pca"], "obsm/X_pca")
    fsspec_group = zarr.open_group(f"file://{path}", mode="r")
    assert shadows.read_zarr(fsspec_group).shape == shadow.shape
    with pytest.raises(TypeError, match="MemoryStore"):
        shadows.read_zarr(zarr.open_group(zarr.storage.MemoryStore(), mode="w"))
