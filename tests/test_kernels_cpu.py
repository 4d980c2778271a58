"""The Numba CPU kernels, the reference ``Backend`` and the naive loops of tests/naive.py agree.

Every kernel op of ``NumpyBackend`` is run three ways -- the reference backend
(plain NumPy, the spec), the NumPy backend on its serial kernels, and the NumPy
backend forced onto its chunked parallel kernels -- and each result is held to
the naive float64 loops of ``naive.py``, per dtype (float32 and float64), over
odd shapes (1 row, 1 column, more rows than ``CHUNK_ROWS`` and not a multiple
of it), non-contiguous views, in-place updates and extreme values.
"""

from __future__ import annotations

import functools
import zlib

import naive
import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from xpmlp.kernels import cpu
from xpmlp.kernels.rows import (
    N_STATS,
    STAT_BATCH,
    STAT_BATCH_LOSS_SUM,
    STAT_CORRECT,
    STAT_COUNT,
    STAT_DIVERGED_AT,
    STAT_LOSS_SUM,
)
from xpmlp.kernels.scalar import ACTIVATION_CODES

from xpmlp import activations, losses
from xpmlp.backends.base import Backend
from xpmlp.backends.numpy_backend import NumpyBackend

DTYPES = (np.float32, np.float64)
# (rtol, atol) of one elementwise result against the float64 naive loops
TOL = {np.dtype(np.float32): (2e-5, 2e-6), np.dtype(np.float64): (1e-12, 1e-13)}
# (rtol, atol per summed term) of a sum over many elements (the loss statistics)
SUM_TOL = {np.dtype(np.float32): (1e-4, 1e-5), np.dtype(np.float64): (1e-11, 1e-12)}

C = cpu.CHUNK_ROWS
SHAPES = [(1, 1), (1, 7), (5, 1), (C, 1), (2 * C + 1, 67), (3 * C + 7, 5)]  # (129, 67) at C=64
ELEMENTWISE = ("identity", "sigmoid", "tanh", "relu", "hardlimit")
FORWARD = (*ELEMENTWISE, "softmax")
BACKWARD = ("identity", "sigmoid", "tanh", "relu")  # hardlimit and softmax: not backpropagated
OUTPUT_PAIRS = [("softmax", "cross_entropy")] + [
    (act, loss)
    for act in ("identity", "sigmoid", "tanh", "relu")
    for loss in ("squared_error", "half_squared_error", "binary_cross_entropy")
]
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")
IMPLS = ("reference", "numpy", "numpy-parallel")




def make_backend(kind: str, monkeypatch: pytest.MonkeyPatch) -> Backend:
    """The reference backend, or the NumPy one on its serial or its parallel kernels."""
    if kind == "reference":
        return Backend()
    if kind == "numpy-parallel":  # every op with a parallel form takes it, whatever the size
        monkeypatch.setattr(cpu, "PARALLEL_MIN_ELEMENTS", 0)
    return NumpyBackend()


@pytest.fixture(params=IMPLS)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Backend:
    return make_backend(request.param, monkeypatch)


@pytest.fixture(params=IMPLS[:2])
def output_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Backend:
    """loss_output_delta has no parallel form."""
    return make_backend(request.param, monkeypatch)


def assert_close(actual, expected, dtype, scale=1.0, tol=TOL) -> None:
    """|actual - expected| <= rtol |expected| + atol * scale elementwise (scale may be an array),
    with the dtype's (rtol, atol); NaN matches NaN and infinities match exactly."""
    rtol, atol = tol[np.dtype(dtype)]
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.broadcast_to(np.asarray(expected, dtype=np.float64), actual.shape)
    with np.errstate(invalid="ignore"):
        ok = (np.abs(actual - expected) <= rtol * np.abs(expected) + atol * np.asarray(scale)) | (
            actual == expected) | (np.isnan(actual) & np.isnan(expected))
    if not ok.all():
        where = np.argwhere(~ok)[:5].tolist()
        raise AssertionError(
            f"{int((~ok).sum())} of {ok.size} elements differ beyond rtol={rtol}, atol={atol} "
            f"(x{np.max(scale):g}); first at {where}: actual "
            f"{actual[~ok][:5].tolist()}, expected {expected[~ok][:5].tolist()}"
        )


def column_sum_scale(delta: np.ndarray) -> float:
    """Size of the terms a column sum adds up (for the atol of db)."""
    return max(1.0, float(np.abs(delta).sum(axis=0).max()))


def derivative_scale(activation: str, A: np.ndarray, delta: np.ndarray) -> np.ndarray | float:
    """Extra atol for a delta through tanh' = 1 - a^2: as |a| -> 1 it cancels, and in the
    arrays' dtype it carries a relative error of about eps / (1 - a^2) (inherent, not a bug)."""
    if activation != "tanh":
        return 1.0
    one_minus = 1.0 - A.astype(np.float64) ** 2
    safe = np.where(one_minus > 0, one_minus, 1.0)
    return 1.0 + np.where(one_minus > 0, np.abs(delta) / safe, 0.0)


def rng_for(*key: object) -> np.random.Generator:
    """A generator seeded by the test case, the same on every run."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def activate_naive(Z: np.ndarray, activation: str, dtype) -> np.ndarray:
    """A = f(Z) in the given dtype, from the naive loops (Z already includes the bias)."""
    return naive.bias_activation(Z, np.zeros(Z.shape[1]), activation)[1].astype(dtype)


# ---------------------------------------------------------------------- forward


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("activation", FORWARD)
def test_bias_activation(backend, activation, shape, dtype) -> None:
    rng = rng_for("forward", activation, shape)
    Z = (3 * rng.standard_normal(shape)).astype(dtype)
    b = rng.standard_normal(shape[1]).astype(dtype)
    Zb, A_expected = naive.bias_activation(Z, b, activation)
    A = np.full(shape, np.nan, dtype=dtype)
    backend.bias_activation(Z, b, A, activation)
    assert Z.dtype == dtype and A.dtype == dtype
    assert_close(Z, Zb, dtype)
    assert_close(A, A_expected, dtype)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the reference's
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "logits",
    [[1e4, 1e4 - 1, -1e4, 0.0], [3e38, -3e38], [-1000.0, 1000.0, 0.0], [88.0, 89.0, 90.0]],
)
def test_softmax_of_large_logits_is_finite(backend, logits, dtype) -> None:
    Z = np.array([logits, logits[::-1]], dtype=dtype)
    expected = naive.bias_activation(Z, np.zeros(Z.shape[1]), "softmax")[1]
    A = np.empty_like(Z)
    backend.bias_activation(Z, np.zeros(Z.shape[1], dtype), A, "softmax")
    assert np.isfinite(A).all()
    assert_close(A, expected, dtype)
    assert_close(A.sum(axis=1), [1.0, 1.0], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ELEMENTWISE)
def test_elementwise_activations_of_extreme_values(backend, activation, dtype) -> None:
    big = float(np.finfo(dtype).max)
    Z = np.array([[-1000.0, 1000.0, -100.0, 100.0, 0.0, -0.0, -big, big]], dtype=dtype)
    Zb, expected = naive.bias_activation(Z, np.zeros(Z.shape[1]), activation)
    A = np.empty_like(Z)
    backend.bias_activation(Z, np.zeros(Z.shape[1], dtype), A, activation)
    if activation in ("sigmoid", "tanh", "hardlimit"):
        assert np.isfinite(A).all()
        assert ((A >= -1) & (A <= 1)).all()
    assert_close(A, expected, dtype)


@pytest.mark.parametrize("activation", FORWARD)
def test_nan_in_z_propagates_like_the_reference(backend, activation) -> None:
    """f(NaN) is NaN as in the spec (np.maximum(NaN, 0) is NaN), so divergence stays visible;
    hardlimit maps NaN to 0 (NaN >= 0 is false) in the spec too."""
    Z = np.array([[np.nan, 1.0, -1.0]])
    expected = naive.bias_activation(Z, np.zeros(3), activation)[1]
    A = np.empty_like(Z)
    backend.bias_activation(Z, np.zeros(3), A, activation)
    np.testing.assert_array_equal(np.isnan(A), np.isnan(expected))
    assert_close(A, expected, np.float64)


@pytest.mark.parametrize("activation", FORWARD)
def test_bias_activation_on_non_contiguous_views(backend, activation) -> None:
    """Z and A transposed views (F-ordered), b a strided view: right values, Z's memory updated."""
    rng = rng_for("forward-views", activation)
    m, n = 2 * C + 3, 6
    Z_mem = rng.standard_normal((n, m))
    b_mem = rng.standard_normal(2 * n)
    A_mem = np.full((n, m), np.nan)
    Z, b, A = Z_mem.T, b_mem[::2], A_mem.T
    assert not Z.flags.c_contiguous and not b.flags.c_contiguous
    Zb, expected = naive.bias_activation(Z, b, activation)
    backend.bias_activation(Z, b, A, activation)
    assert_close(Z_mem.T, Zb, np.float64)
    assert_close(A_mem.T, expected, np.float64)


@settings(max_examples=30, deadline=None)
@given(
    data=st.data(),
    m=st.integers(1, 3 * C),
    n=st.integers(1, 9),
    activation=st.sampled_from(FORWARD),
    parallel=st.booleans(),
)
def test_bias_activation_kernel_matches_reference_property(data, m, n, activation, parallel):
    values = st.floats(-60, 60, width=32)
    Z = data.draw(hnp.arrays(np.float32, (m, n), elements=values))
    b = data.draw(hnp.arrays(np.float32, (n,), elements=values))
    Z_ref, A_ref = Z.copy(), np.empty_like(Z)
    Backend().bias_activation(Z_ref, b, A_ref, activation)
    A = np.empty_like(Z)
    kernel = cpu.bias_activation_parallel if parallel else cpu.bias_activation
    kernel(Z, b, A, ACTIVATION_CODES[activation])
    np.testing.assert_array_equal(Z, Z_ref)  # one float32 addition: bit for bit
    np.testing.assert_allclose(A, A_ref, rtol=1e-5, atol=1e-6)


F32_BIG = float(np.float32(3e38))


@settings(max_examples=40, deadline=None)
@given(Z=hnp.arrays(np.float32, st.tuples(st.integers(1, 70), st.integers(1, 12)),
                    elements=st.floats(-F32_BIG, F32_BIG, width=32)))
def test_softmax_rows_are_distributions_property(Z):
    A = np.empty_like(Z)
    NumpyBackend().bias_activation(Z, np.zeros(Z.shape[1], np.float32), A, "softmax")
    assert np.isfinite(A).all()
    assert ((A >= 0) & (A <= 1)).all()
    np.testing.assert_allclose(A.sum(axis=1), 1.0, rtol=0, atol=1e-6 * Z.shape[1])


# ---------------------------------------------------------------------- backward


@pytest.mark.parametrize("in_place", [False, True], ids=["delta", "delta-is-dA"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("activation", BACKWARD)
def test_activation_backward(backend, activation, shape, dtype, in_place) -> None:
    rng = rng_for("backward", activation, shape)
    A = activate_naive(2 * rng.standard_normal(shape), activation, dtype)
    dA = rng.standard_normal(shape).astype(dtype)
    delta_expected, db_expected = naive.activation_backward(dA, A, activation)
    delta = dA if in_place else np.full(shape, np.nan, dtype=dtype)
    db = np.full(shape[1], np.nan, dtype=dtype)
    backend.activation_backward(dA, A, delta, db, activation)
    assert delta.dtype == dtype and db.dtype == dtype
    cond = derivative_scale(activation, A, delta_expected)
    assert_close(delta, delta_expected, dtype, scale=cond)
    db_scale = column_sum_scale(delta_expected) + np.max(np.sum(cond * np.ones(shape), axis=0))
    assert_close(db, db_expected, dtype, scale=db_scale)


@pytest.mark.parametrize("activation", BACKWARD)
def test_activation_backward_on_non_contiguous_views(backend, activation) -> None:
    rng = rng_for("backward-views", activation)
    m, n = 2 * C + 3, 5
    dA = rng.standard_normal((n, m)).T  # F-ordered
    A = activate_naive(rng.standard_normal((2 * m, n)), activation, np.float64)[::2]  # row stride
    delta_mem = np.full((n, m), np.nan)
    db_mem = np.full(3 * n, np.nan)
    delta_expected, db_expected = naive.activation_backward(dA, A, activation)
    backend.activation_backward(dA, A, delta_mem.T, db_mem[::3], activation)
    assert_close(delta_mem.T, delta_expected, np.float64)
    assert_close(db_mem[::3], db_expected, np.float64, scale=column_sum_scale(delta_expected))
    assert np.isnan(db_mem[1::3]).all()  # the gaps between db's elements are not touched


@settings(max_examples=30, deadline=None)
@given(
    data=st.data(),
    m=st.integers(1, 3 * C),
    n=st.integers(1, 9),
    activation=st.sampled_from(BACKWARD),
)
def test_activation_backward_db_is_the_column_sum_property(data, m, n, activation):
    values = st.floats(-10, 10, width=32)
    dA = data.draw(hnp.arrays(np.float32, (m, n), elements=values))
    A = data.draw(hnp.arrays(np.float32, (m, n), elements=st.floats(-1, 1, width=32)))
    for kernel in (cpu.activation_backward, cpu.activation_backward_parallel):
        delta, db = np.empty_like(dA), np.empty(n, np.float32)
        kernel(dA, A, delta, db, ACTIVATION_CODES[activation])
        expected = naive.activation_backward(dA, A, activation)[0]
        np.testing.assert_allclose(delta, expected, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(db, delta.astype(np.float64).sum(axis=0), rtol=1e-5,
                                   atol=1e-5 * max(1.0, float(np.abs(delta).sum())))


# ---------------------------------------------------------------------- output layer


def output_case(activation: str, loss: str, shape, dtype, rng: np.random.Generator):
    """Z, A = f(Z), targets Y for the pair (one-hot for cross_entropy, 0/1 and soft for BCE)."""
    m, n = shape
    Z = (2 * rng.standard_normal(shape)).astype(dtype)
    A = activate_naive(Z, activation, dtype)
    if loss == "cross_entropy":
        Y = np.eye(n, dtype=dtype)[rng.integers(0, n, size=m)]
    elif loss == "binary_cross_entropy":
        Y = np.where(rng.random(shape) < 0.5, rng.integers(0, 2, shape), rng.random(shape))
    else:
        Y = rng.normal(0.5, 1.0, size=shape)
    return Z, A, Y.astype(dtype)


def run_output(backend, Z, A, Y, activation, loss, batch, stats):
    delta = np.full(Z.shape, np.nan, dtype=Z.dtype)
    db = np.full(Z.shape[1], np.nan, dtype=Z.dtype)
    backend.loss_output_delta(Z, A, Y, delta, db, stats, activation, loss, batch)
    return delta, db


def check_output(Z, A, Y, delta, db, stats, stats_before, activation, loss, batch, dtype):
    eps = float(np.finfo(dtype).eps)
    d_exp, db_exp, st_exp = naive.loss_output_delta(
        Z, A, Y, stats_before, activation, loss, batch, eps
    )
    assert delta.dtype == dtype and db.dtype == dtype and stats.dtype == dtype
    cond = derivative_scale(activation, A, d_exp)
    assert_close(delta, d_exp, dtype, scale=cond)
    db_scale = column_sum_scale(d_exp) + np.max(np.sum(cond * np.ones(Z.shape), axis=0))
    assert_close(db, db_exp, dtype, scale=db_scale)
    n_terms = Z.size + abs(float(np.abs(Z).sum()))  # atol of the loss sums: per term, per |z|
    for k in (STAT_LOSS_SUM, STAT_BATCH_LOSS_SUM):
        assert_close(stats[k], st_exp[k], dtype, scale=n_terms, tol=SUM_TOL)
    assert stats[STAT_CORRECT] == st_exp[STAT_CORRECT]
    assert stats[STAT_COUNT] == st_exp[STAT_COUNT]
    assert stats[STAT_DIVERGED_AT] == st_exp[STAT_DIVERGED_AT]
    assert stats[STAT_BATCH] == st_exp[STAT_BATCH] == batch


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("activation", "loss"), OUTPUT_PAIRS)
def test_loss_output_delta(output_backend, activation, loss, shape, dtype) -> None:
    rng = rng_for("output", activation, loss, shape)
    Z, A, Y = output_case(activation, loss, shape, dtype, rng)
    stats = np.array([1.5, 2.0, 3.0, 0.0, 99.0, 6.0], dtype=dtype)  # an epoch under way
    before = stats.copy()
    delta, db = run_output(output_backend, Z, A, Y, activation, loss, 7, stats)
    check_output(Z, A, Y, delta, db, stats, before, activation, loss, 7, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("activation", "loss"), OUTPUT_PAIRS)
def test_loss_output_delta_on_non_contiguous_views(output_backend, activation, loss, dtype):
    rng = rng_for("output-views", activation, loss)
    m, n = 2 * C + 1, 3
    Z, A, Y = (np.asfortranarray(a) for a in output_case(activation, loss, (m, n), dtype, rng))
    stats = np.zeros(N_STATS, dtype)
    delta_mem = np.full((n, m), np.nan, dtype)
    db = np.empty(n, dtype)
    output_backend.loss_output_delta(Z, A, Y, delta_mem.T, db, stats, activation, loss, 0)
    check_output(Z, A, Y, delta_mem.T, db, stats, np.zeros(N_STATS), activation, loss, 0, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("activation", "loss", "Z", "Y"),
    [
        ("sigmoid", "binary_cross_entropy", [[-1000.0, 1000.0, -1000.0, 1000.0]],
         [[0.0, 1.0, 1.0, 0.0]]),
        ("identity", "binary_cross_entropy", [[0.0, 1.0, 0.0, 1.0]], [[0.0, 1.0, 1.0, 0.0]]),
        ("relu", "binary_cross_entropy", [[-5.0, 1.0, 0.0, 7.0]], [[0.0, 1.0, 1.0, 0.0]]),
        ("tanh", "binary_cross_entropy", [[-50.0, 50.0, -50.0, 50.0]], [[0.0, 1.0, 1.0, 0.0]]),
        ("softmax", "cross_entropy", [[1e4, -1e4, 0.0, 1e4 - 1]], [[0.0, 1.0, 0.0, 0.0]]),
        ("sigmoid", "squared_error", [[-1000.0, 1000.0, 0.0, 88.0]], [[1.0, 0.0, 0.5, 1.0]]),
    ],
    ids=["sigmoid-bce-logits-1000", "bce-a-0-and-1-clipped", "relu-bce-a-0", "tanh-bce",
         "softmax-ce-large-logits", "sigmoid-se-saturated"],
)
def test_loss_output_delta_of_extreme_values_stays_finite(
    output_backend, activation, loss, Z, Y, dtype
) -> None:
    Z = np.array(Z * 3, dtype=dtype)  # three rows
    Y = np.array(Y * 3, dtype=dtype)
    A = activate_naive(Z, activation, dtype)
    stats = np.zeros(N_STATS, dtype)
    delta, db = run_output(output_backend, Z, A, Y, activation, loss, 0, stats)
    assert np.isfinite(delta).all() and np.isfinite(db).all() and np.isfinite(stats).all()
    assert stats[STAT_DIVERGED_AT] == 0
    check_output(Z, A, Y, delta, db, stats, np.zeros(N_STATS), activation, loss, 0, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("activation", "loss"), OUTPUT_PAIRS)
def test_nan_in_z_sets_the_divergence_flag_once(output_backend, activation, loss, dtype):
    rng = rng_for("nan", activation, loss)
    Z, A, Y = output_case(activation, loss, (9, 3), dtype, rng)
    Z[4, 1] = np.nan
    A = activate_naive(Z, activation, dtype)  # f(NaN) is NaN for every pair here
    stats = np.zeros(N_STATS, dtype)
    run_output(output_backend, Z, A, Y, activation, loss, 4, stats)
    assert stats[STAT_DIVERGED_AT] == 5
    assert np.isnan(stats[STAT_BATCH_LOSS_SUM])
    run_output(output_backend, Z, A, Y, activation, loss, 6, stats)  # a later bad batch
    assert stats[STAT_DIVERGED_AT] == 5
    Zf, Af, Yf = output_case(activation, loss, (9, 3), dtype, rng)  # a later good batch
    run_output(output_backend, Zf, Af, Yf, activation, loss, 8, stats)
    assert stats[STAT_DIVERGED_AT] == 5
    assert stats[STAT_COUNT] == 27


# ---------------------------------------------------------------------- optimizers

HYPER = {"lr": 0.05, "momentum": 0.9, "beta1": 0.8, "beta2": 0.95, "eps": 1e-6, "decay": 0.3}
SIZES = [1, 1000, 2 * cpu.CHUNK_ELEMENTS + 3]


def n_decay_for(size: int) -> int:
    """Decay on a prefix that ends inside the second parallel chunk when there is one."""
    return cpu.CHUNK_ELEMENTS + 5 if size > cpu.CHUNK_ELEMENTS else (size + 1) // 2


@functools.cache
def optimizer_case(kind: str, size: int, dtype) -> tuple[dict, tuple]:
    """Inputs (p, g, state...) and the naive result, computed once per case."""
    rng = np.random.default_rng([OPTIMIZERS.index(kind), size, np.dtype(dtype).itemsize])
    arrays = {
        "p": rng.standard_normal(size).astype(dtype),
        "g": rng.standard_normal(size).astype(dtype),
        "m": rng.standard_normal(size).astype(dtype),
        "v": rng.uniform(0.1, 1.0, size).astype(dtype),  # a second moment: positive
    }
    h, nd = HYPER, n_decay_for(size)
    p, g, m, v = (arrays[k] for k in "pgmv")
    if kind == "sgd":
        expected = (naive.sgd_step(p, g, h["lr"], h["decay"], nd),)
    elif kind == "adam":
        expected = naive.adam_step(p, g, m, v, h["lr"], h["beta1"], h["beta2"], h["eps"],
                                   h["decay"], nd, 3)
    else:
        expected = naive.sgd_momentum_step(p, g, v, h["lr"], h["momentum"], h["decay"], nd,
                                           kind == "nesterov")
    return arrays, expected


def run_optimizer(backend, kind: str, arrays: dict, n_decay: int, stats) -> tuple:
    """One step; returns the updated arrays in the order of the naive result."""
    p, g, m, v = (arrays[k].copy() for k in "pgmv")
    h = HYPER
    if kind == "sgd":
        backend.sgd_step(p, g, h["lr"], h["decay"], n_decay, stats)
        return (p,)
    if kind == "adam":
        backend.adam_step(p, g, m, v, h["lr"], h["beta1"], h["beta2"], h["eps"], h["decay"],
                          n_decay, 3, stats)
        return p, m, v
    backend.sgd_momentum_step(p, g, v, h["lr"], h["momentum"], h["decay"], n_decay,
                              kind == "nesterov", stats)
    return p, v


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", OPTIMIZERS)
def test_optimizer_step(backend, kind, size, dtype) -> None:
    arrays, expected = optimizer_case(kind, size, dtype)
    stats = np.zeros(N_STATS, dtype)
    got = run_optimizer(backend, kind, arrays, n_decay_for(size), stats)
    for actual, want in zip(got, expected, strict=True):
        assert actual.dtype == dtype
        assert_close(actual, want, dtype)


@pytest.mark.parametrize("n_decay", [0, 1, 999, 1000])
@pytest.mark.parametrize("kind", OPTIMIZERS)
def test_decay_applies_only_to_the_prefix(backend, kind, n_decay) -> None:
    """Decay on p[:n_decay]: the result equals the naive step with that prefix, and differs
    from the no-decay step exactly there."""
    arrays, _ = optimizer_case(kind, 1000, np.float64)
    got = run_optimizer(backend, kind, arrays, n_decay, np.zeros(N_STATS))
    h, (p, g, m, v) = HYPER, (arrays[k] for k in "pgmv")
    if kind == "sgd":
        want = naive.sgd_step(p, g, h["lr"], h["decay"], n_decay)
    elif kind == "adam":
        want = naive.adam_step(p, g, m, v, h["lr"], h["beta1"], h["beta2"], h["eps"],
                               h["decay"], n_decay, 3)[0]
    else:
        want = naive.sgd_momentum_step(p, g, v, h["lr"], h["momentum"], h["decay"], n_decay,
                                       kind == "nesterov")[0]
    assert_close(got[0], want, np.float64)
    no_decay = run_optimizer(backend, kind, arrays, 0, np.zeros(N_STATS))[0]
    changed = got[0] != no_decay
    assert changed[:n_decay].all() and not changed[n_decay:].any()


@pytest.mark.parametrize("kind", OPTIMIZERS)
@pytest.mark.parametrize("size", [SIZES[0], SIZES[2]])
def test_optimizers_leave_everything_unchanged_after_divergence(backend, kind, size) -> None:
    arrays, _ = optimizer_case(kind, size, np.float32)
    stats = np.zeros(N_STATS, np.float32)
    stats[STAT_DIVERGED_AT] = 3
    got = run_optimizer(backend, kind, arrays, n_decay_for(size), stats)
    names = {"sgd": "p", "adam": "pmv"}.get(kind, "pv")
    for actual, name in zip(got, names, strict=True):
        np.testing.assert_array_equal(actual, arrays[name])


# ---------------------------------------------------------------------- gather


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_gather_rows(backend, shape, dtype) -> None:
    rng = rng_for("gather", shape)
    X = rng.standard_normal((shape[0] + 3, shape[1])).astype(dtype)
    idx = rng.integers(0, X.shape[0], size=shape[0])  # with repeats, as a permutation's slice
    out = np.full(shape, np.nan, dtype)
    backend.gather_rows(X, idx, out)
    np.testing.assert_array_equal(out, naive.gather_rows(X, idx))


@pytest.mark.parametrize(
    "layout", ["X-column-slice", "X-transposed", "idx-strided", "out-transposed"]
)
def test_gather_rows_on_non_contiguous_views(backend, layout) -> None:
    rng = rng_for("gather-views", layout)
    m, n, rows = 2 * C + 5, 4, 300
    X = rng.standard_normal((rows, 2 * n))[:, ::2] if layout == "X-column-slice" else (
        rng.standard_normal((n, rows)).T if layout == "X-transposed"
        else rng.standard_normal((rows, n)))
    idx = rng.permutation(rows)[: 2 * m : 2] if layout == "idx-strided" else rng.permutation(
        rows)[:m]
    out_mem = np.full((n, m), np.nan) if layout == "out-transposed" else np.full((m, n), np.nan)
    out = out_mem.T if layout == "out-transposed" else out_mem
    backend.gather_rows(X, idx, out)
    np.testing.assert_array_equal(out, naive.gather_rows(X, idx))


# ---------------------------------------------------------------------- determinism and dtypes


@pytest.mark.parametrize("activation", BACKWARD)
def test_db_is_bit_identical_across_calls(backend, activation) -> None:
    rng = rng_for("determinism", activation)
    shape = (5 * C + 3, 33)
    A = activate_naive(rng.standard_normal(shape), activation, np.float32)
    dA = rng.standard_normal(shape).astype(np.float32)
    dbs = []
    for _ in range(2):
        db = np.empty(shape[1], np.float32)
        backend.activation_backward(dA, A, np.empty_like(dA), db, activation)
        dbs.append(db)
    np.testing.assert_array_equal(dbs[0], dbs[1])
    outs = []
    for _ in range(2):
        Y = np.eye(shape[1], dtype=np.float32)[np.arange(shape[0]) % shape[1]]
        outs.append(run_output(backend, dA, A, Y, "sigmoid", "squared_error", 0,
                               np.zeros(N_STATS, np.float32))[1])
    np.testing.assert_array_equal(outs[0], outs[1])


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 Numba threads")
def test_parallel_db_does_not_depend_on_the_thread_count() -> None:
    rng = np.random.default_rng(7)
    shape = (17 * C + 5, 40)
    dA = rng.standard_normal(shape).astype(np.float32)
    A = rng.random(shape).astype(np.float32)
    results = []
    before = numba.get_num_threads()
    try:
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            db = np.empty(shape[1], np.float32)
            cpu.activation_backward_parallel(dA, A, np.empty_like(dA), db, 1)
            results.append(db)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(results[0], results[1])


class Float32Spy(np.ndarray):
    """An ndarray subclass that records the dtype of every array NumPy makes from it."""

    seen: set = set()

    def __array_finalize__(self, obj) -> None:
        Float32Spy.seen.add(self.dtype)


def spy(a: np.ndarray) -> np.ndarray:
    return a.view(Float32Spy)


def run_forward_ops(ref: Backend, rng: np.random.Generator, m: int, n: int) -> None:
    f = np.float32
    for act in FORWARD:
        Z, A = spy(rng.standard_normal((m, n)).astype(f)), spy(np.empty((m, n), f))
        ref.bias_activation(Z, spy(np.ones(n, f)), A, act)
    ref.gather_rows(spy(rng.standard_normal((m, n)).astype(f)), np.arange(m)[::-1],
                    spy(np.empty((m, n), f)))


def run_backward_ops(ref: Backend, rng: np.random.Generator, m: int, n: int) -> None:
    f = np.float32
    for act in BACKWARD:
        ref.activation_backward(spy(np.ones((m, n), f)), spy(rng.random((m, n)).astype(f)),
                                spy(np.empty((m, n), f)), spy(np.empty(n, f)), act)


def run_output_ops(ref: Backend, rng: np.random.Generator, m: int, n: int) -> None:
    f = np.float32
    for act, loss in OUTPUT_PAIRS:
        Z, A, Y = output_case(act, loss, (m, n), f, rng)
        ref.loss_output_delta(spy(Z), spy(A), spy(Y), spy(np.empty((m, n), f)),
                              spy(np.empty(n, f)), spy(np.zeros(N_STATS, f)), act, loss, 0)


def run_optimizer_ops(ref: Backend, rng: np.random.Generator, m: int, n: int) -> None:
    for kind in OPTIMIZERS:
        arrays = {k: spy(v) for k, v in optimizer_case(kind, 1000, np.float32)[0].items()}
        run_optimizer(ref, kind, arrays, 10, spy(np.zeros(N_STATS, np.float32)))




@pytest.mark.parametrize(
    "ops",
    [
        run_forward_ops,
        run_backward_ops,
        run_output_ops,
        run_optimizer_ops,
    ],
    ids=["forward", "backward", "output", "optimizers"],
)
def test_reference_backend_creates_no_float64_from_float32(ops) -> None:
    """The spec itself: no intermediate array of an op on float32 arrays is float64."""
    Float32Spy.seen = set()
    ops(Backend(), np.random.default_rng(3), 7, 4)
    assert {d for d in Float32Spy.seen if d.kind == "f"} == {np.dtype(np.float32)}


@pytest.mark.parametrize("activation", FORWARD)
def test_reference_formulas_keep_float32(activation) -> None:
    Z = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    A = activations.activate(np, activation, Z)
    assert A.dtype == np.float32
    if activation in BACKWARD:
        assert activations.derivative(np, activation, A).dtype == np.float32
    for act, loss in OUTPUT_PAIRS:
        if act == activation:
            Y = np.eye(4, dtype=np.float32)[[0, 1, 2]]
            assert losses.loss_terms(np, loss, act, Z, A, Y).dtype == np.float32
            assert losses.output_delta(np, loss, act, A, Y).dtype == np.float32


def test_shapes_cover_the_chunking() -> None:
    """The shapes above straddle CHUNK_ROWS (a guard if the constant changes)."""
    big = [s for s in SHAPES if s[0] > C]
    assert big and all(s[0] % C for s in big)
    assert SIZES[-1] > cpu.CHUNK_ELEMENTS and SIZES[-1] % cpu.CHUNK_ELEMENTS
