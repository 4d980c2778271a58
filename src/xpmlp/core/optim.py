"""The optimizers: objects that carry their hyperparameters, each defined once, here.

    model = MLP(sizes, optimizer=xpmlp.core.optim.Adam(learning_rate=1e-3, weight_decay=1e-4))
    model = MLP(sizes, optimizer="adam", learning_rate=1e-3)       # the same, by name

The parameters of every layer live in one flat vector p (all W, then all b),
the gradients in a flat vector g with the same layout, and an optimizer's state
in the rows of one (n_state, n) array, so a step is one fused kernel over p.
An optimizer is:

- its **update rule**, a plain Python scalar formula ``rule(p, g, state, k,
  hyper) -> new p`` that also updates ``state[:, k]``; ``xpmlp.kernels``
  compiles it into the CPU and the CUDA step kernels;
- ``hyperparameters(step, lr)``, the tuple the rule reads at a step (scalars
  computed on the host in float64, then cast to the parameters' dtype);
- ``reference``, the same update in array code (the reference backend's);
- one entry in ``OPTIMIZERS``.

``register_optimizer`` makes all of that from a per-element scalar ``update(p, g, *state,
*hyper)`` (an ``RuleOptimizer`` subclass; its reference is the same update compiled over
arrays): a user's optimizer, or a new built-in one in one call here.

Every optimizer also takes, on top of its rule (``Optimizer``; torch's order):

- ``clip_grad_value`` v: each loss gradient clamped to [-v, v] (``clip_grad_value_``);
- ``clip_grad_norm`` c: all loss gradients times min(1, c / (||g||_2 + 1e-6)), the global
  norm over every parameter (``clip_grad_norm_``, after value clipping when both are set);
  the squared norm is a compensated device reduction (``grad_sum_squares``) that the step
  kernel reads, so there is no host round trip;
- ``l1``: + l1 sign(W) (0 at 0) on the weights' gradient, not the biases';
- ``weight_decay`` (L2): + weight_decay W on the weights' gradient, as PyTorch's
  ``weight_decay`` does.

Clipping acts on the loss gradient before the penalties are added (as clipping p.grad before
``optimizer.step`` in PyTorch).

=========  =================================================================
sgd        p <- p - lr g
momentum   v <- mu v + g;  p <- p - lr v                (PyTorch's form)
nesterov   v <- mu v + g;  p <- p - lr (g + mu v)
adam       m <- m + (1 - b1)(g - m);  v <- b2 v + (1 - b2) g^2;
           p <- p - lr / (1 - b1^t) m / (sqrt(v) / sqrt(1 - b2^t) + eps)  (PyTorch's order)
rmsprop    v <- alpha v + (1 - alpha) g^2;  p <- p - lr g / (sqrt(v) + eps)
           (optionally centered: sqrt(v - gbar^2) with gbar <- gbar + (1 - alpha)(g - gbar);
           optionally with momentum: buf <- mu buf + g / (...);  p <- p - lr buf)
adagrad    s <- s + g^2;  p <- p - lr / (1 + (t - 1) lr_decay) g / (sqrt(s) + eps),
           s starting at initial_accumulator_value
=========  =================================================================

Every rule follows the operations of ``torch.optim``'s single-tensor code in their
order (``addcmul(g, g, value=c)`` as ``s + (c g) g``, ``addcdiv(g, d, value=c)`` as
``p + (c g) / d``), with its host scalars (1 - beta, bias corrections, Adagrad's
decayed rate) computed in float64 and then cast. A float64 trajectory equals
PyTorch's to float64 rounding; a float32 step is as close to the exact step as
PyTorch's, though not bit for bit the same: PyTorch's CPU kernels fuse some
multiply-adds (addcmul, lerp, add with alpha, and the weight decay g + wd p) and
its float32 sqrt is not always correctly rounded (``tests/test_optimizers.py``).

The model's keyword path (``MLP(..., optimizer="rmsprop", learning_rate=...)``)
passes only the keywords the user gave; every other setting is the optimizer's own
default, and a keyword the optimizer does not take raises (``make_optimizer``).
``from_description`` rebuilds every setting.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, SupportsFloat, TypedDict, cast

import numpy

from .aliases import JSON, Array, ArrayModule
from .errors import ParameterError
from .registry import Registry
from .validation import Choice, Number, check_params

if TYPE_CHECKING:
    from ..backends import Backend


class StateRows(Protocol):
    """The optimizer's state rows as a rule sees them: one float at (row, k)."""

    def __getitem__(self, index: tuple[int, int], /) -> float: ...

    def __setitem__(self, index: tuple[int, int], value: float, /) -> None: ...


#: a compiled update rule: (p, g, state, k, hyper) -> the new p, state column k in place
Rule = Callable[[float, float, StateRows, int, Sequence[float]], float]
#: what a user registers as ``register_optimizer``'s ``update``: ``(p, g, *state, *hyper)``
#: -> the new p, or ``(new p, *new state)``; ``...`` as its arity is the optimizer's own count
#: of state rows and hyperparameters, ``object`` as Numba compiles it (its scalars need not be
#: floats)
Update = Callable[..., object]
#: ``register_optimizer``'s ``host``: ``(step, lr, **hyperparameters)`` -> the host scalars
Host = Callable[..., Iterable[SupportsFloat]]


class GradientOptions(TypedDict):
    """The clipping and L1 arguments of the optimizer kernels (``Backend.optimizer_step``)."""

    l1: float
    clip_value: float
    max_norm: float
    sum_squares: Array  # (1,) on the device: the squared global norm (norm clipping)


HYPERPARAMETERS: dict[str, Number | Choice] = {
    "learning_rate": Number(0, None, low_closed=False),
    "weight_decay": Number(0, None),
    "momentum": Number(0, 1, high_closed=False),
    "beta1": Number(0, 1, high_closed=False),
    "beta2": Number(0, 1, high_closed=False),
    "eps": Number(0, None, low_closed=False),
    "alpha": Number(0, 1, high_closed=False),
    "centered": Choice((False, True)),
    "lr_decay": Number(0, None),
    "initial_accumulator_value": Number(0, None),
    "l1": Number(0, None),
    "clip_grad_norm": Number(0, None, low_closed=False),
    "clip_grad_value": Number(0, None, low_closed=False),
}

#: what every optimizer does to the gradient before its rule (``Optimizer.__init__``);
#: None (or l1 = 0) turns each off.
GRADIENT_OPTIONS = ("l1", "clip_grad_norm", "clip_grad_value")


# ---------------------------------------------------------------------- update rules
def sgd_rule(p: float, g: float, state: StateRows, k: int, hyper: Sequence[float]) -> float:
    """p <- p - lr g."""
    return p - hyper[0] * g


def momentum_rule(p: float, g: float, state: StateRows, k: int, hyper: Sequence[float]) -> float:
    """v <- mu v + g;  p <- p - lr v, or p - lr (g + mu v) with Nesterov (hyper[2] = 1)."""
    lr, mu, nesterov = hyper
    v = mu * state[0, k] + g
    state[0, k] = v
    if nesterov != 0.0:
        return p - lr * (g + mu * v)
    return p - lr * v


def adam_rule(p: float, g: float, state: StateRows, k: int, hyper: Sequence[float]) -> float:
    """Adam (Kingma & Ba 2015, Algorithm 1), in PyTorch's order of operations."""
    step_size, one_minus_beta1, beta2, one_minus_beta2, eps, bias2_sqrt = hyper
    m = state[0, k]
    m = m + one_minus_beta1 * (g - m)
    v = beta2 * state[1, k] + one_minus_beta2 * g * g
    state[0, k] = m
    state[1, k] = v
    return p - step_size * m / (math.sqrt(v) / bias2_sqrt + eps)


def rmsprop_rule(p: float, g: float, state: StateRows, k: int, hyper: Sequence[float]) -> float:
    """RMSprop, PyTorch's default form: v <- alpha v + (1 - alpha) g^2;
    p <- p - lr g / (sqrt(v) + eps)."""
    lr, alpha, one_minus_alpha, eps = hyper
    v = alpha * state[0, k] + one_minus_alpha * g * g
    state[0, k] = v
    return p - lr * g / (math.sqrt(v) + eps)


def rmsprop_general_rule(
    p: float, g: float, state: StateRows, k: int, hyper: Sequence[float]
) -> float:
    """RMSprop with the options of ``torch.optim.RMSprop``: centered (hyper[5] = 1: the
    running mean gbar of g in state row 1, d = sqrt(v - gbar^2) + eps) and momentum (hyper[4]
    > 0: buf <- mu buf + g / d in state row 2, p <- p - lr buf)."""
    lr, alpha, one_minus_alpha, eps, mu, centered = hyper
    v = alpha * state[0, k] + one_minus_alpha * g * g
    state[0, k] = v
    if centered != 0.0:
        gbar = state[1, k]
        if one_minus_alpha < 0.5:  # torch.lerp's two forms, by the weight
            gbar = gbar + one_minus_alpha * (g - gbar)
        else:
            gbar = g - (g - gbar) * (1.0 - one_minus_alpha)
        state[1, k] = gbar
        d = math.sqrt(v - gbar * gbar) + eps
    else:
        d = math.sqrt(v) + eps
    if mu != 0.0:
        buf = mu * state[2, k] + g / d
        state[2, k] = buf
        return p - lr * buf
    return p - lr * g / d


def adagrad_rule(p: float, g: float, state: StateRows, k: int, hyper: Sequence[float]) -> float:
    """Adagrad: s <- s + g^2;  p <- p - clr g / (sqrt(s) + eps), clr the decayed rate."""
    clr, eps = hyper
    s = state[0, k] + g * g
    state[0, k] = s
    return p - clr * g / (math.sqrt(s) + eps)


class Optimizer:
    """An optimizer: hyperparameters, a rule, state rows (see the module docstring)."""

    name = "optimizer"
    rule: Rule = staticmethod(sgd_rule)
    state_names: tuple[str, ...] = ()

    def __init__(
        self,
        learning_rate: float,
        weight_decay: float = 0.0,
        l1: float = 0.0,
        clip_grad_norm: float | None = None,
        clip_grad_value: float | None = None,
    ) -> None:
        check_params(
            {"learning_rate": learning_rate, "weight_decay": weight_decay}, HYPERPARAMETERS
        )
        self.learning_rate = float(learning_rate)
        self.weight_decay = float(weight_decay)
        self.set_gradient_options(
            l1=l1, clip_grad_norm=clip_grad_norm, clip_grad_value=clip_grad_value
        )
        self.t = 0  # steps taken
        self.state: Array = None  # None until bind
        self.sum_squares: Array = None  # (1,) on the device: ||g||^2 for norm clipping

    def set_gradient_options(
        self,
        l1: float | None = 0.0,
        clip_grad_norm: float | None = None,
        clip_grad_value: float | None = None,
    ) -> None:
        """Checked: l1 >= 0; clip_grad_norm and clip_grad_value None (off) or > 0."""
        given = {"l1": l1, "clip_grad_norm": clip_grad_norm, "clip_grad_value": clip_grad_value}
        check_params({k: v for k, v in given.items() if v is not None}, HYPERPARAMETERS)
        self.l1 = 0.0 if l1 is None else float(l1)
        self.clip_grad_norm = None if clip_grad_norm is None else float(clip_grad_norm)
        self.clip_grad_value = None if clip_grad_value is None else float(clip_grad_value)

    def hyperparameters(self, step: int, lr: float) -> tuple[float, ...]:
        """What the rule reads at ``step`` (1-based) with learning rate ``lr``."""
        return (lr,)

    def reference(
        self, xp: ArrayModule, p: Array, g: Array, state: Array, hyper: tuple[float, ...]
    ) -> Array:
        """The rule in array code: the new p (state rows updated in place)."""
        return p - hyper[0] * g

    def bind(self, backend: Backend, params: Array) -> None:
        """Allocate the state rows for the flat parameter vector ``params`` (zeros, t = 0)."""
        self.state = backend.zeros((len(self.state_names), params.shape[0]), params.dtype)
        self.sum_squares = backend.zeros(1, params.dtype)
        self.t = 0

    def advance(self, steps: int = 1) -> int:
        """Count ``steps`` more updates (the step count t, which Adam's bias corrections and
        Adagrad's decay read) and return the new t. This and ``restore_steps`` are the only
        writers of t: the per-op ``step``, the fused CPU step and the replayed CUDA graph
        all count their updates here."""
        self.t += int(steps)
        return self.t

    def restore_steps(self, t: int) -> None:
        """Set the step count to ``t`` (a checkpoint's, an estimator's snapshot's, or rank 0's
        at the start of distributed training)."""
        self.t = int(t)

    def step(
        self,
        backend: Backend,
        params: Array,
        grads: Array,
        n_decay: int,
        skip: Array,
        lr_factor: float = 1.0,
        weight_decay: float | None = None,
    ) -> None:
        """One update of ``params`` (unless ``skip[0]`` is set, on the device), with the
        gradient clipped and penalized as the module docstring says; the first ``n_decay``
        parameters (the weights) get the L1 and L2 terms (``weight_decay``: this step's L2
        coefficient, default the optimizer's own)."""
        self.advance()
        options = self._gradient_options(backend, grads)
        backend.optimizer_step(
            self,
            params,
            grads,
            self.state,
            self.hyperparameters(self.t, self.learning_rate * lr_factor),
            self.weight_decay if weight_decay is None else weight_decay,
            n_decay,
            skip,
            **options,
        )

    def hyper_rows(self, lr_factors: Array) -> numpy.ndarray:
        """Row b: ``hyperparameters(t + 1 + b, learning_rate * lr_factors[b])``, the
        hyperparameters of the next len(lr_factors) steps (float64; ``step_at`` reads them
        on the device, and the caller adds the steps taken to ``t``)."""
        return numpy.array(
            [
                self.hyperparameters(self.t + 1 + b, self.learning_rate * f)
                for b, f in enumerate(lr_factors)
            ],
            dtype=numpy.float64,
        )

    def step_at(
        self,
        backend: Backend,
        params: Array,
        grads: Array,
        n_decay: int,
        skip: Array,
        hyper_rows: Array,
        counter: Array,
        decays: Array,
    ) -> None:
        """``step`` with the hyperparameters hyper_rows[counter[0]] and the L2 coefficient
        decays[counter[0]] read on the device (the step a CUDA graph replays); ``t`` is left
        to the caller."""
        options = self._gradient_options(backend, grads)
        backend.optimizer_step_at(
            self,
            params,
            grads,
            self.state,
            hyper_rows,
            counter,
            decays,
            n_decay,
            skip,
            **options,
        )

    def _gradient_options(self, backend: Backend, grads: Array) -> GradientOptions:
        """The clipping and L1 arguments of the optimizer kernels; with norm clipping, the
        squared global norm computed first (on the device, into ``sum_squares``)."""
        clip_value = math.inf if self.clip_grad_value is None else self.clip_grad_value
        max_norm = 0.0 if self.clip_grad_norm is None else self.clip_grad_norm
        if max_norm:
            backend.grad_sum_squares(grads, clip_value, self.sum_squares)
        return {
            "l1": self.l1,
            "clip_value": clip_value,
            "max_norm": max_norm,
            "sum_squares": self.sum_squares,
        }

    def describe(self) -> dict[str, JSON]:
        """Name and hyperparameters: ``from_description`` rebuilds the optimizer from it."""
        out: dict[str, JSON] = {
            "name": self.name,
            "learning_rate": self.learning_rate,
            "weight_decay": self.weight_decay,
        }
        for key, off in (("l1", 0.0), ("clip_grad_norm", None), ("clip_grad_value", None)):
            if getattr(self, key) != off:  # only what is on: older descriptions stay as they were
                out[key] = getattr(self, key)
        return out

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "name")
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Mini-batch gradient descent, optionally with (Nesterov) momentum."""

    def __init__(
        self,
        learning_rate: float = 0.1,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        l1: float = 0.0,
        clip_grad_norm: float | None = None,
        clip_grad_value: float | None = None,
    ) -> None:
        super().__init__(learning_rate, weight_decay, l1, clip_grad_norm, clip_grad_value)
        check_params({"momentum": momentum}, HYPERPARAMETERS)
        if nesterov and not momentum:
            raise ParameterError("nesterov=True needs momentum > 0; got momentum=0")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.name = "nesterov" if nesterov else ("momentum" if momentum else "sgd")
        if momentum:
            self.rule = momentum_rule
            self.state_names = ("velocity",)

    def hyperparameters(self, step: int, lr: float) -> tuple[float, ...]:
        if not self.momentum:
            return (lr,)
        return (lr, self.momentum, 1.0 if self.nesterov else 0.0)

    def reference(
        self, xp: ArrayModule, p: Array, g: Array, state: Array, hyper: tuple[float, ...]
    ) -> Array:
        if not self.momentum:
            return p - hyper[0] * g
        lr, mu, _ = hyper
        state[0] = mu * state[0] + g
        return p - lr * (g + mu * state[0]) if self.nesterov else p - lr * state[0]

    def describe(self) -> dict[str, JSON]:
        return {**super().describe(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam: per-parameter step sizes from bias-corrected first and second moments."""

    name = "adam"
    rule = staticmethod(adam_rule)
    state_names = ("m", "v")

    def __init__(
        self,
        learning_rate: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        l1: float = 0.0,
        clip_grad_norm: float | None = None,
        clip_grad_value: float | None = None,
    ) -> None:
        super().__init__(learning_rate, weight_decay, l1, clip_grad_norm, clip_grad_value)
        check_params({"beta1": beta1, "beta2": beta2, "eps": eps}, HYPERPARAMETERS)
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)

    def hyperparameters(self, step: int, lr: float) -> tuple[float, ...]:
        """1 - beta and the bias corrections in float64, then cast: a float32 step is the
        float32 rounding of the exact update, as PyTorch's."""
        b1, b2 = self.beta1, self.beta2
        return (lr / (1.0 - b1**step), 1.0 - b1, b2, 1.0 - b2, self.eps, math.sqrt(1.0 - b2**step))

    def reference(
        self, xp: ArrayModule, p: Array, g: Array, state: Array, hyper: tuple[float, ...]
    ) -> Array:
        step_size, one_minus_beta1, beta2, one_minus_beta2, eps, bias2_sqrt = hyper
        state[0] = state[0] + one_minus_beta1 * (g - state[0])
        state[1] = beta2 * state[1] + one_minus_beta2 * g * g
        return p - step_size * state[0] / (xp.sqrt(state[1]) / bias2_sqrt + eps)

    def describe(self) -> dict[str, JSON]:
        return {**super().describe(), "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps}


class RMSprop(Optimizer):
    """RMSprop (Tieleman & Hinton 2012, lecture 6.5), as ``torch.optim.RMSprop``: per-parameter
    step sizes from a running mean of squared gradients.

        v <- alpha v + (1 - alpha) g^2          d = sqrt(v) + eps
        p <- p - lr g / d

    ``centered=True`` keeps the running mean gbar <- gbar + (1 - alpha)(g - gbar) too and
    uses d = sqrt(v - gbar^2) + eps; ``momentum`` mu > 0 takes buf <- mu buf + g / d,
    p <- p - lr buf. State rows: v, or v, gbar, buf with either option (one kernel for both
    options; the unused row is never read). Defaults are PyTorch's.
    """

    name = "rmsprop"

    def __init__(
        self,
        learning_rate: float = 0.01,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        l1: float = 0.0,
        clip_grad_norm: float | None = None,
        clip_grad_value: float | None = None,
    ) -> None:
        super().__init__(learning_rate, weight_decay, l1, clip_grad_norm, clip_grad_value)
        check_params(
            {"alpha": alpha, "eps": eps, "momentum": momentum, "centered": centered},
            HYPERPARAMETERS,
        )
        self.alpha, self.eps, self.momentum = float(alpha), float(eps), float(momentum)
        self.centered = bool(centered)
        if self.momentum or self.centered:
            self.rule = rmsprop_general_rule
            self.state_names = ("square_avg", "grad_avg", "momentum_buffer")
        else:
            self.rule = rmsprop_rule
            self.state_names = ("square_avg",)

    def hyperparameters(self, step: int, lr: float) -> tuple[float, ...]:
        """1 - alpha in float64 on the host, as PyTorch's ``value=1 - alpha``."""
        base = (lr, self.alpha, 1.0 - self.alpha, self.eps)
        if self.rule is rmsprop_rule:
            return base
        return (*base, self.momentum, 1.0 if self.centered else 0.0)

    def reference(
        self, xp: ArrayModule, p: Array, g: Array, state: Array, hyper: tuple[float, ...]
    ) -> Array:
        lr, alpha, one_minus_alpha, eps = hyper[:4]
        state[0] = alpha * state[0] + one_minus_alpha * g * g
        if self.centered:
            if one_minus_alpha < 0.5:
                state[1] = state[1] + one_minus_alpha * (g - state[1])
            else:
                state[1] = g - (g - state[1]) * (1 - one_minus_alpha)
            d = xp.sqrt(state[0] - state[1] * state[1]) + eps
        else:
            d = xp.sqrt(state[0]) + eps
        if self.momentum:
            state[2] = hyper[4] * state[2] + g / d
            return p - lr * state[2]
        return p - lr * g / d

    def describe(self) -> dict[str, JSON]:
        return {
            **super().describe(),
            "alpha": self.alpha,
            "eps": self.eps,
            "momentum": self.momentum,
            "centered": self.centered,
        }


class Adagrad(Optimizer):
    """Adagrad (Duchi, Hazan & Singer 2011), as ``torch.optim.Adagrad``: each parameter's
    step shrinks with the sum of its squared gradients.

        s <- s + g^2                 (s starts at initial_accumulator_value)
        p <- p - clr g / (sqrt(s) + eps),   clr = lr / (1 + (t - 1) lr_decay) at step t

    clr is computed in float64 on the host. Defaults are PyTorch's.
    """

    name = "adagrad"
    rule = staticmethod(adagrad_rule)
    state_names = ("sum",)

    def __init__(
        self,
        learning_rate: float = 0.01,
        lr_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        weight_decay: float = 0.0,
        l1: float = 0.0,
        clip_grad_norm: float | None = None,
        clip_grad_value: float | None = None,
    ) -> None:
        super().__init__(learning_rate, weight_decay, l1, clip_grad_norm, clip_grad_value)
        check_params(
            {
                "lr_decay": lr_decay,
                "eps": eps,
                "initial_accumulator_value": initial_accumulator_value,
            },
            HYPERPARAMETERS,
        )
        self.lr_decay, self.eps = float(lr_decay), float(eps)
        self.initial_accumulator_value = float(initial_accumulator_value)

    def bind(self, backend: Backend, params: Array) -> None:
        """The sum row starts at ``initial_accumulator_value`` (t = 0)."""
        super().bind(backend, params)
        self.state[...] = self.initial_accumulator_value

    def hyperparameters(self, step: int, lr: float) -> tuple[float, ...]:
        return (lr / (1 + (step - 1) * self.lr_decay), self.eps)

    def reference(
        self, xp: ArrayModule, p: Array, g: Array, state: Array, hyper: tuple[float, ...]
    ) -> Array:
        clr, eps = hyper
        state[0] = state[0] + g * g
        return p - clr * g / (xp.sqrt(state[0]) + eps)

    def describe(self) -> dict[str, JSON]:
        return {
            **super().describe(),
            "lr_decay": self.lr_decay,
            "initial_accumulator_value": self.initial_accumulator_value,
            "eps": self.eps,
        }


def _keywords(build: Callable[..., object]) -> tuple[str, ...]:
    """The keywords ``build(learning_rate, ...)`` takes after the learning rate."""
    params = list(inspect.signature(build).parameters.values())[1:]
    return tuple(p.name for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD)


@dataclass(frozen=True)
class OptimizerEntry:
    """A name that ``optimizer=`` accepts, its update, its default learning rate, and how
    to build it from keywords: ``make`` from the model's (each keyword it names applies to
    this optimizer; any other is refused), ``rebuild`` from every setting ``describe()``
    writes (default: ``make``)."""

    name: str
    update: str  # for the docs
    default_learning_rate: float
    make: Callable[..., Optimizer]  # (learning_rate, **hyperparameters) -> Optimizer
    #: (learning_rate, **settings of describe()) -> Optimizer; None: ``make`` rebuilds it.
    rebuild: Callable[..., Optimizer] | None = None

    @property
    def keywords(self) -> tuple[str, ...]:
        """The keywords this optimizer takes by name: its own, then GRADIENT_OPTIONS."""
        own = _keywords(self.make)
        return (*own, *(k for k in GRADIENT_OPTIONS if k not in own))


def _nesterov(lr: float, momentum: float = 0.9, weight_decay: float = 0.0) -> SGD:
    return SGD(lr, momentum, nesterov=True, weight_decay=weight_decay)


OPTIMIZERS: Registry[OptimizerEntry] = Registry(
    "optimizer",
    [
        OptimizerEntry(
            "sgd",
            "p <- p - lr g",
            0.1,
            lambda lr, weight_decay=0.0: SGD(lr, weight_decay=weight_decay),
            SGD,
        ),
        OptimizerEntry(
            "momentum",
            "v <- mu v + g; p <- p - lr v",
            0.05,
            lambda lr, momentum=0.9, weight_decay=0.0: SGD(lr, momentum, weight_decay=weight_decay),
            SGD,
        ),
        OptimizerEntry("nesterov", "v <- mu v + g; p <- p - lr (g + mu v)", 0.05, _nesterov),
        OptimizerEntry("adam", "Kingma & Ba (2015), bias-corrected moments", 1e-3, Adam),
        OptimizerEntry(
            "rmsprop",
            "v <- alpha v + (1 - alpha) g^2; p <- p - lr g / (sqrt(v) + eps)",
            0.01,
            RMSprop,
        ),
        OptimizerEntry(
            "adagrad",
            "s <- s + g^2; p <- p - lr / (1 + (t - 1) lr_decay) g / (sqrt(s) + eps)",
            0.01,
            Adagrad,
        ),
    ],
)


def make_optimizer(
    name: str, learning_rate: float | None = None, **hyperparameters: float | None
) -> Optimizer:
    """The optimizer called ``name`` (see OPTIMIZERS); the learning rate defaults per name.
    A keyword that does not apply to it raises ``ParameterError`` saying which optimizers
    it applies to."""
    entry = OPTIMIZERS.check("optimizer", name)
    foreign = [k for k in hyperparameters if k not in entry.keywords]
    if foreign:
        given = ", ".join(f"{k}={hyperparameters[k]!r}" for k in foreign)
        where = "; ".join(
            f"{k} applies to {', '.join(map(repr, taking(k))) or 'no optimizer'}" for k in foreign
        )
        raise ParameterError(
            f"{given} {'does' if len(foreign) == 1 else 'do'} not apply to optimizer={name!r}, "
            f"which takes {', '.join(('learning_rate', *entry.keywords))} ({where})"
        )
    lr = entry.default_learning_rate if learning_rate is None else learning_rate
    gradient = {k: hyperparameters.pop(k) for k in GRADIENT_OPTIONS if k in hyperparameters}
    optimizer = entry.make(lr, **hyperparameters)
    if gradient:
        optimizer.set_gradient_options(**gradient)
    return optimizer


def taking(keyword: str) -> tuple[str, ...]:
    """The names of the optimizers that take ``keyword``."""
    return OPTIMIZERS.names(lambda e: keyword in e.keywords)


def from_description(description: object) -> Optimizer:
    """The optimizer that ``Optimizer.describe()`` described (ParameterError if malformed)."""
    if not isinstance(description, dict) or not isinstance(description.get("name"), str):
        raise ParameterError(
            f"an optimizer description is a dict with a 'name'; got {description!r}"
        )
    settings = dict(description)
    name = settings.pop("name")
    settings.pop("nesterov", None)  # implied by the name
    lr = settings.pop("learning_rate", None)
    entry = OPTIMIZERS.check("optimizer", name)
    build = entry.rebuild or entry.make
    allowed = {*_keywords(build), *GRADIENT_OPTIONS} - {"nesterov"}
    unknown = set(settings) - allowed
    if unknown:
        raise ParameterError(
            f"optimizer description has unknown settings {sorted(unknown)}; expected some of "
            f"{sorted(allowed)}"
        )
    gradient = {k: settings.pop(k) for k in GRADIENT_OPTIONS if k in settings}
    optimizer = build(entry.default_learning_rate if lr is None else lr, **settings)
    optimizer.set_gradient_options(**gradient)
    return optimizer


# ---------------------------------------------------------------------- defined from outside
class RuleOptimizer(Optimizer):
    """An optimizer made by ``register_optimizer``: its scalar ``update``, its state rows and
    its hyperparameters (attributes of the same names)."""

    name = "rule"
    default_learning_rate = 0.01
    defaults: dict[str, float] = {}  # the hyperparameters besides the learning rate
    initial_state: tuple[float, ...] = ()
    host: Host | None = None

    def __init__(
        self,
        learning_rate: float | None = None,
        *,
        weight_decay: float = 0.0,
        l1: float = 0.0,
        clip_grad_norm: float | None = None,
        clip_grad_value: float | None = None,
        **hyperparameters: float,
    ) -> None:
        lr = self.default_learning_rate if learning_rate is None else learning_rate
        super().__init__(lr, weight_decay, l1, clip_grad_norm, clip_grad_value)
        unknown = sorted(set(hyperparameters) - set(self.defaults))
        if unknown:
            raise ParameterError(
                f"optimizer {self.name!r} has no hyperparameter {', '.join(unknown)}; it takes "
                f"{', '.join(('learning_rate', *self.defaults, 'weight_decay', *GRADIENT_OPTIONS))}"
            )
        for key, default in self.defaults.items():
            value = hyperparameters.get(key, default)
            HYPERPARAMETERS.get(key, Number()).check(key, value)
            setattr(self, key, float(value))

    def hyperparameters(self, step: int, lr: float) -> tuple[float, ...]:
        """(lr, the hyperparameters in their order), or ``host(step, lr, **them)``."""
        values = {k: getattr(self, k) for k in self.defaults}
        if self.host is None:
            return (lr, *values.values())
        return tuple(float(h) for h in self.host(step, lr, **values))

    def reference(
        self, xp: ArrayModule, p: Array, g: Array, state: Array, hyper: tuple[float, ...]
    ) -> Array:
        """The same scalar rule compiled over the arrays (``kernels.elements``)."""
        from ..kernels.elements import rule_array

        return rule_array(xp, self.rule, p, g, state, hyper)

    def bind(self, backend: Backend, params: Array) -> None:
        """State rows at their initial values (``initial_state``; zeros by default), t = 0."""
        super().bind(backend, params)
        for row, value in enumerate(self.initial_state):
            if value:
                self.state[row] = value

    def describe(self) -> dict[str, JSON]:
        return {**super().describe(), **{k: getattr(self, k) for k in self.defaults}}

    def __reduce__(self) -> tuple[Callable[[str], RuleOptimizer], tuple[str], dict[str, object]]:
        """Pickled by name, with its attributes (``register_optimizer`` made the class, so
        unpickling needs the name registered, as loading a saved model does)."""
        return (_registered_blank, (self.name,), self.__dict__.copy())


def _registered_blank(name: str) -> RuleOptimizer:
    """A blank instance of the class registered as ``name`` (for unpickling)."""
    if name not in OPTIMIZERS:
        raise ParameterError(
            f"the pickled optimizer {name!r} is not registered in this process; register it "
            f"first, with xpmlp.register_optimizer({name!r}, ...) as where it was pickled"
        )
    entry = OPTIMIZERS[name]
    cls = type(entry.make(entry.default_learning_rate))
    return cast(RuleOptimizer, cls.__new__(cls))


#: names a registered optimizer's hyperparameters cannot take (the Optimizer's own).
_RESERVED = frozenset(
    {
        *dir(RuleOptimizer),
        "learning_rate",
        "weight_decay",
        "t",
        "state",
        "sum_squares",
        *GRADIENT_OPTIONS,
    }
)


def register_optimizer(
    name: str,
    update: Update,
    *,
    learning_rate: float,
    state: tuple[str, ...] = (),
    hyperparameters: dict[str, float] | None = None,
    host: Host | None = None,
    initial_state: dict[str, float] | None = None,
    formula: str | None = None,
    replace: bool = False,
) -> type[RuleOptimizer]:
    """Register an optimizer with a per-parameter update rule under ``name``; then
    ``MLP(..., optimizer=name, learning_rate=...)`` or ``optimizer=Cls(...)`` (the class
    returned: ``Cls(learning_rate=None, *, weight_decay=0, l1=0, clip_grad_norm=None,
    clip_grad_value=None, **hyperparameters)``).

    For every parameter p with gradient g (clipped and penalized first, as for every
    optimizer: ``xpmlp.core.optim``), each step computes

        p, s_1, ..., s_n  <-  update(p, g, s_1, ..., s_n, h_1, ..., h_m)

    ``update`` is a plain Python function of scalars, compiled by Numba into the CPU and
    CUDA step kernels; with no ``state`` it returns the new p alone, else the tuple (new p,
    new s_1, ..., new s_n). The state s_i (``state``: their names, one value per parameter,
    saved with the model) starts at ``initial_state.get(name, 0.0)``. The host scalars h are
    ``(lr, *hyperparameters.values())``, in their order, lr the learning rate at this step
    (``learning_rate``, the default, times the schedule's factor); or, with ``host``, the
    floats ``host(t, lr, **hyperparameters)`` of step t = 1, 2, ... (e.g. bias corrections),
    computed in float64 on the host and then cast to the parameters' dtype.

    ``formula``: the update as text, for the docs. A built-in name raises
    ``ParameterError``, and so does one registered before unless ``replace``.
    """
    from ..kernels.compiler import formula as declared

    defaults = dict(hyperparameters or {})
    state = tuple(state) if not isinstance(state, str) else (state,)
    initial = dict(initial_state or {})
    HYPERPARAMETERS["learning_rate"].check("learning_rate", learning_rate)
    if "learning_rate" in defaults:
        raise ParameterError(
            "hyperparameters names 'learning_rate'; the default learning rate is its own "
            f"argument: register_optimizer({name!r}, ..., learning_rate="
            f"{defaults['learning_rate']!r}), and update receives lr first after the state"
        )
    for key in (*defaults, *state):
        if not (isinstance(key, str) and key.isidentifier()) or key in _RESERVED:
            raise ParameterError(
                f"hyperparameter or state name {key!r} is not valid; expected an identifier "
                f"other than {', '.join(sorted(k for k in _RESERVED if not k.startswith('_')))}"
            )
    for key, value in defaults.items():
        HYPERPARAMETERS.get(key, Number()).check(key, value)
    for key, value in initial.items():
        if key not in state:
            raise ParameterError(f"initial_state names {key!r}; expected one of state={state}")
        Number().check(f"initial_state[{key!r}]", value)
    n_hyper = 1 + len(defaults)
    if host is not None:
        if not callable(host):
            raise TypeError(
                f"host={host!r} is not valid; expected a function "
                "(step, lr, **hyperparameters) -> tuple of floats"
            )
        sample = tuple(host(1, float(learning_rate), **defaults))
        for h in sample:
            Number().check("host(...)'s value", h)
        n_hyper = len(sample)
    update = declared(update, "update", 2 + len(state) + n_hyper)
    cls: type[RuleOptimizer] = type(
        name.title().replace("_", ""),
        (RuleOptimizer,),
        {
            "__doc__": (
                f"The optimizer {name!r} (``register_optimizer``): {formula or update.__doc__}"
            ),
            "name": name,
            "rule": staticmethod(_rule_from_update(name, update, len(state), n_hyper)),
            "state_names": state,
            "default_learning_rate": float(learning_rate),
            "defaults": {k: float(v) for k, v in defaults.items()},
            "initial_state": tuple(float(initial.get(k, 0.0)) for k in state),
            "host": staticmethod(host) if host is not None else None,
        },
    )

    def make(learning_rate: float, weight_decay: float = 0.0, **given: float) -> RuleOptimizer:
        return cls(learning_rate, weight_decay=weight_decay, **given)

    keyword = inspect.Parameter.KEYWORD_ONLY
    signature = inspect.Signature(
        [
            inspect.Parameter("learning_rate", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            inspect.Parameter("weight_decay", keyword, default=0.0),
            *(inspect.Parameter(k, keyword, default=v) for k, v in cls.defaults.items()),
        ]
    )
    make.__signature__ = signature  # type: ignore[attr-defined]
    OPTIMIZERS.register(
        OptimizerEntry(
            name, formula or f"{update.__name__}(p, g, ...)", float(learning_rate), make
        ),
        replace=replace,
    )
    return cls


def _rule_from_update(name: str, update: Update, n_state: int, n_hyper: int) -> Rule:
    """The kernels' rule (p, g, state, k, hyper) -> new p for ``update``: it reads state
    column k and the hyper tuple into update's arguments and writes the new state back."""
    args = ", ".join(
        [
            "p",
            "g",
            *(f"state[{i}, k]" for i in range(n_state)),
            *(f"hyper[{i}]" for i in range(n_hyper)),
        ]
    )
    if n_state == 0:
        body = f"    return update({args})\n"
    else:
        new = ", ".join(f"s{i}" for i in range(n_state))
        body = (
            f"    new_p, {new} = update({args})\n"
            + "".join(f"    state[{i}, k] = s{i}\n" for i in range(n_state))
            + "    return new_p\n"
        )
    source = f"def {name}_rule(p, g, state, k, hyper):\n{body}"
    namespace: dict[str, object] = {"update": update, "__name__": __name__}
    exec(compile(source, f"<xpmlp: the rule of optimizer {name!r}>", "exec"), namespace)  # noqa: S102
    rule = cast(Rule, namespace[f"{name}_rule"])
    rule.__doc__ = f"{name}'s update of parameter k, state column k in place:\n{source}"
    return rule


OPTIMIZERS.freeze_builtins()


# ---------------------------------------------------------------------- schedules
# (their own module; importable from here too: xpmlp.core.optim.SCHEDULES,
# xpmlp.core.optim.StepLR, ...)
from .schedules import (  # noqa: E402
    SCHEDULES,
    ChainedScheduler,
    ConstantLR,
    CosineAnnealingLR,
    ExponentialLR,
    LinearLR,
    LRScheduler,
    ReduceLROnPlateau,
    Schedule,
    StepLR,
    schedule_factor,
)

__all__ = [
    "GRADIENT_OPTIONS",
    "HYPERPARAMETERS",
    "OPTIMIZERS",
    "SCHEDULES",
    "SGD",
    "Adagrad",
    "Adam",
    "ChainedScheduler",
    "ConstantLR",
    "CosineAnnealingLR",
    "ExponentialLR",
    "LRScheduler",
    "LinearLR",
    "Optimizer",
    "OptimizerEntry",
    "RMSprop",
    "ReduceLROnPlateau",
    "RuleOptimizer",
    "Schedule",
    "StepLR",
    "from_description",
    "make_optimizer",
    "register_optimizer",
    "schedule_factor",
]
