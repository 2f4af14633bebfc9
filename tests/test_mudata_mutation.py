"""A MuData shadow is a mutable MuData: muon's in-place filters, modality replacement, addition and
deletion, and ``update()``, run side by side on mudata's in-memory read (the oracle) and a shadow of the
same file, give the same global state; ``write()`` stores it so that mudata reads it back equal.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from conftest import SharedFiles, run_folder
from helpers import assert_mudata_matches, assert_value_equal, count_reads, file_digest
from shadows import ElementExistsError, MuDataShadow
from test_mudata import FORMATS, LAYOUTS, _build_mudata, private_copy, read_mudata, stored_columns_only

mudata = pytest.importorskip("mudata")
#: muon's import compiles pynndescent's numba functions (15-40 s, as scanpy's ``neighbors`` and ``umap`` do),
#: and scanpy's own compile on first use: the modules and tests that use them are marked
#: ``xdist_group("pynndescent")`` and run on one worker, which alone pays it (tests/conftest.py).
pytestmark = pytest.mark.xdist_group("pynndescent")


def muon():
    """muon, imported by the tests that use it (see ``pytestmark``)."""
    return pytest.importorskip("muon")


@pytest.fixture(scope="session")
def mudata_files(tmp_path_factory) -> SharedFiles:
    """test_mudata's files (the same folder: built once per run for both modules)."""
    keys = [(layout, fmt) for layout in LAYOUTS for fmt in FORMATS]
    return SharedFiles(run_folder(tmp_path_factory, "mudata"), keys, _build_mudata)


@pytest.fixture(params=FORMATS)
def path(request, mudata_files) -> Path:
    """The shared-obs MuData file in each format."""
    return mudata_files["shared_obs", request.param]


def filter_by_column(mdata):
    muon().pp.filter_obs(mdata, "total", lambda x: x > 500)


def filter_modality_by_names(mdata):
    rna = mdata.mod["rna"]
    muon().pp.filter_obs(rna, list(rna.obs_names[::2]))
    mdata.update()


def intersect(mdata):
    muon().pp.intersect_obs(mdata)


def filter_modality_var(mdata):
    atac = mdata.mod["atac"]
    muon().pp.filter_var(atac, list(atac.var_names[2:7]))
    mdata.update()


CALLS = {"filter_obs": filter_by_column, "filter_modality": filter_modality_by_names, "intersect_obs": intersect,
         "filter_var": filter_modality_var}


def run(call, *subjects):
    with warnings.catch_warnings(), stored_columns_only():
        warnings.simplefilter("ignore")
        for subject in subjects:
            call(subject)


@pytest.mark.parametrize("call", list(CALLS))
def test_muons_in_place_filters_give_mudatas_results(path, call):
    before = file_digest(path)
    shadow, oracle = MuDataShadow(path), read_mudata(path)
    run(CALLS[call], shadow, oracle)
    assert_mudata_matches(shadow, oracle)
    assert not shadow.is_view
    assert file_digest(path) == before  # changes live in memory


def assert_globals_match(shadow, oracle):
    """The global state (names, obs/var, obsm/obsp, maps) and each modality's names."""
    assert shadow.shape == oracle.shape and list(shadow.mod) == list(oracle.mod)
    assert_value_equal(shadow.obs_names, oracle.obs_names, "obs_names")
    assert_value_equal(shadow.var_names, oracle.var_names, "var_names")
    assert_value_equal(pd.DataFrame(shadow.obs), oracle.obs, "obs")
    for slot in ("obsm", "obsp", "obsmap", "varmap"):
        assert_value_equal(dict(getattr(shadow, slot)), dict(getattr(oracle, slot)), slot)
    for name, modality in oracle.mod.items():
        assert list(shadow.mod[name].obs_names) == list(modality.obs_names)
        assert list(shadow.mod[name].var_names) == list(modality.var_names)


def new_modality() -> ad.AnnData:
    """A protein modality measured on five of the cells, with its own features."""
    rng = np.random.default_rng(5)
    return ad.AnnData(rng.poisson(4, (5, 3)).astype(np.float32),
                      obs=pd.DataFrame(index=[f"cell{i}" for i in range(5)]),
                      var=pd.DataFrame(index=["CD3", "CD4", "CD8"]))


def add(mdata):
    mdata.mod["prot"] = new_modality()
    mdata.update()


def replace_with_subset(mdata):
    mdata.mod["rna"] = mdata["rna"][10:40].copy()
    mdata.update()


def delete(mdata):
    del mdata.mod["atac"]
    mdata.update()


def rename(mdata):
    atac = mdata.mod["atac"]
    atac.obs_names = [f"nucleus{i}" for i in range(atac.n_obs)]
    mdata.update()


CHANGES = {"add": add, "replace": replace_with_subset, "delete": delete, "rename": rename}


@pytest.mark.parametrize("change", list(CHANGES))
def test_update_after_modality_changes_gives_mudatas_global_state(path, change):
    shadow, oracle = MuDataShadow(path), read_mudata(path)
    run(CHANGES[change], oracle, shadow)
    assert_globals_match(shadow, oracle)
    assert "▲" in repr(shadow)


def test_keeping_rows_reads_nothing_and_pushes_the_selection_down(path, monkeypatch):
    shadow = MuDataShadow(path)
    with count_reads(monkeypatch) as reads:
        run(replace_with_subset, shadow)
    assert not any(r.split("/")[0] in ("obsm", "obsp") for r in reads), reads  # the global data stay in the file
    assert shadow.obsm["X_umap"].shape == (shadow.n_obs, 2)


@pytest.mark.parametrize("change", ["add", "delete", "replace", "rename", "intersect_obs"])
def test_modality_changes_are_written_and_read_back_by_mudata(path, tmp_path, change):
    path = private_copy(path, tmp_path)
    shadow, oracle = MuDataShadow(path), read_mudata(path)
    call = CHANGES.get(change) or CALLS[change]
    run(call, oracle, shadow)
    shadow.reopen("r+")
    with pytest.raises(ElementExistsError):
        shadow.write()  # replaces stored elements: only with overwrite=True
    shadow.write(overwrite=True)
    assert "▲" not in repr(shadow)
    written = read_mudata(path)
    assert_globals_match(MuDataShadow(path), oracle)
    assert_globals_match(written, oracle)
    for name, modality in oracle.mod.items():
        assert_value_equal(written[name].X, modality.X, f"mod/{name}/X")


def test_a_views_modalities_cannot_be_replaced(path):
    view = MuDataShadow(path)[:10]
    with pytest.raises(ValueError, match="view"):
        view.mod["prot"] = new_modality()
    with pytest.raises(TypeError, match="AnnData"):
        MuDataShadow(path).mod["prot"] = np.ones((3, 3))


def test_an_export_writes_modalities_given_in_memory(path, tmp_path):
    shadow, oracle = MuDataShadow(path), read_mudata(path)
    run(add, oracle, shadow)
    assert "prot: 5 x 3 (in memory▲)" in repr(shadow) and "AnnData object (in memory▲)" in shadow._repr_html_()
    view = shadow[:10]
    assert view["prot"].shape == oracle[:10]["prot"].shape and "prot" in repr(view)
    target = tmp_path / ("out.h5mu" if path.suffix == ".h5mu" else "out.zarr")
    (shadow.write_h5mu if path.suffix == ".h5mu" else shadow.write_zarr)(target)
    written = read_mudata(target)
    assert_globals_match(written, oracle)
    assert_value_equal(written["prot"].X, oracle["prot"].X, "mod/prot/X")


def test_pickling_keeps_modality_changes_and_filters(path):
    import pickle

    shadow, oracle = MuDataShadow(path), read_mudata(path)
    run(add, oracle, shadow)
    run(filter_modality_var, oracle, shadow)
    shadow["rna"].obs["note"] = "kept"
    oracle["rna"].obs["note"] = "kept"
    again = pickle.loads(pickle.dumps(shadow))
    assert_globals_match(again, oracle)
    assert list(again["rna"].obs["note"].unique()) == ["kept"] and again["atac"].shape == oracle["atac"].shape
    assert_value_equal(again["prot"].X, oracle["prot"].X, "mod/prot/X")
