"""Exports write string columns as anndata's writers do (``strings_to_categoricals``).

For a file whose obs, var and raw.var hold string columns (object dtype on pandas 2, ``str`` on pandas 3),
with in-memory edits adding string columns, a shadow and a view of it are exported by ``write_h5ad``,
``write_zarr`` and ``write(path)``; the in-memory AnnData of the same file, edited alike, is written by
anndata. ``anndata.read_*`` of both files gives the same dtypes and values, and the shadow is left as
anndata leaves the AnnData it writes (its obs and var columns categorical, a view an object of its own).
"""

from __future__ import annotations

import shutil
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import shadows

N_OBS, N_VARS = 40, 6


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anndata's zarr v2 notice, pandas 3's str notices
        yield


def source() -> ad.AnnData:
    obs = pd.DataFrame({"donor": [f"d{i % 3}" for i in range(N_OBS)],  # repeated: categorical when written
                        "barcode": [f"b{i}" for i in range(N_OBS)],  # unique: stays strings
                        "score": np.arange(N_OBS, dtype=float)}, index=[f"c{i}" for i in range(N_OBS)])
    var = pd.DataFrame({"kind": ["gene", "gene", "tf", "tf", "gene", "gene10"]},
                       index=[f"g{i}" for i in range(N_VARS)])
    adata = ad.AnnData(np.arange(N_OBS * N_VARS, dtype=np.float32).reshape(N_OBS, N_VARS), obs=obs, var=var)
    adata.raw = adata.copy()
    adata.raw.var["kind_raw"] = ["a", "b", "a", "b", "a", "b"]
    return adata


@pytest.fixture(scope="module", params=["h5ad", "zarr"])
def stored(request, tmp_path_factory) -> str:
    """A file storing the string columns as strings (written without anndata's conversion)."""
    path = tmp_path_factory.mktemp("categoricals") / f"source.{request.param}"
    adata = source()
    if request.param == "h5ad":
        adata.write_h5ad(path, convert_strings_to_categoricals=False)
    else:
        adata.write_zarr(path, convert_strings_to_categoricals=False)
    back = read_anndata(str(path))
    assert not isinstance(back.obs["donor"].dtype, pd.CategoricalDtype)  # the file holds strings
    assert not isinstance(back.raw.var["kind_raw"].dtype, pd.CategoricalDtype)
    return str(path)


def read_anndata(path: str) -> ad.AnnData:
    return (ad.read_h5ad if path.endswith(".h5ad") else ad.read_zarr)(path)


def read_shadow(path: str) -> ad.AnnData:
    return (shadows.read_h5ad if path.endswith(".h5ad") else shadows.read_zarr)(path)


def edit(adata: ad.AnnData) -> None:
    """In-memory edits adding string columns (repeated, and unique)."""
    adata.obs["batch"] = ["x" if i % 2 else "y" for i in range(adata.n_obs)]
    adata.obs["note"] = [f"n{i}" for i in range(adata.n_obs)]
    adata.var["group"] = ["p", "q"] * (adata.n_vars // 2) + ["p"] * (adata.n_vars % 2)


def write(adata: ad.AnnData, path, how: str) -> None:
    if how == "write_zarr":
        adata.write_zarr(path)
    elif how == "write":
        adata.write(path)
    else:
        adata.write_h5ad(path)


def assert_frames(got: pd.DataFrame, expected: pd.DataFrame, what: str) -> None:
    assert got.dtypes.to_dict() == expected.dtypes.to_dict(), what
    pd.testing.assert_frame_equal(got, expected, obj=what)


@pytest.mark.parametrize("how", ["write_h5ad", "write_zarr", "write"])
@pytest.mark.parametrize("edited", [False, True], ids=["stored", "edited"])
@pytest.mark.parametrize("kind", ["shadow", "view"])
def test_export_stores_string_columns_as_anndata_writes_them(stored, tmp_path, how, edited, kind):
    adata, shadow = read_anndata(stored), read_shadow(stored)
    if kind == "view":
        cells = adata.obs_names[5:30]
        adata, shadow = adata[cells], shadow[cells]
    if edited:
        edit(adata)
        edit(shadow)
    suffix = ".zarr" if how == "write_zarr" else ".h5ad"
    write(adata, tmp_path / f"anndata{suffix}", how)
    write(shadow, tmp_path / f"shadow{suffix}", how)
    expected, got = read_anndata(str(tmp_path / f"anndata{suffix}")), read_anndata(str(tmp_path / f"shadow{suffix}"))
    assert isinstance(got.obs["donor"].dtype, pd.CategoricalDtype)
    for slot in ("obs", "var"):
        assert_frames(getattr(got, slot), getattr(expected, slot), f"{how} of a {kind}: {slot}")
    assert_frames(got.raw.var, expected.raw.var, f"{how} of a {kind}: raw.var")
    # the written object afterwards: anndata's has categorical columns (and a view written became actual)
    assert shadow.is_view == adata.is_view
    for slot in ("obs", "var"):
        assert_frames(getattr(shadow, slot), getattr(adata, slot), f"{kind} after {how}: {slot}")


def test_a_shadow_keeps_the_categoricals_until_written_to_its_own_file(stored, tmp_path):
    """After an export, the shadow's columns are categoricals in memory (▲); ``write()`` stores them."""
    writable = tmp_path / f"copy{'.zarr' if stored.endswith('.zarr') else '.h5ad'}"
    (shutil.copytree if stored.endswith(".zarr") else shutil.copy)(stored, writable)
    shadow = read_shadow(str(writable))
    shadow.write_h5ad(tmp_path / "export.h5ad")
    assert "donor▲" in repr(shadow) and "barcode▲" not in repr(shadow)
    shadow.reopen("r+").write(overwrite=True).close()
    back = read_anndata(str(writable))
    assert isinstance(back.obs["donor"].dtype, pd.CategoricalDtype)
    assert list(back.obs["donor"]) == [f"d{i % 3}" for i in range(N_OBS)]
    assert not isinstance(back.obs["barcode"].dtype, pd.CategoricalDtype)
