"""The reference backend: every operation of the MLP in plain array code.

``Backend`` is written against its array namespace ``self.xp`` only, so it
runs unchanged on NumPy and on CuPy. It is the specification: the NumPy and
CUDA backends override the hot operations with fused Numba kernels, and the
tests hold each kernel to the method it overrides here.

Array conventions: a batch is one sample per row, shape (m, n); layer l has
W of shape (n_l, n_{l-1}) as in the notes and b of shape (n_l,), so
Z = A_prev @ W.T + b. ``delta`` is dL/dZ of the batch-mean loss (it already
holds the 1/m). Every method writes into arrays the caller owns, in the arrays' dtype
(nothing here computes in float64 for float32 arrays). Its sums over the batch are NumPy's
(or CuPy's), less accurate in float32 than the kernels' compensated ones; the tests allow
for that.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Concatenate, NamedTuple, ParamSpec, Protocol, TypeVar

import array_api_compat
import numpy

from ..core.activations import ACTIVATIONS, Activation
from ..core.aliases import Array as Array  # re-exported: the backends import it from here
from ..core.aliases import ArrayModule, Generator
from ..core.errors import ParameterError
from ..core.losses import LOSSES, Loss, correct
from ..core.regularization import MaskKey, dropout_keep_mask, dropout_key
from ..core.validation import PRECISIONS

if TYPE_CHECKING:  # numpy.typing only for the checker: importing it sets numpy.typing
    from numpy.typing import ArrayLike, DTypeLike

    from ..core.activations import ArrayDerivative
    from ..core.layers import Dense
    from ..core.optim import Optimizer
    from ..core.plan import Op, StepPlan
    from ..core.workspace import Workspace

#: an array's shape as the allocators take it (``empty``, ``zeros``)
Shape = int | tuple[int, ...]


class HasBackend(Protocol):
    """An object that runs on a backend (a model): what ``on_backend`` reads of it."""

    @property
    def backend(self) -> Backend: ...
    @property
    def precision(self) -> str: ...


_Owner = TypeVar("_Owner", bound=HasBackend)
_Params = ParamSpec("_Params")
_Result = TypeVar("_Result")


def on_backend(
    method: Callable[Concatenate[_Owner, _Params], _Result],
) -> Callable[Concatenate[_Owner, _Params], _Result]:
    """Run the method of an object with a ``backend`` (a model) with that backend active: its
    device and stream current, its products at the object's ``precision``."""

    @functools.wraps(method)
    def run(self: _Owner, /, *args: _Params.args, **kwargs: _Params.kwargs) -> _Result:
        backend = self.backend
        with backend.activate(), backend.compute_precision(self.precision):
            return method(self, *args, **kwargs)

    return run


class TrainingModel(Protocol):
    """What a backend's training steps read of a model (``xpmlp.MLP`` is one; the backends
    sit below ``xpmlp.train`` and do not import it): its parameters, gradients and
    optimizer, its dtype, and its step op by op over a workspace (``run_ops``); and what the NumPy
    backend's fused step compiles and runs it with (``numpy_backend.FusedStep``): its
    layers, registry entries, seed and dropout step count, and whether it has dropout or
    batch norm."""

    @property
    def dtype(self) -> numpy.dtype[numpy.floating]: ...
    @property
    def backend(self) -> Backend: ...
    @property
    def params(self) -> Array: ...
    @property
    def grads(self) -> Array: ...
    @property
    def n_weights(self) -> int: ...
    @property
    def optimizer(self) -> Optimizer: ...
    def workspace(self, rows: int) -> Workspace: ...
    def run_ops(
        self,
        ops: Sequence[Op],
        ws: Workspace,
        out_stats: Array,
        skip: Array,
        *,
        gather: Callable[[], None] | None = None,
        keys: Sequence[MaskKey] | None = None,
        row_weights: Array = None,
        gradients: Callable[[], None] | None = None,
        update: Callable[[], None] | None = None,
    ) -> None: ...
    @property
    def layer_sizes(self) -> Sequence[int]: ...
    @property
    def layers(self) -> Sequence[Dense]: ...
    @property
    def activation_entries(self) -> Sequence[Activation]: ...
    @property
    def loss_entry(self) -> Loss: ...
    @property
    def seed(self) -> int: ...
    @property
    def step_plan(self) -> StepPlan: ...
    @property
    def batch_norm(self) -> Sequence[bool]: ...
    @property
    def deterministic(self) -> bool: ...

    #: training passes that drew dropout masks (the fused step counts its own)
    dropout_steps: int

    @property
    def _regularized(self) -> bool: ...


class RunStats(Protocol):
    """What an epoch runner reads of a run's state (``xpmlp.train.loop.RunState``): the
    per-batch (loss sum, correct count) rows and the skip flag, on the device."""

    @property
    def batch_stats(self) -> Array: ...
    @property
    def skip(self) -> Array: ...


class StepRows(NamedTuple):
    """The per-batch scalars of an epoch's steps, set once before it, row b for its b-th
    batch (what a compiled step reads instead of scalars set on the host between batches):
    ``hyper`` (the optimizer's hyperparameters, ``Optimizer.hyper_rows``, in the model's
    dtype), ``decays`` (the L2 coefficient), ``keys`` (the dropout masks' keys per hidden
    layer, 0 for a layer without dropout) and ``dropout_steps`` (each row's dropout step)."""

    hyper: Array
    decays: Array
    keys: Array
    dropout_steps: Array


def step_rows(
    model: TrainingModel, factors: Sequence[float], decays: Array | None = None
) -> StepRows:
    """The scalars of the model's next ``len(factors)`` steps, row b for the b-th, as NumPy
    arrays (``StepRows``; a device backend copies them over once per epoch): the
    hyperparameters at t + 1 + b with the learning rate times ``factors[b]``
    (``Optimizer.hyper_rows``), the L2 coefficient ``decays[b]`` (default: the optimizer's)
    and the dropout keys of the b-th step (``dropout_key``; 0 for a layer without dropout),
    in the model's dtype."""
    opt, dtype, n = model.optimizer, model.dtype, len(factors)
    hyper = opt.hyper_rows(factors).astype(dtype).reshape(n, -1) if n else None
    if decays is None:
        decay = numpy.full(n, opt.weight_decay, dtype)
    else:
        decay = numpy.asarray(decays, numpy.float64).astype(dtype)
    dropped = dropped_layers(model)
    first = model.dropout_steps
    steps = numpy.arange(first, first + n) if dropped else numpy.full(n, first)
    keys = numpy.zeros((n, len(model.layers) - 1), numpy.int64)
    for l in dropped:
        keys[:, l] = [dropout_key(model.seed, int(step), l) for step in steps]
    if hyper is None:  # no step: rows of the right types, never read
        hyper = numpy.zeros((0, len(opt.hyperparameters(1, opt.learning_rate))), dtype)
    return StepRows(hyper, decay, keys, steps)


def count_steps(model: TrainingModel, rows: StepRows, taken: int) -> None:
    """Count the first ``taken`` steps of ``rows`` (``step_rows``), the ones that ran: the
    optimizer's step count (``Optimizer.advance``, the only writer of t) and the model's
    dropout steps."""
    if taken <= 0:
        return
    model.optimizer.advance(taken)
    if dropped_layers(model):
        model.dropout_steps = int(rows.dropout_steps[taken - 1]) + 1


def squared_weights(model: TrainingModel, out: Array | None = None) -> Array:
    """||W||^2 over every layer's weights (biases excluded) into out[0] (a new one-element
    device array by default; ``Backend.squared_norm``, which a recorded CUDA step runs too);
    returns out[0], a device scalar."""
    be = model.backend
    out = be.empty(1, model.dtype) if out is None else out
    be.squared_norm(model.params[: model.n_weights], out)
    return out[0]


def dropped_layers(model: TrainingModel) -> list[int]:
    """The hidden layers with dropout: their masks' keys change every step."""
    return [l for l, layer in enumerate(model.layers[:-1]) if layer.dropout]


class BatchStep(Protocol):
    """``Backend.fused_step``'s step: the whole training step of one batch in one call, with
    the epoch's per-batch scalars set once before it (``epoch_rows``) and counted after it
    (``finish_epoch``), and its gradient-only form (``xpmlp.backends.numpy_backend.FusedStep``)."""

    def epoch_rows(self, factors: Sequence[float], decays: Array | None = None) -> StepRows: ...

    def finish_epoch(self, rows: StepRows, taken: int) -> None: ...

    def __call__(
        self,
        X: Array,
        Y: Array,
        idx: Array,
        ws: Workspace,
        out_stats: Array,
        skip: Array,
        rows: StepRows,
        row: int,
        row_weights: tuple[Array, float] | None = None,
    ) -> None: ...

    def gradients(
        self,
        X: Array,
        Y: Array,
        idx: Array,
        ws: Workspace,
        out_stats: Array,
        skip: Array,
        row_weights: tuple[Array, float] | None = None,
    ) -> None: ...


class GradientReduce(Protocol):
    """The mean of the gradients over the ranks, as an epoch runner takes it
    (``xpmlp.train.loop.GradientMean``): ``reduce(model, stats, skip)``, and whether a CUDA
    graph can hold it (``captured``: its allreduce only queues work on the stream)."""

    @property
    def captured(self) -> bool: ...
    def __call__(self, model: TrainingModel, out_stats: Array, skip: Array) -> None: ...


class EpochRunner(Protocol):
    """``Backend.epoch_runner``'s runner: the first batches of ``run_epoch``'s epoch (its
    arguments); returns how many it ran (``xpmlp.backends.cuda_graph.GraphedEpoch``)."""

    def __call__(
        self,
        X: Array,
        Y: Array,
        order: Array,
        batch_size: int,
        state: RunStats,
        lr_factor: Callable[[int], float] | None = None,
        on_batch: Callable[[int, int], None] | None = None,
        decays: Array | None = None,
        weights: tuple[Array, Array] | None = None,
        penalty: Array | None = None,
        reduce: GradientReduce | None = None,
    ) -> int: ...


def activation_entry(activation: str | Activation) -> Activation:
    """The registry entry of ``activation`` (a name or the entry itself)."""
    return activation if isinstance(activation, Activation) else ACTIVATIONS[activation]


def loss_entry(loss: str | Loss) -> Loss:
    """The registry entry of ``loss`` (a name or the entry itself)."""
    return loss if isinstance(loss, Loss) else LOSSES[loss]


def array_derivative(entry: Activation) -> ArrayDerivative:
    """The reference derivative formula ``f'(Z)`` of ``entry`` (TypeError for an activation
    that has none: a row-wise one, whose derivative the loss's delta folds in)."""
    if entry.array_derivative is None:
        raise TypeError(f"activation {entry.name!r} has no elementwise derivative formula")
    return entry.array_derivative


class Backend:
    """Reference implementation of every operation, in plain ``xp`` array code."""

    name = "reference"

    def __init__(self, xp: ArrayModule = numpy) -> None:
        self.xp = xp

    @functools.cached_property
    def array_api(self) -> ArrayModule:
        """The array API standard namespace of ``xp``'s arrays (``array_api_compat``): the
        one the registries' reference formulas ``array(xp, Z)`` are written against."""
        namespace: ArrayModule = array_api_compat.array_namespace(self.xp.empty(0))
        return namespace

    # ------------------------------------------------------------------ arrays and devices
    @property
    def device(self) -> str:
        """A human-readable description of where the arrays live."""
        return "host memory (plain array code)"

    def activate(self) -> contextlib.AbstractContextManager[None]:
        """A context in which this backend's device and stream are current: the MLP runs
        each public call inside it (a no-op on the host)."""
        return contextlib.nullcontext()

    def asarray(self, a: ArrayLike, dtype: DTypeLike | None = None) -> Array:
        """Host (or backend) array -> C-contiguous backend array (the host-to-device crossing)."""
        return self.xp.ascontiguousarray(self.xp.asarray(a, dtype=dtype))

    def to_numpy(self, a: Array) -> numpy.ndarray:
        """Backend array -> NumPy array on the host (the device-to-host crossing)."""
        return numpy.asarray(a)

    def rng(self, seed: int | None) -> Generator:
        """A seeded random generator that draws backend arrays."""
        return self.xp.random.default_rng(seed)

    def rng_state(self, rng: Generator) -> dict[str, object] | None:
        """The state of ``rng`` (from ``self.rng``) as JSON values, or None where it cannot be
        read (CuPy's generators keep theirs on the device, unreadable): a NumPy Generator's
        ``{"kind": "numpy", "bit_generator": rng.bit_generator.state}``."""
        state = getattr(getattr(rng, "bit_generator", None), "state", None)
        if not isinstance(state, dict):
            return None
        return {"kind": "numpy", "bit_generator": state}

    def rng_from_state(self, state: Mapping[str, object]) -> Generator | None:
        """A generator in the ``state`` of ``rng_state``, or None when this backend's generators
        are of another kind. ValueError, TypeError or KeyError if ``state`` is malformed."""
        rng = self.rng(0)
        if state.get("kind") != "numpy" or self.rng_state(rng) is None:
            return None
        rng.bit_generator.state = state["bit_generator"]
        return rng

    def synchronize(self) -> None:
        """Wait until all queued work is done (a no-op on the CPU)."""

    def empty(self, shape: Shape, dtype: DTypeLike) -> Array:
        return self.xp.empty(shape, dtype=dtype)

    def zeros(self, shape: Shape, dtype: DTypeLike) -> Array:
        return self.xp.zeros(shape, dtype=dtype)

    #: the compute precisions of this backend's products (``MLP(precision=)``; the names of
    #: ``xpmlp.core.validation.PRECISIONS``): FP32 only, but on NVIDIA tensor cores
    precisions: tuple[str, ...] = ("fp32",)

    def check_precision(self, precision: object, dtype: DTypeLike) -> str:
        """``precision`` (``MLP(precision=)``) if this backend computes products of ``dtype``
        parameters at it; ``ParameterError`` saying what was asked and what is possible
        otherwise."""
        if precision not in PRECISIONS:
            raise ParameterError(
                f"precision={precision!r} is not valid; expected one of "
                f"{', '.join(map(repr, PRECISIONS))}"
            )
        if precision != "fp32" and numpy.dtype(dtype) != numpy.float32:
            raise ParameterError(
                f"precision={precision!r} rounds the products of float32 parameters; "
                f"dtype={numpy.dtype(dtype).name!r} computes in float64: use "
                "precision='fp32' (the default) with float64, or dtype='float32'"
            )
        if precision == "bf16" and precision not in self.precisions:
            raise ParameterError(
                "precision='bf16' is not available yet: no backend computes BF16 products "
                "(their GEMMs and the kernels on BF16 activations are not written); use "
                "'fp32', or 'tf32' on the cuda backend"
            )
        if precision not in self.precisions:
            raise ParameterError(
                f"precision={precision!r} is not available on the {self.name} backend, which "
                f"computes in {' or '.join(self.precisions)} (TF32 needs NVIDIA tensor cores: "
                "backend='cuda')"
            )
        return str(precision)

    def compute_precision(self, precision: str) -> contextlib.AbstractContextManager[None]:
        """A context in which this backend's products run at ``precision`` (one of
        ``precisions``, checked by ``check_precision``; ``on_backend`` enters it with the
        model's). FP32 everywhere here."""
        return contextlib.nullcontext()

    def deterministic(self) -> contextlib.AbstractContextManager[None]:
        """A context in which results depend only on the inputs: not on the thread count, the
        scheduling or the machine's load (``MLP(deterministic=True)`` trains in it). The
        reference backend's results already do."""
        return contextlib.nullcontext()

    def fused_step(self, model: TrainingModel) -> BatchStep | None:
        """A callable that does ``xpmlp.train.loop.run_epoch``'s whole step for one batch of
        ``model`` (gather, forward, backward, update), with a ``gradients`` method that stops
        before the update (data-parallel training averages the gradients, then calls
        ``MLP.apply_gradients``); or None: this backend runs the operations below one by one
        (the per-op path, which specifies the step)."""
        return None

    def step_kind(self, model: TrainingModel) -> tuple[str, str | None]:
        """The kind of step ``xpmlp.train.loop.run_epoch`` takes for ``model`` on this backend:
        "fused-cpu" (``fused_step``), "cuda-graph" (``epoch_runner``: a recorded step),
        "cuda-eager" (the CUDA backend's kernels launched one by one) or "reference" (the
        per-op path), and, where this backend has a faster step that ``model`` cannot take,
        why not (None otherwise). Here: ("reference", None)."""
        return "reference", None

    def epoch_runner(self, model: TrainingModel) -> EpochRunner | None:
        """A callable that runs the first batches of ``xpmlp.train.loop.run_epoch``'s epoch for
        ``model`` (same arguments) and returns how many it ran, or None: run_epoch steps
        every batch itself. The CUDA backend's replays a recorded step for the full batches
        (``xpmlp.backends.cuda_graph``)."""
        return None

    def record(self, step: Callable[[], None]) -> Callable[[], None]:
        """Run ``step`` (a callable of no arguments queuing one training step) once and return
        what repeats it: here ``step`` itself. The CUDA backend returns the replay of a CUDA
        graph of it (``xpmlp.backends.cuda_graph``)."""
        step()
        return step

    # ------------------------------------------------------------------ data movement
    def permutation(self, rng: Generator, n: int) -> Array:
        """A random permutation of range(n), drawn on the backend's device."""
        return rng.permutation(n)

    def gather_rows(self, X: Array, idx: Array, out: Array) -> None:
        """out[r] = X[idx[r]]: the rows of one shuffled mini-batch."""
        self.xp.take(X, idx, axis=0, out=out)

    def gather_batch(self, X: Array, order: Array, counter: Array, out: Array) -> None:
        """out[r] = X[order[counter[0] * m + r]], m = out.shape[0]: the rows of the epoch's
        batch counter[0] (the batch index read on the device, as a replayed CUDA graph does)."""
        first = int(counter[0]) * out.shape[0]
        self.xp.take(X, order[first : first + out.shape[0]], axis=0, out=out)

    def record_batch(self, counter: Array, stats: Array, batch_stats: Array) -> None:
        """batch_stats[counter[0]] = stats[:2], then counter[0] += 1 (on the device)."""
        c = int(counter[0])
        batch_stats[c] = stats[:2]
        counter[0] += 1

    def store_at(self, counter: Array, value: Array, rows: Array) -> None:
        """rows[counter[0]] = value[0] (on the device)."""
        rows[int(counter[0])] = value[0]

    def matmul(self, a: Array, b: Array, out: Array) -> None:
        """out = a @ b (transposed views are passed to BLAS as flags, not copied)."""
        self.xp.matmul(a, b, out=out)

    # ------------------------------------------------------------------ forward and backward
    def bias_activation(self, Z: Array, b: Array, A: Array, activation: str | Activation) -> None:
        """Forward: Z <- Z + b (in place), A <- f(Z)."""
        Z += b
        A[...] = activation_entry(activation).array(self.array_api, Z)

    def activation_backward(
        self,
        dA: Array,
        Z: Array,
        A: Array,
        delta: Array,
        db: Array,
        activation: str | Activation,
    ) -> None:
        """Backward: delta = dA * f'(Z), given Z and A = f(Z) (delta may be dA);
        db = sum_rows delta."""
        entry = activation_entry(activation)
        delta[...] = dA * array_derivative(entry)(self.array_api, Z, A)
        db[...] = delta.sum(axis=0)

    # ------------------------------------------------------------------ dropout and batch norm
    def bias_activation_dropout(
        self,
        Z: Array,
        b: Array,
        A: Array,
        activation: str | Activation,
        key: MaskKey,
        rate: float,
        first_row: int = 0,
    ) -> None:
        """Forward in training with dropout: Z <- Z + b, A <- mask * f(Z) / (1 - rate), the
        mask from ``key`` (``regularization.dropout_keep_mask``; rows from ``first_row``)."""
        Z += b
        keep = dropout_keep_mask(self.xp, key, Z.shape, rate, first_row)
        f = activation_entry(activation).array(self.array_api, Z)
        A[...] = self.xp.where(keep, f * Z.dtype.type(1.0 / (1.0 - rate)), Z.dtype.type(0.0))

    def activation_backward_dropout(
        self,
        dA: Array,
        Z: Array,
        delta: Array,
        db: Array,
        activation: str | Activation,
        key: MaskKey,
        rate: float,
        first_row: int = 0,
    ) -> None:
        """Backward through dropout and f: delta = dA f'(Z) mask / (1 - rate), f' given Z
        and f(Z) (recomputed: the stored A is the dropped one), the mask recomputed from
        ``key``; db = sum_rows delta. delta may be dA."""
        xp, entry, t = self.xp, activation_entry(activation), Z.dtype.type
        keep = dropout_keep_mask(xp, key, Z.shape, rate, first_row)
        api = self.array_api
        d = dA * array_derivative(entry)(api, Z, entry.array(api, Z)) * t(1.0 / (1.0 - rate))
        delta[...] = xp.where(keep, d, t(0.0))
        db[...] = delta.sum(axis=0)

    def batch_norm_forward(
        self,
        Z: Array,
        b: Array,
        gamma: Array,
        beta: Array,
        stats: Array,
        running_mean: Array,
        running_var: Array,
        Zhat: Array,
        A: Array,
        activation: str | Activation,
        key: MaskKey,
        rate: float,
        momentum: float,
        eps: float,
    ) -> None:
        """Training: Z <- Z + b; the batch's mean mu and biased variance var per column;
        stats = (mu, 1 / sqrt(var + eps)); Zhat = (Z - mu) / sqrt(var + eps);
        A = dropout(f(gamma Zhat + beta)); running <- (1 - momentum) running + momentum batch,
        the variance's unbiased (left alone for a batch of one row)."""
        xp, t, m = self.xp, Z.dtype.type, Z.shape[0]
        Z += b
        mean = Z.sum(axis=0) * t(1.0 / m)
        var = ((Z - mean) ** 2).sum(axis=0) * t(1.0 / m)
        stats[0] = mean
        stats[1] = t(1.0) / xp.sqrt(var + t(eps))
        Zhat[...] = (Z - mean) * stats[1]
        if m > 1:
            mom = t(momentum)
            running_mean[...] = mom * mean + (t(1.0) - mom) * running_mean
            running_var[...] = mom * (var * t(m / (m - 1.0))) + (t(1.0) - mom) * running_var
        f = activation_entry(activation).array(self.array_api, gamma * Zhat + beta)
        keep = dropout_keep_mask(xp, key, Z.shape, rate)
        A[...] = xp.where(keep, f * t(1.0 / (1.0 - rate)), t(0.0))

    def batch_norm_inference(
        self,
        Z: Array,
        b: Array,
        gamma: Array,
        beta: Array,
        running_mean: Array,
        running_var: Array,
        A: Array,
        activation: str | Activation,
        eps: float,
    ) -> None:
        """Inference: Z <- Z + b, A = f(gamma (Z - running_mean) / sqrt(running_var + eps)
        + beta)."""
        xp, t = self.xp, Z.dtype.type
        Z += b
        inv_std = t(1.0) / xp.sqrt(running_var + t(eps))
        BN = gamma * ((Z - running_mean) * inv_std) + beta
        A[...] = activation_entry(activation).array(self.array_api, BN)

    def batch_norm_backward(
        self,
        dA: Array,
        Zhat: Array,
        gamma: Array,
        beta: Array,
        stats: Array,
        delta: Array,
        dgamma: Array,
        dbeta: Array,
        db: Array,
        activation: str | Activation,
        key: MaskKey,
        rate: float,
    ) -> None:
        """Backward through dropout, f and batch norm, from dA = dL/dA: dBN = dA * mask /
        (1 - rate) * f'(BN) (BN = gamma Zhat + beta recomputed), dbeta = sum_rows dBN,
        dgamma = sum_rows dBN Zhat, delta = dL/dZ = gamma / sigma (dBN - mean(dBN) - Zhat
        mean(dBN Zhat)), db = sum_rows delta. delta may be dA."""
        xp, t, m = self.xp, dA.dtype.type, dA.shape[0]
        entry = activation_entry(activation)
        BN = gamma * Zhat + beta
        keep = dropout_keep_mask(xp, key, dA.shape, rate)
        api = self.array_api
        dBN = xp.where(
            keep,
            dA * array_derivative(entry)(api, BN, entry.array(api, BN)) * t(1.0 / (1.0 - rate)),
            t(0.0),
        )
        dbeta[...] = dBN.sum(axis=0)
        dgamma[...] = (dBN * Zhat).sum(axis=0)
        inv_m = t(1.0 / m)
        delta[...] = gamma * stats[1] * (dBN - dbeta * inv_m - Zhat * (dgamma * inv_m))
        db[...] = delta.sum(axis=0)

    def loss_output_delta(
        self,
        Z: Array,
        A: Array,
        Y: Array,
        delta: Array,
        db: Array,
        out_stats: Array,
        skip: Array,
        activation: str | Activation,
        loss: str | Loss,
    ) -> None:
        """Output layer: delta_L = dL/dZ_L, db_L = sum_rows delta_L, and the batch's statistics:
        out_stats[0] = sum of the samples' losses, out_stats[1] = samples classified right;
        skip[0] = 1 when that loss is not finite (skip is never cleared here)."""
        xp, act, entry = self.xp, activation_entry(activation), loss_entry(loss)
        delta[...] = entry.delta(self.array_api, act, Z, A, Y)
        db[...] = delta.sum(axis=0)
        out_stats[0] = entry.array_terms(self.array_api, Z, A, Y).sum()
        out_stats[1] = correct(A, Y).sum()
        skip[0] = xp.where(xp.isfinite(out_stats[0]), skip[0], 1)

    def weight_output_delta(
        self,
        Z: Array,
        A: Array,
        Y: Array,
        r: Array,
        delta: Array,
        db: Array,
        out_stats: Array,
        loss: str | Loss,
    ) -> None:
        """Per-sample weights r (m,) on what ``loss_output_delta`` left: delta_L <- r delta_L
        (row i times r_i), db_L = sum_rows delta_L, out_stats[0] = sum_i r_i l_i. Plain array
        code on every backend (weighted fits only; unweighted ones never call it)."""
        delta *= r[:, None]
        db[...] = delta.sum(axis=0)
        out_stats[0] = (r * loss_entry(loss).array_terms(self.array_api, Z, A, Y)).sum()

    # ------------------------------------------------------------------ optimizer update
    def squared_norm(self, x: Array, out: Array) -> None:
        """out[0] = sum_k x_k^2 (a BLAS dot product here)."""
        out[0:1] = self.xp.dot(x, x)

    def grad_sum_squares(self, g: Array, clip_value: float, out: Array) -> None:
        """out[0] = sum_k clamp(g_k, -clip_value, clip_value)^2 (clip_value = inf: no clamp):
        the squared global norm that gradient-norm clipping reads, written on the device."""
        t = g.dtype.type
        c = self.xp.clip(g, t(-clip_value), t(clip_value))
        out[0:1] = (c * c).sum(keepdims=True)

    def optimizer_step(
        self,
        optimizer: Optimizer,
        p: Array,
        g: Array,
        state: Array,
        hyper: tuple[float, ...],
        decay: float,
        n_decay: int,
        skip: Array,
        l1: float = 0.0,
        clip_value: float = math.inf,
        max_norm: float = 0.0,
        sum_squares: Array | None = None,
    ) -> None:
        """p <- optimizer's rule over the flat parameter vector p (all W, then all b), its
        state rows updated, with the gradient g' it sees (torch's order):

            g' = clamp(g, -clip_value, clip_value) * coef + l1 sign(p) + decay p

        coef = min(1, max_norm / (sqrt(sum_squares[0]) + 1e-6)) when max_norm > 0 (else 1),
        ``sum_squares`` from ``grad_sum_squares``; the L1 and L2 terms on p[:n_decay] (the
        weights) only. Nothing changes when skip[0] is set."""
        xp, t = self.xp, p.dtype.type
        on = xp.zeros_like(p)
        on[:n_decay] = t(1)
        grad = xp.clip(g, t(-clip_value), t(clip_value))
        if max_norm > 0.0 and sum_squares is not None:
            coef = t(max_norm) / (xp.sqrt(sum_squares[0:1]) + t(1e-6))
            grad = grad * xp.where(coef < t(1), coef, t(1))
        grad = (grad + on * t(l1) * xp.sign(p)) + on * t(decay) * p
        new_state = state.copy()
        new_p = optimizer.reference(xp, p, grad, new_state, tuple(t(h) for h in hyper))
        keep = skip[0] != 0
        p[...] = xp.where(keep, p, new_p)
        state[...] = xp.where(keep, state, new_state)

    def optimizer_step_at(
        self,
        optimizer: Optimizer,
        p: Array,
        g: Array,
        state: Array,
        hyper_rows: Array,
        counter: Array,
        decays: Array,
        n_decay: int,
        skip: Array,
        l1: float = 0.0,
        clip_value: float = math.inf,
        max_norm: float = 0.0,
        sum_squares: Array | None = None,
    ) -> None:
        """``optimizer_step`` with the hyperparameters hyper_rows[counter[0]] (one row per
        batch of the epoch, ``Optimizer.hyper_rows``) and the L2 coefficient
        decays[counter[0]], read on the device."""
        b = int(counter[0])
        hyper = tuple(hyper_rows[b].tolist())
        self.optimizer_step(
            optimizer,
            p,
            g,
            state,
            hyper,
            float(decays[b]),
            n_decay,
            skip,
            l1,
            clip_value,
            max_norm,
            sum_squares,
        )
