"""The NumPy backend: NumPy arrays, OpenBLAS/MKL matrix products, Numba CPU kernels.

It inherits every operation from the reference ``Backend`` and overrides the
hot ones with the fused ``@njit`` kernels of ``xpmlp.kernels.cpu``. Scalars
are cast to the arrays' dtype before each call so that a float32 kernel
never sees a float64 scalar.
"""

from __future__ import annotations

import os
import platform

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

        threads = numba.get_num_threads()
        return f"CPU: {cpu_model()} ({os.cpu_count()} cores, {threads} Numba threads)"

    # Each op runs the serial kernel on small arrays and the parallel one on large ones
    # (see xpmlp.kernels.cpu). Scalars are cast to the arrays' dtype first.
    def gather_rows(self, X: Array, idx: Array, out: Array) -> None:
        if out.size >= cpu.PARALLEL_MIN_ELEMENTS:
            cpu.gather_rows_parallel(X, idx, out)
        else:
            cpu.gather_rows(X, idx, out)

    def bias_activation(self, Z: Array, b: Array, A: Array, activation: str) -> None:
        code = ACTIVATION_CODES[activation]
        if Z.size >= cpu.PARALLEL_MIN_ELEMENTS:
            cpu.bias_activation_parallel(Z, b, A, code)
        else:
            cpu.bias_activation(Z, b, A, code)

    def activation_backward(
        self, dA: Array, A: Array, delta: Array, db: Array, activation: str
    ) -> None:
        code = ACTIVATION_CODES[activation]
        if dA.size >= cpu.PARALLEL_MIN_ELEMENTS:
            cpu.activation_backward_parallel(dA, A, delta, db, code)
        else:
            cpu.activation_backward(dA, A, delta, db, code)

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
        args = (p, g, t(lr), t(decay), n_decay, stats)
        if p.size >= cpu.PARALLEL_MIN_ELEMENTS:
            cpu.sgd_step_parallel(*args)
        else:
            cpu.sgd_step(*args)

    def sgd_momentum_step(
        self, p, g, v, lr: float, momentum: float, decay: float, n_decay: int,
        nesterov: bool, stats,
    ) -> None:
        t = p.dtype.type
        args = (p, g, v, t(lr), t(momentum), t(decay), n_decay, bool(nesterov), stats)
        if p.size >= cpu.PARALLEL_MIN_ELEMENTS:
            cpu.sgd_momentum_step_parallel(*args)
        else:
            cpu.sgd_momentum_step(*args)

    def adam_step(
        self, p, g, m, v, lr: float, beta1: float, beta2: float, eps: float,
        decay: float, n_decay: int, step: int, stats,
    ) -> None:
        t = p.dtype.type
        args = (p, g, m, v, t(lr), t(beta1), t(beta2), t(eps), t(decay), n_decay,
                t(1.0 - beta1**step), t(1.0 - beta2**step), stats)
        if p.size >= cpu.PARALLEL_MIN_ELEMENTS:
            cpu.adam_step_parallel(*args)
        else:
            cpu.adam_step(*args)
