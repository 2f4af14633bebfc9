"""The README's tour runs as written, on scanpy's bundled pbmc68k_reduced."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_tour_runs(pbmc_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no python tour"
    namespace: dict = {}
    exec(blocks[0].replace('"pbmc.h5ad"', repr(str(pbmc_path))), namespace)
    adata, view, lazy = namespace["adata"], namespace["view"], namespace["lazy"]
    assert view.is_view and view.n_obs == int((adata.obs["louvain"] == "3").sum())
    assert "  Xᐁ" in repr(lazy) and "X_pcaᐁ" in repr(lazy.obsm)
