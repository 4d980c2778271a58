"""The README's Python example runs as written (docs that run)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_the_readme_has_a_python_example() -> None:
    assert python_blocks()


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_example_runs(index: int, tmp_path: Path, monkeypatch) -> None:
    block = python_blocks()[index]
    if "xpmlp.register_" in block:  # it registers names for good: in a process of its own
        done = subprocess.run(
            [sys.executable, "-c", block],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.startswith("accuracy ")
        return
    monkeypatch.chdir(tmp_path)  # it writes mnist.npz
    namespace: dict = {}
    exec(compile(block, f"README.md python block {index}", "exec"), namespace)
    if "mnist.npz" in block:
        assert (tmp_path / "mnist.npz").exists()
        assert namespace["model"].history_[-1]["val_accuracy"] > 0.9
