"""Sphinx configuration of the framescope documentation.

Build (warnings are errors, as in CI: ``tests/test_docs_site.py``)::

    .venv/bin/sphinx-build -W --keep-going -b html docs docs/_build/html

No extension fetches anything from the network (no intersphinx), so the build works offline.
"""

from __future__ import annotations

from framescope import __version__

project = "framescope"
author = "framescope developers"
copyright = "framescope developers"
release = __version__
version = ".".join(__version__.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# MyST: `#` anchors for headings so pages can link to sections (engine.md#writing-a-udf).
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

# API reference from numpydoc-style docstrings. autosummary only draws tables (api.md has no
# :toctree:), so a build never writes generated files into the source tree.
autosummary_generate = False
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_ivar = True

html_theme = "furo"
html_title = f"framescope {release}"
html_static_path: list[str] = []
