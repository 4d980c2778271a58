"""The NumPy backend: NumPy arrays, OpenBLAS/MKL matrix products, Numba CPU kernels.

It inherits every operation from the reference ``Backend`` and overrides the
hot ones with the fused kernels of ``xpmlp.kernels.cpu``, each compiled for the
registry entry it is asked about (an activation, a loss after its output
activation, an optimizer's rule) and for the arrays' dtype. Scalars are cast to
that dtype before each call, so a float32 kernel never sees a float64 scalar.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, cast

import numpy

from ..core import config
from ..core.aliases import KernelFunction, NumbaDispatcher
from ..core.regularization import MaskKey, dropout_threshold
from ..kernels import cpu
from ..machine.block_threads import in_task
from . import row_blocks
from .base import (
    Array,
    Backend,
    StepRows,
    TrainingModel,
    activation_entry,
    count_steps,
    dropped_layers,
    loss_entry,
    step_rows,
)

if TYPE_CHECKING:
    from ..core.activations import Activation
    from ..core.layers import BatchNorm
    from ..core.losses import Loss
    from ..core.optim import Optimizer
    from ..core.workspace import Workspace
    from ..kernels.fused_cpu import Regularization
    from .row_blocks import RowBlocks


def cpu_model() -> str:
    """The CPU's model name, as the operating system reports it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: what each template is specialized on, from the registry entry it is asked about (an
#: ``Activation``, a (``Loss``, ``Activation``) pair, a ``Loss``, an optimizer's rule or None,
#: by template: hence ``...``)
_BINDINGS: dict[KernelFunction, Callable[..., dict[str, KernelFunction]]] = {
    cpu.gather_rows: lambda _: {},
    cpu.bias_activation: lambda act: act.forward_bindings(),
    cpu.bias_activation_rows: lambda act: act.forward_bindings(),
    cpu.activation_backward: lambda act: act.backward_bindings(),
    cpu.loss_output_delta: lambda pair: pair[0].kernel_bindings(pair[1]),
    cpu.weight_output_delta: lambda loss: loss.row_bindings(),
    cpu.optimizer_step: lambda rule: {"rule": rule},
    cpu.grad_sum_squares: lambda _: {},
    cpu.bias_activation_dropout: lambda act: act.forward_bindings(),
    cpu.activation_backward_dropout: lambda act: {
        **act.forward_bindings(),
        **act.backward_bindings(),
    },
    cpu.batch_norm_forward: lambda act: act.forward_bindings(),
    cpu.batch_norm_inference: lambda act: act.forward_bindings(),
    cpu.batch_norm_backward: lambda act: {**act.forward_bindings(), **act.backward_bindings()},
}
#: a kernel's key: (template, what it is specialized on (see ``_BINDINGS``), parallel, dtype char)
KernelKey = tuple[KernelFunction, object, bool, str]
_compiled: dict[KernelKey, NumbaDispatcher] = {}
#: the kernel each placeholder of a hidden layer in the fused step is bound to, by the layer's
#: kind and the placeholder's slot (``fused_cpu.layer_placeholders``): (template, whether it is
#: the parallel form on big batches), as the per-op path chooses them
_LAYER_KERNELS: dict[tuple[str, str], tuple[KernelFunction, bool]] = {
    ("plain", "forward"): (cpu.bias_activation, True),
    ("plain", "backward"): (cpu.activation_backward, False),
    ("plain", "wide_backward"): (cpu.activation_backward, True),
    ("dropout", "forward"): (cpu.bias_activation_dropout, True),
    ("dropout", "backward"): (cpu.activation_backward_dropout, False),
    ("dropout", "wide_backward"): (cpu.activation_backward_dropout, True),
    ("norm", "forward"): (cpu.batch_norm_forward, False),
    ("norm", "backward"): (cpu.batch_norm_backward, False),
}


def _kernel(key: KernelKey) -> NumbaDispatcher:
    """The compiled kernel of ``key`` (see ``_build``): one dict subscript when it exists."""
    try:
        return _compiled[key]
    except KeyError:
        return _build(key)


def _build(key: KernelKey) -> NumbaDispatcher:
    """Compile the kernel of ``key`` = (template, about, parallel, dtype char): ``template``
    specialized on ``about`` (a registry entry, a (loss, activation) pair or an optimizer
    rule), its parallel form when ``parallel``. The ops look kernels up in ``_compiled`` with
    one dict access per call, the whole per-step cost of the specialization."""
    template, about, parallel, char = key
    bindings = _BINDINGS[template](about)
    if parallel:
        kernel = cpu.CPU.kernel(
            cpu.PARALLEL[template], char, options={"parallel": True}, **bindings
        )
    else:
        kernel = cpu.CPU.kernel(template, char, **bindings)
    _compiled[key] = kernel
    return kernel


#: the ops the fused step does in one call (a subclass overriding one keeps the per-op path).
FUSED_OPS = (
    "gather_rows",
    "matmul",
    "bias_activation",
    "activation_backward",
    "loss_output_delta",
    "grad_sum_squares",
    "optimizer_step",
    "bias_activation_dropout",
    "activation_backward_dropout",
    "batch_norm_forward",
    "batch_norm_backward",
    "weight_output_delta",
)


class NumpyBackend(Backend):
    """NumPy arrays on the CPU, with fused Numba ``@njit`` kernels.

    ``fused=True`` (the default): ``xpmlp.train.loop`` runs each batch as one compiled call,
    ``fused_step`` (forward, loss, backward and update, dropout and batch norm included, BLAS
    called from Numba), with the per-op path's bits; ``fused=False``, and the models it does
    not cover (``step_kind`` says why), keep the per-op path.
    """

    name = "numpy"

    def __init__(self, fused: bool = True) -> None:
        super().__init__(numpy)
        self._matmul: Callable[[Array, Array, Array], None] | None = None
        self.fused = bool(fused)
        # the compiled steps, one per model, kept here and not on the model (dropped with it)
        self._steps: weakref.WeakKeyDictionary[TrainingModel, FusedStep] = (
            weakref.WeakKeyDictionary()
        )
        # before any kernel runs: a kernel loaded from Numba's cache is not compiled, so the
        # CPU target's own call of it comes too late, and Numba's threads started on its
        # default OpenMP layer, whose spinning threads stalled beside a busy core; and passive
        # waits for OpenMP threads, should the user choose that layer
        config.passive_openmp_waits()
        cpu.choose_threading_layer()

    def step_kind(self, model: TrainingModel) -> tuple[str, str | None]:
        """("fused-cpu", None) when ``fused_step`` runs ``model``'s batches; ("reference",
        why) when the fused step is on but cannot take this model; ("reference", None) with
        ``fused=False``."""
        if not self.fused:
            return "reference", None
        why = self._not_fused(model)
        return ("reference", why) if why is not None else ("fused-cpu", None)

    def _not_fused(self, model: TrainingModel) -> str | None:
        """Why ``model`` cannot take the fused step on this backend, or None."""
        hidden = model.activation_entries[:-1]
        if any(a.row is not None for a in hidden):
            return "the fused CPU step does not support row activations in hidden layers"
        cls = type(self)
        changed = [op for op in FUSED_OPS if getattr(cls, op) is not getattr(NumpyBackend, op)]
        if changed:  # a subclass changed an op the fused step would skip: keep its ops
            return (
                f"{cls.__name__} overrides {', '.join(changed)}, which the fused CPU step "
                "would not call"
            )
        from ..machine import blas

        if blas.provider().cblas_gemm(model.dtype.char) is None:
            return (
                "no loaded BLAS library exports the cblas_"
                f"{'s' if model.dtype.char == 'f' else 'd'}gemm the fused CPU step calls"
            )
        return None

    def fused_step(self, model: TrainingModel) -> FusedStep | None:
        """The fused training step of ``model`` (``FusedStep``), or None where this backend
        was not asked for it or the model needs the per-op path (``step_kind`` says why:
        a row activation (softmax) in a hidden layer, no BLAS function to call, a subclass
        overriding one of ``FUSED_OPS``)."""
        if not self.fused or self._not_fused(model) is not None:
            return None
        step = self._steps.get(model)
        if step is None or step.model_dtype != model.dtype:
            step = self._steps[model] = FusedStep(model)
        return step

    def deterministic(self) -> contextlib.AbstractContextManager[None]:
        """BLAS on a fixed thread count (``xpmlp.machine.blas.fixed_threads``); the Numba
        kernels cut their work into fixed chunks at any thread count."""
        from ..machine import blas

        return blas.fixed_threads()

    @property
    def device(self) -> str:
        import numba

        threads = numba.get_num_threads()
        return f"CPU: {cpu_model()} ({os.cpu_count()} cores, {threads} Numba threads)"

    def matmul(self, a: Array, b: Array, out: Array) -> None:
        """out = a @ b through the one BLAS ``xpmlp.machine.blas`` uses (Intel MKL where it is
        installed, else NumPy's OpenBLAS; ``XPMLP_BLAS`` names one).
        Transposed views go to BLAS as they are, without copies."""
        matmul = self._matmul
        if matmul is None:
            from ..machine import blas

            matmul = self._matmul = blas.provider().matmul
        matmul(a, b, out)

    def gather_rows(self, X: Array, idx: Array, out: Array) -> None:
        key = (cpu.gather_rows, None, out.size >= cpu.PARALLEL_MIN_ELEMENTS, X.dtype.char)
        _kernel(key)(X, idx, out)

    def bias_activation(self, Z: Array, b: Array, A: Array, activation: str | Activation) -> None:
        entry = activation_entry(activation) if isinstance(activation, str) else activation
        template = cpu.bias_activation if entry.row is None else cpu.bias_activation_rows
        key = (template, entry, Z.size >= cpu.PARALLEL_MIN_ELEMENTS, Z.dtype.char)
        _kernel(key)(Z, b, A)

    def activation_backward(
        self,
        dA: Array,
        Z: Array,
        A: Array,
        delta: Array,
        db: Array,
        activation: str | Activation,
    ) -> None:
        entry = activation_entry(activation) if type(activation) is str else activation
        key = (cpu.activation_backward, entry, dA.size >= cpu.PARALLEL_MIN_ELEMENTS, dA.dtype.char)
        _kernel(key)(dA, Z, A, delta, db)

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
        entry = activation_entry(activation)
        key_ = (
            cpu.bias_activation_dropout,
            entry,
            Z.size >= cpu.PARALLEL_MIN_ELEMENTS,
            Z.dtype.char,
        )
        _kernel(key_)(
            Z, b, A, first_row, int(key), dropout_threshold(rate), Z.dtype.type(1.0 / (1.0 - rate))
        )

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
        entry = activation_entry(activation)
        key_ = (
            cpu.activation_backward_dropout,
            entry,
            dA.size >= cpu.PARALLEL_MIN_ELEMENTS,
            dA.dtype.char,
        )
        _kernel(key_)(
            dA,
            Z,
            delta,
            db,
            first_row,
            int(key),
            dropout_threshold(rate),
            dA.dtype.type(1.0 / (1.0 - rate)),
        )

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
        t, m = Z.dtype.type, Z.shape[0]
        kernel = _kernel(
            (cpu.batch_norm_forward, activation_entry(activation), False, Z.dtype.char)
        )
        kernel(
            Z,
            b,
            gamma,
            beta,
            stats,
            running_mean,
            running_var,
            Zhat,
            A,
            t(momentum if m > 1 else 0.0),
            t(eps),
            t(1.0 / m),
            t(1.0 / max(m - 1, 1)),
            int(key),
            dropout_threshold(rate),
            t(1.0 / (1.0 - rate)),
        )

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
        kernel = _kernel(
            (cpu.batch_norm_inference, activation_entry(activation), False, Z.dtype.char)
        )
        kernel(Z, b, gamma, beta, running_mean, running_var, A, Z.dtype.type(eps))

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
        t = dA.dtype.type
        kernel = _kernel(
            (cpu.batch_norm_backward, activation_entry(activation), False, dA.dtype.char)
        )
        kernel(
            dA,
            Zhat,
            gamma,
            beta,
            stats,
            delta,
            dgamma,
            dbeta,
            db,
            t(1.0 / dA.shape[0]),
            int(key),
            dropout_threshold(rate),
            t(1.0 / (1.0 - rate)),
        )

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
        if type(loss) is str or type(activation) is str:
            loss, activation = loss_entry(loss), activation_entry(activation)
        key = (cpu.loss_output_delta, (loss, activation), False, Z.dtype.char)
        kernel = _kernel(key)
        kernel(Z, A, Y, delta, db, out_stats, skip, Z.dtype.type(1.0 / Z.shape[0]))

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
        if type(loss) is str:
            loss = loss_entry(loss)
        _kernel((cpu.weight_output_delta, loss, False, Z.dtype.char))(
            Z, A, Y, r, delta, db, out_stats
        )

    def grad_sum_squares(self, g: Array, clip_value: float, out: Array) -> None:
        key = (cpu.grad_sum_squares, None, g.size >= cpu.PARALLEL_MIN_ELEMENTS, g.dtype.char)
        _kernel(key)(g, g.dtype.type(clip_value), out)

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
        t = p.dtype.type
        parallel = p.size >= cpu.PARALLEL_MIN_ELEMENTS
        key = (cpu.optimizer_step, optimizer.rule, parallel, p.dtype.char)
        kernel = _kernel(key)
        if sum_squares is None:  # read by the kernel only when max_norm > 0
            sum_squares = skip
        kernel(
            p,
            g,
            state,
            0,
            tuple(map(t, hyper)),
            t(decay),
            n_decay,
            skip,
            t(l1),
            t(clip_value),
            t(max_norm),
            sum_squares,
        )


#: the fused step's ``cuts`` argument: per layer, the row cuts of its forward, dW and dA products
Cuts = tuple[tuple[Array, ...], tuple[Array, ...], tuple[Array, ...]]

#: what ``FusedStep`` keeps of the last workspace it ran (one per epoch): the workspace, its Z,
#: A and delta lists as tuples, the buffers of the forward products' twins, the compiled step,
#: the hidden layers' ``wide`` flags, the ``hidden`` argument (``FusedStep.regularization``)
#: and the row-weight buffer
_Views = tuple[
    "Workspace",
    tuple[Array, ...],
    tuple[Array, ...],
    tuple[Array, ...],
    tuple[Array, ...],
    bool,
    Array,
    "Regularization | None",
    Array,
]


class FusedStep:
    """``kernels.fused_cpu.train_step`` compiled for one model. Per epoch, ``rows =
    step.epoch_rows(factors, decays)`` sets the per-batch scalars once (the optimizer's
    hyperparameters, the L2 coefficient and the dropout masks' keys of every batch); then
    ``step(X, Y, idx, ws, out_stats, skip, rows, b)`` does what ``run_epoch`` does for the
    epoch's b-th batch on the per-op path (``step_plan.ops`` by ``MLP.run_ops``, then
    ``apply_gradients``) in one call, reading row b, and ``step.finish_epoch(rows, taken)``
    counts the steps taken. ``step.gradients(X, Y, idx, ws, out_stats, skip)`` stops before
    the update (data-parallel training: the gradients are averaged over the ranks, then
    ``MLP.apply_gradients`` runs the optimizer's kernel).

    With more than one thread, a batch is cut into row blocks, one thread each
    (``row_blocks``: each block's gradients, then each thread's share of the update);
    ``row_blocks(ws)`` says how a workspace's batches are cut."""

    @property
    def model(self) -> TrainingModel:
        """The model this step was compiled for (held weakly: the backend's cache of steps
        must not keep it alive): ReferenceError once it was collected, as ``GraphedEpoch``'s."""
        model = self._model()
        if model is None:
            raise ReferenceError("the model of this FusedStep was garbage-collected")
        return model

    def __init__(self, model: TrainingModel) -> None:
        self._model, self.model_dtype = weakref.ref(model), model.dtype
        self._kernels: dict[bool | str, NumbaDispatcher] = {}
        self._widest = max(model.layer_sizes)
        from ..machine import blas

        provider = blas.provider()
        #: the process's cblas_?gemm (MKL's or NumPy's: ``xpmlp.machine.blas``), for every product
        self.cblas = provider.cblas_gemm(model.dtype.char)
        #: the threads a batch may be cut into row blocks on, one BLAS thread each
        #: (``row_blocks``; batch norm's statistics are the whole batch's)
        one_thread = None if any(model.batch_norm) else provider.one_thread()
        self._block_threads = None if one_thread is None else row_blocks.block_threads(one_thread)
        #: whether BLAS runs one product on several threads itself (``MatmulProvider.threaded``):
        #: past ``row_blocks.BLOCK_MAX_WORK`` a batch is then one block
        self._threaded_blas = provider.threaded
        #: the route: which forward products are twins and where products are cut
        #: (``MatmulProvider.twin``, ``MatmulProvider.row_cuts``)
        self._provider = provider
        #: the products' row cuts per (rows, parts) (``cuts``), and the cuts of whole products
        self._cuts: dict[tuple[int, int], Cuts] = {}
        whole = numpy.zeros(1, numpy.int64)
        self._whole = cast("Cuts", tuple(tuple(whole for _ in model.layers) for _ in range(3)))
        #: the last workspace's blocks, with the (thread count, deterministic) they were cut for
        self._blocks: tuple[Workspace, tuple[int, bool], RowBlocks | None] | None = None
        layers = model.layers
        self.Ws = tuple(layer.W for layer in layers)
        self.bs = tuple(layer.b for layer in layers)
        self.dWs = tuple(layer.dW for layer in layers)
        self.dbs = tuple(layer.db for layer in layers)
        #: where each layer's weights start in the flat parameter vector (and where they end)
        self.w_at = numpy.cumsum([0] + [W.size for W in self.Ws], dtype=numpy.int64)
        #: the hidden layers with dropout: their masks' keys change every step
        self._dropped = dropped_layers(model)
        self._views: _Views | None = None  # the last workspace's (one per epoch)

    def twin_buffers(self, rows: int) -> tuple[Array, ...]:
        """Per layer, the buffer of Z^T (outputs x ``rows``) where a block of ``rows`` rows
        computes Z = A W^T as its twin (``MatmulProvider.twin``), else an empty array
        (``fused_cpu.forward_product``)."""
        dtype = self.model_dtype
        return tuple(
            numpy.empty(
                (W.shape[0], rows) if self._provider.twin(rows, W.shape[0], dtype.char) else (0, 0),
                dtype,
            )
            for W in self.Ws
        )

    def cuts(self, rows: int) -> Cuts:
        """Per layer, where a step of ``rows`` rows in one block cuts its products into parts
        of their rows, one Numba thread each (``fused_cpu.gemm_split``): (forward Z = A W^T,
        dW = delta^T A, dA = delta W), as the route's ``matmul`` cuts the same products
        (``MatmulProvider.row_cuts``: NumPy's OpenBLAS runs a product on one thread)."""
        key = (rows, self._provider.parts)
        cuts = self._cuts.get(key)
        if cuts is None:
            row_cuts = self._provider.row_cuts

            def array(m: int, n: int, k: int) -> Array:
                return numpy.array(row_cuts(m, n, k), numpy.int64)

            shapes = [W.shape for W in self.Ws]  # (n_out, n_in)
            cuts = self._cuts[key] = (
                tuple(array(rows, n_out, n_in) for n_out, n_in in shapes),
                tuple(array(n_out, n_in, rows) for n_out, n_in in shapes),
                tuple(array(rows, n_in, n_out) for n_out, n_in in shapes),
            )
        return cuts

    def epoch_rows(self, factors: Sequence[float], decays: Array | None = None) -> StepRows:
        """The scalars of the next ``len(factors)`` steps (``base.step_rows``): the compiled
        step reads them, so nothing on the host changes between batches."""
        return step_rows(self.model, factors, decays)

    def finish_epoch(self, rows: StepRows, taken: int) -> None:
        """Count the first ``taken`` steps of ``rows``, the ones that ran
        (``base.count_steps``)."""
        count_steps(self.model, rows, taken)

    def kernel(self, big: bool) -> NumbaDispatcher:
        """The compiled step: ``fused_cpu.train_step`` generated from the model's plan
        (``MLP.step_plan``), each placeholder bound to the compiled kernel of its layer's
        activation and kind, with the parallel elementwise kernels when ``big`` (and the
        hidden layers' backward kernels for those ``wide`` marks, as the per-op path chooses
        them by each layer's size)."""
        compiled = self._kernels.get(big)
        if compiled is None:
            from ..kernels import fused_cpu

            whole = self.model.params.size >= cpu.PARALLEL_MIN_ELEMENTS
            compiled = self._kernels[big] = self._compile(fused_cpu.generated_step, big, whole)
        return compiled

    def update_kernel(self) -> NumbaDispatcher:
        """The compiled ``update_step`` of the model's plan (``fused_cpu.generated_update``):
        the update of a share of the parameters after the row blocks' gradients, with the
        serial kernels (each share runs on a thread of its own)."""
        compiled = self._kernels.get("update")
        if compiled is None:
            from ..kernels import fused_cpu

            compiled = self._kernels["update"] = self._compile(
                fused_cpu.generated_update, False, False
            )
        return compiled

    def _compile(
        self, generate: Callable[..., Callable[..., None]], big: bool, whole: bool
    ) -> NumbaDispatcher:
        """``generate(ops, directory)`` compiled with every placeholder bound: the parallel
        elementwise kernels when ``big``, the parallel update when ``whole``."""
        from ..kernels import fused_cpu

        model, char = self.model, self.model_dtype.char
        ops = [op.as_tuple() for op in model.step_plan.ops]
        template = generate(ops, config.user_cache_dir("steps"))
        entries = model.activation_entries
        layers = {}
        for name, (l, kind, slot) in fused_cpu.layer_placeholders(ops).items():
            kernel_template, parallel = _LAYER_KERNELS[kind, slot]
            layers[name] = _kernel((kernel_template, entries[l], parallel and big, char))
        output = entries[-1]
        out_template = cpu.bias_activation if output.row is None else cpu.bias_activation_rows
        return fused_cpu.FUSED.kernel(
            template,
            char,
            output_forward=_kernel((out_template, output, False, char)),
            output_loss=_kernel((cpu.loss_output_delta, (model.loss_entry, output), False, char)),
            update=_kernel((cpu.optimizer_step, model.optimizer.rule, whole, char)),
            sum_squares_of=_kernel((cpu.grad_sum_squares, None, whole, char)),
            gather=_kernel((cpu.gather_rows, None, big, char)),
            # called only for row weights, an argument of each call (``train_step``'s weights)
            weigh_output=_kernel((cpu.weight_output_delta, model.loss_entry, False, char)),
            **layers,
        )

    def regularization(self, ws: Workspace) -> Regularization | None:
        """``train_step``'s ``hidden`` for batches of ``ws.rows`` rows: None for a model
        without dropout and batch norm, else the settings and arrays of its hidden layers
        (``fused_cpu.Regularization``), as ``Dense`` gives them to the per-op kernels."""
        model = self.model
        if not model._regularized:
            return None
        from ..kernels.fused_cpu import Regularization

        t, m = model.dtype.type, ws.rows
        hidden = model.layers[:-1]
        vector, matrix = numpy.empty(0, model.dtype), numpy.empty((0, 0), model.dtype)

        def norms(get: Callable[[BatchNorm], Array], missing: Array) -> tuple[Array, ...]:
            return tuple(missing if layer.norm is None else get(layer.norm) for layer in hidden)

        return Regularization(
            thresholds=numpy.array(
                [dropout_threshold(layer.dropout) for layer in hidden], numpy.int64
            ),
            scales=numpy.array([t(1.0 / (1.0 - layer.dropout)) for layer in hidden]),
            momenta=numpy.array(
                [
                    t(0.0 if layer.norm is None or m == 1 else layer.norm.momentum)
                    for layer in hidden
                ]
            ),
            eps=numpy.array([t(0.0 if layer.norm is None else layer.norm.eps) for layer in hidden]),
            inv_m1=t(1.0 / max(m - 1, 1)),
            Zhats=tuple(matrix if z is None else z for z in ws.Zhat[: len(hidden)]),
            stats=tuple(matrix if s is None else s for s in ws.stats[: len(hidden)]),
            gammas=norms(lambda bn: bn.gamma, vector),
            betas=norms(lambda bn: bn.beta, vector),
            dgammas=norms(lambda bn: bn.dgamma, vector),
            dbetas=norms(lambda bn: bn.dbeta, vector),
            means=norms(lambda bn: bn.running_mean, vector),
            variances=norms(lambda bn: bn.running_var, vector),
        )

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
    ) -> None:
        """The whole step of the batch X[idx], Y[idx]: gradients and update, with the
        scalars of ``rows[row]`` (``epoch_rows``). ``row_weights`` = (w, s): the sample
        weights w of every row of X and this batch's factor s, r_i = w[idx[i]] s on the
        output delta and loss (``MLP.backward_pass``'s ``row_weights``)."""
        self._run(X, Y, idx, ws, out_stats, skip, rows, row, row_weights, True)

    def gradients(
        self,
        X: Array,
        Y: Array,
        idx: Array,
        ws: Workspace,
        out_stats: Array,
        skip: Array,
        row_weights: tuple[Array, float] | None = None,
    ) -> None:
        """The step up to the gradients (``model.grads``, the loss in ``out_stats``, ``skip``
        set for a non-finite loss); the update is the caller's (``MLP.apply_gradients``),
        which counts the optimizer's step; the dropout step is counted here."""
        rows = self.epoch_rows([1.0])
        self._run(X, Y, idx, ws, out_stats, skip, rows, 0, row_weights, False)
        if self._dropped:
            self.model.dropout_steps += 1

    def _run(
        self,
        X: Array,
        Y: Array,
        idx: Array,
        ws: Workspace,
        out_stats: Array,
        skip: Array,
        rows: StepRows,
        row: int,
        row_weights: tuple[Array, float] | None,
        update_now: bool,
    ) -> None:
        views = self._views
        if views is None or views[0] is not ws:
            big = ws.rows * self._widest >= cpu.PARALLEL_MIN_ELEMENTS
            # the hidden layers whose backward kernel the per-op path runs in parallel
            wide = numpy.array(
                [d.size >= cpu.PARALLEL_MIN_ELEMENTS for d in ws.delta[:-1]], dtype=numpy.bool_
            )
            views = self._views = (
                ws,
                tuple(ws.Z),
                tuple(ws.A),
                tuple(ws.delta),
                self.twin_buffers(ws.rows),
                big,  # the kernel is looked up when one block runs (blocks use the serial one)
                wide,
                self.regularization(ws),
                numpy.empty(ws.rows, self.model_dtype),
            )
        _, Zs, As, deltas, Zts, big, wide, hidden, r = views
        blocks = self.row_blocks(ws) if update_now else None
        if blocks is not None:
            self._run_blocks(blocks, X, Y, idx, out_stats, skip, rows, row, row_weights, hidden)
            return
        kernel = self.kernel(big)
        weights = None
        if row_weights is not None:
            from ..kernels.fused_cpu import RowWeights

            t = self.model_dtype.type
            weights = RowWeights(row_weights[0], t(row_weights[1]), r)  # r: (ws.rows,)
        cuts = self._whole if in_task() else self.cuts(ws.rows)
        kernel(
            self.cblas, X, Y, idx, self.Ws, self.bs, self.dWs, self.dbs, Zs, As, deltas, Zts, cuts,
            ws.Y,
            out_stats, skip, *self._scalars_and_state(ws.rows, rows, row, wide, hidden), weights,
            update_now, 0,
        )  # fmt: skip

    def _scalars_and_state(
        self, m: int, rows: StepRows, row: int, wide: Array, hidden: Regularization | None
    ) -> tuple[object, ...]:
        """``train_step``'s arguments from ``inv_m`` to ``keys`` (``fused_cpu.PARAMETERS``)
        for a batch of ``m`` rows: the step's scalars, the parameters, gradients and optimizer
        state, row ``row`` of the epoch's ``rows``."""
        model = self.model
        opt = model.optimizer
        t = model.dtype.type
        return (
            t(1.0 / m),
            model.params,
            model.grads,
            opt.state,
            rows.hyper,
            rows.decays,
            row,
            model.n_weights,
            self.w_at,
            t(opt.l1),
            t(math.inf if opt.clip_grad_value is None else opt.clip_grad_value),
            t(0.0 if opt.clip_grad_norm is None else opt.clip_grad_norm),
            opt.sum_squares,
            wide,
            hidden,
            rows.keys,
        )

    def row_blocks(self, ws: Workspace) -> RowBlocks | None:
        """The blocks ``ws``'s batches are cut into (``row_blocks.block_count``: by the rows,
        the weights, the thread count and deterministic mode), or None for one block (the
        plain fused step) and where the step is not cut (batch norm)."""
        if self._block_threads is None:
            return None
        import numba

        model = self.model
        threads, deterministic = numba.get_num_threads(), model.deterministic
        cached = self._blocks
        if cached is not None and cached[0] is ws and cached[1] == (threads, deterministic):
            return cached[2]
        n = row_blocks.block_count(
            ws.rows, model.n_weights, threads, deterministic, self._threaded_blas
        )
        blocks = None
        if n > 1:
            blocks = row_blocks.RowBlocks.cut(
                ws, n, threads, model.grads, self.dWs, self.dbs, self.twin_buffers
            )
        self._blocks = (ws, (threads, deterministic), blocks)
        return blocks

    def _run_blocks(
        self,
        blocks: RowBlocks,
        X: Array,
        Y: Array,
        idx: Array,
        out_stats: Array,
        skip: Array,
        rows: StepRows,
        row: int,
        row_weights: tuple[Array, float] | None,
        hidden: Regularization | None,
    ) -> None:
        """The step with the batch in ``blocks`` (``row_blocks``): each block's gradients on
        its thread, then each thread's share of the parameters added up and updated."""
        from ..kernels.fused_cpu import RowWeights

        model = self.model
        t = model.dtype.type
        kernel, update = self.kernel(False), self.update_kernel()
        # every block's 1/m is the whole batch's: the blocks' gradients add up to its mean's
        shared = self._scalars_and_state(blocks.ws.rows, rows, row, blocks.wide, hidden)
        edges, n_blocks, n_threads = blocks.rows, len(blocks.rows) - 1, blocks.threads
        blocks.skips[...] = 0

        def gradients(c: int) -> None:
            a = edges[c]
            weights = None
            if row_weights is not None:
                weights = RowWeights(row_weights[0], t(row_weights[1]), blocks.rs[c])
            kernel(
                self.cblas, X, Y, idx[a : edges[c + 1]], self.Ws, self.bs, blocks.dWs[c],
                blocks.dbs[c], blocks.Zs[c], blocks.As[c], blocks.deltas[c], blocks.Zts[c],
                self._whole, blocks.Ys[c], blocks.stats[c], blocks.skips[c], *shared, weights,
                False, a,
            )  # fmt: skip

        def share(lo: int, hi: int) -> None:
            update(
                self.cblas, X, Y, idx, self.Ws, self.bs, self.dWs, self.dbs, blocks.Zs[0],
                blocks.As[0], blocks.deltas[0], blocks.Zts[0], self._whole, blocks.Ys[0],
                out_stats, skip, *shared, None, True, 0, blocks.parts, blocks.skips, lo, hi,
            )  # fmt: skip

        # with norm clipping one share, all of g (the norm is the whole gradient's)
        n = model.params.size
        cuts = blocks.shares if not model.optimizer.clip_grad_norm else [0] + [n] * n_threads

        def thread_blocks(i: int) -> Callable[[], None]:
            def task() -> None:
                for c in range(i, n_blocks, n_threads):
                    gradients(c)

            return task

        def thread_share(i: int) -> Callable[[], None]:
            def task() -> None:
                if cuts[i] < cuts[i + 1]:
                    share(cuts[i], cuts[i + 1])

            return task

        threads = cast("row_blocks.BlockThreads", self._block_threads)  # row_blocks cut them
        threads.run(
            [
                [thread_blocks(i) for i in range(n_threads)],
                [thread_share(i) for i in range(n_threads)],
            ]
        )
        numpy.sum(blocks.stats, axis=0, out=out_stats)
