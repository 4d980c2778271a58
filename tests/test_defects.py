"""Defects found by an outside check (PyTorch autograd, torch.optim, scikit-learn), each
held by a test that failed before its fix. D10-D13 are in test_model_files.py and
test_cli_errors.py; the kernels' halves of D4-D6 in test_kernels_cpu.py."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

import xpmlp
from xpmlp.backends.base import Backend

BACKENDS = ["numpy", Backend()]


def rows(seed: int = 0, m: int = 60, n: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((m, n))


# ---------------------------------------------------------------------- D1
@pytest.mark.parametrize("output", ["tanh", "relu", "identity"])
def test_d1_binary_cross_entropy_only_after_a_sigmoid(output) -> None:
    """Outside [eps, 1 - eps] the clipped loss was flat while delta was ~4.5e15 and pointed
    the wrong way: the pairing is refused, naming what pairs."""
    with pytest.raises(ValueError) as info:
        xpmlp.MLP([3, 4, 1], output_activation=output, loss="binary_cross_entropy", backend="numpy")
    message = str(info.value)
    assert f"output_activation={output!r}" in message and "'sigmoid'" in message


# ---------------------------------------------------------------------- D2
@pytest.mark.parametrize(
    "bad", [[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [-0.5, 1.0, 0.5], [5.0, 0.0, 0.0]]
)
@pytest.mark.parametrize("backend", BACKENDS, ids=["numpy", "reference"])
def test_d2_cross_entropy_refuses_soft_targets_that_are_no_distributions(bad, backend) -> None:
    model = xpmlp.MLP([4, 5, 3], backend=backend, dtype="float64")
    Y = np.tile([0.2, 0.3, 0.5], (6, 1))
    Y[2] = bad
    before = np.array(model.params)
    for call in (
        lambda: model.fit(rows(m=6), Y, epochs=1),
        lambda: model.backward(model.forward(rows(m=6)), Y),
    ):
        with pytest.raises(ValueError, match="probability distribution"):
            call()
    np.testing.assert_array_equal(model.params, before)


def test_d2_valid_soft_targets_give_the_gradient_of_the_reported_loss() -> None:
    model = xpmlp.MLP([4, 3], backend="numpy", dtype="float64", optimizer="sgd")
    X = rows(m=5)
    Y = np.random.default_rng(1).dirichlet(np.ones(3), size=5)
    g = model.backward(model.forward(X), Y)
    assert g.loss > 0
    grads, params = np.array(model.grads), np.array(model.params)
    for k in range(params.size):
        losses = []
        for h in (1e-6, -1e-6):
            model.params[...] = params
            model.params[k] += h
            losses.append(model.backward(model.forward(X), Y).loss)
        assert grads[k] == pytest.approx((losses[0] - losses[1]) / 2e-6, rel=1e-6, abs=1e-9)


# ---------------------------------------------------------------------- D3
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the reference overflows on purpose
@pytest.mark.parametrize("backend", BACKENDS, ids=["numpy", "reference"])
def test_d3_one_non_finite_backward_does_not_stop_every_later_step(backend) -> None:
    model = xpmlp.MLP(
        [4, 5, 3], optimizer="sgd", learning_rate=0.1, backend=backend, dtype="float64", seed=1
    )
    X, y = rows(m=8), np.arange(8) % 3
    good = model.get_weights()
    model.set_weights([(W * 1e300, b) for W, b in good])
    g = model.backward(model.forward(X * 1e10), y)
    assert not math.isfinite(g.loss)
    model.step()  # skipped: the loss was not finite
    model.set_weights(good)
    g = model.backward(model.forward(X), y)
    assert math.isfinite(g.loss)
    before = np.array(model.params)
    model.step()
    assert not np.array_equal(np.array(model.params), before)


# ---------------------------------------------------------------------- D4
@pytest.mark.parametrize(
    ("dtype", "logits", "label", "exact"),
    [
        ("float64", [1e30, 1e30, 1e30], 1, math.log(3.0)),
        ("float32", [100.0, 90.0, 80.0], 0, math.log1p(math.exp(-10) + math.exp(-20))),
    ],
)
@pytest.mark.parametrize("backend", BACKENDS, ids=["numpy", "reference"])
def test_d4_cross_entropy_keeps_its_precision_for_large_logits(
    dtype, logits, label, exact, backend
) -> None:
    model = xpmlp.MLP([3, 3], backend=backend, dtype=dtype)
    model.set_weights([(np.zeros((3, 3)), np.array(logits))])
    g = model.backward(model.forward(np.zeros((1, 3))), [label])
    assert g.loss == pytest.approx(exact, rel=1e-6)


# ---------------------------------------------------------------------- D5
def test_d5_float32_adam_step_is_the_rounded_exact_step() -> None:
    """The moments used 1 - float32(beta) while the bias corrections used float64 beta: the
    step was 6.8e-6 (relative) too large. Now it is the exact step to float32 rounding."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((16, 6)), rng.integers(0, 3, 16)
    model = xpmlp.MLP([6, 3], optimizer="adam", learning_rate=1e-3, backend="numpy", seed=4)
    model.set_weights([(np.zeros((3, 6)), np.zeros(3))])  # p = 0: the new p is the step
    p = np.array(model.params, dtype=np.float64)
    model.backward(model.forward(X), y)
    g = np.array(model.grads, dtype=np.float64)
    model.step()
    beta1, beta2, eps, lr = 0.9, 0.999, 1e-8, 1e-3
    m, v = (1 - beta1) * g, (1 - beta2) * g * g
    exact = lr * (m / (1 - beta1)) / (np.sqrt(v / (1 - beta2)) + eps)
    step = p - np.array(model.params, dtype=np.float64)
    np.testing.assert_allclose(step, exact, rtol=5e-7, atol=0)  # a few float32 roundings


# ---------------------------------------------------------------------- D6
def test_d6_float32_bias_gradient_and_loss_are_accurate_at_60000_rows() -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60_000, 5)).astype(np.float32)
    y = rng.integers(0, 4, 60_000)
    models = {
        d: xpmlp.MLP([5, 8, 4], backend="numpy", dtype=d, seed=3) for d in ("float32", "float64")
    }
    models["float64"].set_weights(models["float32"].get_weights())
    got = {}
    for dtype, model in models.items():
        g = model.backward(model.forward(X), y)
        got[dtype] = (g.loss, [np.array(db, np.float64) for db in g.db])
    assert got["float32"][0] == pytest.approx(got["float64"][0], rel=3e-7)
    for db32, db64 in zip(got["float32"][1], got["float64"][1], strict=True):
        scale = np.abs(db64).max()
        assert np.abs(db32 - db64).max() <= 3e-6 * scale  # ~ the float32 rounding of delta


# ---------------------------------------------------------------------- D7
def test_d7_threads_predicting_on_one_model_get_right_answers() -> None:
    model = xpmlp.MLP([4, 32, 3], backend="numpy", seed=5)
    inputs = [rows(seed=s, m=600) for s in range(8)]  # one shape: one workspace size
    want = [model.predict_proba(X) for X in inputs]
    errors: list[str] = []

    def work(i: int) -> None:
        for _ in range(20):
            got = model.predict_proba(inputs[i])
            if not np.array_equal(got, want[i]):
                errors.append(f"thread {i}: wrong answer")
                return

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_d7_a_second_concurrent_fit_on_one_model_is_refused() -> None:
    model = xpmlp.MLP([4, 8, 3], backend="numpy")
    X, y = rows(m=64), np.arange(64) % 3
    seen: list[BaseException] = []
    started, release = threading.Event(), threading.Event()

    def slow_callback(record: dict) -> None:
        started.set()
        release.wait(30)

    thread = threading.Thread(target=lambda: model.fit(X, y, epochs=1, callback=slow_callback))
    thread.start()
    assert started.wait(60)
    try:
        model.fit(X, y, epochs=1)
    except xpmlp.XpmlpError as exc:
        seen.append(exc)
    finally:
        release.set()
        thread.join()
    assert len(seen) == 1 and "another thread" in str(seen[0])
    model.fit(X, y, epochs=1)  # once the first fit is done, fitting works again


# ---------------------------------------------------------------------- D8
@pytest.mark.parametrize("call", ["predict", "fit", "score"])
def test_d8_values_beyond_the_models_dtype_are_refused(call) -> None:
    model = xpmlp.MLP([3, 4, 2], backend="numpy")  # float32
    X = rows(m=10, n=3)
    X[4, 1] = 1e39
    y = np.arange(10) % 2
    calls = {
        "predict": lambda: model.predict(X),
        "fit": lambda: model.fit(X, y, epochs=1),
        "score": lambda: model.score(X, y),
    }
    with pytest.raises(ValueError) as info:
        calls[call]()
    message = str(info.value)
    assert "1e+39" in message and "float32" in message
    xpmlp.MLP([3, 4, 2], backend="numpy", dtype="float64").predict(X)  # float64 holds it


# ---------------------------------------------------------------------- D9
def test_d9_softmax_over_one_unit_is_refused() -> None:
    with pytest.raises(ValueError) as info:
        xpmlp.MLP([4, 8, 1], backend="numpy")
    message = str(info.value)
    assert "binary_cross_entropy" in message and "two output units" in message


# ---------------------------------------------------------------------- D14
def test_d14_r2_averages_the_outputs_uniformly_as_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 3))
    Y = np.column_stack([100.0 * rng.standard_normal(50), 0.01 * rng.standard_normal(50)])
    model = xpmlp.MLP([3, 2], loss="squared_error", backend="numpy", dtype="float64")
    A = model.predict(X)
    per_output = 1 - ((Y - A) ** 2).sum(0) / ((Y - Y.mean(0)) ** 2).sum(0)
    assert model.score(X, Y) == pytest.approx(per_output.mean(), rel=1e-12)
    sklearn = pytest.importorskip("sklearn.metrics")
    assert model.score(X, Y) == pytest.approx(sklearn.r2_score(Y, A), rel=1e-12)
