"""Scattered ranges of a local sharded Zarr array read from its shard files (:mod:`shadows.backends.
zarr_shards`): which arrays it takes, that every value lands where zarr puts it (layouts, fill values, edges),
that only the touched inner chunks are read, and that a damaged shard fails naming the store and element."""

from __future__ import annotations

import multiprocessing
import sys
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
import zarr
from zarr.codecs import BytesCodec, GzipCodec, ShardingCodec, ZstdCodec

from conftest import write
from helpers import assert_value_equal, rechunk_sparse_x
from shadows import AnnDataShadow, settings
from shadows.backends import zarr_shards
from shadows.backends.abc import stored
from shadows.backends.fileref import resolve
from shadows.errors import UnreadableDataError
from test_mutation import KINDS, assert_same_state, make_counts, subject_and_oracle

INNER, SHARD, SIZE = 64, 512, 2_000  # 4 shards, the last partial; 32 inner chunks


def _array(path: Path, dtype: str = "float32", fill_value=0, **layout) -> tuple[zarr.Array, np.ndarray]:
    """A sharded 1-d array of ``SIZE`` values (zarr's defaults unless ``layout`` says otherwise: inner
    chunks Zstandard-compressed, index at the end with its CRC32C), some of its inner chunks and its third
    shard all fill value, so not stored."""
    layout = {"chunks": (INNER,), "shards": (SHARD,), **layout}
    array = zarr.create_array(str(path), shape=(SIZE,), dtype=dtype, fill_value=fill_value, **layout)
    values = np.arange(1, SIZE + 1).astype(dtype)
    values[3 * INNER : 5 * INNER] = fill_value
    values[2 * SHARD : 3 * SHARD] = fill_value
    array[:] = values
    return zarr.open_array(str(path), mode="r"), values


def _ranges(seed: int, n: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Increasing disjoint ranges: some empty, some across inner-chunk and shard edges, the array's end."""
    rng = np.random.default_rng(seed)
    edges = np.sort(rng.choice(n, 60, replace=False))
    starts, stops = edges[0::2].copy(), edges[1::2].copy()
    stops[::7] = starts[::7]
    starts, stops = np.append(starts, n - 5), np.append(stops, n)
    return starts, stops


def _expected(values: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    return np.concatenate([values[a:b] for a, b in zip(starts, stops, strict=True)])


LAYOUTS = {
    "anndata 0.13's": {},
    "uncompressed": {"compressors": None},
    "index first": {"shards": {"shape": (SHARD,), "index_location": "start"}},
    "index without checksum": {"chunks": (SHARD,), "shards": None, "compressors": None,
                               "serializer": ShardingCodec(chunk_shape=(INNER,), codecs=[BytesCodec(), ZstdCodec()],
                                                           index_codecs=[BytesCodec()])},
}


@pytest.mark.parametrize("dtype", ["float32", "int64", "uint8", "bool"])
@pytest.mark.parametrize("name", LAYOUTS)
def test_ranges_read_from_the_shards_are_zarrs_values(tmp_path, name, dtype):
    array, values = _array(tmp_path / "a.zarr", dtype, fill_value=7 if dtype != "bool" else False,
                           **LAYOUTS[name])
    assert not (tmp_path / "a.zarr" / "c" / "2").exists()  # a shard of fill value only is not stored
    shards = zarr_shards.layout(array)
    assert shards is not None
    np.testing.assert_array_equal(array[:], values)
    for seed in range(3):
        starts, stops = _ranges(seed)
        out = np.empty(int((stops - starts).sum()), dtype=dtype)
        stored(array).read_ranges(starts, stops, out)
        np.testing.assert_array_equal(out, _expected(values, starts, stops))


def test_only_the_touched_inner_chunks_are_read(tmp_path, monkeypatch):
    array, values = _array(tmp_path / "a.zarr")
    reads = []
    pread = zarr_shards._pread

    def counted(fd, nbytes, offset, *where):
        reads.append(nbytes)
        return pread(fd, nbytes, offset, *where)

    monkeypatch.setattr(zarr_shards, "_pread", counted)
    starts, stops = np.array([10, 60, 700]), np.array([20, 70, 701])  # inner chunks 0, 0-1 and 10 (shard 1)
    out = np.empty(21, dtype=np.float32)
    stored(array).read_ranges(starts, stops, out)
    np.testing.assert_array_equal(out, _expected(values, starts, stops))
    index_nbytes = (SHARD // INNER) * 16 + 4
    assert sorted(n == index_nbytes for n in reads) == [False, False, False, True, True]  # 2 indexes, 3 chunks


@pytest.mark.parametrize("layout", ["format 2", "not sharded", "gzip inside shards", "two dimensions",
                                    "big-endian", "in memory", "a user's pipeline"])
def test_arrays_it_does_not_take_are_read_through_zarr(tmp_path, layout):
    from zarr.core.codec_pipeline import BatchedCodecPipeline
    from zarr.registry import register_pipeline

    options: dict = {"shape": (SIZE,), "dtype": "float32", "chunks": (INNER,), "shards": (SHARD,)}
    store: object = str(tmp_path / "a.zarr")
    if layout == "format 2":
        options.update(zarr_format=2, shards=None)
    elif layout == "not sharded":
        options.update(shards=None)
    elif layout == "gzip inside shards":
        options.update(compressors=GzipCodec())
    elif layout == "two dimensions":
        options.update(shape=(SIZE, 2), chunks=(INNER, 2), shards=(SHARD, 2))
    elif layout == "big-endian":
        options.update(serializer=BytesCodec(endian="big"))
    elif layout == "in memory":
        store = zarr.storage.MemoryStore()
    array = zarr.create_array(store, **options)
    array[...] = 1.5
    config = {}
    if layout == "a user's pipeline":

        class UsersPipeline(BatchedCodecPipeline):
            pass

        register_pipeline(UsersPipeline)
        config = {"codec_pipeline.path": f"{UsersPipeline.__module__}.{UsersPipeline.__qualname__}"}
    with zarr.config.set(config):
        assert zarr_shards.layout(array) is None
        if array.ndim == 1:
            out = np.empty(40, dtype=np.float32)
            stored(array).read_ranges(np.array([0, 600]), np.array([20, 620]), out)
            assert np.all(out == 1.5)


def _corrupt(path: Path, damage: str) -> None:
    shard = path / "c" / "0"
    raw = bytearray(shard.read_bytes())
    if damage == "index checksum":
        raw[-10] ^= 0xFF
    elif damage == "cut short":
        raw = raw[: len(raw) // 2]
    elif damage == "chunk bytes":  # the first inner chunk's Zstandard frame header
        raw[0:4] = b"\x00\x00\x00\x00"
    elif damage == "index past the end":
        raw = raw[: -(SHARD // INNER) * 16] + np.full(2 * (SHARD // INNER), len(raw), dtype="<u8").tobytes()
    shard.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", ["index checksum", "cut short", "chunk bytes", "index past the end"])
def test_a_damaged_shard_fails_naming_the_store_and_the_element(tmp_path, damage):
    layout = LAYOUTS["index without checksum"] if damage == "index past the end" else {}
    array, _ = _array(tmp_path / "a.zarr", **layout)
    _corrupt(tmp_path / "a.zarr", damage)
    out = np.empty(20, dtype=np.float32)
    with pytest.raises(UnreadableDataError, match="shard c/0") as error:
        stored(array).read_ranges(np.array([10, 100]), np.array([20, 110]), out)
    assert str(tmp_path / "a.zarr") in str(error.value)


def _read_in_child(path: str, queue) -> None:
    array = zarr.open_array(path, mode="r")
    starts, stops = _ranges(0)
    out = np.empty(int((stops - starts).sum()), dtype=np.float32)
    stored(array).read_ranges(starts, stops, out)
    queue.put(out.tolist())


@pytest.mark.skipif(sys.platform != "linux", reason="a forked child (a DataLoader worker) reads")
def test_a_forked_child_decodes_on_threads_of_its_own(tmp_path):
    array, values = _array(tmp_path / "a.zarr")
    starts, stops = _ranges(0)
    out = np.empty(int((stops - starts).sum()), dtype=np.float32)
    stored(array).read_ranges(starts, stops, out)  # the parent's threads exist now
    assert zarr_shards._pools
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_read_in_child, args=(str(tmp_path / "a.zarr"), queue))
    child.start()
    got = queue.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0
    np.testing.assert_array_equal(np.array(got, dtype=np.float32), _expected(values, starts, stops))


def _bytes_read_by_this_process() -> int:
    """``rchar`` of ``/proc/self/io``: bytes this process's read calls returned (zarr_shards reads the
    files itself, past zarr's store, so this is where its reads can be counted)."""
    with open("/proc/self/io") as io:
        return int(next(line for line in io if line.startswith("rchar:")).split()[1])


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="counts reads through Linux's /proc/self/io")
@pytest.mark.parametrize("zarrs", [True, False], ids=["zarrs", "zarr"])
def test_a_few_rows_of_a_sharded_store_read_only_their_inner_chunks(tmp_path, monkeypatch, zarrs):
    """A shadow's scattered rows of anndata 0.13's layout are read by zarr_shards, with zarrs' pipeline
    or zarr's, and read the inner chunks they need."""
    from shadows.backends import handles

    rng = np.random.default_rng(5)
    x = sp.random(20_000, 50, density=0.2, format="csr", random_state=rng, dtype=np.float32)
    path = tmp_path / "lazy.zarr"
    write(ad.AnnData(X=x), path, "zarr3")
    rechunk_sparse_x(path, chunks=(1024,), shards=(32_768,))
    stored = sum(f.stat().st_size for name in ("data", "indices") for f in (path / "X" / name).rglob("c/*"))
    handles.release(str(path))
    monkeypatch.setattr(settings, "zarrs", zarrs)
    shadow = AnnDataShadow(path)
    assert zarr_shards.layout(resolve(path).node("/X/data")) is not None
    assert shadow[:1].X.shape == (1, 50)  # metadata and pointers looked up before counting
    before = _bytes_read_by_this_process()
    few = shadow[np.array([100, 104, 109, 15_000])].X
    few_bytes = _bytes_read_by_this_process() - before
    before = _bytes_read_by_this_process()
    every = shadow[np.arange(0, 20_000, 2)].X
    every_bytes = _bytes_read_by_this_process() - before
    np.testing.assert_array_equal(few.toarray(), x[[100, 104, 109, 15_000]].toarray())
    np.testing.assert_array_equal(every.toarray(), x[::2].toarray())
    assert every_bytes >= 0.9 * stored  # the count sees zarr_shards' reads
    pointers = sum(f.stat().st_size for f in (path / "X" / "indptr").rglob("c/*"))  # read as a span
    assert few_bytes <= 0.05 * stored + pointers, (few_bytes, stored, pointers)  # 2 inner chunks of each array
    handles.release(str(path))


def test_scattered_rows_of_a_damaged_shard_fail_naming_the_store_and_x_data(tmp_path):
    """Through a shadow: the message names the store, the element (X/data) and the shard."""
    from shadows.backends import handles

    rng = np.random.default_rng(6)
    x = sp.random(2_000, 30, density=0.2, format="csr", random_state=rng, dtype=np.float32)
    path = tmp_path / "damaged.zarr"
    write(ad.AnnData(X=x), path, "zarr3")
    rechunk_sparse_x(path, chunks=(256,), shards=(4096,))
    _corrupt(path / "X" / "data", "index checksum")
    handles.release(str(path))
    shadow = AnnDataShadow(path)
    assert zarr_shards.layout(resolve(path).node("/X/data")) is not None
    with pytest.raises(UnreadableDataError, match=r"X/data.*shard c/0") as error:
        _ = shadow[np.arange(0, 2_000, 13)].X
    assert str(path) in str(error.value)
    handles.release(str(path))


@pytest.mark.parametrize("kind", KINDS)
def test_scattered_cells_and_scanpy_in_place_on_a_sharded_store_agree_with_anndata(tmp_path, monkeypatch, kind):
    """anndata 0.13's layout side by side on an in-memory AnnData, a shadow and a view of a shadow: X of
    scattered cells (read from the shards by the shadow and the view), then scanpy's in-place filter,
    normalization and log1p give anndata's values and object state."""
    path = write(make_counts(), tmp_path / "counts.zarr", "zarr3")
    rechunk_sparse_x(path, chunks=(256,), shards=(2048,))
    from_shards = []
    read_ranges = zarr_shards.read_ranges
    monkeypatch.setattr(zarr_shards, "read_ranges", lambda *args: from_shards.append(1) or read_ranges(*args))
    subject, oracle = subject_and_oracle(kind, path)
    oracle = oracle.copy() if oracle.is_view else oracle
    cells = np.random.default_rng(0).permutation(subject.n_obs)[: subject.n_obs // 3]
    assert_value_equal(sp.csr_matrix(subject[cells].X), sp.csr_matrix(oracle[cells].X), "X of scattered cells")
    assert bool(from_shards) is (kind != "memory")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for adata in (subject, oracle):
            sc.pp.filter_cells(adata, min_genes=20)
            sc.pp.normalize_total(adata, target_sum=1e4)
            sc.pp.log1p(adata)
    assert_same_state(subject, oracle)
    kept = cells[cells < oracle.n_obs]
    assert_value_equal(sp.csr_matrix(subject[kept].X), sp.csr_matrix(oracle[kept].X),
                       "X of scattered cells after the changes")
