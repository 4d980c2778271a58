"""L1, gradient clipping by value and by global norm: the ops, the kernels and the options.

- ``grad_sum_squares`` (the squared global norm, a compensated device reduction) by the CPU
  kernels (serial and parallel chunks), the reference and, marked ``cudasim``, the CUDA
  kernels in Numba's simulator, against an exact sum;
- ``optimizer_step`` with l1, clip_value and max_norm on, for every optimizer rule: kernel
  and reference to the same numbers; skip still leaves everything untouched; each option
  does what it says (value clamp, norm scale clamped at 1, L1 on the weights only);
- the options on the objects and the model: validation, describe()/from_description, saving.

The 25-step float64 comparisons with ``torch.nn.utils.clip_grad_norm_`` /
``clip_grad_value_`` and an L1 term added to p.grad are in ``tests/test_optimizers.py``.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from kernel_cases import (
    DTYPES,
    OPTIMIZER_NAMES,
    assert_close,
    optimizer_inputs,
    run_grad_sum_squares,
    run_optimizer_step,
    seed,
)
from xpmlp.kernels import cpu

import xpmlp
from xpmlp.backends.base import Backend
from xpmlp.backends.numpy_backend import NumpyBackend
from xpmlp.core.errors import ParameterError
from xpmlp.core.optim import SGD, Adagrad, Adam, RMSprop, from_description, make_optimizer

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
REFERENCE = Backend()
SIZES = [1, 1000, 2 * cpu.CHUNK_ELEMENTS + 3]  # the last one takes the parallel kernels
CLIP_VALUES = [math.inf, 0.5]


def exact_sum_squares(g: np.ndarray, clip_value: float) -> tuple[float, float]:
    """sum of clamp(g)^2 in exact arithmetic (math.fsum of float64 squares, exact for float32
    inputs and to 1 ulp for float64) and the size of its terms."""
    c = np.clip(g.astype(np.float64), -clip_value, clip_value)
    return math.fsum(c * c), float((c * c).sum())


# ---------------------------------------------------------------------- the reduction
@pytest.mark.parametrize("clip_value", CLIP_VALUES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
def test_grad_sum_squares_is_the_compensated_sum(size, dtype, clip_value) -> None:
    g = (3 * seed("sumsq", size, dtype).standard_normal(size)).astype(dtype)
    exact, scale = exact_sum_squares(g, clip_value)
    got = run_grad_sum_squares(NumpyBackend(), g, clip_value)
    assert got.dtype == dtype
    assert_close(got[0], exact, ulps=2, what="kernel")  # compensated: a few ulp of the sum
    ref = run_grad_sum_squares(REFERENCE, g, clip_value)
    assert_close(ref[0], exact, ulps=4, scale=scale * math.log2(size + 1), what="reference")


def test_grad_sum_squares_beats_a_plain_float32_sum() -> None:
    """1e6 squares of 0.1 (float32): the running float32 sum is off by far more than the
    kernel's 2 ulp."""
    g = np.full(10**6, 0.1, np.float32)
    exact, _ = exact_sum_squares(g, math.inf)
    got = run_grad_sum_squares(NumpyBackend(), g, math.inf)[0]
    running = np.float32(0)
    squares = g * g
    for x in squares[:200_000]:  # enough for the drift to show
        running = np.float32(running + x)
    assert abs(float(running) - math.fsum(squares[:200_000].astype(np.float64))) > 1e-3
    assert_close(got, exact, ulps=2, what="compensated")


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the reference
@pytest.mark.parametrize("size", [5, 1000, 2 * cpu.CHUNK_ELEMENTS + 3])
def test_an_overflowing_sum_is_inf_and_a_nan_stays_nan(size) -> None:
    g = np.ones(size, np.float32)
    g[size // 2] = 3e30  # its square overflows float32
    for be in (NumpyBackend(), REFERENCE):
        assert run_grad_sum_squares(be, g, math.inf)[0] == np.inf
        assert run_grad_sum_squares(be, g, 2.0)[0] == pytest.approx(size + 3, rel=1e-6)
    g[size // 2] = np.nan
    assert np.isnan(run_grad_sum_squares(NumpyBackend(), g, math.inf)[0])


@pytest.mark.parametrize("clip_value", CLIP_VALUES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_parallel_sum_does_not_depend_on_the_thread_count(dtype, clip_value) -> None:
    import numba

    g = seed("threads", dtype).standard_normal(3 * cpu.CHUNK_ELEMENTS + 7).astype(dtype)
    kernel = cpu.CPU.kernel(cpu.grad_sum_squares_parallel, dtype, options={"parallel": True})
    before, results = numba.get_num_threads(), []
    try:
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            out = np.zeros(1, dtype)
            kernel(g, np.dtype(dtype).type(clip_value), out)
            results.append(out[0])
    finally:
        numba.set_num_threads(before)
    assert results[0] == results[1]


@pytest.mark.cudasim
@pytest.mark.parametrize("clip_value", CLIP_VALUES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [1, 7, 300])
def test_cuda_grad_sum_squares_in_the_simulator(monkeypatch, size, dtype, clip_value) -> None:
    from xpmlp.kernels import cuda as kcuda

    from xpmlp.backends.cuda_sim import SimulatedCudaBackend

    monkeypatch.setattr(kcuda, "THREADS_PER_BLOCK", 8)
    monkeypatch.setattr(kcuda, "MAX_BLOCKS", 2)  # 16 threads for up to 32 partial sums
    monkeypatch.setattr(kcuda, "NORM_PARTIALS", 32)
    g = (3 * seed("cuda-sumsq", size, dtype).standard_normal(size)).astype(dtype)
    exact, _ = exact_sum_squares(g, clip_value)
    got = run_grad_sum_squares(SimulatedCudaBackend(), g, clip_value)
    assert_close(got[0], exact, ulps=3, what="cuda")


# ---------------------------------------------------------------------- the step
def regularizers(
    dtype, norm_sq: float, max_norm: float = 1.0, clip_value: float = 0.5, l1: float = 0.01
) -> dict:
    return dict(
        l1=l1, clip_value=clip_value, max_norm=max_norm, sum_squares=np.array([norm_sq], dtype)
    )


def step_cases() -> list:
    """(backend, size): the NumPy kernels at every size (the last one parallel), the CUDA
    kernels in the simulator (one Python thread per CUDA thread) at the small ones."""
    cases = [pytest.param(NumpyBackend(), size, id=f"numpy-{size}") for size in SIZES]
    if SIMULATOR:
        from xpmlp.backends.cuda_sim import SimulatedCudaBackend

        cases += [
            pytest.param(
                SimulatedCudaBackend(), size, id=f"cuda-sim-{size}", marks=pytest.mark.cudasim
            )
            for size in SIZES[:2]
        ]
    return cases


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("be", "size"), step_cases())
@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_step_with_every_option_matches_the_reference(be, name, size, dtype) -> None:
    opt, p, g, state, hyper = optimizer_inputs(name, size, dtype, seed("reg", name, size))
    n_decay = (size + 1) // 2
    norm_sq = 4.0 * size  # ||g|| = 2 sqrt(n): the norm clipping scales by about 1 / (2 sqrt(n))
    options = regularizers(dtype, norm_sq)
    p_ref, s_ref = run_optimizer_step(REFERENCE, opt, p, g, state, hyper, 0.3, n_decay, **options)
    p_got, s_got = run_optimizer_step(be, opt, p, g, state, hyper, 0.3, n_decay, **options)
    assert_close(p_got, p_ref, what=f"{name} p")
    assert_close(s_got, s_ref, what=f"{name} state")
    plain, _ = run_optimizer_step(be, opt, p, g, state, hyper, 0.3, n_decay)
    assert not np.array_equal(p_got, plain)  # the options changed the step
    skipped = run_optimizer_step(be, opt, p, g, state, hyper, 0.3, n_decay, skip=1.0, **options)
    np.testing.assert_array_equal(skipped[0], p)
    np.testing.assert_array_equal(skipped[1], state)


@pytest.mark.parametrize("be", [NumpyBackend(), REFERENCE], ids=["numpy", "reference"])
def test_each_option_is_what_it_says_on_sgd(be) -> None:
    """With SGD (lr 1) the step is the gradient the rule saw: check each option's formula."""
    opt = make_optimizer("sgd", 1.0)
    rng = seed("sgd-options")
    n, n_w = 200, 120
    p = rng.standard_normal(n)
    p[:3] = 0.0  # sign(0) = 0: L1 adds nothing there
    g = 2 * rng.standard_normal(n)
    state = np.zeros((0, n))
    hyper = opt.hyperparameters(1, 1.0)

    def seen(**options) -> np.ndarray:
        new_p, _ = run_optimizer_step(be, opt, p, g, state, hyper, 0.0, n_w, **options)
        return p - new_p

    close = dict(rtol=0, atol=1e-14)  # p - (p - g') recovers g' to the rounding of p - g'
    np.testing.assert_allclose(seen(clip_value=0.5), np.clip(g, -0.5, 0.5), **close)
    plain = seen()
    norm = float(np.sqrt(g @ g))
    for max_norm in (0.5 * norm, 2 * norm):
        got = seen(max_norm=max_norm, sum_squares=np.array([norm * norm]))
        coef = min(1.0, max_norm / (norm + 1e-6))
        np.testing.assert_allclose(got, g * coef, **close)
        if coef == 1.0:  # clamped at 1: exactly the unclipped step
            np.testing.assert_array_equal(got, plain)
        else:
            assert np.abs(got - plain).max() > 0.1
    got = seen(l1=0.25)
    np.testing.assert_allclose(got[:n_w], g[:n_w] + 0.25 * np.sign(p[:n_w]), **close)
    np.testing.assert_array_equal(got[:3], plain[:3])
    np.testing.assert_array_equal(got[n_w:], plain[n_w:])  # biases: no L1
    # value clipping first, then the norm (over the clamped values), then L1
    clamped = np.clip(g, -0.5, 0.5)
    cnorm = float(np.sqrt(clamped @ clamped))
    got = seen(clip_value=0.5, max_norm=0.1 * cnorm, sum_squares=np.array([cnorm**2]), l1=0.25)
    want = clamped * (0.1 * cnorm / (cnorm + 1e-6))
    want[:n_w] += 0.25 * np.sign(p[:n_w])
    np.testing.assert_allclose(got, want, **close)


def test_optimizer_step_object_computes_the_norm_on_the_device() -> None:
    """Optimizer.step with clip_grad_norm runs grad_sum_squares into its one-element array."""
    model = xpmlp.MLP(
        [3, 4, 2],
        optimizer="sgd",
        learning_rate=1.0,
        clip_grad_norm=1e-3,
        dtype="float64",
        backend="numpy",
        seed=1,
    )
    X, y = seed("obj").standard_normal((6, 3)), np.array([0, 1, 0, 1, 1, 0])
    p0 = np.array(model.params)
    model.backward(model.forward(X), y)
    g = np.array(model.grads)
    model.step()
    assert model.optimizer.sum_squares[0] == pytest.approx(g @ g, rel=1e-14)
    step = p0 - np.array(model.params)
    assert np.sqrt(step @ step) == pytest.approx(
        1e-3 * np.sqrt(g @ g) / (np.sqrt(g @ g) + 1e-6), rel=1e-12
    )


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_a_nan_loss_still_skips_the_step_with_clipping_on() -> None:
    model = xpmlp.MLP(
        [2, 3, 1],
        output_activation="identity",
        loss="squared_error",
        optimizer="adam",
        l1=0.1,
        clip_grad_norm=1.0,
        clip_grad_value=0.5,
        backend="numpy",
        seed=0,
    )
    p0 = np.array(model.params)
    model.backward(model.forward(np.array([[1.0, 2.0]])), np.array([[3e38]]))  # loss overflows
    model.step()
    np.testing.assert_array_equal(model.params, p0)


# ---------------------------------------------------------------------- the options
OPTION_CLASSES = [SGD, Adam, RMSprop, Adagrad]


@pytest.mark.parametrize("cls", OPTION_CLASSES)
def test_every_optimizer_object_takes_the_options_and_describes_them(cls) -> None:
    opt = cls(l1=1e-4, clip_grad_norm=5.0, clip_grad_value=0.1)
    assert (opt.l1, opt.clip_grad_norm, opt.clip_grad_value) == (1e-4, 5.0, 0.1)
    description = opt.describe()
    assert {
        "l1": 1e-4,
        "clip_grad_norm": 5.0,
        "clip_grad_value": 0.1,
    }.items() <= description.items()
    again = from_description(description)
    assert type(again) is cls and again.describe() == description
    plain = cls()
    assert not {"l1", "clip_grad_norm", "clip_grad_value"} & set(plain.describe())


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_the_model_keywords_reach_every_registry_optimizer(name) -> None:
    model = xpmlp.MLP(
        [2, 3, 2], optimizer=name, l1=0.01, clip_grad_norm=2.0, clip_grad_value=0.3, backend="numpy"
    )
    opt = model.optimizer
    assert (opt.l1, opt.clip_grad_norm, opt.clip_grad_value) == (0.01, 2.0, 0.3)
    assert from_description(opt.describe()).describe() == opt.describe()


def test_a_saved_model_keeps_its_options(tmp_path) -> None:
    model = xpmlp.MLP([2, 3, 2], optimizer=RMSprop(l1=0.02, clip_grad_norm=1.5), backend="numpy")
    path = xpmlp.save_model(model, tmp_path / "m.npz")
    loaded = xpmlp.load_model(path, backend="numpy")
    assert loaded.optimizer.describe() == model.optimizer.describe()
    assert loaded.optimizer.clip_grad_value is None


@pytest.mark.parametrize(
    ("keyword", "value", "expected"),
    [
        ("l1", -0.1, ">= 0"),
        ("l1", float("nan"), "finite"),
        ("l1", "0.1", "finite number"),
        ("clip_grad_norm", 0.0, "> 0"),
        ("clip_grad_norm", -1.0, "> 0"),
        ("clip_grad_norm", float("inf"), "finite"),
        ("clip_grad_norm", True, "number"),
        ("clip_grad_value", -0.5, "> 0"),
        ("clip_grad_value", [1.0], "number"),
    ],
)
def test_bad_options_are_refused_naming_them(keyword, value, expected) -> None:
    for make in (
        lambda: Adam(**{keyword: value}),
        lambda: xpmlp.MLP([2, 3, 2], backend="numpy", **{keyword: value}),
        lambda: from_description({"name": "sgd", keyword: value}),
    ):
        with pytest.raises(ParameterError) as info:
            make()
        message = str(info.value)
        assert keyword in message and repr(value) in message and expected in message
