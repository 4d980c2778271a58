"""Each fused kernel of the backends against its unfused array expression (base.Backend).

Shapes are those of workloads A and B (batch 128 and 1024, widths 512/256/10
of 784-512-256-10); the optimizer steps run over the model's flat parameter
vector (535,818 floats). Each benchmark first checks that the backend under
test and the reference agree on the same inputs, then times the backend
(synchronized on the GPU). Compare ``numpy-fused`` with ``numpy-reference``
inside each group.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from xpmlp import optim
from xpmlp_bench.workloads import MNIST_SIZES as SIZES
from xpmlp_bench.workloads import full_profile

BATCHES = tuple(full_profile().workloads[k].batch_size for k in "AB")  # 128, 1024

F32 = np.float32
N_PARAMS = sum(o * i + o for i, o in zip(SIZES[:-1], SIZES[1:], strict=True))
N_WEIGHTS = sum(o * i for i, o in zip(SIZES[:-1], SIZES[1:], strict=True))
HIDDEN = [(512, "relu"), (256, "relu")]


def _rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _close(be: Any, got: Any, want: Any, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    np.testing.assert_allclose(
        be.to_numpy(got), np.asarray(be.to_numpy(want)), rtol=rtol, atol=atol
    )


def _timed(benchmark: Any, be: Any, group: str, fn: Any) -> None:
    benchmark.group = group

    def run() -> None:
        fn()
        be.synchronize()

    benchmark(run)


@pytest.mark.parametrize("m", BATCHES)
def test_gather_rows(benchmark, pair, m):
    be, ref = pair
    X = be.asarray(_rng().random((8192, SIZES[0]), dtype=F32))
    idx = be.asarray(_rng().permutation(8192)[:m].astype(np.int64))
    out, want = be.empty((m, SIZES[0]), F32), be.empty((m, SIZES[0]), F32)
    be.gather_rows(X, idx, out)
    ref.gather_rows(X, idx, want)
    _close(be, out, want, 0, 0)
    _timed(benchmark, be, f"gather_rows m={m} n={SIZES[0]}", lambda: be.gather_rows(X, idx, out))


@pytest.mark.parametrize("m", BATCHES)
@pytest.mark.parametrize("n,activation", HIDDEN + [(10, "softmax")])
def test_bias_activation(benchmark, pair, m, n, activation):
    be, ref = pair
    Z0 = _rng().standard_normal((m, n), dtype=F32)
    b = be.asarray(_rng().standard_normal(n, dtype=F32) * F32(1e-4))
    Z, Zr = be.asarray(Z0.copy()), be.asarray(Z0.copy())
    A, Ar = be.empty((m, n), F32), be.empty((m, n), F32)
    be.bias_activation(Z, b, A, activation)
    ref.bias_activation(Zr, b, Ar, activation)
    _close(be, Z, Zr)
    _close(be, A, Ar)
    _timed(
        benchmark,
        be,
        f"bias_activation {activation} m={m} n={n}",
        lambda: be.bias_activation(Z, b, A, activation),
    )


@pytest.mark.parametrize("m", BATCHES)
@pytest.mark.parametrize("n,activation", HIDDEN)
def test_activation_backward(benchmark, pair, m, n, activation):
    be, ref = pair
    dA = be.asarray(_rng().standard_normal((m, n), dtype=F32))
    Z0 = np.random.default_rng(1).standard_normal((m, n), dtype=F32)
    Z, A = be.asarray(Z0), be.asarray(np.maximum(Z0, 0))
    delta, db = be.empty((m, n), F32), be.empty(n, F32)
    delta_r, db_r = be.empty((m, n), F32), be.empty(n, F32)
    be.activation_backward(dA, Z, A, delta, db, activation)
    ref.activation_backward(dA, Z, A, delta_r, db_r, activation)
    _close(be, delta, delta_r)
    _close(be, db, db_r, rtol=1e-4, atol=1e-4)
    _timed(
        benchmark,
        be,
        f"activation_backward {activation} m={m} n={n}",
        lambda: be.activation_backward(dA, Z, A, delta, db, activation),
    )


@pytest.mark.parametrize("m", BATCHES)
def test_loss_output_delta(benchmark, pair, m):
    be, ref = pair
    n = SIZES[-1]
    Z = be.asarray(_rng().standard_normal((m, n), dtype=F32))
    A = be.empty((m, n), F32)
    ref.bias_activation(Z, be.zeros(n, F32), A, "softmax")
    Y = be.asarray(np.eye(n, dtype=F32)[_rng().integers(0, n, m)])
    # per implementation: delta, db, out_stats (loss sum, correct count), skip flag
    outs = [
        (be.empty((m, n), F32), be.empty(n, F32), be.zeros(2, F32), be.zeros(1, F32))
        for _ in range(2)
    ]
    for impl, (delta, db, out_stats, skip) in zip((be, ref), outs, strict=True):
        impl.loss_output_delta(Z, A, Y, delta, db, out_stats, skip, "softmax", "cross_entropy")
    for got, want in zip(outs[0], outs[1], strict=True):
        _close(be, got, want, rtol=1e-4, atol=1e-5)
    delta, db, out_stats, skip = outs[0]
    _timed(
        benchmark,
        be,
        f"loss_output_delta softmax-CE m={m} n={n}",
        lambda: be.loss_output_delta(
            Z, A, Y, delta, db, out_stats, skip, "softmax", "cross_entropy"
        ),
    )


def _flat(be: Any, k: int, scale: float = 1.0) -> Any:
    return be.asarray(np.random.default_rng(k).standard_normal(N_PARAMS, dtype=F32) * F32(scale))


def _state(be: Any, optimizer: optim.Optimizer) -> Any:
    """The optimizer's state rows over the flat parameter vector (zeros)."""
    return be.zeros((len(optimizer.state_names), N_PARAMS), F32)


OPTIMIZERS = {  # benchmark name: the optimizer, as timed since the first release of this suite
    "sgd_momentum_step": lambda: optim.SGD(1e-3, momentum=0.9),
    "adam_step": lambda: optim.Adam(1e-3, beta1=0.9, beta2=0.999, eps=1e-8),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_step(benchmark, pair, name):
    be, ref = pair
    opt = OPTIMIZERS[name]()
    p, g = _flat(be, 1), _flat(be, 2, 1e-2)
    state = _state(be, opt)
    for row in range(state.shape[0]):  # a velocity or moments that are not all zero
        state[row] = abs(_flat(be, 3 + row, 1e-2))
    skip = be.zeros(1, F32)
    pr, state_r = p.copy(), state.copy()
    args = (opt.hyperparameters(1, opt.learning_rate), 0.0, N_WEIGHTS, skip)
    be.optimizer_step(opt, p, g, state, *args)
    ref.optimizer_step(opt, pr, g, state_r, *args)
    _close(be, p, pr)
    _close(be, state, state_r)
    _timed(
        benchmark,
        be,
        f"{name} params={N_PARAMS}",
        lambda: be.optimizer_step(opt, p, g, state, *args),
    )
