"""Optimizers: one update over the model's flat parameter vector, one kernel launch per step.

The parameters of every layer live in one flat vector p (all W, then all b),
the gradients in a flat vector g with the same layout, and each optimizer's
state in flat vectors too, so a step is a single fused launch. L2 weight
decay adds ``weight_decay * W`` to the weights' gradient (not to the biases').

=========  =================================================================
sgd        p <- p - lr g
momentum   v <- mu v + g;  p <- p - lr v                (PyTorch's form)
nesterov   v <- mu v + g;  p <- p - lr (g + mu v)
adam       Kingma & Ba (2015), Algorithm 1, with bias correction 1 - beta^t
=========  =================================================================

A learning-rate schedule (``schedule_factor``) scales the rate step by step.
"""

from __future__ import annotations

import math
from typing import Any

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")
SCHEDULES = ("constant", "cosine")
DEFAULT_LEARNING_RATE = {"sgd": 0.1, "momentum": 0.05, "nesterov": 0.05, "adam": 1e-3}


class Optimizer:
    """Base class: ``bind`` allocates state next to the parameters, ``step`` updates them."""

    name = "optimizer"

    def __init__(self, learning_rate: float, weight_decay: float = 0.0) -> None:
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.lr_factor = 1.0  # set per step by a learning-rate schedule

    @property
    def lr(self) -> float:
        """The learning rate of the next step: learning_rate times the schedule's factor."""
        return self.learning_rate * self.lr_factor

    def bind(self, backend: Any, params: Any) -> None:
        """Allocate the optimizer's state for the flat parameter vector ``params``."""

    def step(self, backend: Any, params: Any, grads: Any, n_decay: int, stats: Any) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "learning_rate": self.learning_rate,
                "weight_decay": self.weight_decay}


class SGD(Optimizer):
    """Mini-batch gradient descent, optionally with (Nesterov) momentum."""

    def __init__(
        self,
        learning_rate: float,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(learning_rate, weight_decay)
        self.momentum = momentum
        self.nesterov = nesterov
        self.velocity: Any = None
        self.name = "nesterov" if nesterov else ("momentum" if momentum else "sgd")

    def bind(self, backend: Any, params: Any) -> None:
        self.velocity = backend.zeros(params.shape, params.dtype) if self.momentum else None

    def step(self, backend: Any, params: Any, grads: Any, n_decay: int, stats: Any) -> None:
        if self.velocity is None:
            backend.sgd_step(params, grads, self.lr, self.weight_decay, n_decay, stats)
        else:
            backend.sgd_momentum_step(
                params, grads, self.velocity, self.lr, self.momentum,
                self.weight_decay, n_decay, self.nesterov, stats,
            )

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam: per-parameter step sizes from bias-corrected first and second moments."""

    name = "adam"

    def __init__(
        self,
        learning_rate: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(learning_rate, weight_decay)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.t = 0
        self.m: Any = None
        self.v: Any = None

    def bind(self, backend: Any, params: Any) -> None:
        self.m = backend.zeros(params.shape, params.dtype)
        self.v = backend.zeros(params.shape, params.dtype)
        self.t = 0

    def step(self, backend: Any, params: Any, grads: Any, n_decay: int, stats: Any) -> None:
        self.t += 1
        backend.adam_step(
            params, grads, self.m, self.v, self.lr, self.beta1, self.beta2,
            self.eps, self.weight_decay, n_decay, self.t, stats,
        )

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps}


def schedule_factor(schedule: str, step: int, total_steps: int) -> float:
    """The factor on the learning rate at ``step`` of ``total_steps`` (0-based).

    constant: 1.   cosine: (1 + cos(pi step / total_steps)) / 2, from 1 down towards 0
    (Loshchilov & Hutter 2017, without restarts).
    """
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * step / total_steps))
    return 1.0


def make_optimizer(
    name: str,
    learning_rate: float | None = None,
    *,
    momentum: float = 0.9,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> Optimizer:
    """The optimizer called ``name`` (one of OPTIMIZERS); lr defaults per optimizer."""
    lr = DEFAULT_LEARNING_RATE[name] if learning_rate is None else learning_rate
    if name == "adam":
        return Adam(lr, beta1, beta2, eps, weight_decay)
    if name == "sgd":
        return SGD(lr, 0.0, False, weight_decay)
    return SGD(lr, momentum, name == "nesterov", weight_decay)
