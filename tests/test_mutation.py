"""A shadow is a mutable AnnData: scanpy's in-place functions and AnnData's setters and mutators, run side
by side on an in-memory AnnData (the oracle), a shadow and a view of a shadow, give the same results and
the same object state; changes live in memory (▲) and reach the file only through ``write()``.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp

from conftest import FORMATS, read_oracle, suffix, write
from helpers import assert_value_equal, count_reads, count_values_read, file_digest
from shadows import AnnDataShadow, ElementExistsError, ReadOnlyError
from shadows.core.element import computed

#: scanpy's numba functions compile on first use in each process, and neighbors and umap compile
#: pynndescent: one worker runs every test that does (see test_mudata_mutation's ``pytestmark``).
pytestmark = pytest.mark.xdist_group("pynndescent")

N_OBS, N_VARS = 400, 120
#: Cells kept by the views ("view" kind): every other cell.
VIEW_CELLS = slice(0, None, 2)


def make_counts(seed: int = 0) -> ad.AnnData:
    """Raw counts with string, categorical and numeric annotations (what a pipeline starts from)."""
    rng = np.random.default_rng(seed)
    genes_per_cell = rng.integers(15, 60, N_OBS)
    rows, cols = [], []
    for i, n in enumerate(genes_per_cell):
        rows += [i] * n
        cols += list(rng.choice(N_VARS, n, replace=False))
    values = rng.poisson(3, len(rows)).astype(np.float32) + 1
    X = sp.csr_matrix((values, (rows, cols)), shape=(N_OBS, N_VARS))
    obs = pd.DataFrame({"group": pd.Categorical(rng.choice(["a", "b", "c"], N_OBS)),
                        "batch": [f"b{i % 3}" for i in range(N_OBS)],  # strings: scanpy makes them categorical
                        "score": rng.normal(size=N_OBS)},
                       index=[f"cell{i}" for i in range(N_OBS)])
    var = pd.DataFrame({"symbol": [f"G{i}" for i in range(N_VARS)]}, index=[f"gene{i}" for i in range(N_VARS)])
    return ad.AnnData(X=X, obs=obs, var=var)


@pytest.fixture(scope="session")
def counts_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("counts")
    adata = make_counts()
    return {fmt: write(adata, root / f"counts_{fmt}{suffix(fmt)}", fmt) for fmt in FORMATS}


@pytest.fixture
def counts(counts_files, tmp_path) -> Path:
    """An h5ad of counts of this test's own (tests may write to it)."""
    path = tmp_path / "counts.h5ad"
    path.write_bytes(counts_files["h5ad"].read_bytes())
    return path


KINDS = ["memory", "shadow", "view"]


def subject_and_oracle(kind: str, path: Path, **backends) -> tuple[ad.AnnData, ad.AnnData]:
    """What a test runs on (an in-memory AnnData, a shadow, a view of a shadow) and the in-memory AnnData
    (or view of one) that anndata gives for the same thing.
    """
    oracle = read_oracle(path)
    if kind == "memory":
        return read_oracle(path), oracle
    shadow = AnnDataShadow(path, **backends)
    if kind == "view":
        return shadow[VIEW_CELLS], oracle[VIEW_CELLS]
    return shadow, oracle


def preprocess(adata: ad.AnnData) -> ad.AnnData:
    """scanpy's standard pipeline from counts, in place."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.filter_cells(adata, min_genes=20)
        sc.pp.filter_genes(adata, min_cells=30)
        sc.pp.calculate_qc_metrics(adata, percent_top=[5, 10], inplace=True)
        adata.layers["counts"] = adata.X.copy()
        sc.pp.normalize_total(adata, target_sum=1e4)
        sc.pp.log1p(adata)
        sc.pp.highly_variable_genes(adata, n_top_genes=40)
        adata.raw = adata
        sc.pp.regress_out(adata, ["total_counts"])
        sc.pp.scale(adata, max_value=10)
        sc.pp.pca(adata, n_comps=10)
        sc.pp.neighbors(adata, n_neighbors=10)
        sc.tl.umap(adata, random_state=0)
        sc.tl.leiden(adata, flavor="igraph", n_iterations=2, directed=False, random_state=0)
        sc.tl.rank_genes_groups(adata, "group", method="t-test")
        sc.tl.score_genes(adata, list(adata.var_names[:5]), score_name="five")
    return adata


def assert_same_state(got: ad.AnnData, expected: ad.AnnData) -> None:
    assert got.shape == expected.shape
    assert list(got.obs_names) == list(expected.obs_names) and list(got.var_names) == list(expected.var_names)
    pd.testing.assert_frame_equal(got.obs, expected.obs, check_exact=False, rtol=1e-4)
    pd.testing.assert_frame_equal(got.var, expected.var, check_exact=False, rtol=1e-4)
    assert sorted(got.obsm) == sorted(expected.obsm) and sorted(got.obsp) == sorted(expected.obsp)
    assert sorted(got.layers, key=str) == sorted(expected.layers, key=str) and sorted(got.uns) == sorted(expected.uns)
    assert_value_equal(got.X, expected.X, "X")
    for key in [k for k in expected.layers if k is not None]:  # anndata 0.13 lists X as layers[None]
        assert_value_equal(got.layers[key], expected.layers[key], f"layers/{key}")


@pytest.mark.parametrize("kind", KINDS)
def test_the_standard_pipeline_in_place_gives_anndatas_results(counts, kind):
    subject, oracle = subject_and_oracle(kind, counts)
    oracle = oracle.copy() if oracle.is_view else oracle
    before = file_digest(counts)
    preprocess(subject)
    preprocess(oracle)
    assert not subject.is_view  # modified views become actual (shadows of their own), as in anndata
    assert_same_state(subject, oracle)
    np.testing.assert_allclose(np.abs(subject.obsm["X_pca"]), np.abs(oracle.obsm["X_pca"]), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(subject.uns["pca"]["variance_ratio"], oracle.uns["pca"]["variance_ratio"], rtol=1e-4)
    np.testing.assert_array_equal(subject.obs["leiden"], oracle.obs["leiden"])
    assert subject.raw.shape == oracle.raw.shape
    np.testing.assert_array_equal(subject.uns["rank_genes_groups"]["names"]["a"],
                                  oracle.uns["rank_genes_groups"]["names"]["a"])
    assert file_digest(counts) == before  # in place means in memory: the file is untouched
    if kind != "memory":
        assert "X▲" in repr(subject) and "X_pca▲" in repr(subject)
        subject.clear_cache()  # changes stay
        assert_value_equal(subject.X, oracle.X, "X after clear_cache")


@pytest.mark.parametrize("kind", KINDS)
def test_inplace_false_returns_what_anndata_returns_and_changes_nothing(counts, kind):
    subject, oracle = subject_and_oracle(kind, counts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = sc.pp.normalize_total(subject, target_sum=1e4, inplace=False)
        expected = sc.pp.normalize_total(oracle, target_sum=1e4, inplace=False)
        hvg = sc.pp.highly_variable_genes(subject, n_top_genes=30, flavor="cell_ranger", inplace=False)
        hvg_expected = sc.pp.highly_variable_genes(oracle, n_top_genes=30, flavor="cell_ranger", inplace=False)
        qc = sc.pp.calculate_qc_metrics(subject, percent_top=[5], inplace=False)
        qc_expected = sc.pp.calculate_qc_metrics(oracle, percent_top=[5], inplace=False)
    assert_value_equal(got["X"], expected["X"], "normalized X")
    pd.testing.assert_frame_equal(hvg, hvg_expected)
    pd.testing.assert_frame_equal(qc[0], qc_expected[0])
    if kind != "memory":
        assert "▲" not in repr(subject)
    assert subject.is_view == oracle.is_view  # scanpy makes views actual where anndata's are made actual


def test_log1p_on_a_shadow_marks_x_changed_and_never_corrupts_the_file_or_another_shadow(counts):
    shadow, other = AnnDataShadow(counts), AnnDataShadow(counts)
    original = other.X.copy()
    sc.pp.log1p(shadow)
    assert "X▲" in repr(shadow) and "▲" not in repr(other)
    assert_value_equal(shadow.X, np.log1p(original), "log1p X")
    assert_value_equal(other.X, original, "the other shadow's X")
    shadow.clear_cache()
    assert_value_equal(shadow.X, np.log1p(original), "X▲ after clear_cache")
    view = shadow[:10]
    view.X.data[:] = 0  # a view's values are its own: the root's change is not touched
    assert_value_equal(shadow.X[:10], np.log1p(original[:10]), "root X after changing the view's")


def test_an_array_changed_in_place_without_assignment_is_kept_by_clear_cache(counts):
    shadow = AnnDataShadow(counts)
    x = shadow.X
    expected = x.copy()
    expected.data = np.log1p(expected.data)
    np.log1p(x.data, out=x.data)  # changed in place, never assigned back
    assert "X▲" not in repr(shadow)
    shadow.clear_cache()
    assert "X▲" in repr(shadow)  # kept as a change, not reverted to the file's values
    assert_value_equal(shadow.X, expected, "X")
    assert shadow.layers.own_keys() == [] and "▲" not in repr(shadow).split("X▲", 1)[1]  # nothing else changed


def test_a_changed_x_is_written_only_with_overwrite_and_read_back_by_anndata(counts):
    shadow = AnnDataShadow(counts)
    sc.pp.normalize_total(shadow, target_sum=100)
    expected = shadow.X.copy()
    with pytest.raises(ReadOnlyError):
        shadow.write()
    shadow.reopen("r+")
    with pytest.raises(ElementExistsError, match="X"):
        shadow.write()
    shadow.write(overwrite=True)
    assert "▲" not in repr(shadow)
    assert_value_equal(read_oracle(counts).X, expected, "X written")
    del shadow.X
    assert shadow.X is None and "X" not in repr(shadow).splitlines()[1]
    shadow.write(overwrite=True)
    assert read_oracle(counts).X is None


def test_filtering_pushes_the_selection_down_to_the_reads(counts, monkeypatch):

    shadow, oracle = AnnDataShadow(counts), read_oracle(counts)
    kept = np.arange(150, 170)
    shadow._inplace_subset_obs(kept)
    assert shadow.shape == (20, N_VARS) and not shadow.is_view
    read = count_values_read(monkeypatch, "/X/data")
    x = shadow.X
    monkeypatch.undo()
    assert_value_equal(x, oracle.X[kept], "X of the kept cells")
    assert 0 < sum(read) <= oracle.X[kept].nnz  # only the kept cells' values were read
    with pytest.raises(ReadOnlyError, match="subset in place"):
        shadow.reopen("r+").write()


def test_scanpy_filters_and_subsample_on_a_shadow(counts):
    shadow, oracle = AnnDataShadow(counts), read_oracle(counts)
    for adata in (shadow, oracle):
        sc.pp.filter_cells(adata, min_genes=30)
        sc.pp.filter_genes(adata, min_cells=60)
        sc.pp.subsample(adata, n_obs=50, random_state=0)
    assert_same_state(shadow, oracle)
    assert "subset of the file's" in repr(shadow)


def test_a_modified_view_becomes_an_independent_shadow_without_reading(counts, monkeypatch):
    shadow = AnnDataShadow(counts)
    shadow.obsm["root_before"] = np.ones((N_OBS, 2))
    view = shadow[10:20]
    with count_reads(monkeypatch) as reads:
        view.obsm["mine"] = np.zeros((10, 3))
        assert not view.is_view and type(view) is AnnDataShadow
    assert not reads, dict(reads)
    monkeypatch.undo()
    assert not view.is_view and type(view) is AnnDataShadow
    assert "mine" not in shadow.obsm and "root_before" in view.obsm  # took the root's changes, sliced
    shadow.obsm["root_after"] = np.ones((N_OBS, 2))
    assert "root_after" not in view.obsm  # and is independent from then on
    view.obsm["root_before"][:] = 5
    assert np.all(shadow.obsm["root_before"] == 1)
    assert_value_equal(view.X, read_oracle(counts).X[10:20], "X of the former view")


#: Mutators given what anndata refuses (each raises on an AnnData view and on a shadow's view alike).
FAILING_MUTATIONS = {
    "raw of another length": lambda a: setattr(a, "raw", ad.AnnData(np.ones((3, a.n_vars)))),
    "subset outside the axis": lambda a: a._inplace_subset_obs(np.array([0, 10**6])),
    "obsm of another length": lambda a: a.obsm.__setitem__("bad", np.ones((a.n_obs + 1, 2))),
    "layer of another shape": lambda a: a.layers.__setitem__("bad", np.ones((a.n_obs, a.n_vars + 1))),
    "X of another shape": lambda a: setattr(a, "X", np.ones((a.n_obs + 1, a.n_vars))),
    "obs_names of another length": lambda a: setattr(a, "obs_names", ["x"] * (a.n_obs + 1)),
    "obs of another length": lambda a: setattr(a, "obs", pd.DataFrame(index=[f"c{i}" for i in range(a.n_obs - 1)])),
    "deleting a missing obsm key": lambda a: a.obsm.__delitem__("missing"),
    "scale on a missing layer": lambda a: sc.pp.scale(a, layer="missing"),
}


@pytest.mark.parametrize("kind", ["shadow", "view"])
@pytest.mark.parametrize("mutation", list(FAILING_MUTATIONS))
def test_a_refused_change_leaves_the_object_as_anndata_leaves_it(counts, kind, mutation):
    """Nothing half-done: the values are as before, and a view stays a view exactly when anndata's does."""
    subject, oracle = subject_and_oracle(kind, counts)
    change = FAILING_MUTATIONS[mutation]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Exception) as expected:
            change(oracle)
        with pytest.raises(Exception) as got:
            change(subject)
    assert isinstance(got.value, type(expected.value)), (got, expected)  # anndata's type, or a subclass
    assert subject.is_view == oracle.is_view, (subject.is_view, oracle.is_view)
    assert_same_state(subject, read_oracle(counts)[VIEW_CELLS].copy() if kind == "view" else read_oracle(counts))
    assert subject.raw is None and "bad" not in subject.obsm and "bad" not in subject.layers
    assert "▲" not in repr(subject)


def test_pickling_keeps_changes_in_memory(counts):
    shadow = AnnDataShadow(counts)
    shadow.obs["new"] = np.arange(N_OBS)
    shadow.obsm["emb"] = np.ones((N_OBS, 2))
    shadow.uns["params"] = {"k": 3}
    shadow.X = shadow.X * 2
    shadow.obs_names = [f"c{i}" for i in range(N_OBS)]
    for subject in (shadow, shadow[5:9], shadow.copy()):
        back = pickle.loads(pickle.dumps(subject))
        assert back.shape == subject.shape and back.is_view == subject.is_view
        np.testing.assert_array_equal(back.obs["new"], subject.obs["new"])
        np.testing.assert_array_equal(back.obsm["emb"], subject.obsm["emb"])
        assert back.uns["params"] == {"k": 3} and list(back.obs_names) == list(subject.obs_names)
        assert_value_equal(back.X, subject.X, "X")
        assert "X▲" in repr(back) and "emb▲" in repr(back)


def test_copy_is_an_independent_shadow_and_to_memory_an_anndata(counts):
    shadow = AnnDataShadow(counts)
    shadow.obsm["emb"] = np.ones((N_OBS, 2))
    copied = shadow[:40].copy()
    assert type(copied) is AnnDataShadow and not copied.is_view and copied.shape == (40, N_VARS)
    copied.obsm["emb"][:] = 3
    copied.obs["only_here"] = 1
    assert np.all(shadow.obsm["emb"] == 1) and "only_here" not in shadow.obs
    whole = shadow.copy()
    assert whole._elements.view is None and "emb" in whole.obsm
    memory = copied.to_memory()
    assert type(memory) is ad.AnnData and memory.shape == (40, N_VARS)


def test_write_with_a_path_is_anndatas_alias_of_write_h5ad(counts, tmp_path):
    shadow = AnnDataShadow(counts)
    shadow.obs["new"] = np.arange(N_OBS)
    target = tmp_path / "out.h5ad"
    assert shadow[:30].write(target) is not None
    written = read_oracle(target)
    assert written.shape == (30, N_VARS) and list(written.obs["new"]) == list(range(30))
    with pytest.raises(ElementExistsError):
        shadow.write(target)
    shadow.write(target, overwrite=True)
    assert read_oracle(target).n_obs == N_OBS


@pytest.mark.parametrize("kind", KINDS)
def test_names_categoricals_transpose_and_frames_as_anndata(counts, kind):
    subject, oracle = subject_and_oracle(kind, counts)
    oracle = oracle.copy() if oracle.is_view else oracle
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_value_equal(subject.to_df(), oracle.to_df(), "to_df")
        for adata in (subject, oracle):
            adata.obs_names = [f"c{i % 7}" for i in range(adata.n_obs)]
            adata.obs_names_make_unique()
            adata.var_names_make_unique()
            adata.strings_to_categoricals()
            adata.rename_categories("group", ["x", "y", "z"])
    assert list(subject.obs_names) == list(oracle.obs_names)
    assert subject.obs["batch"].dtype == "category" and list(subject.obs["group"].cat.categories) == ["x", "y", "z"]
    pd.testing.assert_frame_equal(subject.obs, oracle.obs)
    transposed, expected = subject.T, oracle.T
    assert transposed.shape == expected.shape and list(transposed.obs_names) == list(expected.obs_names)
    assert_value_equal(transposed.X, expected.X, "X.T")


@pytest.mark.parametrize("join", ["inner", "outer"])
def test_concat_of_shadows_equals_concat_of_anndatas(counts, join):
    shadow, oracle = AnnDataShadow(counts), read_oracle(counts)
    shadow.obsm["emb"] = np.ones((N_OBS, 2))
    oracle.obsm["emb"] = np.ones((N_OBS, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = ad.concat([shadow, shadow[:50]], join=join, index_unique="-")
        expected = ad.concat([oracle, oracle[:50]], join=join, index_unique="-")
    assert got.shape == expected.shape and got.X is not None
    assert_value_equal(got.X, expected.X, "X")
    pd.testing.assert_frame_equal(got.obs, expected.obs)
    np.testing.assert_array_equal(got.obsm["emb"], expected.obsm["emb"])


def test_whole_mappings_and_raw_are_assignable(counts):
    shadow, oracle = AnnDataShadow(counts), read_oracle(counts)
    for adata in (shadow, oracle):
        adata.obsm = {"a": np.ones((N_OBS, 2))}
        adata.layers = {"double": adata.X * 2}
        adata.uns = {"u": 1}
        adata.raw = adata
    assert sorted(shadow.obsm) == ["a"] and dict(shadow.uns) == {"u": 1}
    assert sorted(shadow.layers, key=str) == sorted(oracle.layers, key=str)  # and None (X) on anndata 0.13
    assert shadow.raw.shape == oracle.raw.shape
    assert_value_equal(shadow.raw.X, oracle.raw.X, "raw.X")
    raw = shadow.raw.to_adata()
    expected = oracle.raw.to_adata()
    assert raw.shape == expected.shape and sorted(raw.obs.columns) == sorted(expected.obs.columns)
    genes = list(shadow.var_names[:3])
    assert_value_equal(shadow.raw[:, genes].X, oracle.raw[:, genes].X, "raw[:, genes].X")
    del shadow.raw
    assert shadow.raw is None


@pytest.mark.filterwarnings("ignore::scipy.sparse.SparseEfficiencyWarning")
def test_an_in_place_edit_of_raw_x_is_seen_by_raw_subsets(path):
    """``adata.raw.X[0, 0] = v`` (into the array raw.X returned), then ``raw[:, genes]`` shows ``v`` as
    anndata's does, in the shadow and in a view of it (it used to read the file's value)."""
    shadow, oracle = AnnDataShadow(path), read_oracle(path)
    for adata in (shadow, oracle):
        adata.raw.X[0, 0] = 123.0
    genes = list(oracle.raw.var_names[:3])
    assert_value_equal(shadow.raw[:, genes].X, oracle.raw[:, genes].X, "raw[:, genes].X")
    assert_value_equal(shadow[:9].raw[:, genes].X, oracle[:9].raw[:, genes].X, "a view's raw[:, genes].X")


def test_scanpys_dask_path_on_a_dask_backed_shadow(counts):
    """``array_backend="dask"``: scanpy's dask path runs on the graphs; X▲ stays a lazy graph."""
    import dask.array as da

    shadow, oracle = AnnDataShadow(counts, array_backend="dask"), read_oracle(counts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for adata in (shadow, oracle):
            sc.pp.normalize_total(adata, target_sum=1e4)
            sc.pp.log1p(adata)
            sc.pp.highly_variable_genes(adata, n_top_genes=30)
            sc.pp.pca(adata, n_comps=5, mask_var="highly_variable")
    assert isinstance(shadow.X, da.Array) and "X▲" in repr(shadow)
    np.testing.assert_array_equal(np.asarray(shadow.var["highly_variable"]), oracle.var["highly_variable"])
    assert_value_equal(sp.csr_matrix(shadow.X.compute()), oracle.X, "X")
    variance = np.asarray(shadow.uns["pca"]["variance_ratio"])
    np.testing.assert_allclose(variance, oracle.uns["pca"]["variance_ratio"], rtol=1e-3)
    pcs = np.asarray(shadow.obsm["X_pca"].compute() if hasattr(shadow.obsm["X_pca"], "compute")
                     else shadow.obsm["X_pca"])
    np.testing.assert_allclose(np.abs(pcs), np.abs(oracle.obsm["X_pca"]), rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize("kind", KINDS)
def test_hvg_subset_aggregate_and_vectors_as_anndata(counts, kind):
    subject, oracle = subject_and_oracle(kind, counts)
    oracle = oracle.copy() if oracle.is_view else oracle
    for key in ("score", "group", "gene3"):  # obs_vector returns what the installed anndata returns
        got, expected = subject.obs_vector(key), oracle.obs_vector(key)
        assert type(got) is type(expected) and got.dtype == expected.dtype
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for adata in (subject, oracle):
            sc.pp.normalize_total(adata)
            sc.pp.log1p(adata)
            sc.pp.highly_variable_genes(adata, n_top_genes=30, subset=True)
        aggregated, expected = sc.get.aggregate(subject, "group", "mean"), sc.get.aggregate(oracle, "group", "mean")
    assert_same_state(subject, oracle)
    np.testing.assert_allclose(aggregated.layers["mean"], expected.layers["mean"], rtol=1e-5)


#: scanpy's highly_variable_genes flavors: (function, keyword arguments, whether it takes log-normalized X).
HVG_FLAVORS = {
    "seurat": (sc.pp.highly_variable_genes, {"flavor": "seurat"}, True),
    "seurat with batches": (sc.pp.highly_variable_genes, {"flavor": "seurat", "batch_key": "batch"}, True),
    "cell_ranger": (sc.pp.highly_variable_genes, {"flavor": "cell_ranger"}, True),
    "seurat_v3": (sc.pp.highly_variable_genes, {"flavor": "seurat_v3"}, False),
    "seurat_v3_paper": (sc.pp.highly_variable_genes, {"flavor": "seurat_v3_paper"}, False),
    "pearson_residuals": (sc.experimental.pp.highly_variable_genes, {"flavor": "pearson_residuals"}, False),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("flavor", list(HVG_FLAVORS))
def test_highly_variable_genes_in_every_flavor_as_anndata(counts, kind, flavor):
    """Returned (``inplace=False``) and in place with ``subset=True``: the same genes and statistics."""
    if flavor.startswith("seurat_v3"):
        pytest.importorskip("skmisc")  # seurat_v3's loess
    function, options, normalized = HVG_FLAVORS[flavor]
    returned = {}
    for mode in ("returned", "subset"):
        subject, oracle = subject_and_oracle(kind, counts)
        oracle = oracle.copy() if oracle.is_view else oracle
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for adata in (subject, oracle):
                if normalized:
                    sc.pp.normalize_total(adata, target_sum=1e4)
                    sc.pp.log1p(adata)
                if mode == "returned":
                    returned[adata is oracle] = function(adata, n_top_genes=30, inplace=False, **options)
                else:
                    function(adata, n_top_genes=30, subset=True, **options)
        if mode == "returned":
            pd.testing.assert_frame_equal(returned[False], returned[True], check_exact=False, rtol=1e-4)
        else:
            assert subject.n_vars == 30
            assert_same_state(subject, oracle)


@pytest.mark.parametrize("backend", ["numpy", "dask"])
@pytest.mark.parametrize("axis", ["obs", "var"])
def test_muons_in_place_filters_on_an_anndata_shadow(counts, backend, axis):
    """muon assigns AnnData's private ``_obs``/``_var`` and then re-subsets X, layers, obsm/varm, obsp and
    raw from values it reads afterwards: the shadow serves them as they were until each is assigned.
    """
    muon = pytest.importorskip("muon")
    shadow, oracle = AnnDataShadow(counts, array_backend=backend), read_oracle(counts)
    for adata in (shadow, oracle):
        adata.raw = adata
        adata.layers["double"] = adata.X * 2
        adata.obsm["emb"] = np.arange(N_OBS * 2, dtype=float).reshape(N_OBS, 2)
        adata.varm["loadings"] = np.arange(N_VARS * 3, dtype=float).reshape(N_VARS, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for adata in (oracle, shadow):
            if axis == "obs":
                muon.pp.filter_obs(adata, "score", lambda x: x > 0)
            else:
                muon.pp.filter_var(adata, list(adata.var_names[::3]))
    assert shadow.shape == oracle.shape and not shadow._elements.state._stale  # every element got its kept rows
    assert_value_equal(computed(shadow.X), oracle.X, "X")
    assert_value_equal(computed(shadow.layers["double"]), oracle.layers["double"], "layers/double")
    np.testing.assert_array_equal(computed(shadow.obsm["emb"]), oracle.obsm["emb"])
    np.testing.assert_array_equal(computed(shadow.varm["loadings"]), oracle.varm["loadings"])
    assert_value_equal(computed(shadow.raw.X), oracle.raw.X, "raw.X")
    pd.testing.assert_frame_equal(shadow.obs, oracle.obs)
    pd.testing.assert_frame_equal(shadow.var, oracle.var)


def test_a_private_obs_must_keep_rows_by_name(counts):
    shadow = AnnDataShadow(counts)
    with pytest.raises(ValueError, match="keep some of the current rows"):
        shadow._obs = pd.DataFrame(index=["not-a-cell"])


def test_a_column_of_another_length_never_reaches_the_file(counts):
    from shadows.errors import InvalidElementKeyError
    from shadows.writing import ColumnChange, transaction

    shadow = AnnDataShadow(counts, mode="r+")
    wrong = ColumnChange("obs", "short", pd.Series(np.arange(3)), False, lambda: None)
    before = file_digest(counts)
    with pytest.raises(InvalidElementKeyError, match="3 values for a dataframe of 400 rows"):
        transaction.check(shadow._elements.connection, shadow.filename, [], [wrong], overwrite=True)
    assert file_digest(counts) == before


@pytest.mark.parametrize("fmt", ["h5ad", "zarr"])
def test_exports_write_the_changes_held_in_memory(counts, tmp_path, fmt):
    """X▲, a deleted layer and a raw assigned in memory reach the exported file as anndata would write
    them (the export reads values through ``element_value``, changes first).
    """
    shadow, oracle = AnnDataShadow(counts), read_oracle(counts)
    for adata in (shadow, oracle):
        adata.layers["double"] = adata.X * 2
    shadow.write_h5ad(tmp_path / "with_layer.h5ad")
    shadow = AnnDataShadow(tmp_path / "with_layer.h5ad")
    for adata in (shadow, oracle):
        adata.raw = adata
        adata.X = adata.X * 10
        del adata.layers["double"]
    target = tmp_path / f"out.{fmt}"
    (shadow.write_h5ad if fmt == "h5ad" else shadow.write_zarr)(target)
    written = ad.read_h5ad(target) if fmt == "h5ad" else ad.read_zarr(target)
    assert_value_equal(written.X, oracle.X, "X")
    assert [k for k in written.layers if k is not None] == []
    assert_value_equal(written.raw.X, oracle.raw.X, "raw.X")


def test_describe_is_the_public_account_of_a_shadow(counts, monkeypatch):
    from helpers import count_reads

    shadow = AnnDataShadow(counts)
    shadow.obsm["emb"] = np.ones((N_OBS, 2))
    with count_reads(monkeypatch) as reads:
        described = shadow[VIEW_CELLS].describe()
    assert sum(reads.values()) == 0
    assert described.kind == "AnnData" and described.is_view and described.shape == (N_OBS // 2, N_VARS)
    assert described.file_shape == (N_OBS, N_VARS) and described.header.startswith("View of AnnData Shadow")
    (x,) = described.slot("X")
    assert x.encoding.startswith("csr_matrix") and x.shape == (N_OBS // 2, N_VARS) and not x.changed
    (emb,) = described.slot("obsm")
    assert emb.changed and emb.shape == (N_OBS // 2, 2) and emb.marked_key == "emb▲"
    assert [e.key for e in described.slot("obs")] == ["_index", "group", "batch", "score"]
    stored = {e.path: e for e in shadow.stored_elements()}
    assert stored["X"].nbytes > 0 and stored["X"].shape == (N_OBS, N_VARS) and "obsm/emb" not in stored


def test_a_value_anndata_cannot_store_stops_the_write_before_anything_is_written(counts):
    from shadows import UnwritableValueError

    shadow = AnnDataShadow(counts, mode="r+")
    shadow.uns["fine"] = 1
    shadow.uns["bad"] = object()
    shadow.obsm["dates"] = np.zeros((N_OBS, 1), dtype="datetime64[D]")
    shadow.obs["fine"] = np.arange(N_OBS)
    before = file_digest(counts)
    with pytest.raises(UnwritableValueError, match=r"nothing was written.*uns/bad.*obsm/dates") as error:
        shadow.write()
    assert "uns/fine" not in str(error.value) and file_digest(counts) == before
    assert shadow.uns.is_staged("fine") and shadow.obsm.is_staged("dates")  # still staged (▲)
    del shadow.uns["bad"], shadow.obsm["dates"]
    shadow.write()
    written = read_oracle(counts)
    assert written.uns["fine"] == 1 and "fine" in written.obs


@pytest.mark.parametrize("kind", KINDS)
def test_obs_renamed_whole_and_muon_filters_as_anndata(counts, kind):
    """``adata.obs = frame`` with other names, and muon's in-place filter, side by side on an AnnData, a
    shadow and a view of a shadow (muon refuses views, of both).
    """
    muon = pytest.importorskip("muon")
    subject, oracle = subject_and_oracle(kind, counts)
    outcomes = []
    for adata in (oracle, subject):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frame = adata.obs.copy()
            frame.index = [f"renamed{i}" for i in range(adata.n_obs)]
            frame["extra"] = np.arange(adata.n_obs)
            adata.obs = frame
            try:
                muon.pp.filter_obs(adata, "score", lambda x: x > 0)
                outcomes.append("filtered")
            except ValueError as error:
                outcomes.append(f"refused: {'view' in str(error)}")
    assert outcomes[0] == outcomes[1]
    assert subject.is_view == oracle.is_view and subject.shape == oracle.shape
    pd.testing.assert_frame_equal(pd.DataFrame(subject.obs), oracle.obs)
    assert_value_equal(computed(subject.X), oracle.X, "X")
