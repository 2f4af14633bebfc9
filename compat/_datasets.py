"""The datasets scanpy's tests load, written once per stack as ``.h5ad`` files the plugin serves.

scanpy's bundled datasets (``pbmc68k_reduced``, ``krumsiek11``, ``toggleswitch``) are written as scanpy
returns them. Datasets that scanpy downloads (``pbmc3k``, ``pbmc3k_processed``, ``paul15``) cannot be fetched
on a machine without network, so deterministic random stand-ins of the same shape, columns and marker genes
are generated instead: the tests that compare against stored numbers or images then fail in the control as
well and drop out of the comparison, the others exercise the same code paths.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

# bumped when what is written changes, so that a stale cache is rebuilt
VERSION = 3

MARKERS = [
    "IL7R", "CD14", "LYZ", "MS4A1", "CD8A", "CD8B", "FCGR3A", "MS4A7", "GNLY", "NKG7", "FCER1A", "CST3", "PPBP",
    "LDHB", "CD79A", "CD79B", "HLA-DRA", "HLA-DQA1", "CD3E", "CD3D", "LGALS3", "S100A8", "S100A9", "FTL", "CCR7",
    "GZMB", "GZMK", "CD4", "IGKC", "MALAT1", "CD74", "TCL1A", "PF4", "SDPR", "FCGR3B", "LTB", "IL32", "CCL5",
]
MITO = ["MT-ND1", "MT-ND2", "MT-CO1", "MT-CO2", "MT-ATP8", "MT-ATP6", "MT-CO3", "MT-ND3", "MT-ND4L", "MT-ND4",
        "MT-ND5", "MT-ND6", "MT-CYB"]
LOUVAIN = ["CD4 T cells", "CD14+ Monocytes", "B cells", "CD8 T cells", "NK cells", "FCGR3A+ Monocytes",
           "Dendritic cells", "Megakaryocytes"]
PAUL15_CLUSTERS = ["1Ery", "2Ery", "3Ery", "4Ery", "5Ery", "6Ery", "7MEP", "8Mk", "9GMP", "10GMP", "11DC", "12Baso",
                   "13Baso", "14Mo", "15Mo", "16Neu", "17Neu", "18Eos", "19Lymph"]


def _barcodes(rng: np.random.Generator, n: int) -> np.ndarray:
    letters = np.array(list("ACGT"))
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < n:
        name = "".join(rng.choice(letters, 14)) + "-1"
        if name not in seen:
            seen.add(name)
            names.append(name)
    return np.asarray(names, dtype=object)


def _counts(rng: np.random.Generator, n_obs: int, n_vars: int, n_nonzero_genes: int, nnz: int) -> sp.csr_matrix:
    """Sparse counts: the first ``n_nonzero_genes`` genes expressed (lognormal means), the others all zero."""
    weights = rng.lognormal(0.0, 1.5, n_nonzero_genes)
    weights /= weights.sum()
    size = rng.lognormal(0.0, 0.4, n_obs)
    size /= size.sum()
    rows = rng.choice(n_obs, nnz, p=size)
    cols = rng.choice(n_nonzero_genes, nnz, p=weights)
    data = np.ones(nnz, dtype=np.float32)
    x = sp.coo_matrix((data, (rows, cols)), shape=(n_obs, n_vars)).tocsr()
    x.sum_duplicates()
    x.sort_indices()
    return x


def _knn_graphs(x: np.ndarray, k: int = 15) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    from sklearn.neighbors import kneighbors_graph

    distances = kneighbors_graph(x, k - 1, mode="distance").tocsr().astype(np.float32)
    connectivities = distances.copy()
    connectivities.data = np.exp(-connectivities.data / connectivities.data.mean()).astype(np.float32)
    connectivities = connectivities.maximum(connectivities.T).tocsr()
    return distances, connectivities


def pbmc3k() -> ad.AnnData:
    """Stand-in for ``sc.datasets.pbmc3k()``: 2700 × 32738 sparse counts, var ``gene_ids``, about half the
    genes never expressed (as in the real data)."""
    rng = np.random.default_rng(3)
    n_obs, n_vars = 2700, 32738
    names = MARKERS + MITO
    genes = names + [f"GENE{i}" for i in range(n_vars - len(names))]
    # markers and mitochondrial genes among the expressed ones; then a shuffled block of the rest
    expressed = 16634
    order = np.concatenate([np.arange(len(names)), len(names) + rng.permutation(n_vars - len(names))])
    genes = np.asarray(genes, dtype=object)[order]
    x = _counts(rng, n_obs, n_vars, expressed, 2_300_000)
    var = pd.DataFrame({"gene_ids": [f"ENSG{i:011d}" for i in range(n_vars)]}, index=pd.Index(genes))
    obs = pd.DataFrame(index=pd.Index(_barcodes(rng, n_obs)))
    return ad.AnnData(x, obs=obs, var=var)


def pbmc3k_processed(counts: ad.AnnData) -> ad.AnnData:
    """Stand-in for ``sc.datasets.pbmc3k_processed()``: 2638 × 1838 scaled dense X, raw 2638 × 13714
    log-normalized, louvain with the real cluster names, PCA/UMAP/t-SNE/FR embeddings and a kNN graph."""
    rng = np.random.default_rng(4)
    cells = counts[:2638]
    x = cells.X.toarray()
    expressed = np.flatnonzero((x > 0).sum(axis=0) >= 3)[:13714]
    raw_x = x[:, expressed]
    raw_x = np.log1p(raw_x / np.maximum(raw_x.sum(axis=1, keepdims=True), 1) * 1e4).astype(np.float32)
    raw = ad.AnnData(sp.csr_matrix(raw_x), obs=pd.DataFrame(index=cells.obs_names),
                     var=pd.DataFrame(index=cells.var_names[expressed]))
    hvg = np.sort(np.concatenate([np.arange(len(MARKERS)), len(MARKERS) + rng.permutation(raw_x.shape[1]
                                                                                          - len(MARKERS))[:1800]]))
    scaled = raw_x[:, hvg]
    scaled = (scaled - scaled.mean(0)) / np.maximum(scaled.std(0), 1e-6)
    scaled = np.clip(scaled, -10, 10).astype(np.float32)
    louvain = pd.Categorical(rng.choice(LOUVAIN, 2638, p=[0.43, 0.18, 0.13, 0.11, 0.06, 0.06, 0.02, 0.01]),
                             categories=LOUVAIN)
    centers = rng.normal(0, 5, (len(LOUVAIN), 50))
    pca = (centers[louvain.codes] + rng.normal(0, 1, (2638, 50))).astype(np.float32)
    obs = pd.DataFrame({
        "n_genes": (x > 0).sum(axis=1).astype(np.int64),
        "percent_mito": rng.uniform(0, 0.05, 2638).astype(np.float32),
        "n_counts": x.sum(axis=1).astype(np.float32),
        "louvain": louvain,
    }, index=cells.obs_names)
    var = pd.DataFrame({"n_cells": (raw_x[:, hvg] > 0).sum(axis=0).astype(np.int64)}, index=raw.var_names[hvg])
    adata = ad.AnnData(scaled, obs=obs, var=var)
    adata.raw = raw
    adata.obsm["X_pca"] = pca
    adata.obsm["X_tsne"] = pca[:, :2] * 3
    adata.obsm["X_umap"] = pca[:, 2:4]
    adata.obsm["X_draw_graph_fr"] = pca[:, 4:6] * 100
    adata.varm["PCs"] = rng.normal(0, 0.05, (adata.n_vars, 50)).astype(np.float32)
    distances, connectivities = _knn_graphs(pca)
    adata.obsp["distances"] = distances
    adata.obsp["connectivities"] = connectivities
    variance = np.sort(rng.uniform(1, 50, 50))[::-1].astype(np.float32)
    adata.uns["pca"] = {"variance": variance, "variance_ratio": variance / variance.sum() / 3}
    adata.uns["neighbors"] = {"params": {"n_neighbors": 15, "method": "umap"},
                              "distances_key": "distances", "connectivities_key": "connectivities"}
    adata.uns["louvain"] = {"params": {"resolution": 1.0}}
    adata.uns["louvain_colors"] = np.array(["#1f77b4", "#ff7f0e", "#279e68", "#d62728", "#aa40fc", "#8c564b",
                                            "#e377c2", "#b5bd61"], dtype=object)
    adata.uns["draw_graph"] = {"params": {"layout": "fr", "random_state": 0}}
    return adata


def paul15() -> ad.AnnData:
    """Stand-in for ``sc.datasets.paul15()``: 2730 × 3451 dense float32 counts, ``paul15_clusters`` with the
    real 19 cluster names, ``uns["iroot"]``."""
    rng = np.random.default_rng(15)
    n_obs, n_vars = 2730, 3451
    x = _counts(rng, n_obs, n_vars, n_vars, 1_200_000).toarray()
    clusters = pd.Categorical(rng.choice(PAUL15_CLUSTERS, n_obs), categories=PAUL15_CLUSTERS)
    genes = [f"Gene{i}" for i in range(n_vars - 4)] + ["Gata1", "Gata2", "Mpo", "Elane"]
    obs = pd.DataFrame({"paul15_clusters": clusters}, index=pd.Index([f"W{31000 + i}" for i in range(n_obs)]))
    adata = ad.AnnData(x, obs=obs, var=pd.DataFrame(index=pd.Index(genes)))
    adata.uns["iroot"] = 840
    return adata


def pbmc3k_normalized(counts: ad.AnnData) -> ad.AnnData:
    """What ``testing.scanpy._helpers.data.pbmc3k_normalized`` derives from pbmc3k."""
    import scanpy as sc

    pbmc = counts.copy()
    pbmc.X = pbmc.X.astype("float64")
    sc.pp.filter_genes(pbmc, min_counts=1)
    sc.pp.log1p(pbmc)
    sc.pp.normalize_total(pbmc)
    sc.pp.highly_variable_genes(pbmc)
    return pbmc


def _bundled(name: str) -> ad.AnnData:
    import scanpy as sc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(sc.datasets, name)()


def build(folder: Path) -> dict[str, Path]:
    """Write every dataset to ``folder`` (once: a stamp file records the version) and return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    names = ["pbmc68k_reduced", "krumsiek11", "toggleswitch", "pbmc3k", "pbmc3k_processed", "paul15",
             "pbmc3k_normalized"]
    paths = {name: folder / f"{name}.h5ad" for name in names}
    stamp = folder / "stamp.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("version") == VERSION and all(
            p.exists() for p in paths.values()):
        return paths
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in ["pbmc68k_reduced", "krumsiek11", "toggleswitch"]:
            adata = _bundled(name)
            if "highlights" in adata.uns:  # krumsiek11: integer keys, which h5ad cannot store
                adata.uns["highlights"] = {str(k): v for k, v in adata.uns["highlights"].items()}
            adata.write_h5ad(paths[name])
        counts = pbmc3k()
        counts.write_h5ad(paths["pbmc3k"])
        pbmc3k_processed(counts).write_h5ad(paths["pbmc3k_processed"])
        paul15().write_h5ad(paths["paul15"])
        pbmc3k_normalized(counts).write_h5ad(paths["pbmc3k_normalized"])
    stamp.write_text(json.dumps({"version": VERSION}))
    return paths


if __name__ == "__main__":
    import sys

    for name, path in build(Path(sys.argv[1])).items():
        print(name, path)
