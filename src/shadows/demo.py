"""``shadows demo``: build an example dataset and walk through the main job, measuring each step.

The dataset is generated (counts-like CSR X with cell types, a few hundred MB by default) and written by
anndata; then each step prints what it did, its wall time and the process's resident memory, so the
difference between opening a shadow and loading the file shows in numbers.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

CELL_TYPES = ("B cell", "T cell", "NK cell", "Monocyte", "Dendritic cell", "Megakaryocyte", "Plasma cell",
              "Erythrocyte")
ROWS_PER_BLOCK = 10_000


def _rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def out(text: str) -> None:
    """Print a line of the walk-through at once (the steps take seconds)."""
    print(text, flush=True)


class Steps:
    """Prints numbered steps with their wall time and the process's resident memory."""

    def __init__(self) -> None:
        self.number = 0

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        self.number += 1
        out(f"\n[{self.number}] {title}")
        before, start = _rss_mib(), time.perf_counter()
        yield
        seconds, after = time.perf_counter() - start, _rss_mib()
        out(f"    {seconds:.2f} s   memory {after:,.0f} MiB ({after - before:+,.0f} MiB)")


def _counts_block(seed: int, n_cells: int, n_genes: int, density: float) -> Any:
    """One block of rows of a counts-like CSR matrix (scipy's ``sparse.random`` is several times slower)."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    per_row = rng.poisson(density * n_genes, n_cells)
    rows = np.repeat(np.arange(n_cells), per_row)
    cols = rng.integers(0, n_genes, per_row.sum())
    values = (rng.poisson(1.5, per_row.sum()) + 1).astype(np.float32)
    matrix = sp.csr_matrix((values, (rows, cols)), shape=(n_cells, n_genes))
    matrix.sum_duplicates()
    return matrix


def build_dataset(path: Path, n_cells: int, n_genes: int, density: float) -> Path:
    """Write a generated AnnData (CSR X, cell types, QC columns, a UMAP-like embedding) to ``path``.

    X is a dask array of CSR blocks that anndata writes block by block, so building a large file never
    holds it in memory.
    """
    import anndata as ad
    import dask
    import dask.array as da
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    starts = range(0, n_cells, ROWS_PER_BLOCK)
    blocks = [da.from_delayed(dask.delayed(_counts_block)(i, min(ROWS_PER_BLOCK, n_cells - s), n_genes, density),
                              shape=(min(ROWS_PER_BLOCK, n_cells - s), n_genes), dtype=np.float32,
                              meta=sp.csr_matrix((0, 0), dtype=np.float32)) for i, s in enumerate(starts)]
    cell_type = pd.Categorical(rng.choice(CELL_TYPES, n_cells, p=np.linspace(2, 1, len(CELL_TYPES)) / 12))
    obs = pd.DataFrame({"cell_type": cell_type, "n_genes": rng.poisson(density * n_genes, n_cells)},
                       index=pd.Index([f"cell{i:07d}" for i in range(n_cells)], name="cell_id"))
    var = pd.DataFrame({"highly_variable": rng.random(n_genes) < 0.1},
                       index=pd.Index([f"GENE{i:05d}" for i in range(n_genes)], name="gene"))
    centers = rng.normal(scale=6, size=(len(CELL_TYPES), 2))
    umap = centers[cell_type.codes] + rng.normal(size=(n_cells, 2))
    adata = ad.AnnData(X=da.concatenate(blocks), obs=obs, var=var, obsm={"X_umap": umap.astype(np.float32)})
    with dask.config.set(scheduler="threads"):
        adata.write_h5ad(path)
    return path


def run(folder: Path, n_cells: int, n_genes: int, density: float) -> None:
    """Build the dataset in ``folder`` and walk through opening, viewing, computing and writing."""
    from dask.diagnostics import ProgressBar

    from shadows import AnnDataShadow

    steps = Steps()
    path = folder / "demo.h5ad"
    with steps.step(f"Build an example dataset: {n_cells:,} cells × {n_genes:,} genes, CSR counts ({path})"):
        build_dataset(path, n_cells, n_genes, density)
        out(f"    {path.stat().st_size / 2**20:,.0f} MiB on disk")

    with steps.step("Open it without loading: adata = AnnDataShadow(path)  (reads metadata only)"):
        adata = AnnDataShadow(path)
    with steps.step("The lazy repr (from metadata; ᐁ marks what is held in memory, ▲ what is new)"):
        out("    " + repr(adata).replace("\n", "\n    "))

    kind = CELL_TYPES[0]
    with steps.step(f"A view of one cell type: bcells = adata[adata.obs['cell_type'] == '{kind}']  (reads obs only)"):
        bcells = adata[adata.obs["cell_type"] == kind]
        out(f"    {bcells.n_obs:,} of {adata.n_obs:,} cells; nothing of X read yet")
    gene = adata.var_names[42]
    with steps.step(f"One gene's values in those cells: bcells.obs_vector('{gene}')  (reads their rows only)"):
        values = bcells.obs_vector(gene)
        out(f"    mean {values.mean():.3f}, expressed in {(values > 0).mean():.1%} of them")

    lazy = AnnDataShadow(path, array_backend="dask")
    with steps.step("A reduction over all of X, block by block: lazy.X.sum(axis=0)  (array_backend='dask')"):
        with ProgressBar(out=sys.stdout):
            totals = np.asarray(lazy.X.sum(axis=0).compute()).ravel()
        out(f"    counts per gene: min {totals.min():,.0f}, max {totals.max():,.0f}")

    with steps.step("Add an embedding computed lazily from X and write it: adata.obsm['X_proj'] = …; write()"):
        projection = np.random.default_rng(1).normal(size=(adata.n_vars, 2)).astype(np.float32)
        embedding = lazy.X.map_blocks(lambda block: np.asarray(block @ projection), dtype=np.float32,
                                      chunks=(lazy.X.chunks[0], (2,)), meta=np.empty((0, 0), np.float32))
        adata.obsm["X_proj"] = embedding
        out("    staged: " + repr(adata.obsm))
        lazy.close()
        adata.reopen("r+").write().reopen("r")
        out("    written: " + repr(adata.obsm) + "  (streamed block by block; anndata reads it too)")

    with steps.step("Load X into memory: adata.X  (kept until clear_cache; the repr marks it ᐁ)"):
        matrix = adata.X
        out(f"    {type(matrix).__name__} with {matrix.nnz:,} non-zeros; repr line: "
            + repr(adata).splitlines()[1].strip())
        del matrix
    with steps.step("Free it: adata.clear_cache()"):
        adata.clear_cache()
        out("    repr line: " + repr(adata).splitlines()[1].strip())
    adata.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``shadows demo`` options."""
    parser.add_argument("--folder", type=Path, default=None,
                        help="where to build the dataset (default: a temporary folder, removed afterwards)")
    parser.add_argument("--cells", type=int, default=100_000, help="number of cells (default 100,000)")
    parser.add_argument("--genes", type=int, default=10_000, help="number of genes (default 10,000)")
    parser.add_argument("--density", type=float, default=0.03,
                        help="fraction of non-zero counts (default 0.03: about 300 MB for the defaults)")


def main(args: argparse.Namespace) -> int:
    """Run the demo with parsed arguments."""
    if args.folder is not None:
        args.folder.mkdir(parents=True, exist_ok=True)
        run(args.folder, args.cells, args.genes, args.density)
        return 0
    folder = Path(tempfile.mkdtemp(prefix="shadows-demo-"))
    try:
        run(folder, args.cells, args.genes, args.density)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0
