"""The kernel test cases, derived from the registries: what every kernel test file runs.

``test_kernels_cpu.py``, ``test_kernels_cuda.py``, ``test_no_float64.py`` and
``test_cuda_ptx.py`` take their parameters from here, and everything here comes
from ``ACTIVATIONS``, ``LOSSES`` and ``OPTIMIZERS`` (no list of names is written
out), so a new activation, loss or optimizer is tested by every file as soon as
it is registered.

- the names each op is tested with (``FORWARD``, ``BACKWARD``, ``OUTPUT_PAIRS``, ...);
- ``Case``: one kernel template with one binding of its placeholders (the
  binding family of a template is read off the placeholders it calls), and
  ``cpu_cases()`` / ``cuda_cases()``: every template of each target with every
  binding it can take;
- ``cpu_args`` / ``cuda_args``: sample arguments of a template, as the NumPy and
  CUDA backends pass them (arrays and scalars in the kernel's dtype, ints for counts);
- inputs for the ops (``output_inputs``, ``optimizer_inputs``), the ops run on any
  backend (``run_*``), and ``assert_close``, the tolerance every comparison uses;
- ``compile_ptx``: sm_90 PTX of a CUDA kernel without a GPU (cached per process).
"""

from __future__ import annotations

import contextlib
import dis
import functools
import types
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from xpmlp.kernels import cpu

from xpmlp.backends.base import Backend
from xpmlp.core.activations import ACTIVATIONS
from xpmlp.core.losses import LOSSES
from xpmlp.core.optim import OPTIMIZERS, make_optimizer

DTYPES = ("float32", "float64")

# ---------------------------------------------------------------------- names, from the registries
#: every activation has a forward kernel: elementwise ones or row ones (softmax).
FORWARD = ACTIVATIONS.names()
ELEMENTWISE = ACTIVATIONS.names(lambda a: a.elementwise)
ROWWISE = ACTIVATIONS.names(lambda a: not a.elementwise)
#: the activations backpropagation goes through with ``activation_backward``.
BACKWARD = ACTIVATIONS.names(lambda a: a.elementwise and a.differentiable)
#: (output activation, loss): every pairing a model may train with.
OUTPUT_PAIRS = tuple(
    (act, loss)
    for loss, entry in LOSSES.items()
    for act in ACTIVATIONS.names(
        lambda a, e=entry: a.output and a.differentiable and e.pairs_with(a)
    )
)
#: one pairing per loss (the last output activation it pairs with): where a test's subject is
#: the loss's form (row weights, a decay row), not each activation's derivative again.
PAIR_PER_LOSS = tuple({loss: (act, loss) for act, loss in OUTPUT_PAIRS}.values())
OPTIMIZER_NAMES = tuple(OPTIMIZERS)


def rules() -> dict[Callable[..., Any], str]:
    """Each distinct optimizer rule and the first optimizer name that uses it."""
    found: dict[Callable[..., Any], str] = {}
    for name in OPTIMIZER_NAMES:
        found.setdefault(make_optimizer(name).rule, name)
    return found


def seed(*key: Any) -> np.random.Generator:
    """A generator seeded by a test case, the same in every process."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


# ---------------------------------------------------------------------- cases
@dataclass(frozen=True, eq=False)
class Case:
    """One kernel template with one binding of its placeholders."""

    target: str  # "cpu" or "cuda"
    template: Callable[..., Any]
    label: str  # what it is specialized on ("" for nothing)
    bindings: dict[str, Any] = field(default_factory=dict)
    about: Any = None  # activation name, (activation, loss), optimizer name, or None
    parallel: bool = False

    @property
    def id(self) -> str:
        return f"{self.template.__name__}[{self.label}]" if self.label else self.template.__name__

    def kernel(self, dtype: Any) -> Any:
        """The compiled kernel, exactly as the backends ask for it (same cache entry)."""
        if self.target == "cpu":
            options = {"parallel": True} if self.parallel else None
            return cpu.CPU.kernel(self.template, dtype, options=options, **self.bindings)
        from xpmlp.kernels import cuda as kcuda

        return kcuda.CUDA.kernel(self.template, dtype, **self.bindings)


def _callees(fn: Callable[..., Any]) -> list[Any]:
    """The values of the globals that ``fn`` reads."""
    names = {i.argval for i in dis.get_instructions(fn) if i.opname == "LOAD_GLOBAL"}
    return [fn.__globals__[n] for n in sorted(names) if n in fn.__globals__]


def _is_placeholder(value: Any) -> bool:
    return isinstance(value, types.FunctionType) and hasattr(value, "placeholder")


def placeholders_called(fn: Callable[..., Any]) -> frozenset[str]:
    """The placeholders (``xpmlp.kernels.rows``) that ``fn`` calls, itself or through the
    plain functions of xpmlp it calls (as ``Target.kernel`` binds them)."""
    found: set[str] = set()
    seen: set[Any] = set()
    todo = [fn]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        for value in _callees(f):
            if _is_placeholder(value):
                found.add(value.placeholder)
            elif isinstance(value, types.FunctionType) and (value.__module__ or "").startswith(
                "xpmlp"
            ):
                todo.append(value)
    return frozenset(found)


def _family(placeholders: frozenset[str]) -> list[tuple[str, dict[str, Any], Any]]:
    """Every (label, bindings, about) that a template calling ``placeholders`` can take."""
    if not placeholders:
        return [("", {}, None)]
    if placeholders == {"activation"}:
        return [(n, {"activation": ACTIVATIONS[n].scalar}, n) for n in ELEMENTWISE]
    if placeholders == {"activation_row"}:
        return [(n, {"activation_row": ACTIVATIONS[n].row}, n) for n in ROWWISE]
    if placeholders == {"derivative"}:
        return [(n, {"derivative": ACTIVATIONS[n].scalar_derivative}, n) for n in BACKWARD]
    if placeholders == {"activation", "derivative"}:  # backward kernels that recompute f(z)
        return [
            (
                n,
                {
                    "activation": ACTIVATIONS[n].scalar,
                    "derivative": ACTIVATIONS[n].scalar_derivative,
                },
                n,
            )
            for n in BACKWARD
        ]
    if placeholders == {"loss_row", "output_delta"}:
        return [
            (f"{a}+{lo}", LOSSES[lo].kernel_bindings(ACTIVATIONS[a]), (a, lo))
            for a, lo in OUTPUT_PAIRS
        ]
    if placeholders == {"loss_row"}:  # kernels of the per-sample losses alone (weights)
        return [(f"{a}+{lo}", LOSSES[lo].row_bindings(), (a, lo)) for a, lo in OUTPUT_PAIRS]
    if placeholders == {"rule"}:
        return [(rule.__name__, {"rule": rule}, name) for rule, name in rules().items()]
    raise AssertionError(
        f"no registry binds the placeholders {sorted(placeholders)}: "
        "teach kernel_cases._family about them"
    )


#: the serial CPU templates (the parallel forms are ``cpu.PARALLEL``'s values).
CPU_TEMPLATES = (
    cpu.bias_activation,
    cpu.bias_activation_rows,
    cpu.activation_backward,
    cpu.loss_output_delta,
    cpu.optimizer_step,
    cpu.grad_sum_squares,
    cpu.gather_rows,
    cpu.bias_activation_dropout,
    cpu.activation_backward_dropout,
    cpu.batch_norm_forward,
    cpu.batch_norm_inference,
    cpu.batch_norm_backward,
    cpu.weight_output_delta,
)
#: functions of ``xpmlp.kernels.cpu`` that compile kernels rather than being compiled.
CPU_MACHINERY = ("choose_threading_layer", "_kernel")


def cpu_helpers() -> set[str]:
    """The functions of ``xpmlp.kernels.cpu`` that another of its functions (not a parallel
    form) calls, such as ``column_sums``: compiled as callees, not kernels."""
    own = [
        f
        for f in vars(cpu).values()
        if isinstance(f, types.FunctionType)
        and f.__module__ == cpu.__name__
        and f not in cpu.PARALLEL.values()
    ]
    return {
        v.__name__
        for f in own
        for v in _callees(f)
        if isinstance(v, types.FunctionType) and v.__module__ == cpu.__name__
    }


def cpu_cases(parallel: bool | None = None) -> list[Case]:
    """Every CPU template (serial, parallel or both) with every binding it can take."""
    cases = []
    for template in CPU_TEMPLATES:
        forms = [(template, False)]
        if template in cpu.PARALLEL:
            forms.append((cpu.PARALLEL[template], True))
        for form, is_parallel in forms:
            if parallel is not None and is_parallel != parallel:
                continue
            for label, bindings, about in _family(placeholders_called(template)):
                cases.append(Case("cpu", form, label, bindings, about, is_parallel))
    return cases


def cuda_cases() -> list[Case]:
    """Every template of ``xpmlp.kernels.cuda.TEMPLATES`` with every binding it can take."""
    from xpmlp.kernels import cuda as kcuda

    return [
        Case("cuda", t, label, bindings, about)
        for t in kcuda.TEMPLATES
        for label, bindings, about in _family(placeholders_called(t))
    ]


# ---------------------------------------------------------------------- inputs
def forward(name: str, Z: np.ndarray) -> np.ndarray:
    """A = f(Z) by the reference (Z unchanged)."""
    A = np.empty_like(Z)
    Backend().bias_activation(Z.copy(), np.zeros(Z.shape[1], Z.dtype), A, name)
    return A


def targets(loss: str, shape: tuple[int, int], dtype: Any, rng: np.random.Generator):
    """Targets of the kind the loss declares (``Loss.targets``)."""
    m, n = shape
    kind = LOSSES[loss].targets
    if kind == "distributions":  # one-hot rows, and one soft row
        Y = np.eye(n)[rng.integers(0, n, size=m)]
        Y[0] = rng.dirichlet(np.ones(n))
    elif kind == "counts":  # zeros, small counts and a non-integer
        Y = rng.poisson(2.0, size=shape).astype(np.float64)
        Y.flat[0] = 0.0
        Y.flat[-1] = 1.5
    elif kind == "probabilities":  # 0/1 and in between
        Y = np.where(rng.random(shape) < 0.5, rng.integers(0, 2, shape), rng.random(shape))
    else:
        Y = rng.normal(0.5, 1.0, size=shape)
    return Y.astype(dtype)


def output_inputs(
    act: str, loss: str, shape: tuple[int, int], dtype: Any, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z, A = f(Z) and targets Y for the output layer."""
    Z = (2 * rng.standard_normal(shape)).astype(dtype)
    return Z, forward(act, Z), targets(loss, shape, dtype, rng)


def optimizer_inputs(name: str, size: int, dtype: Any, rng: np.random.Generator):
    """(optimizer, p, g, state, hyper) for one step at step 3; state rows positive (a second
    moment must be)."""
    opt = make_optimizer(name)
    p, g = (rng.standard_normal(size).astype(dtype) for _ in range(2))
    state = rng.uniform(0.1, 1.0, (len(opt.state_names), size)).astype(dtype)
    return opt, p, g, state, opt.hyperparameters(3, opt.learning_rate)


def update_scale(p: np.ndarray, g: np.ndarray, state: np.ndarray) -> np.ndarray:
    """The size of the terms an optimizer step adds, per element of its state rows (and of p,
    by broadcasting): ``assert_close``'s ``scale`` for updates. A GPU contracts ``a * b + c``
    into one fused multiply-add (rounded once) where the CPU rounds the product first, so
    the two differ by the rounding of the terms, not of the result."""
    return np.abs(p) + np.abs(g) + np.abs(state).max(axis=0, initial=0.0)


def regularizer_args(dt: np.dtype) -> tuple[Any, ...]:
    """(l1, clip_value, max_norm, sum_squares) of an optimizer step with every option on."""
    return dt.type(0.01), dt.type(0.5), dt.type(1.0), np.full(1, 4.0, dt)


def cpu_args(case: Case, dtype: Any, m: int = 70, n: int = 3) -> tuple[Any, ...]:
    """Arguments of a CPU template as ``NumpyBackend`` passes them."""
    dt = np.dtype(dtype)
    rng = seed("cpu-args", case.id, dt.name)
    name = case.template.__name__.removesuffix("_parallel")
    Z = rng.standard_normal((m, n)).astype(dt)
    if name in ("bias_activation", "bias_activation_rows"):
        return Z, rng.standard_normal(n).astype(dt), np.empty_like(Z)
    if name == "activation_backward":
        A = forward(case.about, Z)
        return rng.standard_normal((m, n)).astype(dt), Z, A, np.empty_like(Z), np.empty(n, dt)
    if name == "loss_output_delta":
        Z, A, Y = output_inputs(*case.about, (m, n), dt, rng)
        return (
            Z,
            A,
            Y,
            np.empty_like(Z),
            np.empty(n, dt),
            np.zeros((4, 2), dt)[1],
            np.zeros(1, dt),
            dt.type(1.0 / m),
        )
    if name == "weight_output_delta":
        Z, A, Y = output_inputs(*case.about, (m, n), dt, rng)
        return (
            Z,
            A,
            Y,
            rng.uniform(0.25, 2.0, m).astype(dt),
            rng.standard_normal((m, n)).astype(dt),
            np.empty(n, dt),
            np.zeros(2, dt),
        )
    if name == "optimizer_step":
        opt, p, g, state, hyper = optimizer_inputs(case.about, 1000, dt, rng)
        return (
            p,
            g,
            state,
            0,
            tuple(map(dt.type, hyper)),
            dt.type(0.01),
            500,
            np.zeros(1, dt),
            *regularizer_args(dt),
        )
    if name == "grad_sum_squares":
        return rng.standard_normal(1000).astype(dt), dt.type(0.5), np.zeros(1, dt)
    if name == "gather_rows":
        return Z, rng.permutation(m), np.empty_like(Z)
    if name in DROPOUT_AND_BATCH_NORM:
        return regularization_args(name, Z, rng)
    raise AssertionError(f"no sample arguments for {case.id}")


#: the dropout and batch-norm templates of both targets, by name.
DROPOUT_AND_BATCH_NORM = (
    "bias_activation_dropout",
    "activation_backward_dropout",
    "batch_norm_forward",
    "batch_norm_inference",
    "batch_norm_backward",
    "bias_activation_dropout_elements",
    "activation_backward_dropout_chunks",
    "batch_norm_forward_columns",
    "batch_norm_inference_elements",
    "batch_norm_backward_columns",
)


def regularization_args(name: str, Z: np.ndarray, rng: np.random.Generator) -> tuple[Any, ...]:
    """Arguments of a dropout or batch-norm template as the backends pass them: dropout 0.25
    (threshold 2^22, scale 4/3), a key, batch norm's eps and momentum, 1/m and 1/(m - 1)."""
    from xpmlp.kernels import cuda as kcuda

    m, n = Z.shape
    dt = Z.dtype
    t = dt.type
    vec = [rng.standard_normal(n).astype(dt) for _ in range(2)]
    # a CUDA template also takes the rows a recorded step reads its key from (``mask_key``;
    # layer -1: the launch argument's key)
    at = (np.zeros((1, 1), np.int64), np.zeros(1, np.int64), -1)
    on_gpu = name.endswith(("_elements", "_chunks", "_columns"))
    drop = (12345, *(at if on_gpu else ()), 1 << 22, t(4.0 / 3.0))
    if name in ("bias_activation_dropout", "bias_activation_dropout_elements"):
        return (Z, vec[0], np.empty_like(Z), 0, *drop)
    if name == "activation_backward_dropout":
        return (
            rng.standard_normal((m, n)).astype(dt),
            Z,
            np.empty_like(Z),
            np.empty(n, dt),
            0,
            *drop,
        )
    if name == "activation_backward_dropout_chunks":
        return (
            rng.standard_normal((m, n)).astype(dt),
            Z,
            np.empty_like(Z),
            np.empty((kcuda.n_chunks(m), n), dt),
            kcuda.CHUNK_ROWS,
            0,
            *drop,
        )
    running = (np.zeros(n, dt), np.ones(n, dt))
    if name in ("batch_norm_forward", "batch_norm_forward_columns"):
        return (
            Z,
            vec[0],
            1 + vec[1],
            vec[1],
            np.empty((2, n), dt),
            *running,
            np.empty_like(Z),
            np.empty_like(Z),
            t(0.1),
            t(1e-5),
            t(1.0 / m),
            t(1.0 / (m - 1)),
            *drop,
        )
    if name in ("batch_norm_inference", "batch_norm_inference_elements"):
        return (Z, vec[0], 1 + vec[1], vec[1], *running, np.empty_like(Z), t(1e-5))
    stats = np.stack([vec[0], 1 + np.abs(vec[1])]).astype(dt)
    return (
        rng.standard_normal((m, n)).astype(dt),
        Z,
        1 + vec[1],
        vec[0],
        stats,
        np.empty_like(Z),
        np.empty(n, dt),
        np.empty(n, dt),
        np.empty(n, dt),
        t(1.0 / m),
        *drop,
    )


def cuda_args(case: Case, dtype: Any, m: int = 9, n: int = 3) -> tuple[Any, ...]:
    """Arguments of a CUDA template as ``CudaKernelOps`` passes them (host arrays)."""
    from xpmlp.kernels import cuda as kcuda

    dt = np.dtype(dtype)
    rng = seed("cuda-args", case.id, dt.name)
    name = case.template.__name__
    Z = rng.standard_normal((m, n)).astype(dt)
    if name in ("bias_activation_elements", "bias_activation_rows"):
        return Z, rng.standard_normal(n).astype(dt), np.empty_like(Z)
    if name == "activation_backward_chunks":
        chunks = kcuda.n_chunks(m)
        return (
            rng.standard_normal((m, n)).astype(dt),
            Z,
            forward(case.about, Z),
            np.empty_like(Z),
            np.empty((chunks, n), dt),
            kcuda.CHUNK_ROWS,
        )
    if name == "sum_chunks":
        return rng.standard_normal((4, n)).astype(dt), np.empty(n, dt)
    if name == "loss_delta_rows":
        Z, A, Y = output_inputs(*case.about, (m, n), dt, rng)
        return Z, A, Y, np.empty_like(Z), np.empty((m, 2), dt), dt.type(1.0 / m)
    if name == "loss_output_reduce":
        return (
            Z,
            rng.random((m, 2)).astype(dt),
            np.empty(n, dt),
            np.zeros((4, 2), dt)[1],
            np.zeros(1, dt),
        )
    if name == "optimizer_step":
        opt, p, g, state, hyper = optimizer_inputs(case.about, 100, dt, rng)
        return (
            p,
            g,
            state,
            tuple(map(dt.type, hyper)),
            dt.type(0.01),
            50,
            np.zeros(1, dt),
            *regularizer_args(dt),
        )
    if name == "optimizer_step_at":
        opt, p, g, state, hyper = optimizer_inputs(case.about, 100, dt, rng)
        rows = np.array([hyper, hyper], dtype=dt)
        return (
            p,
            g,
            state,
            rows,
            np.ones(1, np.int64),
            np.array([0.02, 0.01], dt),
            50,
            np.zeros(1, dt),
            *regularizer_args(dt),
        )
    if name == "grad_sum_squares_partials":
        return rng.standard_normal(100).astype(dt), dt.type(0.5), np.empty((16, 1), dt)
    if name == "gather_rows":
        return Z, rng.permutation(m), np.empty_like(Z)
    if name == "gather_batch_rows":
        return Z, rng.permutation(m), np.ones(1, np.int64), np.empty((m // 3, n), dt)
    if name == "record_batch":
        return np.zeros(1, np.int64), np.ones(2, dt), np.zeros((4, 2), dt)
    if name == "store_at":
        return np.ones(1, np.int64), np.ones(1, dt), np.zeros(4, dt)
    if name in DROPOUT_AND_BATCH_NORM:
        return regularization_args(name, Z, rng)
    raise AssertionError(f"no sample arguments for {case.id}")


# ---------------------------------------------------------------------- ops on any backend
def _on(be: Backend, *arrays: np.ndarray) -> list[Any]:
    return [be.asarray(np.array(a, copy=True)) for a in arrays]


def _back(be: Backend, *arrays: Any) -> list[np.ndarray]:
    return [np.array(be.to_numpy(a)) for a in arrays]


def run_bias_activation(be: Backend, act: str, Z: np.ndarray, b: np.ndarray):
    """(Z + b, f(Z + b)) by ``be``."""
    with be.activate():
        Zd, bd, Ad = _on(be, Z, b, np.full(Z.shape, np.nan, Z.dtype))
        be.bias_activation(Zd, bd, Ad, act)
        return tuple(_back(be, Zd, Ad))


def run_activation_backward(be: Backend, act: str, dA, Z, A, in_place: bool = False):
    """(delta, db) by ``be``; with ``in_place`` delta is dA itself."""
    with be.activate():
        dAd, Zd, Ad, db = _on(be, dA, Z, A, np.full(dA.shape[1], np.nan, dA.dtype))
        delta = dAd if in_place else _on(be, np.full(dA.shape, np.nan, dA.dtype))[0]
        be.activation_backward(dAd, Zd, Ad, delta, db, act)
        return tuple(_back(be, delta, db))


def run_loss_output_delta(be: Backend, act: str, loss: str, Z, A, Y, skip: float = 0.0):
    """(delta, db, out_stats, skip) by ``be``."""
    dt = Z.dtype
    with be.activate():
        Zd, Ad, Yd, delta, db, stats, skipd = _on(
            be,
            Z,
            A,
            Y,
            np.full(Z.shape, np.nan, dt),
            np.full(Z.shape[1], np.nan, dt),
            np.full(2, np.nan, dt),
            np.array([skip], dt),
        )
        be.loss_output_delta(Zd, Ad, Yd, delta, db, stats, skipd, act, loss)
        return tuple(_back(be, delta, db, stats, skipd))


def run_weight_output_delta(be: Backend, loss: str, Z, A, Y, r, delta):
    """(delta, db, out_stats) by ``be``: sample weights r on a given delta."""
    dt = Z.dtype
    with be.activate():
        Zd, Ad, Yd, rd, deltad, db, stats = _on(
            be, Z, A, Y, r, delta.copy(), np.full(Z.shape[1], np.nan, dt), np.zeros(2, dt)
        )
        be.weight_output_delta(Zd, Ad, Yd, rd, deltad, db, stats, loss)
        return tuple(_back(be, deltad, db, stats))


def run_optimizer_step(
    be: Backend,
    opt: Any,
    p,
    g,
    state,
    hyper,
    decay: float,
    n_decay: int,
    skip: float = 0.0,
    **regularizers: Any,
):
    """(p, state) after one step by ``be``; ``regularizers``: l1, clip_value, max_norm and
    sum_squares (a host array) of ``Backend.optimizer_step``."""
    with be.activate():
        pd, gd, sd, skipd = _on(be, p, g, state, np.array([skip], p.dtype))
        if regularizers.get("sum_squares") is not None:
            regularizers["sum_squares"] = _on(be, regularizers["sum_squares"])[0]
        be.optimizer_step(opt, pd, gd, sd, hyper, decay, n_decay, skipd, **regularizers)
        return tuple(_back(be, pd, sd))


def run_grad_sum_squares(be: Backend, g, clip_value: float) -> np.ndarray:
    """out[0] = sum of clamp(g)^2 by ``be`` (a one-element host array)."""
    with be.activate():
        gd, out = _on(be, g, np.full(1, np.nan, g.dtype))
        be.grad_sum_squares(gd, clip_value, out)
        return _back(be, out)[0]


def run_bias_activation_dropout(be: Backend, act: str, Z, b, key: int, rate: float):
    """(Z + b, dropout(f(Z + b))) by ``be``."""
    with be.activate():
        Zd, bd, Ad = _on(be, Z, b, np.full(Z.shape, np.nan, Z.dtype))
        be.bias_activation_dropout(Zd, bd, Ad, act, key, rate)
        return tuple(_back(be, Zd, Ad))


def run_activation_backward_dropout(
    be: Backend, act: str, dA, Z, key: int, rate: float, in_place: bool = False
):
    """(delta, db) by ``be``; with ``in_place`` delta is dA itself."""
    with be.activate():
        dAd, Zd, db = _on(be, dA, Z, np.full(dA.shape[1], np.nan, dA.dtype))
        delta = dAd if in_place else _on(be, np.full(dA.shape, np.nan, dA.dtype))[0]
        be.activation_backward_dropout(dAd, Zd, delta, db, act, key, rate)
        return tuple(_back(be, delta, db))


def batch_norm_inputs(shape: tuple[int, int], dtype: Any, rng: np.random.Generator):
    """Z, b, gamma, beta, running_mean, running_var of a batch-norm layer."""
    m, n = shape
    dt = np.dtype(dtype)
    return (
        (3 * rng.standard_normal(shape) + rng.standard_normal(n)).astype(dt),
        rng.standard_normal(n).astype(dt),
        (1 + 0.5 * rng.standard_normal(n)).astype(dt),
        rng.standard_normal(n).astype(dt),
        rng.standard_normal(n).astype(dt),
        rng.uniform(0.5, 2.0, n).astype(dt),
    )


def run_batch_norm_forward(
    be: Backend, act: str, Z, b, gamma, beta, rmean, rvar, key: int, rate: float
):
    """(Z + b, stats, running_mean, running_var, Zhat, A) by ``be`` (momentum 0.1, eps 1e-5)."""
    nan = np.nan
    with be.activate():
        Zd, bd, gd, betad, rmd, rvd, st, Zh, Ad = _on(
            be,
            Z,
            b,
            gamma,
            beta,
            rmean,
            rvar,
            np.full((2, Z.shape[1]), nan, Z.dtype),
            np.full(Z.shape, nan, Z.dtype),
            np.full(Z.shape, nan, Z.dtype),
        )
        be.batch_norm_forward(Zd, bd, gd, betad, st, rmd, rvd, Zh, Ad, act, key, rate, 0.1, 1e-5)
        return tuple(_back(be, Zd, st, rmd, rvd, Zh, Ad))


def run_batch_norm_inference(be: Backend, act: str, Z, b, gamma, beta, rmean, rvar):
    """(Z + b, A) by ``be`` (eps 1e-5)."""
    with be.activate():
        Zd, bd, gd, betad, rmd, rvd, Ad = _on(
            be, Z, b, gamma, beta, rmean, rvar, np.full(Z.shape, np.nan, Z.dtype)
        )
        be.batch_norm_inference(Zd, bd, gd, betad, rmd, rvd, Ad, act, 1e-5)
        return tuple(_back(be, Zd, Ad))


def run_batch_norm_backward(
    be: Backend,
    act: str,
    dA,
    Zhat,
    gamma,
    beta,
    stats,
    key: int,
    rate: float,
    in_place: bool = False,
):
    """(delta, dgamma, dbeta, db) by ``be``; with ``in_place`` delta is dA itself."""
    n, dt = dA.shape[1], dA.dtype
    with be.activate():
        dAd, Zh, gd, betad, st, dg, dbe, db = _on(
            be, dA, Zhat, gamma, beta, stats, *(np.full(n, np.nan, dt) for _ in range(3))
        )
        delta = dAd if in_place else _on(be, np.full(dA.shape, np.nan, dt))[0]
        be.batch_norm_backward(dAd, Zh, gd, betad, st, delta, dg, dbe, db, act, key, rate)
        return tuple(_back(be, delta, dg, dbe, db))


def run_gather_rows(be: Backend, X, idx):
    with be.activate():
        Xd, idxd, out = _on(be, X, idx, np.full((len(idx), X.shape[1]), np.nan, X.dtype))
        be.gather_rows(Xd, idxd, out)
        return _back(be, out)[0]


# ---------------------------------------------------------------------- tolerances
def assert_close(
    actual: Any, expected: Any, *, ulps: float = 4, scale: Any = 0.0, what: str = ""
) -> None:
    """|actual - expected| <= ulps * (ulp(expected) + eps * scale), elementwise, in the dtype
    of ``actual`` (NaN matches NaN, infinities match exactly).

    ``scale`` is the size of the terms the result is computed from, where rounding in them
    can move the result by more than its own ulp (a cancellation, a sum of many terms).
    """
    actual = np.asarray(actual)
    dtype = actual.dtype
    eps = float(np.finfo(dtype).eps)
    a = actual.astype(np.float64)
    e = np.broadcast_to(np.asarray(expected, dtype=np.float64), a.shape)
    with np.errstate(invalid="ignore", over="ignore"):
        ulp = np.spacing(np.abs(e).astype(dtype)).astype(np.float64)
        bound = ulps * (ulp + eps * np.asarray(scale, dtype=np.float64))
        ok = (np.abs(a - e) <= bound) | (a == e) | (np.isnan(a) & np.isnan(e))
    if not ok.all():
        bad = np.argwhere(~ok)[:5].tolist()
        raise AssertionError(
            f"{what}: {int((~ok).sum())} of {ok.size} elements ({dtype}) differ by more than "
            f"{ulps} ulp (+ eps x scale); first at {bad}: actual {a[~ok][:5].tolist()}, "
            f"expected {e[~ok][:5].tolist()}, bound {np.broadcast_to(bound, a.shape)[~ok][:5]}"
        )


def forward_scale(Z: np.ndarray, A: np.ndarray) -> np.ndarray:
    """Rounding scale of A = f(Z): terms as large as |z| (gelu's z (1 + erf) / 2 cancels for
    z < 0), and a row activation's sum of n terms (softmax)."""
    return np.abs(Z.astype(np.float64)) + Z.shape[1] * np.abs(A.astype(np.float64))


def sum_scale(terms: np.ndarray, term_scale: Any = 0.0, axis: int = 0) -> np.ndarray:
    """Rounding scale of a sum over ``axis`` of m ``terms``: the terms' own tolerances plus
    sqrt(m) times their absolute sum (the reference adds them in order, uncompensated)."""
    terms = np.abs(terms.astype(np.float64))
    m = terms.shape[axis]
    extra = np.broadcast_to(np.asarray(term_scale, dtype=np.float64), terms.shape)
    return (2 + np.sqrt(m)) * terms.sum(axis=axis) + extra.sum(axis=axis)


def loss_scale(Z: np.ndarray, A: np.ndarray, Y: np.ndarray, loss: str) -> float:
    """Rounding scale of a batch's loss sum: the per-sample losses and the products y z,
    a y the terms are made of (softplus(z) - y z cancels)."""
    m = Z.shape[0]
    rows = np.abs(LOSSES[loss].array_terms(np, *(x.astype(np.float64) for x in (Z, A, Y))))
    zmax = np.abs(Z.astype(np.float64)).max(axis=1, keepdims=True)
    parts = (1 + zmax + np.abs(A.astype(np.float64))) * (1 + np.abs(Y.astype(np.float64)))
    return float((2 + np.sqrt(m)) * rows.sum() + parts.sum())


# ---------------------------------------------------------------------- PTX without a GPU
CC = (9, 0)


class _Hopper:
    compute_capability = CC


@contextlib.contextmanager
def hopper_device() -> Iterator[None]:
    """numba-cuda 0.30 asks the current device for its compute capability when it compiles a
    called device function; answer (9, 0) without a GPU."""
    import numba.cuda.dispatcher as dispatcher

    saved = dispatcher.get_current_device
    dispatcher.get_current_device = lambda: _Hopper()
    try:
        yield
    finally:
        dispatcher.get_current_device = saved


@functools.cache
def compile_ptx(py_func: Callable[..., Any], signature: tuple[Any, ...]) -> str:
    """sm_90 PTX of ``py_func`` (a CUDA kernel's ``py_func``) for ``signature``."""
    from numba import cuda

    with hopper_device():
        return cuda.compile_ptx(py_func, signature, cc=CC)[0]


def cuda_signature(case: Case, dtype: Any) -> tuple[Any, ...]:
    """The Numba signature the CUDA backend launches ``case`` with (its fast path)."""
    from xpmlp.kernels import cuda as kcuda

    signature = kcuda.fast_signature(kcuda.argument_key(cuda_args(case, dtype)))
    assert signature is not None, f"{case.id}: the backend's arguments have no fast signature"
    return signature


def ptx_compiler_or_skip() -> Any:
    """``compile_ptx`` once it has compiled a first kernel, or a pytest skip where NVVM/NVRTC
    are not installed."""
    first = cuda_cases()[0]
    try:
        compile_ptx(first.kernel("float32").py_func, cuda_signature(first, "float32"))
    except Exception as exc:  # pragma: no cover - depends on the installation
        if "NVVM" in str(exc) or "nvrtc" in str(exc).lower():
            pytest.skip(f"NVVM/NVRTC are not installed (pip install 'numba-cuda[cu13]'): {exc}")
        raise
    return compile_ptx
