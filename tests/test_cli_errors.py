"""Every user error of ``xpmlp`` is one line ``xpmlp <command>: error: ...`` on stderr with exit
status 2 and no traceback, caught before any data is loaded; ``--threads`` is capped at the cores
this process may use."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import numba
import pytest

import xpmlp.commands.train as train_command
import xpmlp.machine.threads as threads
from xpmlp.backends import resolve_backend_name
from xpmlp.cli import main
from xpmlp.core.errors import DataFileError, ParameterError

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
ONE_LINE = re.compile(r"xpmlp( \w+)?: error: \S.*")


def _no_data_loading(*args: object, **kwargs: object) -> None:
    raise AssertionError("the data was loaded: the error should have been caught before")


@pytest.fixture
def no_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any MNIST loading by ``xpmlp train`` fail the test."""
    monkeypatch.setattr("xpmlp.datasets.load_mnist", _no_data_loading)


def assert_one_error_line(err: str, command: str = "train") -> str:
    """``err`` is exactly one non-empty line ``xpmlp <command>: error: ...``; return it."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    assert "Traceback" not in err and "usage:" not in err
    line = lines[0]
    assert ONE_LINE.fullmatch(line), line
    prefix = f"xpmlp {command}: error: " if command else "xpmlp: error: "
    assert line.startswith(prefix), line
    return line


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run ``xpmlp ARGS`` in this process; its exit status (from a return or SystemExit)
    and stderr."""
    try:
        status = main(args)
    except SystemExit as exc:
        status = exc.code
    return status, capsys.readouterr().err


# --- XPMLP_BACKEND ---------------------------------------------------------------------------


def test_unknown_backend_name_is_a_parameter_error() -> None:
    with pytest.raises(ParameterError, match=r"'garbage'.*expected one of auto, numpy, cuda"):
        resolve_backend_name("garbage")
    with pytest.raises(ValueError):  # still a ValueError for existing callers
        resolve_backend_name("garbage")


def test_bad_backend_environment_variable_in_process(monkeypatch, capsys, no_data) -> None:
    monkeypatch.setenv("XPMLP_BACKEND", "garbage")
    status, err = run_cli(["train", "--quiet"], capsys)
    assert status == 2
    line = assert_one_error_line(err)
    assert "'garbage'" in line and "XPMLP_BACKEND" in line


def test_bad_backend_environment_variable_as_a_subprocess(tmp_path: Path) -> None:
    env = {**os.environ, "XPMLP_BACKEND": "garbage"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "xpmlp",
            "train",
            "--quiet",
            "--no-download",
            "--data-dir",
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    line = assert_one_error_line(proc.stderr)
    assert "'garbage'" in line and "XPMLP_BACKEND" in line
    assert proc.stdout == ""


# --- argparse errors and --seed --------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "command", "expected"),
    [
        (["train", "--seed", "-1"], "train", "expected a non-negative integer, got -1"),
        (["train", "--seed", "x"], "train", "expected a non-negative integer, got 'x'"),
        (["train", "--epochs", "0"], "train", "--epochs"),
        (["train", "--backend", "tpu"], "train", "'tpu'"),
        (["train", "--bogus"], "train", "unrecognized arguments: --bogus"),
        (["bogus"], "", "'bogus'"),
        (["--bogus"], "", "unrecognized arguments: --bogus"),
    ],
)
def test_argument_errors_are_one_line(args, command, expected, capsys, no_data) -> None:
    status, err = run_cli(args, capsys)
    assert status == 2
    line = assert_one_error_line(err, command)
    assert expected in line
    prog = f"xpmlp {command}" if command else "xpmlp"
    assert line.endswith(f"(see {prog} --help)")


def test_seed_zero_is_accepted(capsys, monkeypatch) -> None:
    def missing(*args: object, **kwargs: object) -> None:
        raise DataFileError("no data here")

    monkeypatch.setattr("xpmlp.datasets.load_mnist", missing)
    status, err = run_cli(["train", "--seed", "0", "--backend", "numpy", "--quiet"], capsys)
    assert status == 2  # got past argument parsing to the (stubbed) data loading
    assert assert_one_error_line(err) == "xpmlp train: error: no data here"


# --- --out and --report, checked before any data is loaded -----------------------------------


def _assert_fails_fast(args: list[str], capsys, option: str, path: Path) -> str:
    started = time.perf_counter()
    status, err = run_cli(["train", "--backend", "numpy", "--quiet", *args], capsys)
    assert time.perf_counter() - started < 10
    assert status == 2
    line = assert_one_error_line(err)
    assert option in line and str(path) in line
    return line


@pytest.mark.parametrize("option", ["--out", "--report"])
def test_output_under_a_regular_file(option, tmp_path, capsys, no_data) -> None:
    (tmp_path / "file.txt").write_text("x")
    path = tmp_path / "file.txt" / "m.npz"
    line = _assert_fails_fast([option, str(path)], capsys, option, path)
    assert "not a directory" in line


def test_output_under_a_regular_file_deeper(tmp_path, capsys, no_data) -> None:
    (tmp_path / "file.txt").write_text("x")
    path = tmp_path / "file.txt" / "a" / "b" / "m.npz"
    line = _assert_fails_fast(["--out", str(path)], capsys, "--out", path)
    assert "not a directory" in line


@pytest.mark.parametrize("option", ["--out", "--report"])
def test_output_that_is_a_directory(option, tmp_path, capsys, no_data) -> None:
    line = _assert_fails_fast([option, str(tmp_path)], capsys, option, tmp_path)
    assert "is a directory" in line


def test_out_whose_npz_file_is_a_directory(tmp_path, capsys, no_data) -> None:
    (tmp_path / "m.npz").mkdir()
    line = _assert_fails_fast(["--out", str(tmp_path / "m")], capsys, "--out", tmp_path)
    assert "m.npz" in line and "is a directory" in line


@pytest.mark.skipif(IS_ROOT, reason="root may write into a read-only directory: nothing to test")
@pytest.mark.parametrize("option", ["--out", "--report"])
def test_output_in_a_read_only_directory(option, tmp_path, capsys, no_data) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        path = folder / "m.npz"
        line = _assert_fails_fast([option, str(path)], capsys, option, path)
        assert "ermission denied" in line
    finally:
        folder.chmod(stat.S_IRWXU)


def test_unwritable_directory_is_reported_with_the_reason(tmp_path, monkeypatch) -> None:
    """The read-only case where root cannot produce it: the probe file cannot be created."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(tmp_path))

    monkeypatch.setattr(train_command.tempfile, "NamedTemporaryFile", refuse)
    with pytest.raises(ParameterError, match=r"^--out '.*m\.npz' cannot be written: Permission"):
        train_command.check_output_path("--out", tmp_path / "m.npz")


def test_check_output_path_accepts_missing_parents_without_creating_anything(tmp_path) -> None:
    path = tmp_path / "a" / "b" / "m.npz"
    assert train_command.check_output_path("--out", path) == path
    assert list(tmp_path.iterdir()) == []  # no directory made, probe file deleted


def test_check_output_path_accepts_an_existing_file(tmp_path) -> None:
    path = tmp_path / "r.json"
    path.write_text("{}")
    assert train_command.check_output_path("--report", str(path)) == path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
    assert path.read_text() == "{}"


def test_check_output_path_names_option_path_and_reason(tmp_path) -> None:
    with pytest.raises(ParameterError, match=r"^--report '.*' is a directory; expected a file"):
        train_command.check_output_path("--report", tmp_path)


# --- --threads -------------------------------------------------------------------------------


def test_available_cores_is_this_process_affinity() -> None:
    cores = threads.available_cores()
    assert cores >= 1
    if hasattr(os, "sched_getaffinity"):
        assert cores == len(os.sched_getaffinity(0))
    else:
        assert cores == (os.cpu_count() or 1)


def test_cpu_threads_caps_at_the_available_cores() -> None:
    before = numba.get_num_threads()
    cores = threads.available_cores()
    with threads.cpu_threads(10**4) as notes:
        assert numba.get_num_threads() <= cores
        unit = "core" if cores == 1 else "cores"
        expected = f"--threads 10000 is more than the {cores} {unit} available; using {cores}"
        assert notes.count(expected) == 1
    assert numba.get_num_threads() == before


def test_cpu_threads_within_the_cores_has_no_cap_note() -> None:
    with threads.cpu_threads(1) as notes:
        assert numba.get_num_threads() == 1
        assert not any("available" in note for note in notes)


@pytest.mark.parametrize("bad", [0, -3, True, 2.0])
def test_cpu_threads_refuses_a_bad_count(bad) -> None:
    with pytest.raises(ParameterError, match="expected an integer >= 1"):
        with threads.cpu_threads(bad):
            pass


def test_train_says_once_that_threads_were_capped(monkeypatch, capsys) -> None:
    def missing(*args: object, **kwargs: object) -> None:
        raise DataFileError("no data here")

    monkeypatch.setattr("xpmlp.datasets.load_mnist", missing)
    cores = threads.available_cores()
    status, err = run_cli(["train", "--backend", "numpy", "--threads", "64", "--quiet"], capsys)
    assert status == 2
    unit = "core" if cores == 1 else "cores"
    note = f"xpmlp train: --threads 64 is more than the {cores} {unit} available; using {cores}"
    if cores < 64:
        assert err.splitlines().count(note) == 1, err
