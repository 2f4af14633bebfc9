"""`shadows info` describes a file without loading it."""

from __future__ import annotations

from shadows.cli import main


def test_info_lists_every_element(path, capsys):
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "AnnData Shadow object with n_obs × n_vars = 60 × 15" in out
    for element in ("X ", "obs ", "layers/dense", "obsm/frame", "uns/nested/level1/level2/value", "raw/X"):
        assert element in out
    assert "csr_matrix 0.1.0" in out and "categorical" not in out.split("\n\n")[0]


def test_info_reports_errors(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing.h5ad")]) == 1
    assert "No such file" in capsys.readouterr().err
