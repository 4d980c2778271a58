"""``MLP.state_dict()`` and ``MLP.from_state(d)``: the whole training state as plain data, and
a model rebuilt from it that trains on with the original's bits."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xpmlp import MLP
from xpmlp.core.errors import DataFileError


def _data():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((96, 6)).astype(np.float32)
    return X, (X[:, 0] - X[:, 1] > 0).astype(int) + (X[:, 2] > 0.8)


@pytest.mark.parametrize(
    "options",
    [
        dict(optimizer="adam"),
        dict(optimizer="momentum", dropout=0.2, batch_norm=True),
        dict(optimizer="rmsprop", deterministic=True, dtype="float64"),
    ],
)
def test_a_model_rebuilt_from_its_state_trains_on_with_the_same_bits(options):
    X, y = _data()
    model = MLP([6, 12, 8, 3], backend="numpy", seed=3, **options)
    model.fit(X, y, epochs=2, batch_size=16, lr_schedule="cosine")
    state = model.state_dict()
    json.dumps(state["meta"])  # the settings are JSON data; the arrays host NumPy arrays
    assert all(isinstance(a, np.ndarray) for a in state["arrays"].values())
    copy = MLP.from_state(state)
    assert copy is not model and copy.epoch_ == model.epoch_ == 2
    assert copy.optimizer.t == model.optimizer.t and copy.dropout_steps == model.dropout_steps
    assert copy.deterministic == model.deterministic and copy.history_ == model.history_
    for a, b in (
        (copy.params, model.params),
        (copy.optimizer.state, model.optimizer.state),
        (copy.running_mean, model.running_mean),
        (copy.running_var, model.running_var),
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for m in (model, copy):  # the same rng, schedule position and optimizer step: same bits
        m.fit(X, y, epochs=4, batch_size=16, lr_schedule="cosine", initial_epoch=2)
    np.testing.assert_array_equal(np.asarray(copy.params), np.asarray(model.params))


def test_the_state_is_a_copy_and_a_foreign_one_is_refused():
    X, y = _data()
    model = MLP([6, 4, 3], backend="numpy").fit(X, y, epochs=1)
    state = model.state_dict()
    state["arrays"]["params"][:] = 0  # editing the state leaves the model alone
    assert np.asarray(model.params).any()
    with pytest.raises(DataFileError, match="not the state of an xpmlp.MLP"):
        MLP.from_state({"params": [1, 2, 3]})


def test_only_the_optimizer_writes_its_step_count():
    """``Optimizer.advance`` and ``restore_steps`` are the only writers of ``t``: no other
    module assigns an attribute named ``t`` (the fused step, the CUDA graph, checkpoints,
    the estimators and distributed training all call them)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    writers = []
    for path in [*(root / "src" / "xpmlp").rglob("*.py"), *(root / "kernels").rglob("*.py")]:
        if path.name == "optim.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AugAssign | ast.AnnAssign)
                else []
            )
            writers += [
                f"{path.name}:{node.lineno}"
                for t in targets
                if isinstance(t, ast.Attribute) and t.attr == "t"
            ]
    assert writers == []


def test_the_model_owns_one_training_state() -> None:
    """Every piece of training state is a field of ``model.train_state_`` (an
    ``xpmlp.TrainState``): the model's attributes read and write it, the parameter arrays
    the layers view cannot be replaced, and the state round-trips with early stopping's
    memory."""
    import xpmlp

    X, y = _data()
    model = MLP([6, 5, 3], backend="numpy", batch_norm=True, seed=2)
    model.fit(
        X,
        y,
        epochs=3,
        batch_size=32,
        validation_data=(X, y),
        early_stopping=xpmlp.train.loop.EarlyStopping(patience=10),
    )
    ts = model.train_state_
    assert isinstance(ts, xpmlp.TrainState)
    assert model.params is ts.params and model.optimizer is ts.optimizer
    assert model.history_ is ts.history and model.epoch_ == ts.epoch == 3
    assert model.buffers["running_mean"] is ts.running_mean
    assert ts.best_epoch is not None and ts.best_params is None  # the copy lives in a fit
    model.epoch_ = 7
    assert ts.epoch == 7
    with pytest.raises(AttributeError, match="viewed by the layers"):
        model.params = np.zeros_like(np.asarray(model.params))
    ts.no_improvement, ts.best_value = 4, 0.25
    copy = MLP.from_state(model.state_dict()).train_state_
    assert (copy.no_improvement, copy.best_value, copy.best_epoch) == (4, 0.25, ts.best_epoch)
    for name in ("params", "running_mean", "running_var"):
        np.testing.assert_array_equal(getattr(copy, name), getattr(ts, name))
    fresh = MLP([6, 5, 3], backend="numpy").train_state_
    assert (fresh.epoch, fresh.steps, fresh.no_improvement, fresh.history) == (0, 0, 0, [])


def test_the_backend_keeps_the_compiled_step_in_its_own_cache() -> None:
    X, y = _data()
    model = MLP([6, 5, 3], backend="numpy").fit(X, y, epochs=1)
    assert model.step_kind_ == "fused-cpu"
    assert model.backend._steps.get(model) is not None  # noqa: SLF001
    assert not [k for k in vars(model) if "step" in k and k != "step_kind_"]
