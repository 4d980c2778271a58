"""Dropout: the fused kernels against the reference, the mask (same key, same mask on every
backend; the right rate; independent of the kernel's chunking), finite differences through a
fixed mask, inference without dropout, and the model's keyword, file and CLI option.

CPU here; the CUDA kernels under the simulator in ``test_cuda_simulated_*`` (``-m cudasim``,
own process) and in ``test_kernels_cuda.py``'s direct launches.
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from kernel_cases import (
    BACKWARD,
    DTYPES,
    ELEMENTWISE,
    assert_close,
    forward_scale,
    run_activation_backward_dropout,
    run_bias_activation_dropout,
    seed,
    sum_scale,
)
from test_gradients import host, set_params
from xpmlp.kernels import cpu

from xpmlp import MLP
from xpmlp.backends.base import Backend
from xpmlp.backends.numpy_backend import NumpyBackend
from xpmlp.core.errors import ParameterError
from xpmlp.core.regularization import dropout_keep_mask, dropout_key, dropout_threshold
from xpmlp.io.serialize import load_model, save_model

REFERENCE = Backend()
SHAPES = [(1, 1), (7, 3), (cpu.CHUNK_ROWS * 2 + 5, 9)]  # the last: several parallel chunks


@pytest.fixture(params=[False, True], ids=["serial", "parallel"])
def kernels(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> NumpyBackend:
    """The NumPy backend, its parallel kernel forms forced on for ``parallel``."""
    if request.param:
        monkeypatch.setattr(cpu, "PARALLEL_MIN_ELEMENTS", 0)
    return NumpyBackend()


# ---------------------------------------------------------------------- kernels vs reference
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", ELEMENTWISE)
def test_bias_activation_dropout(kernels, act, shape, dtype) -> None:
    rng = seed("dropout-forward", act, shape, dtype)
    Z = (2 * rng.standard_normal(shape)).astype(dtype)
    b = rng.standard_normal(shape[1]).astype(dtype)
    Z_ref, A_ref = run_bias_activation_dropout(REFERENCE, act, Z, b, 777, 0.4)
    Z_got, A_got = run_bias_activation_dropout(kernels, act, Z, b, 777, 0.4)
    np.testing.assert_array_equal(Z_got, Z_ref)
    np.testing.assert_array_equal(A_got == 0, A_ref == 0)  # the same mask
    assert_close(A_got, A_ref, scale=2 * forward_scale(Z_ref, A_ref), what=act)


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", BACKWARD)
def test_activation_backward_dropout(kernels, act, shape, dtype, in_place) -> None:
    rng = seed("dropout-backward", act, shape, dtype)
    Z = (2 * rng.standard_normal(shape)).astype(dtype)
    dA = rng.standard_normal(shape).astype(dtype)
    d_ref, db_ref = run_activation_backward_dropout(REFERENCE, act, dA, Z, 99, 0.3)
    d_got, db_got = run_activation_backward_dropout(kernels, act, dA, Z, 99, 0.3, in_place)
    d_scale = 2 * np.abs(dA.astype(np.float64)) * (1 + np.abs(Z.astype(np.float64)))
    assert_close(d_got, d_ref, scale=d_scale, what="delta")
    assert_close(db_got, db_ref, scale=sum_scale(d_ref, d_scale), what="db")


def test_backward_drops_exactly_what_the_forward_dropped() -> None:
    rng = seed("same-mask")
    Z = rng.standard_normal((100, 20))
    _, A = run_bias_activation_dropout(NumpyBackend(), "sigmoid", Z, np.zeros(20), 5, 0.5)
    delta, _ = run_activation_backward_dropout(
        NumpyBackend(), "sigmoid", np.ones_like(Z), Z, 5, 0.5
    )
    np.testing.assert_array_equal(A == 0, delta == 0)
    np.testing.assert_allclose(A[A != 0], 2 / (1 + np.exp(-Z[A != 0])), rtol=1e-15)


def test_the_mask_does_not_depend_on_the_chunking(monkeypatch) -> None:
    """Rows of every parallel chunk hash their global index: same mask serial or parallel."""
    Z = np.ones((3 * cpu.CHUNK_ROWS + 1, 5))
    _, serial = run_bias_activation_dropout(NumpyBackend(), "identity", Z, np.zeros(5), 3, 0.5)
    monkeypatch.setattr(cpu, "PARALLEL_MIN_ELEMENTS", 0)
    _, parallel = run_bias_activation_dropout(NumpyBackend(), "identity", Z, np.zeros(5), 3, 0.5)
    np.testing.assert_array_equal(serial, parallel)


# ---------------------------------------------------------------------- the mask
def test_mask_rate_is_statistically_right() -> None:
    """Dropped fraction within 5 standard errors of the rate, for 10^6 elements per rate; no
    correlation between neighbouring elements; keys give independent-looking masks."""
    n = 1000
    for rate in (0.05, 0.2, 0.5, 0.9):
        keep = dropout_keep_mask(np, dropout_key(0, 1, 0), (n, n), rate)
        dropped = 1.0 - keep.mean()
        assert abs(dropped - rate) < 5 * np.sqrt(rate * (1 - rate) / n**2), (rate, dropped)
        k = keep.astype(float) - keep.mean()
        for a, b in ((k[:, 1:], k[:, :-1]), (k[1:], k[:-1])):
            assert abs((a * b).mean() / k.var()) < 5 / n
    a = dropout_keep_mask(np, dropout_key(0, 1, 0), (n, n), 0.5)
    b = dropout_keep_mask(np, dropout_key(0, 2, 0), (n, n), 0.5)
    assert abs((a == b).mean() - 0.5) < 5 * 0.5 / n


def test_a_rate_of_zero_keeps_everything_and_the_threshold_rounds() -> None:
    assert dropout_keep_mask(np, 1, (4, 4), 0.0).all()
    assert dropout_threshold(0.5) == 1 << 23 and dropout_threshold(0.0) == 0


def test_keys_differ_by_seed_step_and_layer() -> None:
    keys = {dropout_key(s, t, layer) for s in range(3) for t in range(50) for layer in range(3)}
    assert len(keys) == 450 and all(0 <= k < 2**63 for k in keys)


def two_layer(backend, seed_: int = 0, **options) -> MLP:
    return MLP(
        [6, 9, 8, 3],
        activation="tanh",
        dropout=0.5,
        dtype="float64",
        backend=backend,
        seed=seed_,
        **options,
    )


def test_same_seed_same_masks_on_every_backend() -> None:
    X = seed("masks").standard_normal((10, 6))
    runs = []
    for backend in (REFERENCE, "numpy", REFERENCE):
        model = two_layer(backend)
        runs.append([model.forward(X).A[1].copy(), model.forward(X).A[1].copy()])
    for run in runs[1:]:
        for a, b in zip(runs[0], run, strict=True):
            np.testing.assert_array_equal(a == 0, b == 0)
    assert not np.array_equal(runs[0][0] == 0, runs[0][1] == 0)  # a new mask each step
    other = two_layer("numpy", seed_=1)
    with other.backend.activate():
        other.params[...] = two_layer("numpy").params
    assert not np.array_equal(other.forward(X).A[1] == 0, runs[0][0] == 0)


def test_inference_ignores_dropout() -> None:
    X = seed("inference").standard_normal((20, 6))
    dropped, plain = (
        two_layer("numpy"),
        MLP([6, 9, 8, 3], activation="tanh", dtype="float64", backend="numpy"),
    )
    with plain.backend.activate():
        plain.params[...] = dropped.params
    np.testing.assert_array_equal(dropped.predict_proba(X), plain.predict_proba(X))
    np.testing.assert_array_equal(dropped.forward(X, training=False).A[-1], plain.forward(X).A[-1])
    assert dropped.dropout_steps == 0  # prediction draws no masks
    assert not np.array_equal(dropped.forward(X).A[-1], plain.forward(X).A[-1])
    assert dropped.dropout_steps == 1


# ---------------------------------------------------------------------- finite differences
@pytest.mark.parametrize("backend", ["reference", "numpy"])
@pytest.mark.parametrize("batch_norm", [False, True], ids=["dense", "batch-norm"])
def test_gradients_through_a_fixed_mask_match_finite_differences(backend, batch_norm) -> None:
    """The loss with the masks of training step 0, as a function of every parameter."""
    be = REFERENCE if backend == "reference" else "numpy"
    rng = seed("dropout-fd", backend, batch_norm)
    model = MLP(
        [4, 6, 5, 3],
        activation=["tanh", "gelu"],
        dropout=[0.3, 0.5],
        optimizer="sgd",
        batch_norm=batch_norm,
        dtype="float64",
        backend=be,
        seed=4,
    )
    p0 = host(model, model.params) + rng.normal(0.0, 0.5, model.params.shape)
    X, y = rng.standard_normal((8, 4)), rng.integers(0, 3, 8)

    def loss_and_grads(p: np.ndarray) -> tuple[float, np.ndarray]:
        set_params(model, p)
        model.dropout_steps = 0
        grads = model.backward(model.forward(X), y)
        return grads.loss, host(model, model.grads)

    _, grads = loss_and_grads(p0)
    assert (host(model, model.forward(X).A[1]) == 0).any()  # some units are dropped
    eps = 1e-6
    numeric = np.empty_like(p0)
    for i in range(p0.size):
        e = np.zeros_like(p0)
        e[i] = eps
        numeric[i] = (loss_and_grads(p0 + e)[0] - loss_and_grads(p0 - e)[0]) / (2 * eps)
    np.testing.assert_allclose(grads, numeric, rtol=1e-5, atol=1e-8)


# ---------------------------------------------------------------------- keyword, file, CLI
@pytest.mark.parametrize("bad", [1.0, -0.1, [0.1], [0.1, 0.2, 0.3], "0.2", True, float("nan")])
def test_invalid_dropout_is_refused(bad) -> None:
    with pytest.raises(ParameterError, match="dropout"):
        MLP([4, 5, 6, 2], dropout=bad, backend="numpy")


def test_dropout_is_in_the_repr_and_saved_with_the_model(tmp_path) -> None:
    model = MLP([4, 5, 6, 2], dropout=[0.25, 0.0], backend="numpy")
    assert model.dropout == [0.25, 0.0] and "dropout=[0.25, 0.0]" in repr(model)
    assert "dropout" not in repr(MLP([4, 2], backend="numpy"))
    rng = seed("dropout-save")
    model.fit(rng.standard_normal((50, 4)), rng.integers(0, 2, 50), epochs=1, batch_size=10)
    loaded = load_model(save_model(model, tmp_path / "m"), backend="numpy")
    assert loaded.dropout == [0.25, 0.0] and loaded.dropout_steps == model.dropout_steps == 5
    X = rng.standard_normal((4, 4))
    np.testing.assert_array_equal(loaded.forward(X).A[1], model.forward(X).A[1])


def test_cli_options() -> None:
    from xpmlp.commands.train import configure_parser

    p = argparse.ArgumentParser()
    configure_parser(p)
    assert p.parse_args([]).dropout == 0.0 and p.parse_args([]).batch_norm is False
    args = p.parse_args(["--dropout", "0.2", "--batch-norm"])
    assert args.dropout == 0.2 and args.batch_norm is True
    assert p.parse_args(["--dropout", "0.2,0.1"]).dropout == [0.2, 0.1]
    for bad in ("1", "x", "0.2,", "-0.5"):
        with pytest.raises(SystemExit):
            p.parse_args(["--dropout", bad])


def test_train_command_with_dropout_and_batch_norm(tmp_path) -> None:
    """``xpmlp train --dropout ... --batch-norm`` end to end on 1000 MNIST samples, the model
    saved and reloaded with its settings."""
    import json

    from xpmlp.cli import main

    report, out = tmp_path / "r.json", tmp_path / "m.npz"
    status = main(
        [
            "train",
            "--backend",
            "numpy",
            "--epochs",
            "2",
            "--limit",
            "1000",
            "--hidden",
            "32,16",
            "--dropout",
            "0.2,0.1",
            "--batch-norm",
            "--optimizer",
            "rmsprop",
            "--report",
            str(report),
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert status == 0
    r = json.loads(report.read_text())
    assert r["model"]["dropout"] == [0.2, 0.1] and r["model"]["batch_norm"] == [True, True]
    assert r["test_accuracy"] > 0.7
    model = load_model(out, backend="numpy")
    assert model.dropout == [0.2, 0.1] and model.batch_norm == [True, True]
    assert (
        main(
            [
                "train",
                "--backend",
                "numpy",
                "--limit",
                "100",
                "--hidden",
                "8,8",
                "--dropout",
                "0.1,0.1,0.1",
                "--quiet",
            ]
        )
        != 0
    )  # one rate too many


# ---------------------------------------------------------------------- CUDA simulator
@pytest.mark.cudasim
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["relu", "sigmoid", "gelu"])
def test_cuda_simulated_kernels_match_the_reference(act, dtype, monkeypatch) -> None:
    from xpmlp.kernels import cuda as kcuda

    from xpmlp.backends.cuda_sim import SimulatedCudaBackend

    monkeypatch.setattr(kcuda, "THREADS_PER_BLOCK", 16)
    monkeypatch.setattr(kcuda, "CHUNK_ROWS", 4)  # several chunks
    sim = SimulatedCudaBackend()
    rng = seed("sim-dropout", act, dtype)
    Z = (2 * rng.standard_normal((11, 5))).astype(dtype)
    b = rng.standard_normal(5).astype(dtype)
    Z_ref, A_ref = run_bias_activation_dropout(REFERENCE, act, Z, b, 31, 0.5)
    Z_sim, A_sim = run_bias_activation_dropout(sim, act, Z, b, 31, 0.5)
    np.testing.assert_array_equal(Z_sim, Z_ref)
    np.testing.assert_array_equal(A_sim == 0, A_ref == 0)
    assert_close(A_sim, A_ref, scale=2 * forward_scale(Z_ref, A_ref), what=act)
    dA = rng.standard_normal(Z.shape).astype(dtype)
    d_ref, db_ref = run_activation_backward_dropout(REFERENCE, act, dA, Z, 31, 0.5)
    d_sim, db_sim = run_activation_backward_dropout(sim, act, dA, Z, 31, 0.5, in_place=True)
    d_scale = 2 * np.abs(dA.astype(np.float64)) * (1 + np.abs(Z.astype(np.float64)))
    assert_close(d_sim, d_ref, scale=d_scale, what="delta")
    assert_close(db_sim, db_ref, scale=sum_scale(d_ref, d_scale), what="db")


def test_a_model_without_dropout_or_batch_norm_runs_only_the_plain_kernels(monkeypatch) -> None:
    """No new op (and no new Python work per layer) on the plain path, in training and
    prediction alike."""

    def refuse(*args, **kwargs):
        raise AssertionError("a dropout or batch-norm op ran in a plain model")

    for op in (
        "bias_activation_dropout",
        "activation_backward_dropout",
        "batch_norm_forward",
        "batch_norm_inference",
        "batch_norm_backward",
    ):
        monkeypatch.setattr(NumpyBackend, op, refuse)
    rng = seed("plain")
    X, y = rng.standard_normal((30, 4)), rng.integers(0, 2, 30)
    model = MLP([4, 5, 2], dropout=0.0, batch_norm=False, backend="numpy")
    model.fit(X, y, epochs=1, batch_size=10)
    model.predict(X)
    assert model.dropout_steps == 0 and model.buffers == {}
