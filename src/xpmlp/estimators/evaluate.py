"""A fitted model's loss and score on a data set, on the device (one host copy of two numbers).

loss  = sum_i w_i l_i / sum_i w_i  (/ n_outputs for squared error, as scikit-learn)
        + 0.5 alpha ||W||^2 / sum_i w_i
score = accuracy (subset accuracy for multilabel) or R^2 averaged over the outputs,
        weighted by w as scikit-learn's accuracy_score and r2_score weight them;
        NaN where an output is not finite, as scikit-learn scores such a model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.workspace import PREDICT_CHUNK
from ..train.loop import squared_weights
from ..train.model import MLP

if TYPE_CHECKING:
    from ..core.aliases import Array
    from .data import SparseRows


def output_and_terms(model: MLP, X: Array | SparseRows, Y: Array) -> tuple[Array, Array]:
    """A_L (m, n_L) and the per-sample losses l_i (m,) of the device arrays X, Y."""
    xp = model.backend.xp
    rows = min(PREDICT_CHUNK, X.shape[0])
    ws = model.workspace(rows)
    outs, terms = [], []
    for start in range(0, X.shape[0], rows):
        w = ws.first(min(rows, X.shape[0] - start))
        w.X[...] = X[start : start + w.rows]
        model.forward_pass(w, training=False)
        outs.append(w.A[-1].copy())
        terms.append(
            model.loss_entry.array_terms(
                model.backend.array_api, w.Z[-1], w.A[-1], Y[start : start + w.rows]
            )
        )
    return xp.concatenate(outs), xp.concatenate(terms)


def r2(A: Array, Y: Array, w: Array) -> Array:
    """R^2 per output averaged, weighted, with scikit-learn's conventions for a constant
    target (1 if predicted exactly, else 0)."""
    mean = (w[:, None] * Y).sum(axis=0) / w.sum()
    ss_res = (w[:, None] * (Y - A) ** 2).sum(axis=0)
    ss_tot = (w[:, None] * (Y - mean) ** 2).sum(axis=0)
    ok = ss_tot != 0
    safe = ss_tot + (~ok)
    scores = 1.0 - ss_res / safe
    scores = scores * ok + (~ok) * (ss_res == 0)
    return scores.mean()


def evaluate(
    model: MLP,
    X: Array | SparseRows,
    Y: Array,
    w: Array | None,
    alpha: float,
    softmax: bool,
) -> tuple[float, float]:
    """(loss, score) of the model on device X, Y with device weights w (ones if None)."""
    xp = model.backend.xp
    A, terms = output_and_terms(model, X, Y)
    if w is None:
        w = xp.ones(X.shape[0], dtype=A.dtype)
    sw = w.sum()
    per_output = 1.0 if model.is_classifier or model.loss == "poisson" else Y.shape[1]
    loss = (w * terms).sum() / sw / per_output + 0.5 * alpha * squared_weights(model) / sw
    if model.is_classifier:
        hits = (
            (A.argmax(axis=1) == Y.argmax(axis=1))
            if softmax
            else ((A > 0.5) == (Y > 0.5)).all(axis=1)
        )
        score = (w * hits).sum() / sw
    else:
        score = r2(A, Y, w)
    score = xp.where(xp.isfinite(A).all(), score, xp.nan)  # as scikit-learn's scoring
    values = model.backend.to_numpy(
        xp.stack([xp.asarray(loss, dtype="float64"), xp.asarray(score, dtype="float64")])
    )
    return float(values[0]), float(values[1])
