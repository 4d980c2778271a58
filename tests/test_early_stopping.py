"""Early stopping in ``fit``, the validation loss in the history, and ``validation_fraction``.

A model trained on blobs whose validation labels are permuted gets better on the training
set and worse on the validation set, so the validation loss has its best at an early epoch:
early stopping must stop ``patience`` epochs later and (by default) put that epoch's
parameters back.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import xpmlp
from xpmlp.core.errors import ParameterError
from xpmlp.train.loop import EarlyStopping


def blobs(m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, m)
    return rng.normal(0, 1, (m, 4)) + 2 * np.eye(3, 4)[y], y


X, Y = blobs(120, 0)
X_VAL, Y_VAL = blobs(60, 1)
MISLABELLED = (X_VAL, (Y_VAL + 1) % 3)  # learning the training set makes this loss grow


def model(**options: Any) -> xpmlp.MLP:
    return xpmlp.MLP(
        [4, 8, 3],
        optimizer="sgd",
        learning_rate=0.2,
        dtype="float64",
        backend="numpy",
        seed=3,
        **options,
    )


def fit_with_snapshots(net: xpmlp.MLP, **fit: Any) -> list[np.ndarray]:
    """Fit, keeping the parameters at the end of every epoch (index = epoch - 1)."""
    snapshots: list[np.ndarray] = []
    net.fit(X, Y, batch_size=30, callback=lambda r: snapshots.append(np.array(net.params)), **fit)
    return snapshots


def test_stops_patience_epochs_after_the_best_and_restores_it() -> None:
    net = model()
    snapshots = fit_with_snapshots(
        net, epochs=30, validation_data=MISLABELLED, early_stopping=EarlyStopping(patience=3)
    )
    losses = [r["val_loss"] for r in net.history_]
    best = int(np.argmin(losses)) + 1
    assert net.best_epoch_ == best and best < 10
    assert net.stopped_epoch_ == best + 3 == len(net.history_) < 30
    np.testing.assert_array_equal(net.params, snapshots[best - 1])
    assert not np.array_equal(net.params, snapshots[-1])


def test_without_restoring_the_last_weights_stay() -> None:
    net = model()
    snapshots = fit_with_snapshots(
        net,
        epochs=30,
        validation_data=MISLABELLED,
        early_stopping=EarlyStopping(patience=2, restore_best_weights=False),
    )
    assert net.stopped_epoch_ == net.best_epoch_ + 2
    np.testing.assert_array_equal(net.params, snapshots[-1])


def test_early_stopping_true_takes_the_defaults_and_a_full_run_has_no_stop() -> None:
    net = model()
    net.fit(X, Y, epochs=4, batch_size=30, validation_data=(X_VAL, Y_VAL), early_stopping=True)
    assert len(net.history_) == 4 and net.stopped_epoch_ is None  # patience 5 > 4 epochs
    assert net.best_epoch_ == int(np.argmin([r["val_loss"] for r in net.history_])) + 1


def test_min_delta_counts_small_improvements_as_none() -> None:
    """A tiny learning rate improves the loss by far less than min_delta: stop after
    patience epochs, the first epoch the best."""
    net = xpmlp.MLP(
        [4, 8, 3], optimizer="sgd", learning_rate=1e-6, dtype="float64", backend="numpy", seed=3
    )
    net.fit(
        X,
        Y,
        epochs=20,
        batch_size=30,
        validation_data=(X_VAL, Y_VAL),
        early_stopping=EarlyStopping(patience=2, min_delta=1e-3),
    )
    losses = [r["val_loss"] for r in net.history_]
    assert losses[-1] < losses[0]  # it did improve, by less than min_delta
    assert (net.best_epoch_, net.stopped_epoch_) == (1, 3)
    net2 = xpmlp.MLP(
        [4, 8, 3], optimizer="sgd", learning_rate=1e-6, dtype="float64", backend="numpy", seed=3
    )
    net2.fit(
        X,
        Y,
        epochs=5,
        batch_size=30,
        validation_data=(X_VAL, Y_VAL),
        early_stopping=EarlyStopping(patience=2, min_delta=0.0),
    )
    assert net2.stopped_epoch_ is None and net2.best_epoch_ == 5


def test_monitoring_val_accuracy_keeps_its_highest() -> None:
    net = model()
    fit_with_snapshots(
        net,
        epochs=30,
        validation_data=MISLABELLED,
        early_stopping=EarlyStopping(patience=4, monitor="val_accuracy"),
    )
    accuracies = [r["val_accuracy"] for r in net.history_]
    assert net.best_epoch_ == int(np.argmax(accuracies)) + 1  # the first of the highest
    assert net.stopped_epoch_ == net.best_epoch_ + 4


def test_val_loss_is_the_models_loss_on_the_validation_set() -> None:
    net = model()
    net.fit(X, Y, epochs=2, batch_size=30, validation_data=(X_VAL, Y_VAL))
    A = net.predict_proba(X_VAL)
    want = -np.log(A[np.arange(len(Y_VAL)), Y_VAL]).mean()
    assert net.history_[-1]["val_loss"] == pytest.approx(want, rel=1e-12)
    assert net.history_[-1]["val_accuracy"] == pytest.approx(net.score(X_VAL, Y_VAL))


def test_val_loss_of_a_float32_set_larger_than_a_prediction_chunk() -> None:
    from xpmlp.train.model import PREDICT_CHUNK

    Xb, yb = blobs(PREDICT_CHUNK + 17, 5)
    net = xpmlp.MLP([4, 8, 3], backend="numpy", seed=3)
    net.fit(X, Y, epochs=1, batch_size=30, validation_data=(Xb, yb))
    A = net.predict_proba(Xb).astype(np.float64)
    want = -np.log(A[np.arange(len(yb)), yb]).mean()
    assert net.history_[-1]["val_loss"] == pytest.approx(want, rel=1e-5)


def test_validation_fraction_holds_out_rows_with_the_models_seed() -> None:
    records = []
    for _ in range(2):
        net = model()
        net.fit(
            X,
            Y,
            epochs=2,
            batch_size=30,
            validation_fraction=0.25,
            early_stopping=EarlyStopping(patience=5),
        )
        records.append(net.history_)
        assert {"val_loss", "val_accuracy"} <= set(net.history_[0])
        # 90 training rows: 3 batches of 30 a second, counted in samples_per_s
        rec = net.history_[0]
        assert rec["samples_per_s"] == pytest.approx(90 / rec["seconds"])
    assert records[0][-1]["val_loss"] == records[1][-1]["val_loss"]


@pytest.mark.parametrize(
    ("fit", "message"),
    [
        (dict(early_stopping=True), "needs validation data"),
        (dict(early_stopping=EarlyStopping(monitor="val_accuracy")), "'val_accuracy'"),
        (dict(early_stopping="yes", validation_data=(X_VAL, Y_VAL)), "early_stopping='yes'"),
        (dict(validation_fraction=1.0), "validation_fraction=1.0 is not valid"),
        (dict(validation_fraction=0.0), "validation_fraction=0.0 is not valid"),
        (dict(validation_fraction=0.2, validation_data=(X_VAL, Y_VAL)), "not both"),
    ],
)
def test_bad_fit_options_are_refused(fit: dict[str, Any], message: str) -> None:
    with pytest.raises(ParameterError) as info:
        model().fit(X, Y, epochs=1, **fit)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(patience=0), "patience=0 is not valid"),
        (dict(patience=2.5), "patience=2.5 is not valid"),
        (dict(min_delta=-1.0), "min_delta=-1.0 is not valid"),
        (
            dict(monitor="accuracy"),
            "monitor='accuracy' is not valid; expected one of "
            "'val_loss', 'val_accuracy', 'loss', 'val_score'",
        ),
        (dict(convention="pytorch"), "convention='pytorch' is not valid"),
        (dict(patience=float("nan")), "patience=nan is not valid"),
        (dict(restore_best_weights=1), "restore_best_weights=1 is not valid"),
    ],
)
def test_bad_early_stopping_settings_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ParameterError) as info:
        EarlyStopping(**settings)
    assert message in str(info.value)


@pytest.mark.cudasim
def test_the_cuda_kernels_give_the_same_validation_loss_and_stop(monkeypatch) -> None:
    """Under the simulator (own process: NUMBA_ENABLE_CUDASIM=1 python -m pytest -m cudasim):
    the CUDA kernels' history (val_loss from their loss kernel) and early stop are the NumPy
    backend's, with a plateau schedule and clipping on."""
    from xpmlp.kernels import cuda as kcuda

    from xpmlp.backends.cuda_sim import SimulatedCudaBackend

    monkeypatch.setattr(kcuda, "THREADS_PER_BLOCK", 32)
    nets = [
        xpmlp.MLP(
            [4, 8, 3],
            optimizer="sgd",
            learning_rate=0.2,
            dtype="float64",
            backend=be,
            seed=3,
            clip_grad_norm=1.0,
        )
        for be in ("numpy", SimulatedCudaBackend())
    ]
    for net in nets:
        net.fit(
            X,
            Y,
            epochs=12,
            batch_size=30,
            validation_data=MISLABELLED,
            lr_schedule="plateau",
            early_stopping=EarlyStopping(patience=2),
        )
    ours, theirs = nets[1].history_, nets[0].history_
    assert len(ours) == len(theirs) < 12
    for got, want in zip(ours, theirs, strict=True):
        assert got["val_loss"] == pytest.approx(want["val_loss"], rel=1e-12)
        assert got["val_accuracy"] == want["val_accuracy"]
    assert (nets[1].best_epoch_, nets[1].stopped_epoch_) == (
        nets[0].best_epoch_,
        nets[0].stopped_epoch_,
    )
    np.testing.assert_allclose(nets[1].params, nets[0].params, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------- xpmlp train
def test_the_train_command_takes_every_new_option(tmp_path) -> None:
    """--l1, --clip-norm, --clip-value, --schedule with its settings and a warm-up, and
    --early-stopping on a held-out tenth of the training set, with the test set evaluated
    every epoch aside."""
    import json

    from xpmlp.cli import main

    report = tmp_path / "r.json"
    status = main(
        [
            "train",
            "--backend",
            "numpy",
            "--epochs",
            "8",
            "--limit",
            "600",
            "--hidden",
            "16",
            "--optimizer",
            "adagrad",
            "--lr",
            "0.05",
            "--l1",
            "1e-4",
            "--clip-norm",
            "2",
            "--clip-value",
            "0.5",
            "--schedule",
            "exponential",
            "--gamma",
            "0.8",
            "--warmup",
            "2",
            "--early-stopping",
            "1",
            "--min-delta",
            "3",
            "--monitor",
            "val_loss",
            "--quiet",
            "--report",
            str(report),
        ]
    )
    assert status == 0
    r = json.loads(report.read_text())
    opt = r["model"]["optimizer"]
    assert (opt["name"], opt["l1"], opt["clip_grad_norm"], opt["clip_grad_value"]) == (
        "adagrad",
        1e-4,
        2.0,
        0.5,
    )
    # min_delta 3 is more than the loss (2.3 at the start) can improve by: epoch 1 best, stop at 2
    assert r["early_stopping"] == {"best_epoch": 1, "stopped_epoch": 2}
    assert len(r["epochs"]) == 2
    for key in ("val_loss", "val_accuracy", "test_loss", "test_accuracy"):
        assert np.isfinite(r["epochs"][-1][key])
    assert 0.0 < r["test_accuracy"] <= 1.0


def test_the_train_command_records_the_test_loss(tmp_path) -> None:
    import json

    from xpmlp.cli import main

    report = tmp_path / "r.json"
    assert (
        main(
            [
                "train",
                "--backend",
                "numpy",
                "--epochs",
                "2",
                "--limit",
                "300",
                "--hidden",
                "8",
                "--schedule",
                "plateau",
                "--plateau-patience",
                "0",
                "--plateau-factor",
                "0.5",
                "--min-lr",
                "1e-4",
                "--quiet",
                "--report",
                str(report),
            ]
        )
        == 0
    )
    epochs = json.loads(report.read_text())["epochs"]
    assert all({"test_loss", "test_accuracy"} <= set(e) and "val_loss" not in e for e in epochs)


@pytest.mark.parametrize(
    "args",
    [
        ["--l1", "-1"],
        ["--clip-norm", "0"],
        ["--clip-value", "nan"],
        ["--step-size", "0"],
        ["--early-stopping", "0"],
        ["--monitor", "loss"],
        ["--min-delta", "-0.1"],
        ["--schedule", "warp"],
        ["--warmup", "-2"],
        ["--optimizer", "lbfgs"],
    ],
)
def test_the_train_command_refuses_bad_values(args: list[str], capsys) -> None:
    from xpmlp.cli import main

    with pytest.raises(SystemExit) as info:
        main(["train", "--backend", "numpy", *args])
    assert info.value.code == 2
    assert args[0] in capsys.readouterr().err


def test_the_train_command_offers_rmsprop_and_adagrad() -> None:
    from xpmlp.cli import build_parser

    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]  # noqa: SLF001
    (action,) = [a for a in train._actions if "--optimizer" in a.option_strings]
    assert {"rmsprop", "adagrad"} <= set(action.choices)


def test_the_scikit_learn_convention_is_scikit_learns_counter() -> None:
    """scikit-learn's rule (its MLP's tol and n_iter_no_change) as a configuration of the one
    rule: an iteration counts as no improvement when loss > best - tol, the best follows any
    lower loss, and training stops when the count exceeds n_iter_no_change; Keras's rule
    differs at a change of exactly tol."""
    from xpmlp.train.early_stopping import Watch, scikit_learn

    losses = [1.0, 0.5, 0.5 - 0.125, 0.3, 0.29, 0.28, 0.27]
    tol, n_iter_no_change = 0.125, 2

    def sklearn_counts() -> tuple[list[int], int]:  # scikit-learn's _update_no_improvement_count
        best, count, counts = np.inf, 0, []
        for i, loss in enumerate(losses):
            count = count + 1 if loss > best - tol else 0
            best = min(best, loss)
            counts.append(count)
            if count > n_iter_no_change:
                return counts, i + 1
        return counts, len(losses)

    net = model()
    watch = Watch(scikit_learn(tol, n_iter_no_change, early_stopping=False), net)
    counts, stop = [], len(losses)
    for i, loss in enumerate(losses):
        exhausted = watch.update(i + 1, {"loss": loss})
        counts.append(net.train_state_.no_improvement)
        if exhausted:
            stop = i + 1
            break
    assert (counts, stop) == sklearn_counts() and stop < len(losses)
    assert net.train_state_.best_value == min(losses[:stop])
    keras = Watch(EarlyStopping(patience=3, min_delta=tol, monitor="loss"), model())
    keras.update(1, {"loss": 0.5})
    keras.update(2, {"loss": 0.5 - tol})  # exactly tol better: no improvement for Keras
    assert keras.state.no_improvement == 1 and keras.state.best_value == 0.5
