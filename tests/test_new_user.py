"""What a new user trips on, tried on a fresh clone: extras that install releases which cannot run
together, errors that do not say which file, a repr listing the index's name as a column, ``shadows info``
cutting what it shows, progress bars redrawn into logs.
"""

from __future__ import annotations

import io
import json
import re
import sys
import tomllib
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from conftest import make_adata
from shadows import AnnDataShadow, ReadOnlyError, ShadowsError, progress
from shadows.cli import info_text, main

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


# -- extras ------------------------------------------------------------------------------------------------


def _project() -> dict:
    return tomllib.loads(PYPROJECT.read_text())["project"]


def _floor(requirement: Requirement) -> Version | None:
    floors = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==", "~=")]
    return max(floors) if floors else None


def test_every_extra_has_a_floor_that_fits_the_core():
    """pip backtracks to any release an extra allows: ``distributed`` without a floor resolved to 2021.4.1
    beside dask 2026, which fails at import. Each package of each extra has a floor, and distributed's
    (released with dask, at the same versions) is at least the core's dask floor.
    """
    project = _project()
    core = {Requirement(r).name: Requirement(r) for r in project["dependencies"]}
    for extra, requirements in project["optional-dependencies"].items():
        for text in requirements:
            requirement = Requirement(text)
            if requirement.name == "shadows":  # another extra of this package
                continue
            assert _floor(requirement) is not None, f"[{extra}] {text}: no floor"
            if requirement.name == "distributed":
                assert _floor(requirement) >= _floor(core["dask"]), f"[{extra}] {text}"


def test_the_demo_extra_installs_what_the_readme_examples_and_scanpy_pipeline_need():
    """``pip install -e .[demo]`` (the README's first command) covers the local examples (scanpy, mudata,
    distributed) and a pynndescent with which scanpy's ``neighbors`` works on >= 8,192 cells (0.7 hands
    scanpy a ``csr_array`` it calls ``getnnz`` on; 0.6 works, checked in a fresh environment).
    """
    extras = _project()["optional-dependencies"]
    demo = [Requirement(r) for r in extras["demo"]]
    names = {r.name for r in demo}
    included = set().union(*(r.extras for r in demo if r.name == "shadows"))
    assert {"scanpy", "pynndescent"} <= names and {"mudata", "distributed"} <= included
    pynndescent = next(r for r in demo if r.name == "pynndescent")
    assert "0.6.0" in pynndescent.specifier and "0.7.0" not in pynndescent.specifier
    assert "0.5.0" not in pynndescent.specifier


# -- errors that name the file -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("new_user") / "small.h5ad"
    make_adata().write_h5ad(path)
    return path


def test_write_on_a_read_only_file_names_the_file(small):
    shadow = AnnDataShadow(small)
    shadow.obsm["new"] = np.zeros((shadow.n_obs, 2))
    with pytest.raises(ReadOnlyError) as error:
        shadow.write()
    assert isinstance(error.value, OSError) and str(error.value).startswith(f"{small}: ")
    assert "read-only mode" in str(error.value)
    shadow.close()


SHAPE_CASES = {  # what is assigned, and how the element is named in the message
    "obsm": (lambda a: a.obsm.__setitem__("x", np.zeros((3, 2))), "obsm['x']"),
    "varm": (lambda a: a.varm.__setitem__("x", np.zeros((3, 2))), "varm['x']"),
    "layers": (lambda a: a.layers.__setitem__("x", np.zeros((a.n_obs, 2))), "layers['x']"),
    "obsp": (lambda a: a.obsp.__setitem__("x", np.zeros((a.n_obs, 3))), "obsp['x']"),
    "obs_names": (lambda a: setattr(a, "obs_names", ["a", "b"]), "obs_names"),
    "var_names": (lambda a: setattr(a, "var_names", ["a", "b"]), "var_names"),
    "X": (lambda a: setattr(a, "X", np.zeros((2, 2))), "X"),
    "obs": (lambda a: setattr(a, "obs", pd.DataFrame(index=["a"])), "obs"),
}


@pytest.mark.parametrize("case", list(SHAPE_CASES))
def test_shape_errors_are_shadows_errors_and_what_anndata_raises(small, case):
    """A value that does not fit raises what anndata raises there (a ``ValueError``), which is also a
    ``ShadowsError`` naming the file and the element; nothing is staged.
    """
    assign, element = SHAPE_CASES[case]
    memory = ad.read_h5ad(small)
    with pytest.raises(Exception) as expected:  # whatever anndata raises there
        assign(memory)
    shadow = AnnDataShadow(small)
    with pytest.raises(type(expected.value)) as error:
        assign(shadow)
    assert isinstance(error.value, ShadowsError) and isinstance(error.value, ValueError)
    assert str(small) in str(error.value) and element in str(error.value), str(error.value)
    assert "▲" not in repr(shadow)
    shadow.close()


def test_an_obs_column_of_another_length_is_a_shape_error(small):
    shadow = AnnDataShadow(small)
    with pytest.raises(ValueError, match=r"obs\['bad'\]: expected 60 values") as error:
        shadow.obs["bad"] = [1, 2, 3]
    assert isinstance(error.value, ShadowsError) and str(small) in str(error.value)
    shadow.close()


# -- repr: obs/var list their columns, not the index's name -------------------------------------------------


def test_repr_lists_columns_not_the_index_name(small, tmp_path):
    shadow = AnnDataShadow(small)
    assert shadow.obs.index.name == "cell_id"
    lines = repr(shadow).replace("ᐁ", "").split("\n")  # obs_keys() reads obs: held (ᐁ)
    assert f"  obs:\t{', '.join(shadow.obs_keys())}" in lines
    assert f"  var:\t{', '.join(shadow.var_keys())}" in lines
    assert "cell_id" not in repr(shadow) and "_index" not in repr(shadow)
    html = shadow._repr_html_()
    assert "cell_id" not in html and f"obs <span class='shadows-count'>({len(shadow.obs_keys())} columns)" in html
    assert "cell_id" not in info_text(str(small))
    shadow.close()
    bare = tmp_path / "bare.h5ad"  # no columns: no obs/var line, as anndata's repr
    ad.AnnData(np.ones((3, 2), dtype=np.float32)).write_h5ad(bare)
    with AnnDataShadow(bare) as shadow:
        assert "obs:" not in repr(shadow) and "var:" not in repr(shadow)


# -- shadows info --------------------------------------------------------------------------------------------


def _table(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("element "))
    return lines[start:]


@pytest.mark.parametrize("width", [100, 80, 60, 45])
def test_info_cuts_element_paths_in_the_middle_and_never_the_chunks(small, width):
    """An element path too long for the width keeps its start (the slot) and its end (the name); the
    chunks column is shown whole or left out, never cut.
    """
    table = _table(info_text(str(small), width=width))
    rows = [line for line in table[1:] if line and not line.startswith("(")]
    assert rows and not any(line.startswith("…") for line in rows)
    assert any(line.startswith("uns/nested/") for line in rows)
    header = table[0]
    if "chunks" in header:
        start, end = header.index("chunks"), header.index("on disk")
        assert not any(line[start:end].strip().endswith("…") for line in rows)


def test_info_json_prints_errors_as_json(tmp_path, capsys):
    missing = tmp_path / "missing.h5ad"
    assert main(["info", "--json", str(missing)]) == 1
    captured = capsys.readouterr()
    error = json.loads(captured.out)["error"]
    assert error["type"] == "ShadowsFileNotFoundError" and str(missing) in error["message"]
    assert error["path"] == str(missing) and captured.err == ""


# -- progress in a log -------------------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run_job(stream, blocks: int = 50) -> None:
    with progress.job(blocks, True, stream=stream):
        bar = progress.current()
        bar.element("X")
        for _ in range(blocks):
            bar.advance()


def test_progress_prints_plain_lines_where_the_output_is_not_a_terminal(small, tmp_path, capsys, monkeypatch):
    """In a log (not a terminal) no carriage returns: a line when the job starts, at most one every
    few seconds, and one when it ends; in a terminal the bar is redrawn on one line.
    """
    log = io.StringIO()
    _run_job(log)
    assert log.getvalue() == "writing   0%  0/50 blocks  X\nwriting 100%  50/50 blocks  done\n"
    monkeypatch.setattr(progress, "PLAIN_INTERVAL", 0.0)  # a slow job: a line per interval
    log = io.StringIO()
    _run_job(log, 3)
    assert "\r" not in log.getvalue() and len(log.getvalue().splitlines()) == 5
    terminal = Terminal()
    _run_job(terminal)
    assert terminal.getvalue().count("\r") > 10 and terminal.getvalue().count("\n") == 1
    monkeypatch.undo()
    with AnnDataShadow(small) as shadow:  # a whole export, its output captured (not a terminal)
        shadow.copy(tmp_path / "copy.h5ad", progress=True).close()
    err = capsys.readouterr().err
    assert "\r" not in err and 1 <= len(err.splitlines()) <= 3, err
    assert re.match(r"exporting 100%  (\d+)/\1 blocks  done", err.splitlines()[-1])


def test_progress_knows_a_terminal():
    assert progress.is_terminal(Terminal()) and not progress.is_terminal(io.StringIO())
    assert progress.is_terminal(sys.stderr) == sys.stderr.isatty()
