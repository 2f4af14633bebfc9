"""anndata's archived files of past releases (``tests/data/archives``, copied from anndata's source
release: see its README) open as shadows, read equal to anndata's own read of the same file, views
included, and ``shadows info`` describes each without a traceback.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import zarr

from helpers import assert_shadow_matches
from shadows import AnnDataShadow, read
from shadows.cli import main

ARCHIVES = Path(__file__).parent / "data" / "archives"
# anndata's own warnings on old files (the shadow reads their unencoded uns scalars through anndata)
pytestmark = [pytest.mark.filterwarnings("ignore:Element .* was written without encoding metadata"),
              pytest.mark.filterwarnings("ignore:Support for Awkward Arrays is currently experimental"),
              pytest.mark.filterwarnings("ignore:The 'mode.chained_assignment' option is deprecated")]
FILES = sorted(f"{p.parent.name}/{p.name}" for p in ARCHIVES.glob("v*/adata.*"))


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """``name -> (path a shadow opens, anndata's read)``: a zipped Zarr store is unzipped first, and
    anndata reads the zip itself (through ``zarr.storage.ZipStore``), as its own tests do.
    """
    root = tmp_path_factory.mktemp("archives")
    opened: dict[str, tuple[Path, ad.AnnData]] = {}

    def get(name: str) -> tuple[Path, ad.AnnData]:
        if name not in opened:
            source = ARCHIVES / name
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if source.suffix == ".zip":
                    path = root / name.replace("/", "_").removesuffix(".zip")
                    with zipfile.ZipFile(source) as archived:
                        archived.extractall(path)
                    store = zarr.storage.ZipStore(source, mode="r")
                    try:
                        oracle = ad.read_zarr(store)
                    finally:
                        store.close()
                else:
                    path, oracle = source, ad.read_h5ad(source)
            opened[name] = path, oracle
        return opened[name]

    return get


def test_every_release_is_here():
    assert {name.split("/")[0] for name in FILES} >= {"v0.5.0", "v0.7.0", "v0.7.8", "v0.11.4", "v0.13.3"}
    assert len(FILES) == 9


@pytest.mark.parametrize("name", FILES)
def test_archived_file_reads_as_anndata_reads_it(archive, name):
    path, oracle = archive(name)
    shadow = read(path)
    assert type(shadow) is AnnDataShadow
    assert_shadow_matches(shadow, oracle)


@pytest.mark.parametrize("name", FILES)
def test_views_of_archived_file_read_as_anndata_views(archive, name):
    path, oracle = archive(name)
    n_obs, n_vars = oracle.shape
    rng = np.random.default_rng(0)
    rows = rng.permutation(n_obs)[: max(1, n_obs // 2)]  # unsorted positions
    cols = np.sort(rng.permutation(n_vars)[: max(1, n_vars // 2)])
    mask = np.arange(n_obs) % 2 == 1
    # position arrays on both axes: anndata's views of some mixed keys hit a scipy reshape bug
    for key in [(rows, cols), (mask, np.arange(n_vars)), (rows[:3], np.arange(n_vars)[::-1])]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = oracle[key]
            expected_of_view = expected[::-1]
        view = AnnDataShadow(path)[key]
        assert view.is_view
        assert_shadow_matches(view, expected)
        assert_shadow_matches(view[::-1], expected_of_view)  # a view of a view


@pytest.mark.parametrize("name", FILES)
def test_shadows_info_describes_archived_file(archive, name, capsys):
    path, oracle = archive(name)
    assert main(["info", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and f"{oracle.n_obs} × {oracle.n_vars}" in out
    assert main(["info", "--json", str(path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "AnnData" and data["shape"] == list(oracle.shape)
    assert data["elements"] or not oracle.n_obs * oracle.n_vars
