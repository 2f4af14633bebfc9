"""In-place scanpy steps on a shadow whose X is already in memory, beside an in-memory AnnData.

Usage: ``python benchmarks/inplace.py [--cells 20000] [--genes 15000] [--density 0.05] [--repeats 3]``

Writes a counts file (CSR float32, Poisson counts, a string obs column) under ``benchmarks/data/`` once.
Each repeat runs, in a fresh process per tool, the steps below one after the other on the same object:
``anndata.read_h5ad`` for anndata; for the shadow, ``shadows.read_h5ad`` then ``adata.X``, ``obs``,
``var`` and the keys of ``uns`` read (held: what ``anndata.read_h5ad`` reads before its clock starts), as
the goal is about a shadow whose X is in memory. Every process first runs each step on a tiny AnnData,
so numba's compilation is not counted. Prints the median seconds per step and tool and the ratio shadow / anndata
(goal ≤ 1.2× per step).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

STEPS = ["filter_cells", "filter_genes", "calculate_qc_metrics", "normalize_total", "log1p",
         "highly_variable_genes", "pca"]

WORKER = r"""
import json, sys, time, warnings
import numpy as np, scipy.sparse as sp, anndata as ad, scanpy as sc
warnings.simplefilter("ignore")
tool, path = sys.argv[1], sys.argv[2]
STEPS = {
    "filter_cells": lambda a: sc.pp.filter_cells(a, min_genes=5),
    "filter_genes": lambda a: sc.pp.filter_genes(a, min_cells=3),
    "calculate_qc_metrics": lambda a: sc.pp.calculate_qc_metrics(a, inplace=True),
    "normalize_total": lambda a: sc.pp.normalize_total(a),
    "log1p": lambda a: sc.pp.log1p(a),
    "highly_variable_genes": lambda a: sc.pp.highly_variable_genes(a, n_top_genes=1000),
    "pca": lambda a: sc.pp.pca(a, n_comps=20),
}
tiny = ad.AnnData(sp.random(300, 1200, density=0.2, format="csr", dtype=np.float32, random_state=0) * 10)
for step in STEPS.values():  # numba compiles here, not in the measured steps
    step(tiny)
if tool == "anndata":
    adata = ad.read_h5ad(path)
else:
    import shadows
    adata = shadows.read_h5ad(path)
    _ = adata.X, adata.obs, adata.var, list(adata.uns)  # in memory (uns: its keys), as anndata's
    del _  # (a reference kept to the first X slowed the later steps of either tool by up to 2.5x)
times = {}
for name, step in STEPS.items():
    start = time.perf_counter()
    step(adata)
    times[name] = time.perf_counter() - start
print(json.dumps(times))
"""


def ensure_counts(cells: int, genes: int, density: float) -> Path:
    """The counts file, written once per size."""
    path = HERE / "data" / f"inplace_{cells}x{genes}_{density}.h5ad"
    if path.exists():
        return path
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    path.parent.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    x = sp.random(cells, genes, density=density, format="csr", dtype=np.float32, random_state=0)
    x.data = rng.poisson(3, x.nnz).astype(np.float32) + 1
    obs = pd.DataFrame({"donor": [f"d{i % 5}" for i in range(cells)]}, index=[f"c{i}" for i in range(cells)])
    ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(genes)])).write_h5ad(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=20_000)
    parser.add_argument("--genes", type=int, default=15_000)
    parser.add_argument("--density", type=float, default=0.05)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    path = ensure_counts(args.cells, args.genes, args.density)
    runs: dict[str, list[dict[str, float]]] = {"anndata": [], "shadows": []}
    for _ in range(args.repeats):
        for tool in runs:  # alternated, so a busy moment of the machine falls on both
            out = subprocess.run([sys.executable, "-c", WORKER, tool, str(path)], check=True, capture_output=True,
                                 text=True).stdout
            runs[tool].append(json.loads(out.strip().splitlines()[-1]))
    print(f"{args.cells} × {args.genes}, density {args.density}, median of {args.repeats} (seconds)\n")
    print("| step | anndata | shadow (X in memory) | ratio |")
    print("|---|---|---|---|")
    for step in STEPS:
        memory = statistics.median(run[step] for run in runs["anndata"])
        shadow = statistics.median(run[step] for run in runs["shadows"])
        print(f"| {step} | {memory:.3f} | {shadow:.3f} | {shadow / memory:.2f}× |")


if __name__ == "__main__":
    main()
