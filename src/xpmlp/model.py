"""The multi-layer perceptron, written once against the backend's array namespace.

    model = MLP([784, 512, 256, 10])             # ReLU hidden layers, softmax output
    model.fit(X, y, epochs=5, batch_size=128)    # mini-batch training
    model.predict(X); model.predict_proba(X); model.score(X, y)

For learners, one step by hand:

    fp = model.forward(X)            # fp.Z[l], fp.A[l] per layer (A[0] is X)
    g = model.backward(fp, y)        # g.delta[l], g.dW[l], g.db[l], g.loss
    model.step()                     # p <- optimizer update(p, grad)

Nothing here names NumPy or CuPy: every array comes from ``self.backend``.
"""

from __future__ import annotations

import contextlib
import functools
import numbers
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from . import activations, losses
from ._validation import Choice, Number, check_features, check_params, check_targets
from .backends import Backend, get_backend
from .errors import DeviceMemoryError, NotDifferentiableError, TrainingDivergedError
from .init import INITIALIZERS, init_weights
from .kernels.rows import (
    STAT_BATCH_LOSS_SUM,
    STAT_CORRECT,
    STAT_COUNT,
    STAT_DIVERGED_AT,
    STAT_LOSS_SUM,
)
from .layers import Dense
from .optim import OPTIMIZERS, SCHEDULES, Optimizer, make_optimizer, schedule_factor
from .workspace import Workspace

DEFAULT_OUTPUT = {
    "cross_entropy": "softmax",
    "binary_cross_entropy": "sigmoid",
    "squared_error": "identity",
    "half_squared_error": "identity",
}

HIDDEN_ACTIVATIONS = tuple(a for a in activations.ACTIVATIONS if a != "softmax")

CONSTRAINTS = {
    "loss": Choice(losses.LOSSES),
    "output_activation": Choice(activations.ACTIVATIONS),
    "optimizer": Choice(OPTIMIZERS),
    "learning_rate": Number(0, None, low_closed=False),
    "momentum": Number(0, 1, high_closed=False),
    "beta1": Number(0, 1, high_closed=False),
    "beta2": Number(0, 1, high_closed=False),
    "eps": Number(0, None, low_closed=False),
    "weight_decay": Number(0, None),
    "init": Choice(INITIALIZERS),
    "dtype": Choice(("float32", "float64")),
    "seed": Number(0, None, integer=True),
    "epochs": Number(1, None, integer=True),
    "batch_size": Number(1, None, integer=True),
    "lr_schedule": Choice(SCHEDULES),
}

PREDICT_CHUNK = 4096  # rows per forward pass when predicting

_Method = TypeVar("_Method", bound=Callable[..., Any])


def _on_backend(method: _Method) -> _Method:
    """Run the method with the model's backend active (its device and stream current)."""

    @functools.wraps(method)
    def run(self: MLP, *args: Any, **kwargs: Any) -> Any:
        with self.backend.activate():
            return method(self, *args, **kwargs)

    return run  # type: ignore[return-value]


def _parameter_shapes(sizes: Sequence[int]) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """W's shape (n_l, n_{l-1}) per layer, and the number of weights and of biases."""
    shapes = list(zip(sizes[1:], sizes[:-1], strict=True))
    return shapes, (sum(o * i for o, i in shapes), sum(sizes[1:]))


@contextlib.contextmanager
def _memory_for(what: str, n_values: int, itemsize: int, remedy: str) -> Any:
    """Out of device memory inside: say for what, how much it needs and what to try."""
    try:
        yield
    except DeviceMemoryError as exc:
        raise DeviceMemoryError(
            f"not enough GPU memory for {what} ({n_values * itemsize / 2**20:,.1f} MiB); "
            f"try {remedy}. {exc}"
        ) from exc


@dataclass
class ForwardPass:
    """The forward pass of a batch: Z[l] and A[l + 1] of layer l, A[0] the input."""

    Z: list[Any]
    A: list[Any]
    workspace: Workspace


@dataclass
class Gradients:
    """One backward pass: per layer delta = dL/dZ, dW, db (views into the model's buffers)."""

    delta: list[Any]
    dW: list[Any]
    db: list[Any]
    _backend: Backend
    _stats: Any
    _m: int

    @property
    def loss(self) -> float:
        """The batch-mean loss of that pass (a host copy: this synchronizes)."""
        return float(self._backend.to_numpy(self._stats[STAT_BATCH_LOSS_SUM])) / self._m


class MLP:
    """A multi-layer perceptron trained by backpropagation.

    Parameters
    ----------
    layer_sizes : sequence of int
        Units per layer, input first: ``[784, 512, 256, 10]``.
    activation : str or sequence of str
        Hidden layers' activation(s): relu, tanh, sigmoid, identity, hardlimit.
    output_activation : str, optional
        Defaults from the loss: softmax (cross_entropy), sigmoid
        (binary_cross_entropy), identity (squared errors).
    loss : str
        cross_entropy, binary_cross_entropy, squared_error or half_squared_error.
    optimizer : str or Optimizer
        sgd, momentum, nesterov or adam (see ``xpmlp.optim``).
    learning_rate, momentum, beta1, beta2, eps, weight_decay : float
        Optimizer settings (weight_decay is L2 on the weights).
    init : str
        auto (He before ReLU, else Xavier), he or xavier.
    dtype : str
        float32 (default) or float64.
    backend : str or Backend, optional
        numpy, cuda or auto (default: ``XPMLP_BACKEND``, else auto).
    seed : int
        Seeds initialization and shuffling: same seed, same backend, same bits.
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
        momentum: float = 0.9,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        init: str = "auto",
        dtype: str = "float32",
        backend: str | Backend | None = None,
        device: int | None = None,
        seed: int = 0,
    ) -> None:
        sizes = self._check_layer_sizes(layer_sizes)
        check_params({"loss": loss}, CONSTRAINTS)
        output_activation = DEFAULT_OUTPUT[loss] if output_activation is None else output_activation
        hidden = self._check_hidden_activations(activation, len(sizes) - 2)
        check_params(
            {
                "output_activation": output_activation, "learning_rate": learning_rate,
                "momentum": momentum, "beta1": beta1, "beta2": beta2, "eps": eps,
                "weight_decay": weight_decay, "init": init, "dtype": str(dtype), "seed": seed,
            },
            {k: v for k, v in CONSTRAINTS.items() if not (k == "learning_rate" and
                                                          learning_rate is None)},
        )
        self._check_pairing(output_activation, loss)
        if isinstance(optimizer, str):
            check_params({"optimizer": optimizer}, CONSTRAINTS)
            optimizer = make_optimizer(
                optimizer, learning_rate, momentum=momentum, beta1=beta1, beta2=beta2, eps=eps,
                weight_decay=weight_decay,
            )
        elif not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"optimizer={optimizer!r} is not valid; expected one of {OPTIMIZERS} or an "
                "xpmlp.optim.Optimizer"
            )
        self.layer_sizes = sizes
        self.activations = [*hidden, output_activation]
        self.loss = loss
        self.optimizer = optimizer
        self.init = init
        self.seed = seed
        self.backend = get_backend(backend, device=device)
        self.dtype = self.backend.xp.dtype(str(dtype))
        with self.backend.activate(), _memory_for(
            f"the parameters, gradients and {optimizer.name} state of layers "
            f"{'-'.join(map(str, sizes))}", 4 * sum(_parameter_shapes(sizes)[1]),
            self.dtype.itemsize, "smaller layers",
        ):
            self._rng = self.backend.rng(seed)
            self._allocate_parameters()
            for layer in self.layers:
                init_weights(self._rng, layer.W, init, layer.activation)
            self.optimizer.bind(self.backend, self.params)
            self._stats = self.backend.new_stats(self.dtype)
        self._workspaces: dict[int, Workspace] = {}
        self.history_: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ construction helpers
    @staticmethod
    def _check_layer_sizes(layer_sizes: Sequence[int]) -> list[int]:
        sizes = list(layer_sizes) if isinstance(layer_sizes, (list, tuple)) else None
        if not sizes or len(sizes) < 2 or not all(
            isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 1 for n in sizes
        ):
            raise ValueError(
                f"layer_sizes={layer_sizes!r} is not valid; expected a list of at least two "
                "positive integers, input size first, e.g. [784, 512, 10]"
            )
        return [int(n) for n in sizes]

    @staticmethod
    def _check_hidden_activations(activation: str | Sequence[str], n_hidden: int) -> list[str]:
        names = [activation] * n_hidden if isinstance(activation, str) else list(activation)
        if len(names) != n_hidden:
            raise ValueError(
                f"activation has {len(names)} entries; expected one name or {n_hidden} (one per "
                "hidden layer)"
            )
        for name in names:
            Choice(HIDDEN_ACTIVATIONS).check("activation", name)
        return names

    @staticmethod
    def _check_pairing(output_activation: str, loss: str) -> None:
        if (output_activation == "softmax") != (loss == "cross_entropy"):
            raise ValueError(
                f"output_activation={output_activation!r} with loss={loss!r} is not supported; "
                "softmax goes with cross_entropy and cross_entropy with softmax"
            )

    def _allocate_parameters(self) -> None:
        """One flat vector for all parameters (all W, then all b), one for their gradients."""
        shapes, (self.n_weights, n_biases) = _parameter_shapes(self.layer_sizes)
        n_total = self.n_weights + n_biases
        self.params = self.backend.zeros(n_total, self.dtype)
        self.grads = self.backend.zeros(n_total, self.dtype)
        self.layers: list[Dense] = []
        w_at, b_at = 0, self.n_weights
        for (n_out, n_in), act in zip(shapes, self.activations, strict=True):
            w, b = slice(w_at, w_at + n_out * n_in), slice(b_at, b_at + n_out)
            self.layers.append(Dense(
                W=self.params[w].reshape(n_out, n_in), b=self.params[b],
                dW=self.grads[w].reshape(n_out, n_in), db=self.grads[b], activation=act,
            ))
            w_at, b_at = w.stop, b.stop

    @_on_backend
    def set_weights(self, weights: Sequence[tuple[Any, Any]]) -> None:
        """Copy (W, b) per layer into the model: W of shape (n_l, n_{l-1}), b of shape (n_l,)."""
        weights = list(weights)
        if len(weights) != len(self.layers):
            raise ValueError(f"weights has {len(weights)} (W, b) pairs; expected one per layer "
                             f"({len(self.layers)})")
        for l, (layer, (W, b)) in enumerate(zip(self.layers, weights, strict=True)):
            for name, given, into in (("W", W, layer.W), ("b", b, layer.b)):
                given = self._to_backend(given)
                if given.shape != into.shape:
                    raise ValueError(f"layer {l}: {name} has shape {tuple(given.shape)}; "
                                     f"expected {tuple(into.shape)}")
                into[...] = given

    def get_weights(self) -> list[tuple[Any, Any]]:
        """(W, b) per layer, as host (NumPy) copies."""
        host = self.backend.to_numpy
        return [(host(layer.W).copy(), host(layer.b).copy()) for layer in self.layers]

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
        return (
            f"MLP({self.layer_sizes}, activations={self.activations}, loss={self.loss!r}, "
            f"optimizer={self.optimizer.name!r}, dtype={self.dtype.name!r}, "
            f"backend={self.backend.name!r})"
        )

    # ------------------------------------------------------------------ the three steps
    def _workspace(self, rows: int) -> Workspace:
        if rows not in self._workspaces:
            self._workspaces[rows] = self._new_workspace(rows)
        return self._workspaces[rows]

    def _new_workspace(self, rows: int) -> Workspace:
        sizes = self.layer_sizes
        with _memory_for(
            f"the activations of a batch of {rows} rows through layers "
            f"{'-'.join(map(str, sizes))}", rows * (sizes[0] + sizes[-1] + 3 * sum(sizes[1:])),
            self.dtype.itemsize, "a smaller batch_size (or fewer rows per forward call)",
        ):
            return Workspace.allocate(self.backend, sizes, rows, self.dtype)

    def _forward(self, ws: Workspace) -> None:
        """A[l + 1] = f(A[l] W^T + b) for every layer."""
        for layer, A_prev, Z, A in zip(self.layers, ws.A[:-1], ws.Z, ws.A[1:], strict=True):
            layer.forward(self.backend, A_prev, Z, A)

    def _backward(self, ws: Workspace, batch: int) -> None:
        """delta_L from the loss, then delta_l = (delta_{l+1} W_{l+1}) * f'(Z_l) down to layer 1."""
        out = self.layers[-1]
        L = len(self.layers)
        self.backend.loss_output_delta(
            ws.Z[-1], ws.A[-1], ws.Y, ws.delta[-1], out.db, self._stats,
            out.activation, self.loss, batch,
        )
        out.backward_from_delta(
            self.backend, ws.delta[-1], ws.A[-2], ws.delta[-2] if L > 1 else None
        )
        for l in range(L - 2, -1, -1):  # hidden layers, top down; ws.delta[l] holds dA
            self.layers[l].backward(
                self.backend, ws.delta[l], ws.A[l + 1], ws.A[l], ws.delta[l],
                ws.delta[l - 1] if l > 0 else None,
            )

    def _step(self) -> None:
        self.optimizer.step(self.backend, self.params, self.grads, self.n_weights, self._stats)

    def _check_differentiable(self) -> None:
        for l, act in enumerate(self.activations):
            if act not in activations.DIFFERENTIABLE:
                raise NotDifferentiableError(
                    f"layer {l + 1} uses {act!r}, whose derivative is zero almost everywhere "
                    "(undefined at 0): backpropagation cannot train through it. Use it for "
                    "forward passes only, or train with sigmoid/tanh/relu"
                )

    # ------------------------------------------------------------------ the learner's API
    def _to_backend(self, a: Any) -> Any:
        return self.backend.asarray(a, dtype=self.dtype)

    def _targets(self, y: Any, m: int) -> Any:
        """y as a (m, n_L) backend array of targets (class labels one-hot encoded)."""
        y, labels = check_targets(y, m, self.n_outputs, self.is_classifier, self.backend.xp)
        if not labels:
            return self._to_backend(y)
        xp = self.backend.xp
        labels = self.backend.asarray(y, dtype="int64")
        Y = self.backend.zeros((m, self.n_outputs), self.dtype)
        Y[xp.arange(m), labels] = 1
        return Y

    @_on_backend
    def forward(self, X: Any) -> ForwardPass:
        """The forward pass of X, keeping Z and A of every layer."""
        X = check_features(X, self.n_features, self.backend.xp)
        ws = self._new_workspace(X.shape[0])
        ws.X[...] = self._to_backend(X)
        self._forward(ws)
        return ForwardPass(Z=ws.Z, A=ws.A, workspace=ws)

    @_on_backend
    def backward(self, forward_pass: ForwardPass, y: Any) -> Gradients:
        """Backpropagate the loss of ``forward_pass`` against targets ``y``."""
        self._check_differentiable()
        ws = forward_pass.workspace
        ws.Y[...] = self._targets(y, ws.rows)
        self._backward(ws, batch=0)
        return Gradients(
            delta=list(ws.delta), dW=[l.dW for l in self.layers], db=[l.db for l in self.layers],
            _backend=self.backend, _stats=self._stats, _m=ws.rows,
        )

    @_on_backend
    def step(self) -> None:
        """One optimizer step with the gradients of the last ``backward``."""
        self._step()

    # ------------------------------------------------------------------ training
    @_on_backend
    def fit(
        self,
        X: Any,
        y: Any,
        *,
        epochs: int = 10,
        batch_size: int = 128,
        shuffle: bool = True,
        validation_data: tuple[Any, Any] | None = None,
        lr_schedule: str = "constant",
        progress: bool = False,
        callback: Callable[[dict[str, Any]], None] | None = None,
    ) -> MLP:
        """Mini-batch training; a history record per epoch goes to ``self.history_``.

        ``lr_schedule``: "constant", or "cosine" (the learning rate falls from its
        value to 0 over the ``epochs`` of this call, step by step).

        The data set moves to the backend once; each epoch draws a permutation
        on the device and gathers its batches there. Loss and accuracy add up
        on the device and come to the host when the progress bar is redrawn
        and at the end of the epoch. If the loss becomes NaN or infinite,
        training stops with ``TrainingDivergedError`` naming the epoch and batch;
        the parameters keep their last finite values.
        """
        check_params(
            {"epochs": epochs, "batch_size": batch_size, "lr_schedule": lr_schedule}, CONSTRAINTS
        )
        self._check_differentiable()
        be = self.backend
        X = check_features(X, self.n_features, be.xp)
        m_total = int(X.shape[0])
        with _memory_for(
            f"the training set ({m_total} samples, moved to the device once)",
            m_total * (self.n_features + self.n_outputs), self.dtype.itemsize,
            "fit on part of the data at a time (a new fit call continues from the current weights)",
        ):
            Y_all = self._targets(y, m_total)
            X_all = self._to_backend(X)
        if validation_data is not None:
            X_val = check_features(validation_data[0], self.n_features, be.xp, "validation X")
            with _memory_for(
                f"the validation set ({X_val.shape[0]} samples, moved to the device once)",
                X_val.shape[0] * (self.n_features + self.n_outputs), self.dtype.itemsize,
                "a smaller validation set",
            ):
                X_val = self._to_backend(X_val)
                Y_val = self._targets(validation_data[1], X_val.shape[0])
        self._last_finite = self.params.copy()  # parameters last seen finite (see _check_diverged)
        n_batches = -(-m_total // batch_size)
        try:
            for epoch in range(1, epochs + 1):
                order = be.permutation(self._rng, m_total) if shuffle else be.xp.arange(m_total)
                first_step = (epoch - 1) * n_batches
                record = self._fit_epoch(
                    X_all, Y_all, order, batch_size, f"epoch {epoch}/{epochs}", epoch, progress,
                    lambda batch, first=first_step: schedule_factor(
                        lr_schedule, first + batch, epochs * n_batches
                    ),
                )
                if validation_data is not None:
                    record["val_accuracy"] = self._accuracy(X_val, Y_val)
                self.history_.append(record)
                if callback is not None:
                    callback(record)
        finally:
            self.optimizer.lr_factor = 1.0
        return self

    def _fit_epoch(
        self, X: Any, Y: Any, order: Any, batch_size: int, title: str, epoch: int,
        progress: bool, lr_factor: Callable[[int], float],
    ) -> dict[str, Any]:
        """One timed epoch of ``fit`` with its progress bar and divergence checks; its record."""
        be, m_total = self.backend, int(order.shape[0])
        bar = _progress_bar(progress, m_total, title)
        refresh_every = max(1, -(-m_total // batch_size) // 20)

        def redraw(batch: int, done: int) -> None:
            if bar is not None and (batch + 1) % refresh_every == 0:
                self._report(bar, epoch, be.to_numpy(self._stats), done)

        t0 = time.perf_counter()
        self._run_epoch(X, Y, order, batch_size, redraw, lr_factor)
        be.synchronize()
        seconds = time.perf_counter() - t0
        stats = be.to_numpy(self._stats)
        if bar is not None:
            self._report(bar, epoch, stats, m_total)
            bar.close()
        self._check_diverged(stats, epoch)
        self._last_finite[...] = self.params
        return {
            "epoch": epoch,
            "loss": float(stats[STAT_LOSS_SUM] / stats[STAT_COUNT]),
            "train_accuracy": float(stats[STAT_CORRECT] / stats[STAT_COUNT]),
            "seconds": seconds,
            "samples_per_s": m_total / seconds,
        }

    def _run_epoch(
        self, X: Any, Y: Any, order: Any, batch_size: int,
        on_batch: Callable[[int, int], None] | None = None,
        lr_factor: Callable[[int], float] | None = None,
    ) -> None:
        """One pass over the samples ``order`` (device indices) in mini-batches.

        Per batch: gather its rows into the workspace, forward, backward, one
        optimizer step. Nothing comes back to the host unless ``on_batch``
        (called with the batch index and the samples done) asks for it.
        ``lr_factor(batch)`` scales the learning rate of that batch's step.
        """
        be, m_total = self.backend, int(order.shape[0])
        ws = self._workspace(min(batch_size, m_total))
        self._stats[...] = 0
        for batch, start in enumerate(range(0, m_total, batch_size)):
            idx = order[start:start + batch_size]
            w = ws.first(int(idx.shape[0]))
            be.gather_rows(X, idx, w.X)
            be.gather_rows(Y, idx, w.Y)
            self._forward(w)
            self._backward(w, batch)
            if lr_factor is not None:
                self.optimizer.lr_factor = lr_factor(batch)
            self._step()
            if on_batch is not None:
                on_batch(batch, start + w.rows)

    def _report(self, bar: Any, epoch: int, stats: Any, done: int) -> None:
        self._check_diverged(stats, epoch)
        self._last_finite[...] = self.params
        n = max(float(stats[STAT_COUNT]), 1.0)
        bar.update(done - bar.n)
        bar.set_postfix(loss=f"{stats[STAT_LOSS_SUM] / n:.4f}",
                        acc=f"{stats[STAT_CORRECT] / n:.4f}", refresh=False)

    def _check_diverged(self, stats: Any, epoch: int) -> None:
        """Raise if a batch's loss was not finite (``stats`` is a host copy).

        The optimizer stopped at that batch, so the parameters are those of the
        last step before it. If that very step overflowed (its loss was still
        finite, the parameters are not), they go back to the copy taken at the
        last check, and the optimizer's state starts afresh.
        """
        at = int(stats[STAT_DIVERGED_AT])
        if not at:
            return
        kept = "of its last step before that batch"
        if not bool(self.backend.xp.isfinite(self.params).all()):
            self.params[...] = self._last_finite
            self.optimizer.bind(self.backend, self.params)
            kept = "last checked finite, earlier in training"
        raise TrainingDivergedError(
            f"the training loss became NaN or infinite at epoch {epoch}, batch {at - 1} "
            f"(0-based); training stopped and the model keeps the finite parameters {kept}. "
            f"Try a smaller learning rate (it was {self.optimizer.learning_rate:g})"
        )

    # ------------------------------------------------------------------ prediction
    def _output(self, X: Any) -> Any:
        """A_L for X (a backend array), in chunks of PREDICT_CHUNK rows."""
        xp = self.backend.xp
        outs = []
        for start in range(0, X.shape[0], PREDICT_CHUNK):
            chunk = X[start:start + PREDICT_CHUNK]
            ws = self._workspace(min(PREDICT_CHUNK, X.shape[0])).first(chunk.shape[0])
            ws.X[...] = chunk
            self._forward(ws)
            outs.append(ws.A[-1].copy())
        return xp.concatenate(outs, axis=0)

    def _accuracy(self, X: Any, Y: Any) -> float:
        """Fraction of rows whose prediction matches the (m, n_L) targets Y (backend arrays)."""
        A = self._output(X)
        return float(self.backend.to_numpy(losses.correct(A, Y).sum())) / X.shape[0]

    @_on_backend
    def predict_proba(self, X: Any) -> Any:
        """The output layer's activations A_L, as a host (NumPy) array of shape (m, n_L)."""
        X = check_features(X, self.n_features, self.backend.xp)
        return self.backend.to_numpy(self._output(self._to_backend(X)))

    def predict(self, X: Any) -> Any:
        """Class labels (classifiers: argmax, or A >= 0.5 for one output) or A_L (regression)."""
        A = self.predict_proba(X)
        if not self.is_classifier:
            return A
        if A.shape[1] == 1:
            return (A[:, 0] >= 0.5).astype("int64")
        return A.argmax(axis=1)

    @_on_backend
    def score(self, X: Any, y: Any) -> float:
        """Accuracy for classifiers, the coefficient of determination R^2 otherwise."""
        X = check_features(X, self.n_features, self.backend.xp)
        Y = self._targets(y, X.shape[0])
        Xb = self._to_backend(X)
        if self.is_classifier:
            return self._accuracy(Xb, Y)
        A = self._output(Xb)
        ss_res = float(self.backend.to_numpy(((Y - A) ** 2).sum()))
        ss_tot = float(self.backend.to_numpy(((Y - Y.mean(axis=0)) ** 2).sum()))
        return 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0


def _progress_bar(enabled: bool, total: int, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="samples", unit_scale=True, leave=True,
                dynamic_ncols=True)
