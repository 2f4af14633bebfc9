"""Sphinx configuration of the shadows documentation.

Build: ``sphinx-build -W --keep-going -b html docs docs/_build/html`` (the tours are executed).
"""

from __future__ import annotations

import shadows

project = "shadows"
author = "shadows contributors"
copyright = "shadows contributors"
release = shadows.__version__
version = release

extensions = [
    "myst_nb",  # MyST markdown pages and MyST-NB notebooks (includes myst_parser)
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb"}
exclude_patterns = ["_build", "jupyter_execute", "Thumbs.db", ".DS_Store"]
nitpicky = False

# -- API reference from docstrings (numpydoc style) ------------------------------------------------
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autosummary_generate = False

# -- MyST / MyST-NB: the tours are executed on every build, on data they generate -----------------
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "force"
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_execution_timeout = 120  # seconds per cell
nb_merge_streams = True

# -- HTML --------------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"shadows {release}"


# -- property docstrings are prose ---------------------------------------------------------------------
# napoleon reads the first line of a property's docstring as "type: description", so "None: a MuData has
# no X of its own." would render as "Type: None". numpydoc has no such rule and these docstrings carry no
# sections: keep property docstrings as written (saved before napoleon runs, restored after it).
_PROPERTY_LINES: dict[str, list[str]] = {}


def _save_property_docstring(app, what, name, obj, options, lines):
    if what == "property":
        _PROPERTY_LINES[name] = list(lines)


def _restore_property_docstring(app, what, name, obj, options, lines):
    if what == "property" and name in _PROPERTY_LINES:
        lines[:] = _PROPERTY_LINES.pop(name)


def setup(app):
    """Keep property docstrings away from napoleon."""
    app.connect("autodoc-process-docstring", _save_property_docstring, priority=400)  # napoleon: 500
    app.connect("autodoc-process-docstring", _restore_property_docstring, priority=600)
