"""The README's tours run as written, on scanpy's bundled pbmc68k_reduced (and a MuData made from it)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import anndata as ad
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _tours() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2, "the README has no AnnData and MuData tours"
    return blocks


def test_readme_tour_runs(pbmc_path):
    namespace: dict = {}
    exec(_tours()[0].replace('"pbmc.h5ad"', repr(str(pbmc_path))), namespace)
    adata, view, lazy = namespace["adata"], namespace["view"], namespace["lazy"]
    assert view.is_view and view.n_obs == int((adata.obs["louvain"] == "3").sum())
    assert "  Xᐁ" in repr(lazy) and "X_pcaᐁ" in repr(lazy.obsm)


def test_readme_mudata_tour_runs(pbmc_path, tmp_path):
    mudata = pytest.importorskip("mudata")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rna = ad.read_h5ad(pbmc_path)
        atac = rna[::2, :300].copy()  # half of the cells, other features
        atac.var_names = [f"peak{i}" for i in range(atac.n_vars)]
        path = tmp_path / "pbmc.h5mu"
        mudata.MuData({"rna": rna, "atac": atac}).write_h5mu(path)
    namespace: dict = {}
    exec(_tours()[1].replace('"pbmc.h5mu"', repr(str(path))), namespace)
    mdata, sub = namespace["mdata"], namespace["sub"]
    in_cluster = (rna.obs["louvain"] == "3").to_numpy()
    assert sub.n_obs == in_cluster.sum() and sub["atac"].n_obs == in_cluster[::2].sum()
    assert "rna:louvain▲" in repr(mdata) and "ᐁ" not in repr(mdata)
