"""Files in layouts older anndata releases wrote, built here as those releases wrote them."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import zarr

from conftest import drop_consolidated, make_adata, read_oracle, write
from helpers import assert_shadow_matches
from shadows import AnnDataShadow

N_OBS, N_VARS = 8, 4
CODES = np.array([0, 1, 1, 0, -1, 2, 2, 0], dtype=np.int8)
CATEGORIES = ["alpha", "beta", "gamma"]


def write_anndata_07_h5ad(path):
    """anndata 0.7: dataframe 0.1.0 whose categorical columns point at obs/__categories by reference."""
    rng = np.random.default_rng(0)
    str_dtype = h5py.string_dtype()
    with h5py.File(path, "w") as f:
        f.attrs["encoding-type"] = "anndata"
        f.attrs["encoding-version"] = "0.1.0"
        x = f.create_group("X")
        dense = rng.random((N_OBS, N_VARS)).astype(np.float32) * (rng.random((N_OBS, N_VARS)) > 0.5)
        import scipy.sparse as sp

        csr = sp.csr_matrix(dense)
        x.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": (N_OBS, N_VARS)})
        x["data"], x["indices"], x["indptr"] = csr.data, csr.indices, csr.indptr
        obs = f.create_group("obs")
        obs.attrs.update({"encoding-type": "dataframe", "encoding-version": "0.1.0", "_index": "_index"})
        obs.attrs.create("column-order", np.array(["kind", "score"], dtype=object), dtype=str_dtype)
        obs.create_dataset("_index", data=np.array([f"c{i}" for i in range(N_OBS)], dtype=object), dtype=str_dtype)
        obs["score"] = rng.normal(size=N_OBS)
        cats = obs.create_group("__categories")
        cats.create_dataset("kind", data=np.array(CATEGORIES, dtype=object), dtype=str_dtype)
        obs["kind"] = CODES
        obs["kind"].attrs["categories"] = cats["kind"].ref
        var = f.create_group("var")
        var.attrs.update({"encoding-type": "dataframe", "encoding-version": "0.1.0", "_index": "_index"})
        var.attrs.create("column-order", np.array([], dtype=object), dtype=str_dtype)
        var.create_dataset("_index", data=np.array([f"g{i}" for i in range(N_VARS)], dtype=object), dtype=str_dtype)
        uns = f.create_group("uns")
        uns.create_dataset("note", data="written by 0.7", dtype=str_dtype)
        uns["number"] = 5
        uns.create_group("params")["n"] = np.arange(3)
        f.create_group("obsm")["X_pca"] = rng.normal(size=(N_OBS, 2))


def write_anndata_07_zarr(path):
    """anndata 0.7 in Zarr (format 2): categorical columns name their categories array by path."""
    rng = np.random.default_rng(1)
    root = zarr.open_group(path, mode="w", zarr_format=2)
    root.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
    x = root.create_array("X", data=rng.random((N_OBS, N_VARS)))
    x.attrs.update({"encoding-type": "array", "encoding-version": "0.2.0"})
    for name, columns in (("obs", ["kind", "score"]), ("var", [])):
        group = root.create_group(name)
        group.attrs.update({"encoding-type": "dataframe", "encoding-version": "0.1.0", "_index": "_index",
                            "column-order": columns})
        size = N_OBS if name == "obs" else N_VARS
        _strings(group, "_index", [f"{name}{i}" for i in range(size)])
    obs = root["obs"]
    obs.create_array("score", data=rng.normal(size=N_OBS))
    _strings(obs.create_group("__categories"), "kind", CATEGORIES)
    kind = obs.create_array("kind", data=CODES)
    kind.attrs["categories"] = "__categories/kind"
    root.create_group("uns")
    zarr.consolidate_metadata(path)


def _strings(group, name, values):
    array = group.create_array(name, shape=(len(values),), dtype=str)
    array[:] = np.array(values, dtype=object)


@pytest.mark.parametrize("writer,suffix", [(write_anndata_07_h5ad, ".h5ad"), (write_anndata_07_zarr, ".zarr")])
def test_anndata_07_layout(tmp_path, writer, suffix):
    path = tmp_path / f"old{suffix}"
    writer(path)
    shadow = AnnDataShadow(path)
    oracle = read_oracle(path)
    assert_shadow_matches(shadow, oracle)
    assert list(shadow.obs["kind"].cat.categories) == CATEGORIES
    assert shadow.obs["kind"].isna().sum() == 1


@pytest.mark.parametrize("fmt", ["zarr2", "zarr3"])
def test_unconsolidated_zarr(tmp_path, fmt):
    path = write(make_adata(), tmp_path / "plain.zarr", fmt)
    drop_consolidated(path)
    shadow = AnnDataShadow(path)
    assert not shadow._elements.connection.handle._consolidated
    assert_shadow_matches(shadow, read_oracle(path))
    assert shadow.file.attrs.get("encoding-type") == "anndata"


def test_zarr_file_attribute_is_a_group(files):
    shadow = AnnDataShadow(files["zarr3"])
    assert isinstance(shadow.file, zarr.Group) and shadow.file.read_only
    h5 = AnnDataShadow(files["h5ad"])
    assert isinstance(h5.file, h5py.File) and h5.file.mode == "r"
