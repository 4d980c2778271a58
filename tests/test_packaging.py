"""Packaging: the kernels install as ``xpmlp.kernels`` (no top-level ``kernels``), the CLI works."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import xpmlp

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600, **kw)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    proc = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
               "-w", str(out), str(ROOT))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (whl,) = out.glob("xpmlp-*.whl")
    return whl


@pytest.mark.slow
def test_wheel_maps_kernels_into_the_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "xpmlp/kernels/cpu.py" in names
    assert "xpmlp/kernels/cuda.py" in names
    assert not any(n.startswith("kernels/") for n in names), "a top-level 'kernels' would leak"
    assert "xpmlp/backends/base.py" in names


@pytest.mark.slow
def test_installed_wheel_trains_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    proc = run(sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site),
               str(wheel))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "import numpy as np, xpmlp, xpmlp.kernels.cpu as k\n"
        "assert xpmlp.__file__.startswith(sys.argv[1]), xpmlp.__file__\n"
        "assert k.__file__.startswith(sys.argv[1]), k.__file__\n"
        "rng = np.random.default_rng(0)\n"
        "X = rng.standard_normal((200, 4)).astype('float32'); y = (X[:, 0] > 0).astype(int)\n"
        "m = xpmlp.MLP([4, 8, 2], backend='numpy', optimizer='momentum').fit(X, y, epochs=20)\n"
        "print('accuracy', m.score(X, y))\n"
    )
    proc = run(sys.executable, "-c", script, str(site), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    accuracy = float(proc.stdout.split()[-1])
    assert accuracy > 0.9


def test_version_and_help() -> None:
    proc = run(sys.executable, "-m", "xpmlp", "--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"xpmlp {xpmlp.__version__}"
    proc = run(sys.executable, "-m", "xpmlp", "--help")
    assert proc.returncode == 0
    for command in ("train", "explain", "info", "bench"):
        assert command in proc.stdout


def test_no_subcommand_prints_help() -> None:
    proc = run(sys.executable, "-m", "xpmlp")
    assert proc.returncode == 0 and "usage: xpmlp" in proc.stdout
