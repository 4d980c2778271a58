"""Sphinx configuration of xpmlp's documentation site.

Build it from the repository's root (the ``docs`` extra installs what it needs):

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The gallery (``examples/``) is run by sphinx-gallery during the build; its pictures are
those the examples draw. ``XPMLP_DOCS_SKIP_GALLERY=1`` builds without running them.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS))  # _scrapers

# --------------------------------------------------------------------------- project

project = "xpmlp"
author = "xpmlp developers"
copyright = f"2026, {author}"
# One source for the version: src/xpmlp/_version.py (xpmlp.__version__, xpmlp --version and
# the wheel's metadata read it too). Read as text, so the docs show the checkout's version
# even where another xpmlp is installed.
_VERSION_FILE = ROOT / "src" / "xpmlp" / "_version.py"
release = re.search(r'__version__\s*=\s*"([^"]+)"', _VERSION_FILE.read_text()).group(1)
version = ".".join(release.split(".")[:2])

# --------------------------------------------------------------------------- extensions

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",  # the docstrings' "Raises:" / "Returns:" sections (Google style)
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = [
    "_build",
    "Thumbs.db",
    ".DS_Store",
    "auto_examples/*.ipynb",
    "auto_examples/*.py",
    "auto_examples/*.zip",
    "auto_examples/*.json",
    "auto_examples/*.md5",
    "auto_examples/*.codeobj.json",
]

# myst: the existing Markdown pages (docs/checkpoints.md, docs/estimators.md) and parts of
# the README included by their headings
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
suppress_warnings = [
    # The README and the docs/*.md pages link to repository files (benchmarks/README.md,
    # src/...) that are not pages of this site; they stay plain links.
    "myst.xref_missing",
]

# autodoc / autosummary: signatures with their annotations, members in source order
autosummary_generate = True
autosummary_imported_members = False
# A module's page documents what the module defines; names it re-exports (xpmlp.core.optim's
# schedules, xpmlp.distributed's Communicator) are documented once, where they are defined.
autodoc_default_options = {
    "members": True,
    "member-order": "bysource",
    "show-inheritance": True,
    "ignore-module-all": True,
}
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_mock_imports: list[str] = []  # nothing mocked: optional packages are imported lazily
napoleon_google_docstring = True
napoleon_numpy_docstring = True
napoleon_use_rtype = False
# Annotations name types that are not documented here (numpy.typing aliases, Numba's and
# CuPy's types, private helpers): the reference tells what it can and stays quiet elsewhere.
nitpicky = False

intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "numpy": ("https://numpy.org/doc/stable/", None),
}
# The build must not need the network: intersphinx only where an inventory is cached.
if os.environ.get("XPMLP_DOCS_INTERSPHINX", "0") != "1":
    intersphinx_mapping = {}

# --------------------------------------------------------------------------- gallery

from _scrapers import FigureScraper  # noqa: E402 (needs the path above)

sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",  # every example runs and draws its pictures
    "download_all_examples": False,
    "remove_config_comments": True,
    "image_scrapers": (FigureScraper(), "matplotlib"),  # this order: see _scrapers.py
    "within_subsection_order": "FileNameSortKey",
    "show_memory": False,
    "plot_gallery": "False" if os.environ.get("XPMLP_DOCS_SKIP_GALLERY") == "1" else "True",
    "abort_on_example_error": True,
    "reset_modules": ("matplotlib",),
}

# --------------------------------------------------------------------------- HTML

html_theme = "pydata_sphinx_theme"
html_title = f"xpmlp {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc", "sourcelink"],
}
html_static_path: list[str] = []
html_show_sourcelink = True


# --------------------------------------------------------------------------- docstrings
# Plain-text conventions of some docstrings that reStructuredText reads otherwise; adjusted
# here, on the text autodoc hands over, rather than in the sources.

_SKLEARN_ROUTING = re.compile(r"set_\w+_request\Z")


def _literal_examples(lines: list[str]) -> None:
    """Module docstrings show code as an indented block after a plain paragraph; make each
    such block a literal block (reST would read it as a quotation, and a deeper-indented
    line inside it as an error)."""
    i = 1
    while i < len(lines) - 1:
        previous, blank, block = lines[i - 1], lines[i], lines[i + 1]
        if (
            not blank.strip()
            and block.startswith(" ")
            and block.strip()
            and previous.strip()
            and not previous.startswith((" ", "..", "- ", "* "))
            and not previous.rstrip().endswith("::")
        ):
            lines.insert(i, "")
            lines.insert(i + 1, "::")
            i += 2
        i += 1


def _escape_unpaired_stars(lines: list[str]) -> None:
    """``**settings`` in prose (a keyword-arguments mark) is not bold text."""
    for n, line in enumerate(lines):
        if line.count("**") % 2:
            lines[n] = line.replace("**", r"\*\*")


def _process_docstring(app, what, name, obj, options, lines) -> None:
    if what == "module":
        _literal_examples(lines)
    _escape_unpaired_stars(lines)


def _skip_member(app, what, name, obj, skip, options):
    # scikit-learn's metadata-routing methods (set_fit_request, ...) are made on every
    # estimator class; their docstrings point into scikit-learn's own documentation
    if _SKLEARN_ROUTING.match(name):
        return True
    return None


def setup(app) -> None:
    app.connect("autodoc-process-docstring", _process_docstring)
    app.connect("autodoc-skip-member", _skip_member)
