"""``coefs_`` and ``intercepts_``: the fitted network's weights as scikit-learn's lists of
host arrays, W (n_in, n_out) and b (n_out,) per layer, that the user may read, edit in
place or assign, as in scikit-learn.

The lists are plain attributes of the estimator and the authority whenever the estimator
uses its network (``mlp_``): ``absorb`` copies them into the network before prediction,
further training and pickling; ``publish`` writes the network's weights back into them
after training. On the NumPy backend the arrays are views of the network's parameters
(``absorb`` then copies only what was replaced); on the CUDA backend they are host copies,
updated in place after each fit so that arrays the user holds follow the training as
scikit-learn's do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from ..core.aliases import Array
    from ..train.model import MLP
    from .base import BaseMLP


def _same_memory(a: object, b: Array) -> bool:
    """a is b, or another view of exactly the same elements."""
    return (
        isinstance(a, numpy.ndarray)
        and a.shape == b.shape
        and a.strides == b.strides
        and a.dtype == b.dtype
        and a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
    )


def _targets(model: MLP) -> list[tuple[str, int, Array, tuple[int, ...]]]:
    """(attribute, layer, backend array in scikit-learn's orientation, shape) of every
    coefficient array, then every intercept."""
    coefs = [
        ("coefs_", l, layer.W.T, (layer.W.shape[1], layer.W.shape[0]))
        for l, layer in enumerate(model.layers)
    ]
    intercepts = [
        ("intercepts_", l, layer.b, tuple(layer.b.shape)) for l, layer in enumerate(model.layers)
    ]
    return coefs + intercepts


def _lists(est: BaseMLP, n_layers: int) -> dict[str, list[ArrayLike] | tuple[ArrayLike, ...]]:
    """est.coefs_ and est.intercepts_, checked to be sequences with one array per layer."""
    found = {}
    for name in ("coefs_", "intercepts_"):
        value = est.__dict__.get(name)
        if not isinstance(value, (list, tuple)) or len(value) != n_layers:
            got = (
                f"a {type(value).__name__} of {len(value)}"
                if isinstance(value, (list, tuple))
                else f"a {type(value).__name__}"
            )
            raise ValueError(
                f"{name} must be a list of {n_layers} arrays, one per layer of the "
                f"fitted network; got {got}"
            )
        found[name] = value
    return found


def check_given(
    est: BaseMLP,
    layer_units: list[int],
) -> list[tuple[numpy.ndarray, numpy.ndarray]]:
    """The (W (n_out, n_in), b) pairs of coefs_ and intercepts_ set on an estimator that has
    no network yet (to train on with partial_fit or warm_start), checked against the layer
    sizes the data needs."""
    lists = _lists(est, len(layer_units) - 1)
    pairs = []
    for l, (n_in, n_out) in enumerate(zip(layer_units[:-1], layer_units[1:], strict=True)):
        W = _host(lists["coefs_"][l], f"coefs_[{l}]", (n_in, n_out))
        b = _host(lists["intercepts_"][l], f"intercepts_[{l}]", (n_out,))
        pairs.append((W.T, b))
    return pairs


def _host(value: ArrayLike, name: str, shape: tuple[int, ...]) -> numpy.ndarray:
    try:
        arr = numpy.asarray(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a numeric array; could not convert it: {exc}") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} has dtype {arr.dtype}; expected a numeric array")
    if arr.shape != shape:
        raise ValueError(f"{name} has shape {arr.shape}; the network needs {shape}")
    return arr


def absorb(est: BaseMLP) -> None:
    """Copy coefs_ and intercepts_ into est.mlp_ where they are not its own parameters (any
    array the user assigned; on CUDA, every array). Call inside ``backend.activate()``."""
    model = est.mlp_
    if "coefs_" not in est.__dict__ and "intercepts_" not in est.__dict__:
        publish(est)  # e.g. an estimator pickled before these were attributes
        return
    lists = _lists(est, len(model.layers))
    be = model.backend
    on_host = be.xp is numpy
    for name, l, target, shape in _targets(model):
        given = lists[name][l]
        if on_host and _same_memory(given, target):
            continue
        target[...] = be.asarray(_host(given, f"{name}[{l}]", shape), dtype=model.dtype)


def publish(est: BaseMLP) -> None:
    """est.coefs_ and est.intercepts_ from est.mlp_: the lists kept where they fit the
    network, each array kept where it is the parameter itself (NumPy) or written in place
    where it is a writable host array of the right shape and dtype, else replaced (by a
    view of the parameters on NumPy, a host copy on CUDA)."""
    model = est.mlp_
    be = model.backend
    on_host = be.xp is numpy
    n = len(model.layers)
    for name in ("coefs_", "intercepts_"):
        value = est.__dict__.get(name)
        if not isinstance(value, list) or len(value) != n:
            setattr(est, name, [None] * n)
    for name, l, target, shape in _targets(model):
        arrays = getattr(est, name)
        current = arrays[l]
        if on_host and _same_memory(current, target):
            continue
        host = be.to_numpy(target)  # NumPy: the parameters' view itself
        if (
            isinstance(current, numpy.ndarray)
            and current.shape == shape
            and current.dtype == model.dtype
            and current.flags.writeable
        ):
            current[...] = host
        else:
            arrays[l] = host if on_host else numpy.array(host)
