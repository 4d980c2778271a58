"""The fused CPU step trains as the per-op reference path does, bit for bit, for every factor
that changes what a step computes: each hidden activation, dropout on or off, batch norm on
or off (and both in one layer), each optimizer (sgd, momentum, nesterov, adam, rmsprop plain,
centered and with momentum, adagrad), L1 and L2 penalties, clipping by norm and by value,
float32 and float64.

Every case fits one model on ``NumpyBackend(fused=True)`` (one compiled call per batch) and
one on ``NumpyBackend(fused=False)`` (``forward_pass``, ``backward_pass``,
``apply_gradients``), from the same seed on the same data, for six steps (two epochs of
three batches, the last one short), and requires the same bits in the parameters, the
optimizer's state and step count, batch norm's running estimates, the dropout step count and
the history (timings and the step's kind aside).

The full product of the factors is 6 x 5 x 8 x 4 x 2 = 1920 fits, and each distinct
(activation, optimizer rule, dtype, pattern of layer kinds) compiles a fused step (seconds
each). ``CASES`` is a covering design instead: every value of every factor appears, each
dropout and batch-norm pattern meets several activations and optimizers, and each gradient
option meets several patterns. The same cases hold the fused step to the reference backend
(array code, the oracle) to 1e-12 in float64 and 1e-5 relative in float32, and the CUDA
backend's recorded step too (under Numba's CUDA simulator, marker ``cudasim``).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from xpmlp import MLP
from xpmlp.backends.base import Backend
from xpmlp.backends.cuda_probe import simulator_enabled
from xpmlp.backends.numpy_backend import FusedStep, NumpyBackend
from xpmlp.core.optim import SGD, Adagrad, Adam, RMSprop

SIZES = [6, 7, 5, 3]  # two hidden layers: per-layer rates and flags
ROWS, BATCH = 45, 16  # 3 batches per epoch, the last one short

#: the optimizers, each made afresh per model
OPTIMIZERS = {
    "sgd": lambda **g: SGD(0.05, **g),
    "momentum": lambda **g: SGD(0.05, momentum=0.9, **g),
    "nesterov": lambda **g: SGD(0.05, momentum=0.9, nesterov=True, **g),
    "adam": lambda **g: Adam(1e-2, **g),
    "rmsprop": lambda **g: RMSprop(1e-2, **g),
    "rmsprop-centered": lambda **g: RMSprop(1e-2, centered=True, **g),
    "rmsprop-momentum": lambda **g: RMSprop(1e-2, momentum=0.5, **g),
    "adagrad": lambda **g: Adagrad(0.05, **g),
}
#: dropout and batch norm per hidden layer
PATTERNS = {
    "plain": {},
    "dropout": {"dropout": [0.3, 0.1]},
    "batch-norm": {"batch_norm": True},
    # layer 0: batch norm and dropout in one kernel; layer 1: dropout alone
    "bn+dropout": {"batch_norm": [True, False], "dropout": [0.2, 0.4]},
    # layer 0: plain; layer 1: batch norm alone
    "bn-second": {"batch_norm": [False, True], "dropout": [0.0, 0.0]},
}
#: penalties and clipping (the optimizer's keywords)
GRADIENTS = {
    "none": {},
    "l1+l2": {"l1": 1e-3, "weight_decay": 1e-2},
    "clip-norm": {"clip_grad_norm": 0.05},
    "clip-value": {"clip_grad_value": 1e-2},
    "clip-both": {"clip_grad_value": 1e-2, "clip_grad_norm": 0.3, "l1": 1e-4},
}

#: (hidden activation, optimizer, pattern, gradient options, dtype)
CASES = [
    ("relu", "sgd", "plain", "none", "float32"),
    ("relu", "adam", "bn+dropout", "clip-both", "float32"),
    ("tanh", "momentum", "dropout", "l1+l2", "float32"),
    ("tanh", "adam", "batch-norm", "clip-norm", "float64"),
    ("sigmoid", "nesterov", "bn+dropout", "clip-value", "float32"),
    ("leaky_relu", "rmsprop", "batch-norm", "l1+l2", "float32"),
    ("gelu", "rmsprop-centered", "dropout", "clip-norm", "float32"),
    ("identity", "rmsprop-momentum", "bn-second", "clip-both", "float32"),
    ("relu", "adagrad", "dropout", "clip-value", "float64"),
    ("gelu", "sgd", "bn-second", "l1+l2", "float64"),
    ("leaky_relu", "adagrad", "bn+dropout", "none", "float32"),
    ("sigmoid", "momentum", "plain", "clip-norm", "float32"),
]


#: a test run for every case of ``CASES``
each_case = pytest.mark.parametrize(
    ("act", "optimizer", "pattern", "gradients", "dtype"),
    CASES,
    ids=["-".join(case) for case in CASES],
)


def _case_data(case: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The case's data: ROWS samples of SIZES[0] features and their classes."""
    rng = np.random.default_rng([7, CASES.index(case)])
    X = rng.standard_normal((ROWS, SIZES[0])).astype(case[-1])
    return X, rng.integers(0, SIZES[-1], ROWS)


def _fit(
    fused: bool | Backend,
    act: str,
    optimizer: str,
    pattern: str,
    gradients: str,
    dtype: str,
    X: np.ndarray,
    y: np.ndarray,
    comm: object = None,
) -> MLP:
    """The case's model after two epochs on ``NumpyBackend(fused=fused)`` (or on ``fused``,
    a backend), trained through the communicator ``comm`` if one is given."""
    model = MLP(
        SIZES,
        activation=act,
        optimizer=OPTIMIZERS[optimizer](**GRADIENTS[gradients]),
        dtype=dtype,
        backend=fused if isinstance(fused, Backend) else NumpyBackend(fused=fused),
        seed=7,
        **PATTERNS[pattern],
    )
    model.fit(X, y, epochs=2, batch_size=BATCH, comm=comm)
    return model


@functools.cache
def _fused_fit(case: tuple[str, ...]) -> MLP:
    """The case's model fitted on the fused step, once per case for the tests that read it
    (none changes it)."""
    return _fit(True, *case, *_case_data(case))


def _history(model: MLP) -> list[dict[str, object]]:
    return [
        {k: v for k, v in r.items() if k not in ("seconds", "samples_per_s", "step")}
        for r in model.history_
    ]


def test_the_cases_cover_every_value_of_every_factor() -> None:
    for i, values in enumerate(
        (
            ("relu", "tanh", "sigmoid", "leaky_relu", "gelu", "identity"),
            OPTIMIZERS,
            PATTERNS,
            GRADIENTS,
            ("float32", "float64"),
        )
    ):
        assert {case[i] for case in CASES} == set(values)


@each_case
def test_the_fused_step_trains_as_the_per_op_path(
    act, optimizer, pattern, gradients, dtype
) -> None:
    X, y = _case_data((act, optimizer, pattern, gradients, dtype))
    fused = _fused_fit((act, optimizer, pattern, gradients, dtype))
    per_op = _fit(False, act, optimizer, pattern, gradients, dtype, X, y)
    assert isinstance(fused.backend.fused_step(fused), FusedStep)  # the fused step ran
    assert (fused.step_kind_, per_op.step_kind_) == ("fused-cpu", "reference")
    assert fused.params.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(fused.params, per_op.params)
    np.testing.assert_array_equal(fused.optimizer.state, per_op.optimizer.state)
    np.testing.assert_array_equal(fused.running_mean, per_op.running_mean)
    np.testing.assert_array_equal(fused.running_var, per_op.running_var)
    assert fused.optimizer.t == per_op.optimizer.t == 6
    assert fused.dropout_steps == per_op.dropout_steps == (6 if any(fused.dropout) else 0)
    assert _history(fused) == _history(per_op)
    if any(fused.batch_norm):  # the running estimates moved
        assert not np.array_equal(fused.running_var, np.ones_like(fused.running_var))
    np.testing.assert_array_equal(fused.predict_proba(X), per_op.predict_proba(X))


def _compared_arrays(model: MLP) -> dict[str, np.ndarray]:
    """The arrays held to the reference loop: every layer's W; each batch-normalized layer's
    gamma, beta and running variance; and, in a model without batch norm, every b and
    nothing else. With batch norm, the bias of a batch-normalized layer (and of a plain
    layer under it whose activation is the identity) has a gradient of exactly zero (the
    normalization removes the batch mean), so what reaches it is rounding, which Adam,
    RMSprop and Adagrad scale up to steps of the learning rate's size; the running mean
    follows those biases."""
    arrays = {}
    for l, layer in enumerate(model.layers):
        arrays[f"W{l}"] = layer.W
        if layer.norm is not None:
            arrays |= {
                f"gamma{l}": layer.norm.gamma,
                f"beta{l}": layer.norm.beta,
                f"running_var{l}": layer.norm.running_var,
            }
        elif not any(model.batch_norm):
            arrays[f"b{l}"] = layer.b
    return arrays


@each_case
def test_the_fused_step_trains_as_the_reference_loop(
    act, optimizer, pattern, gradients, dtype
) -> None:
    """The reference backend (``Backend``: array code, the oracle) after the same six steps:
    1e-12 in float64, 1e-5 relative to each array's largest entry in float32
    (``_compared_arrays``)."""
    X, y = _case_data((act, optimizer, pattern, gradients, dtype))
    fused = _fused_fit((act, optimizer, pattern, gradients, dtype))
    assert fused.step_kind_ == "fused-cpu"
    _assert_as_the_reference_loop(fused, act, optimizer, pattern, gradients, dtype, X, y)


@each_case
def test_distributed_training_takes_the_fused_steps_bits(
    act, optimizer, pattern, gradients, dtype
) -> None:
    """Through a communicator (one rank): the fused step's gradient-only form, the mean over
    the ranks and the update give the bits of the undistributed fused step."""
    import xpmlp.distributed as xd

    case = (act, optimizer, pattern, gradients, dtype)
    X, y = _case_data(case)
    joined = _fit(True, *case, X, y, comm=xd.init("single"))
    alone = _fused_fit(case)
    assert joined.step_kind_ == "fused-cpu"
    np.testing.assert_array_equal(joined.params, alone.params)
    np.testing.assert_array_equal(joined.optimizer.state, alone.optimizer.state)
    np.testing.assert_array_equal(joined.running_var, alone.running_var)


def _assert_as_the_reference_loop(model: MLP, *case: object) -> None:
    """``model`` holds the arrays (``_compared_arrays``) of the reference backend's model
    of the same case after the same six steps: 1e-12 in float64, 1e-5 of each array's
    largest entry in float32."""
    reference = _fit(Backend(np), *case)  # type: ignore[arg-type]
    assert reference.step_kind_ == "reference"
    want = _compared_arrays(reference)
    for name, got in _compared_arrays(model).items():
        # float32: 1e-5 of each array's largest magnitude (rounding accumulates in the
        # small entries of an array: an absolute error, not one relative to each entry)
        got = model.backend.to_numpy(got)
        atol = 1e-5 * float(np.abs(want[name]).max()) if model.dtype == np.float32 else 1e-12
        np.testing.assert_allclose(got, want[name], rtol=0.0, atol=atol, err_msg=name)


@pytest.mark.cudasim
@pytest.mark.skipif(
    not simulator_enabled(), reason="needs NUMBA_ENABLE_CUDASIM=1 (run with -m cudasim)"
)
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the dropout hash
@each_case
def test_the_recorded_cuda_step_trains_as_the_reference_loop(
    act, optimizer, pattern, gradients, dtype
) -> None:
    """The CUDA backend's recorded step (its logic under Numba's simulator: the step a CUDA
    graph replays, with every per-batch value read on the device) against the reference
    loop, as the fused CPU step is held to it."""
    import xpmlp.distributed as xd
    from xpmlp.backends.cuda_sim import SimulatedCudaBackend

    X, y = _case_data((act, optimizer, pattern, gradients, dtype))
    backend = SimulatedCudaBackend(graphs=True)
    recorded = _fit(backend, act, optimizer, pattern, gradients, dtype, X, y)
    assert recorded.step_kind_ == "cuda-graph"
    assert backend.epoch_runner(recorded).recordings == 1
    _assert_as_the_reference_loop(recorded, act, optimizer, pattern, gradients, dtype, X, y)
    # with a communicator whose mean the recording holds (as NCCL's): the same bits
    joined = _fit(
        SimulatedCudaBackend(graphs=True),
        *(act, optimizer, pattern, gradients, dtype),
        X,
        y,
        comm=xd.init("single"),
    )
    assert joined.step_kind_ == "cuda-graph"
    np.testing.assert_array_equal(joined.params, recorded.params)


def test_a_wrong_dropout_key_is_caught() -> None:
    """The comparison can fail: a fused step whose masks are one step late differs from the
    per-op path (so the equality above is not vacuous)."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((ROWS, SIZES[0])).astype("float32")
    y = rng.integers(0, 3, ROWS)
    case = ("relu", "sgd", "dropout", "none", "float32")
    per_op = _fit(False, *case, X, y)
    late = MLP(
        SIZES,
        activation="relu",
        optimizer=OPTIMIZERS["sgd"](),
        seed=7,
        backend=NumpyBackend(fused=True),
        **PATTERNS["dropout"],
    )
    late.dropout_steps = 1
    late.fit(X, y, epochs=2, batch_size=BATCH)
    assert late.step_kind_ == "fused-cpu"
    assert not np.array_equal(late.params, per_op.params)


@pytest.mark.parametrize("pattern", ["plain", "dropout"])
def test_each_layer_takes_the_backward_kernel_the_per_op_path_takes(pattern, monkeypatch) -> None:
    """Above ``PARALLEL_MIN_ELEMENTS`` (patched to 2000 here) a layer's backward kernel is
    the parallel one, whose db adds the sums of 64-row chunks: with batches of 200 rows, the
    16-unit layer (3200 values) takes it and the 5-unit one (1000) does not, in both paths."""
    from xpmlp.kernels import cpu

    monkeypatch.setattr(cpu, "PARALLEL_MIN_ELEMENTS", 2000)
    rng = np.random.default_rng(11)
    X = rng.standard_normal((300, 6)).astype("float32")
    y = rng.integers(0, 3, 300)
    models = []
    for fused in (True, False):
        model = MLP(
            [6, 16, 5, 3],
            backend=NumpyBackend(fused=fused),
            seed=7,
            dropout=0.0 if pattern == "plain" else [0.3, 0.2],
        )
        model.fit(X, y, epochs=2, batch_size=200)
        models.append(model)
    fused, per_op = models
    assert fused.step_kind_ == "fused-cpu"
    np.testing.assert_array_equal(fused.params, per_op.params)
    np.testing.assert_array_equal(fused.optimizer.state, per_op.optimizer.state)
