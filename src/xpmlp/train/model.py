"""The multi-layer perceptron, written once against the backend's array namespace.

    model = MLP([784, 512, 256, 10])             # ReLU hidden layers, softmax output
    model.fit(X, y, epochs=5, batch_size=128)    # mini-batch training (xpmlp.train.loop)
    model.predict(X); model.predict_proba(X); model.score(X, y)

For learners, one step by hand:

    fp = model.forward(X)            # fp.Z[l], fp.A[l] per layer (A[0] is X)
    g = model.backward(fp, y)        # g.delta[l], g.dW[l], g.db[l], g.loss
    model.step()                     # p <- optimizer update(p, grad)

For trainers (``xpmlp.train.loop``, the benchmark, estimators, distributed
training), one batch at a time on device arrays: ``to_device``, ``workspace``,
``compute_gradients``, ``apply_gradients``.

Nothing here names NumPy or CuPy: every array comes from ``self.backend``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Generic, TypedDict, TypeVar, cast, overload

from ..backends import Backend, get_backend
from ..backends.base import on_backend
from ..backends.device_data import DeviceData, data_for, encode_targets
from ..core import losses
from ..core.activations import ACTIVATIONS, Activation
from ..core.aliases import Array, Generator, Record
from ..core.architecture import (
    _parameter_shapes,
    check_hidden_activations,
    check_layer_sizes,
    check_output_units,
    optimizer_for,
    parameter_count,
)
from ..core.errors import NotDifferentiableError, ParameterError
from ..core.init import INITIALIZERS, init_weights
from ..core.layers import BatchNorm, Dense
from ..core.optim import Optimizer
from ..core.plan import Op, StepPlan, step_plan
from ..core.regularization import MaskKey, check_batch_norm, check_dropout, dropout_key
from ..core.validation import Choice, Number, check_numeric, check_params
from ..core.workspace import PREDICT_CHUNK, ForwardPass, Gradients, Workspace, memory_for
from .state import TrainState

if TYPE_CHECKING:  # numpy.typing only for the checker: importing it sets numpy.typing
    from numpy.typing import ArrayLike
    from typing_extensions import Unpack

    from .loop import FitOptions
    from .state import SchedulePosition

CONSTRAINTS = {
    "init": Choice(INITIALIZERS),
    "dtype": Choice(("float32", "float64")),
    "seed": Number(0, None, integer=True),
}

_Field = TypeVar("_Field")


class Description(TypedDict):
    """``MLP.describe()``: the architecture as JSON-ready settings."""

    layer_sizes: list[int]
    activations: list[str]
    loss: str
    dropout: list[float]
    batch_norm: list[bool]


class _StateField(Generic[_Field]):
    """A model attribute that is a field of its ``train_state_`` (read and written there),
    of that field's type; ``writable=False``: an array the layers view, copied into, never
    replaced."""

    def __init__(self, name: str, writable: bool = True) -> None:
        self.name, self.writable = name, writable

    def __set_name__(self, owner: type, attribute: str) -> None:
        self.attribute = attribute

    @overload
    def __get__(self, model: None, owner: type | None = None) -> _StateField[_Field]: ...
    @overload
    def __get__(self, model: MLP, owner: type | None = None) -> _Field: ...
    def __get__(self, model: MLP | None, owner: type | None = None) -> _Field | _StateField[_Field]:
        if model is None:
            return self
        value: _Field = getattr(model.train_state_, self.name)
        return value

    def __set__(self, model: MLP, value: _Field) -> None:
        if not self.writable:
            raise AttributeError(
                f"{self.attribute} is viewed by the layers: copy into it "
                f"(model.{self.attribute}[...] = values), do not replace it"
            )
        setattr(model.train_state_, self.name, value)


class MLP:
    """A multi-layer perceptron trained by backpropagation.

    Parameters
    ----------
    layer_sizes : sequence of int
        Units per layer, input first: ``[784, 512, 256, 10]``.
    activation : str or sequence of str
        Hidden layers' activation(s), from ``xpmlp.core.activations.ACTIVATIONS`` (the built-ins
        and those added by ``xpmlp.register_activation``).
    output_activation : str, optional
        Defaults from the loss: softmax (cross_entropy), sigmoid
        (binary_cross_entropy), identity (squared errors).
    loss : str
        From ``xpmlp.core.losses.LOSSES``.
    optimizer : str or Optimizer
        A name from ``xpmlp.core.optim.OPTIMIZERS`` (with the keywords below; the built-ins and
        those added by ``xpmlp.register_optimizer``), or an optimizer object, e.g.
        ``xpmlp.core.optim.Adam(learning_rate=1e-3, weight_decay=1e-4)``.
    learning_rate, momentum, beta1, beta2, eps, weight_decay : float, optional
        With an optimizer name only, and only those that optimizer takes (momentum for
        momentum, nesterov and rmsprop; beta1 and beta2 for adam; eps for adam, rmsprop and
        adagrad; weight_decay, L2 on the weights, for all); each one left out takes that
        optimizer's default (``xpmlp.core.optim``: momentum 0.9, Adam's betas 0.9 and 0.999, eps
        as PyTorch's, no weight decay). Each one given with an optimizer object, or to an
        optimizer that does not take it, raises ``ParameterError``: nothing is dropped.
    l1, clip_grad_norm, clip_grad_value : float, optional
        With an optimizer name only (an optimizer object takes them as its own keywords):
        L1 penalty on the weights (+ l1 sign(W) on their gradient), and clipping of the loss
        gradient before the penalties, by its global L2 norm over all parameters and by value,
        as ``torch.nn.utils.clip_grad_norm_`` and ``clip_grad_value_`` (``xpmlp.core.optim``).
    init : str
        auto (each activation's default: He before ReLU-like, else Xavier), he or xavier.
    dtype : str
        float32 (default) or float64.
    backend : str or Backend, optional
        numpy, cuda or auto (default: ``XPMLP_BACKEND``, else auto).
    seed : int
        Seeds initialization, shuffling and the dropout masks: same seed, same backend, same
        bits (the masks are the same on every backend).
    dropout : float or sequence of float
        Dropout rate in [0, 1) after each hidden layer's activation (one rate, or one per
        hidden layer), in training only: A = mask * f(.) / (1 - rate); default 0 (none).
    batch_norm : bool or sequence of bool
        Batch normalization between each hidden layer's Dense transform and its activation
        (one flag, or one per hidden layer), as ``torch.nn.BatchNorm1d`` (eps 1e-5, momentum
        0.1): batch statistics in training, running estimates at inference. gamma (init 1)
        and beta (init 0) sit in the flat parameter vector after the biases, trained by every
        optimizer and, like the biases, not weight-decayed.
    deterministic : bool
        Train so that the bits depend only on the data, the options and the seed: not on the
        thread count (1, 2, 4, ...), the scheduling or the machine's load. On the CPU the
        BLAS library then splits each product among a fixed number of threads
        (``xpmlp.machine.blas.DETERMINISTIC_THREADS``, whatever ``--threads`` says); the GPU's
        kernels sum in a fixed order always (no atomics). Default False: BLAS uses the
        process's threads, and a seed gives the same bits at the same thread count.
    precision : {"fp32", "tf32", "bf16"}
        The compute precision of the matrix products (``xpmlp.core.validation.PRECISIONS``):
        "fp32" (default); "tf32" on NVIDIA tensor cores (inputs rounded to a 10-bit
        mantissa, FP32 sums; the cuda backend). Parameters, gradients and optimizer state
        stay in ``dtype`` (FP32 master weights). A precision the backend does not offer
        (``Backend.precisions``: the numpy backend computes in fp32 only; bf16 is not
        written yet) is a ``ParameterError``.

    After training: ``history_`` (a record per epoch), ``epoch_`` (epochs trained),
    ``steps_`` (optimizer steps), ``lr_schedule_`` (the last fit's schedule position) and
    ``buffers`` (named non-parameter arrays): with the parameters, the optimizer, the
    generator and the dropout step, fields of the one training state ``train_state_``
    (``xpmlp.TrainState``), which ``state_dict``, ``save_model`` and pickles carry
    (``xpmlp.train.checkpoint``).
    """

    def __init__(
        self,
        layer_sizes: Sequence[int],
        *,
        activation: str | Sequence[str] = "relu",
        output_activation: str | None = None,
        loss: str = "cross_entropy",
        optimizer: str | Optimizer = "adam",
        learning_rate: float | None = None,
        momentum: float | None = None,
        beta1: float | None = None,
        beta2: float | None = None,
        eps: float | None = None,
        weight_decay: float | None = None,
        l1: float | None = None,
        clip_grad_norm: float | None = None,
        clip_grad_value: float | None = None,
        init: str = "auto",
        dtype: str = "float32",
        backend: str | Backend | None = None,
        device: int | None = None,
        seed: int = 0,
        dropout: float | Sequence[float] = 0.0,
        batch_norm: bool | Sequence[bool] = False,
        deterministic: bool = False,
        precision: str = "fp32",
    ) -> None:
        sizes = check_layer_sizes(layer_sizes)
        loss_entry = losses.LOSSES.check("loss", loss)
        output_activation = output_activation or loss_entry.default_output
        hidden = check_hidden_activations(activation, len(sizes) - 2)
        output, loss_entry = losses.check_pairing(output_activation, loss)
        check_output_units(output, sizes[-1])
        check_params({"init": init, "dtype": str(dtype), "seed": seed}, CONSTRAINTS)
        self.dropout = check_dropout(dropout, len(sizes) - 2)
        self.batch_norm = check_batch_norm(batch_norm, len(sizes) - 2)
        opt = optimizer_for(
            optimizer,
            learning_rate,
            momentum=momentum,
            beta1=beta1,
            beta2=beta2,
            eps=eps,
            weight_decay=weight_decay,
            l1=l1,
            clip_grad_norm=clip_grad_norm,
            clip_grad_value=clip_grad_value,
        )
        self.layer_sizes = sizes
        self.activation_entries: list[Activation] = [*hidden, output]
        self.loss_entry = loss_entry
        self.init = init
        self.seed = seed
        if not isinstance(deterministic, bool):
            raise ParameterError(f"deterministic={deterministic!r}: expected True or False")
        self.deterministic = bool(deterministic)
        self.backend = get_backend(backend, device=device)
        self.dtype = self.backend.xp.dtype(str(dtype))
        with (
            self.backend.activate(),
            memory_for(
                f"the parameters, gradients and {opt.name} state of layers "
                f"{'-'.join(map(str, sizes))}",
                4 * parameter_count(sizes, self.batch_norm),
                self.dtype.itemsize,
                "smaller layers",
            ),
        ):
            self.precision = self.backend.check_precision(precision, self.dtype)
            self._allocate_parameters(opt, self.backend.rng(seed))
            for layer in self.layers:
                init_weights(self.rng, layer.W, init, layer.activation)
            self.optimizer.bind(self.backend, self.params)
            self._learner_stats = self.backend.zeros(2, self.dtype)
            self._learner_skip = self.backend.zeros(1, self.dtype)
        self._local = threading.local()  # per-thread prediction workspaces
        self.fit_lock = threading.Lock()  # one fit at a time (xpmlp.train.loop)

    # the training state: fields of train_state_ (xpmlp.train.state), read and written there
    params: _StateField[Array] = _StateField("params", writable=False)
    running_mean: _StateField[Array] = _StateField("running_mean", writable=False)
    running_var: _StateField[Array] = _StateField("running_var", writable=False)
    optimizer: _StateField[Optimizer] = _StateField("optimizer")
    rng: _StateField[Generator] = _StateField("rng")
    # training passes that drew dropout masks
    dropout_steps: _StateField[int] = _StateField("dropout_step")
    # epochs trained over the model's life (xpmlp.train.loop.fit)
    epoch_: _StateField[int] = _StateField("epoch")
    # the last fit's schedule position
    lr_schedule_: _StateField[SchedulePosition | None] = _StateField("lr_schedule")
    history_: _StateField[list[Record]] = _StateField("history")

    # set by fit (xpmlp.train.loop), absent before the first: the epoch whose parameters early
    # stopping kept and the one it stopped at (None where it did not stop, or without early
    # stopping), and which step trained the last epoch ("fused-cpu", "cuda-graph", ...)
    best_epoch_: int | None
    stopped_epoch_: int | None
    step_kind_: str

    def _allocate_parameters(self, optimizer: Optimizer, rng: Generator) -> None:
        """The training state (``train_state_``) with one flat vector for all parameters (all
        W, then all b, then gamma and beta of each batch-normalized layer) and the running
        estimates of batch norm in ``running_mean`` and ``running_var`` (one slice per
        batch-normalized layer); one flat vector for the gradients."""
        shapes, (self.n_weights, n_biases) = _parameter_shapes(self.layer_sizes)
        n_total = parameter_count(self.layer_sizes, self.batch_norm)
        norm = [*self.batch_norm, False]
        n_norm = (n_total - self.n_weights - n_biases) // 2
        self.train_state_ = TrainState(
            params=self.backend.zeros(n_total, self.dtype),
            optimizer=optimizer,
            running_mean=self.backend.zeros(n_norm, self.dtype),
            running_var=self.backend.zeros(n_norm, self.dtype),
            rng=rng,
        )
        self.grads = self.backend.zeros(n_total, self.dtype)
        self.running_var[...] = 1
        self.layers: list[Dense] = []
        w_at, b_at, g_at, r_at = 0, self.n_weights, self.n_weights + n_biases, 0
        for l, ((n_out, n_in), act) in enumerate(zip(shapes, self.activation_entries, strict=True)):
            w, b = slice(w_at, w_at + n_out * n_in), slice(b_at, b_at + n_out)
            bn = None
            if norm[l]:
                g, be, r = (
                    slice(g_at, g_at + n_out),
                    slice(g_at + n_out, g_at + 2 * n_out),
                    slice(r_at, r_at + n_out),
                )
                self.params[g] = 1
                bn = BatchNorm(
                    gamma=self.params[g],
                    beta=self.params[be],
                    dgamma=self.grads[g],
                    dbeta=self.grads[be],
                    running_mean=self.running_mean[r],
                    running_var=self.running_var[r],
                )
                g_at, r_at = be.stop, r.stop
            self.layers.append(
                Dense(
                    W=self.params[w].reshape(n_out, n_in),
                    b=self.params[b],
                    dW=self.grads[w].reshape(n_out, n_in),
                    db=self.grads[b],
                    activation=act,
                    dropout=self.dropout[l] if l < len(self.dropout) else 0.0,
                    norm=bn,
                )
            )
            w_at, b_at = w.stop, b.stop
        self._regularized = any(self.dropout) or any(self.batch_norm)

    @property
    def buffers(self) -> dict[str, Array]:
        """The model's state besides its parameters, by name (saved with it): batch norm's
        running estimates, flat over the batch-normalized layers (empty without batch norm)."""
        return self.train_state_.buffers

    @property
    def steps_(self) -> int:
        """Optimizer steps taken (the optimizer's step count t)."""
        return self.optimizer.t

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, object]:
        """Host copies of every array, the settings and the backend's name
        (``xpmlp.train.record.pickle_state``): no locks, no workspaces, no device arrays."""
        from .record import pickle_state

        return pickle_state(self)

    def __setstate__(self, state: Mapping[str, object]) -> None:
        """Rebuild on the pickled backend, or on the one named by ``use_backend`` or
        ``XPMLP_BACKEND`` where either is set (``xpmlp.train.record.unpickle_into``)."""
        from .record import unpickle_into

        unpickle_into(self, state)

    def state_dict(self) -> dict[str, object]:
        """The model's whole state as plain data: its settings, and host copies of its
        ``train_state_`` (``xpmlp.TrainState``: parameters, optimizer rows and step count,
        epoch, random generator, dropout step, schedule position, batch-norm statistics,
        early stopping's count and history). It is the one record behind
        files, checkpoints and pickles (``xpmlp.train.record.model_record``, ``pickle_state``):
        ``MLP.from_state(model.state_dict())`` trains on with the model's bits."""
        from .record import pickle_state

        return pickle_state(self)

    @classmethod
    def from_state(cls, state: Mapping[str, object], backend: str | Backend | None = None) -> MLP:
        """The model ``state_dict`` described, on ``backend`` (default: the one it was on, or
        ``XPMLP_BACKEND``). A state of another format version, or naming an activation or
        optimizer not registered here, raises ``DataFileError`` saying which."""
        from .record import unpickle_into

        model = cls.__new__(cls)
        unpickle_into(model, state, backend=None if backend is None else get_backend(backend))
        return model

    def __deepcopy__(self, memo: dict[int, object]) -> MLP:
        """An independent model on the same backend (training one leaves the other as it is)."""
        from .record import pickle_state, unpickle_into

        copy = type(self).__new__(type(self))
        memo[id(self)] = copy
        unpickle_into(copy, pickle_state(self), backend=self.backend)
        return copy

    # ------------------------------------------------------------------ description
    @property
    def activations(self) -> list[str]:
        """The activations' names, hidden layers first, the output layer's last."""
        return [a.name for a in self.activation_entries]

    @property
    def loss(self) -> str:
        return self.loss_entry.name

    @property
    def step_plan(self) -> StepPlan:
        """The training step as data (``xpmlp.core.plan``): its ops, each hidden layer's
        kind and activation, the loss and the optimizer's rule. Each backend compiles it."""
        opt = self.optimizer
        n_hyper = len(opt.hyperparameters(1, opt.learning_rate))
        return step_plan(self.layers, self.loss_entry.name, opt.rule.__name__, n_hyper)

    @property
    def is_classifier(self) -> bool:
        return self.activations[-1] in ("softmax", "sigmoid", "hardlimit")

    @property
    def n_features(self) -> int:
        return self.layer_sizes[0]

    @property
    def n_outputs(self) -> int:
        return self.layer_sizes[-1]

    def __repr__(self) -> str:
        extra = (
            (f"dropout={self.dropout}, " if any(self.dropout) else "")
            + (f"batch_norm={self.batch_norm}, " if any(self.batch_norm) else "")
            + (f"precision={self.precision!r}, " if self.precision != "fp32" else "")
        )
        return (
            f"MLP({self.layer_sizes}, activations={self.activations}, loss={self.loss!r}, "
            f"optimizer={self.optimizer!r}, {extra}dtype={self.dtype.name!r}, "
            f"backend={self.backend.name!r})"
        )

    def describe(self) -> Description:
        """The architecture as JSON-ready settings: layer sizes, activations, loss, dropout
        rates and batch-norm flags."""
        return {
            "layer_sizes": self.layer_sizes,
            "activations": self.activations,
            "loss": self.loss,
            "dropout": self.dropout,
            "batch_norm": self.batch_norm,
        }

    @on_backend
    def set_weights(self, weights: Sequence[tuple[ArrayLike, ArrayLike]]) -> None:
        """Copy (W, b) per layer into the model: W of shape (n_l, n_{l-1}), b of shape (n_l,),
        finite values."""
        weights = list(weights)
        if len(weights) != len(self.layers):
            raise ValueError(
                f"weights has {len(weights)} (W, b) pairs; expected one per layer "
                f"({len(self.layers)})"
            )
        checked = []
        for l, (layer, (W, b)) in enumerate(zip(self.layers, weights, strict=True)):
            for name, given, into in (("W", W, layer.W), ("b", b, layer.b)):
                given = check_numeric(f"layer {l}: {name}", given, self.backend.xp, self.dtype)
                if given.shape != into.shape:
                    raise ValueError(
                        f"layer {l}: {name} has shape {tuple(given.shape)}; "
                        f"expected {tuple(into.shape)}"
                    )
                checked.append((into, given))
        for into, given in checked:
            into[...] = self.backend.asarray(given, dtype=self.dtype)

    def get_weights(self) -> list[tuple[Array, Array]]:
        """(W, b) per layer, as host (NumPy) copies."""
        host = self.backend.to_numpy
        return [(host(layer.W).copy(), host(layer.b).copy()) for layer in self.layers]

    # ------------------------------------------------------------------ the per-batch API
    def to_device(
        self, X: ArrayLike | DeviceData, y: ArrayLike | None = None, name: str = "X"
    ) -> tuple[Array, Array | None]:
        """Checked backend arrays: X (m, n_0) in the model's dtype and, if y is given (or X is
        a ``DeviceData`` holding targets), the targets Y (m, n_L) (class labels one-hot
        encoded). X and y are checked once (``xpmlp.backends.device_data``). Call inside
        ``backend.activate()``."""
        data = data_for(self, X, y, name)
        return data.X, (None if data.y is None else data.targets(self))

    def _targets(self, y: ArrayLike, m: int) -> Array:
        return encode_targets(
            self.backend,
            y,
            m,
            self.n_outputs,
            self.is_classifier,
            self.loss_entry.targets,
            self.dtype,
        )

    def workspace(self, rows: int) -> Workspace:
        """New arrays for the passes of a batch of up to ``rows`` samples."""
        sizes = self.layer_sizes
        with memory_for(
            f"the activations of a batch of {rows} rows through layers {'-'.join(map(str, sizes))}",
            rows
            * (
                sizes[0]
                + sizes[-1]
                + 3 * sum(sizes[1:])
                + sum(n for n, bn in zip(sizes[1:-1], self.batch_norm, strict=True) if bn)
            ),
            self.dtype.itemsize,
            "a smaller batch_size (or fewer rows per forward call)",
        ):
            return Workspace.allocate(self.backend, sizes, rows, self.dtype, self.batch_norm)

    def forward_pass(
        self, ws: Workspace, training: bool = True, keys: Sequence[MaskKey] | None = None
    ) -> None:
        """A[l + 1] = f(A[l] W^T + b) for every layer, from ws.X. ``training`` (the default:
        a backward pass follows) draws new dropout masks and normalizes with the batch's
        statistics, updating the running estimates; otherwise (prediction) there is no dropout
        and batch norm uses the running estimates. A model without either runs the same
        kernels in both modes. The masks' keys: ``mask_keys``."""
        ws.keys = self.mask_keys(training, keys)
        for l in range(len(self.layers)):
            self._forward_layer(ws, l, training)

    def compute_gradients(self, ws: Workspace, out_stats: Array, skip: Array) -> None:
        """Forward and backward of the batch in ws.X, ws.Y: every dW and db in ``self.grads``;
        out_stats[:2] = (sum of the samples' losses, samples classified right); skip[0] set
        when the loss is not finite."""
        self.run_ops(self.step_plan.gradient_ops, ws, out_stats, skip)

    def backward_pass(
        self, ws: Workspace, out_stats: Array, skip: Array, row_weights: Array = None
    ) -> None:
        """delta_L from the loss, then delta_l = (delta_{l+1} W_{l+1}) * f'(Z_l) down to
        layer 1, with dW and db of every layer (the forward pass of ws must be done).
        ``row_weights``: as ``run_ops``'s."""
        self._output_delta(ws, out_stats, skip, row_weights)
        for l in range(len(self.layers) - 1, -1, -1):
            self._backward_layer(ws, l)

    def mask_keys(self, training: bool, keys: Sequence[MaskKey] | None = None) -> list[MaskKey]:
        """The keys of the dropout masks of a forward pass, one per layer (0: no mask), kept
        in ``ws.keys`` for the backward pass: ``keys`` when given (a recorded step reads them
        on the device, ``KeyAt``, and counts its steps itself), else those of the next
        dropout step (``dropout_key``), counted, in training."""
        if keys is not None:
            return list(keys)
        drawn = training and any(self.dropout)
        step = self.dropout_steps
        if drawn:
            self.dropout_steps += 1
        return [
            dropout_key(self.seed, step, l) if drawn and layer.dropout else 0
            for l, layer in enumerate(self.layers)
        ]

    # ------------------------------------------------------------------ the step, op by op
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
    ) -> None:
        """``ops`` (``self.step_plan.ops``, or a part of it) one by one, on the batch of
        ``ws``: the reference step, which the per-op loop runs and the CUDA backend records.

        The model's ops run here (forward, output, backward); those of the path are its
        callables: ``gather`` puts the batch's rows into ws.X and ws.Y (None: they are there;
        the op also draws the batch's dropout keys, ``mask_keys(True, keys)``),
        ``gradients`` averages them over the ranks (None: one process), ``update`` is the
        optimizer's step with the batch's hyperparameters. The optimizer updates the whole
        parameter vector at once, so ``update(l)`` of a layer's weights (the fused CPU step
        updates them as soon as dW is complete) is part of the last ``update`` here: each
        element's update is the same either way. ``row_weights`` (m,), optional: the loss
        becomes (1/m) sum_i r_i l_i (``Backend.weight_output_delta``)."""
        for op in ops:
            name, l = op.name, op.layer
            if name == "forward":
                self._forward_layer(ws, l, True)
            elif name == "output":
                self._forward_layer(ws, l, True)
                self._output_delta(ws, out_stats, skip, row_weights)
            elif name == "backward":
                self._backward_layer(ws, l)
            elif name == "gather":
                if gather is not None:
                    gather()
                ws.keys = self.mask_keys(True, keys)
            elif name == "gradients":
                if gradients is not None:
                    gradients()
            elif name == "update":
                if l < 0 and update is not None:
                    update()
            else:
                raise ValueError(f"run_ops: unknown op {op!r} (the ops of xpmlp.core.plan)")

    def _forward_layer(self, ws: Workspace, l: int, training: bool) -> None:
        """Z_l = A_l W_l^T, A_{l+1} = f(Z_l + b_l), through the layer's dropout or batch norm
        in training (the mask of ``ws.keys[l]``)."""
        layer = self.layers[l]
        if not self._regularized:
            layer.forward(self.backend, ws.A[l], ws.Z[l], ws.A[l + 1])
            return
        layer.forward(
            self.backend,
            ws.A[l],
            ws.Z[l],
            ws.A[l + 1],
            training,
            ws.keys[l] if training else 0,
            ws.Zhat[l],
            ws.stats[l],
        )

    def _output_delta(
        self, ws: Workspace, out_stats: Array, skip: Array, row_weights: Array = None
    ) -> None:
        """delta_L and db_L from the loss of the forward pass's output against ws.Y, the
        batch's (loss sum, correct count) in out_stats, skip[0] set when the loss is not
        finite; with ``row_weights``, delta_L's rows and out_stats[0] weighted by them (a
        separate pass after the fused output kernel: weighted fits only)."""
        out = self.layers[-1]
        self.backend.loss_output_delta(
            ws.Z[-1],
            ws.A[-1],
            ws.Y,
            ws.delta[-1],
            out.db,
            out_stats,
            skip,
            out.activation,
            self.loss_entry,
        )
        if row_weights is not None:
            self.backend.weight_output_delta(
                ws.Z[-1],
                ws.A[-1],
                ws.Y,
                row_weights,
                ws.delta[-1],
                out.db,
                out_stats,
                self.loss_entry,
            )

    def _backward_layer(self, ws: Workspace, l: int) -> None:
        """dW_l = delta_l^T A_l and dA_{l-1} = delta_l W_l (into ws.delta[l - 1]), where a
        hidden layer's delta_l = dA_l * f'(Z_l) (with db_l, through its dropout and batch norm)
        comes first; the top layer's delta is the loss's (``_output_delta``)."""
        layer, be = self.layers[l], self.backend
        below = ws.delta[l - 1] if l > 0 else None
        if l == len(self.layers) - 1:
            layer.backward_from_delta(be, ws.delta[l], ws.A[l], below)
        elif not self._regularized:  # ws.delta[l] holds dA_l, overwritten by delta_l
            layer.backward(be, ws.delta[l], ws.Z[l], ws.A[l + 1], ws.A[l], ws.delta[l], below)
        else:
            layer.backward(
                be,
                ws.delta[l],
                ws.Z[l],
                ws.A[l + 1],
                ws.A[l],
                ws.delta[l],
                below,
                ws.keys[l] if layer.dropout else 0,
                ws.Zhat[l],
                ws.stats[l],
            )

    def apply_gradients(
        self, skip: Array, lr_factor: float = 1.0, weight_decay: float | None = None
    ) -> None:
        """One optimizer step with ``self.grads`` (nothing changes when skip[0] is set);
        ``weight_decay``: this step's L2 coefficient, default the optimizer's own."""
        self.optimizer.step(
            self.backend, self.params, self.grads, self.n_weights, skip, lr_factor, weight_decay
        )

    def check_differentiable(self) -> None:
        for l, act in enumerate(self.activation_entries):
            if not act.differentiable:
                raise NotDifferentiableError(
                    f"layer {l + 1} uses {act.name!r}, whose derivative is zero almost "
                    "everywhere (undefined at 0): backpropagation cannot train through it. "
                    "Use it for forward passes only, or train with one of "
                    f"{', '.join(ACTIVATIONS.names(lambda a: a.hidden and a.differentiable))}"
                )

    # ------------------------------------------------------------------ the learner's API
    @on_backend
    def forward(self, X: ArrayLike | DeviceData, training: bool = True) -> ForwardPass:
        """The forward pass of X, keeping Z and A of every layer (in training mode unless
        ``training`` is False: see ``forward_pass``)."""
        X_dev, _ = self.to_device(X)
        ws = self.workspace(X_dev.shape[0])
        ws.X[...] = X_dev
        self.forward_pass(ws, training)
        return ForwardPass(Z=ws.Z, A=ws.A, workspace=ws)

    @on_backend
    def backward(self, forward_pass: ForwardPass, y: ArrayLike) -> Gradients:
        """Backpropagate the loss of ``forward_pass`` against targets ``y``: every delta,
        dW and db."""
        self.check_differentiable()
        ws = forward_pass.workspace
        ws.Y[...] = self._targets(y, ws.rows)
        self._learner_skip[...] = 0  # each backward decides afresh whether step() may update
        self.backward_pass(ws, self._learner_stats, self._learner_skip)
        return Gradients(
            delta=list(ws.delta),
            dW=[l.dW for l in self.layers],
            db=[l.db for l in self.layers],
            _backend=self.backend,
            _stats=self._learner_stats,
            _m=ws.rows,
        )

    @on_backend
    def step(self) -> None:
        """One optimizer step with the gradients of the last ``backward`` (none if its loss
        was not finite)."""
        self.apply_gradients(self._learner_skip)

    # ------------------------------------------------------------------ training
    def fit(
        self, X: ArrayLike | DeviceData, y: ArrayLike | None = None, **options: Unpack[FitOptions]
    ) -> MLP:
        """Mini-batch training on X, y (or a ``DeviceData`` holding both): see
        ``xpmlp.train.loop.fit`` for the options."""
        from .loop import fit

        return fit(self, X, y, **options)

    @on_backend
    def evaluate(self, X: ArrayLike | DeviceData, y: ArrayLike | None = None) -> dict[str, float]:
        """{"loss": mean loss, "accuracy": fraction right} of the model on X, y (or a
        ``DeviceData`` holding both), in inference mode (``xpmlp.train.loop.evaluate``)."""
        from .loop import evaluate

        X_dev, Y = self.to_device(X, y)
        if Y is None:
            raise ParameterError(
                "evaluate needs targets: evaluate(X, y) or evaluate(data), "
                "data a DeviceData(X, y, ...)"
            )
        loss, accuracy = evaluate(self, X_dev, Y)
        return {"loss": loss, "accuracy": accuracy}

    # ------------------------------------------------------------------ prediction
    def output(self, X: Array) -> Array:
        """A_L for the backend array X, in chunks of PREDICT_CHUNK rows. Safe from several
        threads at once: each thread has its own workspace."""
        xp = self.backend.xp
        rows = min(PREDICT_CHUNK, X.shape[0])
        spaces = self._local.__dict__.setdefault("workspaces", {})
        if rows not in spaces:
            spaces[rows] = self.workspace(rows)
        outs = []
        for start in range(0, X.shape[0], PREDICT_CHUNK):
            chunk = X[start : start + PREDICT_CHUNK]
            ws = spaces[rows].first(chunk.shape[0])
            ws.X[...] = chunk
            self.forward_pass(ws, training=False)
            outs.append(ws.A[-1].copy())
        return xp.concatenate(outs, axis=0)

    def accuracy(self, X: Array, Y: Array) -> float:
        """Fraction of rows whose prediction matches the (m, n_L) targets Y (backend arrays)."""
        hits = losses.correct(self.output(X), Y).sum()
        return cast(float, float(self.backend.to_numpy(hits)) / X.shape[0])

    @on_backend
    def predict_proba(self, X: ArrayLike | DeviceData) -> Array:
        """The output layer's activations A_L, as a host (NumPy) array of shape (m, n_L)."""
        return self.backend.to_numpy(self.output(data_for(self, X).X))

    def predict(self, X: ArrayLike | DeviceData) -> Array:
        """Class labels (classifiers: argmax, or A >= 0.5 for one output) or A_L (regression)."""
        A = self.predict_proba(X)
        if not self.is_classifier:
            return A
        if A.shape[1] == 1:
            return (A[:, 0] >= 0.5).astype("int64")
        return A.argmax(axis=1)

    @on_backend
    def score(self, X: ArrayLike | DeviceData, y: ArrayLike | None = None) -> float:
        """Accuracy for classifiers; for regression the coefficient of determination R^2 of
        each output, averaged over the outputs (scikit-learn's default, 'uniform_average')."""
        X_dev, Y = self.to_device(X, y)
        if Y is None:
            raise ParameterError(
                "score needs targets: score(X, y) or score(data), data a DeviceData(X, y, ...)"
            )
        if self.is_classifier:
            return self.accuracy(X_dev, Y)
        A = self.output(X_dev)
        host = self.backend.to_numpy
        ss_res = host(((Y - A) ** 2).sum(axis=0)).astype("float64")
        ss_tot = host(((Y - Y.mean(axis=0)) ** 2).sum(axis=0)).astype("float64")
        scores = [
            (1.0 - r / t) if t > 0 else (1.0 if r == 0 else 0.0)
            for r, t in zip(ss_res, ss_tot, strict=True)
        ]
        return float(sum(scores) / len(scores))
