"""Writes into files anndata < 0.7 wrote (structured obs/var/obsm/varm, categories in uns).

A slot written into moves to today's encoding within the same write; anndata then reads every stored
value as before, plus the additions. Checked on scanpy's bundled pbmc68k_reduced where scanpy ships it
in the pre-0.7 layout (scanpy < 1.12), and everywhere on a file built here as anndata 0.6 wrote it.
"""

from __future__ import annotations

import hashlib
import shutil
import warnings
from pathlib import Path

import anndata as ad
import dask.array as da
import h5py
import numpy as np
import pandas as pd
import pytest
import zarr

from helpers import assert_shadow_matches, assert_value_equal
from shadows import AnnDataShadow
from shadows.errors import ElementExistsError, InvalidElementKeyError, MalformedElementError, ReadOnlyError

N_OBS, N_VARS = 12, 5


def write_pre07(path: Path, unfit: bool = False) -> Path:
    """A small file in anndata 0.6's layout: obs/var/obsm/varm as structured datasets, categorical codes
    with their categories in ``uns["<column>_categories"]`` (one shared by an obs and a var column, one of
    a single category; with ``unfit``, one whose codes do not fit, which anndata leaves in uns), unencoded uns.
    """
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f["X"] = rng.random((N_OBS, N_VARS), dtype=np.float32)
        obs = np.zeros(N_OBS, dtype=[("index", "S8"), ("kind", "i1"), ("one", "i1"), ("shared", "i1"),
                                     ("score", "<f4"), ("flag", "?"), ("label", "S6"), ("big", "<i8")])
        obs["index"] = [f"cell{i}".encode() for i in range(N_OBS)]
        obs["kind"] = [0, 1, 2, -1, 1, 0, 2, 2, 1, 0, 0, 1]
        obs["shared"] = np.arange(N_OBS) % 2
        obs["score"] = rng.normal(size=N_OBS)
        obs["flag"] = np.arange(N_OBS) % 3 == 0
        obs["label"] = [b"a" * (1 + i % 5) for i in range(N_OBS)]
        obs["big"] = np.arange(N_OBS)
        f["obs"] = obs
        var = np.zeros(N_VARS, dtype=[("index", "S8"), ("vkind", "i1"), ("shared", "i1"), ("mean", "<f8")])
        var["index"] = [f"gene{i}".encode() for i in range(N_VARS)]
        var["vkind"] = [0, 1, 1, 0, 1]
        var["shared"] = [1, 1, 0, 0, 1]
        var["mean"] = rng.normal(size=N_VARS)
        f["var"] = var
        obsm = np.zeros(N_OBS, dtype=[("X_pca", "<f4", (3,)), ("X_umap", "<f8", (2,))])
        obsm["X_pca"], obsm["X_umap"] = rng.normal(size=(N_OBS, 3)), rng.normal(size=(N_OBS, 2))
        f["obsm"] = obsm
        varm = np.zeros(N_VARS, dtype=[("PCs", "<f8", (3,))])
        varm["PCs"] = rng.normal(size=(N_VARS, 3))
        f["varm"] = varm
        uns = f.create_group("uns")
        uns["kind_categories"] = np.array([b"alpha", b"beta", b"gamma"])
        uns["one_categories"] = np.array([b"only"])
        uns["shared_categories"] = np.array([b"s0", b"s1"])
        uns["vkind_categories"] = np.array([b"x", b"y"])
        if unfit:  # (shadows hides it while obs is a dataset: anndata shows it)
            uns["big_categories"] = np.array([b"p", b"q"])
        uns["kind_colors"] = np.array([b"#ff0000", b"#00ff00", b"#0000ff"])
        params = uns.create_group("params")
        params["n"] = np.array([3])
        params["method"] = np.array([b"umap"])
    return path


@pytest.fixture(params=["pbmc", "built"])
def legacy(request, tmp_path, pbmc_path) -> Path:
    """A copy of a pre-0.7 file (written into by the test)."""
    target = tmp_path / "legacy.h5ad"
    if request.param == "built":
        return write_pre07(target)
    with h5py.File(pbmc_path, "r") as f:
        if isinstance(f["obs"], h5py.Group):
            pytest.skip("this scanpy ships pbmc68k_reduced in today's encoding, not anndata < 0.7's")
    shutil.copy(pbmc_path, target)
    return target


@pytest.fixture
def built(tmp_path) -> Path:
    return write_pre07(tmp_path / "legacy.h5ad")


def read(path: Path) -> ad.AnnData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ad.read_h5ad(path)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _mapping(adata: ad.AnnData, slot: str) -> dict:
    return {k: v for k, v in getattr(adata, slot).items() if k is not None}  # anndata 0.13: layers[None] is X


def assert_read_as_before(after: ad.AnnData, before: ad.AnnData, added: dict[str, dict]) -> None:
    """anndata's read of the written file: every element of ``before``, plus ``added`` ({slot: {key: value}})."""
    assert after.shape == before.shape
    for frame in ("obs", "var"):
        got, expected, new = getattr(after, frame), getattr(before, frame), added.get(frame, {})
        assert list(got.columns) == [*expected.columns, *new], frame
        assert_value_equal(got[list(expected.columns)], expected, frame)  # column by column, categoricals too
        for key, values in new.items():
            np.testing.assert_array_equal(got[key].to_numpy(), values)
    assert_value_equal(after.X, before.X, "X")
    for slot in ("layers", "obsm", "varm", "obsp", "varp"):
        got, expected, new = _mapping(after, slot), _mapping(before, slot), added.get(slot, {})
        assert set(got) == set(expected) | set(new), slot
        for key in expected:
            assert_value_equal(got[key], expected[key], f"{slot}/{key}")
        for key, value in new.items():
            np.testing.assert_array_equal(got[key], value)
    uns, new = dict(after.uns), added.get("uns", {})
    assert not [k for k in uns if k.endswith("_categories") and k not in before.uns], "stale categories in uns"
    assert_value_equal({k: v for k, v in uns.items() if k not in new}, dict(before.uns), "uns")
    for key, value in new.items():
        assert uns[key] == value
    if before.raw is not None:
        assert_value_equal(after.raw.X, before.raw.X, "raw/X")
        assert_value_equal(after.raw.var, before.raw.var, "raw/var")


ADDITIONS = {
    "obs": lambda s: s.obs.__setitem__("new", np.arange(s.n_obs)),
    "var": lambda s: s.var.__setitem__("new", np.arange(s.n_vars) * 0.5),
    "obsm": lambda s: s.obsm.__setitem__("X_new", np.ones((s.n_obs, 2))),
    "varm": lambda s: s.varm.__setitem__("V_new", np.full((s.n_vars, 3), 2.0)),
    "layers": lambda s: s.layers.__setitem__("l", np.ones(s.shape, dtype=np.float32)),
    "uns": lambda s: s.uns.__setitem__("u", 1),
}


def expected_additions(slots: list[str], n_obs: int, n_vars: int) -> dict[str, dict]:
    values = {"obs": ("new", np.arange(n_obs)), "var": ("new", np.arange(n_vars) * 0.5),
              "obsm": ("X_new", np.ones((n_obs, 2))), "varm": ("V_new", np.full((n_vars, 3), 2.0)),
              "layers": ("l", np.ones((n_obs, n_vars), dtype=np.float32)), "uns": ("u", 1)}
    return {slot: dict([values[slot]]) for slot in slots}


def write_and_check(path: Path, slots: list[str]) -> None:
    before = read(path)
    shadow = AnnDataShadow(path, mode="r+")
    for slot in slots:
        ADDITIONS[slot](shadow)
    shadow.write()
    added = expected_additions(slots, *before.shape)
    after = read(path)
    assert_read_as_before(after, before, added)
    assert_shadow_matches(shadow, after)  # the writing shadow reads the new layout
    shadow.close()
    assert_shadow_matches(AnnDataShadow(path), after)


@pytest.mark.parametrize("slot", list(ADDITIONS))
def test_each_slot_alone(legacy, slot):
    write_and_check(legacy, [slot])


def test_all_slots_together(legacy):
    write_and_check(legacy, list(ADDITIONS))
    with h5py.File(legacy, "r") as f:  # the slots written into moved; the others kept their layout
        assert all(isinstance(f[slot], h5py.Group) for slot in ("obs", "var", "obsm", "varm"))
        assert not [k for k in f["uns"] if k.endswith("_categories")]


def test_categories_kept_where_anndata_put_them(tmp_path):
    """The shared categories reach obs and var; those whose codes do not fit stay an uns entry."""
    built = write_pre07(tmp_path / "legacy.h5ad", unfit=True)
    before = read(built)
    assert isinstance(before.var["shared"].dtype, pd.CategoricalDtype) and "big_categories" in before.uns
    shadow = AnnDataShadow(built, mode="r+")
    shadow.obs["new"] = np.arange(N_OBS)  # moves var along: anndata reads uns categories only while obs is old
    shadow.write()
    after = read(built)
    assert_read_as_before(after, before, {"obs": {"new": np.arange(N_OBS)}})
    assert list(after.var["vkind"]) == ["x", "y", "y", "x", "y"]
    assert list(after.obs["one"].cat.categories) == ["only"]
    assert_shadow_matches(AnnDataShadow(built), after)


def test_a_problem_writes_nothing(legacy):
    """Replacing a stored field needs overwrite=True: refused before the layer and uns entry staged with it."""
    first = digest(legacy)
    shadow = AnnDataShadow(legacy, mode="r+")
    shadow.layers["l"] = np.ones(shadow.shape, dtype=np.float32)
    shadow.uns["u"] = 1
    shadow.obsm["X_new"] = np.ones((shadow.n_obs, 2))
    shadow.obsm["X_pca"] = np.zeros(shadow.obsm["X_pca"].shape, dtype=np.float32)
    with pytest.raises(ElementExistsError, match="obsm/X_pca"):
        shadow.write()
    column = "louvain" if "louvain" in shadow.obs else "kind"
    del shadow.obsm["X_pca"]
    shadow.obs[column] = shadow.obs[column].cat.codes.to_numpy()
    with pytest.raises(ElementExistsError, match=f"obs/{column}"):
        shadow.write()
    shadow.close()
    assert digest(legacy) == first


def test_replace_and_delete_with_overwrite(built):
    before = read(built)
    shadow = AnnDataShadow(built, mode="r+")
    shadow.obs["kind"] = np.arange(N_OBS, dtype=np.int64)
    del shadow.var["mean"]
    new_pca = np.zeros((N_OBS, 3), dtype=np.float32)
    shadow.obsm["X_pca"] = new_pca
    del shadow.obsm["X_umap"]
    shadow.write(overwrite=True)
    after = read(built)
    np.testing.assert_array_equal(after.obs["kind"].to_numpy(), np.arange(N_OBS))
    assert "mean" not in after.var and "kind_categories" not in after.uns  # kind's categories went with it
    assert set(after.obsm) == {"X_pca"}
    assert_value_equal(after.obsm["X_pca"], new_pca)
    others = [c for c in before.obs if c != "kind"]
    assert_value_equal(after.obs[others], before.obs[others], "obs")
    assert_shadow_matches(AnnDataShadow(built), after)


def test_invalid_or_conflicting_names_write_nothing(built):
    first = digest(built)
    shadow = AnnDataShadow(built, mode="r+")
    shadow.obs["index"] = np.arange(N_OBS)
    with pytest.raises(InvalidElementKeyError, match="index"):
        shadow.write()
    del shadow.obs["index"]
    shadow.obs["new"] = np.arange(N_OBS)
    shadow.uns["kind_categories"] = np.array(["a", "b", "c"])  # what the move deletes: not in the same write
    with pytest.raises(InvalidElementKeyError, match="kind_categories"):
        shadow.write(overwrite=True)
    shadow.close()
    assert digest(built) == first


def test_a_slot_that_cannot_move_writes_nothing(built):
    """A stored field today's encoding cannot name: the whole write is refused, the layer staged with it too."""
    with h5py.File(built, "r+") as f:
        del f["obsm"]
        f["obsm"] = np.zeros(N_OBS, dtype=[("X_pca", "<f4", (3,)), ("a/b", "<f8")])
    first = digest(built)
    shadow = AnnDataShadow(built, mode="r+")
    shadow.layers["l"] = np.ones(shadow.shape, dtype=np.float32)
    shadow.obsm["X_new"] = np.ones((N_OBS, 2))
    with pytest.raises(MalformedElementError, match="'a/b'"):
        shadow.write()
    shadow.close()
    assert digest(built) == first


def test_dask_entry_and_graphs_over_the_old_layout(built):
    """A dask array is streamed into the new obsm; graphs built over the structured obsm are rebuilt."""
    shadow = AnnDataShadow(built, mode="r+", array_backend="dask")
    pca = shadow.obsm["X_pca"].compute()
    shadow.obsm["X_new"] = da.ones((N_OBS, 4), chunks=(5, 4))
    shadow.write()
    np.testing.assert_array_equal(shadow.obsm["X_pca"].compute(), pca)
    after = read(built)
    np.testing.assert_array_equal(after.obsm["X_new"], np.ones((N_OBS, 4)))
    np.testing.assert_array_equal(after.obsm["X_pca"], pca)


def test_later_writes_use_the_new_layout(built):
    shadow = AnnDataShadow(built, mode="r+")
    shadow.obs["a"] = np.arange(N_OBS)
    shadow.write()
    shadow.obs["b"] = np.arange(N_OBS) * 2
    shadow.obsm["X_b"] = np.ones((N_OBS, 1))
    shadow.write()
    after = read(built)
    assert list(after.obs.columns)[-2:] == ["a", "b"] and "X_b" in after.obsm
    assert_shadow_matches(AnnDataShadow(built), after)


def test_zarr_arrays_are_never_written_into(tmp_path):
    """Zarr stores never hold the pre-0.7 layout; one that looks like it is refused, not written into."""
    store = tmp_path / "old.zarr"
    root = zarr.open_group(store, mode="w", zarr_format=2)
    obs = np.zeros(3, dtype=[("index", "S4"), ("a", "<f8")])
    obs["index"] = [b"c0", b"c1", b"c2"]
    root.create_array("obs", data=obs)
    var = np.zeros(2, dtype=[("index", "S4")])
    var["index"] = [b"g0", b"g1"]
    root.create_array("var", data=var)
    root.create_array("X", data=np.ones((3, 2)))
    root.create_array("obsm", data=np.zeros(3, dtype=[("X_pca", "<f8")]))
    zarr.consolidate_metadata(store)
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    for stage in (lambda s: s.obs.__setitem__("new", np.arange(3)), lambda s: s.obsm.__setitem__("X", np.ones(3))):
        shadow = AnnDataShadow(store, mode="r+")
        stage(shadow)
        with pytest.raises(ReadOnlyError, match="only in HDF5"):
            shadow.write()
        shadow.close()
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before
