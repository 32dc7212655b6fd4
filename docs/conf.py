"""Sphinx configuration for the pyro-ebm documentation (MyST Markdown pages via myst-nb).

The build and the site are offline: no intersphinx inventories are fetched, and MathJax is
shipped with the site (``sphinx-mathjax-offline``) instead of loaded from a CDN. The tutorials
live in ``tutorials/*.py`` (jupytext percent format); they are converted here into notebooks under
``docs/tutorials/`` (generated, not committed) and rendered *without* executing them, since
executing them is the job of ``tests/test_tutorials.py``. Set ``PYRO_EBM_DOCS_EXECUTE=1`` to
execute them during the build instead (cached by jupyter-cache; add ``CI=1`` for the small
sizes).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import jupytext
import nbformat

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

import pyro_ebm  # noqa: E402

project = "pyro-ebm"
author = "pyro-ebm contributors"
copyright = "pyro-ebm contributors"
release = pyro_ebm.__version__
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    # Copies MathJax 3 into _static/mathjax and points mathjax_path there, so the site renders
    # its math without a network (sphinx.ext.mathjax alone loads MathJax from a CDN).
    "sphinx-mathjax-offline",
]

exclude_patterns = ["_build", "README.md", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
root_doc = "index"

# -- MyST / myst-nb ----------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
myst_dmath_double_inline = True
nb_execution_mode = "cache" if os.environ.get("PYRO_EBM_DOCS_EXECUTE") == "1" else "off"
nb_execution_timeout = 3600
nb_execution_raise_on_error = True
nb_execution_cache_path = str(DOCS / "_build" / ".jupyter_cache")
nb_merge_streams = True

# -- autodoc / napoleon ------------------------------------------------------------------------
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_class_signature = "mixed"
autodoc_preserve_defaults = True
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False

# -- HTML --------------------------------------------------------------------------------------
html_theme = "sphinx_rtd_theme"
html_title = f"pyro-ebm {release}"
html_theme_options = {"navigation_depth": 3}


def _convert_tutorials() -> None:
    """Write ``tutorials/NN_name.py`` as ``docs/tutorials/NN_name.ipynb`` (only if changed)."""
    target = DOCS / "tutorials"
    target.mkdir(exist_ok=True)
    sources = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))
    names = {source.stem for source in sources}
    for stale in target.glob("*.ipynb"):
        if stale.stem not in names:
            stale.unlink()
    for source in sources:
        notebook = jupytext.read(source, fmt="py:percent")
        text = nbformat.writes(notebook)
        out = target / f"{source.stem}.ipynb"
        if not out.exists() or out.read_text(encoding="utf-8") != text:
            out.write_text(text, encoding="utf-8")


_convert_tutorials()
