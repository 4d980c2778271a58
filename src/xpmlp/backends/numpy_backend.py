"""The NumPy backend: NumPy arrays, OpenBLAS/MKL matrix products, Numba CPU kernels.

It inherits every operation from the reference ``Backend`` and overrides the
hot ones with the fused ``@njit`` kernels of ``xpmlp.kernels.cpu``. Scalars
are cast to the arrays' dtype before each call so that a float32 kernel
never sees a float64 scalar.
"""

from __future__ import annotations

import os
import platform
from typing import Any

import numpy

from ..kernels import cpu
from ..kernels.scalar import ACTIVATION_CODES, LOSS_CODES
from .base import Array, Backend


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


class NumpyBackend(Backend):
    """NumPy arrays on the CPU, with fused Numba ``@njit`` kernels."""

    name = "numpy"

    def __init__(self) -> None:
        super().__init__(numpy)

    @property
    def device(self) -> str:
        import numba

        return f"CPU: {cpu_model()} ({os.cpu_count()} cores, {numba.get_num_threads()} Numba threads)"

    def gather_rows(self, X: Array, idx: Array, out: Array) -> None:
        cpu.gather_rows(X, idx, out)

    def bias_activation(self, Z: Array, b: Array, A: Array, activation: str) -> None:
        cpu.bias_activation(Z, b, A, ACTIVATION_CODES[activation])

    def activation_backward(
        self, dA: Array, A: Array, delta: Array, db: Array, activation: str
    ) -> None:
        cpu.activation_backward(dA, A, delta, db, ACTIVATION_CODES[activation])

    def loss_output_delta(
        self, Z, A, Y, delta, db, stats, activation: str, loss: str, batch: int
    ) -> None:
        t = Z.dtype.type
        cpu.loss_output_delta(
            Z, A, Y, delta, db, stats,
            ACTIVATION_CODES[activation], LOSS_CODES[loss],
            t(1.0 / Z.shape[0]), t(numpy.finfo(Z.dtype).eps), batch,
        )

    def sgd_step(self, p, g, lr: float, decay: float, n_decay: int, stats) -> None:
        t = p.dtype.type
        cpu.sgd_step(p, g, t(lr), t(decay), n_decay, stats)

    def sgd_momentum_step(
        self, p, g, v, lr: float, momentum: float, decay: float, n_decay: int,
        nesterov: bool, stats,
    ) -> None:
        t = p.dtype.type
        cpu.sgd_momentum_step(
            p, g, v, t(lr), t(momentum), t(decay), n_decay, bool(nesterov), stats
        )

    def adam_step(
        self, p, g, m, v, lr: float, beta1: float, beta2: float, eps: float,
        decay: float, n_decay: int, step: int, stats,
    ) -> None:
        t = p.dtype.type
        cpu.adam_step(
            p, g, m, v, t(lr), t(beta1), t(beta2), t(eps), t(decay), n_decay,
            t(1.0 - beta1**step), t(1.0 - beta2**step), stats,
        )


