"""The fused CPU training step (``kernels/fused_cpu.py``, ``NumpyBackend.fused_step``) trains
exactly as the per-op path does, and as the reference backend does to rounding.

Every test fits two (or three) models from the same seed on the same data: on
``NumpyBackend(fused=True)`` (one compiled call per batch), on ``NumpyBackend(fused=False)``
(``forward_pass``, ``backward_pass``, ``apply_gradients``: the per-op kernels) and, where
said, on the reference ``Backend``. The fused step runs the same kernels in the same order
and calls the same BLAS function with the same operands, so its parameters, optimizer state
and history equal the per-op path's bit for bit: for every hidden activation, output
pairing and optimizer, in float32 and float64, with L1, weight decay, both clippings, a
schedule, a short last batch, any depth, and a diverging run (dropout and batch norm:
``tests/test_step_equivalence.py``), with hidden layers of different activations and kinds.
Models it does not cover (a subclass overriding an op) keep the per-op path, and
``step_kind`` says why.
"""

from __future__ import annotations

import numpy as np
import pytest
from kernel_cases import DTYPES, OPTIMIZER_NAMES, OUTPUT_PAIRS, seed, targets
from xpmlp.kernels import fused_cpu

from xpmlp import MLP
from xpmlp.backends.base import Backend
from xpmlp.backends.numpy_backend import FusedStep, NumpyBackend
from xpmlp.core.activations import ACTIVATIONS
from xpmlp.core.errors import StepFallbackWarning, TrainingDivergedError
from xpmlp.core.losses import LOSSES
from xpmlp.machine import blas
from xpmlp.machine.threads import available_cores, cpu_threads

#: an MKL provider made here holds OpenBLAS at one thread: put it back after each test
pytestmark = pytest.mark.usefixtures("openblas_threads_restored")

HIDDEN = ACTIVATIONS.names(lambda a: a.hidden and a.elementwise and a.differentiable)
N_IN, ROWS, BATCH = 6, 45, 16  # 3 batches per epoch, the last one short


def _data(act: str, loss: str, n_out: int, dtype: str, key: object) -> tuple[np.ndarray, ...]:
    rng = seed("fused", key, act, loss, dtype)
    X = rng.standard_normal((ROWS, N_IN)).astype(dtype)
    if act == "softmax":
        return X, rng.integers(0, n_out, ROWS)
    if act == "sigmoid" and LOSSES[loss].targets == "probabilities":
        return X, rng.integers(0, 2, ROWS)
    return X, targets(loss, (ROWS, n_out), dtype, rng)


def _fit(backend, sizes, X, y, epochs=2, **options):
    fit_options = {k: options.pop(k) for k in ("lr_schedule",) if k in options}
    model = MLP(sizes, backend=backend, seed=3, **options)
    model.fit(X, y, epochs=epochs, batch_size=BATCH, **fit_options)
    return model


def _assert_same(got: MLP, want: MLP) -> None:
    if got.n_outputs == 1:
        # numpy.matmul takes another BLAS routine (gemv) where a matrix is a vector: the
        # fused step's gemm agrees with it to the last bit or two, not bit for bit
        tol = 1e-5 if got.dtype == np.float32 else 1e-13
        np.testing.assert_allclose(got.params, want.params, rtol=tol, atol=tol)
        np.testing.assert_allclose(got.optimizer.state, want.optimizer.state, rtol=tol, atol=tol)
        return
    np.testing.assert_array_equal(got.params, want.params)
    np.testing.assert_array_equal(got.optimizer.state, want.optimizer.state)
    assert got.optimizer.t == want.optimizer.t
    drop = ("seconds", "samples_per_s", "step")  # timings and the step's kind may differ
    assert [{k: v for k, v in h.items() if k not in drop} for h in got.history_] == [
        {k: v for k, v in h.items() if k not in drop} for h in want.history_
    ]


def _compare(sizes, X, y, reference=False, **options) -> MLP:
    fused = _fit(NumpyBackend(fused=True), sizes, X, y, **options)
    assert fused.backend.fused_step(fused) is not None  # the fused path really ran
    _assert_same(fused, _fit(NumpyBackend(fused=False), sizes, X, y, **options))
    if reference:
        ref = _fit(Backend(np), sizes, X, y, **options)
        tol = 2e-4 if fused.dtype == np.float32 else 1e-10
        np.testing.assert_allclose(fused.params, ref.params, rtol=tol, atol=tol)
    return fused


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", HIDDEN)
def test_every_hidden_activation(hidden, dtype) -> None:
    X, y = _data("softmax", "cross_entropy", 3, dtype, "hidden")
    _compare(
        [N_IN, 5, 4, 3],
        X,
        y,
        reference=True,
        activation=hidden,
        dtype=dtype,
        optimizer="momentum",
        learning_rate=0.05,
    )


# float32 (the default) for every pairing; float64 for the first and the last pairing (each
# variant compiles a fused step: the float64 forms of the others are the per-op kernels',
# held to the reference in tests/test_kernels_cpu.py, stitched by the same code)
@pytest.mark.parametrize(
    ("act", "loss", "dtype"),
    [(a, lo, "float32") for a, lo in OUTPUT_PAIRS]
    + [(*OUTPUT_PAIRS[0], "float64"), (*OUTPUT_PAIRS[-1], "float64")],
    ids=[f"{a}+{lo}-float32" for a, lo in OUTPUT_PAIRS]
    + [f"{a}+{lo}-float64" for a, lo in (OUTPUT_PAIRS[0], OUTPUT_PAIRS[-1])],
)
def test_every_output_pairing(act, loss, dtype) -> None:
    n_out = 1 if act == "sigmoid" and LOSSES[loss].targets == "probabilities" else 3
    X, y = _data(act, loss, n_out, dtype, "pair")
    _compare(
        [N_IN, 5, n_out],
        X,
        y,
        reference=True,
        activation="tanh",
        output_activation=act,
        loss=loss,
        dtype=dtype,
        optimizer="sgd",
        learning_rate=0.01,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_every_optimizer(name, dtype) -> None:
    X, y = _data("softmax", "cross_entropy", 3, dtype, "optimizer")
    _compare([N_IN, 5, 3], X, y, reference=True, optimizer=name, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "options",
    [
        {"l1": 1e-3, "weight_decay": 1e-2},
        {"clip_grad_norm": 0.05},
        {"clip_grad_value": 1e-3, "clip_grad_norm": 0.5, "l1": 1e-4},
        {"lr_schedule": "cosine"},
    ],
    ids=["l1+l2", "norm", "value+norm+l1", "cosine"],
)
def test_gradient_options_and_schedules(options, dtype) -> None:
    X, y = _data("softmax", "cross_entropy", 3, dtype, "options")
    _compare([N_IN, 5, 3], X, y, epochs=3, optimizer="adam", dtype=dtype, **options)


@pytest.mark.parametrize("sizes", [[N_IN, 3], [N_IN, 7, 6, 5, 3]], ids=["no-hidden", "deep"])
def test_any_depth(sizes) -> None:
    X, y = _data("softmax", "cross_entropy", 3, "float32", "depth")
    _compare(sizes, X, y, reference=True, optimizer="rmsprop")


def test_a_diverging_run_stops_as_the_per_op_path_does() -> None:
    """The loss kernel's skip flag stops the fused updates at the same batch: the same error
    and the same last finite parameters."""
    X, y = _data("identity", "squared_error", 3, "float32", "diverge")
    X = X * 1e18
    models = []
    for fused in (True, False):
        model = MLP(
            [N_IN, 5, 3],
            loss="squared_error",
            optimizer="sgd",
            learning_rate=10.0,
            backend=NumpyBackend(fused=fused),
            seed=3,
        )
        with pytest.raises(TrainingDivergedError) as info:
            model.fit(X, y, epochs=5, batch_size=BATCH)
        models.append((model, str(info.value)))
    (fused, fused_error), (per_op, per_op_error) = models
    assert fused_error == per_op_error
    np.testing.assert_array_equal(fused.params, per_op.params)
    assert np.isfinite(fused.params).all()


def test_predictions_after_fused_training_match() -> None:
    X, y = _data("softmax", "cross_entropy", 3, "float32", "predict")
    fused = _compare([N_IN, 8, 3], X, y)
    per_op = _fit(NumpyBackend(fused=False), [N_IN, 8, 3], X, y)
    np.testing.assert_array_equal(fused.predict_proba(X), per_op.predict_proba(X))


@pytest.mark.parametrize(
    "options", [{"dropout": 0.2}, {"batch_norm": [True, False]}], ids=["dropout", "batch-norm"]
)
def test_dropout_and_batch_norm_take_the_fused_step(options) -> None:
    model = MLP([N_IN, 5, 4, 3], backend=NumpyBackend(fused=True), seed=3, **options)
    assert isinstance(model.backend.fused_step(model), FusedStep)
    assert model.backend.step_kind(model) == ("fused-cpu", None)


@pytest.mark.skipif(available_cores() < 2, reason="needs 2 cores to cut products among threads")
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_step_in_one_block_cuts_its_products_as_the_openblas_route_cuts_them(
    monkeypatch, dtype
) -> None:
    """On NumPy's OpenBLAS route a fused step that is not cut into row blocks (batch norm)
    cuts its big products into parts of their rows on Numba's threads (``gemm_parts``), where
    the route's ``matmul`` cuts them on the per-op path (``MatmulProvider.row_cuts``, here for
    any product of 4 rows or more): the same bits as the per-op path, the same model as whole
    products to rounding, and in deterministic mode the same bits at 1 and 2 threads."""
    provider = blas.MatmulProvider("openblas", None, threads=2)
    if blas.openblas_threads() is None:
        pytest.skip("NumPy's BLAS is not an OpenBLAS with its thread functions")
    monkeypatch.setattr(blas, "_provider", [provider])
    monkeypatch.setattr(blas, "SPLIT_MIN_WORK", 1)
    monkeypatch.setattr(blas, "SPLIT_MIN_ROWS", 2)
    sizes = [N_IN, 7, 5, 3]
    X, y = _data("softmax", "cross_entropy", 3, dtype, "cuts")
    with cpu_threads(2):
        cut = _compare(sizes, X, y, batch_norm=True)
    step = cut.backend.fused_step(cut)
    assert step is not None and step.row_blocks(cut.workspace(BATCH)) is None  # one block
    forward, dW, dA = step.cuts(BATCH)
    assert [list(c) for c in forward] == [[0, 8, 16]] * 3
    assert [list(c) for c in dW] == [[0, 3, 7], [0, 2, 5], [0, 3]]  # 3 rows: whole
    with monkeypatch.context() as whole_products:
        whole_products.setattr(blas, "SPLIT_MIN_WORK", 1 << 62)
        with cpu_threads(2):
            whole = _fit(NumpyBackend(fused=True), sizes, X, y, batch_norm=True)
    tol = 2e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(cut.params, whole.params, rtol=tol, atol=tol)
    deterministic = []
    for threads in (1, 2):
        with cpu_threads(threads):
            deterministic.append(
                _fit(NumpyBackend(), sizes, X, y, batch_norm=True, deterministic=True).params
            )
    np.testing.assert_array_equal(deterministic[0], deterministic[1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "options",
    [
        {"activation": ["relu", "tanh", "sigmoid"]},
        {"activation": ["tanh", "relu", "gelu"], "dropout": [0.3, 0.0, 0.2]},
        {"activation": ["sigmoid", "relu", "tanh"], "batch_norm": [True, False, True]},
        {
            "activation": ["relu", "tanh", "relu"],
            "dropout": [0.0, 0.25, 0.1],
            "batch_norm": [False, True, False],
        },
    ],
    ids=["mixed", "mixed+dropout", "mixed+batch-norm", "dropout+batch-norm-by-layer"],
)
def test_hidden_layers_of_different_activations_and_kinds_take_the_fused_step(
    options, dtype
) -> None:
    """Each hidden layer binds its own kernels (the step is generated from ``step_plan``):
    per-layer activations and kinds train on the fused step with the per-op path's bits,
    and the reference backend's numbers."""
    X, y = _data("softmax", "cross_entropy", 3, dtype, ("mixed", *options))
    model = MLP([N_IN, 6, 5, 4, 3], backend=NumpyBackend(fused=True), seed=3, **options)
    assert model.backend.step_kind(model) == ("fused-cpu", None)
    fused = _compare(
        [N_IN, 6, 5, 4, 3],
        X,
        y,
        reference=True,
        dtype=dtype,
        optimizer="momentum",
        learning_rate=0.05,
        **options,
    )
    assert fused.step_kind_ == "fused-cpu"


def test_the_fused_step_is_the_default_and_can_be_turned_off() -> None:
    model = MLP([N_IN, 5, 3], backend="numpy", seed=3)
    assert isinstance(model.backend.fused_step(model), FusedStep)
    off = MLP([N_IN, 5, 3], backend=NumpyBackend(fused=False), seed=3)
    assert off.backend.fused_step(off) is None


@pytest.mark.parametrize("char", ["f", "d"])
@pytest.mark.parametrize(("ta", "tb"), [(False, True), (True, False), (False, False)])
def test_gemm_is_numpy_matmul_bit_for_bit(char, ta, tb) -> None:
    """The BLAS call of the fused step: numpy.matmul's library and operands, so its bits."""
    from numba import njit
    from xpmlp.kernels.compiler import Target

    from xpmlp import blas

    cblas = blas.numpy_cblas_gemm(char)
    assert cblas is not None
    rng = seed("gemm", char, ta, tb)
    a = rng.standard_normal((37, 19) if not ta else (19, 37)).astype(char)
    b = rng.standard_normal((23, 19) if tb else (19, 23)).astype(char)
    out = np.full((37, 23), np.nan, char)
    gemm = Target("test", njit, njit).device(fused_cpu.gemm, char)  # as the step's callee
    gemm(cblas, a, b, out, ta, tb)
    want = np.matmul(a.T if ta else a, b.T if tb else b)
    np.testing.assert_array_equal(out, want)
    empty = np.full((37, 23), np.nan, char)
    gemm(cblas, np.empty((37, 0), char), np.empty((0, 23), char), empty, False, False)
    np.testing.assert_array_equal(empty, 0)


def test_a_subclass_that_overrides_an_op_keeps_the_per_op_path() -> None:
    """The fused step skips the backend's ops; a subclass that changes one gets them called."""
    calls = []

    class Watching(NumpyBackend):
        def optimizer_step(self, *args, **kwargs) -> None:
            calls.append(1)
            super().optimizer_step(*args, **kwargs)

    class Plain(NumpyBackend):
        pass

    X, y = _data("softmax", "cross_entropy", 3, "float32", "subclass")
    with pytest.warns(StepFallbackWarning, match="Watching overrides optimizer_step"):
        model = _fit(Watching(), [N_IN, 5, 3], X, y)
    assert model.backend.fused_step(model) is None and len(calls) == 2 * 3
    assert model.step_kind_ == "reference"
    plain = _fit(Plain(), [N_IN, 5, 3], X, y)
    assert isinstance(plain.backend.fused_step(plain), FusedStep)
    _assert_same(plain, model)


def test_with_mkl_every_product_of_the_fused_step_goes_to_mkl(monkeypatch) -> None:
    """With MKL the library of every product (``xpmlp.machine.blas``), the fused step calls MKL for
    each of them, as the per-op path does: the same bits."""
    from xpmlp import blas

    mkl = blas.load_mkl()
    if mkl is None:
        pytest.skip(f"MKL is not available: {blas.mkl_unavailable_reason()}")
    X, y = _data("softmax", "cross_entropy", 3, "float32", "mkl")
    models = []
    for fused in (True, False):
        provider = blas.MatmulProvider("mkl", mkl)
        monkeypatch.setattr(blas, "_provider", [provider])
        models.append(_fit(NumpyBackend(fused=fused), [N_IN, 5, 4, 3], X, y))
    fused, per_op = models
    step = fused.backend.fused_step(fused)
    assert step is not None and step.cblas is mkl.cblas_gemm("f")
    assert blas.numpy_matmul not in per_op.backend._matmul.__self__._routes.values()
    _assert_same(fused, per_op)


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_parallel_kernels_of_large_batches(dtype, monkeypatch) -> None:
    """Above ``PARALLEL_MIN_ELEMENTS`` (patched to 0 here) the fused step binds the parallel
    forms of the elementwise kernels, as the per-op path does."""
    from xpmlp.kernels import cpu

    monkeypatch.setattr(cpu, "PARALLEL_MIN_ELEMENTS", 0)
    X, y = _data("softmax", "cross_entropy", 3, dtype, "parallel")
    fused = _compare([N_IN, 5, 4, 3], X, y, optimizer="adam", dtype=dtype, clip_grad_norm=0.1)
    names = [k.py_func.__qualname__ for k in fused.backend.fused_step(fused)._kernels.values()]
    assert len(names) == 1 and len(names[0]) < 64
