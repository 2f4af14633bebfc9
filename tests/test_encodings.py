"""Encodings users' files hold, written by the installed anndata in every format: record arrays and None
in uns (scanpy's ``rank_genes_groups`` results), read equal to anndata's own read, and ``shadows info``
describes them."""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scanpy as sc

from conftest import FORMATS, drop_consolidated, read_oracle, suffix, write, zarr_format
from helpers import assert_shadow_matches, assert_value_equal
from shadows import AnnDataShadow
from shadows.cli import info_data, info_text, main


@pytest.fixture(scope="module")
def ranked_files(tmp_path_factory, pbmc_path):
    root = tmp_path_factory.mktemp("encodings")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = ad.read_h5ad(pbmc_path)
        sc.tl.rank_genes_groups(adata, "louvain", n_genes=5)  # record arrays; params.layer is None
    return {fmt: write(adata, root / f"ranked_{fmt}{suffix(fmt)}", fmt) for fmt in FORMATS}


@pytest.mark.parametrize("fmt", FORMATS)
def test_record_arrays_and_none_in_uns_read_as_anndata_reads_them(ranked_files, fmt):
    path = ranked_files[fmt]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = ad.read_h5ad(path) if fmt == "h5ad" else ad.read_zarr(path)
    shadow = AnnDataShadow(path)
    assert shadow.uns["rank_genes_groups"]["names"].dtype.names  # a record array
    assert_value_equal(shadow.uns.materialize(), dict(expected.uns), "uns")
    assert "uns/rank_genes_groups/names" in {e["path"] for e in info_data(str(path))["elements"]}
    assert "rank_genes_groups" in info_text(str(path))  # the table prints without a traceback


@pytest.fixture(scope="module")
def awkward_files(tmp_path_factory):
    ak = pytest.importorskip("awkward")
    root = tmp_path_factory.mktemp("awkward")
    adata = ad.AnnData(np.ones((4, 3), dtype=np.float32))
    adata.obsm["ragged"] = ak.Array([[1, 2], [3], [], [4, 5, 6]])
    adata.varm["records"] = ak.Array([{"x": 1, "y": [1.5]}, {"x": 2, "y": []}, {"x": 3, "y": [2.5, 3.5]}])
    adata.uns["nested"] = ak.Array([[{"a": 1}], [{"a": 2}, {"a": 3}]])
    return {fmt: write(adata, root / f"awkward_{fmt}{suffix(fmt)}", fmt) for fmt in FORMATS}


@pytest.mark.parametrize("fmt", FORMATS)
def test_awkward_arrays_read_as_anndata_reads_them(awkward_files, fmt, tmp_path):
    path = awkward_files[fmt]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = ad.read_h5ad(path) if fmt == "h5ad" else ad.read_zarr(path)
    for backend in ("numpy", "dask"):
        shadow = AnnDataShadow(path, array_backend=backend)
        assert shadow.obsm["ragged"].tolist() == expected.obsm["ragged"].tolist()
        assert shadow.varm["records"].tolist() == expected.varm["records"].tolist()
        assert shadow.uns["nested"].tolist() == expected.uns["nested"].tolist()
    view = AnnDataShadow(path)[[3, 1], 1:]
    assert view.obsm["ragged"].tolist() == expected[[3, 1], 1:].obsm["ragged"].tolist()
    assert view.varm["records"].tolist() == expected[[3, 1], 1:].varm["records"].tolist()
    view.write_h5ad(tmp_path / "view.h5ad")
    assert ad.read_h5ad(tmp_path / "view.h5ad").obsm["ragged"].tolist() == [[4, 5, 6], [3]]


def test_without_awkward_the_error_names_the_package(awkward_files, monkeypatch):
    import sys

    from shadows import BackendUnavailableError

    shadow = AnnDataShadow(awkward_files["h5ad"])
    assert "ragged" in repr(shadow)  # described from metadata without it
    monkeypatch.setitem(sys.modules, "awkward", None)
    with pytest.raises(BackendUnavailableError, match=r"obsm/ragged.*pip install awkward"):
        shadow.obsm["ragged"]
    assert issubclass(BackendUnavailableError, ImportError)
    assert "obsm/ragged" in info_text(str(awkward_files["h5ad"]))  # described without it


# A matrix of files the installed anndata writes: every format, with and without the settings that
# change what it stores (sharding, consolidation, the smallest sparse index dtype, nullable strings).
pytestmark = [pytest.mark.filterwarnings("ignore:The data type .* does not have a Zarr V3 specification"),
              pytest.mark.filterwarnings("ignore:Support for Awkward Arrays is currently experimental")]
MIN_INDEX = "write_csr_csc_indices_with_min_possible_dtype"  # anndata >= 0.12.9
NULLABLE_STRINGS = "allow_write_nullable_strings"  # anndata >= 0.11
SHARD = "auto_shard_zarr_v3"  # anndata >= 0.12
VARIANTS = {
    "h5ad": ("h5ad", {}, True),
    "h5ad-min-index-nullable-strings": ("h5ad", {MIN_INDEX: True, NULLABLE_STRINGS: True}, True),
    "zarr2": ("zarr2", {}, True),
    "zarr2-unconsolidated-min-index": ("zarr2", {MIN_INDEX: True}, False),
    "zarr3-sharded": ("zarr3", {SHARD: True}, True),
    "zarr3-unsharded-unconsolidated-min-index-nullable-strings":
        ("zarr3", {SHARD: False, MIN_INDEX: True, NULLABLE_STRINGS: True}, False),
}
N_OBS, N_VARS = 300, 20  # column indices fit uint8, row indices (and obsp's) uint16


def encodings_adata(nullable_strings: bool) -> ad.AnnData:
    """Every encoding anndata writes for plain values: nullable integers, booleans and strings (when
    ``nullable_strings``), string columns (pandas 3's ``str``), text in each type numpy has (object,
    fixed-length unicode and bytes) in obsm and uns, record arrays with text fields, sparse matrices whose
    indices fit uint8 and uint16, and awkward arrays when ``awkward`` is installed.
    """
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    strings = np.array([f"s{i}" for i in range(N_OBS)], dtype=object)
    obs = pd.DataFrame({
        "Int8": pd.array(rng.integers(-5, 5, N_OBS), dtype="Int8"),
        "UInt64": pd.array(rng.integers(0, 5, N_OBS), dtype="UInt64"),
        "boolean": pd.array(rng.choice([True, False], N_OBS), dtype="boolean"),
        "text": strings.copy(),  # unique: stays a string column (pandas 3: dtype str), not a categorical
        "cat": pd.Categorical(rng.choice(["a", "b"], N_OBS)),
    }, index=[f"c{i}" for i in range(N_OBS)])
    if nullable_strings:
        obs["string_na"] = pd.array(strings, dtype=pd.StringDtype("python"))
        obs["string_nan"] = pd.array(strings, dtype=pd.StringDtype("python", na_value=np.nan))
    for column in obs.columns.drop(["text", "cat"]):
        obs.loc["c3", column] = None
    X = sp.random(N_OBS, N_VARS, density=0.3, format="csr", dtype=np.float32, random_state=0)
    adata = ad.AnnData(
        X=X, obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(N_VARS)]),
        layers={"csc": sp.csc_matrix(X), "int16_indices": sp.csc_matrix(X)},
        obsm={"U": np.array([["ab", "c"]] * N_OBS), "S": np.array([[b"ab", b"xyz"]] * N_OBS)},
        obsp={"wide": sp.random(N_OBS, N_OBS, density=0.02, format="csr", random_state=1)},
        uns={"U": np.array(["x", "yy", "zzz"]), "S": np.array([b"x", b"yy"]), "O": np.array(["p", "q"], dtype=object),
             "U2d": np.array([["a", "bc"], ["d", "e"]]),
             "records": np.array([(1, 1.5, "a"), (2, 2.5, "bb")], dtype=[("i", "<i4"), ("f", "<f8"), ("u", "<U3")]),
             "byte_records": np.array([(1, b"a"), (2, b"bb")], dtype=[("i", "<i8"), ("s", "S2")]),
             "Int32": pd.array([1, None, 3], dtype="Int32"), "boolean": pd.array([True, None], dtype="boolean")},
    )
    if nullable_strings:
        adata.uns["string"] = pd.array(["a", None], dtype="string")
    with contextlib.suppress(ImportError):
        import awkward as ak

        adata.obsm["ragged"] = ak.Array([[i] * (i % 3) for i in range(N_OBS)])
    return adata


@contextlib.contextmanager
def anndata_settings(**settings):
    """anndata's settings changed meanwhile (each must exist in the installed anndata)."""
    previous = {name: getattr(ad.settings, name) for name in settings}
    try:
        for name, value in settings.items():
            setattr(ad.settings, name, value)
        yield
    finally:
        for name, value in previous.items():
            setattr(ad.settings, name, value)


def _as_int16_indices(path, element: str) -> None:
    """Store ``element``'s sparse indices as int16 (what another writer may choose: signed, smallest)."""
    if path.suffix == ".h5ad":
        import h5py

        with h5py.File(path, "r+") as f:
            values = f[f"{element}/indices"][()]
            del f[f"{element}/indices"]
            f.create_dataset(f"{element}/indices", data=values.astype(np.int16))
        return
    import zarr

    group = zarr.open_group(path, mode="r+", use_consolidated=False)
    values = group[f"{element}/indices"][()]
    del group[f"{element}/indices"]
    group[element].create_array("indices", data=values.astype(np.int16), chunks=values.shape)
    zarr.consolidate_metadata(path)


def _add_fixed_length_text(path) -> None:
    """Text as zarr stores fixed-length unicode (``<U``: format 3's ``fixed_length_utf32``), which anndata
    does not write but reads (another writer's, or zarr's own ``create_array(dtype="<U2")``).
    """
    import zarr

    group = zarr.open_group(path, mode="r+", use_consolidated=False)
    for where, values in (("obsm", np.array([["ab", "c"]] * N_OBS)), ("uns", np.array(["x", "yz"]))):
        array = group[where].create_array("U_fixed", data=values, chunks=values.shape)
        array.attrs.update({"encoding-type": "string-array", "encoding-version": "0.2.0"})
    zarr.consolidate_metadata(path)


@pytest.fixture(scope="module")
def matrix_files(tmp_path_factory):
    """``variant -> (path, anndata's read)``, written by the installed anndata."""
    root = tmp_path_factory.mktemp("matrix")
    made = {}
    for variant in VARIANTS:
        path = write_variant(variant, root)
        made[variant] = path, read_oracle(path)
    return made


def write_variant(variant: str, folder) -> Path:
    """Write the matrix file ``variant`` into ``folder`` with the installed anndata; its path."""
    fmt, settings, consolidated = VARIANTS[variant]
    path = folder / f"{variant}{suffix(fmt)}"
    adata = encodings_adata(bool(settings.get(NULLABLE_STRINGS)))
    with warnings.catch_warnings(), anndata_settings(**settings), zarr_format(fmt):
        warnings.simplefilter("ignore")
        # string columns stay as they are (unique but for a missing value: a categorical otherwise)
        getattr(adata, "write_h5ad" if fmt == "h5ad" else "write_zarr")(path, convert_strings_to_categoricals=False)
    _as_int16_indices(path, "layers/int16_indices")
    if fmt != "h5ad":
        _add_fixed_length_text(path)
    if not consolidated:
        drop_consolidated(path)
    return path


@pytest.mark.parametrize("variant", VARIANTS)
def test_matrix_stores_what_it_says(matrix_files, variant):
    """The files hold the encodings the matrix is for (anndata's settings took effect)."""
    from shadows.backends.zarr_meta import ZarrMetadata

    path, _ = matrix_files[variant]
    fmt, settings, consolidated = VARIANTS[variant]
    shadow = AnnDataShadow(path)
    small = settings.get(MIN_INDEX, False)
    assert shadow.file["X/indices"].dtype == (np.uint8 if small else np.int32)
    assert shadow.file["obsp/wide/indices"].dtype == (np.uint16 if small else np.int32)
    assert shadow.file["layers/int16_indices/indices"].dtype == np.int16
    if settings.get(NULLABLE_STRINGS):
        assert shadow.file["obs/string_na"].attrs["encoding-type"] == "nullable-string-array"
    if fmt != "h5ad":
        assert ZarrMetadata(path).consolidated == consolidated
    if fmt == "zarr3":
        import json

        codecs = json.loads((path / "X" / "data" / "zarr.json").read_text())["codecs"]
        assert (codecs[0]["name"] == "sharding_indexed") == settings[SHARD]


@pytest.mark.parametrize("variant", VARIANTS)
def test_matrix_reads_as_anndata_reads_it(matrix_files, variant):
    path, oracle = matrix_files[variant]
    assert_shadow_matches(AnnDataShadow(path), oracle)


@pytest.mark.parametrize("variant", VARIANTS)
def test_matrix_views_read_as_anndata_views(matrix_files, variant):
    path, oracle = matrix_files[variant]
    rows = np.random.default_rng(1).permutation(N_OBS)[:40]
    cols = np.array([0, 3, 4, 11, 19])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = oracle[rows, cols]
        expected_of_view = expected[np.arange(40)[::-3]]
    view = AnnDataShadow(path)[rows, cols]
    assert_shadow_matches(view, expected)
    assert_shadow_matches(view[np.arange(40)[::-3]], expected_of_view)


@pytest.mark.parametrize("variant", VARIANTS)
def test_matrix_shadows_info(matrix_files, variant, capsys):
    path, _ = matrix_files[variant]
    assert main(["info", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and "obsm/U" in out and "uns/records" in out
    assert main(["info", "--json", str(path)]) == 0
    elements = {e["path"]: e for e in json.loads(capsys.readouterr().out)["elements"]}
    assert elements["layers/int16_indices"]["encoding"].startswith("csc_matrix")
    assert elements["uns/records"]["dtype"] == "structured (3 fields)"


@pytest.mark.parametrize("variant", VARIANTS)
def test_matrix_view_exports_as_anndata_writes_it(matrix_files, variant, tmp_path):
    """A view's text arrays (numpy's StringDType as zarr reads them, bytes, objects) written to the other
    format read back as anndata's view of the source."""
    path, oracle = matrix_files[variant]
    rows = np.array([7, 2, 250, 9])
    target = tmp_path / ("view.zarr" if path.suffix == ".h5ad" else "view.h5ad")
    view = AnnDataShadow(path)[rows]
    view.write_zarr(target) if target.suffix == ".zarr" else view.write_h5ad(target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = oracle[rows]
    written = read_oracle(target)
    for key in ("U", "S"):
        np.testing.assert_array_equal(written.obsm[key], expected.obsm[key])
        assert written.obsm[key].dtype.kind == expected.obsm[key].dtype.kind or \
            {written.obsm[key].dtype.kind, expected.obsm[key].dtype.kind} <= set("OT"), key
    assert_value_equal(written.obs, expected.obs, "obs")


MU_FORMATS = ["h5mu", "zarr2", "zarr3"]


@pytest.fixture(scope="module")
def mu_matrix_files(tmp_path_factory):
    """``format -> path`` of a MuData the installed mudata writes, one modality holding the encodings of
    :func:`encodings_adata` (nullable strings where the installed anndata writes them) and text in the
    global obsm and uns.
    """
    mudata = pytest.importorskip("mudata")
    from test_mudata import write_mudata

    root = tmp_path_factory.mktemp("mu_matrix")
    adata = encodings_adata(nullable_strings=True)
    other = ad.AnnData(np.ones((N_OBS, 3), dtype=np.float32), obs=adata.obs[[]])
    other.var_names = ["p0", "p1", "p2"]
    mdata = mudata.MuData({"enc": adata, "other": other})
    mdata.obsm["U"] = np.array([["u", "vw"]] * N_OBS)
    mdata.uns["S"] = np.array([b"x", b"yz"])
    with anndata_settings(**{NULLABLE_STRINGS: True, MIN_INDEX: True}):
        return {fmt: write_mudata(mdata, root / f"mu_{fmt}.{'h5mu' if fmt == 'h5mu' else 'zarr'}", fmt)
                for fmt in MU_FORMATS}


@pytest.mark.parametrize("fmt", MU_FORMATS)
def test_mudata_matrix_reads_as_mudata_reads_it(mu_matrix_files, fmt, capsys):
    from helpers import assert_mudata_matches
    from shadows import MuDataShadow
    from test_mudata import read_mudata

    path = mu_matrix_files[fmt]
    oracle = read_mudata(path)
    shadow = MuDataShadow(path)
    assert_mudata_matches(shadow, oracle)
    rows = np.random.default_rng(2).permutation(N_OBS)[:30]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = oracle[rows]
    assert_mudata_matches(shadow[rows], expected)
    assert main(["info", str(path)]) == 0 and main(["info", "--json", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and "mod/enc/obsm/U" in out


@pytest.mark.parametrize("fmt", FORMATS)
def test_written_by_other_tools_one_dimensional_obsm_and_text_labelled_array(tmp_path, fmt):
    """What other writers put in files: a one-dimensional obsm/varm array (anndata reads it as a column)
    and, in HDF5, variable-length strings labelled ``array`` (anndata reads them as bytes, as h5py gives
    them): a shadow, a view of it and an assignment give what anndata gives.
    """
    import h5py
    import pandas as pd
    import zarr

    from conftest import make_adata

    adata = make_adata()
    adata.uns["frame"] = pd.DataFrame({"v": [1, 2, 3]}, index=["a", "b", "c"])
    path = write(adata, tmp_path / f"other{suffix(fmt)}", fmt)
    text = np.array([f"s{i}" for i in range(60)], dtype=object)
    if fmt == "h5ad":
        with h5py.File(path, "r+") as file:
            file["obsm/one"] = np.arange(60.0)
            file["varm/one"] = np.arange(15, dtype=np.int32)
            file.create_dataset("obsm/text", data=text, dtype=h5py.string_dtype())
            del file["uns/frame/_index"]
            file.create_dataset("uns/frame/_index", data=np.array(["a", "b", "c"], dtype=object),
                                dtype=h5py.string_dtype())
            for name in ("obsm/one", "varm/one", "obsm/text", "uns/frame/_index"):
                file[name].attrs.update({"encoding-type": "array", "encoding-version": "0.2.0"})
    else:
        group = zarr.open_group(path, mode="r+", use_consolidated=False)
        for name, values in (("obsm/one", np.arange(60.0)), ("varm/one", np.arange(15, dtype=np.int32))):
            parent, key = name.split("/")
            group[parent].create_array(key, data=values).attrs.update(
                {"encoding-type": "array", "encoding-version": "0.2.0"})
        drop_consolidated(path)
    expected = read_oracle(path)
    assert expected.obsm["one"].shape == (60, 1)
    shadow = AnnDataShadow(path)
    assert_shadow_matches(shadow, expected)
    assert_shadow_matches(shadow[5:25], expected[5:25])
    lazy = AnnDataShadow(path, array_backend="dask")
    if fmt == "h5ad":
        assert_value_equal(lazy.obsm["text"].compute(), expected.obsm["text"].reshape(-1), "dask obsm/text")
        assert isinstance(shadow.uns["frame"].index[0], bytes)
    shadow.obsm["assigned"] = np.arange(60)
    memory = expected.copy()
    memory.obsm["assigned"] = np.arange(60)
    assert shadow.obsm["assigned"].shape == memory.obsm["assigned"].shape == (60, 1)


WRITTEN = Path(__file__).parent / "data" / "written"
WRITTEN_FILES = sorted(f"{p.parent.name}/{p.name}" for p in WRITTEN.glob("anndata-*/*") if p.name != "VERSIONS")


@pytest.fixture(scope="module")
def written_file(tmp_path_factory):
    """``name -> path`` of a file another stack (or this one) wrote, Zarr stores unzipped."""
    import zipfile

    root = tmp_path_factory.mktemp("written")

    def get(name: str) -> Path:
        source = WRITTEN / name
        if source.suffix != ".zip":
            return source
        path = root / name.replace("/", "_").removesuffix(".zip")
        if not path.exists():
            with zipfile.ZipFile(source) as archived:
                archived.extractall(path)
        return path

    return get


@pytest.mark.parametrize("name", WRITTEN_FILES)
def test_files_every_stack_writes_read_as_the_installed_anndata_reads_them(written_file, name, capsys):
    """The encodings matrix and a MuData as anndata 0.12/mudata 0.3 (zarr 3.1) and anndata 0.13/mudata
    0.4 (zarr 3.4, sharded v3) write them (``tests/data/written/make.py``), read on this stack: a shadow and
    a view equal the installed anndata's (mudata's) read, and ``shadows info`` describes them.
    """
    path = written_file(name)
    if "mudata" in name:
        pytest.importorskip("mudata")
        from helpers import assert_mudata_matches
        from shadows import MuDataShadow
        from test_mudata import read_mudata

        assert_mudata_matches(MuDataShadow(path), read_mudata(path))
    else:
        try:
            oracle = read_oracle(path)
        except ValueError as error:  # zarr 3.1 cannot read zarr 3.4's record arrays: element by element
            if not (name.startswith("anndata-0.13") and "zarr3" in name and "No Zarr data type" in str(error)):
                raise
            _matches_anndata_element_by_element(path)
            return
        assert_shadow_matches(AnnDataShadow(path), oracle)
        rows = np.random.default_rng(2).permutation(N_OBS)[:30]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = oracle[rows]
        assert_shadow_matches(AnnDataShadow(path)[rows], expected)
    assert main(["info", str(path)]) == 0
    assert main(["info", "--json", str(path)]) == 0
    capsys.readouterr()


def _matches_anndata_element_by_element(path: Path) -> None:
    """For a store the installed anndata cannot read whole (zarr 3.1 does not know zarr 3.4's ``struct``
    data type of record arrays): each element anndata reads, a shadow reads equal; each it cannot, a
    shadow refuses with a ShadowsError naming the element, and ``shadows info`` lists it as unreadable.
    """
    import zarr
    from anndata.io import read_elem

    from shadows import ShadowsError

    group = zarr.open_group(path, mode="r", use_consolidated=False)
    shadow = AnnDataShadow(path)
    elements = ["X", "obs", "var"] + [f"{slot}/{key.name}" for slot in ("layers", "obsm", "obsp", "uns")
                                      for key in sorted((path / slot).iterdir()) if key.is_dir()]
    refused, read = [], {}
    for element in elements:
        try:
            read[element] = read_elem(group[element])
        except Exception:
            slot, _, key = element.partition("/")
            with pytest.raises(ShadowsError, match=element):
                getattr(shadow, slot)[key]
            refused.append(element)
    # what anndata's constructor makes of the parts it read (a frame without columns, 1-d obsm...)
    slots = {slot: {e.split("/", 1)[1]: v for e, v in read.items() if e.startswith(f"{slot}/")}
             for slot in ("layers", "obsm", "obsp")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oracle = ad.AnnData(X=read["X"], obs=read["obs"], var=read["var"], **slots)
    for element in read:
        slot, _, key = element.partition("/")
        expected = read[element] if slot == "uns" else getattr(oracle, slot)[key] if key else getattr(oracle, slot)
        assert_value_equal(getattr(shadow, slot)[key] if key else getattr(shadow, slot), expected, element)
    assert refused, "anndata failed on the whole file but on no element"
    listed = {e["path"]: e for e in info_data(str(path))["elements"]}
    assert all(listed[element]["encoding"] == "unreadable" for element in refused)
