"""The last malformed inputs: each ends in a shadows error that names the file and the element, never a raw
library error, a crash or a hang; and a small view of an array claiming an impossible shape still reads.

Files are built small in tmp_path. The deep HDF5 tree is opened in a child process whose open runs in a
thread with a 1 MiB stack (a stack overflow in C would kill the suite otherwise; 4,000 levels overflowed
that stack where shadows walked them with HDF5's recursive ``H5Lvisit``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest

from conftest import drop_consolidated, make_adata, suffix, write, zarr_format
from shadows import (
    AnnDataShadow,
    InvalidElementKeyError,
    MalformedElementError,
    MuDataShadow,
    ShadowsError,
    UnreadableDataError,
)

ZARR = ("zarr2", "zarr3")


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> dict[str, Path]:
    """The small rich AnnData written once per format, with an unnamed obs index (stored as obs/_index)."""
    root = tmp_path_factory.mktemp("inputs")
    adata = make_adata()
    adata.obs.index.name = None
    return {f: write(adata, root / f"base_{f}{suffix(f)}", f) for f in ("h5ad", *ZARR)}


def _copy(templates: dict[str, Path], fmt: str, target: Path) -> Path:
    source = templates[fmt]
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy2(source, target)
    return target


def _names(error: pytest.ExceptionInfo, path: Path, element: str) -> None:
    message = str(error.value)
    assert isinstance(error.value, ShadowsError)
    assert str(path) in message and f"'{element}'" in message, message


# -- JSON metadata nested past Python's recursion limit ------------------------------------------------


@pytest.mark.parametrize("fmt", ZARR)
@pytest.mark.parametrize("consolidated", [True, False], ids=["consolidated", "per-node"])
def test_json_metadata_nested_100000_deep_is_malformed_metadata(templates, tmp_path, fmt, consolidated):
    path = _copy(templates, fmt, tmp_path / "deep.zarr")
    if consolidated:
        name, element = (".zmetadata" if fmt == "zarr2" else "zarr.json"), "/"
    else:
        drop_consolidated(path)
        name, element = ("obs/.zattrs" if fmt == "zarr2" else "obs/zarr.json"), "obs"
    document = (path / name).read_text().rstrip()
    (path / name).write_text(document[:-1] + ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(MalformedElementError, match="nested more deeply") as error:
        AnnDataShadow(path).obs  # noqa: B018
    _names(error, path, element)


# -- a Zarr node whose metadata says array where a group is expected -----------------------------------


@pytest.mark.parametrize("fmt", ZARR)
@pytest.mark.parametrize(("element", "access"), [("obsm", "list(s.obsm)"), ("uns", "list(s.uns)"),
                                                 ("obs", "s.obs")])
def test_array_metadata_where_a_group_is_expected(templates, tmp_path, fmt, element, access):
    path = _copy(templates, fmt, tmp_path / "node.zarr")
    drop_consolidated(path)
    if fmt == "zarr3":
        meta_file = path / element / "zarr.json"
        meta_file.write_text(json.dumps({**json.loads(meta_file.read_text()), "node_type": "array"}))
    else:
        (path / element / ".zgroup").rename(path / element / ".zarray")
    with pytest.raises(MalformedElementError) as error:
        eval(access, {"s": AnnDataShadow(path)})
    _names(error, path, element)
    assert "KeyError" not in str(error.value) and "array" in str(error.value), error.value


# -- an obs index whose stored length disagrees with X --------------------------------------------------


def _index_of_length(templates: dict[str, Path], tmp_path: Path, n: int) -> Path:
    path = _copy(templates, "h5ad", tmp_path / f"index{n}.h5ad")
    with h5py.File(path, "r+") as file:
        del file["obs/_index"]
        file["obs"].create_dataset("_index", shape=(n,), dtype=h5py.string_dtype(), chunks=(min(n, 1000),))
    return path


@pytest.mark.parametrize("n", [59, 10**12], ids=["shorter", "claiming-1e12"])
@pytest.mark.parametrize("access", ["s.layers['dense']", "s.X", "s.obsm['X_pca']", "s.obs", "s.obs_names",
                                    "s[:3].X"])
def test_an_index_disagreeing_with_x_is_named_inconsistent(templates, tmp_path, n, access):
    path = _index_of_length(templates, tmp_path, n)
    shadow = AnnDataShadow(path)
    with pytest.raises(MalformedElementError, match=f"stored length, {n}, is inconsistent") as error:
        eval(access, {"s": shadow})
    _names(error, path, "obs/_index")


def test_a_witness_agreeing_with_the_index_keeps_the_blame_on_the_element(templates, tmp_path):
    """X stored with other rows than the index and obs's columns: X is the odd one out, and named."""
    path = _copy(templates, "h5ad", tmp_path / "x.h5ad")
    with h5py.File(path, "r+") as file:
        file["X"].attrs["shape"] = [59, 15]
    with pytest.raises(MalformedElementError) as error:
        _ = AnnDataShadow(path).X
    assert "'obs/_index'" not in str(error.value) and "'X" in str(error.value), error.value


# -- a chunk of obs/_index missing ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ZARR)
@pytest.mark.parametrize("access", ["s.obs", "s.obs_names", "s[:25].obs_names", "s.to_memory()"])
def test_a_missing_chunk_of_the_index_is_unreadable_data(templates, tmp_path, fmt, access):
    import zarr

    path = _copy(templates, fmt, tmp_path / "chunk.zarr")
    group = zarr.open_group(path, mode="r+", use_consolidated=False)
    # the names' array: obs/_index, or its values (anndata 0.13 on pandas 3 writes a nullable string array)
    text = "obs/_index" if isinstance(group["obs/_index"], zarr.Array) else "obs/_index/values"
    values, attrs = np.asarray(group[text][...]), dict(group[text].attrs)
    parent, name = text.rsplit("/", 1)
    del group[text]
    group[parent].create_array(name, data=values, chunks=(20,)).attrs.update(attrs)
    drop_consolidated(path)
    chunk = f"{text}/1" if fmt == "zarr2" else f"{text}/c/1"
    (path / chunk).unlink()
    shadow = AnnDataShadow(path)
    with pytest.raises(UnreadableDataError, match="missing from the store") as error:
        eval(access, {"s": shadow})
    _names(error, path, "obs/_index")
    assert list(AnnDataShadow(path)[:20].obs_names) == [f"cell{i}" for i in range(20)]  # chunk 0 is there


# -- an obsmap entry past its modality --------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["h5ad", "zarr3"])
def test_an_obsmap_entry_past_its_modality_is_malformed(tmp_path, fmt):
    mudata = pytest.importorskip("mudata")
    mdata = mudata.MuData({"rna": make_adata(n_obs=20), "atac": make_adata(n_obs=20, seed=1)})
    path = tmp_path / ("m.h5mu" if fmt == "h5ad" else "m.zarr")
    if fmt == "h5ad":
        mdata.write_h5mu(path)
        with h5py.File(path, "r+") as f:
            f["obsmap/atac"][3] = 500
    else:
        with zarr_format(fmt):
            mdata.write_zarr(path)
        import zarr

        zarr.open_group(path, mode="r+", use_consolidated=False)["obsmap/atac"][3] = 500
        drop_consolidated(path)
    shadow = MuDataShadow(path)
    with pytest.raises(MalformedElementError, match=r"position 500.*20 observations") as error:
        _ = shadow[:10].mod["atac"]
    _names(error, path, "obsmap/atac")


# -- a 5,000-character key written to Zarr ---------------------------------------------------------------


@pytest.mark.parametrize("slot", ["obsm", "uns-nested", "obs-column"])
def test_a_key_too_long_for_a_folder_name_is_refused_before_writing(templates, tmp_path, slot):
    from helpers import file_digest

    path = _copy(templates, "zarr3", tmp_path / "long.zarr")
    before = file_digest(path)
    shadow = AnnDataShadow(path, mode="r+")
    key = "k" * 5000
    if slot == "obsm":
        shadow.obsm[key] = np.ones((60, 2))
    elif slot == "uns-nested":
        shadow.uns["params"] = {key: 1}
    else:
        shadow.obs[key] = np.arange(60)
    with pytest.raises(InvalidElementKeyError, match="file system") as error:
        shadow.write()
    assert str(path) in str(error.value) and len(str(error.value)) < 1000
    assert file_digest(path) == before  # not a byte written, no scratch folder left


def test_the_longest_allowed_key_writes_and_reads_back(templates, tmp_path):
    from shadows.backends.name_limits import SCRATCH_SUFFIX_BYTES

    path = _copy(templates, "zarr3", tmp_path / "long.zarr")
    key = "k" * (255 - SCRATCH_SUFFIX_BYTES)
    shadow = AnnDataShadow(path, mode="r+")
    shadow.obsm[key] = np.ones((60, 2))
    shadow.write().close()
    np.testing.assert_array_equal(AnnDataShadow(path).obsm[key], np.ones((60, 2)))


# -- a deeply nested HDF5 group tree ---------------------------------------------------------------------

SMALL_STACK_PROBE = r"""
import sys, threading
import shadows
result = {}
def run():
    try:
        s = shadows.AnnDataShadow(sys.argv[1])
        repr(s)
        eval(sys.argv[2])
        result["outcome"] = "read"
    except shadows.ShadowsError as error:
        result["outcome"] = f"{type(error).__name__}: {error}"
threading.stack_size(1 << 20)  # a small C stack: recursion in C overflows it at a few thousand levels
thread = threading.Thread(target=run)
thread.start()
thread.join()
print(result.get("outcome", "no outcome"))
"""


def _nest(path: Path, where: str, depth: int) -> None:
    with h5py.File(path, "r+") as file:
        group_id = file[where].id
        for _ in range(depth):
            group_id = h5py.h5g.create(group_id, b"d")


@pytest.mark.parametrize(("where", "access", "expected"), [
    ("uns", "s.uns.materialize()", "more than 64 levels"),
    ("obsm/frame", "s.obsm['frame']", "nest more than 64 levels"),
])
def test_a_deeply_nested_hdf5_tree_neither_crashes_nor_hangs(templates, tmp_path, where, access, expected):
    path = _copy(templates, "h5ad", tmp_path / "deep.h5ad")
    _nest(path, where, 4000)
    done = subprocess.run([sys.executable, "-c", SMALL_STACK_PROBE, str(path), access], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, f"the open crashed (exit {done.returncode}):\n{done.stderr[-2000:]}"
    assert done.stdout.startswith("MalformedElementError") and expected in done.stdout, done.stdout
    assert str(path) in done.stdout


# -- a small view of a dense array claiming 10^12 x 10^12 --------------------------------------------------


@pytest.fixture(scope="module")
def huge_dense(tmp_path_factory) -> dict[str, Path]:
    """X dense, claiming 10**12 × 10**12 (nothing allocated: chunked, unwritten), its [:5, :5] written."""
    root = tmp_path_factory.mktemp("huge")
    out = {}
    n = 10**12
    for fmt in ("h5ad", "zarr3"):
        path = root / f"huge{suffix(fmt)}"
        adata = ad.AnnData(np.ones((3, 3), dtype=np.float32))
        write(adata, path, fmt)
        index = pd.Index([f"c{i}" for i in range(5)])
        if fmt == "h5ad":
            with h5py.File(path, "r+") as f:
                for frame in ("obs", "var"):
                    del f[frame]["_index"]
                    f[frame].create_dataset("_index", shape=(n,), dtype=h5py.string_dtype(), chunks=(1000,))
                    f[frame]["_index"][:5] = index.to_numpy()
                    f[frame]["_index"].attrs.update({"encoding-type": "string-array", "encoding-version": "0.2.0"})
                del f["X"]
                x = f.create_dataset("X", shape=(n, n), dtype="f4", chunks=(100, 100))
                x[:5, :5] = np.arange(25, dtype="f4").reshape(5, 5)
                x.attrs.update({"encoding-type": "array", "encoding-version": "0.2.0"})
        else:
            import zarr

            group = zarr.open_group(path, mode="r+", use_consolidated=False)
            for frame in ("obs", "var"):
                del group[f"{frame}/_index"]
                array = group[frame].create_array("_index", shape=(n,), dtype=str, chunks=(1000,))
                array[:5] = index.to_numpy()
                array.attrs.update({"encoding-type": "string-array", "encoding-version": "0.2.0"})
            del group["X"]
            x = group.create_array("X", shape=(n, n), dtype="f4", chunks=(100, 100))
            x[:5, :5] = np.arange(25, dtype="f4").reshape(5, 5)
            x.attrs.update({"encoding-type": "array", "encoding-version": "0.2.0"})
            drop_consolidated(path)
        out[fmt] = path
    return out


@pytest.mark.parametrize("fmt", ["h5ad", "zarr3"])
@pytest.mark.parametrize("backend", ["numpy", "dask"])
def test_a_small_view_of_a_huge_dense_array_reads_its_values(huge_dense, fmt, backend):
    shadow = AnnDataShadow(huge_dense[fmt], array_backend=backend)
    expected = np.arange(25, dtype="f4").reshape(5, 5)
    view = shadow[:5, :5]
    values = view.X if backend == "numpy" else view.X.compute()
    np.testing.assert_array_equal(values, expected)
    np.testing.assert_array_equal(np.asarray(shadow[[4, 1], 2:4].X if backend == "numpy"
                                             else shadow[[4, 1], 2:4].X.compute()), expected[[4, 1], 2:4])
    assert list(view.obs_names) == [f"c{i}" for i in range(5)]


# -- zeroed bytes in HDF5's global heap: HDF5 itself would spin forever ------------------------------------

HEAP_PROBE = r"""
import sys, faulthandler
faulthandler.dump_traceback_later(60, exit=True)  # a hang ends the child with a traceback, not the suite
import shadows
outcomes = []
for path in sys.argv[1:]:
    try:
        s = shadows.read(path)
        repr(s)
        s.to_memory()
        outcomes.append("read")
    except shadows.ShadowsError as error:
        outcomes.append(f"{type(error).__name__}: {error}")
print("\n".join(outcomes))
"""


def _collections(path: Path) -> list[int]:
    """Where the file's global heap collections start (h5py stores string attributes and values there)."""
    data = path.read_bytes()
    found, at = [], data.find(b"GCOL")
    while at >= 0:
        found.append(at)
        at = data.find(b"GCOL", at + 1)
    return found


@pytest.fixture(scope="module")
def heap_sources(templates, tmp_path_factory) -> dict[str, Path]:
    """The small AnnData as h5ad, and a MuData of it as h5mu (whose 512-byte userblock moves every address)."""
    import mudata

    root = tmp_path_factory.mktemp("heaps")
    h5mu = root / "source.h5mu"
    mudata.MuData({"rna": ad.read_h5ad(templates["h5ad"])}).write(h5mu)
    return {"h5ad": templates["h5ad"], "h5mu": h5mu}


@pytest.mark.parametrize("fmt", ["h5ad", "h5mu"])
def test_zeroed_global_heap_bytes_end_in_an_error_instead_of_a_hang(heap_sources, tmp_path, fmt):
    """HDF5 walks a collection object by object, each step the object's stored size: an object zeroed to
    index 0 and size 0 makes it loop forever (anndata hangs on these files too). Every collection of the
    file (the attributes' strings, obs names, categories) is zeroed in turn, at its first object (64 bytes)
    and across its middle (256 bytes)."""
    source = heap_sources[fmt]
    data = source.read_bytes()
    collections = _collections(source)
    assert len(collections) >= 2
    damaged = []
    for number, at in enumerate(collections):
        for offset, length in ((16, 64), (2048, 256)):
            copy = bytearray(data)
            copy[at + offset : at + offset + length] = bytes(length)
            path = tmp_path / f"zeroed_{number}_{offset}.{fmt}"
            path.write_bytes(bytes(copy))
            damaged.append(path)
    done = subprocess.run([sys.executable, "-c", HEAP_PROBE, *map(str, damaged)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"a damaged file hung or crashed the reader:\n{done.stderr[-3000:]}"
    outcomes = done.stdout.splitlines()
    assert len(outcomes) == len(damaged)
    refused = [(path, outcome) for path, outcome in zip(damaged, outcomes, strict=True) if outcome != "read"]
    assert refused, "zeroing a collection's first object must be refused"
    for path, outcome in refused:
        assert outcome.startswith(("UnreadableDataError", "MalformedElementError")), outcome
        assert str(path) in outcome
    first_objects = [o for p, o in zip(damaged, outcomes, strict=True) if p.stem.endswith("_16")]
    assert all("HDF5 would hang" in o for o in first_objects), first_objects


@pytest.mark.parametrize("fmt", ["h5ad", "h5mu"])
def test_the_heap_check_passes_every_intact_file(heap_sources, fmt):
    """No false alarm: every node of an intact file (attributes and string values) passes."""
    from shadows.backends import hdf5_heaps

    with h5py.File(heap_sources[fmt], "r") as file:
        nodes = [file]
        file.visititems(lambda _, node: nodes.append(node))
        for node in nodes:
            hdf5_heaps.check_node(node, values=True)


def test_each_heap_collection_of_an_open_file_is_checked_once(heap_sources, monkeypatch):
    """The check costs a walk of the collection: it is made once per collection of an open file, however
    many nodes point into it (h5py hands out a new file object per ``node.file``; all are one file)."""
    from shadows.backends import hdf5_heaps

    walked: list[int] = []
    original = hdf5_heaps._check_collection
    monkeypatch.setattr(hdf5_heaps, "_check_collection",
                        lambda heaps, address: walked.append(address) or original(heaps, address))
    with h5py.File(heap_sources["h5ad"], "r") as file:
        nodes = [file]
        file.visititems(lambda _, node: nodes.append(node))
        for _ in range(2):
            for node in nodes:
                hdf5_heaps.check_node(node, values=True)
    assert walked and len(walked) == len(set(walked))
