"""Exports (``write_h5ad``, ``write_zarr``, ``write_h5mu`` of a shadow or a view) write the same file as
anndata's and mudata's own writers of the shadow's ``to_memory()``: every group's and array's attributes,
dtype, shape and values, walked with h5py and zarr, and anndata's (mudata's) read of both files.

Only what is not the file's content differs: chunking and compression of the arrays shadows stream block
by block, and mudata's text header in the h5mu user block (``creator=shadows``). The differences listed in
``INTENDED`` are the intended ones in MuData files.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import zarr

from conftest import make_adata, read_oracle, write, zarr_format
from helpers import assert_shadow_matches
from shadows import AnnDataShadow, MuDataShadow

FORMATS = ["h5ad", "zarr2", "zarr3"]
#: Attributes mudata writes on its root and each modality's group and shadows does not (shadows is not
#: mudata, and anndata's readers ignore them; shadows' own h5mu header names it)
INTENDED = frozenset({"encoder", "encoder-version"})


def walk(path: Path) -> dict[str, dict[str, Any]]:
    """Every group and array of the file or store at ``path``, by path: its attributes, and an array's
    dtype, shape and values.
    """
    nodes: dict[str, dict[str, Any]] = {}
    if path.is_dir():
        root = zarr.open_group(str(path), mode="r")

        def visit(name: str, group: Any) -> None:
            nodes[name] = {"attrs": _attrs(group.attrs)}
            for key, member in group.members():
                child = f"{name}/{key}".lstrip("/") if name != "/" else key
                if isinstance(member, zarr.Group):
                    visit(child, member)
                else:
                    nodes[child] = _array(member, member[...])

        visit("/", root)
        return nodes
    with h5py.File(path, "r") as file:
        nodes["/"] = {"attrs": _attrs(file.attrs)}

        def record(name: str, node: Any) -> None:
            nodes[name] = (_array(node, node[()]) if isinstance(node, h5py.Dataset)
                           else {"attrs": _attrs(node.attrs)})

        file.visititems(record)
    return nodes


def _array(node: Any, values: Any) -> dict[str, Any]:
    values = np.asarray(values)
    if values.dtype.kind in "OSUT":
        values = np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in values.ravel()],
                            dtype=object).reshape(values.shape)
    return {"attrs": _attrs(node.attrs), "dtype": _dtype(node.dtype), "shape": tuple(node.shape), "values": values}


def _dtype(dtype: Any) -> str:
    """The dtype, strings of any storage spelled as one (h5py's variable-length vs numpy's StringDType)."""
    dtype = np.dtype(dtype)
    return "string" if dtype.kind in "OSUT" or h5py.check_string_dtype(dtype) is not None else str(dtype)


def _attrs(attrs: Any) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if isinstance(value, bytes):
            return value.decode()
        if isinstance(value, np.ndarray | list | tuple):
            return [plain(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
        if isinstance(value, np.generic):
            return value.item()
        return value

    return {key: plain(attrs[key]) for key in attrs}


def assert_same_files(got: Path, expected: Path, ignore_attrs: frozenset[str] = frozenset()) -> None:
    """``got`` and ``expected`` hold the same groups and arrays, with the same attributes, dtypes,
    shapes and values (element by element).
    """
    ours, theirs = walk(got), walk(expected)
    assert sorted(ours) == sorted(theirs)
    for name, node in theirs.items():
        mine = ours[name]
        attrs = {k: v for k, v in node["attrs"].items() if k not in ignore_attrs}
        assert mine["attrs"] == attrs, name
        if "values" not in node:
            continue
        assert mine["dtype"] == node["dtype"], name
        assert mine["shape"] == node["shape"], name
        if node["values"].dtype == object:
            assert mine["values"].tolist() == node["values"].tolist(), name
        else:
            np.testing.assert_array_equal(mine["values"], node["values"], err_msg=name)


def _write(value: Any, path: Path, fmt: str) -> Path:
    """``value`` (an AnnData, MuData or shadow) written with its own ``write_h5ad``/``write_h5mu``/
    ``write_zarr`` in ``fmt``.
    """
    with warnings.catch_warnings(), zarr_format(fmt):
        warnings.simplefilter("ignore")
        if fmt != "h5ad":
            value.write_zarr(path)
        elif hasattr(value, "mod"):
            value.write_h5mu(path)
        else:
            value.write_h5ad(path)
    return path


def _suffix(fmt: str, mudata: bool = False) -> str:
    return ".zarr" if fmt != "h5ad" else ".h5mu" if mudata else ".h5ad"


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("dispatch")
    adata = make_adata()
    return {fmt: write(adata, folder / f"rich_{fmt}{_suffix(fmt)}", fmt) for fmt in FORMATS}


#: Every stored format exported to every format, as a shadow or as a view: each pair of the three factors
#: (source format, subject, target format) is covered, not every triple (10 cases, not 18: what a source's
#: reader does does not depend on the writer's format), and the commonest export both ways (h5ad to h5ad).
EXPORTS = [(fmt, (i + j) % 2 == 1, out) for i, fmt in enumerate(FORMATS) for j, out in enumerate(FORMATS)]
EXPORTS.insert(1, ("h5ad", True, "h5ad"))


@pytest.mark.parametrize(("fmt", "view", "out"), EXPORTS,
                         ids=[f"{f}-{'view' if v else 'shadow'}-{o}" for f, v, o in EXPORTS])
def test_anndata_export_equals_anndatas_write(stored, tmp_path, fmt, view, out):
    shadow = AnnDataShadow(stored[fmt])
    subject = shadow[np.arange(3, 50, 2), ::2] if view else shadow
    memory = subject.to_memory()
    expected = _write(memory, tmp_path / f"anndata{_suffix(out)}", out)
    got = _write(subject, tmp_path / f"shadows{_suffix(out)}", out)
    assert_same_files(got, expected)
    assert_shadow_matches(AnnDataShadow(got), read_oracle(expected))
    shadow.close()


@pytest.mark.parametrize("out", FORMATS)
def test_staged_and_assigned_elements_equal_anndatas_write(stored, tmp_path, out):
    """Elements changed in memory (▲), a raw assigned as an AnnData and a new X are written as anndata
    writes them.
    """
    rng = np.random.default_rng(3)
    shadow = AnnDataShadow(stored["h5ad"], mode="r+")
    shadow.obs["new"] = [f"n{i % 4}" for i in range(shadow.n_obs)]
    shadow.obsm["X_new"] = rng.normal(size=(shadow.n_obs, 3))
    shadow.layers["dense"] = shadow.layers["dense"] * 2
    shadow.uns["added"] = {"k": np.arange(4)}
    shadow.raw = shadow[:, :5].to_memory()
    memory = shadow.to_memory()
    expected = _write(memory, tmp_path / f"anndata{_suffix(out)}", out)
    got = _write(shadow, tmp_path / f"shadows{_suffix(out)}", out)
    assert_same_files(got, expected)
    shadow.close()


mudata = pytest.importorskip("mudata")


@pytest.fixture(scope="module")
def mu_stored(tmp_path_factory) -> dict[str, Path]:
    from test_mudata import make_mudata

    folder = tmp_path_factory.mktemp("dispatch_mu")
    mdata = make_mudata("shared_obs")
    return {fmt: _write(mdata, folder / f"mu_{fmt}{_suffix(fmt, True)}", fmt) for fmt in FORMATS}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("view", [False, True], ids=["shadow", "view"])
def test_mudata_export_equals_mudatas_write(mu_stored, tmp_path, fmt, view):
    shadow = MuDataShadow(mu_stored[fmt])
    subject = shadow[np.arange(2, 55, 3)] if view else shadow
    memory = subject.to_memory()
    expected = _write(memory, tmp_path / f"mudata{_suffix(fmt, True)}", fmt)
    got = _write(subject, tmp_path / f"shadows{_suffix(fmt, True)}", fmt)
    assert_same_files(got, expected, ignore_attrs=INTENDED)
    if fmt == "h5ad":
        with open(got, "rb") as file:
            assert file.read(64).startswith(b"MuData (format-version=0.1.0;creator=shadows)")
    shadow.close()
