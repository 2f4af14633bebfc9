"""Shared fixtures: AnnData files written by the installed anndata in every format and encoding."""

from __future__ import annotations

import contextlib
import fcntl
import os
import warnings
from collections.abc import Callable, Hashable, Iterator, Mapping
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

FORMATS = ["h5ad", "zarr2", "zarr3"]


def make_adata(n_obs: int = 60, n_vars: int = 15, seed: int = 0) -> ad.AnnData:
    """An AnnData that exercises every encoding anndata writes."""
    rng = np.random.default_rng(seed)
    cat = pd.Categorical(rng.choice(["a", "b", "c"], n_obs))
    cat[::7] = np.nan  # missing values in a categorical
    obs = pd.DataFrame(
        {
            "cat": cat,
            "ordered": pd.Categorical(rng.choice(["lo", "mid", "hi"], n_obs), categories=["lo", "mid", "hi"],
                                      ordered=True),
            "float": rng.normal(size=n_obs),
            "int": rng.integers(0, 100, n_obs),
            "bool": rng.choice([True, False], n_obs),
            "nullable_int": pd.array(rng.integers(0, 5, n_obs), dtype="Int32"),
            "nullable_bool": pd.array(rng.choice([True, False], n_obs), dtype="boolean"),
            "string": [f"s{i % 9}" for i in range(n_obs)],
        },
        index=pd.Index([f"cell{i}" for i in range(n_obs)], name="cell_id"),
    )
    obs.loc[obs.index[3], "nullable_int"] = pd.NA
    obs.loc[obs.index[5], "nullable_bool"] = pd.NA
    var = pd.DataFrame({"gene_ids": [f"ENSG{i:05d}" for i in range(n_vars)],
                        "highly_variable": rng.choice([True, False], n_vars)},
                       index=[f"gene{i}" for i in range(n_vars)])
    X = sp.random(n_obs, n_vars, density=0.3, format="csr", dtype=np.float32, random_state=seed)
    adata = ad.AnnData(
        X=X,
        obs=obs,
        var=var,
        layers={"dense": X.toarray(), "counts_csc": sp.csc_matrix(X) * 2},
        obsm={"X_pca": rng.normal(size=(n_obs, 5)).astype(np.float32), "X_umap": rng.normal(size=(n_obs, 2)),
              "frame": pd.DataFrame({"u": rng.normal(size=n_obs), "k": pd.Categorical(rng.choice(["x", "y"], n_obs))},
                                    index=obs.index)},
        varm={"PCs": rng.normal(size=(n_vars, 5))},
        obsp={"connectivities": sp.random(n_obs, n_obs, density=0.1, format="csr", random_state=1),
              "dense_dist": rng.normal(size=(n_obs, n_obs))},
        varp={"corr": rng.normal(size=(n_vars, n_vars))},
        uns={
            "title": "a string",
            "count": 3,
            "ratio": 1.5,
            "flag": True,
            "arange": np.arange(5),
            "names": np.array(["x", "y", "z"]),
            "nested": {"level1": {"level2": {"value": 7, "array": np.ones((2, 2))}}, "s": "t"},
            "frame": pd.DataFrame({"q": [1, 2, 3], "r": ["a", "b", "c"]}),
            "sparse": sp.random(4, 4, density=0.5, format="csr", random_state=2),
            "cat_colors": np.array(["#ff0000", "#00ff00", "#0000ff"]),
        },
    )
    adata.raw = adata[:, : n_vars - 3].copy()
    return adata


@contextlib.contextmanager
def zarr_format(fmt: str) -> Iterator[None]:
    """anndata (and mudata, and shadows' exports) write Zarr format 2 for "zarr2", else 3, meanwhile."""
    previous = ad.settings.zarr_write_format
    ad.settings.zarr_write_format = 2 if fmt == "zarr2" else 3
    try:
        yield
    finally:
        ad.settings.zarr_write_format = previous


def write(adata: ad.AnnData, path: Path, fmt: str) -> Path:
    """Write ``adata`` in ``fmt`` (h5ad, zarr2, zarr3) with the installed anndata."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "h5ad":
            adata.write_h5ad(path)
        else:
            with zarr_format(fmt):
                adata.write_zarr(path)
    return path


def drop_consolidated(path: Path) -> None:
    """Remove a Zarr store's consolidated metadata (format 2 or 3), leaving each node's own."""
    import json

    zmeta = path / ".zmetadata"
    if zmeta.exists():
        zmeta.unlink()
    root = path / "zarr.json"
    if root.exists():
        meta = json.loads(root.read_text())
        meta.pop("consolidated_metadata", None)
        root.write_text(json.dumps(meta))


def suffix(fmt: str) -> str:
    return ".h5ad" if fmt == "h5ad" else ".zarr"


def read_oracle(path: Path) -> ad.AnnData:
    """anndata's own full read: the oracle every shadow value is compared with."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ad.read_h5ad(path) if path.suffix == ".h5ad" else ad.read_zarr(path)


@pytest.fixture(scope="session", params=FORMATS)
def fmt(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def files(tmp_path_factory) -> dict[str, Path]:
    """The rich AnnData written once per format."""
    root = tmp_path_factory.mktemp("files")
    adata = make_adata()
    return {f: write(adata, root / f"rich_{f}{suffix(f)}", f) for f in FORMATS}


@pytest.fixture
def path(files, fmt) -> Path:
    return files[fmt]


@pytest.fixture(scope="session")
def pbmc_path() -> Path:
    """scanpy's bundled pbmc68k_reduced, written by anndata < 0.7."""
    import scanpy

    return Path(scanpy.__file__).parent / "datasets" / "10x_pbmc68k_reduced.h5ad"


class SharedFiles(Mapping):
    """Test files built on first use, once per test run for all xdist workers: a worker builds a file
    while holding a lock, the others wait and reuse it (nine MuData files cost 20-45 s per worker).

    Parameters
    ----------
    folder
        Where the files go (one folder for the whole run).
    keys
        The files there can be.
    build
        ``build(key, folder) -> path`` writes one.
    """

    def __init__(self, folder: Path, keys: list[Hashable], build: Callable[[Hashable, Path], Path]):
        self._folder, self._keys, self._build = folder, list(keys), build
        self._paths: dict[Hashable, Path] = {}
        folder.mkdir(parents=True, exist_ok=True)

    def __getitem__(self, key: Hashable) -> Path:
        if key not in self._paths:
            if key not in self._keys:
                raise KeyError(key)
            done = self._folder / ("_".join(map(str, key if isinstance(key, tuple) else (key,))) + ".done")
            with open(self._folder / ".lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not done.exists():
                    done.write_text(str(self._build(key, self._folder)))
            self._paths[key] = Path(done.read_text())
        return self._paths[key]

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def run_folder(tmp_path_factory, name: str) -> Path:
    """A folder of this test run shared by its xdist workers (each worker's base folder otherwise)."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / f"shared-{name}"


S3_SECRET = "s3cr3t-never-printed"


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """(storage_options, an s3fs filesystem) for moto's S3 server with a bucket "data".

    One per test process: moto keeps its buckets in process-wide state, so a second server in the same
    process would already see "data".
    """
    moto_server = pytest.importorskip("moto.server")
    s3fs = pytest.importorskip("s3fs")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = {"endpoint_url": f"http://{host}:{port}", "region_name": "eu-west-1"}
    options = {"key": "testing", "secret": S3_SECRET, "client_kwargs": endpoint}
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir("data")
    yield options, fs
    server.stop()


@pytest.fixture
def nothing_held_for_writing():
    """No HDF5 file of an earlier test still open for writing in this process (a shadow left unclosed in
    a reference cycle lives until the garbage collector runs): a Client's workers could not open it, so
    shadows would keep computations that touch it off the cluster.
    """
    import gc

    from shadows.backends import registry

    gc.collect()
    held = registry.hdf5_open_for_writing()
    assert not held, f"an earlier test left {held} open for writing"


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: unknown to a run without it
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """``-n`` runs send each test module to one worker whole, and each ``xdist_group`` to one worker.

    xdist's ``loadgroup`` sends every ungrouped test on its own: a module's fixture files were then written
    on each worker that ran one of its tests (per stack, ~350 s of fixture setup, most of it twice). Tests
    marked ``xdist_group`` (those importing pynndescent, which compiles for ~20-40 s in each process) run on
    one worker whatever their module. Modules go out largest first (xdist's scope reordering), so that the
    last ones to finish are small.
    """
    from xdist.scheduler import LoadScopeScheduling

    class ModuleOrGroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.rfind("@") > nodeid.rfind("]"):  # an xdist_group: "path::test[params]@group"
                return nodeid.rsplit("@", 1)[-1]
            return nodeid.split("::", 1)[0]

    return ModuleOrGroupScheduling(config, log)
