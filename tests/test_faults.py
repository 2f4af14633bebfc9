"""Faults a file must survive: killed writers, a full disk, a file left open for writing, concurrent
readers and writers, and the read-only guarantee.

Writers and holders run in child processes, so a kill, a crash at exit or an HDF5 lock is real.
The kill runs are marked ``slow``: ``pytest -m "not slow"`` leaves them out.
"""

from __future__ import annotations

import glob
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import make_adata, read_oracle, suffix, write
from helpers import ForkedProcess, assert_shadow_matches, assert_value_equal, element_digests, file_digest, fork_server
from shadows import AnnDataShadow, FileBusyError, MuDataShadow

#: Kill runs per format, for new elements (3 formats: 12 runs) and for replacements (6 runs). Each run
#: kills in its own stratum of the write (see :func:`kill_time`), so a few runs cover every phase.
KILL_RUNS = 4
REPLACE_RUNS = 2
#: The writer's layer takes about this long to write (80 blocks, each sleeping 20 ms).
WRITE_SECONDS = 1.6

KILL_SCRIPT = """
import sys, numpy as np, dask.array as da
from shadows import AnnDataShadow
shadow = AnnDataShadow(sys.argv[1], mode="r+")
shadow.layers["big"] = da.random.default_rng(0).random((4000, 15), chunks=(50, 15)).map_blocks(
    lambda b: (__import__("time").sleep(0.02), b)[1], dtype=np.float64)
shadow.obs["new_column"] = np.arange(4000.0)
print("writing", flush=True)
shadow.write()
print("done", flush=True)
"""

REPLACE_SCRIPT = """
import sys, numpy as np, dask.array as da
from shadows import AnnDataShadow
shadow = AnnDataShadow(sys.argv[1], mode="r+")
shadow.layers["dense"] = da.full((4000, 15), 7.0, chunks=(50, 15), dtype=np.float32).map_blocks(
    lambda b: (__import__("time").sleep(0.02), b)[1], dtype=np.float32)
print("writing", flush=True)
shadow.write(overwrite=True)
print("done", flush=True)
"""


def writable_file(path: Path, fmt: str) -> Path:
    """A 4000 × 15 AnnData with every encoding (but no 4000 × 4000 dense obsp: 128 MB to hash per run)."""
    adata = make_adata(n_obs=4000, n_vars=15)
    del adata.obsp["dense_dist"]
    return write(adata, path, fmt)


def start(script: str, *args: str) -> ForkedProcess:
    """Run ``script`` in a child Python (forked from one that made the imports: :func:`helpers.fork_server`)
    and wait for its first line (it says it is about to write)."""
    child = fork_server().start(script, *args)
    first = child.stdout.readline().strip()
    assert first in ("writing", "held"), child.stderr.read()
    return child


def kill_time(run: int, runs: int, seed: int) -> float:
    """When run ``run`` of ``runs`` kills the writer: a random moment of its own equal share of the time from
    the first block to past the commit, so the runs together land in every phase."""
    return (run + np.random.default_rng(seed + run).uniform()) / runs * (WRITE_SECONDS + 0.6)


def kill_after(child: ForkedProcess, seconds: float) -> None:
    time.sleep(seconds)
    child.kill()  # past the commit, the writer may have ended already
    child.wait()


def forget_scratch(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path / ".shadows-tmp", ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("run", range(KILL_RUNS))
def test_a_killed_writer_leaves_old_elements_intact_and_the_new_one_whole_or_absent(fmt, tmp_path, run):
    path = writable_file(tmp_path / f"k{suffix(fmt)}", fmt)
    before = element_digests(path)
    writer = start(KILL_SCRIPT, path)
    # from the first block to past the commit: the kill lands in every phase across the runs
    kill_after(writer, kill_time(run, KILL_RUNS, seed=0))
    after = element_digests(path)
    assert {k: v for k, v in after.items() if k in before} == before  # every old element bit-identical
    adata = read_oracle(path)  # the file opens
    if "big" in adata.layers:
        assert adata.layers["big"].shape == (4000, 15) and np.all(adata.layers["big"] > 0)
    if "new_column" in adata.obs:
        np.testing.assert_array_equal(adata.obs["new_column"], np.arange(4000.0))
    assert AnnDataShadow(path).shape == (4000, 15)
    forget_scratch(path)


@pytest.mark.slow
@pytest.mark.parametrize("run", range(REPLACE_RUNS))
def test_a_killed_replacement_leaves_the_old_element_or_the_new_one(fmt, tmp_path, run):
    path = writable_file(tmp_path / f"r{suffix(fmt)}", fmt)
    old = read_oracle(path).layers["dense"]
    before = {k: v for k, v in element_digests(path).items() if not k.startswith("layers/dense")}
    writer = start(REPLACE_SCRIPT, path)
    kill_after(writer, kill_time(run, REPLACE_RUNS, seed=10))
    after = element_digests(path)
    assert {k: v for k, v in after.items() if k in before} == before
    dense = read_oracle(path).layers["dense"]  # present: the old values or the new ones, never a mix
    assert np.array_equal(dense, old) or np.all(dense == 7.0)


#: Replaces a layer (in other chunks and another dtype, so its metadata changes) and deletes an obsm
#: entry, then dies where the commit would consolidate: every swap is done, the consolidation is not.
DIES_BEFORE_CONSOLIDATING_SCRIPT = """
import importlib, os, sys, numpy as np, dask.array as da
from shadows import AnnDataShadow
importlib.import_module("shadows.writing.commit").ZarrCommitBase.consolidate = lambda self: os._exit(3)
shadow = AnnDataShadow(sys.argv[1], mode="r+")
shadow.layers["dense"] = da.full((4000, 15), 7.0, chunks=(50, 15), dtype=np.float64)
del shadow.obsm["X_umap"]
shadow.write(overwrite=True)
"""


@pytest.mark.parametrize("fmt", ["zarr2", "zarr3"])
def test_a_writer_killed_before_consolidating_leaves_a_store_that_reads_what_it_committed(fmt, tmp_path):
    """The consolidated metadata cannot be swapped with a folder: it is dropped before the first
    replacement, so a store left between the swaps and the consolidation reads each node's own metadata
    (it used to describe the replaced layer's old chunks, and the deleted entry as present)."""
    path = writable_file(tmp_path / f"c{suffix(fmt)}", fmt)
    code, _, stderr = fork_server().run(DIES_BEFORE_CONSOLIDATING_SCRIPT, path)
    assert code == 3, stderr
    adata = read_oracle(path)
    assert adata.layers["dense"].dtype == np.float64 and np.all(adata.layers["dense"] == 7.0)
    assert "X_umap" not in adata.obsm and "X_pca" in adata.obsm
    shadow = AnnDataShadow(path)
    assert "X_umap" not in shadow.obsm
    np.testing.assert_array_equal(shadow.layers["dense"], adata.layers["dense"])


FULL_DISK_SCRIPT = """
import resource, signal, sys, numpy as np
from shadows import AnnDataShadow, ShadowsError
# the kernel's answer to a write past RLIMIT_FSIZE is SIGXFSZ (which kills); ignored, the write fails
# with EFBIG, as on a full disk (ENOSPC)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
path, limit = sys.argv[1], int(sys.argv[2])
shadow = AnnDataShadow(path, mode="r+")
shadow.layers["big"] = np.random.default_rng(0).random((4000, 15))  # 480 kB, does not compress
shadow.obsm["small"] = np.ones((4000, 2))
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
try:
    shadow.write()
except ShadowsError as error:
    print(json.dumps({"types": [c.__name__ for c in type(error).__mro__], "message": str(error),
                      "staged": [shadow.layers.is_staged("big"), shadow.obsm.is_staged("small")],
                      "committed": getattr(error, "committed", None), "left": getattr(error, "staged", None)}))
else:
    print(json.dumps({"types": [], "message": "no error"}))
shadow.close()
""".replace("import resource", "import json, resource")


def test_a_full_disk_fails_cleanly_and_leaves_the_file_as_it_was(fmt, tmp_path):
    path = writable_file(tmp_path / f"full{suffix(fmt)}", fmt)
    before = element_digests(path)
    # HDF5: the file may grow by 100 kB; Zarr: no single file (chunk, metadata) may pass 200 kB
    limit = path.stat().st_size + 100_000 if fmt == "h5ad" else 200_000
    code, stdout, stderr = fork_server().run(FULL_DISK_SCRIPT, path, limit)
    assert code == 0, f"the writer crashed (exit {code}): {stderr[-3000:]}"
    result = json.loads(stdout.strip().splitlines()[-1])
    assert "OSError" in result["types"], result
    assert path.name in result["message"] and "layers/big" in result["message"], result["message"]
    assert "space" in result["message"] or "too large" in result["message"], result["message"]
    # what was and was not committed is said, and what was not stays staged (▲) to be written again
    assert "Committed: nothing" in result["message"] and "Still staged" in result["message"], result["message"]
    assert result["committed"] == [] and result["left"] == ["layers/big", "obsm/small"], result
    assert result["staged"] == [True, True], result
    after = element_digests(path)
    assert {k: v for k, v in after.items() if k in before} == before
    adata = read_oracle(path)
    assert "big" not in adata.layers  # no partial element visible
    assert_shadow_matches(AnnDataShadow(path), adata)


HOLD_SCRIPT = """
import h5py, sys, time
f = h5py.File(sys.argv[1], sys.argv[2], libver=sys.argv[3] if len(sys.argv) > 3 else "earliest")
print("held", flush=True)
time.sleep(60)
"""


def test_hdf5_locking_refuses_a_second_writer_and_a_writer_beside_readers(tmp_path):
    """HDF5 (1.10+) flocks every file it opens: shared for 'r', exclusive for 'r+'/'w'. So 'r+' fails while
    any other process has the file open, and 'r' fails while another process writes it."""
    path = write(make_adata(), tmp_path / "held.h5ad", "h5ad")
    before, elements = file_digest(path), element_digests(path)
    for mode in ("r", "r+"):
        holder = start(HOLD_SCRIPT, path, mode)
        try:
            with pytest.raises(FileBusyError, match="open elsewhere"):
                AnnDataShadow(path, mode="r+")
            if mode == "r":  # reading beside a reader is fine; writing is not
                shadow = AnnDataShadow(path)
                shadow.obsm["x"] = np.ones((60, 1))
                with pytest.raises(FileBusyError):
                    shadow.reopen("r+")
                assert shadow.obsm.is_staged("x")
            else:
                with pytest.raises(FileBusyError, match="holds it for writing"):
                    AnnDataShadow(path)
        finally:
            holder.kill()
            holder.wait()
        if mode == "r":
            assert file_digest(path) == before  # not a byte changed
    assert element_digests(path) == elements  # never truncated


def test_a_zarr_store_being_written_refuses_a_second_writer(tmp_path):
    path = writable_file(tmp_path / "busy.zarr", "zarr3")
    writer = start(KILL_SCRIPT, path)
    try:
        lock = path / ".shadows-tmp" / "lock"
        deadline = time.monotonic() + 60  # inside write() once its lock exists (imports are slow on busy CPUs)
        while not lock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.1)
        with pytest.raises(FileBusyError, match="another process is writing"):
            AnnDataShadow(path, mode="r+")
        assert AnnDataShadow(path).shape == (4000, 15)  # reading meanwhile is fine
    finally:
        writer.wait(timeout=60)
    assert AnnDataShadow(path, mode="r+").layers["big"].shape == (4000, 15)  # free again after the write


def test_a_file_left_open_for_writing_says_how_to_recover(tmp_path):
    """A superblock-v3 HDF5 file records "open for writing" in the file; a killed writer leaves it set."""
    import anndata as ad
    import h5py

    path = tmp_path / "v3.h5ad"
    with h5py.File(path, "w", libver="latest") as f:
        small = ad.AnnData(np.ones((3, 2)))
        for key in ("X", "obs", "var"):
            ad.io.write_elem(f, key, getattr(small, key))
    holder = start(HOLD_SCRIPT, path, "r+", "latest")
    kill_after(holder, 0)
    with pytest.raises(FileBusyError, match=r"v3\.h5ad.*open for writing.*h5clear -s") as error:
        AnnDataShadow(path)
    assert isinstance(error.value, OSError)


READER_SCRIPT = """
import json, sys, numpy as np
from shadows import AnnDataShadow
shadow = AnnDataShadow(sys.argv[1])
rows = np.arange(0, shadow.n_obs, 7)
view = shadow[rows]
print(json.dumps({"sums": np.asarray(shadow.X.sum(axis=0)).ravel().tolist(),
                  "view": np.asarray(view.X.sum(axis=1)).ravel().tolist(),
                  "pca": view.obsm["X_pca"].sum(axis=0).tolist(),
                  "cats": [None if v != v else str(v) for v in view.obs["cat"].tolist()]}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("fmt_", ["h5ad", "zarr3"])
def test_concurrent_readers_and_a_cluster_read_the_same_file_correctly(fmt_, tmp_path):
    distributed = pytest.importorskip("distributed")
    path = write(make_adata(n_obs=3000, n_vars=40), tmp_path / f"shared{suffix(fmt_)}", fmt_)
    adata = read_oracle(path)
    expected_view = adata[np.arange(0, adata.n_obs, 7)]
    readers = [fork_server().start(READER_SCRIPT, path, stdout_pipe=False, quick_exit=True) for _ in range(4)]
    lazy = AnnDataShadow(path, array_backend="dask")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, distributed.Client(cluster):
        for _ in range(3):
            sums = lazy.X.sum(axis=0).compute()
            np.testing.assert_allclose(np.asarray(sums).ravel(), np.asarray(adata.X.sum(axis=0)).ravel(), rtol=1e-6)
            pca = lazy[::7].obsm["X_pca"].sum(axis=0).compute()
            np.testing.assert_allclose(pca, expected_view.obsm["X_pca"].sum(axis=0), rtol=1e-6)
    for reader in readers:
        assert reader.wait(timeout=120) == 0, reader.stderr.read()[-3000:]
        got = json.loads(reader.stdout_text().strip().splitlines()[-1])
        np.testing.assert_allclose(got["sums"], np.asarray(adata.X.sum(axis=0)).ravel(), rtol=1e-6)
        np.testing.assert_allclose(got["view"], np.asarray(expected_view.X.sum(axis=1)).ravel(), rtol=1e-6)
        np.testing.assert_allclose(got["pca"], expected_view.obsm["X_pca"].sum(axis=0), rtol=1e-6)
        assert got["cats"] == [None if v != v else str(v) for v in expected_view.obs["cat"].tolist()]


def _use_everything(shadow) -> None:
    """Read every element, build views, stage changes and try to write: what a read-only user may do."""
    memory = shadow.to_memory()
    _ = repr(shadow), shadow[::3].to_memory(), shadow[shadow.obs_names[:7]], memory
    for slot in ("obsm", "varm", "obsp", "varp", "uns"):
        for key in getattr(shadow, slot):
            _ = getattr(shadow, slot)[key]
    shadow.obsm["staged"] = np.ones((shadow.n_obs, 2))
    shadow.obs["staged"] = np.arange(shadow.n_obs)
    with pytest.raises(OSError, match="read-only"):
        shadow.write()
    with pytest.raises(OSError):
        shadow[:3].write()
    shadow.clear_cache()


def test_read_only_use_changes_no_byte_of_an_anndata_file(fmt, tmp_path):
    path = write(make_adata(), tmp_path / f"ro{suffix(fmt)}", fmt)
    before = file_digest(path)
    shadow = AnnDataShadow(path)
    _use_everything(shadow)
    for key in shadow.layers:
        _ = shadow.layers[key]
    _ = shadow.raw.X, shadow.raw.var, shadow.obs_vector("float"), shadow.var_vector("cell0")
    lazy = AnnDataShadow(path, array_backend="dask")
    _ = lazy.X.sum().compute(), lazy[5:9].layers["dense"].compute(), lazy.obs
    shadow.close()
    lazy.close()
    assert file_digest(path) == before


def test_read_only_use_changes_no_byte_of_a_mudata_file(tmp_path):
    mudata = pytest.importorskip("mudata")
    mdata = mudata.MuData({"rna": make_adata(), "atac": make_adata(n_obs=60, n_vars=9, seed=3)})
    paths = [tmp_path / "ro.h5mu", tmp_path / "ro.zarr"]
    mdata.write_h5mu(paths[0])
    mdata.write_zarr(paths[1])
    for path in paths:
        before = file_digest(path)
        shadow = MuDataShadow(path)
        _use_everything(shadow)
        for name in shadow.mod:
            modality = shadow.mod[name]
            _ = modality.X, modality.obs, dict(modality.layers), modality[::2].X
            modality.obsm["staged"] = np.zeros((modality.n_obs, 1))
            with pytest.raises(OSError, match="read-only"):
                modality.write()
        shadow.close()
        assert file_digest(path) == before, path


def test_nothing_is_written_when_write_fails_before_committing(fmt, tmp_path):
    """A staged value whose computation fails mid-write leaves no trace: old elements intact, none added."""
    import dask.array as da

    path = write(make_adata(), tmp_path / f"fail{suffix(fmt)}", fmt)
    before = element_digests(path)

    def explode(block, block_info=None):
        if block_info[0]["chunk-location"][0] == 3:
            raise RuntimeError("the computation failed")
        return block

    shadow = AnnDataShadow(path, mode="r+")
    shadow.obsm["fails"] = da.ones((60, 3), chunks=(10, 3)).map_blocks(explode, dtype=float)
    with pytest.raises(RuntimeError, match="the computation failed"):
        shadow.write()
    assert shadow.obsm.is_staged("fails")
    shadow.close()
    assert element_digests(path) == before
    assert "fails" not in read_oracle(path).obsm
    assert_value_equal(read_oracle(path).obsm["X_pca"], make_adata().obsm["X_pca"], "obsm/X_pca")


@pytest.mark.parametrize("fmt_", ["zarr2", "zarr3"])
def test_the_next_writer_cleans_what_a_killed_writer_left(fmt_, tmp_path):
    """A writer killed mid-write leaves its lock file and scratch hierarchy in ``.shadows-tmp``; the next
    ``write()`` removes them, and once it is done the store holds neither. (HDF5 has no scratch: an element
    is built in an anonymous group, which a kill leaves unreachable, not in the tree.)"""
    path = writable_file(tmp_path / f"left{suffix(fmt_)}", fmt_)
    before = element_digests(path)
    base = path / ".shadows-tmp"
    # blocks of 0.2 s: the write lasts seconds on a busy machine too, so the kill lands inside it
    writer = start(KILL_SCRIPT.replace("sleep(0.02)", "sleep(0.2)"), path)
    try:
        # inside write() once the lock exists, and building the layer once it is in the scratch hierarchy
        building = str(base / "*" / "big-*")
        deadline = time.monotonic() + 60
        while not ((base / "lock").exists() and glob.glob(building)):
            assert time.monotonic() < deadline and writer.poll() is None, "the writer never started its write"
            time.sleep(0.01)
    finally:
        kill_after(writer, 0)
    assert (base / "lock").exists() and glob.glob(building)  # the killed writer's leftovers are there

    shadow = AnnDataShadow(path, mode="r+")
    shadow.obsm["after"] = np.ones((4000, 2))
    shadow.write()
    shadow.close()
    assert not base.exists(), sorted(p.name for p in base.iterdir())  # no scratch folder, no lock file
    assert not any(".shadows-tmp" in p.parts or p.name == "lock" for p in path.rglob("*"))
    after = element_digests(path)
    assert {k: v for k, v in after.items() if k in before} == before
    adata = read_oracle(path)
    np.testing.assert_array_equal(adata.obsm["after"], np.ones((4000, 2)))
    if "big" in adata.layers:  # killed while building: absent (or, past its commit, whole)
        assert adata.layers["big"].shape == (4000, 15) and np.all(adata.layers["big"] > 0)
    if "new_column" in adata.obs:
        np.testing.assert_array_equal(adata.obs["new_column"], np.arange(4000.0))
    assert_shadow_matches(AnnDataShadow(path), adata)
