"""Sphinx configuration. Build: ``python -m sphinx -W -b html docs docs/_build/html`` (or ``tokenprune docs``).

Generated pages are rebuilt on every build by the local extension ``tokenprune_docs`` (docs/_ext).
"""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
os.environ.setdefault("MPLBACKEND", "Agg")

import tokenprune  # noqa: E402

project = "tokenprune"
author = "tokenprune contributors"
copyright = "tokenprune contributors"
release = tokenprune.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "tokenprune_docs",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "generated/fragments/*", "examples/*", "_data/*", "README.md",
                    "models/*"]  # per-family notes, included in the generated spec pages

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"undoc-members": False}
napoleon_google_docstring = False
napoleon_numpy_docstring = False

html_theme = "furo"
html_title = f"tokenprune {release}"
html_static_path = ["_static"]
html_css_files = ["tokenprune.css"]  # tables wrap their cells to fit the page
