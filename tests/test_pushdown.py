"""Selections are pushed down: a view reads only the bytes, chunks and columns it selects."""

from __future__ import annotations

import contextlib
import tracemalloc
import warnings
from collections import Counter

import anndata as ad
import h5py
import numpy as np
import pytest
import scipy.sparse as sp
import zarr

from helpers import _count_hdf5_range_reads
from shadows import AnnDataShadow

N_OBS, N_VARS, NNZ_PER_ROW = 20_000, 2_000, 100
#: One worker makes the module's files (its Zarr X in 15,000 small chunks takes about 20 s) and runs its tests.
pytestmark = pytest.mark.xdist_group("pushdown")


@pytest.fixture(scope="session")  # a module's fixture is made again each time a worker comes back to it
def big_files(tmp_path_factory):
    """A CSR X big enough for 1 % of its rows to be a small part of it (2M non-zeros)."""
    rng = np.random.default_rng(0)
    indptr = np.arange(0, (N_OBS + 1) * NNZ_PER_ROW, NNZ_PER_ROW)
    indices = np.sort(rng.integers(0, N_VARS, size=(N_OBS, NNZ_PER_ROW)), axis=1).astype(np.int32).ravel()
    data = rng.random(indices.size, dtype=np.float32)
    X = sp.csr_matrix((data, indices, indptr), shape=(N_OBS, N_VARS))
    X.sum_duplicates()
    adata = ad.AnnData(X=X, obsm={"X_pca": rng.normal(size=(N_OBS, 8))})
    adata.obs["a"] = rng.normal(size=N_OBS)
    adata.obs["b"] = rng.normal(size=N_OBS)
    root = tmp_path_factory.mktemp("big")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata.write_h5ad(root / "big.h5ad")
        previous, ad.settings.zarr_write_format = ad.settings.zarr_write_format, 2  # plain chunks, no shards
        adata.write_zarr(root / "big.zarr")
        # Zarr reads whole chunks: store X in small chunks (what a store meant for row access uses), so
        # a row costs its chunk, not anndata's default ~500 kB one.
        group = zarr.open_group(root / "big.zarr", mode="r+", use_consolidated=False)
        del group["X"]
        ad.io.write_elem(group, "X", X, dataset_kwargs={"chunks": (256,)})
        zarr.consolidate_metadata(root / "big.zarr")
        ad.settings.zarr_write_format = previous
    return {"h5ad": root / "big.h5ad", "zarr": root / "big.zarr"}, X


@contextlib.contextmanager
def count_bytes(monkeypatch):
    """Bytes returned by data reads, per element path: h5py dataset reads and Zarr chunk gets."""
    counted: Counter[str] = Counter()
    h5_getitem = h5py.Dataset.__getitem__

    def h5_counted(self, *args, **kwargs):
        out = h5_getitem(self, *args, **kwargs)
        counted[self.name.lstrip("/")] += getattr(out, "nbytes", 0)
        return out

    store_get = zarr.storage.LocalStore.get

    async def zarr_counted(self, key, *args, **kwargs):
        out = await store_get(self, key, *args, **kwargs)
        if out is not None and not key.endswith(("zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata")):
            parts = key.split("/")
            counted["/".join(parts[:2])] += len(out)
        return out

    h5_read_direct = h5py.Dataset.read_direct

    def h5_direct_counted(self, dest, source_sel=None, dest_sel=None):
        h5_read_direct(self, dest, source_sel, dest_sel)
        sel = source_sel if source_sel is not None else slice(0, self.shape[0])
        counted[self.name.lstrip("/")] += len(range(*sel.indices(self.shape[0]))) * self.dtype.itemsize

    monkeypatch.setattr(h5py.Dataset, "__getitem__", h5_counted)
    monkeypatch.setattr(h5py.Dataset, "read_direct", h5_direct_counted)
    monkeypatch.setattr(zarr.storage.LocalStore, "get", zarr_counted)
    _count_hdf5_range_reads(monkeypatch, lambda name, out: counted.update({name: out.nbytes}))
    yield counted


@pytest.mark.parametrize("fmt", ["h5ad", "zarr"])
def test_one_percent_of_rows_reads_under_five_percent_of_x(big_files, fmt, monkeypatch):
    files, X = big_files
    rows = np.sort(np.random.default_rng(1).choice(N_OBS, N_OBS // 100, replace=False))
    shadow = AnnDataShadow(files[fmt])
    view = shadow[rows]
    with count_bytes(monkeypatch) as counted:
        subset = view.X
    assert (subset != X[rows]).nnz == 0
    stored = sum(files_bytes(files[fmt], part) for part in ("X/data", "X/indices"))
    read = counted["X/data"] + counted["X/indices"]
    assert 0 < read <= 0.05 * stored, (read, stored)


def files_bytes(path, element):
    if path.suffix == ".h5ad":
        with h5py.File(path, "r") as f:
            return f[element].size * f[element].dtype.itemsize
    return sum(f.stat().st_size for f in (path / element).rglob("*") if f.is_file())


def test_nearby_rows_coalesce_into_one_read(big_files, monkeypatch):
    """Close rows are read as one range; the ranges of a task go to HDF5 in one call."""
    from shadows.backends import handles, hdf5_raw
    from shadows.backends.abc import StoredArray

    files, X = big_files
    calls, ranges = Counter(), []
    getitem, read_direct, read_ranges = h5py.Dataset.__getitem__, h5py.Dataset.read_direct, StoredArray.read_ranges

    def counting(original):
        def counted(self, *args, **kwargs):
            calls[self.name] += 1
            return original(self, *args, **kwargs)

        return counted

    def ranges_counted(self, starts, stops, out):
        if self.node.name == "/X/data":
            ranges.append(list(zip(starts.tolist(), stops.tolist(), strict=True)))
        return read_ranges(self, starts, stops, out)

    view = AnnDataShadow(files["h5ad"])[[100, 101, 103, 104, 110, 15_000]]
    monkeypatch.setattr(hdf5_raw, "eligible", lambda node: False)  # HDF5's selections (read raw: no gaps)
    handles.release(str(files["h5ad"]))  # wrapped anew, now
    monkeypatch.setattr(h5py.Dataset, "__getitem__", counting(getitem))
    monkeypatch.setattr(h5py.Dataset, "read_direct", counting(read_direct))
    monkeypatch.setattr(StoredArray, "read_ranges", ranges_counted)
    try:
        subset = view.X
    finally:
        monkeypatch.undo()
        handles.release(str(files["h5ad"]))  # later tests wrap X/data as it is
    assert (subset != X[[100, 101, 103, 104, 110, 15_000]]).nnz == 0
    assert len(ranges) == 1 and len(ranges[0]) == 2  # rows 100..110 as one range, row 15000 another: one call
    assert calls["/X/data"] == 0


def test_scattered_rows_of_hdf5_are_read_into_the_result_itself(big_files, monkeypatch):
    """Rows spread over many tasks' worth of X are read here in one pass, straight into the result's
    buffers (memory holds the selection once, not blocks and their concatenation), with HDF5 selections
    of at most ``HYPERSLABS_PER_READ`` ranges (one union of thousands of ranges is slow in HDF5).
    """
    import types

    import shadows.elements.sparse as sparse_module
    from shadows.backends import handles, hdf5_arrays, hdf5_raw

    files, X = big_files
    monkeypatch.setattr(sparse_module, "TARGET_NNZ_PER_TASK", 20_000)  # many tasks' worth of rows
    monkeypatch.setattr(hdf5_arrays, "HYPERSLABS_PER_READ", 7)
    monkeypatch.setattr(hdf5_raw, "eligible", lambda node: False)  # through HDF5's selections
    handles.release(str(files["h5ad"]))  # wrapped anew, now
    rows = np.sort(np.random.default_rng(3).choice(N_OBS, N_OBS // 10, replace=False))
    read_calls = []

    def create_simple(shape):  # the memory space of each HDF5 read call
        read_calls.append(shape[0])
        return h5py.h5s.create_simple(shape)

    _ = AnnDataShadow(files["h5ad"])[rows[::2]].X  # first use: imports and HDF5's caches, outside the measure
    view = AnnDataShadow(files["h5ad"])[rows]

    class H5py(types.ModuleType):  # h5py, with the memory spaces counted
        h5s = types.SimpleNamespace(create_simple=create_simple, SELECT_OR=h5py.h5s.SELECT_OR)

        def __getattr__(self, name):
            return getattr(h5py, name)

    monkeypatch.setattr(hdf5_arrays, "_h5py", lambda: H5py("h5py"))
    tracemalloc.start()
    try:
        subset = view.X
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        monkeypatch.undo()
        handles.release(str(files["h5ad"]))  # later tests wrap X/data as it is
    assert (subset != X[rows]).nnz == 0
    selected = subset.data.nbytes + subset.indices.nbytes + subset.indptr.nbytes
    assert peak < 1.25 * selected, (peak, selected)  # through the blocks' concatenation: 2x and more
    ranges = np.unique(np.concatenate([rows, rows + 1])).size - rows.size  # rows' runs: at most one each
    assert len(read_calls) >= 2 * (ranges // 7)  # data and indices, 7 ranges per call at most


#: Datasets read at HDF5's offsets (True) or through HDF5 (False): how each is stored.
RAW_LAYOUTS = {
    "chunked": ({"chunks": (700,)}, True),
    "contiguous": ({}, True),
    # a userblock (.h5mu files have one): HDF5 < 1.14.4 reports chunk addresses without it
    "chunked after a userblock": ({"chunks": (700,)}, h5py.version.hdf5_version_tuple >= (1, 14, 4)),
    "compressed": ({"chunks": (700,), "compression": "gzip"}, False),
    "big-endian": ({"chunks": (700,), "dtype": ">f4"}, False),
}


@pytest.mark.parametrize("layout", list(RAW_LAYOUTS))
def test_scattered_ranges_of_an_uncompressed_dataset_are_read_at_hdf5s_offsets(tmp_path, layout, monkeypatch):
    """Ranges (some across chunk boundaries, some empty) read straight from the file equal h5py's read
    of them; compressed datasets and files open for writing go through HDF5."""
    from shadows.backends import hdf5_raw
    from shadows.backends.abc import stored

    values = np.arange(10_000, dtype=np.float32) * 1.5
    options, raw_expected = RAW_LAYOUTS[layout]
    with h5py.File(tmp_path / "f.h5", "w", userblock_size=512 if "userblock" in layout else 0) as f:
        f.create_dataset("v", data=values, **options)
    starts = np.array([3, 650, 1399, 5000, 5000, 9990])
    stops = np.array([10, 1500, 1399, 5000, 5700, 10_000])
    expected = np.concatenate([values[a:b] for a, b in zip(starts, stops, strict=True)])
    pread_calls = []
    preadv = hdf5_raw.os.preadv
    monkeypatch.setattr(hdf5_raw.os, "preadv", lambda *args: pread_calls.append(args[2]) or preadv(*args))
    for mode in ("r", "r+"):
        with h5py.File(tmp_path / "f.h5", mode) as f:
            out = np.empty(expected.size, dtype=np.float32)
            array = stored(f["v"])
            array.read_ranges(starts, stops, out)
            np.testing.assert_array_equal(out, expected)
            raw = hdf5_raw.layout(f["v"])
            declared = array.capabilities.ranges
        assert (raw is not None) == (mode == "r" and raw_expected)
        assert declared == ("preads" if raw is not None else "hyperslab-unions")  # as declared, read
    assert bool(pread_calls) == raw_expected


def test_dense_and_frames_read_only_what_they_need(big_files, monkeypatch):
    files, _ = big_files
    shadow = AnnDataShadow(files["zarr"])
    with count_bytes(monkeypatch) as counted:
        pca = shadow[:100].obsm["X_pca"]
        column = shadow[:100].obs_vector("a")
    assert pca.shape == (100, 8) and column.shape == (100,)
    pca_stored = files_bytes(files["zarr"], "obsm/X_pca")
    assert 0 < counted["obsm/X_pca"] < pca_stored / 2
    assert counted["obs/a"] > 0 and counted["obs/b"] == 0  # one column read, not the others


def test_gene_column_of_csr_is_parallel_and_bounded(big_files, monkeypatch):
    import shadows.elements.sparse as sparse_module

    files, X = big_files
    monkeypatch.setattr(sparse_module, "TARGET_NNZ_PER_TASK", 100_000)  # 20 row blocks
    lazy = AnnDataShadow(files["h5ad"], array_backend="dask")
    column = lazy.X[:, 7]
    assert column.numblocks[0] == 20  # one task per row block: computed in parallel
    column[:10].compute(scheduler="threads")  # first-use imports and caches are not what is measured
    tracemalloc.start()
    try:
        values = column.compute(scheduler="threads", num_workers=2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(values, X[:, 7].toarray().ravel())
    x_bytes = X.data.nbytes + X.indices.nbytes
    assert peak < x_bytes / 3, (peak, x_bytes)  # a few blocks at a time, never the whole matrix
    shadow = AnnDataShadow(files["h5ad"])
    np.testing.assert_array_equal(shadow.obs_vector(shadow.var_names[7]), values)
    assert not shadow._elements.is_held("X")


def test_views_on_distributed_process_workers(big_files):
    distributed = pytest.importorskip("distributed")
    files, X = big_files
    rows = np.random.default_rng(2).choice(N_OBS, 500, replace=False)  # unsorted
    view = AnnDataShadow(files["zarr"], array_backend="dask")[rows, 10:900]
    threaded = view.X.sum(axis=0).compute(scheduler="threads")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, distributed.Client(cluster) as client:
        on_cluster = client.compute(view.X.sum(axis=0)).result()
        subset = client.compute(view.X).result()
    np.testing.assert_allclose(on_cluster, threaded)
    np.testing.assert_allclose(threaded, np.asarray(X[rows][:, 10:900].sum(axis=0)).ravel(), rtol=1e-5)
    assert (sp.csr_matrix(subset) != X[rows][:, 10:900]).nnz == 0


@pytest.mark.parametrize("fmt", ["h5ad", "zarr"])
def test_a_label_selection_of_the_xarray_backend_reads_what_a_view_reads(big_files, fmt, monkeypatch):
    pytest.importorskip("sparse")
    files, _ = big_files
    rows = np.sort(np.random.default_rng(2).choice(N_OBS, N_OBS // 100, replace=False))
    shadow = AnnDataShadow(files[fmt], array_backend="xarray")
    names = list(shadow.obs_names[rows])
    labelled = shadow.X
    with count_bytes(monkeypatch) as counted:
        subset = labelled.sel(obs=names).data.compute()
    by_label = counted["X/data"] + counted["X/indices"]
    counted.clear()
    expected = AnnDataShadow(files[fmt])[rows].X
    by_view = counted["X/data"] + counted["X/indices"]
    assert (subset.tocsr() != expected).nnz == 0
    assert 0 < by_label <= by_view, (by_label, by_view)
