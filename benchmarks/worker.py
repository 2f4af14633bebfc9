"""Run one workload with one tool in this (fresh) process; print seconds and memory as JSON.

``peak_mib`` is the highest resident set during the workload minus the resident set after imports
(``base_mib``). The highest resident set is the kernel's own high-water mark (``VmHWM``), reset before the
workload through ``/proc/self/clear_refs``: exact, and without a thread that competes with the workload
for the GIL and the cores. Where the reset is refused, a thread samples /proc every millisecond instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import threading
import time
import warnings
from pathlib import Path

warnings.simplefilter("ignore")
if os.environ.get("BENCH_ZARRS") == "off":
    # as if zarrs were not installed: anndata and shadows look for it with find_spec (bound at their import,
    # so patched before it); zarr's own registry still loads it, unused
    import importlib.util

    _find_spec = importlib.util.find_spec
    importlib.util.find_spec = lambda name, *args: None if name == "zarrs" else _find_spec(name, *args)

import anndata as ad  # noqa: E402
import dask  # noqa: E402
import dask.array  # noqa: E402
import numpy as np  # noqa: E402
import scipy.sparse  # noqa: E402, F401

with contextlib.suppress(ImportError):  # dask imports distributed on its first compute: count it as an import
    import distributed  # noqa: F401

import shadows  # noqa: E402
from shadows import AnnDataShadow  # noqa: E402

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


def high_water_mark() -> int:
    """The kernel's highest resident set of this process since its last reset (``VmHWM``), in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


def reset_high_water_mark() -> bool:
    """Set ``VmHWM`` to the current resident set (Linux ≥ 4.0); False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        high_water_mark()
    except OSError:
        return False
    return True


class PeakMemory:
    """Highest RSS while the block runs: the kernel's high-water mark, or a 1 ms sampling thread."""

    def __enter__(self):
        self.peak = rss()
        self.method = "VmHWM" if reset_high_water_mark() else "sampled"
        if self.method == "sampled":
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss())
            time.sleep(0.001)

    def __exit__(self, *exc):
        if self.method == "VmHWM":
            self.peak = max(self.peak, high_water_mark())
        else:
            self._stop.set()
            self._thread.join()
        self.peak = max(self.peak, rss())


def open_any(tool: str, path: str):
    if tool == "shadows":
        return AnnDataShadow(path)
    if tool == "read_lazy":
        return ad.experimental.read_lazy(path)
    if tool == "backed":
        return ad.read_h5ad(path, backed="r")
    if tool == "full":
        return ad.read_h5ad(path) if path.endswith(".h5ad") else ad.read_zarr(path)
    raise ValueError(tool)


def open_repr(tool: str, path: str):
    return repr(open_any(tool, path))


def rows_1pct(tool: str, path: str):
    """1 % random rows of X, materialized in memory (rows drawn before timing, see main)."""
    rows = ROWS
    if tool == "shadows":
        return AnnDataShadow(path)[rows].X
    if tool == "read_lazy":
        return ad.experimental.read_lazy(path)[rows].X.compute()
    if tool == "backed":
        return ad.read_h5ad(path, backed="r")[rows].X
    return open_any("full", path)[rows].X.copy()


def gene_column(tool: str, path: str):
    """One gene (column) of CSR X, as a dense vector."""
    adata = open_any(tool, path)
    j = adata.n_vars // 2
    if tool == "shadows":
        return adata.obs_vector(adata.var_names[j])
    x = adata.X[:, j]
    x = x.compute() if hasattr(x, "compute") else x
    return x.toarray() if hasattr(x, "toarray") else np.asarray(x)


def gene_sums(tool: str, path: str):
    """Per-gene sums over all of X."""
    if tool == "shadows":
        return AnnDataShadow(path, array_backend="dask").X.sum(axis=0).compute()
    if tool == "read_lazy":
        x = ad.experimental.read_lazy(path).X  # scipy chunks: dask's sum needs fast-array-utils here
        from fast_array_utils import stats

        return stats.sum(x, axis=0).compute()
    if tool == "backed":
        adata = ad.read_h5ad(path, backed="r")
        total = np.zeros(adata.n_vars)
        for chunk, _, _ in adata.chunked_X(10_000):
            total += np.asarray(chunk.sum(axis=0)).ravel()
        return total
    if tool == "full":
        return np.asarray(open_any("full", path).X.sum(axis=0)).ravel()
    if tool == "raw_read":
        return raw_sequential_sums(path)
    raise ValueError(tool)


def zarrs_used() -> bool:
    """Whether this run may use zarrs' codec pipeline (installed, and not hidden by ``BENCH_ZARRS=off``)."""
    import importlib.util

    return importlib.util.find_spec("zarrs") is not None


def raw_sequential_sums(path: str, block: int = 4_000_000):
    """The floor: read X's data/indices sequentially into reused buffers and accumulate per gene (Zarr:
    zarr decodes each block's chunks, through zarrs where :func:`zarrs_used`)."""
    if path.endswith(".h5ad"):
        import h5py

        group = h5py.File(path, "r")["X"]
    else:
        import zarr

        if zarrs_used():
            zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"})
        group = zarr.open_group(path, mode="r")["X"]
    data, indices = group["data"], group["indices"]
    n_vars = int(group.attrs["shape"][1])
    total = np.zeros(n_vars)
    nnz = data.shape[0]
    data_buf = np.empty(block, dtype=data.dtype)
    index_buf = np.empty(block, dtype=indices.dtype)
    _ = group["indptr"][...]
    for start in range(0, nnz, block):
        stop = min(start + block, nnz)
        n = stop - start
        if hasattr(data, "read_direct"):
            data.read_direct(data_buf, np.s_[start:stop], np.s_[:n])
            indices.read_direct(index_buf, np.s_[start:stop], np.s_[:n])
            d, i = data_buf[:n], index_buf[:n]
        else:
            d, i = data[start:stop], indices[start:stop]
        total += np.bincount(i, weights=d, minlength=n_vars)
    return total


def write_layer(tool: str, path: str):
    """log1p(X) (sparse, 80M non-zeros: 320 MB of values, 640 MB with indices) computed lazily from X and
    written as a new layer of a copy of the file (the copy is made before timing, see main).
    """
    target = str(SCRATCH)
    if tool == "shadows":
        shadow = AnnDataShadow(target, mode="r+", array_backend="dask")
        shadow.layers["log1p"] = np.log1p(shadow.X)
        shadow.write()
        return None
    if tool == "full":  # anndata: read everything, compute in memory, write the whole file anew
        adata = open_any("full", target)
        adata.layers["log1p"] = adata.X.log1p()
        return adata.write_h5ad(target) if target.endswith(".h5ad") else adata.write_zarr(target)
    raise ValueError(tool)


def export_view(tool: str, path: str):
    """A 10 % random-row view written to a new h5ad file."""
    out = str(SCRATCH.with_suffix(".h5ad"))
    if tool == "shadows":
        return AnnDataShadow(path)[ROWS10].write_h5ad(out)
    if tool == "read_lazy":
        return ad.experimental.read_lazy(path)[ROWS10].write_h5ad(out)
    if tool == "backed":
        return ad.read_h5ad(path, backed="r")[ROWS10].write_h5ad(out)
    if tool == "raw_read":
        return raw_selected_rows(path, ROWS10)
    return open_any("full", path)[ROWS10].write_h5ad(out)


def raw_selected_rows(path: str, rows: np.ndarray, block: int = 20_000) -> int:
    """The floor of reading a row selection of CSR X in an h5ad: the selected rows' bytes of X/data and
    X/indices, read in file order as the disk gives them (one ``pread`` per row, at the offsets HDF5
    reports), ``block`` rows at a time into reused buffers. Returns the values read.
    """
    import h5py

    from shadows.backends import hdf5_raw

    with h5py.File(path, "r") as file:
        indptr = file["X/indptr"][...]  # 8 bytes a cell: h5py's reads of scattered pointers are slow
        data, indices = file["X/data"], file["X/indices"]
        layouts = hdf5_raw.layout(data), hdf5_raw.layout(indices)
        if None in layouts:
            raise ValueError("X/data or X/indices is compressed: no raw read of its bytes")
        total, buffers = 0, {}
        for first in range(0, rows.size, block):
            part = rows[first : first + block]
            lo, hi = indptr[part], indptr[part + 1]
            count = int((hi - lo).sum())
            for layout, name in zip(layouts, ("data", "indices"), strict=True):
                buffer = buffers.get(name)
                if buffer is None or buffer.size < count:
                    buffer = buffers[name] = np.empty(count * 2, dtype=file["X"][name].dtype)
                hdf5_raw.read_ranges(layout, lo, hi - lo, buffer[:count])
            total += count
    return total


def export_view_zarr(tool: str, path: str):
    """A 10 % random-row view written to a new Zarr store."""
    out = str(SCRATCH.with_suffix(".zarr"))
    if tool == "shadows":
        return AnnDataShadow(path, array_backend="dask")[ROWS10].write_zarr(out)
    if tool == "read_lazy":
        return ad.experimental.read_lazy(path)[ROWS10].write_zarr(out)
    return open_any("full", path)[ROWS10].write_zarr(out)


def pipeline(tool: str, path: str):
    """scanpy from counts: normalize_total → log1p → highly_variable_genes → pca (of the HVGs), in place;
    shadows with the dask backend, anndata fully read. Writes the HVG mask and PCA variance ratios next
    to the file (outside the timing: see main) so run.py can check that both agree.
    """
    import scanpy as sc

    adata = AnnDataShadow(path, array_backend="dask") if tool == "shadows" else open_any("full", path)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    sc.pp.highly_variable_genes(adata, n_top_genes=2000)
    sc.pp.pca(adata, n_comps=30, mask_var="highly_variable")
    RESULT.update(hvg=np.asarray(adata.var["highly_variable"]),
                  variance_ratio=np.asarray(adata.uns["pca"]["variance_ratio"]))


#: Minibatches drawn for the minibatch workloads (before timing, see main): 256 cells each.
BATCH, N_BATCHES = 256, 100


def _batches(n_obs: int, shuffled_blocks: bool) -> list[np.ndarray]:
    """``N_BATCHES`` batches of ``BATCH`` cells: random positions, or 16 random runs of 16 neighbours
    (block-shuffled, what loaders for on-disk data use to read runs instead of single rows).
    """
    rng = np.random.default_rng(2)
    if not shuffled_blocks:
        return [np.sort(rng.choice(n_obs, BATCH, replace=False)) for _ in range(N_BATCHES)]
    starts = [rng.choice(n_obs // 16, BATCH // 16, replace=False) for _ in range(N_BATCHES)]
    return [np.sort((s[:, None] * 16 + np.arange(16)).ravel()) for s in starts]


def _minibatches(tool: str, path: str, shuffled_blocks: bool):
    """Dense float32 minibatches of X; cells per second is ``N_BATCHES * BATCH / seconds``."""
    batches = BATCHES_BLOCKS if shuffled_blocks else BATCHES
    if tool == "shadows":
        adata = AnnDataShadow(path)
        for rows in batches:
            adata[rows].X.toarray().astype(np.float32, copy=False)
    elif tool == "backed":
        adata = ad.read_h5ad(path, backed="r")
        for rows in batches:
            adata.X[rows].toarray().astype(np.float32, copy=False)
    elif tool == "annbatch":
        # its own store, prepared (shuffled) before timing: random batches are runs of that store's rows
        from annbatch import Loader

        loader = Loader(batch_size=BATCH, shuffle=True, rng=np.random.default_rng(2)).use_collection(ANNBATCH)
        done = 0
        for _, batch in zip(range(len(batches)), loader, strict=False):
            batch["X"].toarray().astype(np.float32, copy=False)
            done += 1
        if done != len(batches):
            raise ValueError(f"annbatch gave {done} batches of {BATCH} cells, not {len(batches)}: a larger file")
    else:
        raise ValueError(tool)
    RESULT.update(cells_per_second=None)


def prepare_annbatch(path: str):
    """annbatch's collection of the file (a shuffled Zarr store of its own) beside the benchmark file,
    made once; returns it and the seconds its preparation took (recorded when it was made).
    """
    import zarr
    from annbatch import DatasetCollection

    zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"})  # what annbatch asks for locally
    where = Path(path).parent / f"annbatch_{Path(path).stem}.zarr"
    record = where.with_suffix(".json")
    if not record.exists():
        shutil.rmtree(where, ignore_errors=True)
        start = time.perf_counter()
        DatasetCollection(where).add_adatas([path], shuffle=True)
        record.write_text(json.dumps({"prepared_seconds": time.perf_counter() - start}))
    return DatasetCollection(where, mode="r"), json.loads(record.read_text())["prepared_seconds"]


def minibatch(tool: str, path: str):
    """100 minibatches of 256 random cells, materialized as dense float32."""
    _minibatches(tool, path, shuffled_blocks=False)


def minibatch_blocks(tool: str, path: str):
    """The same with block-shuffled batches (16 runs of 16 neighbouring cells)."""
    _minibatches(tool, path, shuffled_blocks=True)


def cluster_write(tool: str, path: str):
    """log1p(X) written as a new layer of a Zarr store by a LocalCluster's 2 process workers (a copy of
    the Zarr file; the h5ad is exported to Zarr whole). Measured in the client: its peak memory and the
    bytes of results it received from the cluster.
    """
    import distributed

    received = [0]
    result = distributed.Future.result

    def counting(self, *args, **kwargs):
        value = result(self, *args, **kwargs)
        received[0] += int(getattr(value, "nbytes", 0) or 0)
        return value

    distributed.Future.result = counting
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, distributed.Client(cluster):
        if path.endswith(".h5ad"):
            lazy = AnnDataShadow(path, array_backend="dask")
            lazy.layers["log1p"] = np.log1p(lazy.X)
            lazy.write_zarr(str(SCRATCH.with_suffix(".zarr")))
        else:
            lazy = AnnDataShadow(str(SCRATCH), mode="r+", array_backend="dask")
            lazy.layers["log1p"] = np.log1p(lazy.X)
            lazy.write()
        lazy.close()
    RESULT.update(received_mib=received[0] / 2**20)


RESULT: dict = {}
BATCHES: list = []
BATCHES_BLOCKS: list = []
ROWS = np.empty(0, dtype=np.int64)
ROWS10 = np.empty(0, dtype=np.int64)
SCRATCH = Path()
ANNBATCH = None  # annbatch's collection of the file (the annbatch tool)
WORKLOADS = {"open_repr": open_repr, "rows_1pct": rows_1pct, "gene_column": gene_column, "gene_sums": gene_sums,
             "write_layer": write_layer, "export_view": export_view, "export_view_zarr": export_view_zarr,
             "pipeline": pipeline, "minibatch": minibatch,
             "minibatch_blocks": minibatch_blocks, "cluster_write": cluster_write}


def prepare(workload: str, path: str) -> None:
    """Setup outside the measurement: a private copy of the file for write workloads."""
    global SCRATCH
    scratch_dir = Path(path).parent / "scratch"
    scratch_dir.mkdir(exist_ok=True)
    SCRATCH = scratch_dir / Path(path).name
    for old in (SCRATCH, SCRATCH.with_suffix(".h5ad"), SCRATCH.with_suffix(".zarr")):
        if old.is_dir():
            shutil.rmtree(old)
        elif old.exists():
            old.unlink()
    if workload == "write_layer" or (workload == "cluster_write" and Path(path).is_dir()):
        if Path(path).is_dir():
            shutil.copytree(path, SCRATCH)
        else:
            shutil.copy(path, SCRATCH)


def written_mib() -> float:
    """Size on disk of what a write workload produced."""
    for out in (SCRATCH.with_suffix(".h5ad"), SCRATCH.with_suffix(".zarr"), SCRATCH):
        if out.is_file():
            return out.stat().st_size / 2**20
        if out.is_dir():
            return sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    return 0.0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("tool")
    parser.add_argument("workload")
    parser.add_argument("path")
    args = parser.parse_args()
    dask.config.set(scheduler="threads")
    global ROWS, ROWS10, BATCHES, BATCHES_BLOCKS
    n_obs = AnnDataShadow(args.path).n_obs  # setup, outside the measurement
    ROWS = np.sort(np.random.default_rng(0).choice(n_obs, n_obs // 100, replace=False))
    ROWS10 = np.sort(np.random.default_rng(1).choice(n_obs, n_obs // 10, replace=False))
    BATCHES, BATCHES_BLOCKS = _batches(n_obs, False), _batches(n_obs, True)
    prepare(args.workload, args.path)
    global ANNBATCH
    if args.tool == "annbatch":
        ANNBATCH, RESULT["prepared_seconds"] = prepare_annbatch(args.path)
    base = rss()
    with PeakMemory() as memory:
        start = time.perf_counter()
        WORKLOADS[args.workload](args.tool, args.path)
        seconds = time.perf_counter() - start
    extra = {}
    if "hvg" in RESULT:
        extra = {"hvg": np.flatnonzero(RESULT["hvg"]).tolist(), "variance_ratio": RESULT["variance_ratio"].tolist()}
    if "cells_per_second" in RESULT:
        extra["cells_per_second"] = N_BATCHES * BATCH / seconds
    if "prepared_seconds" in RESULT:
        extra["prepared_seconds"] = RESULT["prepared_seconds"]
    if "received_mib" in RESULT:
        extra["received_mib"] = RESULT["received_mib"]
    print(json.dumps({"seconds": seconds, "peak_mib": (memory.peak - base) / 2**20, "base_mib": base / 2**20,
                      "memory": memory.method,
                      "written_mib": written_mib(), "shadows": shadows.__version__, **extra}))
    prepare("", args.path)  # remove what the workload wrote


if __name__ == "__main__":
    main()
