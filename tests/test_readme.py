"""The README's examples run as written: each on its own, in a folder holding the files its first example
writes (scanpy's bundled pbmc68k_reduced as an h5ad, and in a MuData); the tours also on scanpy's file as
it is bundled (written by anndata < 0.7).
"""

from __future__ import annotations

import ast
import builtins
import re
import warnings
from pathlib import Path

import anndata as ad
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def _block(*words: str) -> str:
    """The README's one python block holding every one of ``words``."""
    found = [b for b in _blocks() if all(w in b for w in words)]
    assert len(found) == 1, f"{len(found)} blocks hold {words}"
    return found[0]


def _data_block() -> str:
    return _block('write_h5ad("pbmc.h5ad")', 'write_h5mu("pbmc.h5mu")')


def _tour() -> str:
    return _block('shadows.read_h5ad("pbmc.h5ad")', "lazy.persist(")


def _mudata_tour() -> str:
    return _block('shadows.read_h5mu("pbmc.h5mu")', "mdata.clear_cache()")


def _remote() -> str:
    return _block("s3://")


def _unbound_names(code: str) -> set[str]:
    """Names ``code`` reads that it neither assigns nor imports (nor are builtins)."""
    tree = ast.parse(code)
    bound = set(dir(builtins))
    read = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return read - bound


def test_every_readme_block_stands_on_its_own():
    """No example uses a name that an earlier one defined (the writing example used ``cells`` of the
    remote one, ``mdata`` of the MuData tour).
    """
    blocks = _blocks()
    assert len(blocks) >= 5
    for block in blocks:
        assert _unbound_names(block) == set(), block.splitlines()[0]


def test_readme_examples_run_each_on_its_own(tmp_path, monkeypatch):
    """In a fresh folder: the data example writes pbmc.h5ad and pbmc.h5mu, then every other local
    example runs in a namespace of its own (the remote one needs a bucket and a scheduler).
    """
    pytest.importorskip("mudata")
    pytest.importorskip("scanpy")
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(_data_block(), {})
        assert (tmp_path / "pbmc.h5ad").exists() and (tmp_path / "pbmc.h5mu").exists()
        remote, data = _remote(), _data_block()
        for block in _blocks():
            if block in (remote, data):
                continue
            namespace: dict = {}
            exec(block, namespace)
            for value in namespace.values():
                if hasattr(value, "close") and type(value).__name__.endswith("Shadow"):
                    value.close()
    assert ad.read_h5ad(tmp_path / "subset.h5ad").n_obs == 700  # the writing example's last export


def test_readme_tour_runs(pbmc_path):
    namespace: dict = {}
    exec(_tour().replace('"pbmc.h5ad"', repr(str(pbmc_path))), namespace)
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
    exec(_mudata_tour().replace('"pbmc.h5mu"', repr(str(path))), namespace)
    mdata, sub = namespace["mdata"], namespace["sub"]
    in_cluster = (rna.obs["louvain"] == "3").to_numpy()
    assert sub.n_obs == in_cluster.sum() and sub["atac"].n_obs == in_cluster[::2].sum()
    assert "rna:louvain▲" in repr(mdata) and "ᐁ" not in repr(mdata)
