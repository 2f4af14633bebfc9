"""One storage interface: every stored array is a ``StoredArray`` that declares its ``Capabilities`` once,
reads scattered ranges the way it declares, and a new storage is one new ``StoredArray`` subclass, read by
the same element readers as a file's arrays."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.sparse as sp
import zarr
from zarr.codecs import GzipCodec, ZstdCodec

from shadows import AnnDataShadow, settings
from shadows.backends import hdf5_arrays, hdf5_raw, storage, zarr_arrays, zarr_shards
from shadows.backends.abc import Capabilities, StoredArray, register, stored
from shadows.backends.fileref import resolve
from shadows.backends.zarr_pipeline import zarrs_installed
from shadows.elements import describe
from shadows.elements.dense import DenseSpec
from shadows.elements.sparse import SparseSpec, read_major_positions

VALUES = np.arange(5_000, dtype=np.float32) * 0.5
STARTS, STOPS = np.array([3, 650, 1399, 2500, 4990]), np.array([10, 1500, 1399, 2600, 5000])
EXPECTED = np.concatenate([VALUES[a:b] for a, b in zip(STARTS, STOPS, strict=True)])

#: Where each way of reading ranges is implemented (recorded to see which one a read takes).
IMPLEMENTATIONS = {
    "preads": (hdf5_raw, "read_ranges"),
    "hyperslab-unions": (hdf5_arrays, "read_hyperslab_unions"),
    "shard-reads": (zarr_shards, "read_ranges"),
    "whole-chunks": (zarr_arrays, "read_whole_chunks"),
    "positions": (zarr_arrays, "read_positions"),
}


def _record_ranges(monkeypatch) -> list[str]:
    taken: list[str] = []
    for way, (module, name) in IMPLEMENTATIONS.items():
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *args, _way=way, _f=original: taken.append(_way) or _f(*args))
    return taken


def _reads_as_declared(array: StoredArray, monkeypatch) -> None:
    """Reading the ranges gives their values, through the implementation the capabilities declare."""
    taken = _record_ranges(monkeypatch)
    out = np.empty(EXPECTED.size, dtype=np.float32)
    array.read_ranges(STARTS, STOPS, out)
    np.testing.assert_array_equal(out, EXPECTED)
    assert set(taken) == {array.capabilities.ranges}  # (preads: the first, checking HDF5's offsets, reads twice)
    monkeypatch.undo()


# -- HDF5 --------------------------------------------------------------------------------------------


def _h5(path: Path, **options) -> Path:
    with h5py.File(path, "w") as file:
        file.create_dataset("v", data=VALUES, **options)
    return path


@pytest.mark.parametrize(("options", "declared"), [
    ({}, Capabilities("preads", None, unit_reads=False, bounded_ranges=True, costly_ranges=False,
                      parallel_reads=False, writable=False, remote=False)),
    ({"chunks": (700,)}, Capabilities("preads", 700, unit_reads=False, bounded_ranges=True, costly_ranges=False,
                                      parallel_reads=False, writable=False, remote=False)),
    ({"chunks": (700,), "compression": "gzip"},
     Capabilities("hyperslab-unions", 700, unit_reads=False, bounded_ranges=True, costly_ranges=True,
                  parallel_reads=False, writable=False, remote=False)),
], ids=["contiguous", "chunked", "compressed"])
def test_an_h5ad_dataset_declares_its_capabilities_and_reads_as_declared(tmp_path, monkeypatch, options, declared):
    path = _h5(tmp_path / "a.h5", **options)
    with h5py.File(path, "r") as file:
        array = stored(file["v"])
        assert type(array).__name__ == "Hdf5Array"
        assert array.capabilities == declared
        assert array.shape == (VALUES.size,) and array.dtype == np.float32
        _reads_as_declared(array, monkeypatch)
    with h5py.File(path, "r+") as file:  # open for writing: values may sit in HDF5's caches, not the file
        array = stored(file["v"])
        assert array.capabilities.writable and array.capabilities.ranges == "hyperslab-unions"
        assert array.capabilities.costly_ranges
        _reads_as_declared(array, monkeypatch)


def test_an_h5ad_read_through_an_fsspec_file_object_is_remote_and_read_through_hdf5(tmp_path, monkeypatch):
    fsspec = pytest.importorskip("fsspec")
    path = _h5(tmp_path / "a.h5", chunks=(700,))
    with fsspec.filesystem("file").open(str(path), "rb") as raw, h5py.File(raw, "r") as file:
        array = stored(file["v"])
        assert array.capabilities == Capabilities("hyperslab-unions", 700, unit_reads=False, bounded_ranges=True,
                                                  costly_ranges=True, parallel_reads=False, writable=False,
                                                  remote=True)
        _reads_as_declared(array, monkeypatch)


def test_a_dataset_whose_offsets_do_not_hold_says_so_after_its_first_read(tmp_path, monkeypatch):
    """Declared from metadata (uncompressed, read-only), its offsets are looked up on its first read of
    ranges: a chunk never written has none, so HDF5's selections read it, and its capabilities say so."""
    with h5py.File(tmp_path / "a.h5", "w") as file:
        dataset = file.create_dataset("v", shape=VALUES.shape, dtype=np.float32, chunks=(700,))
        dataset[:2100] = VALUES[:2100]  # chunks 3 and on: never written (they read as the fill value, 0)
    expected = np.concatenate([np.where(np.arange(a, b) < 2100, VALUES[a:b], 0) for a, b in zip(STARTS, STOPS,
                                                                                              strict=True)])
    with h5py.File(tmp_path / "a.h5", "r") as file:
        array = stored(file["v"])
        assert array.capabilities.ranges == "preads" and not array.capabilities.costly_ranges
        taken = _record_ranges(monkeypatch)
        out = np.empty(expected.size, dtype=np.float32)
        array.read_ranges(STARTS, STOPS, out)
        np.testing.assert_array_equal(out, expected)
        assert "hyperslab-unions" in taken and "preads" not in taken[-1:]
        assert array.capabilities.ranges == "hyperslab-unions" and array.capabilities.costly_ranges


# -- Zarr --------------------------------------------------------------------------------------------


def _zarr(path: Path, zarr_format: int, **layout) -> Path:
    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    group.create_array("v", data=VALUES, **layout)
    return path


#: name: (zarr format, layout, (ranges, bounded_ranges) with zarrs and without, decode unit)
ZARR_LAYOUTS = {
    "v2": (2, {"chunks": (700,)}, (("positions", True), ("positions", True)), 700),  # Blosc: zarr's pipeline
    "v3": (3, {"chunks": (700,), "compressors": ZstdCodec()}, (("whole-chunks", True), ("positions", True)), 700),
    "v3 sharded": (3, {"chunks": (100,), "shards": (1000,)}, (("shard-reads", True), ("shard-reads", True)), 100),
    # inner chunks zarr_shards does not decode: zarr's pipeline would decode every inner chunk a selection
    # of positions touches at once
    "v3 sharded, gzip": (3, {"chunks": (100,), "shards": (1000,), "compressors": GzipCodec()},
                         (("whole-chunks", True), ("positions", False)), 100),
}


@pytest.mark.parametrize("zarrs", [True, False], ids=["zarrs", "zarr's pipeline"])
@pytest.mark.parametrize("name", list(ZARR_LAYOUTS))
def test_a_zarr_array_declares_its_capabilities_and_reads_as_declared(tmp_path, monkeypatch, name, zarrs):
    from shadows.backends import handles

    if zarrs and not zarrs_installed():
        pytest.skip("zarrs is not installed")
    zarr_format, layout, ways, unit = ZARR_LAYOUTS[name]
    ranges, bounded = ways[0 if zarrs else 1]
    path = _zarr(tmp_path / "a.zarr", zarr_format, **layout)
    monkeypatch.setattr(settings, "zarrs", zarrs)
    try:
        array = resolve(path).stored("v")  # as shadows' read tasks wrap it, once per node looked up
        assert resolve(path).stored("v") is array
        assert type(array).__name__ == "ZarrArray"
        assert array.capabilities == Capabilities(ranges, unit, unit_reads=True,
                                                  bounded_ranges=bounded, costly_ranges=False, parallel_reads=True,
                                                  writable=False, remote=False)
        _reads_as_declared(array, monkeypatch)
    finally:
        handles.release(str(path))


def test_a_zarr_store_behind_fsspec_is_remote(tmp_path, monkeypatch):
    pytest.importorskip("fsspec")
    path = _zarr(tmp_path / "a.zarr", 3, chunks=(700,))
    store = zarr.storage.FsspecStore.from_url(f"file://{path}", read_only=True)
    array = stored(zarr.open_group(store, mode="r")["v"])
    assert array.capabilities.remote and array.capabilities.ranges == "positions"
    _reads_as_declared(array, monkeypatch)


def test_files_declare_where_their_elements_lie():
    assert storage.capabilities("/a.h5ad", "hdf5") == storage.FileCapabilities(
        "in-file", remote=False, workers_write=False, parallel_writes=False, lookups_follow_links=True,
        parallel_reads=False)
    assert storage.capabilities("/a.zarr", "zarr") == storage.FileCapabilities(
        "folders", remote=False, workers_write=True, parallel_writes=True, lookups_follow_links=False,
        parallel_reads=True)
    assert storage.capabilities("s3://bucket/a.zarr", "zarr").elements == "objects"
    assert storage.capabilities("https://host/a.h5ad", "hdf5").remote
    assert storage.capabilities("https://host/a.h5ad", "hdf5").parallel_reads  # reads wait on the network


# -- a new storage: one StoredArray subclass, read by the element readers --------------------------------


@dataclass
class DictStore:
    """An array store in memory: arrays by path, and the reads made of them."""

    arrays: dict[str, np.ndarray]
    reads: list[tuple[str, object]] = field(default_factory=list)


@dataclass(frozen=True)
class DictNode:
    store: DictStore
    path: str


@register(lambda node: isinstance(node, DictNode))
class DictArray(StoredArray):
    """An array of a :class:`DictStore`: all a new storage defines."""

    def __init__(self, node: DictNode):
        super().__init__(node)
        self.values = node.store.arrays[node.path]
        self.capabilities = Capabilities("loop", None, unit_reads=False, bounded_ranges=True, costly_ranges=False,
                                         parallel_reads=True, writable=True, remote=False)

    shape = property(lambda self: self.values.shape)
    dtype = stored_dtype = property(lambda self: self.values.dtype)
    chunks = read_chunks = property(lambda self: None)
    nbytes = property(lambda self: self.values.nbytes)

    def location(self) -> tuple[str, str]:
        return "memory", self.node.path

    def _read(self, selection, decode):
        self.node.store.reads.append((self.node.path, selection))
        return np.array(self.values[selection])

    def _slice(self, start, stop):
        self.node.store.reads.append((self.node.path, slice(start, stop)))
        return self.values[start:stop]


@dataclass(frozen=True)
class DictRef:
    """What element readers ask of a file reference, for a :class:`DictStore`."""

    store: DictStore = field(compare=False)
    path: str = "memory"
    root: str = ""
    format: str = "memory"
    allow_external: bool = True

    @property
    def display(self) -> str:
        return self.path

    def node(self, path: str) -> DictNode:
        return DictNode(self.store, path)

    def stored(self, path: str) -> StoredArray:
        return stored(self.node(path))

    def __dask_tokenize__(self):
        return ("DictRef", id(self.store))


@pytest.fixture(scope="module")
def matrix_file(tmp_path_factory):
    import anndata as ad

    rng = np.random.default_rng(0)
    X = sp.random(3_000, 40, density=0.05, format="csr", dtype=np.float32, random_state=rng)
    pca = rng.normal(size=(3_000, 5))
    path = tmp_path_factory.mktemp("memory") / "a.h5ad"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ad.AnnData(X=X, obsm={"X_pca": pca}).write_h5ad(path)
    return path, X, pca


def test_a_new_storage_is_read_by_the_same_element_readers(matrix_file):
    path, X, pca = matrix_file
    store = DictStore({"X/data": X.data.copy(), "X/indices": X.indices.copy(), "X/indptr": X.indptr.copy(),
                       "obsm/X_pca": pca.copy()})
    ref = DictRef(store)
    memory = SparseSpec(ref, "X", "csr_matrix 0.1.0", X.shape, X.dtype, extra={"format": "csr", "nnz": X.nnz})
    file_ref = resolve(path)
    in_file = describe(file_ref, file_ref.node("X"), "X")
    assert type(in_file) is SparseSpec
    rows = np.sort(np.random.default_rng(1).choice(X.shape[0], 300, replace=False))
    for spec in (memory, in_file):
        got = read_major_positions(spec, rows)
        assert (got != X[rows]).nnz == 0
        assert (spec.materialize() != X).nnz == 0
        assert (spec.graph().compute() != X).nnz == 0
    # the memory store's scattered ranges went through its own loop, range by range
    assert any(path == "X/data" and isinstance(key, slice) for path, key in store.reads)

    dense_memory = DenseSpec(ref, "obsm/X_pca", "array 0.2.0", pca.shape, pca.dtype, extra={"stored_chunks": None})
    dense_file = describe(file_ref, file_ref.node("obsm/X_pca"), "obsm/X_pca")
    for spec in (dense_memory, dense_file):
        np.testing.assert_array_equal(spec.read_rows(rows), pca[rows])
        np.testing.assert_array_equal(spec.graph().compute(), pca)
    with AnnDataShadow(path) as shadow:  # and the file's read through a shadow agrees
        assert (read_major_positions(memory, rows) != shadow[rows].X).nnz == 0


def test_a_selection_of_whole_stored_rows_carries_its_blocks_non_zeros(matrix_file, monkeypatch):
    """The writer's first pass asks the graph (``stored_blocks``), not a table kept aside: the counts come
    from the stored pointers and equal what computing each block counts."""
    import shadows.elements.sparse as sparse_module

    path = matrix_file[0]
    monkeypatch.setattr(sparse_module, "TARGET_NNZ_PER_TASK", 200)  # several blocks
    with AnnDataShadow(path, array_backend="dask") as shadow:
        for rows in (slice(100, 2_900), np.arange(0, 3_000, 7)):
            graph = shadow[rows].X
            assert len(graph.chunks[0]) > 2
            counts = graph.stored_blocks.nnz()
            expected = [block.compute().nnz for block in graph.to_delayed().ravel()]
            np.testing.assert_array_equal(counts, expected)
        assert getattr(shadow.X[:, :5], "stored_blocks", None) is None  # a minor selection: counted by computing
        assert getattr(np.log1p(shadow.X), "stored_blocks", None) is None
