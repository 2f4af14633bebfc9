"""MuDataShadow against mudata's own reads: files mudata writes (h5mu, Zarr v2 and v3), modalities with
different observations, shared-var and shared-both files, views through obsmap/varmap."""

from __future__ import annotations

import contextlib
import functools
import pickle
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import zarr
from anndata.io import read_elem
from packaging.version import Version

from conftest import SharedFiles, make_adata, run_folder, zarr_format
from helpers import assert_mudata_matches, assert_shadow_matches, assert_value_equal, count_reads
from shadows import AnnDataShadow, ElementExistsError, MuDataShadow, NotMuDataError

mudata = pytest.importorskip("mudata")

FORMATS = ["h5mu", "zarr2", "zarr3"]
LAYOUTS = ["shared_obs", "shared_var", "shared_both"]


def make_mudata(layout: str) -> mudata.MuData:
    """A MuData of the given layout, with global obs/var columns, obsm/varm/obsp and nested uns."""
    if layout == "shared_obs":
        rna = make_adata()
        # atac holds 40 of the 60 cells, in another order than rna's
        atac = make_adata(n_obs=40, n_vars=9, seed=3)
        atac.obs_names = [f"cell{i}" for i in range(59, 19, -1)]
        atac.var_names = [f"peak{i}" for i in range(9)]
        mods, axis = {"rna": rna, "atac": atac}, 0
    elif layout == "shared_var":
        a, b = make_adata(n_obs=20, seed=4), make_adata(n_obs=30, seed=5)
        b.obs_names = [f"other{i}" for i in range(30)]
        mods, axis = {"a": a, "b": b}, 1
    else:
        mods, axis = {"x": make_adata(n_obs=25, seed=6), "y": make_adata(n_obs=25, seed=7)}, -1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mdata = mudata.MuData(mods, axis=axis)
    rng = np.random.default_rng(0)
    n_obs, n_vars = mdata.shape
    mdata.obs["total"] = rng.integers(0, 1000, n_obs)
    mdata.obs["group"] = pd.Categorical(rng.choice(["g1", "g2", "g3"], n_obs), categories=["g1", "g2", "g3", "g4"])
    mdata.var["score"] = rng.normal(size=n_vars)
    mdata.obsm["X_umap"] = rng.normal(size=(n_obs, 2))
    mdata.obsm["sparse"] = sp.random(n_obs, 4, density=0.5, format="csr", random_state=0)
    mdata.varm["loadings"] = rng.normal(size=(n_vars, 3))
    mdata.obsp["distances"] = sp.random(n_obs, n_obs, density=0.1, format="csr", random_state=1)
    mdata.uns["params"] = {"k": 15, "method": "wnn", "inner": {"weights": np.arange(3)}}
    return mdata


def write_mudata(mdata: mudata.MuData, path: Path, fmt: str) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "h5mu":
            mdata.write_h5mu(path)
        else:
            with zarr_format(fmt):
                mdata.write_zarr(path)
    return path


def stored_columns_only():
    """mudata < 0.4 pulls every modality's columns into the global obs/var on read (deprecated; 0.4 does
    not). Shadows show what the file stores, as mudata 0.4 does and as 0.3 does with this option.
    """
    if Version(mudata.__version__) < Version("0.4"):
        return mudata.set_options(pull_on_update=False)
    return contextlib.nullcontext()


def read_mudata(path: Path) -> mudata.MuData:
    with warnings.catch_warnings(), stored_columns_only():
        warnings.simplefilter("ignore")
        if path.suffix == ".h5mu":
            return mudata.read_h5mu(path)
        mdata = mudata.read_zarr(path)
        group = zarr.open_group(path, mode="r")
        if mdata.axis != group.attrs.get("axis", 0):
            # mudata < 0.4's read_zarr ignores the stored axis: build the MuData as read_h5mu does
            parts = {k: read_elem(group[k]) for k in group if k != "mod"}
            mods = {name: read_elem(group[f"mod/{name}"]) for name in group["mod"].attrs["mod-order"]}
            mdata = mudata.MuData(mods, axis=group.attrs["axis"], **parts)
        # mudata's read_zarr drops each modality's raw (it skips the raw group, then looks for it); take
        # raw from anndata's read of the modality, which is what a modality shadow shows
        for name, modality in mdata.mod.items():
            if modality.raw is None and "raw" in group[f"mod/{name}"]:
                raw = read_elem(group[f"mod/{name}"]).raw  # None where zarr v2 lists an empty "raw"
                modality.raw = None if raw is None else raw.to_adata()
        return mdata


@functools.cache
def stored_mudata(path: Path) -> mudata.MuData:
    """:func:`read_mudata` of one of the session's MuData files, read once per process: for tests that only
    compare against views of it (reading it took ~1.5 s a test, half of the views' tests' time).
    """
    return read_mudata(path)


def _build_mudata(key: tuple[str, str], folder: Path) -> Path:
    layout, fmt = key
    suffix = ".h5mu" if fmt == "h5mu" else ".zarr"
    return write_mudata(make_mudata(layout), folder / f"{layout}_{fmt}{suffix}", fmt)


@pytest.fixture(scope="session")
def mu_files(tmp_path_factory) -> SharedFiles:
    """The MuData files by (layout, format), each written on first use, once for all xdist workers."""
    keys = [(layout, fmt) for layout in LAYOUTS for fmt in FORMATS]
    return SharedFiles(run_folder(tmp_path_factory, "mudata"), keys, _build_mudata)


@pytest.fixture(params=FORMATS)
def mu_fmt(request) -> str:
    return request.param


@pytest.fixture
def mu_path(mu_files, mu_fmt) -> Path:
    return mu_files["shared_obs", mu_fmt]


# -- values ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_value_equals_mudata(mu_files, mu_fmt, layout):
    path = mu_files[layout, mu_fmt]
    shadow = MuDataShadow(path)
    expected = read_mudata(path)
    assert_mudata_matches(shadow, expected)
    assert shadow.axis == {"shared_obs": 0, "shared_var": 1, "shared_both": -1}[layout]
    assert shadow.filename == str(path)


def test_modalities_follow_mod_order(mu_path):
    shadow = MuDataShadow(mu_path)
    assert list(shadow.mod) == ["rna", "atac"]  # stored order is alphabetical; mod-order is not
    assert shadow.mod_names == ["rna", "atac"] and shadow.n_mod == 2
    assert shadow["atac"] is shadow.mod["atac"]
    assert "rna" in shadow and "protein" not in shadow
    assert shadow["rna"].filename == f"{mu_path}/mod/rna"


def test_class_identity(mu_path):
    shadow = MuDataShadow(mu_path)
    assert isinstance(shadow, mudata.MuData) and isinstance(shadow, MuDataShadow)
    for modality in shadow.mod.values():
        assert isinstance(modality, ad.AnnData) and type(modality) is AnnDataShadow
    view = shadow[:5]
    assert type(view) is MuDataShadow and isinstance(view, mudata.MuData)
    assert shadow.X is None and shadow.raw is None and not shadow.isbacked


def test_backends_reach_modalities_and_maps(mu_path):
    lazy = MuDataShadow(mu_path, array_backend="dask", table_backend="dask")
    expected = read_mudata(mu_path)
    assert hasattr(lazy.obsmap["atac"], "dask") and hasattr(lazy["rna"].X, "dask")
    np.testing.assert_array_equal(lazy.obsmap["atac"].compute(), expected.obsmap["atac"])
    view = lazy[10:30]
    np.testing.assert_array_equal(view.obsmap["atac"].compute(), expected[10:30].obsmap["atac"])
    assert (view["atac"].X.compute() != expected[10:30]["atac"].X).nnz == 0
    # dask's dataframes hold strings as pyarrow strings
    pd.testing.assert_frame_equal(lazy.obs.compute(), expected.obs, check_index_type=False)


# -- laziness --------------------------------------------------------------------------------------


def test_open_repr_and_views_read_no_data(mu_path, monkeypatch):
    with count_reads(monkeypatch) as reads:
        shadow = MuDataShadow(mu_path)
        text = repr(shadow)
        _ = shadow.shape, shadow.n_mod, shadow.axis, list(shadow.obsm), list(shadow["rna"].layers)
        view = shadow[5:20]
        view2 = view[:, ::2]
    assert sum(reads.values()) == 0, dict(reads)
    assert text.startswith("MuData Shadow object with n_obs × n_vars = 60 × 24")
    # a view's modalities are selected through obsmap/varmap: those small vectors are all that is read
    with count_reads(monkeypatch) as reads:
        _ = repr(view2), view2.mod["atac"].shape
    touched = {key for key in reads if reads[key]}
    assert touched and all(key.startswith(("obsmap/", "varmap/")) for key in touched), touched


def test_modality_row_subset_reads_only_its_rows(mu_path, monkeypatch):
    shadow = MuDataShadow(mu_path, array_backend="dask")
    view = shadow[[3, 4]]
    _ = view.mod["rna"].shape  # resolve the modality selection first
    with count_reads(monkeypatch) as reads:
        view["rna"].X.compute()
    touched = {key for key in reads if reads[key]}
    assert touched and all(key.startswith("mod/rna/X/") for key in touched), touched


# -- views -----------------------------------------------------------------------------------------

VIEW_KEYS = {
    "row_slice": slice(5, 40),
    "row_step": slice(2, 58, 3),
    "mask": np.arange(60) % 3 != 1,
    "positions": [50, 3, 27, 12, 59, 0],
    "names": ["cell45", "cell2", "cell30"],
    "var_slice": (slice(None), slice(3, 20)),
    "both": (slice(10, 50), [0, 2, 16, 23, 5]),
    "var_names": (slice(None, 30), ["gene3", "gene1"]),
    "int_row": 25,
    "int_col": (slice(None), 7),
    "reverse": slice(None, None, -1),
    "negative_step": (slice(50, 5, -3), slice(None, None, -2)),
    "negative_positions": np.array([-1, -10, 3]),
}


@pytest.mark.parametrize("key", list(VIEW_KEYS), ids=list(VIEW_KEYS))
def test_views_equal_mudata_views(mu_path, key):
    shadow = MuDataShadow(mu_path)
    index = VIEW_KEYS[key]
    if key == "var_names":
        index = (index[0], [shadow.var_names[3], shadow.var_names[20]])
    view = shadow[index]
    expected = stored_mudata(mu_path)[index]
    assert view.is_view and view["rna"].is_view
    assert_mudata_matches(view, expected)


def test_negative_integer_key_selects_from_the_end(mu_path):
    # mudata turns an integer i into slice(i, i + 1), which is empty for -1; AnnData (and shadows) take the
    # last observation
    shadow = MuDataShadow(mu_path)
    assert_mudata_matches(shadow[-1], stored_mudata(mu_path)[[59]])
    assert list(shadow[-1]["atac"].obs_names) == ["cell59"]


@pytest.mark.parametrize("layout", ["shared_var", "shared_both"])
def test_views_of_other_axes(mu_files, layout):
    path = mu_files[layout, "h5mu"]
    shadow = MuDataShadow(path)
    index = (slice(3, 22), slice(1, 12, 2))
    assert_mudata_matches(shadow[index], stored_mudata(path)[index])


def test_views_of_views_compose(mu_path):
    shadow = MuDataShadow(mu_path)
    oracle = read_mudata(mu_path)
    view = shadow[5:55][[40, 2, 17, 33, 8]][:, 1:20]
    expected = oracle[5:55][[40, 2, 17, 33, 8]][:, 1:20]
    assert_mudata_matches(view, expected)
    assert view._elements.root is shadow._elements and view["rna"]._elements.root is shadow["rna"]._elements


def test_each_view_has_its_own_cache(mu_path):
    shadow = MuDataShadow(mu_path)
    view = shadow[:10]
    _ = view.obs, view.obsm["X_umap"], view["rna"].X
    assert "totalᐁ" not in repr(shadow).split("\n")[1] and "totalᐁ" in repr(view).split("\n")[1]
    assert "X_umapᐁ" in repr(view) and "X_umapᐁ" not in repr(shadow)
    assert "ᐁ" not in repr(shadow)
    assert "rna" in [k for k in view.mod] and view["rna"]._elements.is_held("X")
    assert not shadow["rna"]._elements.is_held("X")


def test_view_modalities_keep_only_their_members(mu_path):
    shadow = MuDataShadow(mu_path)
    view = shadow[["cell5", "cell30", "cell21", "cell2"]]
    # atac holds cells 20..59 only: the view keeps the two of them, in the view's order
    assert list(view["atac"].obs_names) == ["cell30", "cell21"]
    assert list(view["rna"].obs_names) == ["cell5", "cell30", "cell21", "cell2"]
    np.testing.assert_array_equal(view.obsmap["atac"], np.array([0, 1, 2, 0], dtype=np.uint32))


# -- repr, memory and connection ---------------------------------------------------------------------


def test_repr_layout(mu_files, mu_fmt):
    shadow = MuDataShadow(mu_files["shared_obs", mu_fmt])
    lines = repr(shadow).split("\n")
    assert lines[0] == "MuData Shadow object with n_obs × n_vars = 60 × 24"
    assert "  obs:\ttotal, group" in lines  # the columns, as anndata lists them
    assert "  obsmap:\tatac, rna" in lines and "  varmap:\tatac, rna" in lines
    assert "  mod:\t2 modalities" in lines
    rna = lines.index("    rna: 60 x 15")
    atac = lines.index("    atac: 40 x 9")
    assert rna < atac and lines[rna + 1] == "      X"
    _ = shadow["rna"].obsm["X_pca"], shadow.obsm["X_umap"]
    text = repr(shadow)
    assert "      obsm:\tX_pcaᐁ, X_umap, frame" in text and "  obsm:\tX_umapᐁ, atac, rna, sparse" in text
    view = shadow[:10, :5]
    assert repr(view).split("\n")[0] == "View of MuData Shadow object with n_obs × n_vars = 10 × 5 (original 60 × 24)"
    assert "    rna: 10 x 5" in repr(view) and "    atac: 0 x 0" in repr(view)
    shared_var = MuDataShadow(mu_files["shared_var", mu_fmt])
    assert repr(shared_var).split("\n")[0].endswith("(shared var)")


def test_clear_cache_acts_on_every_modality(mu_path):
    shadow = MuDataShadow(mu_path)
    _ = shadow.obs, shadow["rna"].X, shadow["atac"].obsm["X_pca"]
    shadow.obsm["new"] = np.zeros((60, 2))
    shadow["rna"].obsm["new"] = np.zeros((60, 2))
    shadow.clear_cache()
    assert not any(list(s._elements.state.held_items()) for s in (shadow, shadow["rna"], shadow["atac"]))
    assert "ᐁ" not in repr(shadow)
    assert shadow.obsm.is_staged("new") and shadow["rna"].obsm.is_staged("new")
    assert repr(shadow).count("new▲") == 2


def private_copy(path: Path, tmp_path: Path) -> Path:
    """A copy of a shared test file, so opening it for writing does not meet other tests' handles."""
    import shutil

    target = tmp_path / path.name
    if path.is_dir():
        shutil.copytree(path, target)
    else:
        shutil.copy(path, target)
    return target


def test_close_and_reopen_keep_in_memory_additions(mu_path, tmp_path):
    mu_path = private_copy(mu_path, tmp_path)
    shadow = MuDataShadow(mu_path)
    shadow.obsm["added"] = np.ones((60, 1))
    rna = shadow["rna"]
    rna.uns["note"] = "kept"
    assert shadow.reopen("r+") is shadow
    if mu_path.suffix == ".h5mu":
        assert shadow.file.mode == "r+" and rna.file is shadow.file
    else:
        assert not shadow.file.read_only
    assert shadow.obsm.is_staged("added") and rna.uns["note"] == "kept"
    expected = read_mudata(mu_path)
    assert_value_equal(rna.X, expected["rna"].X, "X after reopen")
    assert_value_equal(shadow[:5]["atac"].obs, expected[:5]["atac"].obs, "view after reopen")
    shadow.close()
    shadow.reopen("r")
    assert_value_equal(shadow.obs, expected.obs, "obs after reopen")
    with pytest.raises(OSError, match="read-only mode"):
        shadow.write()


def test_write_commits_global_and_modality_elements(mu_path, tmp_path):
    path = private_copy(mu_path, tmp_path)
    shadow = MuDataShadow(path, array_backend="dask")
    with pytest.raises(OSError, match="view"):
        shadow[:3].write()
    expected = read_mudata(path)
    embedding = np.random.default_rng(1).normal(size=(60, 2))
    shadow.obsm["X_wnn"] = embedding
    shadow.obs["rna:cat"] = shadow["rna"].obs["cat"]
    shadow.uns["params"]["added"] = "yes"
    shadow["atac"].layers["log"] = np.log1p(shadow["atac"].X)  # streamed from the file it is written to
    shadow["rna"].var["selected"] = np.arange(15) % 3 == 0
    assert shadow.reopen("r+").write(clear_cache=True) is shadow
    assert "▲" not in repr(shadow)
    shadow.reopen("r")
    expected.obsm["X_wnn"] = embedding
    expected.obs["rna:cat"] = expected["rna"].obs["cat"]
    expected.uns["params"]["added"] = "yes"
    expected["atac"].layers["log"] = np.log1p(expected["atac"].X)
    expected["rna"].var["selected"] = np.arange(15) % 3 == 0
    assert_mudata_matches(MuDataShadow(path), read_mudata(path))
    assert_mudata_matches(MuDataShadow(path), expected)


def test_pickles_by_path(mu_path):
    shadow = MuDataShadow(mu_path)
    view = shadow[2:30, 1:9]
    again = pickle.loads(pickle.dumps(view))
    assert type(again) is MuDataShadow and again.shape == view.shape
    assert_mudata_matches(again, stored_mudata(mu_path)[2:30, 1:9])


def test_to_memory_is_a_mudata(mu_path):
    shadow = MuDataShadow(mu_path)
    with warnings.catch_warnings(), stored_columns_only():
        warnings.simplefilter("ignore")
        memory = shadow[4:33].to_memory()
    assert type(memory) is mudata.MuData
    assert_mudata_matches(shadow[4:33], memory)


# -- what muon users do ----------------------------------------------------------------------------------


def test_modality_columns_and_copying_them_to_the_global_obs(mu_path):
    shadow = MuDataShadow(mu_path)
    expected = read_mudata(mu_path)
    assert_value_equal(shadow.mod["rna"].obs["cat"], expected.mod["rna"].obs["cat"], "rna obs cat")
    shadow.obs["atac:cat"] = shadow["atac"].obs["cat"]  # aligned on the cell names, NaN where absent
    expected.obs["atac:cat"] = expected["atac"].obs["cat"]
    assert_value_equal(shadow.obs["atac:cat"], expected.obs["atac:cat"], "copied column")
    assert "atac:cat▲" in repr(shadow).split("\n")[1]
    assert "atac:cat" in shadow.obs_keys()
    shadow.clear_cache()
    assert_value_equal(shadow.obs, expected.obs, "obs after clear_cache")
    np.testing.assert_array_equal(shadow.obs_vector("total"), expected.obs_vector("total"))
    with pytest.raises(KeyError, match=r"modality 'rna' has one.*mdata\.obs\['rna:ordered'\]"):
        shadow.obs_vector("ordered")


@pytest.mark.xdist_group("pynndescent")  # one worker imports it (see test_mudata_mutation.muon)
def test_embedding_plot_from_global_obsm(mu_path, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import scanpy as sc

    shadow = MuDataShadow(mu_path)
    # muon's embedding plot for a global basis: an AnnData over the MuData's obs and obsm
    adata = ad.AnnData(obs=shadow.obs, obsm=dict(shadow.obsm))
    sc.pl.embedding(adata, basis="X_umap", color="group", show=False)
    muon = pytest.importorskip("muon")
    muon.pl.embedding(shadow, basis="X_umap", color="group", show=False)
    assert "X_umapᐁ" in repr(shadow)


# -- errors and optional mudata ------------------------------------------------------------------------


def test_anndata_file_is_not_a_mudata(path):
    with pytest.raises(NotMuDataError, match=rf"{path}.*not a MuData file.*AnnDataShadow"):
        MuDataShadow(path)


def test_unknown_modality_names_the_file_and_the_modalities(mu_path):
    shadow = MuDataShadow(mu_path)
    with pytest.raises(KeyError, match=r"mod/protein.*modalities: rna, atac"):
        shadow["protein"]


def test_works_without_mudata_installed(mu_path, tmp_path):
    import subprocess
    import sys

    code = f"""
import sys
sys.modules["mudata"] = None  # as if mudata were not installed
from shadows import MuDataShadow, AnnDataShadow
m = MuDataShadow({str(mu_path)!r})
assert isinstance(m, MuDataShadow) and type(m["rna"]) is AnnDataShadow
assert m[:10]["atac"].shape == (0, 9) and m.obsmap["atac"].dtype == "uint32"
print(repr(m).split(chr(10))[0])
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("MuData Shadow object")


def test_one_modality_of_a_mudata_opened_alone(mu_path):
    alone = AnnDataShadow(f"{mu_path}/mod/atac")
    expected = read_mudata(mu_path)["atac"]
    assert_shadow_matches(alone, expected)


def test_info_describes_every_modality_without_reading(mu_path, monkeypatch, capsys):
    from shadows.cli import main

    with count_reads(monkeypatch) as reads:
        assert main(["info", str(mu_path)]) == 0
    out = capsys.readouterr().out
    assert sum(reads.values()) == 0, dict(reads)
    assert "MuData Shadow object" in out and "obsmap/atac" in out and "mod/rna/X " in out
    assert "mod/atac/obsm/X_pca" in out


def test_pull_obs_and_pull_var_stage_the_pulled_columns(mu_path):
    shadow, expected = MuDataShadow(mu_path), read_mudata(mu_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shadow.pull_obs(columns=["cat", "float"])
        expected.pull_obs(columns=["cat", "float"])
        shadow.pull_var()
        expected.pull_var()
    assert_value_equal(pd.DataFrame(shadow.obs), expected.obs, "pulled obs")
    assert_value_equal(pd.DataFrame(shadow.var), expected.var, "pulled var")
    assert "rna:cat▲" in repr(shadow).split("\n")[1] and "atac:float▲" in repr(shadow).split("\n")[1]
    shadow.clear_cache()
    assert_value_equal(pd.DataFrame(shadow.obs), expected.obs, "pulled obs after clear_cache")
    shadow.update()  # a shadow's modalities keep their names: nothing to update
    assert_value_equal(pd.DataFrame(shadow.obs), expected.obs, "obs after update")


def test_notebook_display_reads_no_data(mu_path, monkeypatch):
    shadow = MuDataShadow(mu_path)
    with count_reads(monkeypatch) as reads:
        html = shadow._repr_html_()
        modality_html = shadow["rna"]._repr_html_()
    assert sum(reads.values()) == 0
    assert "MuData Shadow object" in html and "mod['rna']: 60 × 15" in html and "obsmap" in html
    assert "AnnData Shadow object" in modality_html


@pytest.mark.parametrize("key", ["all", "rows", "both"])
def test_export_writes_a_mudata_equal_to_mudatas_view(mu_path, tmp_path, key):
    index = {"all": slice(None), "rows": [50, 3, 27, 12], "both": (slice(5, 45, 2), slice(3, 20))}[key]
    view = MuDataShadow(mu_path, array_backend="dask")[index]
    out = tmp_path / ("export.h5mu" if mu_path.suffix == ".h5mu" else "export.zarr")
    if mu_path.suffix == ".h5mu":
        view.write_h5mu(out)
    else:
        with zarr_format("zarr2" if "zarr2" in mu_path.name else "zarr3"):
            view.write_zarr(out)
    expected = stored_mudata(mu_path)[index]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # mudata warns about files it did not write
        assert_mudata_matches(MuDataShadow(out), expected)
        written = read_mudata(out)
    assert_value_equal(written.obs, pd.DataFrame(expected.obs), "global obs read by mudata")
    assert written.shape == expected.shape and list(written.mod) == list(expected.mod)


def test_write_with_a_path_is_mudatas_alias_of_write_h5mu(mu_path, tmp_path):
    shadow = MuDataShadow(mu_path)
    target = tmp_path / "alias.h5mu"
    assert shadow.write(target) is shadow
    written = mudata.read_h5mu(target)
    assert written.shape == shadow.shape and list(written.mod) == list(shadow.mod)
    with pytest.raises(ElementExistsError):
        shadow.write(target)


def test_a_mod_order_naming_a_missing_modality_is_refused_on_open(tmp_path):
    import h5py

    from shadows import MalformedElementError

    path = write_mudata(make_mudata("shared_obs"), tmp_path / "damaged.h5mu", "h5mu")
    with h5py.File(path, "r+") as file:
        del file["mod/rna"]
        del file["mod/atac"]
    with pytest.raises(MalformedElementError, match=r"damaged.h5mu: element 'mod': its 'mod-order' names "
                                                    r"modalities that are not stored: rna, atac"):
        MuDataShadow(path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_modality_masks_are_what_mudata_makes_of_the_maps(tmp_path, fmt):
    """mudata recomputes obsm/varm[<modality>] from the maps when it reads a file, whatever mask is
    stored: a shadow (numpy, dask, xarray, and a view) gives the same, not a damaged stored mask.
    """
    suffix = ".h5mu" if fmt == "h5mu" else ".zarr"
    path = write_mudata(make_mudata("shared_obs"), tmp_path / f"masks{suffix}", fmt)
    if fmt == "h5mu":
        import h5py

        with h5py.File(path, "r+") as file:
            file["obsm/atac"][...] = ~file["obsm/atac"][...]  # every cell flipped
    else:
        group = zarr.open_group(path, mode="r+", use_consolidated=False)
        group["obsm/atac"][...] = ~np.asarray(group["obsm/atac"][...])
        zarr.consolidate_metadata(path)
    expected = read_mudata(path)
    assert expected.obsm["atac"].sum() == 40  # what mudata computes: atac holds 40 of the 60 cells
    shadow = MuDataShadow(path)
    assert_value_equal(shadow.obsm["atac"], expected.obsm["atac"], "obsm/atac")
    assert_value_equal(shadow.varm["rna"], expected.varm["rna"], "varm/rna")
    assert_value_equal(MuDataShadow(path, array_backend="dask").obsm["atac"].compute(), expected.obsm["atac"],
                       "dask obsm/atac")
    labelled = MuDataShadow(path, array_backend="xarray").obsm["atac"]
    assert labelled.dims == ("obs", "atac")
    assert_value_equal(np.asarray(labelled), expected.obsm["atac"], "xarray obsm/atac")
    assert_value_equal(shadow[10:30].obsm["atac"], expected[10:30].obsm["atac"], "view obsm/atac")
