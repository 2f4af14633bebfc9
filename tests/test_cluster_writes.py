"""Writes under a ``distributed.Client``: a Zarr target is filled by the workers (nothing of an element's
data reaches the client), an HDF5 export receives the blocks computed on the cluster a few at a time,
progress is distributed's for the former, and a worker killed mid-write never leaves a partial element.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import warnings

import anndata as ad
import numpy as np
import pytest

from conftest import make_adata, read_oracle, write
from shadows import AnnDataShadow

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.usefixtures("nothing_held_for_writing")


@pytest.fixture(autouse=True)
def _progress_drawn_as_on_a_terminal(monkeypatch):
    """The bars here are read as a terminal shows them (redrawn on one line); where the output is not a
    terminal they print a few plain lines instead (tests/test_new_user.py).
    """
    monkeypatch.setattr("shadows.progress.is_terminal", lambda stream: True)


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, distributed.Client(cluster) as client:
        yield client


@pytest.fixture
def received(monkeypatch):
    """Bytes of the results the client receives from the cluster (``Future.result``), counted."""
    counted = []
    result = distributed.Future.result

    def counting(self, *args, **kwargs):
        value = result(self, *args, **kwargs)
        counted.append(int(getattr(value, "nbytes", 0) or 0))
        return value

    monkeypatch.setattr(distributed.Future, "result", counting)
    return counted


@pytest.mark.parametrize(("fmt", "unrelated_h5ad_held"), [("zarr2", False), ("zarr3", False), ("zarr3", True)])
def test_workers_write_zarr_elements_and_the_client_receives_none_of_their_data(client, fmt, unrelated_h5ad_held,
                                                                              tmp_path, received, capsys):
    """Also while this process holds an unrelated h5ad open for writing (which keeps only the graphs that
    read it off the cluster): the workers still write, under distributed's bar.
    """
    path = write(make_adata(n_obs=400), tmp_path / "a.zarr", fmt)
    unrelated = None
    if unrelated_h5ad_held:
        unrelated = AnnDataShadow(write(make_adata(n_obs=20), tmp_path / "held.h5ad", "h5ad"), mode="r+")
    lazy = AnnDataShadow(path, array_backend="dask", mode="r+")
    lazy.layers["double"] = lazy.X.rechunk((50, -1)) * 2  # 8 sparse blocks
    lazy.obsm["dense2"] = lazy.obsm["X_pca"].rechunk((50, -1)) * 2
    with distributed.get_task_stream(client=client) as stream:
        lazy.write(progress=True)
    lazy.close()
    if unrelated is not None:
        unrelated.close()
    oracle = read_oracle(path)
    assert (oracle.layers["double"] != oracle.X * 2).nnz == 0
    np.testing.assert_array_equal(oracle.obsm["dense2"], oracle.obsm["X_pca"] * 2)
    ran = {record["key"] if isinstance(record["key"], str) else record["key"][0] for record in stream.data}
    assert any("store-map" in key for key in ran) and any(key.startswith("write-") for key in ran), ran
    data_bytes = oracle.layers["double"].data.nbytes + oracle.obsm["dense2"].nbytes
    assert sum(received) < data_bytes / 20, (sum(received), data_bytes)  # block counts and sums, not data
    captured = capsys.readouterr()
    assert "% Completed" in captured.out and "writing [" not in captured.err  # distributed's bar, not ours
    assert not any(p.name.startswith(".shadows") for p in path.iterdir())


def test_an_hdf5_export_receives_blocks_computed_on_the_cluster(client, tmp_path, received, capsys):
    path = write(make_adata(n_obs=400), tmp_path / "a.h5ad", "h5ad")
    lazy = AnnDataShadow(path, array_backend="dask")
    lazy.layers["double"] = lazy.X.rechunk((50, -1)) * 2
    lazy.obsm["dense2"] = lazy.obsm["X_pca"].rechunk((50, -1)) * 2
    lazy[::2].copy(tmp_path / "out.h5ad", progress=True).close()
    out, oracle = ad.read_h5ad(tmp_path / "out.h5ad"), read_oracle(path)[::2]
    assert (out.layers["double"] != oracle.X * 2).nnz == 0
    np.testing.assert_array_equal(out.obsm["dense2"], oracle.obsm["X_pca"] * 2)
    assert len(received) > 8  # block by block
    draws = [d for d in capsys.readouterr().err.split("\r") if d.strip()]
    assert draws[-1].startswith("exporting [") and " 100% " in draws[-1]  # one writer: this process's bar


def test_blocks_stream_in_with_a_bounded_number_in_flight(client, monkeypatch):
    import dask

    from shadows.writing import streams

    submitted, written, most = [], [], [0]
    compute = client.compute

    def counting(block, *args, **kwargs):
        submitted.append(block)
        most[0] = max(most[0], len(submitted) - len(written))
        return compute(block, *args, **kwargs)

    monkeypatch.setattr(client, "compute", counting)
    blocks = [dask.delayed(np.full)(3, i) for i in range(30)]
    results = streams.stream_blocks(client, blocks, list(range(30)), lambda block, i: written.append(i) or block[0])
    assert results == list(range(30)) and sorted(written) == list(range(30))
    assert most[0] <= streams.BLOCKS_IN_FLIGHT * 2  # two worker threads


def test_writing_into_its_own_hdf5_file_computes_here(client, tmp_path):
    """The file is open for writing: the workers could not read it (HDF5 locks it), so this process computes."""
    path = write(make_adata(), tmp_path / "a.h5ad", "h5ad")
    lazy = AnnDataShadow(path, array_backend="dask", mode="r+")
    lazy.layers["double"] = lazy.X * 2
    lazy.write()
    lazy.close()
    oracle = read_oracle(path)
    assert (oracle.layers["double"] != oracle.X * 2).nnz == 0


def _slow(block):
    time.sleep(0.4)
    return block * 2


def test_a_worker_killed_mid_write_never_leaves_a_partial_element(tmp_path):
    """dask recomputes the lost tasks on the other worker: the commit completes, or the element is absent."""
    path = write(make_adata(n_obs=400), tmp_path / "a.zarr", "zarr3")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, distributed.Client(cluster) as client, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lazy = AnnDataShadow(path, array_backend="dask", mode="r+")
        lazy.obsm["slow"] = lazy.obsm["X_pca"].rechunk((25, -1)).map_blocks(_slow)  # 16 blocks, ~3 s
        victim = next(iter(client.run(os.getpid).values()))
        killer = threading.Timer(1.0, os.kill, (victim, signal.SIGKILL))
        killer.start()
        try:
            lazy.write()
            failed = None
        except Exception as error:  # a write may also give up; then nothing of the element is there
            failed = error
        finally:
            killer.join()
        lazy.close()
    print("killed worker", victim, "write", "completed" if failed is None else f"failed: {failed!r}")
    oracle = read_oracle(path)
    if failed is None:
        np.testing.assert_array_equal(oracle.obsm["slow"], oracle.obsm["X_pca"] * 2)
    else:
        assert "slow" not in oracle.obsm, failed
