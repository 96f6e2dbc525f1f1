"""Sphinx configuration of stiffkit's documentation.

Build from the repository root (the README gives the install step)::

    python -m sphinx -W -b html docs docs/_build/html

The theory pages are MyST Markdown; the API pages are reStructuredText generated from the
numpydoc docstrings by autodoc. ``tests/test_docs.py`` builds everything with warnings as
errors.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
# The source checkout first (an editable install points there anyway), then the local
# extension that writes the API pages' module lists.
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS / "_ext"))

project = "stiffkit"
author = "stiffkit developers"
copyright = "stiffkit developers"
release = importlib.import_module("stiffkit").__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "numpydoc",
    "stiffkit_api",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []

# ------------------------------------------------------------------------- MyST
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
# Headings get GitHub-style anchors (``docs/theory/erk_guid.md#the-correction``) down to level 3.
myst_heading_anchors = 3
# Labelled display equations are numbered per page, (1), (2), …: code cites them as
# "docs/theory/erk_guid.md, eq. (4)" and tests/test_docs.py checks every such citation.
math_number_all = False
numfig = False

# ------------------------------------------------------------------------- autodoc / numpydoc
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
autodoc_preserve_defaults = False
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set[str] = set()

# ------------------------------------------------------------------------- HTML
html_theme = "alabaster"
html_title = f"stiffkit {release}"
html_static_path: list[str] = []
html_theme_options = {
    "description": "Stiffness analysis of learned ODEs",
    "fixed_sidebar": False,
}
