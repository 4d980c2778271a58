"""The package's layout: packages by job in layers, no import cycles (import-linter's
contracts in pyproject.toml), and the documented module names still importable."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: documented names (modules named by earlier issues, the previous API reference and
#: pickles) and the modules they are now
ALIASES = {
    "xpmlp.optim": "xpmlp.core.optim",
    "xpmlp.schedules": "xpmlp.core.schedules",
    "xpmlp.training": "xpmlp.train.loop",
    "xpmlp.model": "xpmlp.train.model",
    "xpmlp.blas": "xpmlp.machine.blas",
    "xpmlp._threads": "xpmlp.machine.threads",
    "xpmlp.serialize": "xpmlp.io.serialize",
    "xpmlp.perceptron": "xpmlp.teach.perceptron",
    "xpmlp.doc_tables": "xpmlp.teach.doc_tables",
    "xpmlp.early_stopping": "xpmlp.train.early_stopping",
    "xpmlp.checkpoint": "xpmlp.train.checkpoint",
    "xpmlp.errors": "xpmlp.core.errors",
}


@pytest.mark.parametrize("old, new", ALIASES.items())
def test_a_documented_module_name_is_the_module_itself(old: str, new: str) -> None:
    """``import xpmlp.optim`` gives the very module ``xpmlp.core.optim``: a monkeypatch or a
    registration through either name is seen through both."""
    assert importlib.import_module(old) is importlib.import_module(new)


def test_the_documented_attribute_paths_still_work() -> None:
    import xpmlp
    import xpmlp.training

    assert xpmlp.optim.Adam is xpmlp.Adam
    assert xpmlp.training.EarlyStopping.__name__ == "EarlyStopping"
    assert callable(xpmlp.blas.default_route)


def test_pickles_of_the_flat_layout_load() -> None:
    """A pickle written before the move names ``xpmlp.model.MLP``: it still resolves."""
    import pickle

    import xpmlp

    model = xpmlp.MLP([2, 3, 2], backend="numpy", seed=0)
    data = pickle.dumps(model, protocol=2)  # GLOBAL opcodes: module names as plain text
    data = data.replace(b"xpmlp.train.model\n", b"xpmlp.model\n")
    assert b"xpmlp.model" in data
    restored = pickle.loads(data)
    assert type(restored) is xpmlp.MLP


def test_the_top_level_holds_packages_and_documented_names_only() -> None:
    src = ROOT / "src" / "xpmlp"
    modules = {p.stem for p in src.glob("*.py")}
    documented = {name.split(".")[1] for name in ALIASES}
    assert modules - documented <= {"__init__", "__main__", "_version", "cli"}


def test_the_import_contracts_hold() -> None:
    """import-linter (pyproject.toml's [tool.importlinter]): the packages import only the
    layers below them, and no package's modules import each other in a circle."""
    pytest.importorskip("importlinter", reason="import-linter is in the test extra")
    command = [sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()"]
    result = subprocess.run(
        [*command, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_python_m_runs_a_documented_module_name(tmp_path: Path) -> None:
    """``python -m xpmlp.doc_tables FILE`` (the name the README has always given) still
    rewrites the file's tables: the alias runs the module's own command line."""
    readme = tmp_path / "README.md"
    text = (ROOT / "README.md").read_text()
    start = text.index("<!-- registry:activations -->")
    stale = (
        text[:start]
        + "<!-- registry:activations -->\nstale\n"
        + text[text.index("<!-- /registry:activations -->", start) :]
    )
    readme.write_text(stale)
    subprocess.run([sys.executable, "-m", "xpmlp.doc_tables", str(readme)], check=True, timeout=300)
    assert readme.read_text() == text
