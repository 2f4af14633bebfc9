"""Write the benchmark file of DESIGN.md section 6 with anndata, in h5ad and Zarr.

100,000 cells × 20,000 genes by default, CSR float32 with about ``nnz_per_cell`` non-zeros per cell,
obs (categoricals, numbers, strings), var, obsm X_pca (50) and X_umap, varm PCs, obsp connectivities.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp


def random_csr(n_obs: int, n_vars: int, nnz_per_cell: int, rng: np.random.Generator) -> sp.csr_matrix:
    """Rows with about ``nnz_per_cell`` sorted unique column indices (random gaps), float32 counts."""
    mean_gap = max(n_vars / max(nnz_per_cell, 1), 1.0)
    block = 10_000
    indptr, indices = [np.zeros(1, dtype=np.int64)], []
    for start in range(0, n_obs, block):
        rows = min(block, n_obs - start)
        width = int(nnz_per_cell * 1.3) + 8
        gaps = rng.integers(1, int(2 * mean_gap), size=(rows, width), dtype=np.int32)
        cols = np.cumsum(gaps, axis=1) - 1
        keep = cols < n_vars
        indices.append(cols[keep].astype(np.int32))
        indptr.append(indptr[-1][-1] + np.cumsum(keep.sum(axis=1)))
    indices = np.concatenate(indices)
    indptr = np.concatenate(indptr)
    data = rng.integers(1, 20, size=indices.size).astype(np.float32)
    return sp.csr_matrix((data, indices, indptr), shape=(n_obs, n_vars))


def make(n_obs: int, n_vars: int, nnz_per_cell: int, seed: int = 0) -> ad.AnnData:
    """The benchmark AnnData, in memory."""
    rng = np.random.default_rng(seed)
    cell_types = [f"type_{i}" for i in range(30)]
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(rng.choice(cell_types, n_obs)),
            "batch": pd.Categorical(rng.choice(["b1", "b2", "b3", "b4"], n_obs)),
            "n_counts": rng.gamma(2.0, 1000.0, n_obs).astype(np.float32),
            "n_genes": rng.integers(200, 5000, n_obs),
            "barcode_note": np.array([f"note{i % 1000}" for i in range(n_obs)], dtype=object),
        },
        index=[f"cell{i}" for i in range(n_obs)],
    )
    var = pd.DataFrame(
        {"gene_ids": [f"ENSG{i:08d}" for i in range(n_vars)], "highly_variable": rng.random(n_vars) < 0.1},
        index=[f"gene{i}" for i in range(n_vars)],
    )
    knn = random_csr(n_obs, n_obs, 15, rng)
    return ad.AnnData(
        X=random_csr(n_obs, n_vars, nnz_per_cell, rng),
        obs=obs,
        var=var,
        obsm={"X_pca": rng.normal(size=(n_obs, 50)).astype(np.float32),
              "X_umap": rng.normal(size=(n_obs, 2)).astype(np.float32)},
        varm={"PCs": rng.normal(size=(n_vars, 50)).astype(np.float32)},
        obsp={"connectivities": knn},
    )


def write_both(adata: ad.AnnData, stem: Path) -> tuple[Path, Path]:
    """Write ``stem.h5ad`` and ``stem.zarr`` (Zarr format 3, consolidated, anndata's defaults)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    h5ad, zarr_path = stem.with_suffix(".h5ad"), stem.with_suffix(".zarr")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not h5ad.exists():
            adata.write_h5ad(h5ad)
        if not zarr_path.exists():
            adata.write_zarr(zarr_path)
    return h5ad, zarr_path


def ensure(folder: Path, n_obs: int, n_vars: int, nnz_per_cell: int) -> tuple[Path, Path]:
    """Generate the file pair once (kept under ``folder``) and return their paths."""
    stem = folder / f"bench_{n_obs}x{n_vars}_{nnz_per_cell}"
    h5ad, zarr_path = stem.with_suffix(".h5ad"), stem.with_suffix(".zarr")
    if h5ad.exists() and zarr_path.exists():
        return h5ad, zarr_path
    return write_both(make(n_obs, n_vars, nnz_per_cell), stem)
