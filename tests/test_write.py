"""write(): staged elements committed to h5ad and Zarr (v2, v3) files, read back by anndata."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from conftest import make_adata, read_oracle, suffix, write, zarr_format
from helpers import assert_shadow_matches, assert_value_equal, file_digest, fork_server
from shadows import AnnDataShadow, ElementExistsError, FileBusyError, ShadowsError
from shadows.core.committing import READ_ONLY_MESSAGE


@pytest.fixture(autouse=True)
def _progress_drawn_as_on_a_terminal(monkeypatch):
    """The bars here are read as a terminal shows them (redrawn on one line); where the output is not a
    terminal they print a few plain lines instead (tests/test_new_user.py).
    """
    monkeypatch.setattr("shadows.progress.is_terminal", lambda stream: True)


@pytest.fixture
def fresh(fmt, tmp_path) -> Path:
    """A file of its own (tests here write to it)."""
    return write(make_adata(), tmp_path / f"w_{fmt}{suffix(fmt)}", fmt)


def stage_every_kind(shadow: AnnDataShadow, lazy: AnnDataShadow) -> dict:
    """Stage one element of each kind a user assigns; returns what anndata should read back."""
    rng = np.random.default_rng(7)
    values = {
        "obsm/X_new": rng.normal(size=(60, 3)).astype(np.float32),
        "obsm/frame_new": pd.DataFrame({"u": rng.normal(size=60)}, index=shadow.obs_names),
        "obsp/sparse_new": sp.random(60, 60, density=0.1, format="csr", random_state=3),
        "varm/loadings": rng.normal(size=(15, 4)),
        "varp/dense_new": rng.normal(size=(15, 15)),
        "layers/log": np.log1p(lazy.X),  # dask, sparse chunks: streamed block by block
        "layers/scaled": lazy.layers["dense"] * 2,  # dask, dense chunks
        "layers/csc_new": sp.csc_matrix(sp.random(60, 15, density=0.2, random_state=4)),
    }
    for rel, value in values.items():
        slot, key = rel.split("/")
        getattr(shadow, slot)[key] = value
    shadow.uns["extra"] = {"k": 15, "names": np.array(["a", "b"]), "deep": {"x": 1.5}}
    shadow.uns["nested"]["level1"]["added"] = "here"
    shadow.obs["score"] = rng.normal(size=60)
    shadow.obs["label"] = pd.Categorical(rng.choice(["p", "q"], 60))
    shadow.obs["maybe"] = pd.array(rng.integers(0, 3, 60), dtype="Int64")
    shadow.var["kept"] = rng.choice([True, False], 15)
    return values


def expected_after(path: Path, values: dict, staged: AnnDataShadow, scratch: Path):
    """What anndata reads when anndata itself writes the same additions (in the same format)."""
    expected = read_oracle(path)
    for rel, value in values.items():
        slot, key = rel.split("/")
        value = value.compute() if hasattr(value, "dask") else value
        if sp.issparse(value):  # plain scipy matrices, as anndata holds them
            value = sp.csr_matrix(value) if value.format == "csr" else sp.csc_matrix(value)
        getattr(expected, slot)[key] = value
    expected.uns["extra"] = {"k": 15, "names": np.array(["a", "b"]), "deep": {"x": 1.5}}
    expected.uns["nested"]["level1"]["added"] = "here"
    for column in ("score", "label", "maybe"):
        expected.obs[column] = staged.obs[column].to_numpy() if column == "score" else staged.obs[column].array
    expected.var["kept"] = staged.var["kept"].to_numpy()
    fmt = "h5ad" if path.suffix == ".h5ad" else "zarr3" if (path / "zarr.json").exists() else "zarr2"
    return read_oracle(write(expected, scratch / f"expected{path.suffix}", fmt))


def test_write_commits_every_kind_and_anndata_reads_it(fresh, tmp_path):
    shadow = AnnDataShadow(fresh)
    lazy = AnnDataShadow(fresh, array_backend="dask")
    values = stage_every_kind(shadow, lazy)
    text = repr(shadow)
    assert "log▲" in text and "X_new▲" in text and "score▲" in text and "kept▲" in text
    expected = expected_after(fresh, values, shadow, tmp_path)
    lazy.close()
    del lazy
    assert shadow.reopen("r+").write(clear_cache=True).reopen("r") is shadow
    assert "▲" not in repr(shadow)
    written = read_oracle(fresh)
    assert_shadow_matches(AnnDataShadow(fresh), written)
    for rel in values:
        slot, key = rel.split("/")
        assert_value_equal(getattr(written, slot)[key], getattr(expected, slot)[key], rel)
    assert_value_equal(written.obs, expected.obs, "obs")
    assert_value_equal(written.var, expected.var, "var")
    assert_value_equal(dict(written.uns), dict(expected.uns), "uns")
    assert_shadow_matches(shadow, written)  # the shadow now reads them from the file


def test_a_file_opened_read_only_never_changes(fresh):
    before = file_digest(fresh)
    shadow = AnnDataShadow(fresh)
    lazy = AnnDataShadow(fresh, array_backend="dask")
    stage_every_kind(shadow, lazy)
    _ = shadow.to_memory(), shadow[::3, 2:9].to_memory(), lazy.X.sum().compute(), repr(shadow)
    with pytest.raises(OSError) as error:
        shadow.write()
    assert str(error.value).endswith(f": {READ_ONLY_MESSAGE}")  # the file named first
    with pytest.raises(OSError, match="view"):
        shadow[:5].write()
    shadow.clear_cache()
    shadow.close()
    lazy.close()
    assert file_digest(fresh) == before


def test_replacing_stored_elements_needs_overwrite(fresh):
    shadow = AnnDataShadow(fresh, mode="r+")
    new_pca = np.zeros((60, 5), dtype=np.float32)
    shadow.obsm["X_pca"] = new_pca
    shadow.obs["float"] = np.ones(60)
    stored = r"replace or delete stored elements \(obsm/X_pca, obs/float\).*overwrite"
    with pytest.raises(FileExistsError, match=stored):
        shadow.write()
    assert shadow.obsm.is_staged("X_pca")  # nothing was written
    assert read_oracle(fresh).obsm["X_pca"].any()
    shadow.write(overwrite=True)
    shadow.close()
    written = read_oracle(fresh)
    assert_value_equal(written.obsm["X_pca"], new_pca, "obsm/X_pca")
    assert_value_equal(written.obs["float"].to_numpy(), np.ones(60), "obs/float")
    assert list(written.obs.columns) == list(read_oracle(fresh).obs.columns)


@pytest.mark.parametrize("target", ["h5", "zarr2", "zarr3"])
def test_sparse_blocks_are_computed_once_and_appended_in_order(target, tmp_path, monkeypatch):
    """Written in this process, a sparse array whose blocks share no task is computed once, block by block
    (its non-zeros were counted by computing every block first), in whole storage chunks; one whose blocks
    share a task (here the array's total) is counted first, and computes the same values."""
    from collections import Counter

    import dask
    import h5py
    import zarr

    from shadows.writing import streams

    monkeypatch.setattr(streams, "SPARSE_CHUNK", 1000)  # several chunks, the last one partial
    computed = Counter()

    def block(i: int) -> sp.csr_matrix:
        computed[i] += 1
        return sp.random(50, 40, density=0.3 if i != 3 else 0.0, format="csr", dtype=np.float32, random_state=i)

    meta = sp.csr_matrix((0, 0), dtype=np.float32)
    blocks = [da.from_delayed(dask.delayed(block)(i), (50, 40), np.float32, meta=meta) for i in range(9)]
    array = da.concatenate(blocks)
    expected = sp.vstack([sp.random(50, 40, density=0.3 if i != 3 else 0.0, format="csr", dtype=np.float32,
                                    random_state=i) for i in range(9)]).tocsr()
    sums = array.map_blocks(lambda b: np.full((1, 1), b.sum()), chunks=((1,) * 9, (1,)), dtype=np.float64,
                            meta=np.empty((0, 0)))
    shared = array.map_blocks(lambda b, total: b * np.float32(2 / float(total)), sums.sum(), dtype=np.float32)
    assert streams._own_graphs(array) is not None and streams._own_graphs(shared) is None
    group = h5py.File(tmp_path / "t.h5", "w") if target == "h5" else \
        zarr.open_group(tmp_path / "t.zarr", mode="w", zarr_format=int(target[-1]))
    streams.write_sparse(group, "x", array)
    assert set(computed.values()) == {1} and len(computed) == 9
    streams.write_sparse(group, "y", shared)
    for name, want in (("x", expected), ("y", expected * (2 / expected.sum()))):
        stored = group[name]
        got = sp.csr_matrix((stored["data"][:], stored["indices"][:], stored["indptr"][:]), shape=(450, 40))
        np.testing.assert_allclose(got.toarray(), want.toarray(), rtol=1e-6)
    assert group["x"]["data"].chunks == (1000,)


def test_lazy_elements_are_written_without_materializing_them(fmt, tmp_path):
    import anndata as ad

    path = write(ad.AnnData(np.zeros((16000, 2), dtype=np.float32)), tmp_path / f"big{suffix(fmt)}", fmt)
    shadow = AnnDataShadow(path, mode="r+")
    n = 16000 * 1250  # 160 MB of float64 in 2 MB chunks
    shadow.obsm["big"] = da.ones((16000, 1250), chunks=(200, 1250), dtype=np.float64)
    shadow.obsm["big_sparse"] = da.ones((16000, 1250), chunks=(200, 1250), dtype=np.float64).map_blocks(
        sp.csr_matrix, meta=sp.csr_matrix((0, 0)))
    tracemalloc.start()
    shadow.write()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < n * 8 / 2, f"peak {peak / 2**20:.0f} MiB while writing 160 MB"
    shadow.close()
    lazy = AnnDataShadow(path, array_backend="dask")
    assert lazy.obsm["big"].sum().compute() == n and lazy.obsm["big_sparse"].sum().compute() == n


def test_new_element_is_visible_to_anndata_through_consolidated_metadata(tmp_path):
    path = write(make_adata(), tmp_path / "c.zarr", "zarr3")
    shadow = AnnDataShadow(path, mode="r+")
    shadow.obsm["added"] = np.ones((60, 1))
    shadow.write()
    import zarr

    assert "added" in read_oracle(path).obsm
    group = zarr.open_group(path, mode="r")  # consolidated metadata lists it too
    assert "obsm/added" in group.metadata.consolidated_metadata.flattened_metadata
    assert not (path / ".shadows-tmp").exists()  # no scratch folder or lock file left behind


def test_a_second_zarr_writer_gets_a_clear_error(tmp_path):
    path = write(make_adata(), tmp_path / "busy.zarr", "zarr2")
    (path / ".shadows-tmp").mkdir()
    shadow = AnnDataShadow(path, mode="r+")  # opened before the other writer started
    holder = fork_server().start(f"""
import fcntl, sys, time
lock = open({str(path / '.shadows-tmp' / 'lock')!r}, 'w')
fcntl.flock(lock, fcntl.LOCK_EX)
print('held', flush=True)
time.sleep(30)
""")
    try:
        assert holder.stdout.readline().strip() == "held"
        shadow.obsm["x"] = np.ones((60, 1))
        with pytest.raises(FileBusyError, match="another process is writing"):
            shadow.write()
        with pytest.raises(FileBusyError, match="another process is writing"):
            AnnDataShadow(path, mode="r+")
        assert shadow.obsm.is_staged("x")
    finally:
        holder.kill()
        holder.wait()
    assert "x" not in read_oracle(path).obsm


EXPORT_KEYS = {"all": slice(None), "stepped": (slice(None, None, 3), slice(2, 12)), "positions": [5, 1, 40, 33]}


@pytest.mark.parametrize("key", list(EXPORT_KEYS), ids=list(EXPORT_KEYS))
def test_export_writes_the_view_equal_to_anndatas(path, fmt, tmp_path, key):
    index = EXPORT_KEYS[key]
    view = AnnDataShadow(path, array_backend="dask")[index]
    out = tmp_path / f"export{suffix(fmt)}"
    if fmt == "h5ad":
        view.write_h5ad(out)
    else:
        with zarr_format(fmt):
            view.write_zarr(out)
    expected = read_oracle(path)[index]
    assert_shadow_matches(AnnDataShadow(out), expected)
    assert_value_equal(read_oracle(out).obs, expected.obs, "obs read by anndata")
    assert not any(p.name.startswith(f".{out.name}") for p in tmp_path.iterdir())  # no scratch left


def test_export_includes_staged_elements_and_replaces_the_target(path, tmp_path, capsys):
    shadow = AnnDataShadow(path)
    shadow.obsm["added"] = np.arange(60.0).reshape(60, 1)
    shadow.obs["added"] = np.arange(60)
    out = tmp_path / "copy.h5ad"
    out.write_bytes(b"old")
    with pytest.raises(ElementExistsError, match="overwrite=True"):
        shadow[10:20].write_h5ad(out)
    assert out.read_bytes() == b"old"
    shadow[10:20].write_h5ad(out, progress=True, overwrite=True)
    assert "100%" in capsys.readouterr().err
    written = read_oracle(out)
    np.testing.assert_array_equal(written.obsm["added"][:, 0], np.arange(10.0, 20.0))
    np.testing.assert_array_equal(written.obs["added"], np.arange(10, 20))
    copied = shadow.copy(tmp_path / "again.zarr")
    assert type(copied) is AnnDataShadow and copied.filename == str(tmp_path / "again.zarr")
    assert "added" in copied.obsm and copied.shape == (60, 15)
    with pytest.raises(ShadowsError, match="onto the file it reads"):
        shadow.write_h5ad(path)


def test_deleting_stored_elements_and_columns_needs_overwrite(fresh):
    shadow = AnnDataShadow(fresh, mode="r+")
    del shadow.obsm["X_umap"]
    del shadow.uns["nested"]["s"]
    del shadow.obs["float"]
    del shadow.var["gene_ids"]
    assert "X_umap" not in shadow.obsm and "float" not in shadow.obs_keys()
    assert "X_umap" not in repr(shadow) and "float" not in repr(shadow)
    with pytest.raises(ShadowsError, match=r"replace or delete stored elements.*obsm/X_umap.*overwrite=True"):
        shadow.write()
    assert "X_umap" in read_oracle(fresh).obsm
    shadow.write(overwrite=True)
    written = read_oracle(fresh)
    assert "X_umap" not in written.obsm and "s" not in written.uns["nested"]
    assert "float" not in written.obs.columns and "gene_ids" not in written.var.columns
    assert "X_pca" in written.obsm and "cat" in written.obs.columns
    assert_shadow_matches(shadow, written)


def test_writes_beside_a_file_open_for_writing_run_locally_under_a_client(tmp_path, nothing_held_for_writing):
    """While this process holds an h5ad open for writing, no worker may open it: writes and exports that
    read it compute here (Zarr stores: see test_cluster_writes.py).
    """
    distributed = pytest.importorskip("distributed")
    paths = {fmt: write(make_adata(), tmp_path / f"d_{fmt}{suffix(fmt)}", fmt) for fmt in ("h5ad", "zarr3")}
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, distributed.Client(cluster):
        for fmt, path in paths.items():
            shadow = AnnDataShadow(path, mode="r+", array_backend="dask")
            shadow.layers["log"] = np.log1p(shadow.X)
            shadow.obsm["dense"] = da.ones((60, 4), chunks=(7, 4))
            shadow.write()
            shadow[::2].write_h5ad(tmp_path / f"view_{fmt}.h5ad")
            shadow.close()
    for fmt, path in paths.items():
        written, view = read_oracle(path), read_oracle(tmp_path / f"view_{fmt}.h5ad")
        assert_value_equal(written.layers["log"], np.log1p(written.X), f"{fmt} layers/log")
        assert_value_equal(view.layers["log"], np.log1p(written.X[::2]), f"{fmt} view layers/log")
        assert_value_equal(view.obsm["dense"], np.ones((30, 4)), f"{fmt} view obsm/dense")


def test_a_finished_write_leaves_the_store_clean_and_hands_the_lock_over(tmp_path):
    """The lock file goes with the write; a writer that opened it meanwhile locks the store anew."""
    import os

    from shadows.writing.commit import ZarrCommit

    path = write(make_adata(), tmp_path / "clean.zarr", "zarr2")
    before = sorted(p.relative_to(path) for p in path.rglob("*") if ".shadows-tmp" not in p.parts)
    first = ZarrCommit(str(path), consolidated=True)
    stale = os.open(path / ".shadows-tmp" / "lock", os.O_WRONLY)  # a second writer opened the old lock file
    first.finish()
    assert not (path / ".shadows-tmp").exists()
    second = ZarrCommit(str(path), consolidated=True)  # locks a new file, not the removed one
    held = os.fstat(second._lock)
    assert os.stat(path / ".shadows-tmp" / "lock").st_ino == held.st_ino
    second.abort()
    os.close(stale)
    assert sorted(p.relative_to(path) for p in path.rglob("*")) == before


@pytest.mark.parametrize("fmt", ["h5ad", "zarr2", "zarr3"])
def test_writes_and_exports_are_quiet(tmp_path, fmt):
    """shadows' own write and export paths emit no warnings, on either stack (warnings are errors here)."""
    import warnings

    import shadows

    path = write(make_adata(), tmp_path / f"quiet{'.h5ad' if fmt == 'h5ad' else '.zarr'}", fmt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shadow = shadows.read(path, mode="r+")
        shadow.obsm["new"] = np.ones((60, 2))
        shadow.obs["added"] = np.arange(60)
        shadow.uns["u"] = {"a": 1}
        shadow.write()
        lazy = shadows.read(path, array_backend="dask", mode="r+")
        lazy.layers["double"] = lazy.X * 2
        lazy.write()
        for target in ("out.h5ad", "out.zarr"):
            lazy[:10].copy(tmp_path / target).close()
    assert "double" in read_oracle(path).layers


@pytest.mark.parametrize("fmt", ["h5mu", "zarr2", "zarr3"])
def test_mudata_writes_exports_and_to_memory_are_quiet(tmp_path, fmt):
    """The same for a MuData shadow: ``write()``, ``write_h5mu``, ``write_zarr`` and ``to_memory()`` emit
    no warnings on either stack (mudata 0.3's ``pull_on_update`` and pandas 3's ``inplace`` included)."""
    import warnings

    mudata = pytest.importorskip("mudata")
    from shadows import MuDataShadow

    path = tmp_path / ("quiet.h5mu" if fmt == "h5mu" else "quiet.zarr")
    with warnings.catch_warnings():  # building the file is not shadows'
        warnings.simplefilter("ignore")
        atac = make_adata(n_obs=40, n_vars=9, seed=3)
        atac.var_names = [f"peak{i}" for i in range(9)]  # names of its own: mudata warns of shared ones (data)
        mdata = mudata.MuData({"rna": make_adata(), "atac": atac})
        if fmt == "h5mu":
            mdata.write_h5mu(path)
        else:
            with zarr_format(fmt):
                mdata.write_zarr(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shadow = MuDataShadow(path, mode="r+")
        shadow.obsm["new"] = np.ones((shadow.n_obs, 2))
        shadow.mod["rna"].layers["double"] = shadow.mod["rna"].X * 2
        shadow.write()
        shadow.write_h5mu(tmp_path / "out.h5mu")
        shadow.write_zarr(tmp_path / "out.zarr")
        memory = shadow.to_memory()
        shadow.close()
    assert type(memory) is mudata.MuData and "new" in memory.obsm and "double" in memory.mod["rna"].layers


def one_bar(err: str) -> list[str]:
    """The draws of the one progress bar printed in ``err``: one line (redrawn with carriage returns), with
    the whole job's total throughout."""
    import re

    lines = err.split("\n")
    assert len([line for line in lines if line]) == 1 and err.endswith("\n")
    draws = [d for d in lines[0].split("\r") if d]
    totals = {re.search(r"(\d+)/(\d+) blocks", d).group(2) for d in draws}
    assert len(totals) == 1
    return draws


@pytest.mark.parametrize("target", ["h5ad", "zarr"])
def test_progress_is_one_bar_for_the_whole_job_naming_each_element(path, tmp_path, capsys, target):
    """One bar (one line, redrawn) counting the blocks of every element, named as they are written."""
    import re

    lazy = AnnDataShadow(path, array_backend="dask")
    lazy.obsm["added"] = np.ones((60, 2))
    lazy.copy(tmp_path / f"out.{target}", progress=True)
    err = capsys.readouterr().err
    draws = one_bar(err)
    assert draws[-1].startswith("exporting [#") and " 100% " in draws[-1]
    named = {d.rsplit("  ", 1)[-1] for d in draws}
    assert {"X", "obs", "obsm/added", "layers/counts_csc", "raw/X", "uns"} <= named
    done = [int(re.search(r"(\d+)/", d).group(1)) for d in draws]
    assert done == sorted(done)  # it only moves forward

    shadow = AnnDataShadow(tmp_path / f"out.{target}", mode="r+", array_backend="dask")
    shadow.layers["double"] = shadow.X * 2
    shadow.obs["new"] = np.arange(60)
    shadow.write(progress=True)
    draws = [d for d in capsys.readouterr().err.split("\r") if d.strip()]
    assert draws[-1].startswith("writing [") and " 100% " in draws[-1]
    assert {"layers/double", "obs/new"} <= {d.strip().rsplit("  ", 1)[-1] for d in draws}


def _draws(err: str) -> list[str]:
    return [d for d in err.replace("\n", "\r").split("\r") if d.strip()]


def test_reading_progress_is_one_bar_of_bytes_naming_each_element(path, capsys):
    """``to_memory(progress=True)`` shows one bar counting the bytes read against the job's total; the
    setting shows one per element read; nothing is printed otherwise.
    """
    import re

    import shadows

    shadow = AnnDataShadow(path)
    shadow.X  # noqa: B018 - an element read without the setting prints nothing
    assert capsys.readouterr().err == ""
    shadow[5:40].to_memory(progress=True)  # X is taken from the root's memory: not read, not counted
    assert "X  " not in capsys.readouterr().err
    memory = AnnDataShadow(path)[5:40].to_memory(progress=True)
    assert memory.n_obs == 35
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n")  # one bar, redrawn on one line
    draws = _draws(err)
    totals = {re.search(r"/([\d.]+) MB", d).group(1) for d in draws}
    assert len(totals) == 1
    done = [float(re.search(r"([\d.]+)/", d).group(1)) for d in draws]
    assert done == sorted(done) and draws[-1].startswith("reading [#") and " 100% " in draws[-1]
    assert {"X", "obs", "var", "layers/dense", "obsm/X_pca", "obsp/connectivities"} <= \
        {d.rsplit("  ", 1)[-1] for d in draws}

    with shadows.settings.override(read_progress=True):
        AnnDataShadow(path).layers["dense"]
    draws = _draws(capsys.readouterr().err)
    assert draws[-1].startswith("reading [") and " 100% " in draws[-1]
    assert {d.rsplit("  ", 1)[-1] for d in draws} == {"layers/dense", "done"}
    assert shadows.settings.read_progress is False
    with pytest.raises(AttributeError, match="read_progress"), shadows.settings.override(read_progres=True):
        pass


def test_reading_progress_under_a_client_is_distributed_s(path, tmp_path, capsys, nothing_held_for_writing):
    """The parts of a read that run on the cluster (a view's matrices) show distributed's progress bar,
    also while another h5ad, which the read does not touch, is open for writing in this process.
    """
    distributed = pytest.importorskip("distributed")
    from shadows.cluster import current_client

    other = AnnDataShadow(write(make_adata(), tmp_path / "other.h5ad", "h5ad"), mode="r+", array_backend="dask")
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None)
    try:
        with cluster, distributed.Client(cluster):
            memory = AnnDataShadow(path)[:30].to_memory(progress=True)
            assert current_client(other.X) is None  # the workers could not open it
            assert current_client() is None  # no graph to look into: any file open for writing counts
    finally:
        other.close()
    captured = capsys.readouterr()
    assert "% Completed" in captured.out  # distributed's text bar
    assert memory.X.shape == (30, 15)
    assert _draws(captured.err)[-1].startswith("reading [")


def test_progress_bar_ends_its_line_when_the_job_raises(path, tmp_path, capsys, monkeypatch):
    """A job that raises leaves its bar as it was, says where it stopped and ends the line: what is
    printed next starts a line of its own; a block counted after that (a dask worker still running)
    draws nothing.
    """
    import io

    import shadows.writing.export as export_module
    from shadows import progress

    original = export_module.streamer

    def failing(counted):  # anndata's writer of uns fails
        callback = original(counted)

        def write_uns(*args, **kwargs):
            raise OSError("disk full")

        def failing_callback(write_func, store, elem_name, elem, **kwargs):
            if elem_name.rsplit("/", 1)[-1] == "uns":
                write_func = write_uns
            return callback(write_func, store, elem_name, elem, **kwargs)

        return failing_callback

    monkeypatch.setattr(export_module, "streamer", failing)
    with pytest.raises(OSError, match="disk full"):
        AnnDataShadow(path).copy(tmp_path / "out.h5ad", progress=True)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n")
    last = _draws(err)[-1]
    assert last.startswith("exporting [#") and last.endswith("  stopped at uns") and " 100% " not in last

    stream = io.StringIO()
    with pytest.raises(KeyboardInterrupt), progress.job(4, True, stream=stream):
        bar = progress.current()
        bar.advance()
        raise KeyboardInterrupt
    assert stream.getvalue().endswith("\rwriting [#######-----------------------]  25%  1/4 blocks  stopped\n")
    bar.advance()
    assert stream.getvalue().count("\r") == 2 and progress.current() is None

    stream = io.StringIO()
    with pytest.raises(ValueError, match="bad"), progress.reading_job(lambda: 2_000_000, True, stream=stream):
        progress.reading_element("layers/dense")
        progress.count_read(500_000)
        raise ValueError("bad")
    assert stream.getvalue().endswith("  25%  0.5/2.0 MB  stopped at layers/dense\n")
    assert not progress.showing_reads()


@pytest.mark.parametrize("target", ["h5mu", "zarr"])
def test_mudata_progress_is_one_bar_for_the_whole_job_naming_each_element(tmp_path, capsys, target):
    """``MuDataShadow.write_h5mu`` and ``write_zarr`` with ``progress=True``: one bar (one line, redrawn)
    counting the blocks of every element, the modalities' included, named as they are written.
    """
    import re

    import mudata

    from shadows import MuDataShadow

    source = tmp_path / "m.h5mu"
    mudata.MuData({"rna": make_adata(), "prot": make_adata(seed=1)}).write_h5mu(source)
    shadow = MuDataShadow(source)
    out = tmp_path / f"out.{target}"
    shadow.write_h5mu(out, progress=True) if target == "h5mu" else shadow.write_zarr(out, progress=True)
    err = capsys.readouterr().err
    draws = one_bar(err)
    assert draws[-1].startswith("exporting [#") and " 100% " in draws[-1] and draws[-1].endswith("  done")
    named = {d.rsplit("  ", 1)[-1] for d in draws}
    assert {"obs", "obsm/rna", "uns", "mod/rna/X", "mod/rna/obsm/X_pca", "mod/prot/X", "mod/prot/raw/X"} <= named
    done = [int(re.search(r"(\d+)/", d).group(1)) for d in draws]
    assert done == sorted(done)  # it only moves forward
    written = mudata.read_h5mu(out) if target == "h5mu" else mudata.read_zarr(out)
    assert set(written.mod) == {"rna", "prot"} and written.n_obs == 60
    shadow.close()


@pytest.mark.parametrize("rows", [slice(None, None, 3), slice(50, 350)], ids=["scattered", "contiguous"])
def test_exporting_whole_rows_reads_them_once(tmp_path, monkeypatch, rows):
    """The non-zeros of each written block of a view's X come from the stored pointers, so X's selected
    rows are read once (counting them by computing every block read them twice)."""
    from helpers import count_values_read

    path = write(make_adata(n_obs=400, n_vars=40), tmp_path / "a.h5ad", "h5ad")
    expected, stored = read_oracle(path)[rows].X, read_oracle(path).X
    read = count_values_read(monkeypatch, "/X/data")
    AnnDataShadow(path, array_backend="dask")[rows].write_h5ad(tmp_path / "out.h5ad")
    # once: the selected rows' values (through HDF5's selections, scattered rows close together are read
    # with what lies between; read at HDF5's offsets, only they are)
    import h5py

    from shadows.backends import hdf5_raw

    with h5py.File(path, "r") as file:
        raw = hdf5_raw.layout(file["X/data"]) is not None
    once = expected.nnz if rows.step is None or raw else stored.nnz
    assert sum(read) == once, (sum(read), once)
    monkeypatch.undo()
    assert_value_equal(read_oracle(tmp_path / "out.h5ad").X, expected, "X")
