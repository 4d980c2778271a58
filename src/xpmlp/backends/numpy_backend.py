"""The NumPy backend: NumPy arrays, OpenBLAS/MKL matrix products, Numba CPU kernels.

It inherits every operation from the reference ``Backend`` and overrides the
hot ones with the fused kernels of ``xpmlp.kernels.cpu``, each compiled for the
registry entry it is asked about (an activation, a loss after its output
activation, an optimizer's rule) and for the arrays' dtype. Scalars are cast to
that dtype before each call, so a float32 kernel never sees a float64 scalar.
"""

from __future__ import annotations

import os
import platform

from typing import Any

import numpy

from ..kernels import cpu
from .base import Array, Backend, activation_entry, loss_entry


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


def _kernel(template: Any, size: int, dtype: Any, **bindings: Any) -> Any:
    """The compiled kernel: the parallel form for arrays of PARALLEL_MIN_ELEMENTS or more."""
    if size >= cpu.PARALLEL_MIN_ELEMENTS:
        return cpu.CPU.kernel(cpu.PARALLEL[template], dtype, options={"parallel": True},
                              **bindings)
    return cpu.CPU.kernel(template, dtype, **bindings)


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

    def gather_rows(self, X: Array, idx: Array, out: Array) -> None:
        _kernel(cpu.gather_rows, out.size, X.dtype)(X, idx, out)

    def bias_activation(self, Z: Array, b: Array, A: Array, activation: Any) -> None:
        entry = activation_entry(activation)
        if entry.elementwise:
            _kernel(cpu.bias_activation, Z.size, Z.dtype, activation=entry.scalar)(Z, b, A)
        else:
            _kernel(cpu.bias_activation_rows, Z.size, Z.dtype, activation_row=entry.row)(Z, b, A)

    def activation_backward(
        self, dA: Array, Z: Array, A: Array, delta: Array, db: Array, activation: Any
    ) -> None:
        derivative = activation_entry(activation).scalar_derivative
        _kernel(cpu.activation_backward, dA.size, dA.dtype, derivative=derivative)(
            dA, Z, A, delta, db
        )

    def loss_output_delta(
        self, Z: Array, A: Array, Y: Array, delta: Array, db: Array, out_stats: Array,
        skip: Array, activation: Any, loss: Any,
    ) -> None:
        bindings = loss_entry(loss).kernel_bindings(activation_entry(activation))
        kernel = cpu.CPU.kernel(cpu.loss_output_delta, Z.dtype, **bindings)
        kernel(Z, A, Y, delta, db, out_stats, skip, Z.dtype.type(1.0 / Z.shape[0]))

    def optimizer_step(
        self, optimizer: Any, p: Array, g: Array, state: Array, hyper: tuple[float, ...],
        decay: float, n_decay: int, skip: Array,
    ) -> None:
        t = p.dtype.type
        _kernel(cpu.optimizer_step, p.size, p.dtype, rule=optimizer.rule)(
            p, g, state, tuple([t(h) for h in hyper]), t(decay), n_decay, skip
        )
