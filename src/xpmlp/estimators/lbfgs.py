"""The lbfgs solver: scipy.optimize.minimize(L-BFGS-B) over the model's flat parameter vector.

Loss and gradient of the whole training set come from the backend, in chunks of up to
CHUNK rows, each the training step's gradient-only form (``xpmlp.train.loop.batch_gradients``:
the backend's fused step where it has one; with sample weights w, row weights
r_i = w_i r_c / S on the chunk's output delta, S = sum of all w):

    f(p)  = sum_i w_i l_i / S + 0.5 alpha ||W||^2 / S,   grad f = sum_i w_i grad l_i / S
                                                                  + alpha W / S

in the model's dtype, handed to SciPy in float64 (as scikit-learn, with maxiter=max_iter,
maxfun=max_fun, gtol=tol). loss_ is reported as scikit-learn reports it (the squared
error's data term averaged over the outputs too).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy
from sklearn.exceptions import ConvergenceWarning

from ..train import loop

if TYPE_CHECKING:
    from ..core.aliases import Array
    from .base import BaseMLP
    from .data import SparseRows

CHUNK = 1 << 14  # rows per forward/backward pass of the full-batch gradient


def fit_lbfgs(est: BaseMLP, X: Array | SparseRows, Y: Array, sw: numpy.ndarray | None) -> None:
    """Minimize the training loss of ``est.mlp_`` on device X, Y (host weights sw)."""
    import scipy.optimize

    model = est.mlp_
    be, xp, dtype = model.backend, model.backend.xp, model.dtype
    n = X.shape[0]
    total = float(n if sw is None else sw.sum())
    r_all = None if sw is None else be.asarray(sw / total, dtype=dtype)
    ws = model.workspace(min(CHUNK, n))
    stats, skip = be.zeros((1, 2), dtype), be.zeros(1, dtype)
    grad = be.zeros(model.params.shape[0], dtype)
    per_output = 1.0 if model.is_classifier or model.loss == "poisson" else Y.shape[1]
    last: dict[str, float] = {}
    # the training set's chunks as the step's batches (their rows in order), and the
    # backend's fused step where it has one: lbfgs runs the step's gradient-only form
    chunks = [xp.arange(start, min(start + CHUNK, n)) for start in range(0, n, CHUNK)]
    fused = loop.fused_step_for(model, X)
    loop.announce_step(model, 3, X=X, gradients_only=True)  # mlp_.step_kind_, and why if slower

    def loss_and_grad(p: numpy.ndarray) -> tuple[float, numpy.ndarray]:
        model.params[...] = be.asarray(p, dtype=dtype)
        grad[...] = 0
        data = xp.zeros((), dtype=dtype)
        for idx in chunks:
            w = ws.first(int(idx.shape[0]))
            weights = None if r_all is None else (r_all, float(w.rows))
            loop.batch_gradients(model, fused, X, Y, idx, w, stats[0], skip, weights)
            share = dtype.type(w.rows / n) if weights is None else dtype.type(1.0)
            grad[...] += model.grads * share
            data = data + stats[0, 0] * (1.0 / n if weights is None else 1.0 / w.rows)
        W = model.params[: model.n_weights]
        grad[: model.n_weights] += dtype.type(est.alpha / total) * W
        penalty = 0.5 * est.alpha * loop.squared_weights(model) / total
        values = be.to_numpy(xp.stack([data, penalty])).astype(numpy.float64)
        last["data"], last["penalty"] = float(values[0]), float(values[1])
        return float(values.sum()), be.to_numpy(grad).astype(numpy.float64)

    def callback(*_: object) -> None:
        est.n_iter_ += 1
        info = {"n_iter": est.n_iter_, "loss": last["data"] / per_output + last["penalty"]}
        if any(bool(cb(est, dict(info))) for cb in (est.callbacks or ())):
            raise StopIteration

    est.n_iter_ = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = scipy.optimize.minimize(
            loss_and_grad,
            be.to_numpy(model.params).astype(numpy.float64),
            method="L-BFGS-B",
            jac=True,
            callback=callback,
            options={"maxfun": est.max_fun, "maxiter": est.max_iter, "gtol": est.tol},
        )
    if result.status != 0 and result.status != 99:
        warnings.warn(
            f"lbfgs failed to converge after {result.nit} iteration(s) "
            f"(status={result.status}): {result.message}",
            ConvergenceWarning,
            stacklevel=3,
        )
    est.n_iter_ = min(int(result.nit), est.max_iter)
    loss_and_grad(result.x)  # the parameters (and figures) of the result
    est.loss_ = last["data"] / per_output + last["penalty"]
