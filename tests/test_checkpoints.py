"""Checkpoints: a saved model carries its training state, and training resumed from it gives
the bits of training straight through; older files load with a fresh optimizer; every
defect of the training state is a DataFileError naming the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import xpmlp
from xpmlp import MLP, load_model, save_model
from xpmlp.backends.base import Backend
from xpmlp.cli import main
from xpmlp.train.checkpoint import reseeded


def blobs(m: int = 150, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = np.array([[2.0, 2.0, 0.0], [-2.0, 2.0, 0.0], [0.0, -2.0, 1.0]])
    y = rng.integers(0, 3, size=m)
    return (centers[y] + 0.9 * rng.standard_normal((m, 3))), y


X, Y = blobs()
FIT = {"batch_size": 16, "shuffle": True}


def model(
    optimizer: str = "adam", dtype: str = "float32", backend: Any = "numpy", **options: Any
) -> MLP:
    return MLP([3, 7, 3], optimizer=optimizer, dtype=dtype, backend=backend, seed=5, **options)


def without_seconds(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in ("seconds", "samples_per_s")} for r in history]


def assert_same_training(a: MLP, b: MLP) -> None:
    np.testing.assert_array_equal(a.params, b.params)
    np.testing.assert_array_equal(a.optimizer.state, b.optimizer.state)
    assert (a.steps_, a.epoch_) == (b.steps_, b.epoch_)
    assert without_seconds(a.history_) == without_seconds(b.history_)


# ---------------------------------------------------------------------- resuming


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer", ["momentum", "adam", "adagrad"])
def test_two_epochs_saved_loaded_and_two_more_are_four_epochs(
    tmp_path: Path, optimizer: str, dtype: str
) -> None:
    straight = model(optimizer, dtype).fit(X, Y, epochs=4, **FIT)
    first = model(optimizer, dtype).fit(X, Y, epochs=2, **FIT)
    resumed = load_model(save_model(first, tmp_path / "ckpt"), backend="numpy")
    assert (resumed.epoch_, resumed.steps_) == (2, 2 * 10)
    np.testing.assert_array_equal(resumed.optimizer.state, first.optimizer.state)
    resumed.fit(X, Y, epochs=2, **FIT)
    np.testing.assert_array_equal(resumed.params, straight.params)
    np.testing.assert_array_equal(resumed.optimizer.state, straight.optimizer.state)
    assert resumed.steps_ == straight.steps_ == 40
    # the shuffling went on where it was: without the generator's state it would not
    fresh = load_model(tmp_path / "ckpt.npz", backend="numpy")
    fresh.rng = np.random.default_rng(5)
    fresh.fit(X, Y, epochs=2, **FIT)
    assert not np.array_equal(fresh.params, straight.params)


def test_resuming_with_dropout_batch_norm_and_clipping_is_bit_identical(tmp_path: Path) -> None:
    """The dropout step counter and batch norm's running estimates travel in the checkpoint:
    the masks and the inference statistics go on where they were."""

    def regularized() -> MLP:
        return MLP(
            [3, 7, 5, 3],
            optimizer="rmsprop",
            dropout=[0.3, 0.1],
            batch_norm=True,
            l1=1e-4,
            clip_grad_norm=1.0,
            backend="numpy",
            seed=5,
        )

    straight = regularized().fit(X, Y, epochs=4, lr_schedule="cosine", **FIT)
    half = regularized()
    half.fit(
        X,
        Y,
        epochs=4,
        lr_schedule="cosine",
        **FIT,
        callback=lambda r: r["epoch"] == 2 and save_model(half, tmp_path / "reg"),
    )
    resumed = load_model(tmp_path / "reg.npz", backend="numpy")
    assert resumed.epoch_ == 2 and resumed.dropout_steps == half.dropout_steps // 2
    resumed.fit(X, Y, epochs=4, initial_epoch=resumed.epoch_, lr_schedule="cosine", **FIT)
    assert_same_training(resumed, straight)
    np.testing.assert_array_equal(resumed.running_mean, straight.running_mean)
    np.testing.assert_array_equal(resumed.running_var, straight.running_var)
    assert resumed.dropout_steps == straight.dropout_steps


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_a_cosine_run_resumed_from_a_mid_run_checkpoint(tmp_path: Path, optimizer: str) -> None:
    straight = model(optimizer).fit(X, Y, epochs=4, lr_schedule="cosine", **FIT)
    ckpt = tmp_path / "mid.npz"
    interrupted = model(optimizer)

    def save_at_two(record: dict[str, Any]) -> None:
        if record["epoch"] == 2:
            save_model(interrupted, ckpt)

    interrupted.fit(X, Y, epochs=4, lr_schedule="cosine", callback=save_at_two, **FIT)
    resumed = load_model(ckpt, backend="numpy")
    assert resumed.lr_schedule_ == {"name": "cosine", "step": 20, "total": 40}
    resumed.fit(X, Y, epochs=4, initial_epoch=resumed.epoch_, lr_schedule="cosine", **FIT)
    assert_same_training(resumed, straight)
    assert [r["epoch"] for r in resumed.history_] == [1, 2, 3, 4]


def test_a_model_loaded_on_the_reference_backend_resumes_the_same_run(tmp_path: Path) -> None:
    """The reference backend draws from the same NumPy generator: the state carries."""
    first = model("momentum", "float64").fit(X, Y, epochs=2, **FIT)
    path = save_model(first, tmp_path / "m")
    on_numpy = load_model(path, backend="numpy")
    on_reference = load_model(path, backend=Backend())
    assert on_reference.rng.bit_generator.state == on_numpy.rng.bit_generator.state
    on_numpy.fit(X, Y, epochs=1, **FIT)
    on_reference.fit(X, Y, epochs=1, **FIT)
    np.testing.assert_allclose(on_reference.params, on_numpy.params, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("rng", [None, {"kind": "cupy"}])
def test_a_generator_state_of_another_backend_is_reseeded_from_seed_and_epoch(
    tmp_path: Path, rng: Any
) -> None:
    """What loads where the saved generator cannot go: CUDA's state (null) or a kind this
    backend does not draw from."""
    path = save_model(model().fit(X, Y, epochs=3, **FIT), tmp_path / "m")
    edited = rewrite(
        path, tmp_path / "other-rng.npz", lambda meta: meta["training"].update(rng=rng)
    )
    probe = load_model(edited, backend="numpy")
    expected = reseeded(probe.backend, 5, 3)
    np.testing.assert_array_equal(probe.rng.permutation(50), expected.permutation(50))
    loaded, again = (load_model(edited, backend="numpy") for _ in range(2))
    loaded.fit(X, Y, epochs=1, **FIT)
    again.fit(X, Y, epochs=1, **FIT)
    np.testing.assert_array_equal(loaded.params, again.params)


def test_the_file_holds_the_training_state(tmp_path: Path) -> None:
    trained = model("adam").fit(X, Y, epochs=2, lr_schedule="cosine", **FIT)
    path = save_model(trained, tmp_path / "m")
    with np.load(path, allow_pickle=False) as data:
        assert set(data.files) == {"params", "meta", "state.optimizer.m", "state.optimizer.v"}
        meta = json.loads(str(data["meta"]))
        np.testing.assert_array_equal(data["state.optimizer.v"], trained.optimizer.state[1])
    assert meta["format"] == "xpmlp-model/1"
    assert (meta["seed"], meta["init"]) == (5, "auto")
    training = meta["training"]
    assert (training["epoch"], training["steps"]) == (2, 20)
    assert training["arrays"] == ["optimizer.m", "optimizer.v"]
    assert training["lr_schedule"] == {"name": "cosine", "step": 20, "total": 20}
    assert training["rng"]["kind"] == "numpy"
    assert training["rng"]["bit_generator"] == trained.rng.bit_generator.state


def test_an_untrained_model_writes_no_optimizer_state(tmp_path: Path) -> None:
    """Before its first step an optimizer's state is its fresh one (Adagrad's included),
    which loading rebuilds."""
    untrained = MLP(
        [3, 7, 3], optimizer=xpmlp.Adagrad(initial_accumulator_value=0.5), seed=2, backend="numpy"
    )
    path = save_model(untrained, tmp_path / "m")
    with np.load(path, allow_pickle=False) as data:
        assert set(data.files) == {"params", "meta"}
    loaded = load_model(path, backend="numpy")
    np.testing.assert_array_equal(loaded.optimizer.state, untrained.optimizer.state)
    assert loaded.seed == 2 and loaded.steps_ == 0


def test_a_file_without_training_state_loads_with_a_fresh_optimizer(tmp_path: Path) -> None:
    """Files written before checkpoints: params and meta, no training, seed or init."""
    trained = model("momentum").fit(X, Y, epochs=2, **FIT)
    path = save_model(trained, tmp_path / "new.npz")
    old = rewrite(
        path,
        tmp_path / "old.npz",
        lambda meta: [meta.pop(k) for k in ("training", "seed", "init")],
        keep_state=False,
    )
    loaded = load_model(old, backend="numpy")
    np.testing.assert_array_equal(loaded.params, trained.params)
    assert (loaded.epoch_, loaded.steps_, loaded.seed) == (0, 0, 0)
    assert not loaded.optimizer.state.any()
    assert loaded.history_ == trained.history_
    loaded.fit(X, Y, epochs=1, **FIT)  # and it trains on
    assert loaded.epoch_ == 1


def test_initial_epoch_is_checked() -> None:
    m = model()
    for bad in (4, 5, -1, True, 1.0):
        with pytest.raises(xpmlp.ParameterError, match="initial_epoch"):
            m.fit(X, Y, epochs=4, initial_epoch=bad)
    assert m.epoch_ == 0 and m.steps_ == 0


# ---------------------------------------------------------------------- damaged state


def rewrite(
    path: Path, to: Path, edit_meta: Any = None, keep_state: bool = True, **arrays: Any
) -> Path:
    """A copy of the model file at ``path`` at ``to``: its meta passed through
    ``edit_meta``, its state members dropped unless ``keep_state``, ``arrays`` added or
    replaced (None drops one)."""
    with np.load(path, allow_pickle=False) as data:
        members = {k: data[k] for k in data.files if keep_state or not k.startswith("state.")}
    meta = json.loads(str(members.pop("meta")))
    if edit_meta is not None:
        edit_meta(meta)
    for name, value in arrays.items():
        if value is None:
            members.pop(name, None)
        else:
            members[name] = value
    with open(to, "wb") as f:
        np.savez(f, meta=np.array(json.dumps(meta)), **members)
    return to


def set_training(key: str, value: Any) -> Any:
    return lambda meta: meta["training"].__setitem__(key, value)


def set_meta(key: str, value: Any) -> Any:
    return lambda meta: meta.__setitem__(key, value)


def set_rng(key: str, value: Any) -> Any:
    return lambda meta: meta["training"]["rng"]["bit_generator"].__setitem__(key, value)


N_PARAMS = 3 * 7 + 7 + 7 * 3 + 3
DEFECTS = {
    "training not an object": (set_meta("training", [1, 2]), {}, "'training'"),
    "negative epoch": (set_training("epoch", -1), {}, "'epoch'"),
    "steps a string": (set_training("steps", "12"), {}, "'steps'"),
    "boolean epoch": (set_training("epoch", True), {}, "'epoch'"),
    "rng without kind": (set_training("rng", {"state": 1}), {}, "'rng'"),
    "rng of another generator": (set_rng("bit_generator", "MT19937"), {}, "'rng'"),
    "rng state garbled": (set_rng("state", {"state": "x", "inc": 1}), {}, "'rng'"),
    "schedule malformed": (
        set_training("lr_schedule", {"name": "cosine", "step": -1, "total": 4}),
        {},
        "'lr_schedule'",
    ),
    "arrays not a list": (set_training("arrays", "optimizer.m"), {}, "'arrays'"),
    "listed array missing": (None, {"state.optimizer.v": None}, "optimizer.v"),
    "unlisted array": (None, {"state.optimizer.w": np.zeros(N_PARAMS, "float32")}, "optimizer.w"),
    "state of another optimizer": (
        set_training("arrays", ["optimizer.m", "optimizer.velocity"]),
        {"state.optimizer.v": None, "state.optimizer.velocity": np.zeros(N_PARAMS, "float32")},
        "velocity",
    ),
    "steps without state": (
        set_training("arrays", []),
        {"state.optimizer.m": None, "state.optimizer.v": None},
        "steps",
    ),
    "state of the wrong length": (
        None,
        {"state.optimizer.m": np.zeros(N_PARAMS + 1, "float32")},
        "shape",
    ),
    "state of integers": (None, {"state.optimizer.m": np.zeros(N_PARAMS, "int32")}, "dtype"),
    "state not finite": (None, {"state.optimizer.v": np.full(N_PARAMS, np.nan, "float32")}, "NaN"),
    "state too big for float32": (
        None,
        {"state.optimizer.v": np.full(N_PARAMS, 1e300)},
        "infinite",
    ),
    "array of no group": (
        set_training("arrays", ["optimizer.m", "optimizer.v", "extra"]),
        {"state.extra": np.zeros(3, "float32")},
        "extra",
    ),
    "unknown buffer": (
        set_training("arrays", ["buffer.bn", "optimizer.m", "optimizer.v"]),
        {"state.buffer.bn": np.zeros(3, "float32")},
        "buffer 'bn'",
    ),
    "state without training": (lambda meta: meta.pop("training"), {}, "training"),
    "negative seed": (set_meta("seed", -3), {}, "'seed'"),
    "seed a float": (set_meta("seed", 1.5), {}, "'seed'"),
    "init a number": (set_meta("init", 3), {}, "'init'"),
    "unknown init": (set_meta("init", "orthogonal"), {}, "orthogonal"),
}


@pytest.fixture(scope="module")
def good_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    trained = model("adam").fit(X, Y, epochs=1, **FIT)
    return save_model(trained, tmp_path_factory.mktemp("ckpt") / "good.npz")


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_a_damaged_training_state_is_a_data_file_error(
    good_file: Path, tmp_path: Path, defect: str
) -> None:
    edit_meta, arrays, fragment = DEFECTS[defect]
    path = rewrite(good_file, tmp_path / "bad.npz", edit_meta, **arrays)
    with pytest.raises(xpmlp.DataFileError) as info:
        load_model(path, backend="numpy")
    assert str(path) in str(info.value)
    assert fragment in str(info.value)


def test_the_unedited_copy_loads(good_file: Path, tmp_path: Path) -> None:
    """The damaged files above differ from a loadable one only by their defect."""
    loaded = load_model(rewrite(good_file, tmp_path / "same.npz"), backend="numpy")
    assert loaded.steps_ == 10


# ---------------------------------------------------------------------- the command line


def test_xpmlp_train_resume_gives_the_straight_runs_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """A cosine run interrupted after its first checkpoint, then resumed, ends as the run done
    in one go."""
    common = [
        "train",
        "--backend",
        "numpy",
        "--limit",
        "300",
        "--hidden",
        "12",
        "--batch-size",
        "50",
        "--optimizer",
        "momentum",
        "--epochs",
        "3",
        "--quiet",
    ]
    assert main([*common, "--out", str(tmp_path / "straight.npz")]) == 0
    import xpmlp.io.serialize

    real_save = xpmlp.io.serialize.save_model

    def save_then_interrupt(m: MLP, path: Any) -> Path:
        real_save(m, path)
        raise KeyboardInterrupt

    monkeypatch.setattr(xpmlp.io.serialize, "save_model", save_then_interrupt)
    ckpt = tmp_path / "ckpt.npz"
    assert main([*common, "--checkpoint", str(ckpt)]) == 130
    monkeypatch.undo()
    assert load_model(ckpt, backend="numpy").epoch_ == 1
    report = tmp_path / "r.json"
    assert (
        main(
            [
                *common,
                "--resume",
                str(ckpt),
                "--out",
                str(tmp_path / "resumed.npz"),
                "--report",
                str(report),
            ]
        )
        == 0
    )
    straight = load_model(tmp_path / "straight.npz", backend="numpy")
    resumed = load_model(tmp_path / "resumed.npz", backend="numpy")
    assert_same_training(resumed, straight)
    assert [r["epoch"] for r in json.loads(report.read_text())["epochs"]] == [1, 2, 3]
    capsys.readouterr()
    assert main([*common, "--resume", str(tmp_path / "resumed.npz")]) == 2
    assert "at epoch 3" in capsys.readouterr().err


# ---------------------------------------------------------------------- CUDA


@pytest.mark.cuda
def test_checkpoints_cross_between_cuda_and_numpy(tmp_path: Path) -> None:
    """A CUDA model's generator state stays on the GPU: its file has rng null and loads
    reseeded from (seed, epoch); everything else carries both ways."""
    on_gpu = model("adam", backend="cuda").fit(X, Y, epochs=2, **FIT)
    path = save_model(on_gpu, tmp_path / "gpu")
    on_cpu = load_model(path, backend="numpy")
    np.testing.assert_array_equal(on_cpu.params, on_gpu.params.get())
    np.testing.assert_array_equal(on_cpu.optimizer.state, on_gpu.optimizer.state.get())
    assert (on_cpu.epoch_, on_cpu.steps_) == (2, 20)
    np.testing.assert_array_equal(
        on_cpu.rng.permutation(20), reseeded(on_cpu.backend, 5, 2).permutation(20)
    )
    back = load_model(save_model(on_cpu, tmp_path / "cpu"), backend="cuda")
    np.testing.assert_array_equal(back.params.get(), on_cpu.params)
    np.testing.assert_array_equal(back.optimizer.state.get(), on_cpu.optimizer.state)
    back.fit(X, Y, epochs=1, **FIT)
    assert back.epoch_ == 3 and back.steps_ == 30


def test_a_checkpoint_path_that_cannot_be_written_fails_before_training(
    tmp_path: Path, capsys: Any
) -> None:
    assert (
        main(
            [
                "train",
                "--backend",
                "numpy",
                "--epochs",
                "1",
                "--checkpoint",
                str(tmp_path),
                "--quiet",
            ]
        )
        == 2
    )
    assert "--checkpoint" in capsys.readouterr().err


def test_the_checkpoint_docs_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/checkpoints.md's Python blocks run as written, one after the other."""
    pytest.importorskip("onnxruntime")
    import re

    docs = Path(__file__).resolve().parents[1] / "docs" / "checkpoints.md"
    blocks = re.findall(r"```python\n(.*?)```", docs.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)  # it writes ckpt.npz
    namespace: dict[str, Any] = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/checkpoints.md python block {i}", "exec"), namespace)
    assert namespace["resumed"].epoch_ == 4 and (tmp_path / "ckpt.npz").exists()


@pytest.mark.cudasim
def test_the_cuda_kernels_resume_bit_for_bit_under_the_simulator(tmp_path: Path) -> None:
    """The CUDA backend's kernels (in Numba's simulator, NumPy's generator): one epoch,
    save, load, one more = two epochs; and a pickle comes back on the simulator."""
    import pickle

    from xpmlp.backends.cuda_sim import SimulatedCudaBackend

    def small() -> MLP:
        return MLP([3, 4, 3], optimizer="adam", backend=SimulatedCudaBackend(), seed=1)

    Xs, Ys = X[:24], Y[:24]
    straight = small().fit(Xs, Ys, epochs=2, batch_size=8)
    first = small().fit(Xs, Ys, epochs=1, batch_size=8)
    resumed = load_model(save_model(first, tmp_path / "sim"), backend=SimulatedCudaBackend())
    resumed.fit(Xs, Ys, epochs=1, batch_size=8)
    np.testing.assert_array_equal(resumed.params, straight.params)
    np.testing.assert_array_equal(resumed.optimizer.state, straight.optimizer.state)
    back = pickle.loads(pickle.dumps(first))
    assert back.backend.name == "cuda-sim"
    np.testing.assert_array_equal(back.predict_proba(Xs), first.predict_proba(Xs))
