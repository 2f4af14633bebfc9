"""Jupyter's HTML repr: built from metadata (no data read), and rendered by a real headless browser."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess

import numpy as np
import pytest

from helpers import count_reads
from shadows import AnnDataShadow, MuDataShadow


def _rows(html: str, details: bool = False) -> dict[tuple[str, str], list[str]]:
    """(slot, key) → encoding, shape and dtype of each table row (``details``: and the detail cell), markup
    stripped.
    """
    rows = {}
    for row in re.findall(r"<tr>(.*?)</tr>", html):
        cells = [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
        if cells:
            rows[(cells[0], cells[1])] = cells[2:] if details else cells[2:5]
    return rows


def test_html_repr_lists_every_element_from_metadata(path, monkeypatch):
    shadow = AnnDataShadow(path)
    _ = shadow.obsm["X_pca"]  # held in memory: ᐁ
    shadow.obsm["X_new"] = np.ones((60, 2), dtype=np.float32)  # staged: ▲
    shadow.obs["score"] = np.arange(60.0)
    with count_reads(monkeypatch) as reads:
        html = shadow._repr_html_()
        view_html = shadow[::3, 2:7]._repr_html_()
    assert sum(reads.values()) == 0, dict(reads)
    rows = _rows(html)
    assert rows[("X", "")] == ["csr_matrix 0.1.0", "60 × 15", "float32"]
    assert rows[("obsm", "X_pcaᐁ")] == ["array 0.2.0", "60 × 5", "float32"]
    assert rows[("obsm", "X_new▲")] == ["in memory: ndarray", "60 × 2", "float32"]
    assert rows[("obs", "score▲")][1:] == ["60", "float64"]
    assert rows[("obs", "catᐁ")] == ["categorical 0.2.0", "60", "category"]  # obs was read to stage a column
    assert rows[("obsp", "connectivities")][1] == "60 × 60"
    assert ("raw", "X") in rows and ("uns", "nested") in rows and ("layers", "counts_csc") in rows
    assert "AnnData Shadow object with n_obs × n_vars = 60 × 15" in html
    assert _rows(html, details=True)[("obs", "catᐁ")][3] == "3 categories"
    sections = re.findall(r"<details class='shadows-slot-section'( open)?><summary>(.*?)</summary>", html)
    headers = {re.sub(r"<[^>]+>", "", h): bool(state) for state, h in sections}
    assert next(iter(headers)) == "X" and headers["obsm (4 keys)"] and headers["varm (1 key)"]
    assert any(h.startswith("obs (") for h in headers)
    many = AnnDataShadow(path)
    for i in range(20):
        many.obs[f"extra{i}"] = np.arange(many.n_obs)
    many_sections = re.findall(r"<details class='shadows-slot-section'( open)?><summary>(.*?)</summary>",
                               many._repr_html_())
    states = {re.sub(r"<[^>]+>", "", h).split(" ")[0]: bool(state) for state, h in many_sections}
    assert states["obsm"] and not states["obs"]  # a long section starts collapsed (its header counts it)
    view_rows = _rows(view_html)
    assert view_rows[("X", "")][1] == "20 × 5" and view_rows[("obsp", "connectivities")][1] == "20 × 20"
    assert view_rows[("obsm", "X_new▲")][1] == "20 × 2" and view_rows[("varm", "PCs")][1] == "5 × 5"
    assert "View of AnnData Shadow object" in view_html


def test_html_repr_of_a_mudata_nests_its_modalities(tmp_path, monkeypatch):
    mudata = pytest.importorskip("mudata")
    from conftest import make_adata

    mudata.MuData({"rna": make_adata(), "atac": make_adata(n_vars=9, seed=1)}).write_h5mu(tmp_path / "m.h5mu")
    shadow = MuDataShadow(tmp_path / "m.h5mu")
    with count_reads(monkeypatch) as reads:
        html = shadow._repr_html_()
    assert sum(reads.values()) == 0, dict(reads)
    assert html.count("<details class='shadows-mod'>") == 2 and "mod['atac']: 60 × 9" in html
    assert ("obsmap", "rna") in _rows(html) and ("X", "") in _rows(html)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (CI installs Debian's package)")
def test_html_repr_renders_in_a_headless_browser(path, tmp_path):
    shadow = AnnDataShadow(path)
    shadow.obsm["X_new"] = np.ones((60, 2))
    page = tmp_path / "repr.html"
    page.write_text(f"<!doctype html><html><head><meta charset='utf-8'></head><body>{shadow._repr_html_()}"
                    f"{shadow[:10]._repr_html_()}</body></html>", encoding="utf-8")
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--window-size=1000,1400"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    rendered = _rows(dom.stdout.split("View of")[0])
    assert rendered[("obsm", "X_new▲")] == ["in memory: ndarray", "60 × 2", "float64"]
    assert "View of AnnData Shadow object" in dom.stdout
    screenshot = tmp_path / "repr.png"
    shot = subprocess.run([*flags, f"--screenshot={screenshot}", page.as_uri()], capture_output=True, text=True,
                          timeout=120)
    assert shot.returncode == 0 and screenshot.exists(), shot.stderr[-2000:]
    png = screenshot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (1000, 1400)
    assert len(png) > 20_000  # a page of tables, not a blank image
