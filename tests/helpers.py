"""Comparisons of shadows against anndata's reads."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
import zarr


def _plain(expected: Any) -> Any:
    """anndata's view types (ArrayView, sparse and DataFrame views) as the plain types they wrap."""
    if isinstance(expected, pd.DataFrame) and type(expected) is not pd.DataFrame:
        return pd.DataFrame(expected)
    if sp.issparse(expected) and type(expected) not in (sp.csr_matrix, sp.csc_matrix):
        return (sp.csr_matrix if expected.format == "csr" else sp.csc_matrix)(expected)
    if isinstance(expected, np.ndarray) and type(expected) is not np.ndarray:
        return np.asarray(expected)
    if type(expected).__name__ == "AwkwardArrayView":  # its copy drops the view's own parameters
        return copy.copy(expected)
    return expected


def assert_value_equal(got: Any, expected: Any, where: str = "") -> None:
    """Equal type family, dtype and values (NaN-aware), recursively for mappings."""
    expected = _plain(expected)
    if isinstance(expected, Mapping):
        assert isinstance(got, Mapping), where
        got_keys = set(got.keys())
        assert got_keys == set(expected.keys()), (where, got_keys, set(expected.keys()))
        for key in expected:
            assert_value_equal(got[key], expected[key], f"{where}/{key}")
        return
    if isinstance(expected, pd.DataFrame):
        assert isinstance(got, pd.DataFrame), where
        pd.testing.assert_frame_equal(got, expected, check_exact=True, obj=where)
        assert got.index.name == expected.index.name, where
        return
    if isinstance(expected, pd.Series):
        pd.testing.assert_series_equal(got, expected, check_exact=True, obj=where)
        return
    if isinstance(expected, pd.Index):
        pd.testing.assert_index_equal(got, expected, exact=True, obj=where)
        return
    if sp.issparse(expected):
        assert sp.issparse(got), where
        assert type(got) is type(expected), (where, type(got), type(expected))
        assert got.dtype == expected.dtype, where
        assert got.shape == expected.shape, where
        np.testing.assert_array_equal(got.toarray(), expected.toarray(), err_msg=where)  # NaN-aware
        return
    if isinstance(expected, np.ndarray):
        assert isinstance(got, np.ndarray), (where, type(got))
        assert got.dtype == expected.dtype, (where, got.dtype, expected.dtype)
        if expected.dtype.names is None and expected.dtype.kind in "fc":
            np.testing.assert_array_equal(got, expected, err_msg=where)
        else:
            assert got.shape == expected.shape and (got == expected).all(), where
        return
    ak = sys.modules.get("awkward")
    if ak is not None and isinstance(expected, ak.Array):  # anndata's AwkwardArrayView too
        assert isinstance(got, ak.Array), (where, type(got))
        assert str(got.type) == str(expected.type), (where, got.type, expected.type)
        assert ak.array_equal(got, expected, equal_nan=True), where  # dtypes and layout types too
        return
    assert type(got) is type(expected), (where, type(got), type(expected))
    assert got == expected or (got != got and expected != expected), (where, got, expected)


def assert_shadow_matches(shadow, oracle) -> None:
    """Every element of the shadow equals anndata's in-memory read."""
    assert shadow.shape == oracle.shape
    assert_value_equal(shadow.obs_names, oracle.obs_names, "obs_names")
    assert_value_equal(shadow.var_names, oracle.var_names, "var_names")
    assert_value_equal(shadow.obs, oracle.obs, "obs")
    assert_value_equal(shadow.var, oracle.var, "var")
    if oracle.X is None:
        assert shadow.X is None
    else:
        assert_value_equal(shadow.X, oracle.X, "X")
    for slot in ("layers", "obsm", "varm", "obsp", "varp"):
        mapping = getattr(shadow, slot)
        expected = getattr(oracle, slot)
        expected_keys = {k for k in expected if k is not None}  # anndata 0.13: layers[None] is X
        assert {k for k in mapping if k is not None} == expected_keys, slot
        for key in expected_keys:
            assert_value_equal(mapping[key], expected[key], f"{slot}/{key}")
    assert_value_equal(shadow.uns.materialize(), dict(oracle.uns), "uns")
    if oracle.raw is None:
        assert shadow.raw is None
    else:
        assert_value_equal(shadow.raw.X, oracle.raw.X, "raw/X")
        assert_value_equal(shadow.raw.var, oracle.raw.var, "raw/var")
        assert_value_equal(shadow.raw.var_names, oracle.raw.var_names, "raw/var_names")
        assert set(shadow.raw.varm.keys()) == set(oracle.raw.varm.keys())
        for key in oracle.raw.varm:
            assert_value_equal(shadow.raw.varm[key], oracle.raw.varm[key], f"raw/varm/{key}")


_METADATA = ("zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata")


@contextlib.contextmanager
def count_reads(monkeypatch):
    """Count data reads: h5py dataset reads, and Zarr store gets of chunk keys (metadata excluded).

    Zarr is read through zarr's own pipeline meanwhile: zarrs reads the files itself, past the store
    (its reads are counted in ``test_zarrs.py`` by the bytes the process reads).
    """
    from shadows import settings

    monkeypatch.setattr(settings, "zarrs", False)
    reads: Counter[str] = Counter()
    h5_getitem = h5py.Dataset.__getitem__
    h5_read_direct = h5py.Dataset.read_direct

    def counted_getitem(self, *args, **kwargs):
        reads[self.name.lstrip("/")] += 1
        return h5_getitem(self, *args, **kwargs)

    def counted_read_direct(self, *args, **kwargs):
        reads[self.name.lstrip("/")] += 1
        return h5_read_direct(self, *args, **kwargs)

    store_get = zarr.storage.LocalStore.get

    async def counted_get(self, key, *args, **kwargs):
        if not key.endswith(_METADATA):
            reads[key.rsplit("/", 1)[0] if "/" in key else key] += 1
        return await store_get(self, key, *args, **kwargs)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", counted_getitem)
    monkeypatch.setattr(h5py.Dataset, "read_direct", counted_read_direct)
    monkeypatch.setattr(zarr.storage.LocalStore, "get", counted_get)
    _count_hdf5_range_reads(monkeypatch, lambda name, out: reads.update({name: 1}))
    yield reads


def _count_hdf5_range_reads(monkeypatch, count) -> None:
    """Also count the reads shadows makes of many ranges at once of an HDF5 dataset, past h5py's
    ``Dataset.__getitem__`` (``StoredArray.read_ranges``: HDF5's low-level API, or ``pread``):
    ``count(name, out)``.
    """
    from shadows.backends.abc import StoredArray
    from shadows.backends.hdf5_arrays import Hdf5Array

    read_ranges = StoredArray.read_ranges

    def counted(self, starts, stops, out):
        read_ranges(self, starts, stops, out)
        if isinstance(self, Hdf5Array) and starts.size > 1:
            count(self.node.name.lstrip("/"), out)

    monkeypatch.setattr(StoredArray, "read_ranges", counted)


def assert_mudata_matches(shadow, oracle) -> None:
    """Every global element and every modality of a MuData shadow equals mudata's in-memory read."""
    assert shadow.shape == oracle.shape
    assert shadow.axis == oracle.axis
    assert shadow.n_mod == oracle.n_mod
    assert list(shadow.mod) == list(oracle.mod)
    assert_value_equal(shadow.obs_names, oracle.obs_names, "obs_names")
    assert_value_equal(shadow.var_names, oracle.var_names, "var_names")
    assert_value_equal(shadow.obs, oracle.obs, "obs")
    assert_value_equal(shadow.var, oracle.var, "var")
    for slot in ("obsm", "varm", "obsp", "varp", "obsmap", "varmap"):
        assert_value_equal(dict(getattr(shadow, slot)), dict(getattr(oracle, slot)), slot)
    assert_value_equal(shadow.uns.materialize(), dict(oracle.uns), "uns")
    for name, modality in shadow.mod.items():
        assert_shadow_matches(modality, oracle.mod[name])


def file_digest(path: Path) -> str:
    """A hash of every byte of a file, or of every file of a Zarr store (names included)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(str(file.relative_to(path.parent)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def element_digests(path: Path) -> dict[str, str]:
    """A digest of every stored array's values (format-agnostic), by path inside the file."""
    digests = {}
    if path.is_file():
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, node: digests.__setitem__(name, hashlib.sha256(
                np.asarray(node[()]).tobytes() if node.dtype.kind != "O" else repr(node[()]).encode()).hexdigest())
                if isinstance(node, h5py.Dataset) else None)
        return digests
    root = zarr.open_group(path, mode="r", use_consolidated=False)
    for name, node in root.members(max_depth=None):
        if isinstance(node, zarr.Array):
            values = np.asarray(node[...])
            data = values.tobytes() if values.dtype.kind in "biufc" else repr(values.tolist()).encode()
            digests[name] = hashlib.sha256(data).hexdigest()
    return digests


def count_values_read(monkeypatch, dataset: str) -> list[int]:
    """Record how many values each read of the HDF5 dataset ``dataset`` (``"/X/data"``) returns, from now
    until ``monkeypatch`` is undone (on top of :func:`count_reads` when that is active).
    """
    read: list[int] = []
    getitem = h5py.Dataset.__getitem__

    def counted(self, key):
        out = getitem(self, key)
        if self.name == dataset:
            read.append(np.size(out))
        return out

    monkeypatch.setattr(h5py.Dataset, "__getitem__", counted)
    _count_hdf5_range_reads(monkeypatch, lambda name, out: read.append(out.size) if "/" + name == dataset else None)
    return read


def rechunk_sparse_x(path: Path, **layout: Any) -> None:
    """Store X/data and X/indices of the Zarr store at ``path`` anew with ``layout`` (``chunks=``, and
    ``shards=`` for format 3; anndata writes small arrays as one chunk), then consolidate its metadata."""
    group = zarr.open_group(Path(path) / "X", mode="r+")
    for name in ("data", "indices"):
        values = group[name][...]
        del group[name]
        group.create_array(name, data=values, **layout)
    zarr.consolidate_metadata(str(path))


# --------------------------------------------------------------------------------------------------------
# child processes forked from a server that made the imports once

#: The server: imports what the children share (``sys.argv[1]``), then forks a child per request (a JSON
#: line on stdin: a script, its arguments, the files for its stdout and stderr) and answers with the
#: child's pid; when a child ends, its exit code is written to ``<folder>/<pid>.code`` (``sys.argv[2]``).
#: A child is a fresh copy of an interpreter that has opened nothing and runs no thread: it runs its
#: script as ``python -c`` would, and ends the way that would (a normal exit, atexit handlers included),
#: or, with ``quick_exit``, with ``os._exit`` once its output is flushed.
_FORK_SERVER = r"""
import json, os, signal, sys
exec(sys.argv[1])
codes = sys.argv[2]

def reap(*_):
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        with open(os.path.join(codes, f"{pid}.tmp"), "w") as f:
            f.write(str(os.waitstatus_to_exitcode(status)))
        os.replace(os.path.join(codes, f"{pid}.tmp"), os.path.join(codes, f"{pid}.code"))

signal.signal(signal.SIGCHLD, reap)
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
        os.dup2(os.open(request["stdout"], os.O_WRONLY | (0 if request["fifo"] else os.O_CREAT | os.O_TRUNC)), 1)
        sys.argv = ["-c", *request["args"]]
        if not request["quick_exit"]:
            exec(compile(request["script"], "<string>", "exec"), {"__name__": "__main__"})
            sys.exit(0)
        try:  # the interpreter's finalization (a second with these imports) skipped
            exec(compile(request["script"], "<string>", "exec"), {"__name__": "__main__"})
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    print(pid, flush=True)
"""
#: What the children of the tests' fork server have imported before they start.
FORK_PRELOAD = "import numpy, scipy.sparse, pandas, h5py, zarr, dask.array, anndata, shadows"
#: The server's environment, which its children inherit: tracebacks on a crash; one BLAS thread and two
#: malloc arenas, read when the server starts, so that a child capping its address space (test_fuzz's
#: probes, under ``RLIMIT_AS``) does not spend it on a thread pool's stacks and arenas.
FORK_ENV = {"PYTHONFAULTHANDLER": "1", "MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


class ForkedProcess:
    """A child of :class:`ForkServer`, answering as much of :class:`subprocess.Popen` as the tests use:
    ``pid``, ``stdout`` (a text file; a pipe when asked for), ``stderr`` (what it wrote, read on demand),
    ``poll``, ``wait``, ``kill`` and ``returncode``.
    """

    def __init__(self, pid: int, stdout: Any, stderr_path: Path, code_path: Path):
        self.pid = pid
        self.stdout = stdout
        self._stderr_path = stderr_path
        self._code_path = code_path
        self.returncode: int | None = None

    @property
    def stderr(self) -> Any:
        """What the child wrote to stderr so far (a file object, as ``Popen(stderr=PIPE).stderr`` is)."""
        import io

        return io.StringIO(self._stderr_path.read_text(errors="replace"))

    def poll(self) -> int | None:
        if self.returncode is None and self._code_path.exists():
            self.returncode = int(self._code_path.read_text())
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        import subprocess
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"forked child {self.pid}", timeout)
            time.sleep(0.005)
        return self.returncode

    def kill(self) -> None:
        import os
        import signal

        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


class ForkServer:
    """Runs scripts in children forked from one process that imported :data:`FORK_PRELOAD` (2-3 s saved
    per child): each child starts as ``python -c script args`` would, with nothing opened, so a crash, a
    kill, a file lock or an RSS measured in it are its own.
    """

    def __init__(self, folder: Path, preload: str = FORK_PRELOAD):
        self.folder = folder
        self.preload = preload
        self.process: Any = None
        self._count = 0

    def start(self, script: str, *args: Any, stdout_pipe: bool = True, quick_exit: bool = False) -> ForkedProcess:
        """Fork a child running ``script`` with ``args``; its stdout is read through a pipe (a FIFO, read
        as it writes) or, with ``stdout_pipe=False``, is a file read once it has ended. ``quick_exit``:
        the child skips the interpreter's finalization (for a script whose files are closed when it ends).
        """
        import json
        import os
        import subprocess

        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen([sys.executable, "-c", _FORK_SERVER, self.preload, str(self.folder)],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                            env={**os.environ, **FORK_ENV}, start_new_session=True)
        self._count += 1
        out, err = self.folder / f"{self._count}.out", self.folder / f"{self._count}.err"
        if stdout_pipe:
            os.mkfifo(out)
        request = {"script": script, "args": [str(a) for a in args], "stdout": str(out), "stderr": str(err),
                   "fifo": stdout_pipe, "quick_exit": quick_exit}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        pid = int(self.process.stdout.readline())
        stdout = open(out) if stdout_pipe else None  # noqa: SIM115 (the child's pipe, read as it writes)
        return ForkedProcess(pid, stdout, err, self.folder / f"{pid}.code") if stdout_pipe else \
            _FinishedLater(pid, out, err, self.folder / f"{pid}.code")

    def run(self, script: str, *args: Any, timeout: float = 120) -> tuple[int, str, str]:
        """Run ``script`` to its end (a quick exit): exit code, stdout and stderr (a child still running
        after ``timeout`` seconds is killed, and the test fails).
        """
        import subprocess

        child = self.start(script, *args, stdout_pipe=False, quick_exit=True)
        try:
            code = child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            raise AssertionError(f"the child gave no answer within {timeout} s (hung)") from None
        return code, child.stdout_text(), child.stderr.read()

    def stop(self) -> None:
        import os
        import signal

        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None


class _FinishedLater(ForkedProcess):
    """A child whose stdout is a file, read once it has ended."""

    def __init__(self, pid: int, out: Path, stderr_path: Path, code_path: Path):
        super().__init__(pid, None, stderr_path, code_path)
        self._out = out

    def stdout_text(self) -> str:
        return self._out.read_text(errors="replace") if self._out.exists() else ""


_server: ForkServer | None = None


def fork_server() -> ForkServer:
    """This test process's fork server (started on first use; it ends with the process, whose end closes
    its stdin)."""
    global _server
    if _server is None:
        import atexit
        import shutil
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="shadows-forks-"))
        atexit.register(shutil.rmtree, folder, True)
        _server = ForkServer(folder)
    return _server
