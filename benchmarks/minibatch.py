"""Training minibatches across many files (issue 25, point 6): cells per second into a torch DataLoader.

On the files of ``benchmarks/collection.py`` (N h5ad files of 1,000 cells, CSR float32 X, each its own
2,000-of-3,000-gene panel; the atlas joined outer, so each batch is 256 × 3,000 dense float32), one run:

- shadows, :class:`shadows.minibatch.Minibatches` with :class:`~shadows.minibatch.MinibatchSampler`:
  256 cells drawn uniformly from all (``"cells"``), and block-shuffled (``"blocks"``: runs of 64, and runs
  of 16 mixed over 4 batches), from the atlas and from a view of it (every other cell);
- scDataset (``BlockShuffling`` of 64, fetch factor 16) over the same atlas, where it is installed;
- with ``--with-anndata``, scDataset with the same options over anndata's ``read_lazy`` + ``concat``;
- annbatch needs its own preshuffled copy of the data; it is timed only where installed (its preparation
  apart).

Each row: ``DataLoader(num_workers=2, batch_size=None)``, forked workers, the first batches (the workers'
start) left out of the timing; cells per second over the batches after. Files opened from the page cache.

Usage: ``python benchmarks/minibatch.py --n-files 1000 [--batches 60]`` (the files are written once by
``benchmarks/collection.py``'s generator and kept).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from collection import generate

BATCH = 256
WORKERS = 2


def rate(loader, batches: int) -> tuple[float, int]:
    """Cells per second over ``batches`` batches of ``loader``, after the first ``WORKERS * 2`` (start-up)."""
    cells, started, it = 0, None, iter(loader)
    for i, batch in enumerate(it):
        if i == WORKERS * 2:
            started = time.perf_counter()
        elif started is not None:
            cells += len(batch["X"]) if isinstance(batch, dict) else len(batch)
        if i >= batches + WORKERS * 2:
            break
    return cells / (time.perf_counter() - started), cells


def _anndata_fetch(data, idx):
    """What scDataset fetches from anndata's lazy concat: the cells' X, dense float32."""
    import numpy as np
    import scipy.sparse as sp

    x = data[idx].X
    x = x.compute() if hasattr(x, "compute") else x
    return (x.toarray() if sp.issparse(x) else np.asarray(x)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-files", type=int, default=50)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/shadows-atlas-bench"))
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--with-anndata", action="store_true",
                        help="also scDataset over anndata's read_lazy + concat (its open takes minutes)")
    args = parser.parse_args()

    import torch
    from torch.utils.data import DataLoader

    import shadows
    from shadows.minibatch import Minibatches, MinibatchSampler

    torch.set_num_threads(1)
    root = args.dir / f"n{args.n_files}"
    paths = generate(root, args.n_files)
    atlas = shadows.concat(paths, join="outer", catalog=root / "atlas.catalog.json")
    view = atlas[::2]
    print(f"{args.n_files} files, {atlas.n_obs} cells × {atlas.n_vars} genes; batches of {BATCH}, "
          f"{WORKERS} workers, {args.batches} batches timed", flush=True)
    rows = [
        ("shadows, atlas, random cells", atlas, {"shuffle": "cells"}),
        ("shadows, atlas view, random cells", view, {"shuffle": "cells"}),
        ("shadows, atlas, blocks of 64", atlas, {"shuffle": "blocks", "block_size": 64}),
        ("shadows, atlas view, blocks of 64", view, {"shuffle": "blocks", "block_size": 64}),
        ("shadows, atlas, blocks of 16 mixed over 4 batches", atlas, {"shuffle": "blocks", "block_size": 16,
                                                                     "fetch": 4}),
    ]
    for label, subject, options in rows:
        sampler = MinibatchSampler(subject.n_obs, BATCH, seed=0, **options)
        loader = DataLoader(Minibatches(subject), sampler=sampler, batch_size=None, num_workers=WORKERS,
                            multiprocessing_context="fork", prefetch_factor=4)
        speed, cells = rate(loader, args.batches)
        print(f"{label:<52} {speed:10,.0f} cells/s  ({cells} cells)", flush=True)

    if importlib.util.find_spec("scdataset") is not None:
        from scdataset import BlockShuffling, scDataset

        dataset = scDataset(atlas, BlockShuffling(block_size=64), batch_size=BATCH, fetch_factor=16,
                            fetch_callback=lambda data, idx: Minibatches(data)[idx]["X"])
        loader = DataLoader(dataset, batch_size=None, num_workers=WORKERS, multiprocessing_context="fork",
                            prefetch_factor=4)
        speed, cells = rate(loader, args.batches)
        print(f"{'scDataset over the atlas, blocks of 64, fetch 16':<52} {speed:10,.0f} cells/s  ({cells} cells)")
        if args.with_anndata:  # the same loader over anndata's own lazy concat of the same files
            import anndata as ad
            from anndata.experimental import read_lazy

            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                lazy = ad.concat([read_lazy(p) for p in paths], join="outer")
            print(f"anndata read_lazy + concat(join='outer'): {time.perf_counter() - start:.1f} s", flush=True)
            dataset = scDataset(lazy, BlockShuffling(block_size=64), batch_size=BATCH, fetch_factor=16,
                                fetch_callback=_anndata_fetch)
            loader = DataLoader(dataset, batch_size=None, num_workers=WORKERS, multiprocessing_context="fork",
                                prefetch_factor=4)
            speed, cells = rate(loader, args.batches)
            print(f"{'scDataset over anndata lazy concat, same options':<52} {speed:10,.0f} cells/s  ({cells} cells)")
    else:
        print("scDataset: not installed (pip install scdataset)")
    if importlib.util.find_spec("annbatch") is None:
        print("annbatch: not installed (not on this machine's package index): not measured")


if __name__ == "__main__":
    main()
