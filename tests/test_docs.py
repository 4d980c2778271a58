"""The documentation's sources: one version everywhere, the typing marker, runnable examples.

The site itself is built by ``python -m sphinx -W --keep-going -b html docs docs/_build/html``
(the ``docs`` extra); these tests need none of Sphinx.
"""

from __future__ import annotations

import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

import xpmlp

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("plot_*.py"))


def test_docs_release_is_the_package_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))  # conf.py puts docs/ on the path
    conf = runpy.run_path(str(ROOT / "docs" / "conf.py"))
    assert conf["release"] == xpmlp.__version__
    proc = subprocess.run(
        [sys.executable, "-m", "xpmlp", "--version"], capture_output=True, text=True, timeout=120
    )
    assert proc.stdout.strip() == f"xpmlp {conf['release']}"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'version = { attr = "xpmlp._version.__version__" }' in pyproject


def test_py_typed_ships_with_the_package() -> None:
    assert (ROOT / "src" / "xpmlp" / "py.typed").is_file()
    pyproject = (ROOT / "pyproject.toml").read_text()
    package_data = pyproject.split("[tool.setuptools.package-data]", 1)[1].split("\n[", 1)[0]
    assert re.search(r'^xpmlp = \["py.typed"\]', package_data, re.M), package_data


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_has_a_gallery_title(example: Path) -> None:
    source = example.read_text()
    match = re.match(r'"""\n(.+)\n(=+)\n', source)
    assert match and len(match.group(2)) >= len(match.group(1)), example.name
