"""The fused CPU training step: one Numba call per batch (template for ``FUSED``).

    gather X, Y rows -> for each layer: Z = A_prev W^T (BLAS), Z += b, [batch norm], A = f(.),
    [dropout] -> loss, delta_L, db_L -> for each layer, top down: delta = dA [* mask] * f'(.)
    [back through batch norm], db, dW = delta^T A_prev, dA_prev = delta W (BLAS) -> [||g||^2]
    -> optimizer update (or, for data-parallel training, stop at the gradients)

``train_step`` is that sequence and nothing else: each of its steps is a kernel of
``xpmlp.kernels.cpu``, already compiled for its activation, loss or rule, bound to the
placeholders below (``Target.kernel(train_step, dtype, hidden_forward=<compiled kernel>,
...)``). So every formula is still written once, in its registry entry and ``cpu.py``; this
module only strings the kernels together and calls BLAS itself, so a step costs one Python
call instead of about twenty (the per-op path: ``MLP.forward_pass``, ``MLP.backward_pass``,
``MLP.apply_gradients``).

Dropout and batch norm (``Regularization``, the ``hidden`` argument): per hidden layer, the
kernel ``Dense.forward`` and ``Dense.backward`` choose in training (batch norm, with or
without dropout; dropout alone; neither), with the same per-layer keys, rates and settings,
which the caller computes as the per-op path does (``xpmlp.core.regularization.dropout_key``:
host integers). A model with neither passes ``hidden=None``: Numba then prunes those
branches, so its step compiles none of their kernels.

The matrix products go to one ``cblas_?gemm``, the caller's ``cblas`` argument (a ctypes
function): the process's BLAS library, which the per-op path's ``matmul`` calls too
(``xpmlp.machine.blas.MatmulProvider.cblas_gemm``: Intel MKL's, or NumPy's own), with the operands
and transposes ``numpy.matmul`` gives it: the same library, thread pool and bits.

A model's layer arrays are passed as tuples (``Ws[l]``, ``Zs[l]``, ...), so one compiled
step serves any depth; all hidden layers share one activation (the backend falls back to the
per-op path otherwise, and says so).
"""

from __future__ import annotations

import collections
import hashlib
import types
from typing import TYPE_CHECKING

from numba import njit

from .compiler import Target, placeholder

if TYPE_CHECKING:
    from numba.core.dispatcher import Dispatcher

hidden_forward = placeholder("hidden_forward", "compiled bias_activation of the hidden layers")
hidden_backward = placeholder(
    "hidden_backward", "compiled activation_backward of the hidden layers"
)
output_forward = placeholder("output_forward", "compiled bias_activation(_rows) of the output")
output_loss = placeholder("output_loss", "compiled loss_output_delta of the output layer")
update = placeholder("update", "compiled optimizer_step of the optimizer's rule")
sum_squares_of = placeholder("sum_squares_of", "compiled grad_sum_squares")
gather = placeholder("gather", "compiled gather_rows")
dropout_forward = placeholder(
    "dropout_forward", "compiled bias_activation_dropout of the hidden layers"
)
dropout_backward = placeholder(
    "dropout_backward", "compiled activation_backward_dropout of the hidden layers"
)
norm_forward = placeholder("norm_forward", "compiled batch_norm_forward of the hidden layers")
norm_backward = placeholder("norm_backward", "compiled batch_norm_backward of the hidden layers")
wide_backward = placeholder(
    "wide_backward",
    "hidden_backward for the layers with wide[l] set "
    "(the parallel form, as the per-op path takes it for their size)",
)
wide_dropout_backward = placeholder(
    "wide_dropout_backward", "dropout_backward for the layers with wide[l] set"
)
weigh_output = placeholder(
    "weigh_output", "compiled weight_output_delta of the loss (sample weights on the output delta)"
)
#: the placeholders of ``train_step``: each is bound to a compiled kernel of ``cpu.py``.
BOUND = (
    "hidden_forward",
    "hidden_backward",
    "output_forward",
    "output_loss",
    "update",
    "sum_squares_of",
    "gather",
    "dropout_forward",
    "dropout_backward",
    "norm_forward",
    "norm_backward",
    "wide_backward",
    "wide_dropout_backward",
    "weigh_output",
)

#: ``train_step``'s ``weights`` argument for a weighted batch: the sample weights of every
#: row of X (``sample``, indexed as X is, by ``idx``), the batch's factor ``scale``
#: (r_i = sample[idx[i]] scale) and ``r``, the (m,) buffer that receives r.
RowWeights = collections.namedtuple("RowWeights", ("sample", "scale", "r"))

#: ``train_step``'s ``hidden`` argument for a model with dropout or batch norm: per hidden
#: layer l, the arguments the per-op path gives its kernels in training (``Dense.forward``,
#: ``Dense.backward``, ``NumpyBackend``'s dropout and batch-norm ops). ``norm[l]``: whether
#: it has batch norm; ``drop[l]``: whether it has dropout; ``keys[l]`` (0 without dropout),
#: ``thresholds[l]`` (``dropout_threshold``), ``scales[l]`` = 1 / (1 - rate); ``momenta[l]``
#: (0 for a batch of one row), ``eps[l]``, ``inv_m1`` = 1 / max(m - 1, 1); the arrays of the
#: batch-normalized layers (``Zhats``, ``stats``, ``gammas``, ``betas``, ``dgammas``,
#: ``dbetas``, ``means``, ``variances``: running estimates), empty stand-ins for the others.
Regularization = collections.namedtuple(
    "Regularization",
    (
        "norm",
        "drop",
        "keys",
        "thresholds",
        "scales",
        "momenta",
        "eps",
        "inv_m1",
        "Zhats",
        "stats",
        "gammas",
        "betas",
        "dgammas",
        "dbetas",
        "means",
        "variances",
    ),
)


def _fused_kernel(fn: types.FunctionType) -> Dispatcher[types.FunctionType]:
    """``njit(cache=True)``, named by a hash of its own name and the bound kernels' names
    (their activation, loss or rule, dtype and fingerprint: ``Target.kernel``), so Numba's
    on-disk cache, which keys on the name, tells a relu step from a tanh one (and the name
    stays short enough for a file name)."""
    bound = "|".join(
        [fn.__qualname__] + [fn.__globals__[name].py_func.__qualname__ for name in BOUND]
    )
    fn.__qualname__ = f"{fn.__name__}__{hashlib.sha256(bound.encode()).hexdigest()[:16]}"
    return njit(cache=True, error_model="numpy")(fn)


#: compiles ``train_step`` with its kernels bound.
FUSED = Target("cpu-fused", njit(error_model="numpy"), _fused_kernel)


def train_step(
    cblas,
    X,
    Y,
    idx,
    Ws,
    bs,
    dWs,
    dbs,
    Zs,
    As,
    deltas,
    Yb,
    out_stats,
    skip,
    inv_m,
    p,
    g,
    state,
    hyper,
    decay,
    n_decay,
    l1,
    clip_value,
    max_norm,
    sum_squares,
    wide,
    hidden,
    weights,
    update_now,
):
    """One training step of the batch X[idx], Y[idx] (As[0] and Yb receive it): forward,
    loss, backward, and, when ``update_now``, the optimizer's update of the flat p with the
    flat gradient g (Ws, bs, dWs, dbs are their per-layer views), in the per-op path's order.
    Without ``update_now`` the step ends with the gradients in g (data-parallel training
    averages them over the ranks, then updates: ``xpmlp.train.loop.run_epoch``). Every
    product is one call of ``cblas`` (the process's ``cblas_?gemm``). ``wide[l]``: hidden layer l's
    backward kernel is the wide one (its parallel form, whose column sums add chunk by
    chunk: taken where the per-op path takes it, so that db has the same bits). ``hidden``:
    None, or the hidden layers' dropout and batch norm (``Regularization``). ``weights``:
    None, or the batch's sample weights (``RowWeights``) on the output delta and loss.
    (Functions as arguments, not globals, so that the step is cached.)"""
    gather(X, idx, As[0])
    gather(Y, idx, Yb)
    L = len(Ws)
    for l in range(L - 1):
        gemm(cblas, As[l], Ws[l], Zs[l], False, True)  # Z = A_prev W^T
        if hidden is None:
            hidden_forward(Zs[l], bs[l], As[l + 1])
        elif hidden.norm[l]:
            norm_forward(
                Zs[l],
                bs[l],
                hidden.gammas[l],
                hidden.betas[l],
                hidden.stats[l],
                hidden.means[l],
                hidden.variances[l],
                hidden.Zhats[l],
                As[l + 1],
                hidden.momenta[l],
                hidden.eps[l],
                inv_m,
                hidden.inv_m1,
                hidden.keys[l],
                hidden.thresholds[l],
                hidden.scales[l],
            )
        elif hidden.drop[l]:
            dropout_forward(
                Zs[l], bs[l], As[l + 1], 0, hidden.keys[l], hidden.thresholds[l], hidden.scales[l]
            )
        else:
            hidden_forward(Zs[l], bs[l], As[l + 1])
    gemm(cblas, As[L - 1], Ws[L - 1], Zs[L - 1], False, True)
    output_forward(Zs[L - 1], bs[L - 1], As[L])
    output_loss(Zs[L - 1], As[L], Yb, deltas[L - 1], dbs[L - 1], out_stats, skip, inv_m)
    if weights is not None:  # r_i = w_idx[i] scale, as the per-op path's row weights
        for i in range(idx.shape[0]):
            weights.r[i] = weights.sample[idx[i]] * weights.scale
        weigh_output(Zs[L - 1], As[L], Yb, weights.r, deltas[L - 1], dbs[L - 1], out_stats)
    for l in range(L - 1, -1, -1):
        if l < L - 1:  # deltas[l] holds dA; delta = dA * f'(.) in place
            if hidden is None or not (hidden.norm[l] or hidden.drop[l]):
                if wide[l]:
                    wide_backward(deltas[l], Zs[l], As[l + 1], deltas[l], dbs[l])
                else:
                    hidden_backward(deltas[l], Zs[l], As[l + 1], deltas[l], dbs[l])
            elif hidden.norm[l]:
                norm_backward(
                    deltas[l],
                    hidden.Zhats[l],
                    hidden.gammas[l],
                    hidden.betas[l],
                    hidden.stats[l],
                    deltas[l],
                    hidden.dgammas[l],
                    hidden.dbetas[l],
                    dbs[l],
                    inv_m,
                    hidden.keys[l],
                    hidden.thresholds[l],
                    hidden.scales[l],
                )
            elif wide[l]:
                wide_dropout_backward(
                    deltas[l],
                    Zs[l],
                    deltas[l],
                    dbs[l],
                    0,
                    hidden.keys[l],
                    hidden.thresholds[l],
                    hidden.scales[l],
                )
            else:
                dropout_backward(
                    deltas[l],
                    Zs[l],
                    deltas[l],
                    dbs[l],
                    0,
                    hidden.keys[l],
                    hidden.thresholds[l],
                    hidden.scales[l],
                )
        gemm(cblas, deltas[l], As[l], dWs[l], True, False)  # dW
        if l > 0:  # dA_prev = delta W
            gemm(cblas, deltas[l], Ws[l], deltas[l - 1], False, False)
    if not update_now:
        return
    if max_norm > 0.0:
        sum_squares_of(g, clip_value, sum_squares)
    update(p, g, state, hyper, decay, n_decay, skip, l1, clip_value, max_norm, sum_squares)


# ---------------------------------------------------------------------- BLAS
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112


def gemm(cblas, a, b, out, ta, tb):
    """out = op(a) op(b), op(x) = x^T when its flag is set: one call of ``cblas`` (a ctypes
    ``cblas_?gemm``) on C-contiguous 2-D arrays, as numpy.matmul makes it; a product over
    k = 0 is zeros."""
    m, n = out.shape
    k = a.shape[0] if ta else a.shape[1]
    if m == 0 or n == 0:
        return
    if k == 0:
        out[...] = 0.0
        return
    lda, ldb, ldc = max(a.shape[1], 1), max(b.shape[1], 1), max(n, 1)
    cblas(
        ROW_MAJOR,
        TRANS if ta else NO_TRANS,
        TRANS if tb else NO_TRANS,
        m,
        n,
        k,
        1.0,
        a.ctypes.data,
        lda,
        b.ctypes.data,
        ldb,
        0.0,
        out.ctypes.data,
        ldc,
    )
