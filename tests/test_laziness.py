"""Opening, printing and describing a shadow read no array data; names read only the index."""

from __future__ import annotations

import numpy as np

from conftest import make_adata, suffix, write, zarr_format
from helpers import count_reads, count_values_read, rechunk_sparse_x
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
    assert sum(data_reads(reads).values()) == 0, dict(reads)
    assert lazy.obs["cat"].cat.known  # the categories (small arrays) are read: dask knows them, as pandas


def data_reads(reads: dict[str, int]) -> dict[str, int]:
    """The reads of ``count_reads`` besides those of categories, which a dask dataframe's graph reads to
    know its categorical columns' categories (``.cat.known``).
    """
    return {k: n for k, n in reads.items() if not (k.endswith("/categories") or "/categories/" in k)}


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


def test_row_block_of_csr_reads_only_its_range(tmp_path, fmt, monkeypatch):
    """A view of rows 100-110 of a 4000-row CSR X reads only their values (HDF5: the values read are
    counted; Zarr: the chunks of X/data read are those holding the rows' values).
    """
    import zarr

    adata = make_adata(n_obs=4000, n_vars=15)
    del adata.obsp["dense_dist"]
    with zarr_format(fmt):
        path = write(adata, tmp_path / f"rows{suffix(fmt)}", fmt)
    if fmt != "h5ad":  # anndata writes X/data as one chunk this small: store it in 40 chunks
        rechunk_sparse_x(path, chunks=(450,))
    rows = slice(100, 110)
    start, stop = adata.X.indptr[100], adata.X.indptr[110]
    lazy = AnnDataShadow(path, array_backend="dask")
    with count_reads(monkeypatch) as reads:
        read = count_values_read(monkeypatch, "/X/data")
        got = lazy[rows].X.compute()  # a view's graph: the selection is pushed down into the reads
    np.testing.assert_array_equal(np.asarray(got.todense()), adata.X[rows].toarray())
    touched = {key for key in reads if reads[key]}
    assert touched and all(key.startswith("X/") for key in touched), touched
    if fmt == "h5ad":
        assert 0 < sum(read) <= stop - start, read  # only the block's values
    else:
        chunk = zarr.open_array(path / "X" / "data", mode="r").chunks[0]
        holding = stop // chunk - start // chunk + 1
        data_key = "X/data/c" if fmt == "zarr3" else "X/data"
        assert 0 < reads[data_key] <= holding < adata.X.nnz // chunk, (reads, holding)
