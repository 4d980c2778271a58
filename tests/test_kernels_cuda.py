"""The CUDA kernels equal the reference backend, op by op, kernel by kernel, and end to end.

Under ``NUMBA_ENABLE_CUDASIM=1`` (marker ``cudasim``, own process:
``NUMBA_ENABLE_CUDASIM=1 python -m pytest -m cudasim``) the kernels run in
Numba's simulator through ``SimulatedCudaBackend`` (the CUDA backend's logic on
NumPy arrays). Without the simulator the same tests are marked ``cuda`` and
run on a real GPU through ``CudaBackend``, or are skipped with the reason.

Every registry entry (``kernel_cases``) is run in float32 and float64 on small
shapes and on shapes that need several blocks and several chunks:
``THREADS_PER_BLOCK``, ``MAX_BLOCKS`` and ``CHUNK_ROWS`` are patched small, so
the grid-stride loops and the chunked column sums are exercised with a handful
of threads (the simulator runs one Python thread per CUDA thread). Each op is
held to ``xpmlp.backends.base.Backend`` through the backend's ops, and each
template of ``kcuda.TEMPLATES`` is also launched directly (``CUDA.kernel`` +
``launcher``) and held to the reference's numbers.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kernel_cases import (
    BACKWARD,
    DTYPES,
    FORWARD,
    OPTIMIZER_NAMES,
    OUTPUT_PAIRS,
    assert_close,
    cuda_cases,
    forward,
    forward_scale,
    loss_scale,
    optimizer_inputs,
    output_inputs,
    regularizer_args,
    run_activation_backward,
    run_bias_activation,
    run_gather_rows,
    run_loss_output_delta,
    run_optimizer_step,
    seed,
    sum_scale,
    update_scale,
)
from xpmlp.kernels import cuda as kcuda

import xpmlp
from xpmlp.backends.base import Backend
from xpmlp.core import losses
from xpmlp.core.activations import ACTIVATIONS
from xpmlp.core.errors import ParameterError
from xpmlp.core.losses import LOSSES

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
pytestmark = pytest.mark.cudasim if SIMULATOR else pytest.mark.cuda

REFERENCE = Backend()
# (threads per block, max blocks): one thread for everything, odd blocks, a few warps' worth.
CONFIGS = ((1, 1), (3, 2), (8, 2))
CHUNK = 4  # CHUNK_ROWS in these tests: 9 rows are 3 chunks, 33 rows 9
# each shape with one launch configuration (the full product would be slow in the simulator)
SHAPE_CASES = (
    ((1, 1), CONFIGS[0]),
    ((1, 5), CONFIGS[1]),
    ((6, 1), CONFIGS[2]),
    ((9, 3), CONFIGS[1]),
    ((33, 4), CONFIGS[2]),
)


@pytest.fixture(scope="module")
def cuda_ops() -> Backend:
    """The CUDA backend's logic: simulated on NumPy arrays, or the real one on a GPU."""
    if SIMULATOR:
        from xpmlp.backends.cuda_sim import SimulatedCudaBackend

        return SimulatedCudaBackend()
    return xpmlp.get_backend("cuda")


def set_launch(
    monkeypatch: pytest.MonkeyPatch, config: tuple[int, int], chunk: int = CHUNK
) -> None:
    monkeypatch.setattr(kcuda, "THREADS_PER_BLOCK", config[0])
    monkeypatch.setattr(kcuda, "MAX_BLOCKS", config[1])
    monkeypatch.setattr(kcuda, "CHUNK_ROWS", chunk)


# ---------------------------------------------------------------------- launch arithmetic
@pytest.mark.parametrize("config", CONFIGS)
def test_blocks_cover_every_item_or_stop_at_max_blocks(monkeypatch, config) -> None:
    set_launch(monkeypatch, config)
    tpb, max_blocks = config
    for n in (0, 1, tpb - 1, tpb, tpb + 1, 1000):
        blocks = kcuda.blocks_for(n)
        assert 1 <= blocks <= max_blocks
        assert blocks * tpb >= n or blocks == max_blocks


def test_the_shapes_need_several_blocks_and_chunks() -> None:
    """The grid-stride loops go round (more items than threads) and m spans several chunks."""
    assert any(m * n > tpb * blocks for (m, n), (tpb, blocks) in SHAPE_CASES)
    assert any(m > 2 * CHUNK and m % CHUNK for (m, _), _ in SHAPE_CASES)


# ---------------------------------------------------------------------- ops: forward
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", FORWARD)
@pytest.mark.parametrize(("shape", "config"), SHAPE_CASES)
def test_bias_activation(cuda_ops, monkeypatch, act, shape, config, dtype) -> None:
    set_launch(monkeypatch, config)
    rng = seed("cuda-forward", act, shape)
    Z = (3 * rng.standard_normal(shape)).astype(dtype)
    b = rng.standard_normal(shape[1]).astype(dtype)
    Z_ref, A_ref = run_bias_activation(REFERENCE, act, Z, b)
    Z_got, A_got = run_bias_activation(cuda_ops, act, Z, b)
    assert Z_got.dtype == A_got.dtype == dtype
    np.testing.assert_array_equal(Z_got, Z_ref)
    assert_close(A_got, A_ref, scale=forward_scale(Z_ref, A_ref), what=act)


# ---------------------------------------------------------------------- ops: backward
@pytest.mark.parametrize("in_place", [False, True], ids=["delta", "delta-is-dA"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", BACKWARD)
@pytest.mark.parametrize(("shape", "config"), SHAPE_CASES)
def test_activation_backward(cuda_ops, monkeypatch, act, shape, config, dtype, in_place):
    set_launch(monkeypatch, config)
    rng = seed("cuda-backward", act, shape)
    Z = (2 * rng.standard_normal(shape)).astype(dtype)
    A = forward(act, Z)
    dA = rng.standard_normal(shape).astype(dtype)
    d_ref, db_ref = run_activation_backward(REFERENCE, act, dA, Z, A, in_place)
    d, db = run_activation_backward(cuda_ops, act, dA, Z, A, in_place)
    d_scale = np.abs(dA.astype(np.float64))
    assert_close(d, d_ref, scale=d_scale, what=f"{act} delta")
    assert_close(db, db_ref, scale=sum_scale(d_ref, d_scale), what=f"{act} db")


def test_bias_gradient_does_not_depend_on_the_launch(cuda_ops, monkeypatch) -> None:
    """No atomics: the column sums are bit for bit the same at every launch configuration
    (the chunk size fixes the order of the additions)."""
    rng = seed("cuda-determinism")
    dA = (rng.standard_normal((40, 5)) * 1e3).astype("float32")
    Z = rng.standard_normal((40, 5)).astype("float32")
    act = BACKWARD[0]
    results = []
    for config in CONFIGS:
        set_launch(monkeypatch, config)
        results.append(run_activation_backward(cuda_ops, act, dA, Z, forward(act, Z))[1])
    for db in results[1:]:
        np.testing.assert_array_equal(db, results[0])


# ---------------------------------------------------------------------- ops: output layer
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("act", "loss"), OUTPUT_PAIRS)
@pytest.mark.parametrize(("shape", "config"), SHAPE_CASES)
def test_loss_output_delta(cuda_ops, monkeypatch, act, loss, shape, config, dtype) -> None:
    set_launch(monkeypatch, config)
    Z, A, Y = output_inputs(act, loss, shape, dtype, seed("cuda-output", act, loss, shape))
    d_ref, db_ref, st_ref, _ = run_loss_output_delta(REFERENCE, act, loss, Z, A, Y)
    d, db, stats, skip = run_loss_output_delta(cuda_ops, act, loss, Z, A, Y)
    m = shape[0]
    d_scale = 2 * (np.abs(A.astype(np.float64)) + np.abs(Y.astype(np.float64))) / m
    assert_close(d, d_ref, scale=d_scale, what="delta")
    assert_close(db, db_ref, scale=sum_scale(d_ref, d_scale), what="db")
    assert_close(stats[0], st_ref[0], scale=loss_scale(Z, A, Y, loss), what="loss sum")
    assert stats[1] == st_ref[1]
    assert skip[0] == 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("act", "loss"), OUTPUT_PAIRS)
def test_a_nan_loss_sets_the_skip_flag_and_a_finite_one_never_clears_it(
    cuda_ops, monkeypatch, act, loss, dtype
) -> None:
    set_launch(monkeypatch, CONFIGS[1])
    rng = seed("cuda-nan", act, loss)
    Z, A, Y = output_inputs(act, loss, (9, 3), dtype, rng)
    Z_nan = Z.copy()
    Z_nan[4, 1] = np.nan
    _, _, stats, skip = run_loss_output_delta(cuda_ops, act, loss, Z_nan, forward(act, Z_nan), Y)
    assert np.isnan(stats[0]) and skip[0] == 1
    _, _, stats, skip = run_loss_output_delta(cuda_ops, act, loss, Z, A, Y, skip=1.0)
    assert np.isfinite(stats[0]) and skip[0] == 1


@pytest.mark.parametrize("label", [0, 2])
def test_cross_entropy_is_exact_for_huge_and_separated_logits(cuda_ops, monkeypatch, label):
    """Defect D4 on the CUDA kernels: logits [1e30] * 3 give log 3; float32 logits
    [100, 90, 80] with label 0 give log1p(e^-10 + e^-20) = 4.54e-5 to 1e-6."""
    set_launch(monkeypatch, CONFIGS[1])
    loss = "cross_entropy"
    act = LOSSES[loss].default_output
    Z = np.full((1, 3), 1e30)
    _, A = run_bias_activation(cuda_ops, act, Z, np.zeros(3))
    *_, stats, _ = run_loss_output_delta(cuda_ops, act, loss, Z, A, np.eye(3)[[label]])
    assert stats[0] == pytest.approx(math.log(3.0), rel=1e-15)
    Z = np.array([[100.0, 90.0, 80.0]], np.float32)
    _, A = run_bias_activation(cuda_ops, act, Z, np.zeros(3, np.float32))
    *_, stats, _ = run_loss_output_delta(cuda_ops, act, loss, Z, A, np.eye(3, dtype="f")[[0]])
    exact = math.log1p(math.exp(-10.0) + math.exp(-20.0))
    assert abs(float(stats[0]) - exact) <= 1e-6 * exact


# ---------------------------------------------------------------------- compensated sums
M_SUM = 2049


def tiny_terms(m: int) -> np.ndarray:
    """1, then m - 1 terms below half an ulp of 1: a float32 running sum stays at 1.0 (5e-5
    off), a compensated one is exact to rounding."""
    x = seed("cuda-sums").uniform(1.0, 2.0, m) * 2.0**-26
    x[0] = 1.0
    return x.astype(np.float32)


def naive_float32_sum(x: np.ndarray) -> float:
    return float(np.cumsum(x, dtype=np.float32)[-1])


def test_bias_gradient_sum_is_compensated(cuda_ops, monkeypatch) -> None:
    set_launch(monkeypatch, CONFIGS[2], chunk=32)
    x = tiny_terms(M_SUM)
    dA = np.stack([x, 2 * x], axis=1)
    Z = np.zeros_like(dA)
    act = BACKWARD[0]
    delta, db = run_activation_backward(cuda_ops, act, dA, Z, forward(act, Z))
    for j in range(dA.shape[1]):
        exact = math.fsum(delta[:, j].astype(np.float64))
        assert abs(db[j] - exact) <= 1e-7 * exact, (j, float(db[j]), exact)
        assert abs(naive_float32_sum(delta[:, j]) - exact) > 1e-6 * exact


def test_loss_sum_is_compensated(cuda_ops, monkeypatch) -> None:
    set_launch(monkeypatch, CONFIGS[2])
    loss, act = "squared_error", BACKWARD[0]
    assert LOSSES[loss].pairs_with(ACTIVATIONS[act])
    Y = np.sqrt(tiny_terms(M_SUM)).astype(np.float32)[:, None]
    Z = np.zeros_like(Y)
    A = forward(act, Z)
    assert not A.any()
    _, _, stats, skip = run_loss_output_delta(cuda_ops, act, loss, Z, A, Y)
    per_sample = (Y[:, 0] - A[:, 0]) * (Y[:, 0] - A[:, 0])
    exact = math.fsum(per_sample.astype(np.float64))
    assert abs(stats[0] - exact) <= 1e-7 * exact, (float(stats[0]), exact)
    assert abs(naive_float32_sum(per_sample) - exact) > 1e-6 * exact
    assert skip[0] == 0


# ---------------------------------------------------------------------- ops: optimizers
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
@pytest.mark.parametrize(("size", "config"), [(1, CONFIGS[0]), (7, CONFIGS[1]), (100, CONFIGS[2])])
def test_optimizer_step(cuda_ops, monkeypatch, name, size, config, dtype) -> None:
    set_launch(monkeypatch, config)
    opt, p, g, state, hyper = optimizer_inputs(name, size, dtype, seed("cuda-opt", name, size))
    n_decay = (size + 1) // 2
    p_ref, s_ref = run_optimizer_step(REFERENCE, opt, p, g, state, hyper, 0.3, n_decay)
    p_got, s_got = run_optimizer_step(cuda_ops, opt, p, g, state, hyper, 0.3, n_decay)
    assert not np.array_equal(p_got, p)
    scale = update_scale(p, g, state)
    assert_close(p_got, p_ref, scale=scale, what=f"{name} p")
    assert_close(s_got, s_ref, scale=scale, what=f"{name} state")
    no_decay, _ = run_optimizer_step(cuda_ops, opt, p, g, state, hyper, 0.3, 0)
    changed = p_got != no_decay
    assert changed[:n_decay].all() and not changed[n_decay:].any()


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_optimizer_step_leaves_everything_untouched_when_skip_is_set(
    cuda_ops, monkeypatch, name
) -> None:
    set_launch(monkeypatch, CONFIGS[1])
    opt, p, g, state, hyper = optimizer_inputs(name, 20, "float32", seed("cuda-skip", name))
    p_got, s_got = run_optimizer_step(cuda_ops, opt, p, g, state, hyper, 0.3, 20, skip=1.0)
    np.testing.assert_array_equal(p_got, p)
    np.testing.assert_array_equal(s_got, state)


# ---------------------------------------------------------------------- ops: data
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("rows", "cols", "config"),
    [(1, 1, CONFIGS[0]), (5, 1, CONFIGS[1]), (1, 9, CONFIGS[2]), (20, 7, CONFIGS[2])],
)
def test_gather_rows(cuda_ops, monkeypatch, dtype, rows, cols, config) -> None:
    set_launch(monkeypatch, config)
    rng = seed("cuda-gather", rows, cols)
    X = rng.standard_normal((50, cols)).astype(dtype)
    idx = rng.integers(0, 50, size=rows)  # repeats allowed
    np.testing.assert_array_equal(run_gather_rows(cuda_ops, X, idx), X[idx])


def test_an_unknown_name_raises_listing_the_registry(cuda_ops) -> None:
    Z, b = np.zeros((2, 3)), np.zeros(3)
    for registry, call in [
        (ACTIVATIONS, lambda: run_bias_activation(cuda_ops, "nope", Z, b)),
        (ACTIVATIONS, lambda: run_activation_backward(cuda_ops, "nope", Z, Z, Z)),
        (LOSSES, lambda: run_loss_output_delta(cuda_ops, OUTPUT_PAIRS[0][0], "nope", Z, Z, Z)),
    ]:
        with pytest.raises(ParameterError) as info:
            call()
        assert "'nope'" in str(info.value)
        assert all(name in str(info.value) for name in registry)


# ---------------------------------------------------------------------- kernels launched directly
def launch(cuda_ops: Backend, kernel: Any, n_items: int, *args: Any) -> None:
    """``launcher(kernel, n_items, stream, args)(*args)`` on device copies of the host arrays
    in ``args``, which get the results back."""
    with cuda_ops.activate():
        dev = [cuda_ops.asarray(a) if isinstance(a, np.ndarray) else a for a in args]
        kcuda.launcher(kernel, n_items, cuda_ops._launch_stream, tuple(dev))(*dev)
        for a, d in zip(args, dev, strict=True):
            if isinstance(a, np.ndarray):
                a[...] = cuda_ops.to_numpy(d)


def fsum_columns(X: np.ndarray) -> list[float]:
    return [math.fsum(col) for col in X.astype(np.float64).T]


def direct_bias_activation(cuda_ops, case, kernel, dtype, m, n, rng) -> None:
    Z = (3 * rng.standard_normal((m, n))).astype(dtype)
    b = rng.standard_normal(n).astype(dtype)
    Z_ref, A_ref = run_bias_activation(REFERENCE, case.about, Z, b)
    A = np.full_like(Z, np.nan)
    per_row = case.template.__name__ == "bias_activation_rows"
    launch(cuda_ops, kernel, m if per_row else m * n, Z, b, A)
    np.testing.assert_array_equal(Z, Z_ref)
    assert_close(A, A_ref, scale=forward_scale(Z_ref, A_ref), what=case.id)


def direct_activation_backward_chunks(cuda_ops, case, kernel, dtype, m, n, rng) -> None:
    """Chunks of 2 rows: each (chunk, column) thread's partial sum, then sum_chunks."""
    Z = (2 * rng.standard_normal((m, n))).astype(dtype)
    A = forward(case.about, Z)
    dA = rng.standard_normal((m, n)).astype(dtype)
    d_ref, db_ref = run_activation_backward(REFERENCE, case.about, dA, Z, A)
    chunk_rows, chunks = 2, -(-m // 2)
    delta = np.full_like(Z, np.nan)
    partial = np.full((chunks, n), np.nan, dtype)
    launch(cuda_ops, kernel, chunks * n, dA, Z, A, delta, partial, chunk_rows)
    d_scale = np.abs(dA.astype(np.float64))
    assert_close(delta, d_ref, scale=d_scale, what=case.id)
    for c in range(chunks):
        rows = slice(c * chunk_rows, (c + 1) * chunk_rows)
        assert_close(
            partial[c],
            fsum_columns(delta[rows]),
            scale=2 * np.abs(delta[rows].astype(np.float64)).sum(axis=0),
            what="chunk",
        )
    db = np.full(n, np.nan, dtype)
    launch(cuda_ops, kcuda.CUDA.kernel(kcuda.sum_chunks, dtype), n, partial, db)
    assert_close(db, db_ref, scale=sum_scale(d_ref, d_scale), what="db")


def direct_sum_chunks(cuda_ops, case, kernel, dtype, m, n, rng) -> None:
    partial = rng.standard_normal((m, n)).astype(dtype)
    out = np.full(n, np.nan, dtype)
    launch(cuda_ops, kernel, n, partial, out)
    assert_close(out, fsum_columns(partial), scale=2 * np.abs(partial).sum(axis=0))


def direct_loss_delta_rows(cuda_ops, case, kernel, dtype, m, n, rng) -> None:
    act, loss = case.about
    Z, A, Y = output_inputs(act, loss, (m, n), dtype, rng)
    d_ref, *_ = run_loss_output_delta(REFERENCE, act, loss, Z, A, Y)
    delta = np.full_like(Z, np.nan)
    row_stats = np.full((m, 2), np.nan, dtype)
    launch(cuda_ops, kernel, m, Z, A, Y, delta, row_stats, np.dtype(dtype).type(1.0 / m))
    d_scale = 2 * (np.abs(A.astype(np.float64)) + np.abs(Y.astype(np.float64))) / m
    assert_close(delta, d_ref, scale=d_scale, what="delta")
    terms = LOSSES[loss].array_terms(np, Z, A, Y)
    for i in range(m):  # each sample's loss, to the rounding scale of its terms
        assert_close(
            row_stats[i, 0],
            terms[i],
            scale=loss_scale(Z[i : i + 1], A[i : i + 1], Y[i : i + 1], loss),
        )
    np.testing.assert_array_equal(row_stats[:, 1], losses.correct(A, Y))


def direct_loss_output_reduce(cuda_ops, case, kernel, dtype, m, n, rng) -> None:
    delta = rng.standard_normal((m, n)).astype(dtype)
    row_stats = np.stack([rng.random(m), rng.integers(0, 2, m)], axis=1).astype(dtype)
    db, out_stats, skip = (np.full(n, np.nan, dtype), np.full(2, np.nan, dtype), np.zeros(1, dtype))
    launch(cuda_ops, kernel, n + 1, delta, row_stats, db, out_stats, skip)
    assert_close(db, fsum_columns(delta), scale=2 * np.abs(delta).sum(axis=0), what="db")
    assert_close(out_stats[0], math.fsum(row_stats[:, 0]), scale=2 * row_stats[:, 0].sum())
    assert out_stats[1] == row_stats[:, 1].sum() and skip[0] == 0
    row_stats[m // 2, 0] = np.inf
    launch(cuda_ops, kernel, n + 1, delta, row_stats, db, out_stats, skip)
    # not finite (the compensated sum makes an infinite term NaN, the reference keeps inf)
    assert not np.isfinite(out_stats[0]) and skip[0] == 1


def direct_optimizer_step(cuda_ops, case, kernel, dtype, m, n, rng) -> None:
    """With L2 decay, and with every gradient option on (``regularizer_args``)."""
    size = m * n
    opt, p, g, state, hyper = optimizer_inputs(case.about, size, dtype, rng)
    n_decay = size // 2
    t = np.dtype(dtype).type
    l1, clip_value, max_norm, sum_squares = regularizer_args(np.dtype(dtype))
    for regularizers in (
        {},
        dict(l1=l1, clip_value=clip_value, max_norm=max_norm, sum_squares=sum_squares),
    ):
        p_ref, s_ref = run_optimizer_step(
            REFERENCE, opt, p, g, state, hyper, 0.3, n_decay, **regularizers
        )
        extra = (
            t(regularizers.get("l1", 0.0)),
            t(regularizers.get("clip_value", np.inf)),
            t(regularizers.get("max_norm", 0.0)),
            sum_squares.copy(),
        )
        args = (
            p.copy(),
            g,
            state.copy(),
            tuple(map(t, hyper)),
            t(0.3),
            n_decay,
            np.zeros(1, dtype),
            *extra,
        )
        launch(cuda_ops, kernel, size, *args)
        scale = update_scale(p, g, state)
        assert_close(args[0], p_ref, scale=scale, what="p")
        assert_close(args[2], s_ref, scale=scale, what="state")
        skipped = (p.copy(), g, state.copy(), *args[3:6], np.ones(1, dtype), *extra)
        launch(cuda_ops, kernel, size, *skipped)
        np.testing.assert_array_equal(skipped[0], p)
        np.testing.assert_array_equal(skipped[2], state)


def direct_grad_sum_squares_partials(cuda_ops, case, kernel, dtype, m, n, rng) -> None:
    """Strided partial sums of the clamped squares (3 partials), then sum_chunks into out[0]."""
    g = (3 * rng.standard_normal(m * n + 2)).astype(dtype)
    clamped = np.clip(g.astype(np.float64), -1.5, 1.5)
    partial = np.full((3, 1), np.nan, dtype)
    launch(cuda_ops, kernel, 3, g, np.dtype(dtype).type(1.5), partial)
    for t in range(3):
        squares = clamped[t::3] ** 2
        assert_close(partial[t, 0], math.fsum(squares), scale=2 * squares.sum(), what="partial")
    out = np.full(1, np.nan, dtype)
    launch(cuda_ops, kcuda.CUDA.kernel(kcuda.sum_chunks, dtype), 1, partial, out)
    assert_close(out[0], math.fsum(clamped**2), scale=4 * (clamped**2).sum(), what="sum")


def direct_gather_rows(cuda_ops, case, kernel, dtype, m, n, rng) -> None:
    X = rng.standard_normal((m + 3, n)).astype(dtype)
    idx = rng.integers(0, m + 3, size=m)
    out = np.full((m, n), np.nan, dtype)
    launch(cuda_ops, kernel, m * n, X, idx, out)
    np.testing.assert_array_equal(out, X[idx])


def direct_optimizer_step_at(cuda_ops, case, kernel, dtype, m, n, rng) -> None:
    """The hyperparameters and decay of row counter[0] of a table, as the reference reads
    them."""
    size = m * n
    opt, p, g, state, hyper = optimizer_inputs(case.about, size, dtype, rng)
    other = opt.hyperparameters(7, 2 * opt.learning_rate)
    rows = np.array([other, hyper, other], dtype=dtype)
    counter = np.ones(1, np.int64)
    l1, clip_value, max_norm, sum_squares = regularizer_args(np.dtype(dtype))
    p_ref, s_ref = run_optimizer_step(
        REFERENCE,
        opt,
        p,
        g,
        state,
        tuple(rows[1]),
        0.3,
        size // 2,
        l1=l1,
        clip_value=clip_value,
        max_norm=max_norm,
        sum_squares=sum_squares,
    )
    args = (
        p.copy(),
        g,
        state.copy(),
        rows,
        counter,
        np.array([0.7, 0.3, 0.7], dtype),  # the decay of row counter[0] is 0.3
        size // 2,
        np.zeros(1, dtype),
        l1,
        clip_value,
        max_norm,
        sum_squares.copy(),
    )
    launch(cuda_ops, kernel, size, *args)
    scale = update_scale(p, g, state)
    assert_close(args[0], p_ref, scale=scale, what="p")
    assert_close(args[2], s_ref, scale=scale, what="state")
    assert counter[0] == 1  # read, not advanced


def direct_gather_batch_rows(cuda_ops, case, kernel, dtype, m, n, rng) -> None:
    """Batch counter[0] of an order, against the reference's ``gather_batch``."""
    X = rng.standard_normal((3 * m + 2, n)).astype(dtype)
    order = rng.permutation(3 * m + 2)
    for batch in (0, 2):
        counter = np.array([batch], np.int64)
        out, want = np.full((m, n), np.nan, dtype), np.full((m, n), np.nan, dtype)
        REFERENCE.gather_batch(X, order, counter, want)
        launch(cuda_ops, kernel, m * n, X, order, counter, out)
        np.testing.assert_array_equal(out, want)
        np.testing.assert_array_equal(out, X[order[batch * m : (batch + 1) * m]])


def direct_record_batch(cuda_ops, case, kernel, dtype, m, n, rng) -> None:
    """Statistics into row counter[0], the counter advanced: as the reference does."""
    stats = rng.standard_normal(2).astype(dtype)
    got, want = np.zeros((5, 2), dtype), np.zeros((5, 2), dtype)
    counter, counter_ref = np.array([3], np.int64), np.array([3], np.int64)
    REFERENCE.record_batch(counter_ref, stats, want)
    launch(cuda_ops, kernel, 1, counter, stats, got)
    np.testing.assert_array_equal(got, want)
    assert counter[0] == counter_ref[0] == 4
    np.testing.assert_array_equal(got[3], stats)


def direct_store_at(cuda_ops, case, kernel, dtype, m, n, rng) -> None:
    """A scalar into row counter[0], the counter left alone: as the reference does."""
    value = rng.standard_normal(1).astype(dtype)
    got, want = np.zeros(5, dtype), np.zeros(5, dtype)
    counter = np.array([3], np.int64)
    REFERENCE.store_at(counter, value, want)
    launch(cuda_ops, kernel, 1, counter, value, got)
    np.testing.assert_array_equal(got, want)
    assert got[3] == value[0] and counter[0] == 3


def direct_regularization(cuda_ops, case, kernel, dtype, m, n, rng, from_rows=False) -> None:
    """The dropout and batch-norm kernels, launched as the backend does, against the
    reference's ops (tests/test_dropout.py and tests/test_batch_norm.py test them further);
    ``from_rows``: the mask's key read on the device."""
    from kernel_cases import (
        batch_norm_inputs,
        run_activation_backward_dropout,
        run_batch_norm_backward,
        run_batch_norm_forward,
        run_batch_norm_inference,
        run_bias_activation_dropout,
    )

    from xpmlp.core.regularization import dropout_threshold

    name, act, t = case.template.__name__, case.about, np.dtype(dtype).type
    key, rate = 4242, 0.375
    # the key as a launch argument (layer -1; the rows are not read), or read on the device
    # at rows[counter[0], layer] as a recorded step reads it (``mask_key``): the same mask
    rows, counter = np.array([[1, 2], [3, 4], [5, key]], np.int64), np.array([2], np.int64)
    at = (0, rows, counter, 1) if from_rows else (key, rows[:1, :1] * 0 - 1, counter * 0, -1)
    drop = (*at, dropout_threshold(rate), t(1.0 / (1.0 - rate)))
    Z, b, gamma, beta, rmean, rvar = batch_norm_inputs((m, n), dtype, rng)
    dA = rng.standard_normal((m, n)).astype(dtype)
    fill = np.full_like(Z, np.nan)
    if name == "bias_activation_dropout_elements":
        expected = run_bias_activation_dropout(REFERENCE, act, Z, b, key, rate)
        A = fill.copy()
        launch(cuda_ops, kernel, m * n, Z, b, A, 0, *drop)
        got = (Z, A)
    elif name == "activation_backward_dropout_chunks":
        expected = run_activation_backward_dropout(REFERENCE, act, dA, Z, key, rate)
        delta, partial, db = fill.copy(), np.full((m, n), np.nan, dtype), np.full(n, np.nan, dtype)
        launch(cuda_ops, kernel, m * n, dA, Z, delta, partial, 1, 0, *drop)  # 1-row chunks
        launch(cuda_ops, kcuda.CUDA.kernel(kcuda.sum_chunks, dtype), n, partial, db)
        got = (delta, db)
    elif name == "batch_norm_forward_columns":
        expected = run_batch_norm_forward(REFERENCE, act, Z, b, gamma, beta, rmean, rvar, key, rate)
        st, Zhat, A = np.full((2, n), np.nan, dtype), fill.copy(), fill.copy()
        launch(
            cuda_ops,
            kernel,
            n,
            Z,
            b,
            gamma,
            beta,
            st,
            rmean,
            rvar,
            Zhat,
            A,
            t(0.1 if m > 1 else 0.0),
            t(1e-5),
            t(1.0 / m),
            t(1.0 / max(m - 1, 1)),
            *drop,
        )
        got = (Z, st, rmean, rvar, Zhat, A)
    elif name == "batch_norm_inference_elements":
        expected = run_batch_norm_inference(REFERENCE, act, Z, b, gamma, beta, rmean, rvar)
        A = fill.copy()
        launch(cuda_ops, kernel, m * n, Z, b, gamma, beta, rmean, rvar, A, t(1e-5))
        got = (Z, A)
    else:
        stats = np.stack([b, 1 + np.abs(beta)]).astype(dtype)
        Zhat = np.tanh(Z)
        expected = run_batch_norm_backward(REFERENCE, act, dA, Zhat, gamma, beta, stats, key, rate)
        delta, dg, dbe, db = fill.copy(), *(np.full(n, np.nan, dtype) for _ in range(3))
        launch(
            cuda_ops, kernel, n, dA, Zhat, gamma, beta, stats, delta, dg, dbe, db, t(1.0 / m), *drop
        )
        got = (delta, dg, dbe, db)
    tol = 1e-4 if np.dtype(dtype) == np.float32 else 1e-11
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=tol, atol=tol, err_msg=case.id)


DIRECT = {
    "bias_activation_dropout_elements": direct_regularization,
    "activation_backward_dropout_chunks": direct_regularization,
    "batch_norm_forward_columns": direct_regularization,
    "batch_norm_inference_elements": direct_regularization,
    "batch_norm_backward_columns": direct_regularization,
    "bias_activation_elements": direct_bias_activation,
    "bias_activation_rows": direct_bias_activation,
    "activation_backward_chunks": direct_activation_backward_chunks,
    "sum_chunks": direct_sum_chunks,
    "loss_delta_rows": direct_loss_delta_rows,
    "loss_output_reduce": direct_loss_output_reduce,
    "optimizer_step": direct_optimizer_step,
    "optimizer_step_at": direct_optimizer_step_at,
    "grad_sum_squares_partials": direct_grad_sum_squares_partials,
    "gather_rows": direct_gather_rows,
    "gather_batch_rows": direct_gather_batch_rows,
    "record_batch": direct_record_batch,
    "store_at": direct_store_at,
}


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "case",
    [
        c
        for c in cuda_cases()
        if DIRECT[c.template.__name__] is direct_regularization
        and "inference" not in c.template.__name__
    ],
    ids=lambda c: c.id,
)
def test_dropout_kernels_read_the_key_on_the_device(cuda_ops, case, dtype) -> None:
    """The key read at rows[counter[0], layer] (a recorded step's ``KeyAt``) gives the mask
    of the same key passed as a launch argument."""
    direct_regularization(
        cuda_ops, case, case.kernel(dtype), dtype, 7, 3, seed("rows", case.id, dtype), True
    )


def test_every_template_is_launched_directly() -> None:
    assert set(DIRECT) == {t.__name__ for t in kcuda.TEMPLATES}
    assert {c.template for c in cuda_cases()} == set(kcuda.TEMPLATES)


# the simulator's NumPy scalars warn on inf - inf (an infinite loss in loss_output_reduce)
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
# ... and on the dropout hash's uint64 products, which wrap by design
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize(("shape", "config"), [((1, 1), CONFIGS[0]), ((7, 3), CONFIGS[1])])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", cuda_cases(), ids=lambda c: c.id)
def test_kernel_launched_directly(cuda_ops, monkeypatch, case, dtype, shape, config) -> None:
    set_launch(monkeypatch, config)
    kernel = case.kernel(dtype)
    assert kernel is kcuda.CUDA.kernel(case.template, dtype, **case.bindings)  # built once
    DIRECT[case.template.__name__](
        cuda_ops, case, kernel, dtype, *shape, seed("direct", case.id, dtype, shape)
    )


# ---------------------------------------------------------------------- the whole MLP
TRAINING_CASES = {
    "relu-adam-softmax": dict(layer_sizes=[6, 7, 5, 3], activation="relu", optimizer="adam"),
    "tanh-nesterov-bce": dict(
        layer_sizes=[6, 4, 1],
        activation="tanh",
        optimizer="nesterov",
        loss="binary_cross_entropy",
        weight_decay=1e-3,
    ),
    "gelu-sgd-mse": dict(
        layer_sizes=[6, 5, 2], activation="gelu", optimizer="sgd", loss="squared_error"
    ),
    "tanh-rmsprop-l1-clipped": dict(
        layer_sizes=[6, 5, 3],
        activation="tanh",
        optimizer="rmsprop",
        l1=1e-3,
        clip_grad_norm=0.3,
        clip_grad_value=0.1,
    ),
}


@pytest.mark.parametrize("case", TRAINING_CASES)
def test_mlp_trains_like_the_numpy_backend(cuda_ops, monkeypatch, case) -> None:
    """Two epochs, batches of 40 and a last batch of 20: same losses, same weights.

    Same seed: same initial weights and shuffles (both draw from NumPy's
    generator under the simulator; on a GPU the weights are copied over and
    the batches are taken in order).
    """
    set_launch(monkeypatch, CONFIGS[2], chunk=16)
    options = dict(TRAINING_CASES[case], dtype="float32", seed=5)
    sizes = options.pop("layer_sizes")
    rng = np.random.default_rng(11)
    X = rng.standard_normal((100, sizes[0])).astype("float32")
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
    np.testing.assert_array_equal(cuda_ops.to_numpy(model.params), reference.params)
    reference.fit(X, y, epochs=2, batch_size=40, shuffle=SIMULATOR)
    model.fit(X, y, epochs=2, batch_size=40, shuffle=SIMULATOR)
    for got, want in zip(model.history_, reference.history_, strict=True):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
        # bit for bit under the simulator; a GPU's exp may flip a near tie
        assert got["train_accuracy"] == pytest.approx(
            want["train_accuracy"], abs=0 if SIMULATOR else 0.02
        )
    np.testing.assert_allclose(
        cuda_ops.to_numpy(model.params), reference.params, rtol=1e-5, atol=1e-6
    )
    assert not np.allclose(reference.params, xpmlp.MLP(sizes, backend="numpy", **options).params)


def test_every_model_call_runs_with_the_backend_active(cuda_ops, tmp_path) -> None:
    """The whole public API gives the numbers of the NumPy backend; under the simulator a
    kernel launched outside ``backend.activate()`` raises, so this also shows that fit,
    the learner steps, prediction, weights, save/load and explain run inside it."""
    from xpmlp.teach.explain import (
        PerceptronExample,
        compare,
        compare_perceptron,
        parse_file,
        trace,
        trace_perceptron,
    )

    rng = np.random.default_rng(3)
    X = rng.standard_normal((50, 4)).astype("float32")
    y = rng.integers(0, 3, size=50)
    reference = xpmlp.MLP([4, 6, 3], backend="numpy", seed=2)
    model = xpmlp.MLP([4, 6, 3], backend=cuda_ops, seed=2)
    model.set_weights(reference.get_weights())
    batch_losses = []
    for m in (reference, model):
        m.fit(X, y, epochs=1, batch_size=16, shuffle=False)
        batch_losses.append(m.backward(m.forward(X[:10]), y[:10]).loss)
        m.step()
    assert batch_losses[1] == pytest.approx(batch_losses[0], rel=1e-5)
    for (W, b), (W_ref, b_ref) in zip(model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_allclose(W, W_ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b, b_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        model.predict_proba(X), reference.predict_proba(X), rtol=1e-5, atol=1e-6
    )
    assert model.score(X, y) == pytest.approx(reference.score(X, y), abs=0.05)
    loaded = xpmlp.load_model(xpmlp.save_model(model, tmp_path / "model"), backend=cuda_ops)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    examples = parse_file(
        Path(__file__).resolve().parents[1] / "data" / "examples" / "worked_examples.json"
    )
    for example in examples:
        if isinstance(example, PerceptronExample):  # the learning rule runs on the host
            n_checked, mismatches = compare_perceptron(
                example, trace_perceptron(example, cuda_ops, "float64"), 1e-9
            )
        else:
            n_checked, mismatches = compare(example, trace(example, cuda_ops, "float64"), 1e-9)
        assert n_checked > 0 and mismatches == []
