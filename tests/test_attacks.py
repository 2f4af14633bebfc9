"""The write side tried as an attacker (or a careless user) would: links planted in a store, keys that
spell paths, exports aimed at folders and at the source, files this user may not write.

Each case checks that nothing outside the store changes, that nothing inside it changes that was not
asked for, and that the error names the file and what to do. Beside tests/test_faults.py (accidents).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import make_adata, read_oracle, suffix, write
from helpers import file_digest, fork_server
from shadows import (
    AnnDataShadow,
    ElementExistsError,
    InvalidElementKeyError,
    PermissionDeniedError,
    UnsafeTargetError,
)


@pytest.fixture
def fresh(fmt, tmp_path) -> Path:
    """A small file of its own, in a folder of its own (tests here write to it and around it)."""
    adata = make_adata(n_obs=30, n_vars=8)
    del adata.obsp["dense_dist"]
    folder = tmp_path / "data"
    folder.mkdir()
    return write(adata, folder / f"src{suffix(fmt)}", fmt)


@pytest.fixture
def victim(tmp_path) -> Path:
    """A folder outside any store, with subfolders and files that must survive every test."""
    root = tmp_path / "victim"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "sub" / "deeper" / "keep.txt").write_text("precious")
    (root / "other").mkdir()
    (root / "file.txt").write_text("also precious")
    return root


def tree(root: Path) -> dict[str, bytes | str]:
    """Every path under ``root`` with its content (files) or kind, to compare before and after."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = "link" if path.is_symlink() else path.read_bytes() if path.is_file() else "dir"
    return out


def zarr_only(fmt: str) -> None:
    if fmt == "h5ad":
        pytest.skip("a Zarr store's folders; HDF5 has its own case")


# -- 1. a symlinked scratch folder ------------------------------------------------------------------


def test_a_symlinked_scratch_folder_is_refused_and_its_target_untouched(fmt, fresh, victim):
    zarr_only(fmt)
    before, store_before = tree(victim), file_digest(fresh)
    (fresh / ".shadows-tmp").symlink_to(victim, target_is_directory=True)
    shadow = AnnDataShadow(fresh, mode="r+")
    shadow.obsm["new"] = np.ones((30, 2))
    with pytest.raises(UnsafeTargetError, match=r"\.shadows-tmp.*symbolic link") as error:
        shadow.write()
    assert str(fresh) in str(error.value)
    assert tree(victim) == before  # no folder deleted, no lock file left there
    (fresh / ".shadows-tmp").unlink()
    assert file_digest(fresh) == store_before
    assert "new" in shadow.obsm and shadow.obsm.is_staged("new")  # still staged: nothing was written


def test_foreign_content_in_the_scratch_folder_is_refused_not_cleaned(fmt, fresh):
    zarr_only(fmt)
    scratch = fresh / ".shadows-tmp"
    (scratch / "mine").mkdir(parents=True)
    (scratch / "mine" / "notes.txt").write_text("a user's file")
    (scratch / "0123456789abcdef0123456789abcdef").mkdir()  # a killed writer's leftovers: cleaned
    shadow = AnnDataShadow(fresh, mode="r+")
    shadow.obsm["new"] = np.ones((30, 2))
    with pytest.raises(UnsafeTargetError, match=r"mine.*did not write"):
        shadow.write()
    assert (scratch / "mine" / "notes.txt").read_text() == "a user's file"
    assert "new" not in read_oracle(fresh).obsm


def test_a_symlinked_lock_file_is_refused(fmt, fresh, victim):
    zarr_only(fmt)
    (fresh / ".shadows-tmp").mkdir()
    (fresh / ".shadows-tmp" / "lock").symlink_to(victim / "file.txt")
    shadow = AnnDataShadow(fresh)
    shadow.uns["k"] = 1
    with pytest.raises(UnsafeTargetError, match="lock file is a symbolic link"):
        shadow.reopen("r+")  # opening for writing looks for another writer's lock: refused there already
    with pytest.raises(UnsafeTargetError, match="lock file is a symbolic link"):
        AnnDataShadow(fresh, mode="r+")
    assert (victim / "file.txt").read_text() == "also precious"


# -- 2. export onto an existing folder --------------------------------------------------------------


@pytest.mark.parametrize("how", ["write_h5ad", "write_zarr"])
def test_export_never_deletes_a_folder_that_is_not_a_store(fmt, fresh, victim, how):
    shadow = AnnDataShadow(fresh)
    before = tree(victim)
    with pytest.raises(ElementExistsError, match="overwrite=True"):
        getattr(shadow, how)(victim)
    with pytest.raises(UnsafeTargetError, match="not a Zarr store"):
        getattr(shadow, how)(victim, overwrite=True)
    assert tree(victim) == before


def test_export_replaces_an_existing_store_or_file_only_with_overwrite(fmt, fresh, tmp_path):
    shadow = AnnDataShadow(fresh)
    store, file = tmp_path / "old.zarr", tmp_path / "old.h5ad"
    shadow[:5].write_zarr(store)
    shadow[:5].write_h5ad(file)
    for target, how in ((store, "write_zarr"), (file, "write_h5ad")):
        with pytest.raises(ElementExistsError):
            getattr(shadow, how)(target)
        assert read_oracle(target).n_obs == 5
        getattr(shadow, how)(target, overwrite=True)
        assert read_oracle(target).n_obs == 30


def test_export_onto_a_symlink_is_refused(fmt, fresh, tmp_path, victim):
    link = tmp_path / "link.h5ad"
    link.symlink_to(victim / "file.txt")
    with pytest.raises(UnsafeTargetError, match="symbolic link"):
        AnnDataShadow(fresh).write_h5ad(link, overwrite=True)
    assert (victim / "file.txt").read_text() == "also precious"


# -- 3 and 4. keys that spell paths, slots or metadata ------------------------------------------------

BAD_KEYS = ["/X_pca", "X_pca/", "X_pca\x00x", "params/k", ".", "..", "../../escape", "", "zarr.json", ".zattrs",
            ".zgroup", ".zarray", ".zmetadata", ".shadows-tmp"]


@pytest.mark.parametrize("slot", ["obsm", "uns", "layers", "varm"])
def test_invalid_keys_are_refused_on_assignment_before_anything_is_staged(fmt, fresh, slot):
    shadow = AnnDataShadow(fresh, mode="r+")
    before = file_digest(fresh)
    mapping = getattr(shadow, slot)
    keys_before = list(mapping)
    shape = {"obsm": (30, 2), "uns": (3,), "layers": (30, 8), "varm": (8, 2)}[slot]
    for key in BAD_KEYS:
        with pytest.raises(InvalidElementKeyError, match=f"{slot}.*invalid key") as error:
            mapping[key] = np.ones(shape)
        assert isinstance(error.value, ValueError) and str(fresh) in str(error.value)
    assert list(mapping) == keys_before and "▲" not in repr(shadow)
    shadow.write(overwrite=True)  # nothing staged: nothing written
    assert file_digest(fresh) == before
    assert shadow.obsm["X_pca"].shape == (30, 5)


def test_nested_uns_keys_and_obs_columns_are_checked_too(fmt, fresh):
    shadow = AnnDataShadow(fresh, mode="r+")
    with pytest.raises(InvalidElementKeyError, match=r"uns/params\['a/b'\]"):
        shadow.uns["params"] = {"ok": 1, "a/b": 2}
    with pytest.raises(InvalidElementKeyError, match="invalid key"):
        shadow.uns["nested"]["."] = 1
    for key in ("a/b", ".", "bad\x00", ".zattrs"):
        with pytest.raises(InvalidElementKeyError, match="invalid column name"):
            shadow.obs[key] = np.arange(30)
        assert key not in shadow.obs.columns and key not in shadow.obs_keys()
    frame = shadow.obs.copy()
    frame["x/y"] = 1.0
    with pytest.raises(InvalidElementKeyError):
        shadow.obs = frame
    assert "params" not in shadow.uns and "▲" not in repr(shadow)


def test_a_column_named_like_the_index_never_replaces_it(fmt, fresh):
    shadow = AnnDataShadow(fresh, mode="r+")
    with pytest.raises(InvalidElementKeyError, match="reserved"):
        shadow.obs["_index"] = np.arange(30)  # anndata's name for an unnamed index
    shadow.obs["cell_id"] = np.arange(30)  # the name this file's obs index is stored under
    shadow.uns["kept"] = 1
    before = file_digest(fresh)
    for overwrite in (False, True):
        with pytest.raises(InvalidElementKeyError, match=r"cell_id.*the index"):
            shadow.write(overwrite=overwrite)
    assert file_digest(fresh) == before  # all or nothing: uns['kept'] was not written either
    assert list(read_oracle(fresh).obs_names[:2]) == ["cell0", "cell1"]


def test_a_key_stored_but_unknown_to_the_shadow_still_needs_overwrite(fmt, fresh):
    """The file decides what a write replaces: another writer added the element after this shadow read
    the file's keys.
    """
    shadow = AnnDataShadow(fresh)
    shadow.obsm["X_new"] = np.zeros((30, 2))
    shadow.close()
    theirs = AnnDataShadow(fresh, mode="r+")
    theirs.obsm["X_new"] = np.full((30, 2), 7.0)
    theirs.write()
    theirs.close()
    shadow.reopen("r+")
    with pytest.raises(ElementExistsError, match="X_new"):
        shadow.write()
    np.testing.assert_array_equal(read_oracle(fresh).obsm["X_new"], np.full((30, 2), 7.0))


# -- 5. export onto the source, however spelled --------------------------------------------------------


def test_export_onto_the_source_is_refused_however_spelled(fmt, fresh, tmp_path):
    before = file_digest(fresh)
    shadow = AnnDataShadow(fresh)
    link = tmp_path / f"alias{suffix(fmt)}"
    link.symlink_to(fresh, target_is_directory=fresh.is_dir())
    spellings = [fresh.parent / ".." / fresh.parent.name / fresh.name, link, fresh.parent]
    if fmt != "h5ad":
        spellings.append(fresh / "obsm" / "inside.h5ad")
    how = "write_h5ad" if fmt == "h5ad" else "write_zarr"
    for target in spellings:
        with pytest.raises(UnsafeTargetError, match="the file it reads"):
            getattr(shadow[::2], how)(target, overwrite=True)
        with pytest.raises(UnsafeTargetError, match="the file it reads"):
            shadow.copy(target, overwrite=True)
    assert file_digest(fresh) == before
    assert AnnDataShadow(fresh).n_obs == 30


# -- 6. writes escaping through a linked slot --------------------------------------------------------


def test_writes_never_go_through_a_symlinked_slot_folder(fmt, fresh, tmp_path):
    zarr_only(fmt)
    outside = tmp_path / "outside_obsm"
    (fresh / "obsm").rename(outside)
    (fresh / "obsm").symlink_to(outside, target_is_directory=True)
    before = tree(outside)
    shadow = AnnDataShadow(fresh, mode="r+", allow_external=True)
    shadow.obsm["escaped"] = np.ones((30, 2))
    with pytest.raises(UnsafeTargetError, match=r"obsm.*symbolic link"):
        shadow.write()
    del shadow.obsm["escaped"]
    del shadow.obsm["X_umap"]
    with pytest.raises(UnsafeTargetError, match="symbolic link"):
        shadow.write(overwrite=True)  # a deletion through the link is refused too
    assert tree(outside) == before


def test_writes_never_go_through_hdf5_soft_or_external_links(fmt, fresh, tmp_path):
    if fmt != "h5ad":
        pytest.skip("HDF5 links")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_group("target").attrs.update({"encoding-type": "dict", "encoding-version": "0.1.0"})
    with h5py.File(fresh, "r+") as f:
        f["uns/soft"] = h5py.SoftLink("/uns/nested")
        f["uns/external"] = h5py.ExternalLink(str(other), "/target")
    before = file_digest(other)
    shadow = AnnDataShadow(fresh, mode="r+", allow_external=True)
    shadow.uns["soft"]["added"] = 1
    shadow.uns["external"]["added"] = 2
    with pytest.raises(UnsafeTargetError, match=r"uns/soft' is an HDF5 SoftLink.*uns/external' is an HDF5 "
                                                r"ExternalLink"):
        shadow.write()
    assert file_digest(other) == before
    with h5py.File(fresh, "r") as f:
        assert "added" not in f["uns/nested"]


# -- 7. permissions: "permission denied", before anything is staged -----------------------------------

#: Runs in a child process without the capabilities that let root ignore file permissions (CI runs as
#: root): then a file this user cannot write is refused as it is for everyone else.
NO_ROOT_OVERRIDE = """
import ctypes, os, sys
if os.geteuid() == 0:
    libc = ctypes.CDLL(None, use_errno=True)
    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]
    header, data = Header(0x20080522, 0), (Data * 2)()
    keep = ~((1 << 1) | (1 << 2)) & 0xFFFFFFFF  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
    if libc.capget(ctypes.byref(header), data) != 0:
        print("SKIP capget"); sys.exit(0)
    for field in ("effective", "permitted", "inheritable"):
        setattr(data[0], field, getattr(data[0], field) & keep)
    if libc.capset(ctypes.byref(header), data) != 0:
        print("SKIP capset"); sys.exit(0)
from shadows import AnnDataShadow
try:
    AnnDataShadow(sys.argv[1], mode="r+")
    print("OPENED")
except Exception as error:
    print(type(error).__name__, isinstance(error, PermissionError), error)
"""


def _open_without_root_override(path: Path) -> str:
    """Run :data:`NO_ROOT_OVERRIDE` in a child process (forked from one that made the imports: capabilities
    are dropped in the child alone) and return what it printed.
    """
    code, stdout, stderr = fork_server().run(NO_ROOT_OVERRIDE, path)
    assert code == 0, stderr
    if stdout.startswith("SKIP"):
        pytest.skip(f"cannot drop root's file-permission override here ({stdout.strip()})")
    return stdout


def _chmod_tree(path: Path, file_mode: int, dir_mode: int) -> None:
    paths = [path, *path.rglob("*")] if path.is_dir() else [path]
    for p in paths:
        p.chmod(dir_mode if p.is_dir() else file_mode)


def test_opening_r_plus_without_write_permission_says_permission_denied(fmt, fresh):
    before = file_digest(fresh)
    _chmod_tree(fresh, 0o444, 0o555)
    try:
        out = _open_without_root_override(fresh)
    finally:
        _chmod_tree(fresh, 0o644, 0o755)
    assert out.startswith("PermissionDeniedError True"), out
    assert "permission denied" in out and "open elsewhere" not in out and str(fresh) in out
    assert file_digest(fresh) == before
    with pytest.raises(PermissionDeniedError):  # the error type is public and a PermissionError
        raise PermissionDeniedError("x")
    assert issubclass(PermissionDeniedError, PermissionError)


def test_opening_r_plus_with_a_read_only_slot_folder_is_refused(fmt, fresh):
    zarr_only(fmt)
    (fresh / "obsm").chmod(0o555)
    try:
        out = _open_without_root_override(fresh)
    finally:
        (fresh / "obsm").chmod(0o755)
    assert out.startswith("PermissionDeniedError True") and "obsm" in out, out


def test_a_busy_file_is_still_called_busy(fmt, fresh):
    if fmt != "h5ad":
        pytest.skip("HDF5 file locking")
    holder = fork_server().start("import h5py, sys, time; f = h5py.File(sys.argv[1], 'r+'); "
                                 "print('held', flush=True); time.sleep(30)", fresh)
    try:
        assert holder.stdout.readline().strip() == "held"
        from shadows import FileBusyError

        with pytest.raises(FileBusyError, match="open elsewhere"):
            AnnDataShadow(fresh, mode="r+")
    finally:
        holder.kill()
        holder.wait()


def test_zarr_permission_problems_in_write_are_named(fmt, fresh, monkeypatch):
    """A store that became unwritable after opening: the failed rename is reported, not a raw error."""
    zarr_only(fmt)
    shadow = AnnDataShadow(fresh, mode="r+")
    shadow.obsm["new"] = np.ones((30, 2))

    def denied(*_args, **_kwargs):
        raise PermissionError(13, "Permission denied")

    commit_module = importlib.import_module("shadows.writing.commit")
    monkeypatch.setattr(os, "rename", denied)
    monkeypatch.setattr(commit_module, "exchange", lambda *_: False)
    from shadows import WriteFailedError

    with pytest.raises(WriteFailedError, match=r"obsm/new.*permission denied"):
        shadow.write()
