"""The CUDA kernels against the reference backend and the CPU kernels, op by op and end to end.

Under ``NUMBA_ENABLE_CUDASIM=1`` (marker ``cudasim``, own process:
``NUMBA_ENABLE_CUDASIM=1 python -m pytest -m cudasim``) the kernels run in
Numba's simulator through ``SimulatedCudaBackend`` (the CUDA backend's logic on
NumPy arrays). Without the simulator the same tests are marked ``cuda`` and
run on a real GPU through ``CudaBackend``, or are skipped with the reason.

Every op runs at several launch configurations (THREADS_PER_BLOCK, MAX_BLOCKS)
including a single thread for the whole grid, on odd shapes (1 row, 1 column,
sizes not a multiple of the block), in float32 and float64, and is compared
with ``xpmlp.backends.base.Backend`` (plain array code) and ``NumpyBackend``
(the CPU kernels). The simulator runs one Python thread per CUDA thread, so
grids are kept to at most 128 threads.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from xpmlp.kernels import cuda as kcuda
from xpmlp.kernels.rows import N_STATS, STAT_BATCH, STAT_COUNT, STAT_DIVERGED_AT

import xpmlp
from xpmlp.backends.base import Backend
from xpmlp.backends.numpy_backend import NumpyBackend

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
pytestmark = pytest.mark.cudasim if SIMULATOR else pytest.mark.cuda

DTYPES = ("float32", "float64")
ACTIVATIONS = ("identity", "sigmoid", "tanh", "relu", "softmax", "hardlimit")
DIFFERENTIABLE = ("identity", "sigmoid", "tanh", "relu")
# (threads per block, max blocks): one thread for everything, odd blocks, a warp.
CONFIGS = ((1, 1), (7, 3), (32, 4))
# each shape with one launch configuration (the full product would be slow in the simulator)
SHAPE_CASES = (
    ((1, 1), CONFIGS[0]),
    ((1, 5), CONFIGS[1]),
    ((6, 1), CONFIGS[2]),
    ((33, 3), CONFIGS[1]),
    ((129, 67), CONFIGS[2]),
)
OUTPUTS = (  # (output activation, loss): every pairing the MLP trains with
    ("softmax", "cross_entropy"),
    ("sigmoid", "binary_cross_entropy"),
    ("sigmoid", "squared_error"),
    ("identity", "squared_error"),
    ("identity", "half_squared_error"),
    ("tanh", "half_squared_error"),
    ("relu", "squared_error"),
)


def seed_of(*parts: Any) -> int:
    """A reproducible seed from the test's parameters (str hashes change per process)."""
    return zlib.crc32(repr(parts).encode())


def tol(dtype: str) -> dict[str, float]:
    return {"rtol": 2e-5, "atol": 2e-5} if dtype == "float32" else {"rtol": 1e-12, "atol": 1e-12}


@pytest.fixture(scope="module")
def cuda_ops() -> Backend:
    """The CUDA backend's logic: simulated on NumPy arrays, or the real one on a GPU."""
    if SIMULATOR:
        from xpmlp.backends.cuda_sim import SimulatedCudaBackend

        return SimulatedCudaBackend()
    return xpmlp.get_backend("cuda")


BACKENDS = {"reference": Backend(), "cpu": NumpyBackend()}


def set_config(monkeypatch: pytest.MonkeyPatch, config: tuple[int, int]) -> None:
    monkeypatch.setattr(kcuda, "THREADS_PER_BLOCK", config[0])
    monkeypatch.setattr(kcuda, "MAX_BLOCKS", config[1])


def run_op(be: Backend, op: str, arrays: list[np.ndarray], *scalars: Any) -> list[np.ndarray]:
    """Copy ``arrays`` to ``be``, call ``be.<op>(*arrays, *scalars)``, return them as NumPy."""
    with be.activate():
        on_device = [be.asarray(a.copy()) for a in arrays]
        getattr(be, op)(*on_device, *scalars)
        return [np.array(be.to_numpy(a)) for a in on_device]


def check_against_both(
    cuda_ops: Backend, op: str, arrays: list[np.ndarray], *scalars: Any, dtype: str
) -> list[np.ndarray]:
    got = run_op(cuda_ops, op, arrays, *scalars)
    for name, be in BACKENDS.items():
        want = run_op(be, op, arrays, *scalars)
        for k, (g, w) in enumerate(zip(got, want, strict=True)):
            np.testing.assert_allclose(g, w, **tol(dtype), err_msg=f"{op} arg {k} vs {name}")
    return got


def activated(rng: np.random.Generator, shape: tuple[int, int], activation: str,
              dtype: str) -> np.ndarray:
    """A = f(Z) for a random Z: valid stored outputs for the backward kernels."""
    Z = (rng.standard_normal(shape) * 2).astype(dtype)
    A = np.empty_like(Z)
    Backend().bias_activation(Z, np.zeros(shape[1], dtype), A, activation)
    return A


# ---------------------------------------------------------------------- launch arithmetic
@pytest.mark.parametrize("config", CONFIGS)
def test_blocks_cover_every_item_or_stop_at_max_blocks(monkeypatch, config) -> None:
    set_config(monkeypatch, config)
    tpb, max_blocks = config
    for n in (0, 1, tpb - 1, tpb, tpb + 1, 1000):
        blocks = kcuda.blocks_for(n)
        assert 1 <= blocks <= max_blocks
        assert blocks * tpb >= n or blocks == max_blocks


# ---------------------------------------------------------------------- forward
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize(("shape", "config"), SHAPE_CASES)
def test_bias_activation(cuda_ops, monkeypatch, dtype, activation, shape, config) -> None:
    set_config(monkeypatch, config)
    rng = np.random.default_rng(seed_of(shape, activation))
    Z = (rng.standard_normal(shape) * 3).astype(dtype)
    b = rng.standard_normal(shape[1]).astype(dtype)
    A = np.full(shape, np.nan, dtype)
    Z_out, b_out, A_out = check_against_both(
        cuda_ops, "bias_activation", [Z, b, A], activation, dtype=dtype
    )
    np.testing.assert_array_equal(b_out, b)
    assert np.isfinite(A_out).all()


# ---------------------------------------------------------------------- backward
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", DIFFERENTIABLE)
@pytest.mark.parametrize(("shape", "config"), SHAPE_CASES)
def test_activation_backward(cuda_ops, monkeypatch, dtype, activation, shape, config) -> None:
    set_config(monkeypatch, config)
    rng = np.random.default_rng(seed_of(shape, activation, 1))
    dA = rng.standard_normal(shape).astype(dtype)
    A = activated(rng, shape, activation, dtype)
    delta = np.full(shape, np.nan, dtype)
    db = np.full(shape[1], np.nan, dtype)
    check_against_both(cuda_ops, "activation_backward", [dA, A, delta, db], activation,
                       dtype=dtype)


@pytest.mark.parametrize("rows", [1, 31, 32, 33, 97])
def test_activation_backward_in_place_over_chunk_edges(cuda_ops, monkeypatch, rows) -> None:
    """delta may be dA itself (the model's workspace does that); m around CHUNK_ROWS."""
    set_config(monkeypatch, CONFIGS[2])
    rng = np.random.default_rng(rows)
    dA = rng.standard_normal((rows, 5)).astype("float32")
    A = activated(rng, (rows, 5), "tanh", "float32")
    want_delta, want_db = dA * (1 - A * A), (dA * (1 - A * A)).sum(axis=0)
    with cuda_ops.activate():
        on = [cuda_ops.asarray(a) for a in (dA, A, np.zeros(5, "float32"))]
        cuda_ops.activation_backward(on[0], on[1], on[0], on[2], "tanh")
    np.testing.assert_allclose(cuda_ops.to_numpy(on[0]), want_delta, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(cuda_ops.to_numpy(on[2]), want_db, rtol=1e-5, atol=1e-5)


def test_bias_gradient_does_not_depend_on_the_launch(cuda_ops, monkeypatch) -> None:
    """No atomics: the column sums come out bit for bit the same at every launch configuration."""
    rng = np.random.default_rng(7)
    dA = rng.standard_normal((100, 9)).astype("float32") * 1e3
    A = activated(rng, (100, 9), "sigmoid", "float32")
    results = []
    for config in CONFIGS:
        set_config(monkeypatch, config)
        _, _, _, db = run_op(cuda_ops, "activation_backward",
                             [dA, A, np.empty_like(dA), np.empty(9, "float32")], "sigmoid")
        results.append(db)
    for db in results[1:]:
        np.testing.assert_array_equal(db, results[0])


# ---------------------------------------------------------------------- output layer
def targets(rng: np.random.Generator, loss: str, shape: tuple[int, int], dtype: str):
    m, n = shape
    if loss == "cross_entropy":
        return np.eye(n, dtype=dtype)[rng.integers(0, n, size=m)]
    if loss == "binary_cross_entropy":
        return rng.integers(0, 2, size=shape).astype(dtype)
    return rng.normal(0.5, 1.0, size=shape).astype(dtype)


def output_case(rng, shape, activation, loss, dtype):
    Z = (rng.standard_normal(shape) * 2).astype(dtype)
    A = np.empty_like(Z)
    Backend().bias_activation(Z, np.zeros(shape[1], dtype), A, activation)
    Y = targets(rng, loss, shape, dtype)
    stats = np.full(N_STATS, 7.0, dtype)  # += must add to these
    stats[STAT_DIVERGED_AT] = 0
    return [Z, A, Y, np.full(shape, np.nan, dtype), np.full(shape[1], np.nan, dtype), stats]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("activation", "loss"), OUTPUTS)
@pytest.mark.parametrize(("shape", "config"), SHAPE_CASES)
def test_loss_output_delta(cuda_ops, monkeypatch, dtype, activation, loss, shape, config) -> None:
    set_config(monkeypatch, config)
    if activation == "softmax" and shape[1] == 1:
        shape = (shape[0], 2)
    rng = np.random.default_rng(seed_of(shape, activation, loss))
    arrays = output_case(rng, shape, activation, loss, dtype)
    *_, stats = check_against_both(cuda_ops, "loss_output_delta", arrays, activation, loss, 4,
                                   dtype=dtype)
    assert stats[STAT_DIVERGED_AT] == 0 and stats[STAT_BATCH] == 4
    assert stats[STAT_COUNT] == 7.0 + shape[0]


@pytest.mark.parametrize("already", [0.0, 2.0])
def test_loss_not_finite_sets_the_divergence_flag_once(cuda_ops, monkeypatch, already) -> None:
    set_config(monkeypatch, CONFIGS[1])
    rng = np.random.default_rng(0)
    arrays = output_case(rng, (9, 3), "identity", "squared_error", "float32")
    arrays[1][4, 1] = np.inf  # A: an infinite prediction, an infinite loss
    arrays[5][STAT_DIVERGED_AT] = already
    *_, stats = run_op(cuda_ops, "loss_output_delta", arrays, "identity", "squared_error", 6)
    assert stats[STAT_DIVERGED_AT] == (already or 7.0)
    *_, want = run_op(BACKENDS["cpu"], "loss_output_delta", arrays, "identity",
                      "squared_error", 6)
    np.testing.assert_array_equal(np.isfinite(stats), np.isfinite(want))
    assert stats[STAT_DIVERGED_AT] == want[STAT_DIVERGED_AT]


# ---------------------------------------------------------------------- optimizer updates
OPTIMIZERS = {
    # name: (method, number of state vectors, scalars after the vectors except stats)
    "sgd": ("sgd_step", 0, lambda n: (0.1, 0.01, n)),
    "momentum": ("sgd_momentum_step", 1, lambda n: (0.05, 0.9, 0.01, n, False)),
    "nesterov": ("sgd_momentum_step", 1, lambda n: (0.05, 0.9, 0.01, n, True)),
    "adam": ("adam_step", 2, lambda n: (1e-3, 0.9, 0.999, 1e-8, 0.01, n, 3)),
}


def optimizer_case(name: str, size: int, dtype: str, diverged: bool = False):
    """The method, vectors (p, g, state), scalars and stats of one step."""
    method, n_state, scalars = OPTIMIZERS[name]
    rng = np.random.default_rng(size)
    p, g = (rng.standard_normal(size).astype(dtype) for _ in range(2))
    state = [rng.standard_normal(size).astype(dtype) for _ in range(n_state)]
    if name == "adam":
        state[1] = np.abs(state[1])  # the second moment is never negative
    stats = np.zeros(N_STATS, dtype)
    stats[STAT_BATCH] = 4.0
    stats[STAT_DIVERGED_AT] = 3.0 if diverged else 0.0
    return method, [p, g, *state], scalars(size // 2), stats


def step_on(be: Backend, method: str, vectors, scalars, stats) -> list[np.ndarray]:
    """One optimizer step on ``be``; returns the vectors and stats, as NumPy arrays."""
    with be.activate():
        on = [be.asarray(v.copy()) for v in [*vectors, stats]]
        getattr(be, method)(*on[:-1], *scalars, on[-1])
        return [np.array(be.to_numpy(v)) for v in on]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize(("size", "config"), [(1, CONFIGS[0]), (7, CONFIGS[1]),
                                              (1000, CONFIGS[2])])
def test_optimizer_step(cuda_ops, monkeypatch, dtype, name, size, config) -> None:
    set_config(monkeypatch, config)
    case = optimizer_case(name, size, dtype)
    got = step_on(cuda_ops, *case)
    assert not np.array_equal(got[0], case[1][0])
    assert got[-1][STAT_DIVERGED_AT] == 0
    for be_name, be in BACKENDS.items():
        for k, (g, w) in enumerate(zip(got, step_on(be, *case), strict=True)):
            np.testing.assert_allclose(g, w, **tol(dtype), err_msg=f"{name} {k} vs {be_name}")


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_step_skipped_after_divergence(cuda_ops, monkeypatch, name) -> None:
    set_config(monkeypatch, CONFIGS[1])
    method, vectors, scalars, stats = optimizer_case(name, 20, "float32", diverged=True)
    *after, stats_after = step_on(cuda_ops, method, vectors, scalars, stats)
    for before, now in zip(vectors, after, strict=True):
        np.testing.assert_array_equal(now, before)
    np.testing.assert_array_equal(stats_after, stats)


# ---------------------------------------------------------------------- data
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("rows", "cols", "config"), [(1, 1, CONFIGS[0]), (5, 1, CONFIGS[1]),
                                                      (1, 9, CONFIGS[2]), (40, 13, CONFIGS[2])])
def test_gather_rows(cuda_ops, monkeypatch, dtype, rows, cols, config) -> None:
    set_config(monkeypatch, config)
    rng = np.random.default_rng(rows * cols)
    X = rng.standard_normal((50, cols)).astype(dtype)
    idx = rng.integers(0, 50, size=rows)  # repeats allowed
    with cuda_ops.activate():
        out = cuda_ops.empty((rows, cols), dtype)
        cuda_ops.gather_rows(cuda_ops.asarray(X), cuda_ops.asarray(idx), out)
    np.testing.assert_array_equal(cuda_ops.to_numpy(out), X[idx])


# ---------------------------------------------------------------------- the whole MLP
TRAINING_CASES = {
    "relu-adam-softmax": dict(layer_sizes=[6, 7, 5, 3], activation="relu", optimizer="adam"),
    "tanh-nesterov-bce": dict(layer_sizes=[6, 4, 1], activation="tanh", optimizer="nesterov",
                              loss="binary_cross_entropy", weight_decay=1e-3),
    "sigmoid-sgd-mse": dict(layer_sizes=[6, 5, 2], activation="sigmoid", optimizer="sgd",
                            loss="squared_error"),
}


@pytest.mark.parametrize("dtype", ["float32"])
@pytest.mark.parametrize("case", TRAINING_CASES)
def test_mlp_trains_like_the_numpy_backend(cuda_ops, monkeypatch, case, dtype) -> None:
    """Two epochs, batches of 40 (two chunks) and a last batch of 20: same losses, same weights.

    Same seed: same initial weights and shuffles (both draw from NumPy's
    generator under the simulator; on a GPU the weights are copied over and
    the batches are taken in order).
    """
    set_config(monkeypatch, CONFIGS[2])
    options = dict(TRAINING_CASES[case], dtype=dtype, seed=5)
    sizes = options.pop("layer_sizes")
    rng = np.random.default_rng(11)
    X = rng.standard_normal((100, sizes[0])).astype(dtype)
    if options.get("loss") == "squared_error":
        y = rng.normal(0.5, 0.5, size=(100, sizes[-1]))
    elif sizes[-1] == 1:
        y = rng.integers(0, 2, size=100)
    else:
        y = rng.integers(0, sizes[-1], size=100)
    reference = xpmlp.MLP(sizes, backend="numpy", **options)
    model = xpmlp.MLP(sizes, backend=cuda_ops, **options)
    if not SIMULATOR:
        model.set_weights(reference.get_weights())
    shuffle = SIMULATOR
    np.testing.assert_array_equal(cuda_ops.to_numpy(model.params), reference.params)
    reference.fit(X, y, epochs=2, batch_size=40, shuffle=shuffle)
    model.fit(X, y, epochs=2, batch_size=40, shuffle=shuffle)
    for got, want in zip(model.history_, reference.history_, strict=True):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
        # bit for bit under the simulator; a GPU's exp may flip a near tie
        assert got["train_accuracy"] == pytest.approx(want["train_accuracy"],
                                                      abs=0 if SIMULATOR else 0.02)
    np.testing.assert_allclose(cuda_ops.to_numpy(model.params), reference.params,
                               rtol=1e-5, atol=1e-6)
    assert not np.allclose(reference.params, xpmlp.MLP(sizes, backend="numpy",
                                                       **options).params)


def test_every_model_call_runs_with_the_backend_active(cuda_ops, tmp_path) -> None:
    """The whole public API gives the numbers of the NumPy backend; under the simulator a
    kernel launched outside ``backend.activate()`` raises, so this also shows that fit,
    the learner steps, prediction, weights, save/load and explain run inside it."""
    from xpmlp.explain import compare, parse_file, trace

    rng = np.random.default_rng(3)
    X = rng.standard_normal((50, 4)).astype("float32")
    y = rng.integers(0, 3, size=50)
    reference = xpmlp.MLP([4, 6, 3], backend="numpy", seed=2)
    model = xpmlp.MLP([4, 6, 3], backend=cuda_ops, seed=2)
    model.set_weights(reference.get_weights())
    losses = []
    for m in (reference, model):
        m.fit(X, y, epochs=1, batch_size=16, shuffle=False)
        losses.append(m.backward(m.forward(X[:10]), y[:10]).loss)
        m.step()
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    for (W, b), (W_ref, b_ref) in zip(model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_allclose(W, W_ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b, b_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.predict_proba(X), reference.predict_proba(X),
                               rtol=1e-5, atol=1e-6)
    assert model.score(X, y) == pytest.approx(reference.score(X, y), abs=0.05)
    loaded = xpmlp.load_model(xpmlp.save_model(model, tmp_path / "model"), backend=cuda_ops)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    examples = parse_file(Path(__file__).resolve().parents[1] / "data" / "examples"
                          / "worked_examples.json")
    for example in examples:
        n_checked, mismatches = compare(example, trace(example, cuda_ops, "float64"), 1e-9)
        assert n_checked > 0 and mismatches == []
