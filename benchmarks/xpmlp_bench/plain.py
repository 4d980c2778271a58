"""The ablation row: the same training step in straightforward NumPy, without Numba.

Per batch of m rows (Y one-hot, L layers, ReLU hidden, softmax output):

    forward    Z_l = A_{l-1} W_l^T + b_l;  A_l = max(Z_l, 0);  P = softmax(Z_L)
    loss       sum of -log P[y] and the count of argmax hits (as xpmlp keeps them)
    backward   delta_L = (P - Y) / m;  dW_l = delta_l^T A_{l-1};  db_l = sum_rows delta_l
               delta_{l-1} = (delta_l W_l) * (A_{l-1} > 0)
    update     momentum: v = mu v + g; p -= lr v       adam: Kingma & Ba with bias correction

Parameters and gradients live in one flat vector each (like ``xpmlp.MLP``) so
the update is a few whole-vector expressions; batch buffers are allocated
once and the matrix products write into them (``out=``). Everything else is
plain array expressions, temporaries included: this is what the fused
kernels are measured against.
"""

from __future__ import annotations

import numpy as np

from .data import Dataset
from .rows import Init, ModelSpec, Row


class PlainNumpyRow(Row):
    """The training step as ordinary NumPy expressions (see the module docstring)."""

    name = "numpy-plain"
    device = "cpu"
    gemm_library = "numpy"

    def prepare(self, spec: ModelSpec, init: Init, data: Dataset) -> None:
        self.spec = spec
        sizes = spec.layer_sizes
        shapes = list(zip(sizes[1:], sizes[:-1], strict=True))
        n_w = sum(o * i for o, i in shapes)
        n_total = n_w + sum(sizes[1:])
        f32 = np.float32
        self.p = np.zeros(n_total, f32)
        self.g = np.zeros(n_total, f32)
        self.W, self.b, self.dW, self.db = [], [], [], []
        w_at, b_at = 0, n_w
        for (n_out, n_in), (W0, b0) in zip(shapes, init, strict=True):
            w, b = slice(w_at, w_at + n_out * n_in), slice(b_at, b_at + n_out)
            self.W.append(self.p[w].reshape(n_out, n_in))
            self.dW.append(self.g[w].reshape(n_out, n_in))
            self.b.append(self.p[b])
            self.db.append(self.g[b])
            self.W[-1][...] = W0
            self.b[-1][...] = b0
            w_at, b_at = w.stop, b.stop
        self.v = np.zeros_like(self.p)
        self.m = np.zeros_like(self.p)
        self.t = 0
        self.X = data.x_train
        self.Y = np.eye(sizes[-1], dtype=f32)[data.y_train]
        self.X_test, self.y_test = data.x_test, data.y_test
        rows = min(spec.batch_size, len(data.y_train))
        self.xb = np.empty((rows, sizes[0]), f32)
        self.yb = np.empty((rows, sizes[-1]), f32)
        self.Z = [np.empty((rows, n), f32) for n in sizes[1:]]
        self.A = [np.empty((rows, n), f32) for n in sizes[1:]]
        self.D = [np.empty((rows, n), f32) for n in sizes[1:]]
        self.loss_sum = f32(0)
        self.correct = 0

    def set_order(self, order: np.ndarray) -> None:
        self.order = order.astype(np.intp)

    def _forward(self, x: np.ndarray, m: int) -> np.ndarray:
        a = x
        last = len(self.W) - 1
        for l, (W, b) in enumerate(zip(self.W, self.b, strict=True)):
            z = self.Z[l][:m]
            np.matmul(a, W.T, out=z)
            z += b
            if l < last:
                a = self.A[l][:m]
                np.maximum(z, 0, out=a)
        z = self.Z[last][:m]
        z -= z.max(axis=1, keepdims=True)  # z is now log-softmax up to log(sum exp)
        P = self.A[last][:m]
        np.exp(z, out=P)
        s = P.sum(axis=1, keepdims=True)
        P /= s
        z -= np.log(s)
        return P

    def _step(self, idx: np.ndarray) -> None:
        m = len(idx)
        x, y = self.xb[:m], self.yb[:m]
        np.take(self.X, idx, axis=0, out=x)
        np.take(self.Y, idx, axis=0, out=y)
        P = self._forward(x, m)
        L = len(self.W)
        self.loss_sum -= (self.Z[L - 1][:m] * y).sum()
        self.correct += (P.argmax(axis=1) == y.argmax(axis=1)).sum()
        delta = self.D[L - 1][:m]
        np.subtract(P, y, out=delta)
        delta *= np.float32(1.0 / m)
        for l in range(L - 1, -1, -1):
            a_prev = self.A[l - 1][:m] if l > 0 else x
            np.matmul(delta.T, a_prev, out=self.dW[l])
            np.sum(delta, axis=0, out=self.db[l])
            if l > 0:
                d_prev = self.D[l - 1][:m]
                np.matmul(delta, self.W[l], out=d_prev)
                d_prev *= a_prev > 0
                delta = d_prev
        self._update()

    def _update(self) -> None:
        s, p, g = self.spec, self.p, self.g
        f32 = np.float32
        if s.optimizer == "momentum":
            self.v *= f32(s.momentum)
            self.v += g
            p -= f32(s.learning_rate) * self.v
            return
        self.t += 1
        self.m *= f32(s.beta1)
        self.m += f32(1 - s.beta1) * g
        self.v *= f32(s.beta2)
        self.v += f32(1 - s.beta2) * g * g
        m_hat = self.m / f32(1 - s.beta1**self.t)
        v_hat = self.v / f32(1 - s.beta2**self.t)
        p -= f32(s.learning_rate) * m_hat / (np.sqrt(v_hat) + f32(s.eps))

    def train(self) -> None:
        bs = self.spec.batch_size
        for start in range(0, len(self.order), bs):
            self._step(self.order[start : start + bs])

    def accuracy(self) -> float:
        hits = 0
        for start in range(0, len(self.y_test), 4096):
            a = self.X_test[start : start + 4096]
            y = self.y_test[start : start + 4096]
            for l, (W, b) in enumerate(zip(self.W, self.b, strict=True)):
                a = a @ W.T + b
                if l < len(self.W) - 1:
                    a = np.maximum(a, 0)
            hits += int((a.argmax(axis=1) == y).sum())
        return hits / len(self.y_test)
