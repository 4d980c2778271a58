"""Model files: malformed ones fail with DataFileError, and atomic writes clean up after
killed writers and give files the user's usual mode.

The corruption tests start from one valid saved model and rewrite its parts with
``numpy.savez``; every variant must raise ``DataFileError`` naming the file.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import xpmlp
from xpmlp.machine import atomic as _atomic
from xpmlp.machine.atomic import atomic_write
from xpmlp.train.record import _json_type

SIZES = [3, 4, 2]
N_PARAMS = 3 * 4 + 4 + 4 * 2 + 2
REQUIRED = ("format", "layer_sizes", "activations", "loss", "dtype", "optimizer")
HYPERPARAMETERS = ("learning_rate", "weight_decay", "beta1", "beta2", "eps")
POSIX_ONLY = pytest.mark.skipif(os.name != "posix", reason="needs POSIX signals and umask")
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class Saved:
    """One valid model file and its decoded parts, and a folder for variants."""

    folder: Path
    path: Path
    params: np.ndarray
    meta: dict[str, Any]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Saved:
    folder = tmp_path_factory.mktemp("model-files")
    model = xpmlp.MLP(SIZES, backend="numpy", seed=3)
    model.history_ = [{"epoch": 1, "loss": 0.5}]
    path = xpmlp.save_model(model, folder / "good.npz")
    with np.load(path, allow_pickle=False) as data:
        params, meta = data["params"], json.loads(str(data["meta"]))
    assert params.shape == (N_PARAMS,)
    return Saved(folder, path, params, meta)


def write_npz(path: Path, **arrays: Any) -> Path:
    """``arrays`` saved with numpy.savez at exactly ``path`` (dicts become JSON strings)."""
    encoded = {
        k: np.array(json.dumps(v)) if isinstance(v, dict | list) else v for k, v in arrays.items()
    }
    with open(path, "wb") as f:
        np.savez(f, **encoded)
    return path


def assert_rejected(path: Path, *fragments: str) -> xpmlp.DataFileError:
    """load_model(path) raises DataFileError whose message names the file and ``fragments``."""
    with pytest.raises(xpmlp.DataFileError) as info:
        xpmlp.load_model(path, backend="numpy")
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message
    return info.value


json_type = _json_type  # the JSON name of a decoded value's type


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
unknown_names = st.text(max_size=6).map(lambda s: "no-such-" + s)
not_numbers = st.text(max_size=6) | st.lists(st.integers(), max_size=2) | st.just({})


# ---------------------------------------------------------------------- D10: the reference


def test_a_valid_file_loads_with_its_parameters_and_history(saved: Saved) -> None:
    model = xpmlp.load_model(saved.path, backend="numpy")
    np.testing.assert_array_equal(model.params, saved.params)
    assert model.layer_sizes == SIZES
    assert model.history_ == saved.meta["history"]


def test_a_missing_file_still_raises_file_not_found(saved: Saved) -> None:
    with pytest.raises(FileNotFoundError):
        xpmlp.load_model(saved.folder / "nothing-here.npz", backend="numpy")


def test_an_unknown_activation_names_the_file_and_the_name(saved: Saved) -> None:
    meta = {**saved.meta, "activations": ["wiggle", "softmax"]}
    path = write_npz(saved.folder / "wiggle.npz", params=saved.params, meta=meta)
    assert_rejected(path, "wiggle")


# ---------------------------------------------------------------------- D10: metadata


@SETTINGS
@given(key=st.sampled_from(REQUIRED))
def test_metadata_missing_a_key(saved: Saved, key: str) -> None:
    meta = {k: v for k, v in saved.meta.items() if k != key}
    path = write_npz(saved.folder / "missing-key.npz", params=saved.params, meta=meta)
    assert_rejected(path, key)


@SETTINGS
@given(key=st.sampled_from((*REQUIRED, "history")), value=json_values)
def test_metadata_value_of_another_json_type(saved: Saved, key: str, value: Any) -> None:
    assume(json_type(value) != json_type(saved.meta[key]))
    meta = {**saved.meta, key: value}
    path = write_npz(saved.folder / "other-type.npz", params=saved.params, meta=meta)
    assert_rejected(path, key)


@SETTINGS
@given(meta=json_values.filter(lambda v: not isinstance(v, dict)))
def test_metadata_that_is_not_a_json_object(saved: Saved, meta: Any) -> None:
    path = saved.folder / "not-object.npz"
    with open(path, "wb") as f:
        np.savez(f, params=saved.params, meta=np.array(json.dumps(meta)))
    assert_rejected(path, "JSON object")


def edit(meta: dict[str, Any], key: str, value: Any, sub: str | int | None = None) -> dict:
    """A deep copy of ``meta`` with ``meta[key]`` (or ``meta[key][sub]``) set to ``value``."""
    meta = copy.deepcopy(meta)
    if sub is None:
        meta[key] = value
    else:
        meta[key][sub] = value
    return meta


@st.composite
def bad_entries(draw: st.DrawFn, meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with one entry of the right JSON type but a wrong value."""
    choice = draw(
        st.sampled_from(
            [
                "size",
                "short sizes",
                "n activations",
                "activation",
                "loss",
                "dtype",
                "format",
                "optimizer name",
                "no optimizer name",
                "hyperparameter",
            ]
        )
    )
    if choice == "size":
        bad = st.integers(max_value=0) | st.booleans() | st.floats() | st.text(max_size=3)
        return edit(meta, "layer_sizes", draw(bad), draw(st.integers(0, len(SIZES) - 1)))
    if choice == "short sizes":
        return edit(meta, "layer_sizes", draw(st.lists(st.integers(1, 5), max_size=1)))
    if choice == "n activations":
        names = st.lists(st.sampled_from(["relu", "softmax"]), max_size=5)
        return edit(meta, "activations", draw(names.filter(lambda a: len(a) != 2)))
    if choice == "activation":
        return edit(meta, "activations", draw(unknown_names), draw(st.integers(0, 1)))
    if choice == "loss":
        return edit(meta, "loss", draw(unknown_names))
    if choice == "dtype":
        return edit(meta, "dtype", draw(st.sampled_from(["float16", "int32", "", "Float32"])))
    if choice == "format":
        return edit(meta, "format", draw(st.sampled_from(["xpmlp-model/2", "", "other"])))
    if choice == "optimizer name":
        return edit(meta, "optimizer", draw(unknown_names | st.integers() | st.none()), "name")
    if choice == "no optimizer name":
        return edit(meta, "optimizer", {k: v for k, v in meta["optimizer"].items() if k != "name"})
    key = draw(st.sampled_from(HYPERPARAMETERS))
    return edit(meta, "optimizer", draw(not_numbers), key)


@SETTINGS
@given(data=st.data())
def test_metadata_with_a_wrong_value(saved: Saved, data: st.DataObject) -> None:
    meta = data.draw(bad_entries(saved.meta))
    path = write_npz(saved.folder / "wrong-value.npz", params=saved.params, meta=meta)
    assert_rejected(path)


# ---------------------------------------------------------------------- D10: parameters


@st.composite
def bad_params(draw: st.DrawFn, good: np.ndarray) -> np.ndarray:
    """An array that cannot be the 26 parameters of a [3, 4, 2] float32 model."""
    choice = draw(
        st.sampled_from(
            [
                "strings",
                "length",
                "2-D",
                "0-D",
                "non-finite",
                "too big for float32",
                "integers",
                "complex",
            ]
        )
    )
    if choice == "strings":
        return good.astype(str)
    if choice == "length":
        n = draw(st.integers(0, 3 * N_PARAMS).filter(lambda n: n != N_PARAMS))
        return np.linspace(-1, 1, n, dtype=good.dtype)
    if choice == "2-D":
        return good.reshape(draw(st.sampled_from([(2, 13), (13, 2), (1, 26), (26, 1)])))
    if choice == "0-D":
        return np.array(1.5)
    if choice == "non-finite":
        bad = good.astype(draw(st.sampled_from(["float32", "float64"])))
        bad[draw(st.integers(0, N_PARAMS - 1))] = draw(
            st.sampled_from([math.nan, math.inf, -math.inf])
        )
        return bad
    if choice == "too big for float32":
        bad = good.astype("float64")
        bad[draw(st.integers(0, N_PARAMS - 1))] = draw(st.sampled_from([1e300, -1e39]))
        return bad
    if choice == "integers":
        return good.astype(draw(st.sampled_from(["int64", "int8", "bool"])))
    return good.astype("complex64")


@SETTINGS
@given(data=st.data())
def test_params_that_cannot_be_the_model(saved: Saved, data: st.DataObject) -> None:
    params = data.draw(bad_params(saved.params))
    path = write_npz(saved.folder / "bad-params.npz", params=params, meta=saved.meta)
    assert_rejected(path, "params")


# ---------------------------------------------------------------------- D10: the container


@st.composite
def broken_files(draw: st.DrawFn, saved: Saved) -> bytes:
    """The bytes of a file that is not an xpmlp model archive."""
    good = saved.path.read_bytes()
    choice = draw(
        st.sampled_from(
            [
                "npy",
                "truncated",
                "random",
                "zip-like",
                "members",
                "meta array",
                "meta text",
                "object params",
            ]
        )
    )
    if choice == "truncated":
        return good[: draw(st.integers(0, len(good) - 1))]
    if choice == "random":
        return draw(st.binary(max_size=300))
    if choice == "zip-like":
        return b"PK\x03\x04" + draw(st.binary(max_size=300))
    arrays: dict[str, Any] = {"params": saved.params, "meta": np.array(json.dumps(saved.meta))}
    if choice == "npy":
        buffer = io.BytesIO()
        np.save(buffer, draw(st.sampled_from([saved.params, np.array(json.dumps(saved.meta))])))
        return buffer.getvalue()
    if choice == "members":
        drop = draw(st.sampled_from(["params", "meta"]))
        arrays = {("weights" if k == drop else k): v for k, v in arrays.items()}
    elif choice == "meta array":
        arrays["meta"] = draw(
            st.sampled_from(
                [
                    np.array([json.dumps(saved.meta)]),
                    np.array(json.dumps(saved.meta).encode()),
                    np.zeros(3),
                    np.array(7),
                ]
            )
        )
    elif choice == "meta text":
        arrays["meta"] = np.array(draw(st.text(max_size=20).filter(not_json)))
    else:
        arrays["params"] = np.array([object(), 1.0], dtype=object)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def not_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return True
    return False


@SETTINGS
@given(data=st.data())
def test_files_that_are_no_model_archive(saved: Saved, data: st.DataObject) -> None:
    path = saved.folder / "broken.npz"
    path.write_bytes(data.draw(broken_files(saved)))
    assert_rejected(path)


# ---------------------------------------------------------------------- D12: temporaries


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def live_child() -> Iterator[subprocess.Popen]:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield child
    finally:
        child.kill()
        child.wait()


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_the_temporary_name_carries_the_writers_pid(tmp_path: Path) -> None:
    target = tmp_path / "m.npz"
    with atomic_write(target, "wb") as f:
        f.write(b"x")
        (name,) = temporaries(tmp_path)
    assert re.fullmatch(rf"\.m\.npz\.{os.getpid()}\.[^.]+\.tmp", name)
    assert os.listdir(tmp_path) == ["m.npz"]


@POSIX_ONLY
def test_only_stale_temporaries_of_the_same_target_are_removed(
    tmp_path: Path,
    live_child: subprocess.Popen,
) -> None:
    dead = dead_pid()
    stale = [f".t.bin.{dead}.abcd_123.tmp", f".t.bin.{dead}.zz.tmp"]
    kept = [
        f".t.bin.{os.getpid()}.abcd1234.tmp",  # this process
        f".t.bin.{live_child.pid}.abcd1234.tmp",  # a live process
        f".other.bin.{dead}.abcd1234.tmp",  # another target
        f".t.bin.1.{dead}.abcd1234.tmp",  # a temporary of target "t.bin.1"
        ".t.bin.abcd1234.tmp",  # the old name, without a pid
        f".t.bin.{dead}.tmp",
        f"t.bin.{dead}.abcd1234.tmp",
        f".t.bin.{dead}.ab.tmp.keep",
        ".t.bin.0.abcd1234.tmp",  # pid 0 is no process
    ]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"left over")
    with atomic_write(tmp_path / "t.bin", "wb") as f:
        f.write(b"new")
    assert sorted(os.listdir(tmp_path)) == sorted([*kept, "t.bin"])
    assert (tmp_path / "t.bin").read_bytes() == b"new"


KILLED_WRITER = """
import sys, time
from xpmlp.machine.atomic import atomic_write
from xpmlp.train.record import _json_type
with atomic_write(sys.argv[1], "wb") as f:
    f.write(b"half a model" * 1000)
    f.flush()
    print("writing", flush=True)
    time.sleep(60)
"""


def start_and_kill_a_writer(target: Path) -> int:
    """The pid of a writer killed by SIGKILL inside ``atomic_write(target)``."""
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(target)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "writing\n"
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        if writer.stdout is not None:
            writer.stdout.close()
    return writer.pid


@POSIX_ONLY
def test_saves_killed_by_sigkill_are_cleaned_up_by_the_next_save(tmp_path: Path) -> None:
    target = tmp_path / "model.npz"
    first = start_and_kill_a_writer(target)
    assert [name.split(".")[3] for name in temporaries(tmp_path)] == [str(first)]
    assert not target.exists()  # what SIGKILL leaves: a temporary only
    second = start_and_kill_a_writer(target)  # its atomic_write removed the first's
    assert [name.split(".")[3] for name in temporaries(tmp_path)] == [str(second)]
    with atomic_write(target, "wb") as f:
        f.write(b"whole")
    assert os.listdir(tmp_path) == ["model.npz"]
    assert target.read_bytes() == b"whole"


def test_a_failed_write_and_a_rejecting_verify_leave_nothing(tmp_path: Path) -> None:
    target = tmp_path / "r.txt"
    with pytest.raises(OSError, match="disk full"), atomic_write(target) as f:
        f.write("half")
        raise OSError("disk full")

    def reject(tmp: Path) -> None:
        assert tmp.read_text() == "all" and tmp.parent == tmp_path
        raise ValueError("checksum mismatch")

    with pytest.raises(ValueError, match="checksum"), atomic_write(target, verify=reject) as f:
        f.write("all")
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------- D12: file mode


@pytest.fixture
def umask() -> Iterator[Any]:
    """Set the process umask for one test (restored afterwards)."""
    old = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(old)


@POSIX_ONLY
@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002, 0o027])
def test_the_file_gets_the_mode_of_a_new_file(tmp_path: Path, umask: Any, mask: int) -> None:
    umask(mask)
    with atomic_write(tmp_path / "report.json") as f:
        f.write("{}")
    with open(tmp_path / "plain.json", "w") as f:  # what the user's own files get
        f.write("{}")
    mode = (tmp_path / "report.json").stat().st_mode & 0o777
    assert mode == 0o666 & ~mask == (tmp_path / "plain.json").stat().st_mode & 0o777


@POSIX_ONLY
def test_a_saved_model_is_readable_by_others_under_umask_022(
    saved: Saved,
    tmp_path: Path,
    umask: Any,
) -> None:
    umask(0o022)
    model = xpmlp.load_model(saved.path, backend="numpy")
    path = xpmlp.save_model(model, tmp_path / "m")
    assert path.stat().st_mode & 0o777 == 0o644


@POSIX_ONLY
@pytest.mark.parametrize("from_proc", [True, False])
def test_the_umask_is_read_without_changing_it(
    umask: Any, monkeypatch: pytest.MonkeyPatch, from_proc: bool
) -> None:
    if not from_proc:
        monkeypatch.setattr(_atomic, "_umask_from_proc", lambda: None)
    elif _atomic._umask_from_proc() is None:
        pytest.skip("no Umask line in /proc/self/status here")
    umask(0o027)
    assert _atomic.current_umask() == 0o027
    assert umask(0o027) == 0o027  # unchanged
