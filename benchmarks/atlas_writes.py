"""Writes of an atlas (issue 25, points 5 and 7): export of a view beside anndata's ``concat_on_disk``,
and results written back into the sources by one and by two cluster workers.

On the files of ``benchmarks/collection.py`` (N h5ad files of 1,000 cells, CSR float32 X, 2,000-of-3,000
gene panels), each measurement in a fresh process (its peak RSS is the process's high-water mark):

- **export**: ``atlas[::10].write_h5ad`` and ``.write_zarr`` (10 % of the cells, spread over every file,
  outer join) beside ``anndata.experimental.concat_on_disk(join="outer")`` of the whole set (it takes
  whole files only); each as MB/s of the X bytes it reads, and the disk's sequential read of one large file
  for scale (``--drop-caches`` empties the page cache first: root only);
- **write-back**: ``atlas.write()`` of an obs column, a 50-column obsm entry and a layer (X × 2, lazy:
  ``array_backend="dask"``) into copies of the files, on a ``distributed.LocalCluster`` of 1 and of 2 process workers.

Usage: ``python benchmarks/atlas_writes.py --n-files 200 [--skip-export] [--skip-writeback]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from collection import generate

EXPORT = r"""
import json, resource, sys, time, warnings
warnings.simplefilter("ignore")
from pathlib import Path
what, out, files = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
start = time.perf_counter()
if what == "anndata":
    from anndata.experimental import concat_on_disk
    concat_on_disk(files, out, join="outer")
    read = sum(Path(f).stat().st_size for f in files)
else:
    import shadows
    atlas = shadows.concat(files, join="outer")
    opened, open_peak = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    view = atlas[::10]
    read = sum(s.arrays["X"].nbytes for s in atlas.catalog.sources) / 10  # X's stored bytes, a tenth of them
    (view.write_h5ad if what == "h5ad" else view.write_zarr)(out)
seconds = time.perf_counter() - start
opening = {} if what == "anndata" else {"open_seconds": opened - start, "open_peak_mb": open_peak}
print(json.dumps({"seconds": seconds, "read": read, **opening,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

WRITEBACK = r"""
import json, resource, sys, time, warnings
warnings.simplefilter("ignore")
import numpy as np
workers, files = int(sys.argv[1]), json.loads(sys.argv[2])
import distributed, shadows
atlas = shadows.concat(files, join="outer", array_backend="dask")  # X * 2 stays a graph: each source's rows
rng = np.random.default_rng(0)                                        # are computed by the task writing them
atlas.obs["score"] = rng.normal(size=atlas.n_obs)
atlas.obsm["X_emb"] = rng.normal(size=(atlas.n_obs, 50)).astype(np.float32)
atlas.layers["doubled"] = atlas.X * 2
with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                              dashboard_address=None) as cluster, distributed.Client(cluster):
    start = time.perf_counter()
    atlas.write(overwrite=True)
    seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run(script: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def disk_read_mb_s(path: Path, drop: bool) -> float:
    """Sequential read of one large file (MB/s), cold when the page cache was dropped."""
    if drop:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    start, total = time.perf_counter(), 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(16 * 2**20):
            total += len(chunk)
    return total / 2**20 / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-files", type=int, default=200)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/shadows-atlas-bench"))
    parser.add_argument("--drop-caches", action="store_true")
    parser.add_argument("--skip-export", action="store_true")
    parser.add_argument("--skip-writeback", action="store_true")
    args = parser.parse_args()
    root = args.dir / f"n{args.n_files}"
    paths = [str(p) for p in generate(root, args.n_files)]
    out = args.dir / "out"
    print(f"{args.n_files} files × 1,000 cells, {sum(os.path.getsize(p) for p in paths) / 1e6:.0f} MB", flush=True)
    if not args.skip_export:
        big = out / "big.bin"
        out.mkdir(parents=True, exist_ok=True)
        with open(big, "wb") as f:
            for _ in range(64):
                f.write(os.urandom(16 * 2**20))
        print(f"disk: sequential read of 1 GiB {disk_read_mb_s(big, args.drop_caches):8.0f} MB/s "
              f"({'cold' if args.drop_caches else 'page cache'})", flush=True)
        big.unlink()
        for what, target in (("h5ad", out / "view.h5ad"), ("zarr", out / "view.zarr"), ("anndata", out / "all.h5ad")):
            shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
            found = run(EXPORT, what, str(target), json.dumps(paths))
            label = {"h5ad": "shadows atlas[::10].write_h5ad", "zarr": "shadows atlas[::10].write_zarr",
                     "anndata": "anndata concat_on_disk (every cell)"}[what]
            rate = found["read"] / 2**20 / found["seconds"]
            opening = "" if "open_seconds" not in found else \
                f"  (of which opening the atlas {found['open_seconds']:.2f} s, peak {found['open_peak_mb']:.0f} MB)"
            print(f"{label:<40} {found['seconds']:7.2f} s  {rate:7.1f} MB/s of X read  "
                  f"peak {found['peak_mb']:6.0f} MB{opening}", flush=True)
    if not args.skip_writeback:
        copies = args.dir / f"writeback{args.n_files}"
        times = {}
        for workers in (1, 2):
            shutil.rmtree(copies, ignore_errors=True)
            shutil.copytree(root, copies, ignore=shutil.ignore_patterns("*.json"))
            files = sorted(str(p) for p in copies.glob("*.h5ad"))
            found = run(WRITEBACK, str(workers), json.dumps(files))
            times[workers] = found["seconds"]
            print(f"atlas.write() on {workers} worker(s){'':<18} {found['seconds']:7.2f} s  "
                  f"client peak {found['peak_mb']:6.0f} MB", flush=True)
        print(f"speed-up with 2 workers: {times[1] / times[2]:.2f}×")
        shutil.rmtree(copies, ignore_errors=True)


if __name__ == "__main__":
    main()
