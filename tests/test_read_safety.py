"""Read-side safety: data outside the file is refused unless allowed, and claimed shapes that cannot fit
in memory are refused instead of being read or planned.

- HDF5 external links, external storage and virtual datasets with sources in other files, and symbolic
  links leading out of a Zarr store, raise ExternalDataError (naming the file, the element and
  ``allow_external``) unless the shadow was opened with ``allow_external=True``; what stays inside the
  file (a virtual dataset over the same file, a symlink inside the store) reads normally.
- A dense element whose (view's) values cannot fit in the machine's memory raises TooLargeError when it
  is read with the numpy backend; a dask graph whose tasks alone cannot fit raises it when it is built,
  while a larger-than-memory array with a sane number of chunks still gets its graph.

Files are built small in tmp_path; huge arrays are claimed by metadata only (chunked HDF5 datasets and
Zarr arrays allocate nothing until written).
"""

from __future__ import annotations

import pickle
import shutil
import warnings
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from conftest import FORMATS, suffix, write
from shadows import AnnDataShadow, ExternalDataError, MuDataShadow, TooLargeError
from shadows.backends import resolve
from shadows.elements import dense

N_OBS = 8
ARRAY = {"encoding-type": "array", "encoding-version": "0.2.0"}
METADATA_FILES = {".zarray", ".zattrs", ".zgroup", "zarr.json", ".zmetadata"}


def _adata() -> ad.AnnData:
    rng = np.random.default_rng(0)
    return ad.AnnData(
        X=rng.normal(size=(N_OBS, 4)).astype(np.float32),
        obs=pd.DataFrame({"c": pd.Categorical(list("ab") * (N_OBS // 2))}, index=[f"c{i}" for i in range(N_OBS)]),
        var=pd.DataFrame(index=[f"g{i}" for i in range(4)]),
        obsm={"X_pca": rng.normal(size=(N_OBS, 3))},
        obsp={"conn": sp.random(N_OBS, N_OBS, density=0.4, format="csr", random_state=0)},
        uns={"nested": {"v": np.arange(3)}, "arr": np.arange(4.0)},
    )


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("safety")
    adata = _adata()
    return {f: write(adata, root / f"base_{f}{suffix(f)}", f) for f in FORMATS}


def _copy(template: Path, target: Path) -> Path:
    if template.is_dir():
        shutil.copytree(template, target, symlinks=True)
    else:
        shutil.copy2(template, target)
    return target


@pytest.fixture
def base(templates, fmt, tmp_path) -> Path:
    """A fresh copy of the small file in ``fmt``."""
    return _copy(templates[fmt], tmp_path / f"data{suffix(fmt)}")


@pytest.fixture
def h5ad(templates, tmp_path) -> Path:
    return _copy(templates["h5ad"], tmp_path / "data.h5ad")


def _other_file(tmp_path: Path, values: np.ndarray) -> Path:
    """An HDF5 file outside the AnnData, holding ``/arr`` (encoded as an anndata array)."""
    other = tmp_path / "outside" / "other.h5"
    other.parent.mkdir(exist_ok=True)
    with h5py.File(other, "w") as f:
        f.create_dataset("arr", data=values).attrs.update(ARRAY)
    return other


def _refused(excinfo, path: Path, element: str) -> str:
    message = str(excinfo.value)
    assert isinstance(excinfo.value, PermissionError)
    assert str(path) in message and f"'{element}'" in message and "allow_external=True" in message
    return message


# -- HDF5 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["numpy", "dask"])
@pytest.mark.parametrize("slot", ["obsm", "uns"])
def test_hdf5_external_link_refused_unless_allowed(h5ad, tmp_path, slot, backend):
    values = np.arange(N_OBS * 3, dtype=float).reshape(N_OBS, 3)
    other = _other_file(tmp_path, values)
    with h5py.File(h5ad, "a") as f:
        f[f"{slot}/ext"] = h5py.ExternalLink(str(other), "/arr")
    shadow = AnnDataShadow(h5ad, array_backend=backend)
    assert "ext" in getattr(shadow, slot)  # listed (metadata), refused when accessed
    with pytest.raises(ExternalDataError) as excinfo:
        getattr(shadow, slot)["ext"]
    message = _refused(excinfo, h5ad, f"{slot}/ext")
    assert "external link" in message and str(other) in message
    np.testing.assert_array_equal(np.asarray(shadow.obsm["X_pca"]), ad.read_h5ad(h5ad).obsm["X_pca"])

    allowed = AnnDataShadow(h5ad, array_backend=backend, allow_external=True)
    np.testing.assert_array_equal(np.asarray(getattr(allowed, slot)["ext"]), values)


def test_hdf5_external_link_inside_group_elements(h5ad, tmp_path):
    """A link anywhere under a group element (a sparse matrix's data, a nested uns dict) is refused."""
    with h5py.File(h5ad, "a") as f:
        data = f["obsp/conn/data"][:]
        other = _other_file(tmp_path, data)
        del f["obsp/conn/data"]
        f["obsp/conn/data"] = h5py.ExternalLink(str(other), "/arr")
        f["uns/nested/ext"] = h5py.ExternalLink(str(other), "/arr")
    shadow = AnnDataShadow(h5ad)
    with pytest.raises(ExternalDataError) as excinfo:
        shadow.obsp["conn"]
    assert "'obsp/conn/data' inside it" in _refused(excinfo, h5ad, "obsp/conn")
    with pytest.raises(ExternalDataError) as excinfo:
        shadow.uns["nested"]["ext"]
    _refused(excinfo, h5ad, "uns/nested/ext")
    np.testing.assert_array_equal(shadow.uns["nested"]["v"], np.arange(3))
    # The read gate holds for reads that bypass the layout (what dask tasks do, in any process).
    with pytest.raises(ExternalDataError):
        resolve(h5ad).node("obsp/conn/data")
    expected = _adata().obsp["conn"]
    assert (AnnDataShadow(h5ad, allow_external=True).obsp["conn"] != expected).nnz == 0


def test_hdf5_external_storage_refused(h5ad, tmp_path):
    values = np.arange(N_OBS * 2, dtype="<f8").reshape(N_OBS, 2)
    raw = tmp_path / "outside.bin"
    raw.write_bytes(values.tobytes())
    with h5py.File(h5ad, "a") as f:
        f.create_dataset("obsm/raw", shape=values.shape, dtype="<f8",
                         external=[(str(raw), 0, values.nbytes)]).attrs.update(ARRAY)
    with pytest.raises(ExternalDataError) as excinfo:
        AnnDataShadow(h5ad).obsm["raw"]
    message = _refused(excinfo, h5ad, "obsm/raw")
    assert "external storage" in message and str(raw) in message
    np.testing.assert_array_equal(AnnDataShadow(h5ad, allow_external=True).obsm["raw"], values)


def test_hdf5_virtual_dataset_other_file_refused(h5ad, tmp_path):
    values = np.arange(N_OBS * 3, dtype=float).reshape(N_OBS, 3)
    other = _other_file(tmp_path, values)
    with h5py.File(h5ad, "a") as f:
        layout = h5py.VirtualLayout(shape=values.shape, dtype=values.dtype)
        layout[:] = h5py.VirtualSource(str(other), "arr", shape=values.shape)
        f.create_virtual_dataset("obsm/vds", layout).attrs.update(ARRAY)
    with pytest.raises(ExternalDataError) as excinfo:
        AnnDataShadow(h5ad, array_backend="dask").obsm["vds"]
    assert "virtual dataset" in _refused(excinfo, h5ad, "obsm/vds")
    np.testing.assert_array_equal(AnnDataShadow(h5ad, allow_external=True).obsm["vds"], values)


def test_hdf5_virtual_dataset_same_file_allowed(h5ad, tmp_path):
    with h5py.File(h5ad, "a") as f:
        pca = f["obsm/X_pca"]
        for name, source in (("same", "."), ("named", str(h5ad))):
            layout = h5py.VirtualLayout(shape=pca.shape, dtype=pca.dtype)
            layout[:] = h5py.VirtualSource(source, "obsm/X_pca", shape=pca.shape)
            f.create_virtual_dataset(f"obsm/{name}", layout).attrs.update(ARRAY)
        # ... but a same-file source that is an external link leads out again
        f["obsm/ext"] = h5py.ExternalLink(str(_other_file(tmp_path, pca[:])), "/arr")
        layout = h5py.VirtualLayout(shape=pca.shape, dtype=pca.dtype)
        layout[:] = h5py.VirtualSource(".", "obsm/ext", shape=pca.shape)
        f.create_virtual_dataset("obsm/via_link", layout).attrs.update(ARRAY)
    shadow = AnnDataShadow(h5ad)
    np.testing.assert_array_equal(shadow.obsm["same"], shadow.obsm["X_pca"])
    np.testing.assert_array_equal(shadow.obsm["named"], shadow.obsm["X_pca"])
    with pytest.raises(ExternalDataError) as excinfo:
        shadow.obsm["via_link"]
    _refused(excinfo, h5ad, "obsm/via_link")


def test_mudata_modality_external_link(tmp_path):
    mudata = pytest.importorskip("mudata")
    path = tmp_path / "data.h5mu"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mudata.MuData({"rna": _adata()}).write(path)
    values = np.ones((N_OBS, 2))
    with h5py.File(path, "a") as f:
        f["mod/rna/obsm/ext"] = h5py.ExternalLink(str(_other_file(tmp_path, values)), "/arr")
    with pytest.raises(ExternalDataError) as excinfo:
        MuDataShadow(path).mod["rna"].obsm["ext"]
    _refused(excinfo, path, "obsm/ext")
    allowed = MuDataShadow(path, allow_external=True)
    assert allowed.mod["rna"]._elements.ref.allow_external
    np.testing.assert_array_equal(allowed.mod["rna"].obsm["ext"], values)
    revived = pickle.loads(pickle.dumps(allowed))
    np.testing.assert_array_equal(revived.mod["rna"].obsm["ext"], values)


def test_pickle_keeps_allow_external(h5ad, tmp_path):
    values = np.arange(N_OBS * 3, dtype=float).reshape(N_OBS, 3)
    with h5py.File(h5ad, "a") as f:
        f["obsm/ext"] = h5py.ExternalLink(str(_other_file(tmp_path, values)), "/arr")
    allowed = pickle.loads(pickle.dumps(AnnDataShadow(h5ad, allow_external=True)[2:5]))
    assert allowed._elements.ref.allow_external and allowed.is_view
    np.testing.assert_array_equal(allowed.obsm["ext"], values[2:5])
    refused = pickle.loads(pickle.dumps(AnnDataShadow(h5ad)))
    assert not refused._elements.ref.allow_external
    with pytest.raises(ExternalDataError):
        refused.obsm["ext"]
    # dask graphs carry the choice to the processes that compute them (their reads go through the gate)
    graph = AnnDataShadow(h5ad, array_backend="dask", allow_external=True).obsm["ext"]
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(graph)).compute(), values)


# -- Zarr --------------------------------------------------------------------------------------------


@pytest.fixture(params=["zarr2", "zarr3"])
def store(templates, request, tmp_path) -> Path:
    """A fresh copy of the small file as a Zarr store (format 2 and 3)."""
    return _copy(templates[request.param], tmp_path / "data.zarr")


def _chunk_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in METADATA_FILES)


@pytest.mark.parametrize("backend", ["numpy", "dask"])
def test_zarr_element_folder_symlinked_outside(store, tmp_path, backend):
    base = store
    expected = _adata().obsm["X_pca"]
    outside = tmp_path / "outside" / "X_pca"
    outside.parent.mkdir()
    shutil.move(base / "obsm" / "X_pca", outside)
    (base / "obsm" / "X_pca").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ExternalDataError) as excinfo:
        AnnDataShadow(base, array_backend=backend).obsm["X_pca"]
    message = _refused(excinfo, base, "obsm/X_pca")
    assert "symbolic link" in message and str(outside) in message
    np.testing.assert_array_equal(np.asarray(AnnDataShadow(base, allow_external=True).obsm["X_pca"]), expected)


def test_zarr_chunk_symlinked_outside(store, tmp_path):
    base = store
    expected = _adata().obsm["X_pca"]
    chunk = _chunk_files(base / "obsm" / "X_pca")[0]
    outside = tmp_path / "outside_chunk"
    shutil.move(chunk, outside)
    chunk.symlink_to(outside)
    with pytest.raises(ExternalDataError) as excinfo:
        AnnDataShadow(base).obsm["X_pca"]
    message = _refused(excinfo, base, "obsm/X_pca")
    assert "inside it is a symbolic link" in message and str(outside) in message
    lazy = AnnDataShadow(base, array_backend="dask").obsm["X_pca"]  # the graph reads nothing ...
    with pytest.raises(ExternalDataError):
        lazy.compute()  # ... its tasks go through the read gate
    np.testing.assert_array_equal(AnnDataShadow(base, allow_external=True).obsm["X_pca"], expected)


def test_zarr_symlinks_inside_the_store_are_followed(store, tmp_path):
    base = store
    expected = _adata()
    stash = base / "stash"
    stash.mkdir()
    shutil.move(base / "obsm" / "X_pca", stash / "X_pca")
    (base / "obsm" / "X_pca").symlink_to(Path("..") / "stash" / "X_pca", target_is_directory=True)
    chunk = _chunk_files(base / "uns" / "arr")[0]
    shutil.move(chunk, stash / "chunk")
    chunk.symlink_to(stash / "chunk")
    link = tmp_path / "link.zarr"  # the store opened through a link to it
    link.symlink_to(base, target_is_directory=True)
    for path in (base, link):
        shadow = AnnDataShadow(path)
        np.testing.assert_array_equal(shadow.obsm["X_pca"], expected.obsm["X_pca"])
        np.testing.assert_array_equal(shadow.uns["arr"], expected.uns["arr"])
        np.testing.assert_array_equal(shadow.X, expected.X)


# -- claimed shapes too large for memory -------------------------------------------------------------


def _claim(path: Path, fmt: str, arrays: dict[str, tuple[tuple[int, ...], tuple[int, ...]]]) -> None:
    """Add empty float64 arrays of the given (shape, chunks) by metadata only."""
    if fmt == "h5ad":
        with h5py.File(path, "a") as f:
            for name, (shape, chunks) in arrays.items():
                f.create_dataset(name, shape=shape, chunks=chunks, dtype="f8").attrs.update(ARRAY)
        return
    import zarr

    group = zarr.open_group(path, mode="r+")
    for name, (shape, chunks) in arrays.items():
        parent, _, key = name.rpartition("/")
        group[parent].create_array(key, shape=shape, chunks=chunks, dtype="f8", fill_value=0.0, attributes=ARRAY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr: consolidated metadata is not in the format 3 specification
        zarr.consolidate_metadata(path)


@pytest.fixture
def huge(base, fmt) -> Path:
    _claim(base, fmt, {
        "obsm/huge": ((N_OBS, 10**12), (N_OBS, 10**6)),
        "uns/huge": ((10**9, 10**9), (10**4, 10**4)),
        "uns/big": ((10**5, 10**5), (1000, 1000)),  # 80 GB: larger than memory, a sane graph
        "obsm/big": ((N_OBS, 10**9), (N_OBS, 10**6)),  # 64 GB: larger than memory too, a sane graph
    })
    return base


def test_too_large_for_memory_numpy(huge):
    shadow = AnnDataShadow(huge)
    repr(shadow)
    with pytest.raises(TooLargeError) as excinfo:
        shadow.obsm["huge"]
    message = str(excinfo.value)
    assert isinstance(excinfo.value, MemoryError)
    assert str(huge) in message and "'obsm/huge'" in message and "array_backend='dask'" in message
    with pytest.raises(TooLargeError, match="view's part of it") as excinfo:
        shadow[:5].obsm["huge"]
    assert "'obsm/huge'" in str(excinfo.value)
    with pytest.raises(TooLargeError, match="'uns/huge'"):
        shadow.uns["huge"]
    np.testing.assert_array_equal(shadow.obsm["X_pca"], _adata().obsm["X_pca"])


def test_too_large_graph_refused_sane_graph_built(huge):
    shadow = AnnDataShadow(huge, array_backend="dask")
    with pytest.raises(TooLargeError) as excinfo:
        shadow.obsm["huge"]
    message = str(excinfo.value)
    assert str(huge) in message and "'obsm/huge'" in message and "dask graph" in message
    big = shadow.obsm["big"]  # larger than memory, but its graph is small: built, and parts read
    assert big.shape == (N_OBS, 10**9) and big.npartitions < 10**4
    np.testing.assert_array_equal(big[:2, :3].compute(), np.zeros((2, 3)))
    with pytest.raises(TooLargeError, match="uns is read into memory with every backend") as excinfo:
        shadow.uns["big"]  # uns is what anndata holds in memory, with the dask backend too
    assert "'uns/big'" in str(excinfo.value)


def test_memory_limit_follows_the_machine(base, monkeypatch):
    monkeypatch.setattr(dense, "machine_memory", lambda: 100)  # bytes: X_pca (8 × 3 float64) is 192
    monkeypatch.setattr(dense, "GRAPH_BYTES_PER_TASK", 1)
    shadow = AnnDataShadow(base)
    with pytest.raises(TooLargeError, match="'obsm/X_pca'"):
        shadow.obsm["X_pca"]
    np.testing.assert_array_equal(shadow[:2].obsm["X_pca"], _adata().obsm["X_pca"][:2])  # 48 bytes


def test_opt_in_is_per_shadow(h5ad, tmp_path):
    """An allowed shadow reading an element first does not open the door for another one (read gate cache)."""
    with h5py.File(h5ad, "a") as f:
        f["obsm/ext"] = h5py.ExternalLink(str(_other_file(tmp_path, np.ones((N_OBS, 1)))), "/arr")
    assert AnnDataShadow(h5ad, allow_external=True).obsm["ext"].shape == (N_OBS, 1)
    with pytest.raises(ExternalDataError):
        resolve(h5ad).node("obsm/ext")
