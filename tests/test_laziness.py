"""Opening, printing and describing a shadow read no array data; names read only the index."""

from __future__ import annotations

import pytest

from helpers import count_reads
from shadows import AnnDataShadow
from shadows.cli import main


def test_open_repr_shape_read_no_data(path, monkeypatch):
    with count_reads(monkeypatch) as reads:
        shadow = AnnDataShadow(path)
        text = repr(shadow)
        assert shadow.shape == (60, 15)
        assert shadow.obs_keys() and list(shadow.obsm) and list(shadow.uns)
        assert repr(shadow.obsm).startswith("obsm:\t")
    assert "AnnData Shadow object" in text
    assert sum(reads.values()) == 0, dict(reads)


def test_info_reads_no_data(path, monkeypatch, capsys):
    with count_reads(monkeypatch) as reads:
        assert main(["info", str(path)]) == 0
    assert sum(reads.values()) == 0, dict(reads)
    assert "obsp/connectivities" in capsys.readouterr().out


def test_building_graphs_reads_no_data(path, monkeypatch):
    with count_reads(monkeypatch) as reads:
        lazy = AnnDataShadow(path, array_backend="dask", table_backend="dask")
        _ = lazy.X, lazy.layers["dense"], lazy.layers["counts_csc"], lazy.obsm["X_pca"], lazy.obs, lazy.var
    assert sum(reads.values()) == 0, dict(reads)


def test_names_read_only_the_index(path, monkeypatch):
    shadow = AnnDataShadow(path)
    with count_reads(monkeypatch) as reads:
        assert list(shadow.obs_names[:2]) == ["cell0", "cell1"]
    touched = {key for key in reads if reads[key]}
    assert touched and all(key.startswith("obs/cell_id") for key in touched), touched


def test_one_column_reads_only_that_column(path, monkeypatch):
    lazy = AnnDataShadow(path, table_backend="dask")
    frame = lazy.obs
    with count_reads(monkeypatch) as reads:
        frame["float"].compute()
    touched = {key for key in reads if reads[key]}
    assert touched and all(key.startswith(("obs/float", "obs/cell_id")) for key in touched), touched


@pytest.mark.parametrize("rows", [slice(0, 10)])
def test_row_block_of_csr_reads_only_its_range(path, monkeypatch, rows):
    lazy = AnnDataShadow(path, array_backend="dask")
    with count_reads(monkeypatch) as reads:
        lazy.X[rows].compute()
    touched = {key for key in reads if reads[key]}
    assert touched <= {"X/data", "X/indices", "X/indptr", "X/data/c", "X/indices/c", "X/indptr/c"} | {
        k for k in touched if k.startswith("X/")}
