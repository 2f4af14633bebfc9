"""Every Python example of README.md and docs/ runs as written, in order (one namespace per page), in a
folder holding files under the names the examples use: ``pbmc.h5ad`` (scanpy's pbmc68k_reduced),
``data.zarr``, ``store`` (a Zarr store without a telling name), ``pbmc.h5mu`` and ``any.file``.

The one example that reaches the network (object storage and a cluster) runs against the loopback S3
server the remote tests start, and a local ``distributed.Client``: only its URL, credentials and
scheduler address are replaced.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import warnings
from pathlib import Path

import anndata as ad
import pytest

from conftest import zarr_format

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", "docs/index.md", "docs/getting-started.md", "docs/coming-from-anndata.md"]
#: The executed tours (myst-nb notebooks): they make their own files. Sphinx runs them too, on one stack.
TOURS = ["docs/tours/features.md", "docs/tours/zarr.md"]


def blocks(page: str) -> list[str]:
    """The page's Python examples: ``python`` blocks, and a notebook page's code cells (without their
    ``:tags:`` lines)."""
    text = (ROOT / page).read_text()
    cells = re.findall(r"```\{code-cell\}[^\n]*\n(.*?)```", text, flags=re.S)
    code = [re.sub(r"\A(?::[^\n]*\n)+", "", cell) for cell in cells]
    return re.findall(r"```python\n(.*?)```", text, flags=re.S) + code


@pytest.fixture(scope="module")
def folder(tmp_path_factory, pbmc_path) -> Path:
    mudata = pytest.importorskip("mudata")
    folder = tmp_path_factory.mktemp("examples")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pbmc = ad.read_h5ad(pbmc_path)
        pbmc.write_h5ad(folder / "pbmc.h5ad")
        with zarr_format("zarr2"):
            pbmc.write_zarr(folder / "data.zarr")
        with zarr_format("zarr3"):
            pbmc.write_zarr(folder / "store")
        atac = pbmc[::2, :300].copy()  # half of the cells, other features
        atac.var_names = [f"peak{i}" for i in range(atac.n_vars)]
        mudata.MuData({"rna": pbmc, "atac": atac}).write_h5mu(folder / "pbmc.h5mu")
    shutil.copy(folder / "pbmc.h5ad", folder / "any.file")
    return folder


def on_loopback(code: str, options: dict, url: str) -> str:
    """The object-storage example pointed at the test's S3 server and a local cluster."""
    code = code.replace("s3://bucket/pbmc.zarr", url)
    code = re.sub(r"^options = .*$", f"options = {options!r}", code, flags=re.M)
    return code.replace('Client("tcp://scheduler:8786")', "Client(processes=False, dashboard_address=None)")


@pytest.mark.parametrize("tour", TOURS)
def test_every_cell_of_a_tour_runs_in_order(tour, tmp_path, monkeypatch):
    pytest.importorskip("mudata")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    cells = blocks(tour)
    assert len(cells) > 10
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for number, code in enumerate(cells):
                try:
                    exec(compile(code, f"{tour} cell {number + 1}", "exec"), namespace)
                except Exception as error:
                    raise AssertionError(f"{tour}, cell {number + 1} failed: {error!r}\n{code}") from error
    finally:
        for name in ("client", "cluster"):
            if hasattr(namespace.get(name), "close"):
                namespace[name].close()


@pytest.mark.parametrize("page", PAGES)
def test_every_example_of_a_page_runs_in_order(page, folder, s3, tmp_path, monkeypatch):
    options, fs = s3
    url = f"s3://data/{page.replace('/', '-')}.zarr"
    fs.put(str(folder / "data.zarr"), url[5:], recursive=True)
    work = tmp_path / "work"
    shutil.copytree(folder, work)  # each page writes into its own copy
    monkeypatch.chdir(work)
    namespace: dict = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for number, code in enumerate(blocks(page)):
                if "import torch" in code and importlib.util.find_spec("torch") is None:
                    continue  # the training example needs torch (CI installs it on Python 3.11)
                if "s3://" in code:
                    code = on_loopback(code, options, url)
                try:
                    exec(compile(code, f"{page} example {number + 1}", "exec"), namespace)
                except Exception as error:
                    raise AssertionError(f"{page}, example {number + 1} failed: {error!r}\n{code}") from error
    finally:
        client = namespace.get("client")
        if client is not None:
            client.close()
    assert namespace, f"{page} has no Python examples"
