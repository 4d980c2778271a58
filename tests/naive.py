"""Naive references for every kernel op: one element at a time, in Python floats (float64).

Written from the formulas in the docstrings of ``xpmlp.activations``,
``xpmlp.losses``, ``xpmlp.optim`` and ``xpmlp.backends.base`` (the spec), in the
spirit of STUMPY's ``tests/naive.py``: slow, obvious loops that share no code
with xpmlp. Every function takes NumPy arrays, reads them element by element,
and returns new float64 arrays (or lists); nothing is written in place.

Conventions: a batch is one sample per row, shape (m, n); ``delta`` is dL/dZ of
the batch-mean loss (it holds the 1/m); ``eps`` in the clipped logs is the
machine epsilon of the arrays' dtype; statistics are
[loss sum, correct, count, diverged-at (0 or 1 + first bad batch), last batch's loss sum].
"""

from __future__ import annotations

import math

import numpy as np

# ---------------------------------------------------------------------- activations


def sigmoid(z: float) -> float:
    """1 / (1 + e^-z), in the branch that cannot overflow."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def activate(name: str, z: float) -> float:
    """a = f(z) for one element (softmax is a row operation: see ``softmax_row``)."""
    if math.isnan(z):
        return 0.0 if name == "hardlimit" else math.nan  # max(NaN, 0) is NaN, as in NumPy
    if name == "identity":
        return z
    if name == "sigmoid":
        return sigmoid(z)
    if name == "tanh":
        return math.tanh(z)
    if name == "relu":
        return z if z > 0.0 else 0.0
    if name == "hardlimit":
        return 1.0 if z >= 0.0 else 0.0
    raise ValueError(name)


def softmax_row(z: list[float]) -> list[float]:
    """exp(z_k - max z) / sum_j exp(z_j - max z)."""
    z_max = z[0]
    for v in z:
        if v > z_max or math.isnan(v):
            z_max = v
    e = [math.exp(v - z_max) for v in z]
    total = 0.0
    for v in e:
        total += v
    return [v / total for v in e]


def derivative(name: str, a: float) -> float:
    """f'(z) written through a = f(z)."""
    if name == "sigmoid":
        return a * (1.0 - a)
    if name == "tanh":
        return 1.0 - a * a
    if name == "relu":
        return 1.0 if a > 0.0 else 0.0
    if name == "identity":
        return 1.0
    raise ValueError(f"{name} has no derivative to backpropagate through")


def bias_activation(Z: np.ndarray, b: np.ndarray, activation: str) -> tuple[np.ndarray, np.ndarray]:
    """(Z + b, f(Z + b)), row by row."""
    m, n = Z.shape
    Zb = np.empty((m, n))
    A = np.empty((m, n))
    for i in range(m):
        row = [float(Z[i, j]) + float(b[j]) for j in range(n)]
        out = softmax_row(row) if activation == "softmax" else [activate(activation, z)
                                                                 for z in row]
        for j in range(n):
            Zb[i, j] = row[j]
            A[i, j] = out[j]
    return Zb, A


def activation_backward(
    dA: np.ndarray, A: np.ndarray, activation: str
) -> tuple[np.ndarray, np.ndarray]:
    """delta = dA * f'(A) elementwise; db[j] = sum over the rows of delta[:, j]."""
    m, n = dA.shape
    delta = np.empty((m, n))
    db = np.zeros(n)
    for i in range(m):
        for j in range(n):
            delta[i, j] = float(dA[i, j]) * derivative(activation, float(A[i, j]))
    for j in range(n):
        total = 0.0
        for i in range(m):
            total += delta[i, j]
        db[j] = total
    return delta, db


# ---------------------------------------------------------------------- losses


def softplus(z: float) -> float:
    """log(1 + e^z) without overflow."""
    if z > 0:
        return z + math.log1p(math.exp(-z))
    return math.log1p(math.exp(z))


def clip(a: float, eps: float) -> float:
    return min(max(a, eps), 1.0 - eps)


def element_loss(loss: str, activation: str, z: float, a: float, y: float, eps: float) -> float:
    """One output's loss term, before the batch mean (cross_entropy is done per row)."""
    if loss == "squared_error":
        return (y - a) ** 2
    if loss == "half_squared_error":
        return 0.5 * (y - a) ** 2
    if loss == "binary_cross_entropy":
        if activation == "sigmoid":  # -[y log s(z) + (1 - y) log(1 - s(z))], exactly
            return softplus(z) - y * z
        c = clip(a, eps)
        return -(y * math.log(c) + (1.0 - y) * math.log(1.0 - c))
    raise ValueError(loss)


def row_cross_entropy(z: list[float], y: list[float]) -> float:
    """-sum_k y_k log softmax(z)_k = sum_k y_k (logsumexp(z) - z_k)."""
    z_max = max(z)
    lse = z_max + math.log(sum(math.exp(v - z_max) for v in z))
    return sum(yk * (lse - zk) for yk, zk in zip(y, z, strict=True))


def dloss_da(loss: str, a: float, y: float, eps: float) -> float:
    if loss == "squared_error":
        return 2.0 * (a - y)
    if loss == "half_squared_error":
        return a - y
    c = clip(a, eps)
    return (c - y) / (c * (1.0 - c))


def first_argmax(row: list[float]) -> int:
    best = 0
    for j in range(1, len(row)):
        if row[j] > row[best]:
            best = j
    return best


def loss_output_delta(
    Z: np.ndarray,
    A: np.ndarray,
    Y: np.ndarray,
    stats: np.ndarray,
    activation: str,
    loss: str,
    batch: int,
    eps: float,
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """(delta_L, db_L, new stats) of the output layer for one batch."""
    m, n = Z.shape
    delta = np.empty((m, n))
    batch_loss = 0.0
    correct = 0
    for i in range(m):
        z = [float(v) for v in Z[i]]
        a = [float(v) for v in A[i]]
        y = [float(v) for v in Y[i]]
        if loss == "cross_entropy":
            batch_loss += row_cross_entropy(z, y)
        else:
            for j in range(n):
                batch_loss += element_loss(loss, activation, z[j], a[j], y[j], eps)
        for j in range(n):
            if activation == "softmax" or (activation == "sigmoid"
                                           and loss == "binary_cross_entropy"):
                delta[i, j] = (a[j] - y[j]) / m
            else:
                delta[i, j] = dloss_da(loss, a[j], y[j], eps) * derivative(activation, a[j]) / m
        if n == 1:
            correct += (a[0] >= 0.5) == (y[0] >= 0.5)
        else:
            correct += first_argmax(a) == first_argmax(y)
    db = np.zeros(n)
    for j in range(n):
        for i in range(m):
            db[j] += delta[i, j]
    old = [float(s) for s in stats]
    diverged = old[3]
    if not math.isfinite(batch_loss) and diverged == 0:
        diverged = batch + 1
    new_stats = [old[0] + batch_loss, old[1] + correct, old[2] + m, diverged, batch_loss, batch]
    return delta, db, new_stats


# ---------------------------------------------------------------------- optimizers
# p is the flat parameter vector; L2 decay applies to p[k] for k < n_decay only.


def sgd_step(p: np.ndarray, g: np.ndarray, lr: float, decay: float, n_decay: int) -> np.ndarray:
    """p <- p - lr (g + decay p)."""
    out = np.empty(p.size)
    for k in range(p.size):
        d = decay if k < n_decay else 0.0
        out[k] = float(p[k]) - lr * (float(g[k]) + d * float(p[k]))
    return out


def sgd_momentum_step(
    p: np.ndarray, g: np.ndarray, v: np.ndarray, lr: float, momentum: float, decay: float,
    n_decay: int, nesterov: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """g' = g + decay p; v <- mu v + g'; p <- p - lr (g' + mu v) (Nesterov) or p - lr v."""
    p_out, v_out = np.empty(p.size), np.empty(p.size)
    for k in range(p.size):
        gk = float(g[k]) + (decay if k < n_decay else 0.0) * float(p[k])
        vk = momentum * float(v[k]) + gk
        step = gk + momentum * vk if nesterov else vk
        p_out[k] = float(p[k]) - lr * step
        v_out[k] = vk
    return p_out, v_out


def adam_step(
    p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, lr: float, beta1: float,
    beta2: float, eps: float, decay: float, n_decay: int, step: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kingma & Ba (2015), Algorithm 1, at time step ``step``, with L2 decay."""
    p_out, m_out, v_out = np.empty(p.size), np.empty(p.size), np.empty(p.size)
    for k in range(p.size):
        gk = float(g[k]) + (decay if k < n_decay else 0.0) * float(p[k])
        mk = beta1 * float(m[k]) + (1.0 - beta1) * gk
        vk = beta2 * float(v[k]) + (1.0 - beta2) * gk * gk
        m_hat = mk / (1.0 - beta1**step)
        v_hat = vk / (1.0 - beta2**step)
        p_out[k] = float(p[k]) - lr * m_hat / (math.sqrt(v_hat) + eps)
        m_out[k], v_out[k] = mk, vk
    return p_out, m_out, v_out


# ---------------------------------------------------------------------- data


def gather_rows(X: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """out[r] = X[idx[r]]."""
    out = np.empty((len(idx), X.shape[1]), dtype=X.dtype)
    for r in range(len(idx)):
        for j in range(X.shape[1]):
            out[r, j] = X[int(idx[r]), j]
    return out
