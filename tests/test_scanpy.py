"""scanpy and muon accept shadows and give what they give on anndata's in-memory read of the same file.

Each test runs one scanpy/muon call on a read-only ``AnnDataShadow`` (or ``MuDataShadow``) of scanpy's bundled
pbmc68k_reduced and on ``anndata.read_h5ad`` of the same file, and compares what was drawn or computed. What
scanpy adds in memory (``uns["<key>_colors"]``, ``rank_genes_groups``, ``X_pca``) is staged on the shadow, never
written: the bundled file is opened read-only.
"""

from __future__ import annotations

import warnings

import anndata as ad
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from shadows import AnnDataShadow, MuDataShadow

sc = pytest.importorskip("scanpy")
matplotlib.use("Agg")

pytestmark = [
    # the bundled file predates encoding metadata; anndata's reads say so on every element
    pytest.mark.filterwarnings("ignore::anndata.OldFormatWarning"),
    pytest.mark.filterwarnings("ignore:The set_bad function:PendingDeprecationWarning"),  # scanpy vs matplotlib
    # anndata 0.13 and scanpy 1.12 under pandas 3
    pytest.mark.filterwarnings("ignore:The 'mode.chained_assignment' option is deprecated"),
    pytest.mark.filterwarnings("ignore:The 'future.infer_string' option is deprecated"),
    pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.drop is deprecated"),
]

GROUPS = ["CD14+ Monocyte", "CD19+ B", "CD56+ NK"]
GENES = ["CD79A", "NKG7", "FCGR3A", "CST3"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def pair(pbmc_path) -> tuple[AnnDataShadow, ad.AnnData]:
    """A fresh read-only shadow and anndata's full read of the same file (tools edit both in memory)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oracle = ad.read_h5ad(pbmc_path)
    shadow = AnnDataShadow(pbmc_path)
    yield shadow, oracle
    shadow.close()


def _drawn(ax) -> list[tuple[np.ndarray, np.ndarray]]:
    """What the axes' collections draw: point offsets and face colors, in drawing order."""
    return [(np.asarray(c.get_offsets()), np.asarray(c.get_facecolors())) for c in ax.collections]


def _assert_same_drawing(ax_shadow, ax_oracle) -> None:
    drawn_shadow, drawn_oracle = _drawn(ax_shadow), _drawn(ax_oracle)
    assert len(drawn_shadow) == len(drawn_oracle) > 0
    for (offsets, colors), (offsets_oracle, colors_oracle) in zip(drawn_shadow, drawn_oracle, strict=True):
        np.testing.assert_array_equal(offsets, offsets_oracle)
        np.testing.assert_array_equal(colors, colors_oracle)
    assert [t.get_text() for t in ax_shadow.texts] == [t.get_text() for t in ax_oracle.texts]


# --- plotting ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("color", ["bulk_labels", "phase", "CD79A"])
def test_pl_umap(pair, color):
    """Colored by a column with stored colors, one without (scanpy stores a palette), and a gene (from raw)."""
    shadow, oracle = pair
    ax_shadow = sc.pl.umap(shadow, color=color, show=False)
    ax_oracle = sc.pl.umap(oracle, color=color, show=False)
    _assert_same_drawing(ax_shadow, ax_oracle)
    if color != "CD79A":  # "phase_colors" is set by scanpy: in memory only, on the read-only shadow
        np.testing.assert_array_equal(shadow.uns[f"{color}_colors"], oracle.uns[f"{color}_colors"])


def test_pl_embedding_of_a_view(pair):
    shadow, oracle = pair
    view_shadow = shadow[shadow.obs["bulk_labels"].isin(GROUPS)]
    view_oracle = oracle[oracle.obs["bulk_labels"].isin(GROUPS)]
    ax_shadow = sc.pl.embedding(view_shadow, "X_pca", color=["louvain"], show=False)
    ax_oracle = sc.pl.embedding(view_oracle, "X_pca", color=["louvain"], show=False)
    _assert_same_drawing(ax_shadow, ax_oracle)


def test_pl_violin(pair):
    shadow, oracle = pair
    kwargs = {"groupby": "bulk_labels", "jitter": False, "show": False}  # jitter draws random offsets
    ax_shadow = sc.pl.violin(shadow, ["CD79A", "n_genes"], **kwargs)
    ax_oracle = sc.pl.violin(oracle, ["CD79A", "n_genes"], **kwargs)
    axes_shadow, axes_oracle = np.atleast_1d(ax_shadow), np.atleast_1d(ax_oracle)
    assert len(axes_shadow) == len(axes_oracle)
    for a_shadow, a_oracle in zip(axes_shadow, axes_oracle, strict=True):
        paths_shadow = [p.vertices for c in a_shadow.collections for p in c.get_paths()]
        paths_oracle = [p.vertices for c in a_oracle.collections for p in c.get_paths()]
        assert len(paths_shadow) == len(paths_oracle) > 0
        for v_shadow, v_oracle in zip(paths_shadow, paths_oracle, strict=True):
            np.testing.assert_array_equal(v_shadow, v_oracle)
        _assert_same_drawing(a_shadow, a_oracle)


def test_pl_dotplot_of_a_view(pair):
    shadow, oracle = pair
    view_shadow = shadow[shadow.obs["bulk_labels"].isin(GROUPS)]
    view_oracle = oracle[oracle.obs["bulk_labels"].isin(GROUPS)]
    axes_shadow = sc.pl.dotplot(view_shadow, GENES, groupby="bulk_labels", show=False)
    axes_oracle = sc.pl.dotplot(view_oracle, GENES, groupby="bulk_labels", show=False)
    main_shadow, main_oracle = axes_shadow["mainplot_ax"], axes_oracle["mainplot_ax"]
    _assert_same_drawing(main_shadow, main_oracle)
    np.testing.assert_array_equal(main_shadow.collections[0].get_sizes(), main_oracle.collections[0].get_sizes())
    labels = [t.get_text() for t in main_shadow.get_yticklabels()]
    assert labels == [t.get_text() for t in main_oracle.get_yticklabels()]
    assert set(labels) == set(GROUPS)  # the view's unused categories are gone, as on the AnnData view


# --- getters ----------------------------------------------------------------------------------------------------


def test_get_obs_df(pair):
    shadow, oracle = pair
    kwargs = {"keys": ["bulk_labels", "n_genes", *GENES], "obsm_keys": [("X_umap", 0), ("X_pca", 1)]}
    pd.testing.assert_frame_equal(sc.get.obs_df(shadow, **kwargs), sc.get.obs_df(oracle, **kwargs))
    raw = {"keys": GENES, "use_raw": True}
    pd.testing.assert_frame_equal(sc.get.obs_df(shadow, **raw), sc.get.obs_df(oracle, **raw))


def test_get_var_df(pair):
    shadow, oracle = pair
    kwargs = {"keys": ["means", "highly_variable", *oracle.obs_names[:3]], "varm_keys": [("PCs", 0)]}
    pd.testing.assert_frame_equal(sc.get.var_df(shadow, **kwargs), sc.get.var_df(oracle, **kwargs))


def test_anndata_array_references(pair):
    """anndata >= 0.13 resolves ``adata[A.obs[k]]`` and ``adata.raw[A.X[:, gene]]``; scanpy 1.12 plots through them."""
    acc = pytest.importorskip("anndata.acc")
    A = acc.A
    shadow, oracle = pair
    view_shadow = shadow[shadow.obs["bulk_labels"].isin(GROUPS)]
    view_oracle = oracle[oracle.obs["bulk_labels"].isin(GROUPS)]
    cell = view_oracle.obs_names[3]
    for ref in [A.obs["louvain"], A.obs.index, A.X[:, "CD79A"], A.X[cell, :], A.obsm["X_umap"][:, 1], A.var["means"]]:
        for got, expected in [(shadow[ref], oracle[ref]), (view_shadow[ref], view_oracle[ref])]:
            assert type(got) is type(expected), ref
            np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
    for ref in [A.X[:, "CD79A"], A.X[cell, :], A.var.index]:
        np.testing.assert_array_equal(np.asarray(shadow.raw[ref]), np.asarray(oracle.raw[ref]))
        np.testing.assert_array_equal(np.asarray(view_shadow.raw[ref]), np.asarray(view_oracle.raw[ref]))
    with pytest.raises(IndexError):
        shadow[A.obsm]


# --- tools that add results in memory ---------------------------------------------------------------------------


def test_tl_rank_genes_groups(pair):
    shadow, oracle = pair
    for adata in (shadow, oracle):
        sc.tl.rank_genes_groups(adata, "bulk_labels", method="t-test", key_added="rgg")
    for group in ["CD14+ Monocyte", "CD8+ Cytotoxic T"]:
        pd.testing.assert_frame_equal(sc.get.rank_genes_groups_df(shadow, group, key="rgg"),
                                      sc.get.rank_genes_groups_df(oracle, group, key="rgg"))
    assert shadow.uns["rgg"]["params"] == oracle.uns["rgg"]["params"]


def test_pp_pca(pair):
    shadow, oracle = pair
    # on all genes: X is passed as it is, and the result is bit for bit anndata's
    for adata in (shadow, oracle):
        sc.pp.pca(adata, n_comps=20, mask_var=None, svd_solver="arpack", random_state=0, key_added="pca_all")
    np.testing.assert_array_equal(shadow.obsm["pca_all"], oracle.obsm["pca_all"])
    np.testing.assert_array_equal(shadow.varm["pca_all"], oracle.varm["pca_all"])
    np.testing.assert_array_equal(shadow.uns["pca_all"]["variance_ratio"], oracle.uns["pca_all"]["variance_ratio"])
    # the stored PCA is untouched: the new one is staged in memory beside it
    np.testing.assert_array_equal(shadow.obsm["X_pca"], oracle.obsm["X_pca"])


def test_pp_pca_of_highly_variable_genes(pair):
    """scanpy's default masks the highly variable genes through a view of the shadow.

    That view's X holds the same values as anndata's view, but C-ordered where numpy's column selection
    gives anndata an F-ordered array; float32 sums then round differently, so compare with a tolerance.
    """
    shadow, oracle = pair
    np.testing.assert_array_equal(shadow[:, shadow.var["highly_variable"]].X,
                                  oracle[:, oracle.var["highly_variable"]].X)
    for adata in (shadow, oracle):
        sc.pp.pca(adata, n_comps=20, svd_solver="covariance_eigh", key_added="pca_hvg")
    expected = oracle.obsm["pca_hvg"]
    np.testing.assert_allclose(shadow.obsm["pca_hvg"], expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    np.testing.assert_allclose(shadow.uns["pca_hvg"]["variance_ratio"], oracle.uns["pca_hvg"]["variance_ratio"],
                               rtol=1e-5)


@pytest.mark.parametrize("flavor", ["seurat", "cell_ranger"])
def test_pp_highly_variable_genes(pair, flavor):
    shadow, oracle = pair
    # these flavors expect log-normalized data: raw X holds it here (X is scaled); stage it as a layer
    for adata in (shadow, oracle):
        adata.layers["log"] = adata.raw.X
    assert isinstance(shadow.layers["log"], sp.csr_matrix)
    kwargs = {"layer": "log", "inplace": False, "flavor": flavor, "n_top_genes": 100}
    result = sc.pp.highly_variable_genes(shadow, **kwargs)
    pd.testing.assert_frame_equal(result, sc.pp.highly_variable_genes(oracle, **kwargs))
    assert result["highly_variable"].sum() == 100
    assert "highly_variable" in shadow.var and "means" in shadow.var  # inplace=False: var is as stored
    np.testing.assert_array_equal(shadow.var["means"], oracle.var["means"])


# --- muon -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pbmc_h5mu(pbmc_path, tmp_path_factory):
    """pbmc68k_reduced as a MuData: two modalities splitting the genes, and a global obsm X_umap."""
    mudata = pytest.importorskip("mudata")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rna = ad.read_h5ad(pbmc_path)
        rna.raw = None
        half = rna.n_vars // 2
        mdata = mudata.MuData({"rna": rna[:, :half].copy(), "prot": rna[:, half:].copy()})
        mdata.obs["bulk_labels"] = rna.obs["bulk_labels"].to_numpy()
        mdata.obsm["X_umap"] = rna.obsm["X_umap"]
        path = tmp_path_factory.mktemp("mudata") / "pbmc.h5mu"
        mdata.write_h5mu(path)
    return path


@pytest.mark.parametrize("color", ["bulk_labels", "rna:louvain", "CD79A"])
def test_muon_pl_embedding(pbmc_h5mu, color):
    mu = pytest.importorskip("muon")
    mudata = pytest.importorskip("mudata")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oracle = mudata.read_h5mu(pbmc_h5mu)
    shadow = MuDataShadow(pbmc_h5mu)
    try:
        if color == "rna:louvain":  # muon colors by global obs columns: copy the modality's (mudata >= 0.4)
            for mdata in (shadow, oracle):
                mdata.obs["rna:louvain"] = mdata["rna"].obs["louvain"]
        ax_shadow = mu.pl.embedding(shadow, basis="X_umap", color=color, show=False)
        ax_oracle = mu.pl.embedding(oracle, basis="X_umap", color=color, show=False)
        _assert_same_drawing(ax_shadow, ax_oracle)
    finally:
        shadow.close()
