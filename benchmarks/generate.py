"""Write the benchmark file of DESIGN.md section 6 with anndata, in h5ad and Zarr.

100,000 cells × 20,000 genes by default, CSR float32 with about ``nnz_per_cell`` non-zeros per cell,
obs (categoricals, numbers, strings), var, obsm X_pca (50) and X_umap, varm PCs, obsp connectivities.

A file larger than memory (:func:`ensure_streamed`) is written in bounded memory instead: anndata writes
everything but X (obs, var, obsm X_umap), X is appended to the h5ad in blocks of rows through h5py, and the
Zarr store is the h5ad exported by shadows (``write_zarr``, streamed).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp


def random_csr(n_obs: int, n_vars: int, nnz_per_cell: int, rng: np.random.Generator,
               block: int = 10_000) -> sp.csr_matrix:
    """Rows with about ``nnz_per_cell`` sorted unique column indices (random gaps), float32 counts."""
    mean_gap = max(n_vars / max(nnz_per_cell, 1), 1.0)
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


def ensure_sharded(folder: Path, n_obs: int, n_vars: int, nnz_per_cell: int) -> Path:
    """The file of :func:`ensure` also as a Zarr v3 store with shards, the layout anndata 0.13 writes by
    default (whichever anndata runs this), kept as ``…_v3.zarr``.
    """
    h5ad, _ = ensure(folder, n_obs, n_vars, nnz_per_cell)
    path = h5ad.with_name(h5ad.stem + "_v3.zarr")
    if not path.exists():
        with warnings.catch_warnings(), ad.settings.override(zarr_write_format=3, auto_shard_zarr_v3=True):
            warnings.simplefilter("ignore")
            ad.read_h5ad(h5ad).write_zarr(path)
    return path


def ensure_streamed(folder: Path, n_obs: int, n_vars: int, nnz_per_cell: int,
                    block: int = 20_000) -> tuple[Path, Path]:
    """Generate a file pair too large to build in memory (see the module's docstring): about
    ``8 * n_obs * nnz_per_cell`` bytes of X, written ``block`` rows at a time (one block in memory).
    """
    import time

    import h5py

    from shadows import AnnDataShadow

    stem = folder / f"streamed_{n_obs}x{n_vars}_{nnz_per_cell}"
    h5ad, zarr_path = stem.with_suffix(".h5ad"), stem.with_suffix(".zarr")
    folder.mkdir(parents=True, exist_ok=True)
    if not h5ad.exists():
        partial = h5ad.with_suffix(".partial.h5ad")
        rng = np.random.default_rng(0)
        obs = pd.DataFrame({"cell_type": pd.Categorical(rng.choice([f"type_{i}" for i in range(30)], n_obs)),
                            "n_counts": rng.gamma(2.0, 1000.0, n_obs).astype(np.float32)},
                           index=pd.Index([f"cell{i}" for i in range(n_obs)]))
        var = pd.DataFrame({"gene_ids": [f"ENSG{i:08d}" for i in range(n_vars)]},
                           index=[f"gene{i}" for i in range(n_vars)])
        skeleton = ad.AnnData(obs=obs, var=var, obsm={"X_umap": rng.normal(size=(n_obs, 2)).astype(np.float32)})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            skeleton.write_h5ad(partial)
        del skeleton, obs
        start = time.perf_counter()
        with h5py.File(partial, "r+") as file:
            group = file.create_group("X")
            group.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": (n_obs, n_vars)})
            data = group.create_dataset("data", (0,), np.float32, maxshape=(None,), chunks=(2**18,))
            indices = group.create_dataset("indices", (0,), np.int32, maxshape=(None,), chunks=(2**18,))
            indptr = group.create_dataset("indptr", (n_obs + 1,), np.int64)
            indptr[0] = 0
            nnz = 0
            for first in range(0, n_obs, block):
                rows = random_csr(min(block, n_obs - first), n_vars, nnz_per_cell,
                                  np.random.default_rng([1, first]), block=block)
                stop = nnz + rows.nnz
                for dataset, values in ((data, rows.data), (indices, rows.indices)):
                    dataset.resize((stop,))
                    dataset[nnz:stop] = values
                indptr[first + 1:first + rows.shape[0] + 1] = rows.indptr[1:].astype(np.int64) + nnz
                nnz = stop
        partial.rename(h5ad)
        print(f"wrote {h5ad} ({h5ad.stat().st_size / 1e9:.1f} GB, {nnz:,} non-zeros) in "
              f"{time.perf_counter() - start:.0f} s", flush=True)
    if not zarr_path.exists():
        start = time.perf_counter()
        AnnDataShadow(h5ad, array_backend="dask").write_zarr(zarr_path)
        size = sum(p.stat().st_size for p in zarr_path.rglob("*") if p.is_file())
        print(f"exported {zarr_path} ({size / 1e9:.1f} GB) with shadows in {time.perf_counter() - start:.0f} s",
              flush=True)
    return h5ad, zarr_path
