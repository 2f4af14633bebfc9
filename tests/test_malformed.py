"""A corpus of malformed files, built here (never committed), each opened in a fresh process.

Every case must end in an exception of the ``ShadowsError`` family that also inherits the fitting builtin
and whose message names the file and the broken element, raised on open or on first access of that
element. A subprocess per case catches what an in-process test cannot: a crash (segfault in a C library),
a hang (the probe has a time limit), or a memory blow-up (the RSS added by opening is measured).

These cases are written by hand, one per kind of damage; ``tests/test_fuzz.py`` derives a few hundred more
by mutating valid files at random (seeded), each probed the same way, with anndata as the oracle.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pytest

from conftest import drop_consolidated, make_adata, suffix, write, zarr_format
from helpers import fork_server

#: Opening any file, however broken, may add at most this much to the RSS (issue #6).
OPEN_RSS_LIMIT = 50 * 2**20

PROBE = r"""
import json, resource, sys, traceback
import numpy as np
import shadows
path, kind, access = sys.argv[1], sys.argv[2], sys.argv[3]
cls = shadows.MuDataShadow if kind == "mudata" else shadows.AnnDataShadow
result = {"stage": "open"}
def rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
before = rss()
try:
    s = cls(path)
    result["open_rss"] = rss() - before
    result["stage"] = "access"
    value = eval(access)
    result["stage"] = "done"
    result["value"] = repr(type(value))
except BaseException as error:
    result["open_rss"] = result.get("open_rss", rss() - before)
    result["types"] = [c.__module__ + "." + c.__qualname__ for c in type(error).__mro__]
    result["message"] = str(error)
    result["traceback"] = traceback.format_exc()
print(json.dumps(result))
"""


@dataclass(frozen=True)
class Case:
    """One malformed input: how to break a valid file, what to touch, and the error expected."""

    name: str
    formats: tuple[str, ...]
    breaker: Callable[[Path, str], Path]
    element: str  # named in the message ("" for the file as a whole)
    builtin: type[BaseException]
    access: str = "s.X"  # evaluated with the shadow bound to ``s``
    kind: str = "anndata"
    says: str = ""  # what the message must also hold (which check caught it)


def _valid(path: Path, fmt: str) -> Path:
    return write(make_adata(), path, fmt)


def _zarr_group(path: Path):
    import zarr

    return zarr.open_group(path, mode="r+", use_consolidated=False)


def _set_attr(element: str, key: str, value) -> Callable[[Path, str], Path]:
    def breaker(path: Path, fmt: str) -> Path:
        _valid(path, fmt)
        if fmt == "h5ad":
            with h5py.File(path, "r+") as f:
                f[element].attrs[key] = value
        else:
            _zarr_group(path)[element].attrs[key] = value
            drop_consolidated(path)
        return path
    return breaker


def _delete(element: str) -> Callable[[Path, str], Path]:
    def breaker(path: Path, fmt: str) -> Path:
        _valid(path, fmt)
        if fmt == "h5ad":
            with h5py.File(path, "r+") as f:
                del f[element]
        else:
            shutil.rmtree(path / element)
            drop_consolidated(path)
        return path
    return breaker


def _replace(element: str, value) -> Callable[[Path, str], Path]:
    """Replace a stored element by another value, encoded by anndata."""
    def breaker(path: Path, fmt: str) -> Path:
        _valid(path, fmt)
        parent, name = element.rsplit("/", 1)
        if fmt == "h5ad":
            with h5py.File(path, "r+") as f:
                del f[element]
                ad.io.write_elem(f[parent], name, value)
        else:
            group = _zarr_group(path)
            del group[element]
            with zarr_format(fmt):
                ad.io.write_elem(group[parent], name, value)
            drop_consolidated(path)
        return path
    return breaker


def _empty(path: Path, fmt: str) -> Path:
    if fmt == "h5ad":
        path.write_bytes(b"")
    else:
        path.mkdir()
    return path


def _random_bytes(path: Path, fmt: str) -> Path:
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    return path


def _truncated(path: Path, fmt: str) -> Path:
    write(make_adata(n_obs=3000, n_vars=50), path, fmt)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    return path


def _hdf5_or_zarr_not_anndata(path: Path, fmt: str) -> Path:
    if fmt == "h5ad":
        with h5py.File(path, "w") as f:
            f["counts"] = np.arange(10)
    else:
        import zarr

        group = zarr.open_group(path, mode="w", zarr_format=2 if fmt == "zarr2" else 3)
        group.create_array("counts", shape=(10,), dtype="i8")
    return path


def _directory_not_zarr(path: Path, fmt: str) -> Path:
    path.mkdir()
    (path / "notes.txt").write_text("not a store")
    (path / "sub").mkdir()
    return path


def _zarr_without_root_metadata(path: Path, fmt: str) -> Path:
    _valid(path, fmt)
    for name in (".zgroup", ".zattrs", ".zmetadata", "zarr.json"):
        if (path / name).exists():
            (path / name).unlink()
    return path


def _edit_values(element: str, edit: Callable[[np.ndarray], None]) -> Callable[[Path, str], Path]:
    """Change some stored values of an array in place (``edit`` changes the array it is given)."""
    def breaker(path: Path, fmt: str) -> Path:
        _valid(path, fmt)
        group = h5py.File(path, "r+") if fmt == "h5ad" else _zarr_group(path)
        values = np.asarray(group[element][...])
        edit(values)
        group[element][...] = values
        if fmt == "h5ad":
            group.close()
        return path
    return breaker


def _past_data(indptr: np.ndarray) -> None:
    indptr[-1] += 1000


def _past_width(indices: np.ndarray) -> None:
    indices[0] = 25  # X has 15 columns: scipy would put the value into the next row


def _float_indptr(path: Path, fmt: str) -> Path:
    _valid(path, fmt)
    group = h5py.File(path, "r+") if fmt == "h5ad" else _zarr_group(path)
    indptr = np.asarray(group["X/indptr"][...]).astype(np.float64)
    del group["X/indptr"]
    if fmt == "h5ad":
        group["X"].create_dataset("indptr", data=indptr)
        group.close()
    else:
        group["X"].create_array("indptr", data=indptr)
        drop_consolidated(path)
    return path


def _corrupted_chunk(path: Path, fmt: str) -> Path:
    _valid(path, fmt)
    chunks = sorted(p for p in (path / "X" / "data").rglob("*") if p.is_file() and not p.name.startswith(".")
                    and p.name != "zarr.json")
    chunks[0].write_bytes(b"\x00garbage" * 16)
    return path


def _blosc_chunk(damage: Callable[[bytes], bytes], consolidated: bool = False) -> Callable[[Path, str], Path]:
    """obsm/X_pca stored with Blosc (Zarr v2's default; chosen for v3), one of its chunks damaged; the
    store's metadata consolidated or not.
    """
    def breaker(path: Path, fmt: str) -> Path:
        import numcodecs
        from zarr.codecs import BloscCodec

        _valid(path, fmt)
        group = _zarr_group(path)
        values, attrs = np.asarray(group["obsm/X_pca"][...]), dict(group["obsm/X_pca"].attrs)
        del group["obsm/X_pca"]
        compressors = BloscCodec() if fmt == "zarr3" else numcodecs.Blosc()
        array = group["obsm"].create_array("X_pca", data=values, chunks=(20, 5), compressors=compressors)
        array.attrs.update(attrs)
        if consolidated:
            import zarr

            zarr.consolidate_metadata(path)
        else:
            drop_consolidated(path)
        chunk = sorted(p for p in (path / "obsm" / "X_pca").rglob("*") if p.is_file() and p.name[0].isdigit())[0]
        chunk.write_bytes(damage(chunk.read_bytes()))
        return path
    return breaker


def _claiming_4_gib(chunk: bytes) -> bytes:
    """The Blosc header's decompressed size set to 4 GiB - 1."""
    return chunk[:4] + (2**32 - 1).to_bytes(4, "little") + chunk[8:]


def _mudata_without_modality(path: Path, fmt: str) -> Path:
    mudata = pytest.importorskip("mudata")
    mdata = mudata.MuData({"rna": make_adata(), "atac": make_adata(seed=1)})
    if fmt == "h5ad":
        mdata.write_h5mu(path)
        with h5py.File(path, "r+") as f:
            del f["mod/atac"]
    else:
        with zarr_format(fmt):
            mdata.write_zarr(path)
        shutil.rmtree(path / "mod" / "atac")
        drop_consolidated(path)
    return path


ALL = ("h5ad", "zarr2", "zarr3")
ZARR = ("zarr2", "zarr3")
CORPUS = [
    Case("empty", ALL[:2], _empty, "", ValueError),
    Case("random_bytes", ("h5ad",), _random_bytes, "", ValueError),
    Case("truncated_hdf5", ("h5ad",), _truncated, "", OSError),
    Case("not_anndata", ALL, _hdf5_or_zarr_not_anndata, "", ValueError),
    Case("directory_not_zarr", ("zarr3",), _directory_not_zarr, "", ValueError),
    Case("zarr_without_root_metadata", ZARR, _zarr_without_root_metadata, "", ValueError),
    Case("unknown_encoding", ALL, _set_attr("X", "encoding-type", "fancy_matrix"), "X", ValueError),
    Case("sparse_without_indptr", ALL, _delete("X/indptr"), "X/indptr", ValueError),
    Case("indptr_past_data", ALL, _edit_values("X/indptr", _past_data), "X/indptr", ValueError),
    Case("indices_past_width", ALL, _edit_values("X/indices", _past_width), "X/indices", ValueError),
    Case("float_indptr", ALL, _float_indptr, "X/indptr", ValueError),
    Case("repeated_column", ALL, _set_attr("obs", "column-order", ["cat", "cat", "float"]), "obs", ValueError,
         access="s.obs"),
    Case("huge_shape", ALL, _set_attr("X", "shape", [10**12, 10**12]), "X/indptr", ValueError),
    Case("index_names_missing_column", ALL, _set_attr("obs", "_index", "no_such_column"), "obs/no_such_column",
         ValueError, access="s.obs_names"),
    Case("obsm_wrong_rows", ALL, _replace("obsm/X_pca", np.ones((59, 5))), "obsm/X_pca", ValueError,
         access="s.obsm['X_pca']"),
    Case("corrupted_chunk", ZARR, _corrupted_chunk, "X/data", OSError),
    # c-blosc trusts its header: cut short, a chunk would be decompressed past its end (garbage or a crash)
    Case("blosc_chunk_cut", ZARR, _blosc_chunk(lambda b: b[: len(b) // 2]), "obsm/X_pca", OSError,
         access="s.obsm['X_pca']", says="damaged Blosc-compressed chunk"),
    Case("blosc_chunk_cut_consolidated", ZARR, _blosc_chunk(lambda b: b[: len(b) // 2], consolidated=True),
         "obsm/X_pca", OSError, access="s.obsm['X_pca']", says="damaged Blosc-compressed chunk"),
    Case("blosc_chunk_claiming_4_gib", ZARR, _blosc_chunk(_claiming_4_gib), "obsm/X_pca", OSError,
         access="s.obsm['X_pca']", says="damaged Blosc-compressed chunk"),
    # mod-order names a modality mod/ does not hold: refused on open (mudata would silently drop it)
    Case("missing_modality", ALL, _mudata_without_modality, "mod", ValueError, access="s.mod['atac'].X",
         kind="mudata"),
]
PARAMS = [pytest.param(case, fmt, id=f"{case.name}-{fmt}") for case in CORPUS for fmt in case.formats]


def probe(path: Path, kind: str, access: str) -> dict:
    """Open ``path`` and evaluate ``access`` in a fresh interpreter (forked from one that imported
    shadows: :func:`helpers.fork_server`); what happened, as a dict.
    """
    code, stdout, stderr = fork_server().run(PROBE, path, kind, access)
    assert code == 0, f"the probe crashed (exit {code}):\n{stderr[-3000:]}"
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("case", "fmt"), PARAMS)
def test_malformed_input_gets_a_clear_error(case: Case, fmt: str, tmp_path):
    name = "bad" + (".h5mu" if case.kind == "mudata" and fmt == "h5ad" else suffix(fmt))
    path = case.breaker(tmp_path / name, fmt)
    result = probe(path, case.kind, case.access)
    assert result["stage"] != "done", f"no error: {case.access} gave {result.get('value')}"
    types = result["types"]
    detail = f"{types[0]}: {result['message']}\n{result['traceback']}"
    assert "shadows.errors.ShadowsError" in types, detail
    builtin = f"builtins.{case.builtin.__qualname__}"
    assert builtin in types, f"not a {builtin}: {detail}"
    assert name in result["message"], f"the message does not name the file: {detail}"
    if case.element:
        assert f"'{case.element}'" in result["message"], f"the message does not name '{case.element}': {detail}"
    assert case.says in result["message"], detail
    assert result["open_rss"] <= OPEN_RSS_LIMIT, f"opening added {result['open_rss'] / 2**20:.0f} MiB to the RSS"


def test_opening_stays_flat_in_the_number_of_columns(tmp_path, monkeypatch):
    """Columns are described when first used: opening a 1,000-column obs and printing it reads no
    column's metadata (counted: none, whatever the width), and one column is described alone when read.
    """
    import pandas as pd

    from shadows import AnnDataShadow
    from shadows.elements import dataframe

    obs = pd.DataFrame(np.zeros((4, 1_000), dtype=np.float32), columns=[f"c{i}" for i in range(1_000)],
                       index=[f"cell{i}" for i in range(4)])
    path = tmp_path / "wide.h5ad"
    ad.AnnData(obs=obs).write_h5ad(path)
    described = []
    original = dataframe._describe_column
    monkeypatch.setattr(dataframe, "_describe_column", lambda *a: described.append(a[2]) or original(*a))
    shadow = AnnDataShadow(path)
    assert "c999" in repr(shadow)
    assert described == ["obs/_index", "var/_index"]
    assert shadow.obs_vector("c123").shape == (4,) and described[-1] == "obs/c123" and len(described) == 3


def test_an_index_claiming_more_rows_than_x_is_answered_before_anything_is_sized_by_it(tmp_path):
    """A claimed length (10**12 rows against X's 60) sizes nothing: X, and obs, name the index as
    inconsistent with the data (X and obs's columns have 60 rows) when first used, before anything is read.
    """
    import h5py

    from shadows import AnnDataShadow, MalformedElementError

    path = tmp_path / "claims.h5ad"
    make_adata().write_h5ad(path)
    with h5py.File(path, "r+") as file:
        key = file["obs"].attrs["_index"]
        del file["obs"][key]
        file["obs"].create_dataset(key, shape=(10**12,), dtype=h5py.string_dtype(), chunks=(1000,))
    shadow = AnnDataShadow(path)
    with pytest.raises(MalformedElementError, match=r"claims.h5ad: element 'obs/cell_id'.*1000000000000.*X has 60"):
        _ = shadow.X
    with pytest.raises(MalformedElementError, match=r"claims.h5ad: element 'obs/cell_id'.*inconsistent"):
        _ = shadow.obs



def test_uns_nested_past_the_depth_limit_is_refused_quickly(tmp_path):
    """uns nested 1,000 levels deep (deeper than Python recurses) is refused at ``MAX_DEPTH`` levels, naming
    the element, within seconds (it was a RecursionError on Zarr, minutes of HDF5 link checks on h5ad).
    """
    from shadows.elements.registry import MAX_DEPTH

    path = _valid(tmp_path / "deep.h5ad", "h5ad")
    with h5py.File(path, "r+") as f:
        group = f["uns"]
        for _ in range(1000):
            group = group.create_group("d")
            group.attrs.update({"encoding-type": "dict", "encoding-version": "0.1.0"})
    result = probe(path, "anndata", "s.uns.materialize()")
    assert "shadows.errors.MalformedElementError" in result["types"], result
    assert f"more than {MAX_DEPTH} levels" in result["message"] and "'uns/d/d/d" in result["message"]


@pytest.mark.parametrize("fmt", ALL)
def test_slots_and_raw_that_contradict_their_parts_are_refused(fmt, tmp_path):
    """A slot stored with another encoding than dict, and a raw X wider than raw var, are refused (anndata
    would read an empty layers, and fail in the AnnData constructor)."""
    from shadows import AnnDataShadow, MalformedElementError

    path = _set_attr("layers", "encoding-type", "raw")(tmp_path / f"a{suffix(fmt)}", fmt)
    with pytest.raises(MalformedElementError, match=r"element 'layers'.*encoding-type 'raw'"):
        list(AnnDataShadow(path).layers)
    path = _set_attr("raw/X", "shape", [60, 15])(tmp_path / f"b{suffix(fmt)}", fmt)
    with pytest.raises(MalformedElementError, match=r"element 'raw/X'.*\(60, 12\)"):
        _ = AnnDataShadow(path).raw.X


@pytest.mark.parametrize("fmt", ZARR)
def test_an_array_zarr_cannot_parse_leaves_the_rest_of_a_consolidated_store_readable(tmp_path, fmt):
    """zarr refuses a whole consolidated store when one array's metadata names a data type it does not know
    (a newer zarr's, as zarr 3.4's ``struct`` for zarr 3.1): the other elements read all the same, the bad
    one is refused by name, and ``shadows info`` lists it as unreadable with the reason.
    """
    import zarr

    from shadows import AnnDataShadow, MalformedElementError
    from shadows.cli import info_data, info_text

    path = _valid(tmp_path / f"newer{suffix(fmt)}", fmt)
    group = _zarr_group(path)
    group["uns"].create_array("future", data=np.arange(3)).attrs.update(
        {"encoding-type": "array", "encoding-version": "0.2.0"})
    zarr.consolidate_metadata(path)
    key, unknown = ("dtype", "<q9") if fmt == "zarr2" else ("data_type", "no_such_type")
    meta_file = path / "uns" / "future" / (".zarray" if fmt == "zarr2" else "zarr.json")
    meta_file.write_text(json.dumps({**json.loads(meta_file.read_text()), key: unknown}))
    root_file = path / (".zmetadata" if fmt == "zarr2" else "zarr.json")
    root = json.loads(root_file.read_text())
    entries = root["metadata"] if fmt == "zarr2" else root["consolidated_metadata"]["metadata"]
    entries["uns/future/.zarray" if fmt == "zarr2" else "uns/future"][key] = unknown
    root_file.write_text(json.dumps(root))
    shadow = AnnDataShadow(path)
    expected = ad.read_h5ad(_valid(tmp_path / "same.h5ad", "h5ad"))
    np.testing.assert_array_equal(shadow.X.toarray(), expected.X.toarray())
    assert shadow.obs.equals(expected.obs)
    with pytest.raises(MalformedElementError, match=r"element 'uns/future'.*zarr"):
        shadow.uns["future"]
    listed = {e["path"]: e for e in info_data(str(path))["elements"]}
    assert listed["uns/future"]["encoding"] == "unreadable" and "uns/future" in listed["uns/future"]["problem"]
    assert listed["X"]["encoding"].startswith("csr_matrix")
    assert "uns/future" in info_text(str(path)).rsplit("\n\n", 1)[-1]
