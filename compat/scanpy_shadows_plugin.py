"""A pytest plugin serving the datasets of scanpy's tests as shadows (or as their in-memory controls).

Loaded with ``-p scanpy_shadows_plugin`` (``compat/`` on ``PYTHONPATH``) by ``run_scanpy_suite.py``; the
environment chooses what every dataset function returns:

``SHADOWS_COMPAT_MODE``
    ``control`` (a plain in-memory AnnData, ``anndata.read_h5ad`` of the file), ``shadow``
    (``shadows.read_h5ad(file)``), ``view_control`` (``adata[:]`` of the control), ``view``
    (``shadows.read_h5ad(file)[:]``), ``dask_control`` (the control with X, layers, obsm, obsp and varm as dask
    arrays, sparse ones chunked into scipy CSR blocks), ``dask`` (``shadows.read_h5ad(file, array_backend="dask")``).
``SHADOWS_COMPAT_DATA``
    the folder with the datasets written by ``_datasets.build``.
``SHADOWS_COMPAT_OUT``
    the folder where this plugin writes ``results*.json`` (outcome and crash of every test) and ``usage*.json``
    (which tests touched a dataset).
``SHADOWS_COMPAT_SELECT``
    optional: a file of node ids, one a line; other tests are deselected.
``SHADOWS_COMPAT_TIMEOUT``
    seconds a test's setup or call may take (default 300), enforced with SIGALRM.

Every call returns a fresh object (tests modify what they get).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import warnings
from pathlib import Path
from typing import Any

import pytest

MODE = os.environ.get("SHADOWS_COMPAT_MODE", "control")
MODES = ("control", "shadow", "view_control", "view", "dask_control", "dask")
DATA = Path(os.environ.get("SHADOWS_COMPAT_DATA", "."))
OUT = Path(os.environ.get("SHADOWS_COMPAT_OUT", "."))
TIMEOUT = int(os.environ.get("SHADOWS_COMPAT_TIMEOUT", "300"))
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
# rows per dask chunk: what shadows' dask backend uses by default
DASK_ROWS = 6000

DATASETS = ("pbmc68k_reduced", "krumsiek11", "toggleswitch", "pbmc3k", "pbmc3k_processed", "paul15")

# --- what every dataset function returns ------------------------------------------------------------------------

_controls: dict[Path, Any] = {}


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Observation names are not unique")
        warnings.filterwarnings("ignore", "Variable names are not unique")
        warnings.filterwarnings("ignore", category=FutureWarning, module="anndata")
        warnings.filterwarnings("ignore", message=".*OldFormatWarning.*")
        yield


def _to_dask(x: Any) -> Any:
    import dask.array as da
    import numpy as np
    import scipy.sparse as sp

    if isinstance(x, da.Array):
        return x
    if sp.issparse(x):
        return da.from_array(x, chunks=(min(DASK_ROWS, x.shape[0]) or 1, -1), asarray=False)
    if isinstance(x, np.ndarray) and x.ndim == 2:
        return da.from_array(x, chunks=(min(DASK_ROWS, x.shape[0]) or 1, -1))
    return x


def _dask_control(adata: Any) -> Any:
    """anndata's in-memory object with its arrays as dask arrays (what the dask backend shows)."""
    if adata.X is not None:
        adata.X = _to_dask(adata.X)
    for mapping in (adata.layers, adata.obsm, adata.obsp, adata.varm):
        for key in list(mapping.keys()):
            mapping[key] = _to_dask(mapping[key])
    return adata


def _control_of(adata: Any) -> Any:
    """The control of ``MODE`` made from an in-memory AnnData (which it may modify)."""
    if MODE == "view_control":
        return adata[:]
    if MODE == "dask_control":
        return _dask_control(adata)
    return adata


def _serve(path: Path) -> Any:
    """A fresh object for ``MODE`` over the dataset stored at ``path``."""
    _record_use()
    with _quiet():
        if MODE in ("control", "view_control", "dask_control"):
            if path not in _controls:
                import anndata as ad

                _controls[path] = ad.read_h5ad(path)
            return _control_of(_controls[path].copy())
        import shadows

        if MODE == "shadow":
            return shadows.read_h5ad(path)
        if MODE == "view":
            return shadows.read_h5ad(path)[:]
        if MODE == "dask":
            return shadows.read_h5ad(path, array_backend="dask")
    msg = f"unknown SHADOWS_COMPAT_MODE {MODE!r}: one of {', '.join(MODES)}"
    raise ValueError(msg)


def _dataset(name: str):
    path = DATA / f"{name}.h5ad"

    def load(*args: Any, **kwargs: Any) -> Any:
        return _serve(path)

    load.__name__ = load.__qualname__ = name
    load.__doc__ = f"{name} served as {MODE} from {path}."
    return load


_written: dict[str, Path] = {}


def _generated(original, name: str):
    """A dataset scanpy generates from its arguments (``blobs``): generated in memory for the controls, written
    once per arguments for the shadows."""

    @functools.wraps(original)
    def load(*args: Any, **kwargs: Any) -> Any:
        if MODE in ("control", "view_control", "dask_control"):
            _record_use()
            with _quiet():
                return _control_of(original(*args, **kwargs))
        key = repr((args, sorted(kwargs.items())))
        if key not in _written:
            folder = OUT / f"generated-{WORKER}"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{name}-{len(_written)}.h5ad"
            with _quiet():
                original(*args, **kwargs).write_h5ad(path)
            _written[key] = path
        return _serve(_written[key])

    return load


class _Fresh:
    """Stands for the session's prepared pbmc3k: ``.copy()`` (all scanpy's fixtures call) opens a fresh one."""

    def __init__(self, make):
        self.copy = make


_prepared: dict[tuple, Path] = {}


def _prepare_pbmc_testdata(original):
    """scanpy's ``_prepare_pbmc_testdata`` run on the in-memory control, written, and served per mode."""

    def prepare(adata: Any, sparsity_func: Any, dtype: Any, *, small: bool) -> _Fresh:
        import anndata as ad

        with _quiet():
            control = ad.read_h5ad(DATA / "pbmc3k.h5ad")
            prepared = original(control, sparsity_func, dtype, small=small)
        if MODE in ("control", "view_control", "dask_control"):
            return _Fresh(lambda: (_record_use(), _control_of(prepared.copy()))[1])
        key = (getattr(sparsity_func, "__name__", str(sparsity_func)), str(dtype), small)
        if key not in _prepared:
            folder = OUT / f"generated-{WORKER}"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"pbmc3k-{'-'.join(map(str, key))}.h5ad"
            with _quiet():
                prepared.write_h5ad(path)
            _prepared[key] = path
        return _Fresh(functools.partial(_serve, _prepared[key]))

    return prepare


def _patch() -> None:
    import scanpy.datasets
    import scanpy.datasets._datasets as sc_datasets
    import testing.scanpy._helpers.data as helpers
    import testing.scanpy._pytest.fixtures.data as fixture_data

    for name in DATASETS:
        for module in (scanpy.datasets, sc_datasets):
            setattr(module, name, _dataset(name))
        if hasattr(helpers, name):
            setattr(helpers, name, _dataset(name))
        if hasattr(helpers, f"_{name}"):
            setattr(helpers, f"_{name}", _dataset(name))
    for name in ("pbmc3k_normalized", "_pbmc3k_normalized"):
        if hasattr(helpers, name):
            setattr(helpers, name, _dataset("pbmc3k_normalized"))
    blobs = _generated(sc_datasets.blobs, "blobs")
    scanpy.datasets.blobs = sc_datasets.blobs = blobs
    fixture_data._prepare_pbmc_testdata = _prepare_pbmc_testdata(fixture_data._prepare_pbmc_testdata)


# --- which tests touch a dataset ---------------------------------------------------------------------------------

_state: dict[str, Any] = {"test": None, "collecting": None, "fixtures": []}
_used_by_tests: set[str] = set()
_dataset_fixtures: set[str] = set()
_used_at_import: set[str] = set()


def _record_use() -> None:
    if _state["test"] is not None:
        _used_by_tests.add(_state["test"])
    elif _state["collecting"] is not None:
        _used_at_import.add(_state["collecting"])
    _dataset_fixtures.update(_state["fixtures"])


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    _state["collecting"] = str(getattr(collector, "path", ""))
    yield
    _state["collecting"] = None


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    _state["fixtures"].append(fixturedef.argname)
    try:
        yield
    finally:
        _state["fixtures"].pop()


class CompatTimeout(Exception):
    """A test's setup or call ran past ``SHADOWS_COMPAT_TIMEOUT``."""


def _alarm(signum, frame):
    msg = f"compat: ran past {TIMEOUT} s"
    raise CompatTimeout(msg)


@contextlib.contextmanager
def _deadline():
    if TIMEOUT <= 0 or not hasattr(signal, "SIGALRM"):
        yield
        return
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIMEOUT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _state["test"] = item.nodeid
    yield
    _state["test"] = None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    with _deadline():
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    with _deadline():
        yield


# --- results --------------------------------------------------------------------------------------------------------

_results: dict[str, dict[str, Any]] = {}
_items: dict[str, tuple[str, list[str]]] = {}


def _crash(report) -> dict[str, Any]:
    longrepr = report.longrepr
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None:
        where = None
        entries = getattr(getattr(longrepr, "reprtraceback", None), "reprentries", []) or []
        # the deepest frame inside scanpy, shadows, anndata (not the test): where the cause shows
        frames = []
        for entry in entries:
            loc = getattr(entry, "reprfileloc", None)
            if loc is not None:
                frames.append(f"{loc.path}:{loc.lineno}")
        where = frames[-4:]
        # the failing statement (the last source line shown before the "E" lines), for bare assertions
        source = ""
        if entries:
            code = [line for line in getattr(entries[-1], "lines", []) if not line.startswith("E ")]
            source = code[-1].strip().lstrip(">").strip() if code else ""
        return {"message": crash.message, "path": f"{crash.path}:{crash.lineno}", "frames": where,
                "source": source}
    return {"message": str(longrepr)[-2000:], "path": None, "frames": []}


def pytest_runtest_logreport(report) -> None:
    entry = _results.setdefault(report.nodeid, {"outcome": "passed"})
    if report.failed:
        if entry["outcome"] != "failed":
            entry.update(outcome="failed", when=report.when, **_crash(report))
    elif report.skipped and entry["outcome"] == "passed":
        if hasattr(report, "wasxfail"):
            entry.update(outcome="xfailed")
        else:
            entry.update(outcome="skipped", message=str(report.longrepr[-1]) if report.longrepr else "")


def pytest_collection_modifyitems(session, config, items) -> None:
    select = os.environ.get("SHADOWS_COMPAT_SELECT")
    if select:
        wanted = set(Path(select).read_text().splitlines())
        keep = [item for item in items if item.nodeid in wanted]
        dropped = [item for item in items if item.nodeid not in wanted]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
        items[:] = keep
    for item in items:
        _items[item.nodeid] = (str(item.path), list(getattr(item, "fixturenames", [])))


def pytest_configure(config) -> None:
    if MODE not in MODES:
        msg = f"unknown SHADOWS_COMPAT_MODE {MODE!r}: one of {', '.join(MODES)}"
        raise pytest.UsageError(msg)
    _patch()


def pytest_sessionfinish(session, exitstatus) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    using = sorted(
        nodeid for nodeid, (path, fixtures) in _items.items()
        if nodeid in _used_by_tests or path in _used_at_import or _dataset_fixtures.intersection(fixtures)
    )
    (OUT / f"usage-{WORKER}.json").write_text(json.dumps({"using": using, "collected": sorted(_items)}, indent=0))
    (OUT / f"results-{WORKER}.json").write_text(json.dumps(_results, indent=0))
