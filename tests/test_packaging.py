"""Packaging: the kernels install as ``xpmlp.kernels`` (no top-level ``kernels``) and import
nothing of the package above them, the wheel holds the library only (no benchmark suite), the
CLI works."""

from __future__ import annotations

import ast
import os
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
    proc = run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        str(out),
        str(ROOT),
    )
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
def test_wheel_holds_the_library_only(wheel: Path) -> None:
    """The benchmark suite stays in benchmarks/: no bench module, no top-level xpmlp_bench."""
    names = zipfile.ZipFile(wheel).namelist()
    code = [n for n in names if n.endswith(".py")]
    assert not [n for n in code if "bench" in n.replace("xpmlp/commands/bench.py", "")], code
    assert "xpmlp/commands/bench.py" in names  # the command that says how to get the suite


@pytest.mark.slow
def test_installed_wheel_trains_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    proc = run(
        sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site), str(wheel)
    )
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
    # outside the checkout `xpmlp bench` has no suite: one line says how to get it
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = run(sys.executable, "-m", "xpmlp", "--help", cwd=tmp_path, env=env)
    assert proc.returncode == 0 and "bench" in proc.stdout, proc.stdout + proc.stderr
    proc = run(sys.executable, "-m", "xpmlp", "bench", "--quick", cwd=tmp_path, env=env)
    assert (proc.returncode, proc.stdout) == (2, ""), proc.stdout + proc.stderr
    assert proc.stderr.startswith("xpmlp bench: error: the benchmark suite is not installed")
    assert len(proc.stderr.splitlines()) == 1 and "pip install -e '.[bench]'" in proc.stderr


def test_bench_without_its_suite_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Where benchmarks/xpmlp_bench is not found, ``xpmlp bench ...`` (any options) prints one
    line naming the checkout's install, and ``--help`` says the same."""
    from xpmlp import cli
    from xpmlp.commands import bench

    monkeypatch.setattr(bench, "load_suite", lambda: None)
    assert cli.main(["bench"]) == 2
    assert capsys.readouterr() == ("", f"xpmlp bench: error: {bench.MISSING}\n")
    with pytest.raises(SystemExit) as exit:
        cli.main(["bench", "--quick", "--rows", "torch-cpu"])
    assert exit.value.code == 2
    assert capsys.readouterr() == ("", f"xpmlp bench: error: {bench.MISSING}\n")
    with pytest.raises(SystemExit):
        cli.main(["bench", "--help"])
    assert "pip install -e '.[bench]'" in " ".join(capsys.readouterr().out.split())


def test_bench_finds_the_suite_of_the_checkout() -> None:
    """From an editable install, ``xpmlp bench`` finds benchmarks/xpmlp_bench whatever the
    working directory, without PYTHONPATH."""
    from xpmlp.commands import bench

    assert bench.checkout_suite() == ROOT / "benchmarks" / "xpmlp_bench"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = run(sys.executable, "-m", "xpmlp", "bench", "--help", cwd=ROOT / "docs", env=env)
    assert proc.returncode == 0 and "--workloads" in proc.stdout, proc.stdout + proc.stderr


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


def imports_above_kernels(source: str) -> list[str]:
    """The imports of a module of ``kernels/`` that reach above the kernels package: a
    relative import of level 2 or more, or an absolute ``xpmlp...`` not under
    ``xpmlp.kernels``; as "line N: the import"."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            names = [node.module or ""] if node.level == 0 else []
            above = node.level >= 2
        elif isinstance(node, ast.Import):
            names, above = [alias.name for alias in node.names], False
        else:
            continue
        above = above or any(
            n == "xpmlp"
            or (
                n.startswith("xpmlp.")
                and n != "xpmlp.kernels"
                and not n.startswith("xpmlp.kernels.")
            )
            for n in names
        )
        if above:
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_the_kernels_import_nothing_from_the_package_above_them() -> None:
    """kernels/ takes its configuration as arguments: no module of it imports xpmlp's."""
    modules = sorted((ROOT / "kernels").glob("*.py"))
    assert len(modules) > 5
    found = {m.name: imports_above_kernels(m.read_text()) for m in modules}
    assert not {name: lines for name, lines in found.items() if lines}


@pytest.mark.parametrize(
    "source",
    [
        "from .. import config",
        "from ..blas import provider",
        "import xpmlp.core.config",
        "from xpmlp import config",
        "def f():\n    from ...xpmlp import config",
    ],
)
def test_the_import_check_catches_each_way_up(source: str) -> None:
    assert imports_above_kernels(source)
    assert not imports_above_kernels(
        "from . import cpu\nfrom .compiler import Target\n"
        "import numba\nfrom xpmlp.kernels import cpu"
    )
