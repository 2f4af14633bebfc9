"""Benchmarks: shadows side by side with anndata's read_lazy, backed mode and a full read.

Usage: ``python benchmarks/run.py [--cells N] [--genes N] [--nnz-per-cell N] [--workloads a,b] [--streamed]``

Generates the benchmark file (h5ad and Zarr) under ``benchmarks/data/`` once, then runs every workload
for every tool in a fresh process (warm page cache: each file is read once before measuring) and prints
seconds, peak memory over imports, and the ratio to shadows' figure. The ``flat`` check re-runs open +
repr on a file with 10× the cells.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from generate import ensure, ensure_sharded  # noqa: E402

TOOLS = {
    "open_repr": ["shadows", "read_lazy", "backed", "full"],
    "rows_1pct": ["shadows", "read_lazy", "backed", "full"],
    "gene_column": ["shadows", "read_lazy", "backed"],
    "gene_sums": ["shadows", "raw_read", "read_lazy", "backed"],
    "write_layer": ["shadows", "full"],
    "export_view": ["shadows", "raw_read", "read_lazy", "backed", "full"],
    "export_view_zarr": ["shadows", "read_lazy", "full"],
    "pipeline": ["shadows", "full"],
    "minibatch": ["shadows", "backed", "annbatch"],  # annbatch where installed (Python >= 3.12)
    "minibatch_blocks": ["shadows", "backed"],
    "cluster_write": ["shadows"],
}


#: The tools run on a file larger than memory (``--streamed``): no full read, and none that takes hours.
STREAMED_TOOLS = {
    "open_repr": ["shadows", "read_lazy", "backed"],
    "gene_sums": ["shadows", "raw_read"],
    "rows_1pct": ["shadows", "backed"],
    "gene_column": ["shadows"],
    "export_view": ["shadows", "raw_read"],
    "export_view_zarr": ["shadows"],
    "pipeline": ["shadows"],
}


def drop_page_cache() -> bool:
    """Empty the kernel's page cache (needs root), so a run on a file larger than memory starts cold
    whatever ran before it; whether it could."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
    except OSError:
        return False
    return True


#: Tools also run with zarrs hidden on Zarr stores where zarrs is installed (issue 16.3: figures with and
#: without it): shadows and anndata both use it when it is there.
ZARRS_TOOLS = ("shadows", "read_lazy", "raw_read")


def zarrs_installed() -> bool:
    from importlib.util import find_spec

    return find_spec("zarrs") is not None


def file_format(path: Path) -> str:
    """How the tables name a file's format: ``h5ad``, ``zarr`` (as anndata 0.12 writes it) or ``zarr v3``
    (sharded, as anndata 0.13 writes it)."""
    if path.suffix == ".h5ad":
        return "h5ad"
    return "zarr v3" if path.name.endswith("_v3.zarr") else "zarr"


def measure(tool: str, workload: str, path: Path, repeats: int, cold: bool = False, zarrs: bool = True) -> dict:
    best = None
    env = None if zarrs else {**os.environ, "BENCH_ZARRS": "off"}
    for _ in range(repeats):
        if cold:
            drop_page_cache()
        out = subprocess.run([sys.executable, str(HERE / "worker.py"), tool, workload, str(path)],
                             capture_output=True, text=True, check=False, env=env)
        if out.returncode != 0:
            return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1][:80]}
        result = json.loads(out.stdout.strip().splitlines()[-1])
        if best is None or result["seconds"] < best["seconds"]:
            best = result
    return best


def agreement(ours: dict, theirs: dict) -> str:
    """Whether two pipeline runs chose the same highly variable genes and PCA variance ratios."""
    same = len(set(ours["hvg"]) & set(theirs["hvg"]))
    ratios = [a / b for a, b in zip(ours["variance_ratio"], theirs["variance_ratio"], strict=True)]
    return (f"{same}/{len(theirs['hvg'])} HVGs shared, PCA variance ratios within "
            f"{max(abs(r - 1) for r in ratios):.1e} (relative)")


def warm(path: Path) -> None:
    """Read every file of the store once so measurements see a warm page cache."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for file in files:
        with open(file, "rb") as handle:
            while handle.read(1 << 24):
                pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--genes", type=int, default=20_000)
    parser.add_argument("--nnz-per-cell", type=int, default=800)
    parser.add_argument("--workloads", default=None, help="comma-separated (default: every one)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per cell of the table (best is kept)")
    parser.add_argument("--data", type=Path, default=HERE / "data")
    parser.add_argument("--no-flat", action="store_true", help="skip the 10× cells open check")
    parser.add_argument("--formats", default=None,
                        help="comma-separated among h5ad, zarr, 'zarr v3' (default: every one generated)")
    parser.add_argument("--no-sharded", action="store_true",
                        help="skip the Zarr v3 sharded store (anndata 0.13's layout) beside the h5ad and Zarr v2")
    parser.add_argument("--streamed", action="store_true",
                        help="a file larger than memory, generated in bounded memory; no page-cache warming, "
                             "no full reads (the tools of STREAMED_TOOLS)")
    args = parser.parse_args()

    tools = STREAMED_TOOLS if args.streamed else TOOLS
    if args.streamed:
        from generate import ensure_streamed

        files = ensure_streamed(args.data, args.cells, args.genes, args.nnz_per_cell)
    else:
        files = ensure(args.data, args.cells, args.genes, args.nnz_per_cell)
        if not args.no_sharded:
            files = (*files, ensure_sharded(args.data, args.cells, args.genes, args.nnz_per_cell))
    if args.formats:
        files = tuple(path for path in files if file_format(path) in args.formats.split(","))
    with_zarrs = zarrs_installed()
    print("zarrs installed: Zarr rows of " + ", ".join(ZARRS_TOOLS) + " also run without it (“, no zarrs”)"
          if with_zarrs else "zarrs not installed")
    print(f"benchmark file: {args.cells} cells × {args.genes} genes, ~{args.nnz_per_cell} non-zeros per cell")
    if args.streamed:
        print("page cache emptied before every run" if drop_page_cache() else
              "page cache NOT emptied (not root): a run may find what the one before it read")
    header = (f"{'workload':<16} {'format':<7} {'tool':<20} {'seconds':>9} {'peak MiB':>9} {'× shadows':>10} "
              f"{'written MiB':>11}")
    print(header)
    print("-" * len(header))
    workloads = args.workloads.split(",") if args.workloads else list(tools)
    for workload in workloads:
        for path in files:
            if not args.streamed:  # a file larger than memory cannot be warmed: every pass reads the disk
                warm(path)
            fmt = file_format(path)
            results = {}
            for tool in tools[workload]:
                if (tool in ("backed", "annbatch") or (tool, workload) == ("raw_read", "export_view")) \
                        and fmt != "h5ad":
                    continue
                results[tool] = measure(tool, workload, path, args.repeats, cold=args.streamed)
                if with_zarrs and fmt != "h5ad" and tool in ZARRS_TOOLS:
                    results[f"{tool}, no zarrs"] = measure(tool, workload, path, args.repeats, cold=args.streamed,
                                                       zarrs=False)
            ref = results.get("shadows", {}).get("seconds")
            for tool, r in results.items():
                if "error" in r:
                    print(f"{workload:<16} {fmt:<7} {tool:<20} {'error: ' + r['error']}")
                    continue
                ratio = f"{r['seconds'] / ref:>9.2f}×" if ref else ""
                written = f"{r['written_mib']:>11.0f}" if r.get("written_mib") else ""
                notes = "".join(f"  {k.replace('_', ' ')}: {r[k]:,.1f}" for k in ("cells_per_second", "received_mib",
                                                                                         "prepared_seconds")
                                if k in r)
                print(f"{workload:<16} {fmt:<7} {tool:<20} {r['seconds']:>9.4f} {r['peak_mib']:>9.1f} {ratio:>10} "
                      f"{written}{notes}".rstrip())
            if "hvg" in results.get("shadows", {}) and "hvg" in results.get("full", {}):
                print(f"{'':<16} {fmt:<7} agreement: {agreement(results['shadows'], results['full'])}")
    if not args.no_flat and not args.streamed and "open_repr" in workloads:
        big = ensure(args.data, args.cells * 10, args.genes, max(args.nnz_per_cell // 100, 1))
        print(f"\nopen + repr as cells grow 10× ({args.cells * 10} cells, fewer non-zeros per cell):")
        for path in big:
            warm(path)
            r = measure("shadows", "open_repr", path, args.repeats)
            fmt = file_format(path)
            print(f"open_repr    {fmt:<6} {'shadows':<10} {r['seconds']:>9.4f} {r['peak_mib']:>9.1f}")


if __name__ == "__main__":
    main()
