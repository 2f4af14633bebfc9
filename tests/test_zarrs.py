"""Zarr reads through zarrs' codec pipeline (``shadows[zarrs]``, :mod:`shadows.backends.zarr_pipeline`):
which arrays take it, that what they read is what anndata reads, that scattered ranges of an array
:mod:`shadows.backends.zarr_shards` does not take are read as slices of whole chunks, and that a damaged
chunk still fails with a message naming the element."""

from __future__ import annotations

import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import zarr
from zarr.core.codec_pipeline import BatchedCodecPipeline
from zarr.registry import register_pipeline

from conftest import make_adata, write
from helpers import rechunk_sparse_x
from shadows import AnnDataShadow, settings
from shadows.backends import zarr_arrays
from shadows.backends.abc import stored
from shadows.backends.zarr_pipeline import uses_zarrs
from shadows.errors import UnreadableDataError

pytest.importorskip("zarrs")

#: a shard of 8 inner chunks of 64 values: a few hundred rows of X span several shards and many chunks
INNER, SHARD = 64, 512


def _sharded_store(path: Path, shards: tuple[int] | None = (SHARD,)) -> tuple[Path, ad.AnnData]:
    """An AnnData as Zarr v3 whose X/data and X/indices are sharded (Zstandard inner chunks), as anndata
    0.13 writes them, with chunks small enough for a test (``shards=None``: chunks of ``INNER`` values
    without shards)."""
    rng = np.random.default_rng(3)
    x = sp.random(400, 50, density=0.2, format="csr", random_state=rng, dtype=np.float32)
    keep = np.ones(400, dtype=np.float32)
    keep[rng.choice(400, 40, replace=False)] = 0
    x = sp.csr_matrix(sp.diags(keep) @ x)  # with empty rows
    x.eliminate_zeros()
    adata = ad.AnnData(X=x)
    write(adata, path, "zarr3")
    rechunk_sparse_x(path, chunks=(INNER,), **({"shards": shards} if shards else {}))
    return path, adata


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> tuple[Path, ad.AnnData]:
    return _sharded_store(tmp_path_factory.mktemp("zarrs") / "sharded.zarr")


@pytest.fixture(scope="module")
def chunked(tmp_path_factory) -> tuple[Path, ad.AnnData]:
    return _sharded_store(tmp_path_factory.mktemp("zarrs") / "chunked.zarr", shards=None)


@pytest.fixture(params=[True, False], ids=["zarrs", "zarr"])
def pipeline(request):
    with settings.override(zarrs=request.param):
        yield request.param


def _data_node(path: Path):
    from shadows.backends.fileref import resolve

    return resolve(path).node("/X/data")


def test_sharded_arrays_are_read_through_zarrs_unless_the_setting_says_no(sharded):
    from shadows.backends import handles

    path, _ = sharded
    handles.release(str(path))
    assert uses_zarrs(_data_node(path))
    handles.release(str(path))
    with settings.override(zarrs=False):
        assert not uses_zarrs(_data_node(path))
    handles.release(str(path))


def test_blosc_chunks_keep_zarrs_pipeline_and_their_checks(tmp_path):
    """anndata 0.12's layout (format 2, Blosc): its chunks are checked before numcodecs decodes them,
    which zarrs, reading the files itself, would pass by."""
    path = write(make_adata(), tmp_path / "v2.zarr", "zarr2")
    assert not uses_zarrs(_data_node(path))


class _ChosenPipeline(BatchedCodecPipeline):
    """A codec pipeline a user registered and chose."""


def test_zarrs_is_used_under_zarrs_default_or_a_user_choice_of_zarrs_and_any_other_choice_is_kept(sharded):
    from shadows.backends import handles

    register_pipeline(_ChosenPipeline)
    path, _ = sharded
    chosen = {"zarr's default": "zarr.core.codec_pipeline.BatchedCodecPipeline",
              "zarrs": "zarrs.ZarrsCodecPipeline",
              "another": f"{_ChosenPipeline.__module__}.{_ChosenPipeline.__qualname__}"}
    try:
        for name, pipeline_path in chosen.items():
            handles.release(str(path))
            with zarr.config.set({"codec_pipeline.path": pipeline_path}):
                node = _data_node(path)
                assert uses_zarrs(node) is (name != "another"), name
                if name == "another":
                    assert isinstance(node.async_array.codec_pipeline, _ChosenPipeline)
    finally:
        handles.release(str(path))


@pytest.mark.parametrize("selection", ["random rows", "sorted rows", "repeated rows", "a slice", "rows and genes",
                                       "one gene", "every row"])
def test_reads_of_a_sharded_store_agree_with_anndata(sharded, pipeline, selection):
    from shadows.backends import handles

    path, adata = sharded
    handles.release(str(path))
    rng = np.random.default_rng(7)
    rows = {"random rows": rng.permutation(400)[:60], "sorted rows": np.sort(rng.choice(400, 90, replace=False)),
            "repeated rows": np.array([5, 5, 399, 0, 200, 5]), "a slice": slice(17, 333),
            "rows and genes": rng.choice(400, 50, replace=False), "one gene": slice(None),
            "every row": slice(None)}[selection]
    cols = {"rows and genes": np.array([3, 40, 1]), "one gene": [11]}.get(selection, slice(None))
    expected = adata.X[rows][:, cols]
    shadow = AnnDataShadow(path)
    got = shadow[rows][:, cols].X
    assert sp.issparse(got)
    np.testing.assert_array_equal(got.toarray(), expected.toarray())
    lazy = AnnDataShadow(path, array_backend="dask")[rows][:, cols].X.compute()
    np.testing.assert_array_equal(lazy.toarray(), expected.toarray())
    assert uses_zarrs(_data_node(path)) is pipeline
    handles.release(str(path))


@pytest.mark.parametrize("per_read", [INNER, 3 * INNER, 1 << 23])
def test_scattered_ranges_are_read_as_slices_of_whole_chunks(chunked, monkeypatch, per_read):
    """Ranges crossing the slices' edges, empty ranges, ranges joined across one untouched chunk or
    separated by more, and the array's last partial chunk: each value lands where it belongs, and each
    slice zarrs is given starts and ends at chunk edges (or the array's end). (Chunks without shards:
    zarr_shards reads a sharded array's.)"""
    from shadows.backends import handles, zarr_shards

    path, _ = chunked
    handles.release(str(path))
    node = _data_node(path)
    assert uses_zarrs(node) and zarr_shards.layout(node) is None
    values = node[...]
    n = values.size
    rng = np.random.default_rng(per_read)
    edges = np.sort(rng.choice(n, 120, replace=False))
    starts, stops = edges[0::2].copy(), edges[1::2].copy()
    stops[::5] = starts[::5]  # empty ranges
    starts, stops = np.append(starts, n - 3), np.append(stops, n)  # the last partial chunk
    sliced = []
    real = type(node).__getitem__

    class Recording(type(node)):
        def __getitem__(self, key):
            sliced.append(key)
            return real(self, key)

    monkeypatch.setattr(zarr_arrays, "ZARRS_VALUES_PER_READ", per_read)
    recording = Recording(node.async_array)
    out = np.empty(int((stops - starts).sum()), dtype=values.dtype)
    stored(recording).read_ranges(starts, stops, out)
    np.testing.assert_array_equal(out, np.concatenate([values[a:b] for a, b in zip(starts, stops, strict=True)]))
    assert sliced and all(isinstance(k, slice) for k in sliced)
    assert all(k.start % INNER == 0 and (k.stop % INNER == 0 or k.stop == n) for k in sliced)
    assert all(k.stop - k.start <= max(per_read // INNER * INNER, INNER) for k in sliced)
    starts_read = [k.start for k in sliced]
    assert starts_read == sorted(set(starts_read))  # no chunk decoded twice
    handles.release(str(path))


@pytest.mark.parametrize("damage", ["index", "truncated"])
def test_a_damaged_shard_read_through_zarrs_names_the_element(tmp_path, damage):
    """A shard whose index fails its checksum, or cut short, read through zarrs (a slice of rows;
    scattered rows go through zarr_shards, tested in test_zarr_shards.py): zarrs raises (RuntimeError),
    shadows names the store and the element. (Zeroed bytes inside a Zstandard frame without a checksum
    decode, silently, to other values in zarr's pipeline, in zarrs and in zarr_shards alike: anndata 0.13
    writes frames without checksums.)"""
    from shadows.backends import handles

    path, _ = _sharded_store(tmp_path / "damaged.zarr")
    shard = path / "X" / "data" / "c" / "0"
    raw = shard.read_bytes()
    shard.write_bytes(raw[:-20] + b"\xff" * 10 + raw[-10:] if damage == "index" else raw[: len(raw) // 2])
    handles.release(str(path))
    shadow = AnnDataShadow(path)
    assert uses_zarrs(_data_node(path))
    with warnings.catch_warnings(), pytest.raises(UnreadableDataError, match=r"X/data") as error:
        warnings.simplefilter("error")
        _ = shadow[10:300].X
    assert str(path) in str(error.value)
    handles.release(str(path))
