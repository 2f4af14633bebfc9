"""``shadows demo``: build an example dataset and compare anndata's way and a shadow's on it, step by step.

The dataset is generated (counts-like CSR X with cell types, a few hundred MB by default) and written by
anndata. Each step runs with ``anndata.read_h5ad`` and with a shadow of the same file, and prints its
wall time and the peak memory it added (the process's resident memory sampled every 5 ms while the step
runs, not read once afterwards). Then scanpy runs on the shadow and saves a plot; a summary table closes,
and the demo says what it removed or kept.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import tempfile
import threading
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


class PeakMemory:
    """The highest resident memory of the process while a block runs, sampled every 5 ms in a thread."""

    def __init__(self) -> None:
        self.start = self.peak = _rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss_mib())

    def __enter__(self) -> PeakMemory:
        gc.collect()
        self.start = self.peak = _rss_mib()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mib())

    @property
    def added(self) -> float:
        return self.peak - self.start


class Steps:
    """Prints numbered steps; a measured step prints its time and peak added memory and keeps them for the
    summary table (by step and by who ran it: ``"anndata"`` or ``"shadow"``).
    """

    def __init__(self) -> None:
        self.number = 0
        self.results: dict[str, dict[str, tuple[float, float]]] = {}

    def title(self, title: str) -> None:
        self.number += 1
        out(f"\n[{self.number}] {title}")

    @contextmanager
    def measure(self, step: str, who: str, code: str) -> Iterator[None]:
        with PeakMemory() as memory:
            start = time.perf_counter()
            yield
            seconds = time.perf_counter() - start
        self.results.setdefault(step, {})[who] = (seconds, memory.added)
        out(f"    {who:<8} {code:<58} {seconds:7.2f} s   peak +{memory.added:,.0f} MiB")

    def table(self) -> str:
        lines = [f"    {'step':<30} {'anndata':>22} {'shadow':>22}"]
        for step, runs in self.results.items():
            cells = [f"{runs[w][0]:6.2f} s +{runs[w][1]:6,.0f} MiB" if w in runs else "-"
                     for w in ("anndata", "shadow")]
            lines.append(f"    {step:<30} {cells[0]:>22} {cells[1]:>22}")
        return "\n".join(lines)


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


def run(folder: Path, n_cells: int, n_genes: int, density: float, plot: Path | None = None) -> bool:
    """Build the dataset in ``folder``, then compare anndata and a shadow step by step, run scanpy on the
    shadow (its plot saved to ``plot``, by default ``folder/violin.png``) and print the summary. Returns
    whether the plot was saved (scanpy is installed).
    """
    import anndata as ad

    from shadows import read_h5ad

    steps = Steps()
    path = folder / "demo.h5ad"
    steps.title(f"Build an example dataset: {n_cells:,} cells × {n_genes:,} genes, CSR counts ({path})")
    build_dataset(path, n_cells, n_genes, density)
    out(f"    {path.stat().st_size / 2**20:,.0f} MiB on disk")

    steps.title("Open the file")
    with steps.measure("open", "anndata", "full = anndata.read_h5ad(path)"):
        full = ad.read_h5ad(path)
    with steps.measure("open", "shadow", "adata = shadows.read_h5ad(path)  (metadata only)"):
        adata = read_h5ad(path)
    out("    the shadow's repr (from metadata; ᐁ held in memory, ▲ changed in memory):")
    out("      " + repr(adata).replace("\n", "\n      "))

    kind = CELL_TYPES[0]
    steps.title(f"A view of one cell type ({kind})")
    with steps.measure("view of one cell type", "anndata", f"full[full.obs['cell_type'] == '{kind}']"):
        full_view = full[full.obs["cell_type"] == kind]
    with steps.measure("view of one cell type", "shadow", f"adata[adata.obs['cell_type'] == '{kind}']"):
        view = adata[adata.obs["cell_type"] == kind]
    out(f"    {view.n_obs:,} of {adata.n_obs:,} cells; the shadow's view has read nothing of X")

    gene = adata.var_names[42]
    steps.title(f"One gene's values in those cells ({gene})")
    with steps.measure("one gene", "anndata", f"full_view.obs_vector('{gene}')"):
        expected = full_view.obs_vector(gene)
    with steps.measure("one gene", "shadow", f"view.obs_vector('{gene}')  (their rows only)"):
        values = view.obs_vector(gene)
    out(f"    same values: {np.array_equal(values, expected)}; mean {values.mean():.3f}")

    steps.title("A reduction over all of X: counts per gene")
    with steps.measure("reduction over X", "anndata", "full.X.sum(axis=0)"):
        expected = np.asarray(full.X.sum(axis=0)).ravel()
    lazy = read_h5ad(path, array_backend="dask")
    with steps.measure("reduction over X", "shadow", "lazy.X.sum(axis=0).compute()  (block by block)"):
        totals = np.asarray(lazy.X.sum(axis=0).compute()).ravel()
    out(f"    same totals: {np.allclose(totals, expected)}")

    steps.title("Write a new element: an embedding computed from X")
    projection = np.random.default_rng(1).normal(size=(adata.n_vars, 2)).astype(np.float32)
    with steps.measure("write a new element", "anndata", "full.obsm['X_proj'] = …; full.write_h5ad(copy)"):
        full.obsm["X_proj"] = np.asarray(full.X @ projection)
        full.write_h5ad(folder / "anndata_copy.h5ad")
    with steps.measure("write a new element", "shadow", "adata.obsm['X_proj'] = …; adata.write()"):
        adata.obsm["X_proj"] = lazy.X.map_blocks(lambda block: np.asarray(block @ projection), dtype=np.float32,
                                                 chunks=(lazy.X.chunks[0], (2,)), meta=np.empty((0, 0), np.float32))
        lazy.close()
        adata.reopen("r+").write().reopen("r")
    out("    the shadow wrote only the new element, streamed block by block: " + repr(adata.obsm))
    del full, full_view
    gc.collect()

    steps.title("scanpy on the shadow: normalize_total and log1p in place on a view, then a violin plot")
    plotted = _scanpy_on(adata, kind, gene, plot or folder / "violin.png", steps)
    adata.close()

    steps.title("Summary: time and peak memory added per step")
    out(steps.table())
    return plotted


def _scanpy_on(adata: Any, kind: str, gene: str, png: Path, steps: Steps) -> bool:
    """Scanpy's in-place preprocessing on a view of the shadow, and a plot saved to the PNG ``png``
    (``False``: scanpy is not installed).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import scanpy as sc
    except ImportError:
        out("    scanpy is not installed: pip install 'shadows[demo]' to run this step")
        return False
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with steps.measure("scanpy on a view", "shadow", "sc.pp.normalize_total(view); sc.pp.log1p(view)"):
            view = adata[adata.obs["cell_type"].isin([kind, CELL_TYPES[1]])]
            sc.pp.normalize_total(view, target_sum=1e4)
            sc.pp.log1p(view)
        out(f"    the view became a shadow of its own; X is changed in memory (X▲), the file untouched: "
            f"{repr(view).splitlines()[1].strip()}")
        figure = sc.pl.violin(view, gene, groupby="cell_type", show=False)
        figure.figure.savefig(png, dpi=80)
    out(f"    plot saved: {png}")
    return True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``shadows demo`` options."""
    parser.add_argument("--folder", type=Path, default=None,
                        help="where to build the dataset (default: a temporary folder, removed afterwards)")
    parser.add_argument("--cells", type=int, default=100_000, help="number of cells (default 100,000)")
    parser.add_argument("--genes", type=int, default=10_000, help="number of genes (default 10,000)")
    parser.add_argument("--density", type=float, default=0.03,
                        help="fraction of non-zero counts (default 0.03: a 350 MB file for the defaults, "
                             "written twice: the dataset and anndata's copy)")


def main(args: argparse.Namespace) -> int:
    """Run the demo with parsed arguments.

    With ``--folder`` everything is kept there. Without it the demo works in a new temporary folder and
    removes what it wrote there but the plot, which it keeps in that folder (the one it reports), never
    in the current directory.

    Parameters
    ----------
    args
        The options of :func:`add_arguments`.

    Returns
    -------
    The exit status (0).
    """
    if args.folder is not None:
        folder = args.folder.resolve()
        folder.mkdir(parents=True, exist_ok=True)
        run(folder, args.cells, args.genes, args.density)
        out(f"\nKept the dataset, the anndata copy and the plot in {folder}")
        return 0
    folder = Path(tempfile.mkdtemp(prefix="shadows-demo-"))
    plot = folder / "violin.png"
    plotted = False
    try:
        plotted = run(folder, args.cells, args.genes, args.density, plot)
    finally:
        kept = plot if plotted and plot.exists() else None
        _remove_all_but(folder, kept)
        if kept is not None:
            out(f"\nKept the plot: {kept}")
            out(f"Removed everything else the demo wrote in {folder} (keep it all with --folder)")
        else:
            out(f"Removed {folder} and everything the demo wrote there (keep it all with --folder)")
    return 0


def _remove_all_but(folder: Path, kept: Path | None) -> None:
    """Remove ``folder``, or, when ``kept`` (a file in it) is given, everything in it but ``kept``."""
    if kept is None:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for entry in folder.iterdir():
        if entry == kept:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
