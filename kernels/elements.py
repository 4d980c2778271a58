"""Array formulas derived from scalar ones: a registry entry's scalar formula mapped over arrays.

An activation or optimizer registered with only its scalar formulas
(``xpmlp.register_activation``, ``xpmlp.register_optimizer``) gets its reference array
formulas from here: the same scalar formula, compiled by the CPU ``Target`` (so with the
same dtype-typed constants as the fused kernels) into a loop over every element. The
reference backend thus computes such an entry with the very formula the kernels compile,
one operation per call, as it does with the hand-written array formulas of the built-ins.

The templates take flat C-contiguous arrays; ``activation_array``, ``derivative_array``
and ``rule_array`` flatten the caller's arrays and give back new ones. Arrays of
another module (CuPy, for the reference backend on a GPU) make a round trip through host
memory: the CUDA backend itself never gets here, its kernels bind the scalar formulas.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy

from .rows import activation, derivative, rule

#: a NumPy or CuPy array, unchecked as CuPy ships no types (xpmlp.core.aliases.Array, which
#: kernels/ does not import: it takes its configuration as arguments)
Array = Any
#: a scalar formula a template is compiled with (its arguments depend on the template)
Formula = Callable[..., float]


def activation_elements(Z, A):
    """A[k] = activation(Z[k]) for every k (flat arrays)."""
    for k in range(Z.size):
        A[k] = activation(Z[k])


def derivative_elements(Z, A, D):
    """D[k] = derivative(Z[k], A[k]), f'(z) given z and a = f(z), for every k (flat arrays)."""
    for k in range(Z.size):
        D[k] = derivative(Z[k], A[k])


def rule_elements(p, g, state, hyper):
    """p[k] <- rule(p[k], g[k], state, k, hyper) for every k, state[:, k] updated in place."""
    for k in range(p.size):
        p[k] = rule(p[k], g[k], state, k, hyper)


def _host(a: Array) -> numpy.ndarray:
    """A C-contiguous NumPy array with a's values (a itself when it already is one)."""
    if isinstance(a, numpy.ndarray):
        return numpy.ascontiguousarray(a)
    return numpy.ascontiguousarray(a.get())  # CuPy


def _back(xp: ModuleType, a: numpy.ndarray) -> Array:
    return a if xp is numpy else xp.asarray(a)


def activation_array(xp: ModuleType, forward: Formula, Z: Array) -> Array:
    """f(Z) elementwise, f = ``forward`` compiled for Z's dtype: a new array."""
    from .cpu import CPU

    z = _host(Z)
    a = numpy.empty_like(z)
    CPU.kernel(activation_elements, z.dtype, activation=forward)(z.reshape(-1), a.reshape(-1))
    return _back(xp, a)


def derivative_array(xp: ModuleType, fn: Formula, Z: Array, A: Array) -> Array:
    """f'(Z) elementwise given A = f(Z), f' = ``fn`` compiled for Z's dtype: a new array."""
    from .cpu import CPU

    z, a = _host(Z), _host(A)
    d = numpy.empty_like(z)
    CPU.kernel(derivative_elements, z.dtype, derivative=fn)(
        z.reshape(-1), a.reshape(-1), d.reshape(-1)
    )
    return _back(xp, d)


def rule_array(
    xp: ModuleType, fn: Formula, p: Array, g: Array, state: Array, hyper: tuple[numpy.floating, ...]
) -> Array:
    """The new p of the update rule ``fn`` (compiled for p's dtype) over the flat vectors p
    and g, the rows of ``state`` updated in place; ``hyper`` scalars of p's dtype."""
    from .cpu import CPU

    new_p, s = _host(p).copy(), _host(state)
    CPU.kernel(rule_elements, new_p.dtype, rule=fn)(new_p, _host(g), s, hyper)
    if s is not state:
        state[...] = _back(xp, s)
    return _back(xp, new_p)
