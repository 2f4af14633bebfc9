"""Encodings users' files hold, written by the installed anndata in every format: record arrays and None
in uns (scanpy's ``rank_genes_groups`` results), read equal to anndata's own read, and ``shadows info``
describes them."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pytest
import scanpy as sc

from conftest import FORMATS, suffix, write
from helpers import assert_value_equal
from shadows import AnnDataShadow
from shadows.cli import info_data, info_text


@pytest.fixture(scope="module")
def ranked_files(tmp_path_factory, pbmc_path):
    root = tmp_path_factory.mktemp("encodings")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = ad.read_h5ad(pbmc_path)
        sc.tl.rank_genes_groups(adata, "louvain", n_genes=5)  # record arrays; params.layer is None
    return {fmt: write(adata, root / f"ranked_{fmt}{suffix(fmt)}", fmt) for fmt in FORMATS}


@pytest.mark.parametrize("fmt", FORMATS)
def test_record_arrays_and_none_in_uns_read_as_anndata_reads_them(ranked_files, fmt):
    path = ranked_files[fmt]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = ad.read_h5ad(path) if fmt == "h5ad" else ad.read_zarr(path)
    shadow = AnnDataShadow(path)
    assert shadow.uns["rank_genes_groups"]["names"].dtype.names  # a record array
    assert_value_equal(shadow.uns.materialize(), dict(expected.uns), "uns")
    assert "uns/rank_genes_groups/names" in {e["path"] for e in info_data(str(path))["elements"]}
    assert "rank_genes_groups" in info_text(str(path))  # the table prints without a traceback


@pytest.fixture(scope="module")
def awkward_files(tmp_path_factory):
    ak = pytest.importorskip("awkward")
    root = tmp_path_factory.mktemp("awkward")
    adata = ad.AnnData(np.ones((4, 3), dtype=np.float32))
    adata.obsm["ragged"] = ak.Array([[1, 2], [3], [], [4, 5, 6]])
    adata.varm["records"] = ak.Array([{"x": 1, "y": [1.5]}, {"x": 2, "y": []}, {"x": 3, "y": [2.5, 3.5]}])
    adata.uns["nested"] = ak.Array([[{"a": 1}], [{"a": 2}, {"a": 3}]])
    return {fmt: write(adata, root / f"awkward_{fmt}{suffix(fmt)}", fmt) for fmt in FORMATS}


@pytest.mark.parametrize("fmt", FORMATS)
def test_awkward_arrays_read_as_anndata_reads_them(awkward_files, fmt, tmp_path):
    path = awkward_files[fmt]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = ad.read_h5ad(path) if fmt == "h5ad" else ad.read_zarr(path)
    for backend in ("numpy", "dask"):
        shadow = AnnDataShadow(path, array_backend=backend)
        assert shadow.obsm["ragged"].tolist() == expected.obsm["ragged"].tolist()
        assert shadow.varm["records"].tolist() == expected.varm["records"].tolist()
        assert shadow.uns["nested"].tolist() == expected.uns["nested"].tolist()
    view = AnnDataShadow(path)[[3, 1], 1:]
    assert view.obsm["ragged"].tolist() == expected[[3, 1], 1:].obsm["ragged"].tolist()
    assert view.varm["records"].tolist() == expected[[3, 1], 1:].varm["records"].tolist()
    view.write_h5ad(tmp_path / "view.h5ad")
    assert ad.read_h5ad(tmp_path / "view.h5ad").obsm["ragged"].tolist() == [[4, 5, 6], [3]]


def test_without_awkward_the_error_names_the_package(awkward_files, monkeypatch):
    import sys

    from shadows import BackendUnavailableError

    shadow = AnnDataShadow(awkward_files["h5ad"])
    assert "ragged" in repr(shadow)  # described from metadata without it
    monkeypatch.setitem(sys.modules, "awkward", None)
    with pytest.raises(BackendUnavailableError, match=r"obsm/ragged.*pip install awkward"):
        shadow.obsm["ragged"]
