"""One connection per file per process: shadows, views, modalities and read tasks of a file share one
handle; reopen("r+") upgrades it while others read; a write through one is seen by all; the last close
releases every handle; a refused reopen changes nothing; shadows are context managers.
"""

from __future__ import annotations

import gc
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from conftest import make_adata, read_oracle, suffix, write, zarr_format
from helpers import ForkedProcess, assert_value_equal, fork_server
from shadows import AnnDataShadow, ElementExistsError, FileBusyError, MuDataShadow, PermissionDeniedError
from shadows.backends import registry
from shadows.backends.abc import StoredArray
from shadows.backends.handles import read_handle, read_node, reading, release
from shadows.core.committing import READ_ONLY_MESSAGE


@pytest.fixture
def fresh(fmt, tmp_path) -> Path:
    """A file of its own (tests here write to it and count its descriptors)."""
    return write(make_adata(), tmp_path / f"c_{fmt}{suffix(fmt)}", fmt)


def entries(path: Path) -> list[tuple[str, str, int, str]]:
    """This process's registry entries of ``path``: (path, format, users, mode)."""
    return [e for e in registry.open_paths() if e[0] == str(path)]


def descriptors(path: Path) -> list[str]:
    """What this process's open file descriptors point at, in or at ``path``."""
    target = os.path.realpath(path)
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the listing's own descriptor, closed meanwhile
        if link == target or link.startswith(target + os.sep):
            found.append(link)
    return found


def dense(value) -> np.ndarray:
    value = value.compute() if hasattr(value, "dask") else value
    return value.toarray() if sp.issparse(value) else np.asarray(value)


def same(got, expected, where: str) -> None:
    """Equal values, whatever container holds them (a dask graph, sparse chunks, numpy)."""
    np.testing.assert_array_equal(dense(got), dense(expected), err_msg=where)


# -- sharing -------------------------------------------------------------------------------------


def test_shadows_views_and_tasks_of_a_file_share_one_handle(fmt, fresh):
    eager = AnnDataShadow(fresh)
    lazy = AnnDataShadow(fresh, array_backend="dask")
    view = eager[::2, 3:9]
    expected = read_oracle(fresh)
    assert_value_equal(eager.X, expected.X, "X")
    same(lazy.X, expected.X, "dask X")
    assert_value_equal(view.X, expected[::2, 3:9].X, "view X")
    assert entries(fresh) == [(str(fresh), eager._elements.ref.format, 2, "r")]
    assert eager._elements.connection.handle is lazy._elements.connection.handle and (
        view._elements.connection is eager._elements.connection)
    assert eager._elements.connection.generation == lazy._elements.connection.generation
    if fmt == "h5ad":
        # read tasks go through the shadows' own h5py.File: one HDF5 id, one descriptor
        assert read_handle(eager._elements.ref) is eager.file is lazy.file
        assert len(descriptors(fresh)) == 1
    else:
        assert eager.file is lazy.file  # one group per mode
    eager.close()
    lazy.close()


def test_a_modality_opened_alone_shares_the_mudatas_connection_to_the_file(fmt, tmp_path):
    mudata = pytest.importorskip("mudata")
    mdata = mudata.MuData({"rna": make_adata(), "atac": make_adata(n_vars=10, seed=1)})
    path = tmp_path / f"m{'.h5mu' if fmt == 'h5ad' else '.zarr'}"
    with warnings.catch_warnings(), zarr_format(fmt):
        warnings.simplefilter("ignore")
        mdata.write_h5mu(path) if fmt == "h5ad" else mdata.write_zarr(path)
    whole = MuDataShadow(path)
    rna = AnnDataShadow(f"{path}/mod/rna")
    assert entries(path) == [(str(path), whole._elements.ref.format, 2, "r")]
    assert rna._elements.connection.handle is whole._elements.connection.handle
    rna.reopen("r+")
    rna.obsm["added"] = np.full((60, 2), 3.0)
    rna.write()
    assert "added" in whole["rna"].obsm  # the MuData's modality learns what the other wrote
    assert_value_equal(whole["rna"].obsm["added"], np.full((60, 2), 3.0), "obsm/added")
    assert whole._elements.connection.mode == whole["rna"]._elements.connection.mode == "r"
    whole["rna"].obsm["more"] = np.zeros((60, 1))
    with pytest.raises(OSError) as error:
        whole.write()
    assert str(error.value).endswith(f": {READ_ONLY_MESSAGE}")  # the file named first
    rna.close()
    assert entries(path) == [(str(path), whole._elements.ref.format, 1, "r")]
    whole.close()
    assert entries(path) == []
    assert not descriptors(path)


# -- close ---------------------------------------------------------------------------------------


def test_the_last_close_releases_every_handle_and_others_keep_reading(fmt, fresh):
    import h5py

    eager = AnnDataShadow(fresh)
    lazy = AnnDataShadow(fresh, array_backend="dask")
    expected = read_oracle(fresh)
    x = lazy.X
    assert_value_equal(eager.X, expected.X, "X")
    same(x, expected.X, "dask X")
    eager.close()
    eager.close()  # twice: harmless
    assert entries(fresh) == [(str(fresh), lazy._elements.ref.format, 1, "r")]
    same(lazy.obsm["X_pca"], expected.obsm["X_pca"], "the other still reads")
    same(lazy.layers["dense"], expected.layers["dense"], "a layer")
    lazy.close()
    lazy.close()
    assert entries(fresh) == []
    assert not descriptors(fresh)
    if fmt == "h5ad":
        h5py.File(fresh, "w").close()  # no HDF5 id of the file is left in this process
    else:
        same(x, expected.X, "graphs reopen by path after close")
        release(str(fresh))
        assert entries(fresh) == []


def test_a_closed_shadow_keeps_memory_and_reopens(fmt, fresh):
    shadow = AnnDataShadow(fresh)
    pca = shadow.obsm["X_pca"]
    shadow.obsm["staged"] = np.ones((60, 1))
    shadow.close()
    assert shadow.obsm["X_pca"] is pca and shadow.obsm.is_staged("staged")
    assert shadow._elements.connection.mode == "r" and "staged▲" in repr(shadow.obsm)
    shadow.reopen("r+").write()
    shadow.close()
    assert "staged" in read_oracle(fresh).obsm
    assert not descriptors(fresh)


def test_a_shadow_is_a_context_manager(fmt, fresh):
    with AnnDataShadow(fresh) as adata:
        assert adata.shape == (60, 15)
        assert_value_equal(adata.X, read_oracle(fresh).X, "X")
        assert entries(fresh)
    assert entries(fresh) == [] and not descriptors(fresh)
    with AnnDataShadow(fresh, mode="r+") as adata:
        adata.obsm["ctx"] = np.ones((60, 1))
        adata.write()
    assert entries(fresh) == []
    assert "ctx" in read_oracle(fresh).obsm


def test_a_shadow_no_one_holds_lets_go_of_the_file(fmt, fresh):
    shadow = AnnDataShadow(fresh)
    _ = shadow.X, shadow[:5].obs  # a tracked frame refers to its (view) shadow
    del shadow
    gc.collect()
    assert entries(fresh)
    del _
    gc.collect()
    assert entries(fresh) == []
    assert not descriptors(fresh)


def test_a_read_in_flight_keeps_the_handle_the_last_shadow_lets_go(fmt, fresh):
    """Readers not attached to the file (read tasks, an atlas's metadata threads) share the handle of its
    shadows: when the last shadow goes while they read (closed, or collected in any thread), the handle
    is closed by the last read to finish, not under it."""
    shadow = AnnDataShadow(fresh)
    ref = shadow._elements.ref
    expected = read_oracle(fresh).obsm["X_pca"]
    with reading(ref):
        node = read_node(ref, ref.element_path("obsm/X_pca"))
        shadow.close()
        assert entries(fresh) == [(str(fresh), ref.format, 0, "r")]  # still open, for the read
        np.testing.assert_array_equal(node[:], expected)
        with reading(ref):  # reads nest
            np.testing.assert_array_equal(read_node(ref, ref.element_path("obsm/X_pca"))[:5], expected[:5])
        assert entries(fresh)
    assert entries(fresh) == [] and not descriptors(fresh)


def test_a_shadow_opened_during_a_read_keeps_the_handle_after_it(fmt, fresh):
    shadow = AnnDataShadow(fresh)
    ref = shadow._elements.ref
    with reading(ref):
        shadow.close()
        again = AnnDataShadow(fresh)  # attaches to the entry the read holds: the close is called off
    assert entries(fresh) == [(str(fresh), ref.format, 1, "r")]
    assert_value_equal(again.obsm["X_pca"], read_oracle(fresh).obsm["X_pca"], "obsm/X_pca")
    again.close()
    assert entries(fresh) == [] and not descriptors(fresh)


def test_an_element_read_holds_the_handle_while_the_last_shadow_goes(fmt, fresh, monkeypatch):
    """Every read of an element's values is such a read: the last shadow of the file closed in the middle
    of a task's read (here, between its lookup of the node and its read of the bytes) changes nothing."""
    shadow = AnnDataShadow(fresh, array_backend="dask")
    graph = shadow.obsm["X_pca"]
    def subclasses(cls):
        return [cls, *(sub for direct in cls.__subclasses__() for sub in subclasses(direct))]

    def read_after_the_shadow_went(original):
        def read(self, *args, **kwargs):
            shadow.close()
            return original(self, *args, **kwargs)
        return read

    for cls in subclasses(StoredArray):
        if "read" in vars(cls):
            monkeypatch.setattr(cls, "read", read_after_the_shadow_went(vars(cls)["read"]))
    same(graph.compute(scheduler="sync"), read_oracle(fresh).obsm["X_pca"], "obsm/X_pca")
    monkeypatch.undo()
    assert entries(fresh) == [] and not descriptors(fresh)


# -- modes and writes ----------------------------------------------------------------------------


def test_reopen_r_plus_beside_readers_keeps_their_mode_and_shows_them_the_write(fmt, fresh):
    reader = AnnDataShadow(fresh)
    lazy = AnnDataShadow(fresh, array_backend="dask")
    writer = AnnDataShadow(fresh)
    expected = read_oracle(fresh)
    _ = reader.obsm.keys(), lazy.X
    writer.reopen("r+")
    assert writer._elements.connection.mode == "r+"
    assert reader._elements.connection.mode == lazy._elements.connection.mode == "r"
    assert entries(fresh)[0][3] == "r+"
    if fmt == "h5ad":
        assert writer.file.mode == reader.file.mode == "r+"  # one h5py.File: the connection's mode
    else:
        assert not writer.file.read_only and reader.file.read_only  # a group in each shadow's mode
    assert_value_equal(reader.X, expected.X, "reading beside a writer")
    reader.obsm["mine"] = np.zeros((60, 1))
    with pytest.raises(OSError) as error:
        reader.write()  # its own mode is still 'r'
    assert str(error.value).endswith(f": {READ_ONLY_MESSAGE}")  # the file named first

    new = np.arange(120.0).reshape(60, 2)
    writer.obsm["new"] = new
    writer.uns["nested"]["level1"]["added"] = "here"
    writer.write()
    for other in (reader, lazy):
        assert "new" in other.obsm and "new" in list(other.obsm)
        same(other.obsm["new"], new, "obsm/new seen by another shadow")
        assert other.uns["nested"]["level1"]["added"] == "here"
        same(other.X, expected.X, "X after the write")
    assert reader.obsm.is_staged("mine")
    same(lazy[::3].obsm["new"], new[::3], "a view taken after the write")

    writer.reopen("r")  # no shadow holds r+ any more: the handle goes back to r
    assert entries(fresh)[0][3] == "r"
    if fmt == "h5ad":
        assert reader.file.mode == "r"
    for shadow in (reader, lazy, writer):
        shadow.close()
    assert entries(fresh) == []


def test_the_readme_flow_writes_a_layer_computed_from_another_shadow(fmt, fresh):
    lazy = AnnDataShadow(fresh, array_backend="dask")
    adata = AnnDataShadow(fresh)
    adata.layers["log1p"] = np.log1p(lazy.X)
    adata.reopen("r+").write()
    assert "log1p" in lazy.layers
    lazy.close()
    adata.close()
    written = read_oracle(fresh)
    assert_value_equal(written.layers["log1p"], np.log1p(written.X), "layers/log1p")


def test_two_writers_in_one_process_never_replace_silently(fmt, fresh):
    first = AnnDataShadow(fresh, mode="r+")
    second = AnnDataShadow(fresh, mode="r+")
    first.obsm["k"] = np.ones((60, 2))
    first.write()
    assert "k" in second.obsm
    second.obsm["k"] = np.full((60, 2), 2.0)
    with pytest.raises(ElementExistsError, match="obsm/k"):
        second.write()
    assert second.obsm.is_staged("k")
    assert_value_equal(read_oracle(fresh).obsm["k"], np.ones((60, 2)), "the first write stands")
    second.write(overwrite=True)
    assert_value_equal(first.obsm["k"], np.full((60, 2), 2.0), "the first sees the replacement")
    first.close()
    second.close()
    assert_value_equal(read_oracle(fresh).obsm["k"], np.full((60, 2), 2.0), "replaced when asked")


# -- refused reopens -------------------------------------------------------------------------------

HOLD_HDF5 = """
import h5py, sys, time
f = h5py.File(sys.argv[1], "r")
print("held", flush=True)
time.sleep(60)
"""

HOLD_ZARR_LOCK = """
import fcntl, os, sys, time
os.makedirs(os.path.join(sys.argv[1], ".shadows-tmp"), exist_ok=True)
lock = open(os.path.join(sys.argv[1], ".shadows-tmp", "lock"), "w")
fcntl.flock(lock, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(60)
"""


def hold(path: Path, fmt: str) -> ForkedProcess:
    """A child process (of the tests' fork server) holding ``path``: open read-only (HDF5: no writer may
    open it) or holding the Zarr writers' lock."""
    script = HOLD_HDF5 if fmt == "h5ad" else HOLD_ZARR_LOCK
    child = fork_server().start(script, path)
    assert child.stdout.readline().strip() == "held", child.stderr.read()
    return child


@pytest.mark.parametrize("cause", ["busy", "denied"])
def test_a_refused_reopen_changes_nothing(fmt, fresh, cause, monkeypatch):
    shadow = AnnDataShadow(fresh)
    other = AnnDataShadow(fresh, array_backend="dask")
    expected = read_oracle(fresh)
    pca = shadow.obsm["X_pca"]  # held in memory
    shadow.obsm["staged"] = np.ones((60, 1))
    shadow.obs["score"] = np.arange(60.0)
    if cause == "busy":
        child = hold(fresh, fmt)
        refusal = pytest.raises(FileBusyError)
    else:
        child = None
        monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)
        refusal = pytest.raises(PermissionDeniedError)
    try:
        with refusal:
            shadow.reopen("r+")
        with refusal:
            AnnDataShadow(fresh, mode="r+")  # a refused new shadow leaves no user behind
        assert shadow._elements.connection.mode == "r" and other._elements.connection.mode == "r"
        assert entries(fresh) == [(str(fresh), shadow._elements.ref.format, 2, "r")]
        assert shadow.file.mode == "r" if fmt == "h5ad" else shadow.file.read_only
        assert_value_equal(shadow.X, expected.X, "X after a refused reopen")
        assert shadow.obsm["X_pca"] is pca
        assert_value_equal(shadow.layers["dense"], expected.layers["dense"], "a stored layer")
        assert shadow.obsm.is_staged("staged") and "staged▲" in repr(shadow.obsm)
        assert_value_equal(shadow.obs["score"].to_numpy(), np.arange(60.0), "a staged column")
        same(other.X, expected.X, "another shadow keeps reading")
        with pytest.raises(OSError) as error:
            shadow.write()
        assert str(error.value).endswith(f": {READ_ONLY_MESSAGE}")  # the file named first
    finally:
        if child is not None:
            child.kill()
            child.wait()
        monkeypatch.undo()
    shadow.reopen("r+").write()
    assert other._elements.connection.mode == "r"
    shadow.close()
    other.close()
    written = read_oracle(fresh)
    assert "staged" in written.obsm and "score" in written.obs


def test_a_finalizer_never_waits_for_the_registry(fresh):
    """The garbage collector may finalize a shadow in zarr's event-loop thread while this thread holds the
    registry's lock and waits for that loop: the finalizer queues its count-out instead of waiting."""
    import threading

    shadow = AnnDataShadow(fresh)
    connection = shadow._elements.connection
    found, connection._entry = connection._entry, None
    with registry._locked():  # held here, as by a thread opening a store meanwhile
        finalizer = threading.Thread(target=registry.detach_soon, args=(found, connection))
        finalizer.start()
        finalizer.join(timeout=10)
        assert not finalizer.is_alive()
        assert entries(fresh)[0][2] == 1  # not counted out yet
    registry.release("not a path")  # the next registry operation counts it out
    assert entries(fresh) == []
