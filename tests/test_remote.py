"""Remote files: shadows of h5ad and Zarr over HTTP (range requests) and in S3 (moto's server), on loopback.

Both servers run in this process, started by fixtures: aiohttp's static file server (it honours
``Range``), with the bytes each request asks for counted per file, and moto's S3-compatible server.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import S3_SECRET as SECRET
from conftest import make_adata, read_oracle, write
from helpers import assert_shadow_matches, assert_value_equal
from shadows import AnnDataShadow, MuDataShadow, ShadowsError, ShadowsFileNotFoundError
from shadows.core.committing import READ_ONLY_MESSAGE

pytest.importorskip("fsspec")
pytest.importorskip("aiohttp")



def _served_bytes(request, folder: Path) -> int:
    """Bytes a GET of ``request`` answers with: the requested range of the file, or all of it."""
    path = folder / request.path.lstrip("/")
    if request.method != "GET" or not path.is_file():
        return 0
    size = path.stat().st_size
    match = re.fullmatch(r"bytes=(\d+)-(\d*)", request.headers.get("Range", ""))
    if match is None:
        return size
    start, end = int(match.group(1)), min(int(match.group(2) or size - 1), size - 1)
    return max(0, end - start + 1)


@pytest.fixture(scope="module")
def http_root(tmp_path_factory):
    """(base URL, served folder, bytes sent per path, request methods): aiohttp's static file server
    (which answers ``Range`` requests) on loopback, in a thread of its own."""
    import asyncio

    from aiohttp import web

    folder = tmp_path_factory.mktemp("served")
    sent, methods = Counter(), Counter()

    @web.middleware
    async def count(request, handler):
        methods[request.method] += 1
        sent[request.path] += _served_bytes(request, folder)
        return await handler(request)

    app = web.Application(middlewares=[count])
    app.router.add_static("/", folder, show_index=True)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}", folder, sent, methods
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=30)


def _serve(adata_fmt: str, folder: Path, name: str):
    return write(make_adata(), folder / name, adata_fmt)


@pytest.mark.parametrize(("fmt", "name"), [("h5ad", "a.h5ad"), ("zarr2", "a2.zarr"), ("zarr3", "a3.zarr")])
def test_http_values_equal_a_local_read(http_root, fmt, name):
    base, folder, _, methods = http_root
    local = _serve(fmt, folder, name)
    shadow = AnnDataShadow(f"{base}/{name}")
    assert_shadow_matches(shadow, read_oracle(local))
    assert_shadow_matches(shadow[::3, 2:9], read_oracle(local)[::3, 2:9])
    assert methods["PUT"] == methods["POST"] == methods["DELETE"] == 0


def test_remote_hdf5_reads_pause_collection_from_before_h5py_takes_its_lock(http_root, monkeypatch):
    """h5py holds a global lock through its calls while fsspec's thread fetches the bytes: a collection
    starting on that thread meanwhile and freeing an h5py object would wait for the lock forever (seen
    as a request hanging until aiohttp's 5-minute timeout, the server thread collecting here). Collection
    is paused for the whole read of an element, not only while the file object reads."""
    import gc

    from shadows.backends.hdf5_arrays import Hdf5Array

    base, folder, _, _ = http_root
    local = _serve("h5ad", folder, "paused.h5ad")
    shadow = AnnDataShadow(f"{base}/paused.h5ad", array_backend="dask")
    seen = []
    original = Hdf5Array.read

    def read(self, *args, **kwargs):
        seen.append(gc.isenabled())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Hdf5Array, "read", read)
    assert gc.isenabled()
    assert_value_equal(shadow.obsm["X_pca"].compute(), read_oracle(local).obsm["X_pca"], "obsm/X_pca")
    assert seen and not any(seen)
    assert gc.isenabled()  # and resumed after


def test_collection_stays_paused_until_the_last_of_overlapping_pauses_ends():
    import gc

    from shadows.backends.remote import collection_paused

    assert gc.isenabled()
    first, second = collection_paused(), collection_paused()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert not gc.isenabled()  # the second (another thread's read, say) still runs
    second.__exit__(None, None, None)
    assert gc.isenabled()
    gc.disable()
    try:
        with collection_paused():
            pass
        assert not gc.isenabled()  # disabled by the user before: left so
    finally:
        gc.enable()


def test_http_format_is_inferred_without_a_suffix(http_root):
    base, folder, _, _ = http_root
    _serve("h5ad", folder, "nosuffix_h5")
    _serve("zarr3", folder, "nosuffix_zarr")
    assert AnnDataShadow(f"{base}/nosuffix_h5")._elements.ref.format == "hdf5"
    assert AnnDataShadow(f"{base}/nosuffix_zarr")._elements.ref.format == "zarr"


def test_http_row_subset_fetches_about_its_share_of_x(http_root):
    import anndata as ad
    import scipy.sparse as sp

    base, folder, sent, _ = http_root
    n_obs, per_row = 200_000, 25  # 5M non-zeros: a 40 MB X, 25 sorted distinct genes of 500 per row
    rng = np.random.default_rng(0)
    indices = (np.arange(per_row) * 20 + rng.integers(0, 20, (n_obs, per_row))).ravel().astype(np.int32)
    X = sp.csr_matrix((rng.random(n_obs * per_row, dtype=np.float32), indices,
                       np.arange(0, n_obs * per_row + 1, per_row)), shape=(n_obs, 500))
    path = folder / "big.h5ad"
    ad.AnnData(X).write_h5ad(path)
    x_bytes = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    shadow = AnnDataShadow(f"{base}/big.h5ad")
    sent.clear()
    rows = shadow[100_000:102_000].X  # 1 % of the rows
    fetched = sent["/big.h5ad"]  # everything requested: X's bytes, HDF5's metadata, read-ahead
    np.testing.assert_array_equal(rows.toarray(), X[100_000:102_000].toarray())
    # 1 % of X's bytes, plus a fixed cost: the read tasks open the file themselves (HDF5's superblock and
    # object headers) and every request reads 16 KiB ahead; measured here: 2.2 % in all
    assert fetched < 0.025 * x_bytes, f"{fetched} bytes fetched for 1 % of a {x_bytes}-byte X"


def test_s3_reads_views_dask_and_process_workers(s3, tmp_path):
    options, fs = s3
    local_h5 = write(make_adata(), tmp_path / "s.h5ad", "h5ad")
    local_zarr = write(make_adata(), tmp_path / "s.zarr", "zarr3")
    fs.put(str(local_h5), "data/s.h5ad")
    fs.put(str(local_zarr), "data/s.zarr", recursive=True)
    for url, local in (("s3://data/s.h5ad", local_h5), ("s3://data/s.zarr", local_zarr)):
        oracle = read_oracle(local)
        shadow = AnnDataShadow(url, storage_options=options)
        assert_shadow_matches(shadow, oracle)
        assert_shadow_matches(shadow[oracle.obs_names[5:40:2]], oracle[5:40:2])
        lazy = AnnDataShadow(url, array_backend="dask", storage_options=options)
        np.testing.assert_allclose(np.asarray(lazy.X.sum(axis=0).compute()).ravel(),
                                   np.asarray(oracle.X.sum(axis=0)).ravel(), rtol=1e-6)
        text = repr(shadow) + repr(shadow._elements.ref) + repr(lazy.X.dask)[:0] + shadow._repr_html_()
        assert SECRET not in text


def test_s3_graphs_run_on_process_workers(s3, tmp_path):
    distributed = pytest.importorskip("distributed")
    options, fs = s3
    local = write(make_adata(), tmp_path / "w.zarr", "zarr2")
    fs.put(str(local), "data/w.zarr", recursive=True)
    lazy = AnnDataShadow("s3://data/w.zarr", array_backend="dask", storage_options=options)
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, distributed.Client(cluster):
        sums = lazy[::2].layers["dense"].sum(axis=0).compute()
    np.testing.assert_allclose(sums, read_oracle(local).layers["dense"][::2].sum(axis=0), rtol=1e-6)


def test_s3_zarr_write_commits_and_anndata_reads_it(s3, tmp_path):
    import anndata as ad
    import zarr

    options, fs = s3
    local = write(make_adata(), tmp_path / "rw.zarr", "zarr3")
    fs.put(str(local), "data/rw.zarr", recursive=True)
    shadow = AnnDataShadow("s3://data/rw.zarr", mode="r+", storage_options=options)
    shadow.obsm["X_new"] = np.arange(120.0).reshape(60, 2)
    lazy = AnnDataShadow("s3://data/rw.zarr", array_backend="dask", storage_options=options)
    shadow.layers["log"] = np.log1p(lazy.X)
    shadow.obs["score"] = np.arange(60)
    shadow.write()
    assert "X_new" in AnnDataShadow("s3://data/rw.zarr", storage_options=options).obsm
    fs.get("data/rw.zarr", str(tmp_path / "back.zarr"), recursive=True)
    back = ad.read_zarr(tmp_path / "back.zarr")
    assert_value_equal(back.obsm["X_new"], np.arange(120.0).reshape(60, 2), "obsm/X_new")
    assert_value_equal(back.layers["log"], np.log1p(read_oracle(local).X), "layers/log")
    np.testing.assert_array_equal(back.obs["score"], np.arange(60))
    assert not fs.exists("data/rw.zarr/.shadows-tmp") or not fs.ls("data/rw.zarr/.shadows-tmp")
    group = zarr.open_group(zarr.storage.FsspecStore.from_url("s3://data/rw.zarr", storage_options=options,
                                                              read_only=True), mode="r")
    assert "X_new" in group["obsm"]
    shadow.obsm["X_pca"] = np.zeros((60, 3), dtype=np.float32)  # replacing and deleting need overwrite=True
    del shadow.obsm["X_umap"]
    del shadow.obs["float"]
    shadow.write(overwrite=True)
    fs.invalidate_cache()
    fs.get("data/rw.zarr", str(tmp_path / "again.zarr"), recursive=True)
    again = ad.read_zarr(tmp_path / "again.zarr")
    assert_value_equal(again.obsm["X_pca"], np.zeros((60, 3), dtype=np.float32), "obsm/X_pca")
    assert "X_umap" not in again.obsm and "float" not in again.obs and "X_new" in again.obsm
    assert_value_equal(again.obsm["frame"], read_oracle(local).obsm["frame"], "obsm/frame")


def test_read_only_remote_write_sends_nothing(http_root, s3, tmp_path):
    base, folder, _, methods = http_root
    _serve("h5ad", folder, "ro.h5ad")
    shadow = AnnDataShadow(f"{base}/ro.h5ad")
    shadow.obsm["x"] = np.ones((60, 1))
    with pytest.raises(OSError) as error:
        shadow.write()
    assert str(error.value).endswith(f": {READ_ONLY_MESSAGE}")  # the file named first
    with pytest.raises(OSError, match="HDF5 file behind a URL can only be read"):
        shadow.reopen("r+")
    with pytest.raises(OSError, match="does not take writes"):
        AnnDataShadow(f"{base}/a3.zarr" if (folder / "a3.zarr").exists() else f"{base}/ro.h5ad",
                      mode="r+", format="zarr")
    assert methods["PUT"] == methods["POST"] == methods["DELETE"] == 0
    options, fs = s3
    fs.put(str(write(make_adata(), tmp_path / "ro.zarr", "zarr3")), "data/ro.zarr", recursive=True)
    before = sorted(fs.find("data/ro.zarr"))
    remote = AnnDataShadow("s3://data/ro.zarr", storage_options=options)
    remote.obsm["x"] = np.ones((60, 1))
    with pytest.raises(OSError):
        remote.write()
    fs.invalidate_cache()
    assert sorted(fs.find("data/ro.zarr")) == before


def test_missing_objects_and_network_errors_name_the_url(http_root, s3, tmp_path):
    base = http_root[0]
    with pytest.raises(ShadowsFileNotFoundError, match=r"127\.0\.0\.1.*missing\.h5ad"):
        AnnDataShadow(f"{base}/missing.h5ad")
    options, fs = s3
    with pytest.raises(FileNotFoundError, match=r"s3://data/nothing\.zarr"):
        AnnDataShadow("s3://data/nothing.zarr", storage_options=options)
    local = write(make_adata(), tmp_path / "gap.zarr", "zarr3")
    fs.put(str(local), "data/gap.zarr", recursive=True)
    for chunk in fs.find("data/gap.zarr/obsm/X_pca"):
        if not chunk.endswith("zarr.json"):
            fs.rm(chunk)
    shadow = AnnDataShadow("s3://data/gap.zarr", storage_options=options)
    try:
        value = shadow.obsm["X_pca"]  # zarr fills missing chunks with the fill value
        assert value.shape == (60, 5)
    except ShadowsError as error:
        assert "gap.zarr" in str(error) and "obsm/X_pca" in str(error)
    dead = {**options, "client_kwargs": {**options["client_kwargs"], "endpoint_url": "http://127.0.0.1:9"},
            "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1}}  # nothing listens on port 9
    with pytest.raises(ShadowsError, match=r"s3://data/gap\.zarr") as error:
        AnnDataShadow("s3://data/gap.zarr", storage_options=dead)
    assert SECRET not in str(error.value)


def test_mudata_over_http(http_root, tmp_path):
    mudata = pytest.importorskip("mudata")
    base, folder, _, _ = http_root
    mudata.MuData({"rna": make_adata(), "atac": make_adata(n_vars=9, seed=1)}).write_h5mu(folder / "m.h5mu")
    shadow = MuDataShadow(f"{base}/m.h5mu")
    assert shadow.n_mod == 2 and shadow.mod["atac"].shape == (60, 9)
    one = AnnDataShadow(f"{base}/m.h5mu/mod/rna")
    assert_value_equal(one.obsm["X_pca"], make_adata().obsm["X_pca"], "mod/rna/obsm/X_pca")


def teardown_module():
    shutil.rmtree(Path(os.environ.get("TMPDIR", "/tmp")) / "shadows-remote", ignore_errors=True)


def test_s3_zarr_without_consolidated_metadata(s3, tmp_path):
    from conftest import drop_consolidated

    options, fs = s3
    for fmt in ("zarr2", "zarr3"):
        local = write(make_adata(), tmp_path / f"plain_{fmt}.zarr", fmt)
        drop_consolidated(local)
        fs.put(str(local), f"data/plain_{fmt}.zarr", recursive=True)
        shadow = AnnDataShadow(f"s3://data/plain_{fmt}.zarr", storage_options=options)
        assert not shadow._elements.connection.handle.consolidated  # each node's metadata read, children listed
        expected = read_oracle(local)
        # each format's own metadata files found and listed; the values are read as with consolidated
        # metadata (every element over S3: test_s3_reads_views_dask_and_process_workers), so X and obs stand for them
        for slot in ("layers", "obsm", "varm", "obsp", "varp", "uns"):
            assert set(getattr(shadow, slot).keys()) == set(getattr(expected, slot).keys()), slot
        assert_value_equal(shadow.X, expected.X)
        assert_value_equal(shadow.obs, expected.obs)


def test_a_failed_read_names_the_url_and_the_element(http_root):
    base, folder, _, _ = http_root
    local = _serve("h5ad", folder, "vanishing.h5ad")
    shadow = AnnDataShadow(f"{base}/vanishing.h5ad")
    local.unlink()  # the server answers 404 from now on
    with pytest.raises(ShadowsError, match=r"127\.0\.0\.1:\d+/vanishing\.h5ad: element '(X|X/\w+)'") as error:
        _ = shadow.X
    assert isinstance(error.value, OSError)


def test_read_zarr_of_an_open_remote_group_reopens_it_by_location(http_root, s3):
    """anndata's habit, a zarr.Group, for stores behind HTTP and S3 (zarr keeps an HTTP store's whole URL
    as its path, and opens filesystems asynchronous: the shadow takes the location and plain options)."""
    import zarr

    import shadows

    base, folder, _, _ = http_root
    local = _serve("zarr3", folder, "group3.zarr")
    expected = read_oracle(local)
    over_http = shadows.read_zarr(zarr.open_group(f"{base}/group3.zarr", mode="r"))
    assert over_http.filename.startswith(base)
    assert_shadow_matches(over_http, expected)
    options, fs = s3
    fs.put(str(local), "data/group3.zarr", recursive=True)
    over_s3 = shadows.read_zarr(zarr.open_group("s3://data/group3.zarr", mode="r", storage_options=options))
    assert "asynchronous" not in over_s3._elements.ref.storage_options
    assert_shadow_matches(over_s3, expected)
