"""Encodings users' files hold, written by the installed anndata in every format: record arrays and None
in uns (scanpy's ``rank_genes_groups`` results), read equal to anndata's own read, and ``shadows info``
describes them."""

from __future__ import annotations

import warnings

import anndata as ad
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
