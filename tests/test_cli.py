"""`shadows info` describes a file without loading it; `shadows demo` walks through the main job."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

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


def test_info_on_legacy_file_and_modality(pbmc_path, tmp_path, capsys):
    assert main(["info", str(pbmc_path)]) == 0
    out = capsys.readouterr().out
    assert "obsm/X_pca" in out and "structured (" in out and "uns/neighbors/distances" not in out
    import mudata

    from conftest import make_adata

    mudata.MuData({"rna": make_adata()}).write_h5mu(tmp_path / "m.h5mu")
    assert main(["info", str(tmp_path / "m.h5mu" / "mod" / "rna")]) == 0
    assert "n_obs × n_vars = 60 × 15" in capsys.readouterr().out


@pytest.mark.xdist_group("pynndescent")  # scanpy's pipeline: run where it is compiled (see test_mutation)
def test_demo_compares_anndata_and_a_shadow_and_runs_scanpy(tmp_path, capsys, monkeypatch):
    import re

    import anndata as ad

    assert main(["demo", "--folder", str(tmp_path), "--cells", "3000", "--genes", "400"]) == 0
    out = capsys.readouterr().out
    titles = [t for _, t in re.findall(r"^\[(\d+)\] (.*)$", out, flags=re.MULTILINE)]
    for words in ("Build an example dataset", "Open the file", "A view of one cell type", "One gene's values",
                  "A reduction over all of X", "Write a new element", "scanpy on the shadow", "Summary"):
        assert any(words in title for title in titles), words
    measured = re.findall(r"^    (anndata|shadow) +.+ +\d+\.\d\d s   peak \+[\d,]+ MiB$", out, flags=re.MULTILINE)
    assert measured.count("anndata") == 5 and measured.count("shadow") == 6  # side by side, then scanpy
    assert "same values: True" in out and "same totals: True" in out and "X▲" in out
    table = out.split("Summary")[1]
    assert "open" in table and "scanpy on a view" in table and "anndata" in table.splitlines()[1]
    assert (tmp_path / "violin.png").stat().st_size > 0
    assert f"Kept the dataset, the anndata copy and the plot in {tmp_path}" in out
    written = ad.read_h5ad(tmp_path / "demo.h5ad")  # the embedding went to the file
    assert written.obsm["X_proj"].shape == (3000, 2) and written.n_vars == 400
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # without --folder: everything removed but the plot, kept in the folder it names
    assert main(["demo", "--cells", "2000", "--genes", "300"]) == 0
    out = capsys.readouterr().out
    assert list(cwd.iterdir()) == []  # nothing written where it was run
    saved = Path(re.search(r"plot saved: (\S+)", out).group(1))  # the path it prints is the one it keeps
    assert f"Kept the plot: {saved}" in out and saved.stat().st_size > 0
    folder = Path(re.search(r"Removed everything else the demo wrote in (\S+) ", out).group(1))
    assert saved.parent == folder and str(folder) in out.split("[1]")[1].splitlines()[0]  # the one it reported
    assert [p.name for p in folder.iterdir()] == [saved.name]
    shutil.rmtree(folder)


def test_info_refuses_external_data_unless_allowed(tmp_path, capsys):
    import h5py

    from conftest import make_adata

    path = tmp_path / "linked.h5ad"
    make_adata().write_h5ad(path)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["secret"] = [1, 2, 3]
    with h5py.File(path, "r+") as f:
        f["uns/linked"] = h5py.ExternalLink(str(other), "/secret")
    assert main(["info", str(path)]) == 1
    assert "allow_external" in capsys.readouterr().err
    assert main(["info", str(path), "--allow-external"]) == 0
    assert "uns/linked" in capsys.readouterr().out


def test_version_help_and_plain_words(capsys):
    import pytest

    from shadows import __version__

    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"shadows {__version__}"
    for argv in (["--help"], ["info", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        out = capsys.readouterr().out
        assert "``" not in out
    assert all(option in out for option in ("--format", "--storage-option", "--json", "--allow-external"))
    assert "the file's format" in out


def test_info_fits_100_columns_and_json_is_for_scripts(pbmc_path, capsys):
    import json

    assert main(["info", str(pbmc_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 100 and any(line.startswith("uns/") for line in lines)
    assert main(["info", "--json", str(pbmc_path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "AnnData" and data["shape"] == [700, 765]
    x = data["elements"][0]
    assert x["path"] == "X" and x["shape"] == [700, 765] and x["bytes_on_disk"] > 0
    assert data["repr"].startswith("AnnData Shadow object")


def test_storage_options_are_key_value_pairs(path, capsys, monkeypatch):
    import shadows.io

    seen = {}
    original = shadows.io.read

    def spy(target, **kwargs):
        seen.update(kwargs)
        return original(target, **{k: v for k, v in kwargs.items() if k != "storage_options"})

    monkeypatch.setattr(shadows.io, "read", spy)
    assert main(["info", str(path), "--storage-option", "anon=true", "--storage-option", "endpoint_url=http://x"]) == 0
    assert seen["storage_options"] == {"anon": True, "endpoint_url": "http://x"}


def test_info_cuts_a_long_path_in_the_middle_to_fit(tmp_path, capsys):
    """Not printing to a terminal: every line fits 100 columns, the file's path included (cut in its
    middle, both ends kept).
    """
    from conftest import make_adata

    folder = tmp_path.joinpath(*["a_rather_long_folder_name"] * 5)
    folder.mkdir(parents=True)
    path = folder / "data.h5ad"
    make_adata().write_h5ad(path)
    assert len(str(path)) > 100
    assert main(["info", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert "…" in lines[0] and lines[0].endswith("/data.h5ad") and lines[0].startswith(str(path)[:40])


def test_info_fits_a_narrow_terminal(path, capsys, monkeypatch):
    """In a terminal of 60 columns (and narrower ones) every line fits: columns cut, then left out (said
    so), the --json output whole.
    """
    import json
    import sys

    from shadows.cli import info_text

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # the width is the terminal's only in one
    monkeypatch.setenv("COLUMNS", "60")
    assert main(["info", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 60
    whole = str(path)
    if len(whole) <= 60:  # a path that fits is printed whole, a longer one cut in the middle
        assert lines[0] == whole
    else:
        assert "…" in lines[0] and lines[0][:10] == whole[:10] and lines[0][-10:] == whole[-10:]
    assert any(line.startswith("uns/nested/level1/level2/value ") for line in lines)
    assert any(line.startswith("element ") and "shape" in line and "on disk" in line for line in lines)
    assert "(encoding, chunks: left out at this width; --json lists them)" in " ".join(lines)
    for width in (80, 45, 30, 20):
        text = info_text(str(path), width=width)
        assert max(len(line) for line in text.splitlines()) <= width, width
    assert "left out" not in info_text(str(path), width=160)  # chunks are shown whole or not at all
    assert main(["info", "--json", str(path)]) == 0
    element = json.loads(capsys.readouterr().out)["elements"][0]
    assert {"path", "shape", "dtype", "encoding", "chunks", "bytes_on_disk"} <= set(element)
