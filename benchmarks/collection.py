"""Many files as one AnnData (issue 25): shadows.concat beside anndata's read_lazy + concat.

Generates ``N`` h5ad files of 1,000 cells, each with its own 2,000-gene panel out of 3,000 genes (in its
own order), obs with three categorical and two numeric columns, CSR float32 X; then times, each in one
run on the same files:

- ``shadows.concat`` opening the files the first time (metadata of every file, in threads; catalog written)
  and again from the catalog (no file touched);
- ``atlas[::1000].X`` (0.1 % of the rows, spread over all files) into memory, then again with the sources
  open (warm);
- an obs filter on one categorical column (``obs_vector``, one column read from each file), twice;
- anndata: ``read_lazy`` of every file + ``anndata.concat(join="outer")``, then the same rows into memory.

Usage: ``python benchmarks/collection.py --n-files 50 [--dir /tmp/atlas-bench]``. The files are
written once per directory (kept for later runs); large N takes long and much disk: run it on a quiet
machine only.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

N_CELLS = 1_000
N_PANEL = 2_000
N_GENES = 3_000


def generate(root: Path, n_files: int, seed: int = 0) -> list[Path]:
    """The benchmark files (written only when missing), one AnnData in memory at a time."""
    root.mkdir(parents=True, exist_ok=True)
    genes = np.array([f"gene{i:05d}" for i in range(N_GENES)], dtype=object)
    paths = []
    for i in range(n_files):
        path = root / f"sample{i:05d}.h5ad"
        paths.append(path)
        if path.exists():
            continue
        rng = np.random.default_rng(seed + i)
        panel = rng.permutation(rng.choice(N_GENES, N_PANEL, replace=False))
        X = sp.random(N_CELLS, N_PANEL, density=0.05, format="csr", dtype=np.float32, random_state=seed + i)
        obs = pd.DataFrame({
            "cell_type": pd.Categorical(rng.choice([f"type{k}" for k in rng.choice(30, 10)], N_CELLS)),
            "tissue": pd.Categorical(rng.choice(["lung", "liver", "blood", "brain"], N_CELLS)),
            "donor": pd.Categorical(np.full(N_CELLS, f"donor{i % 97}")),
            "n_counts": rng.gamma(2.0, 1000.0, N_CELLS).astype(np.float32),
            "n_genes": rng.integers(200, 2000, N_CELLS),
        }, index=[f"s{i}-c{k}" for k in range(N_CELLS)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ad.AnnData(X, obs=obs, var=pd.DataFrame(index=genes[panel])).write_h5ad(path)
    return paths


def timed(label: str, fn, results: dict[str, tuple[float, float]]):
    """Run ``fn``, recording seconds and how much the process's resident memory grew (MB)."""
    import psutil

    process = psutil.Process()
    before = process.memory_info().rss
    start = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - start
    grown = (process.memory_info().rss - before) / 2**20
    results[label] = (seconds, grown)
    print(f"{label:<48} {seconds:8.3f} s {grown:+9.1f} MB RSS", flush=True)
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-files", type=int, default=50)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/shadows-atlas-bench"))
    parser.add_argument("--skip-anndata", action="store_true")
    args = parser.parse_args()

    import shadows

    root = args.dir / f"n{args.n_files}"
    paths = generate(root, args.n_files)
    catalog = root / "atlas.catalog.json"
    catalog.unlink(missing_ok=True)
    results: dict[str, tuple[float, float]] = {}
    print(f"{args.n_files} files × {N_CELLS} cells, panels of {N_PANEL} of {N_GENES} genes")
    atlas = timed("shadows.concat, first open (catalog written)",
                  lambda: shadows.concat(paths, join="outer", catalog=catalog), results)
    atlas = timed("shadows.concat, from the catalog",
                  lambda: shadows.concat(paths, join="outer", catalog=catalog), results)
    x = timed("shadows: atlas[::1000].X into memory", lambda: atlas[::1000].X, results)
    timed("shadows: again (the sources open: warm)", lambda: atlas[::1000].X, results)
    timed("shadows: obs filter (tissue == 'lung')",
          lambda: np.asarray(atlas.obs_vector("tissue")) == "lung", results)
    timed("shadows: obs filter again (warm)", lambda: np.asarray(atlas.obs_vector("tissue")) == "lung", results)
    print(f"catalog: {catalog.stat().st_size / 1e6:.2f} MB; result {x.shape}, nnz {x.nnz}")
    if args.skip_anndata:
        return
    from anndata.experimental import read_lazy

    def lazy_concat():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ad.concat([read_lazy(p) for p in paths], join="outer")

    lazy = timed("anndata: read_lazy + concat(join='outer')", lazy_concat, results)

    def lazy_rows():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = lazy[::1000].X
            return value.compute() if hasattr(value, "compute") else value

    theirs = timed("anndata: [::1000].X into memory", lazy_rows, results)
    ours = x.toarray() if sp.issparse(x) else x
    theirs = theirs.toarray() if sp.issparse(theirs) else np.asarray(theirs)
    assert np.array_equal(np.nan_to_num(ours), np.nan_to_num(theirs)), "results differ"
    print("results equal")


if __name__ == "__main__":
    main()
