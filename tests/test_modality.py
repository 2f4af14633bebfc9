"""One modality of a MuData file opens as an AnnDataShadow: ``file.h5mu/mod/rna``."""

from __future__ import annotations

import warnings

import anndata as ad
import h5py
import pytest
import zarr
from anndata.io import read_elem

from conftest import make_adata
from helpers import assert_shadow_matches
from shadows import AnnDataShadow

mudata = pytest.importorskip("mudata")


@pytest.fixture(scope="module", params=["h5mu", "zarr"])
def mudata_file(request, tmp_path_factory):
    rna = make_adata()
    atac = make_adata(n_obs=50, n_vars=9, seed=3)[10:].copy()
    atac.obs_names = [f"cell{i}" for i in range(10, 50)]
    mdata = mudata.MuData({"rna": rna, "atac": atac})
    path = tmp_path_factory.mktemp("mu") / f"data.{request.param}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if request.param == "h5mu":
            mdata.write_h5mu(path)
        else:
            mdata.write_zarr(path)
    return path


def oracle(path, mod):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if path.suffix == ".h5mu":
            with h5py.File(path, "r") as f:
                return read_elem(f[f"mod/{mod}"])
        return read_elem(zarr.open_group(path, mode="r")[f"mod/{mod}"])


@pytest.mark.parametrize("mod", ["rna", "atac"])
def test_modality_matches_anndata(mudata_file, mod):
    shadow = AnnDataShadow(f"{mudata_file}/mod/{mod}")
    expected = oracle(mudata_file, mod)
    assert isinstance(expected, ad.AnnData)
    assert_shadow_matches(shadow, expected)
    assert shadow.filename == f"{mudata_file}/mod/{mod}"
    lazy = AnnDataShadow(f"{mudata_file}/mod/{mod}", array_backend="dask")
    assert (lazy.X.compute() != expected.X).nnz == 0
