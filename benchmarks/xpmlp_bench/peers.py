"""The peer rows: PyTorch eager (CPU, CUDA) and scikit-learn's MLPClassifier.

Both build the same model as xpmlp (ReLU hidden layers, softmax cross-entropy),
start from the same weights and step through the same batches in the same
order. A peer that is not installed is reported as skipped, with the reason.

PyTorch: ``nn.Sequential`` of ``nn.Linear`` and ``nn.ReLU``, ``F.cross_entropy``
(mean over the batch), ``torch.optim.SGD(momentum=0.9)`` or ``torch.optim.Adam``,
the data moved to the device once and each batch gathered by ``index_select``;
TF32 off; no host synchronization inside the epoch.

scikit-learn: ``MLPClassifier(solver="sgd", momentum=0.9, nesterovs_momentum=False,
learning_rate="constant")`` or ``solver="adam"``, ``alpha=0`` (no L2),
``shuffle=False`` (the pass arrives already in the shared order), ``tol=0`` and
a huge ``n_iter_no_change`` so nothing stops early, no validation split.
One ``partial_fit`` per pass over ``X[order]`` (its batches are consecutive
slices of that array); sklearn validates its input and one-hot encodes the
labels in every call, and that counts in its time. A first ``partial_fit``
(untimed) allocates the model; its weights are then overwritten with ``init``
and its optimizer state dropped, so training starts from the shared init.
"""

from __future__ import annotations

import numpy as np

from .data import Dataset
from .rows import Init, ModelSpec, Row


def torch_unavailable_reason(device: str) -> str | None:
    """None when PyTorch can run on ``device`` ("cpu" or "cuda"), else why not."""
    try:
        import torch
    except ImportError as exc:
        return f"PyTorch is not installed ({exc}); pip install -e '.[bench]' in the xpmlp checkout"
    if device == "cuda" and not torch.cuda.is_available():
        return "PyTorch sees no CUDA device (a CPU build, or no GPU)"
    return None


def sklearn_unavailable_reason() -> str | None:
    try:
        import sklearn.neural_network  # noqa: F401
    except ImportError as exc:
        return (
            f"scikit-learn is not installed ({exc}); pip install -e '.[bench]' in the xpmlp "
            "checkout"
        )
    return None


class TorchRow(Row):
    """PyTorch eager on one device (see the module docstring)."""

    regularizes = True

    def __init__(self, device: str) -> None:
        self.device = device
        self.name = f"torch-{device}"
        self.gemm_library = f"torch-{device}"

    def prepare(self, spec: ModelSpec, init: Init, data: Dataset) -> None:
        import torch
        from torch import nn

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        self.torch = torch
        self.spec = spec
        dev = torch.device(self.device)
        layers: list[nn.Module] = []
        sizes = spec.layer_sizes
        for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            if l:  # after a hidden Dense layer: [batch norm,] ReLU[, dropout]
                if spec.batch_norm:
                    layers.append(nn.BatchNorm1d(n_in))
                layers.append(nn.ReLU())
                if spec.dropout:
                    layers.append(nn.Dropout(spec.dropout))
            layers.append(nn.Linear(n_in, n_out))
        self.net = nn.Sequential(*layers).to(dev)
        with torch.no_grad():
            linears = [m for m in self.net if isinstance(m, nn.Linear)]
            for lin, (W, b) in zip(linears, init, strict=True):
                lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(W)))
                lin.bias.copy_(torch.from_numpy(np.ascontiguousarray(b)))
        params = self.net.parameters()
        if spec.optimizer == "adam":
            self.opt = torch.optim.Adam(
                params, lr=spec.learning_rate, betas=(spec.beta1, spec.beta2), eps=spec.eps
            )
        else:
            self.opt = torch.optim.SGD(params, lr=spec.learning_rate, momentum=spec.momentum)
        self.X = torch.from_numpy(data.x_train).to(dev)
        self.y = torch.from_numpy(data.y_train).to(dev)
        self.X_test = torch.from_numpy(data.x_test).to(dev)
        self.y_test = torch.from_numpy(data.y_test).to(dev)
        self._sync()

    def _sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def set_order(self, order: np.ndarray) -> None:
        self.order = self.torch.from_numpy(order.astype(np.int64)).to(self.X.device)
        self._sync()

    def train(self) -> None:
        F = self.torch.nn.functional
        net, opt, bs = self.net, self.opt, self.spec.batch_size
        net.train()
        for start in range(0, int(self.order.shape[0]), bs):
            idx = self.order[start : start + bs]
            xb = self.X.index_select(0, idx)
            yb = self.y.index_select(0, idx)
            loss = F.cross_entropy(net(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        self._sync()

    def accuracy(self) -> float:
        self.net.eval()  # dropout off, batch norm's running estimates
        with self.torch.no_grad():
            hits = sum(
                int(
                    (self.net(self.X_test[s : s + 4096]).argmax(1) == self.y_test[s : s + 4096])
                    .sum()
                    .item()
                )
                for s in range(0, int(self.X_test.shape[0]), 4096)
            )
        return hits / int(self.X_test.shape[0])


class SklearnRow(Row):
    """scikit-learn's MLPClassifier on the CPU (see the module docstring)."""

    name = "sklearn"
    device = "cpu"
    gemm_library = "numpy"

    def prepare(self, spec: ModelSpec, init: Init, data: Dataset) -> None:
        from sklearn.neural_network import MLPClassifier

        common = dict(
            hidden_layer_sizes=tuple(spec.layer_sizes[1:-1]),
            activation="relu",
            alpha=0.0,
            batch_size=spec.batch_size,
            learning_rate_init=spec.learning_rate,
            shuffle=False,
            tol=0.0,
            n_iter_no_change=2**31 - 1,
            early_stopping=False,
            max_iter=1,
            random_state=0,
        )
        if spec.optimizer == "adam":
            clf = MLPClassifier(
                solver="adam", beta_1=spec.beta1, beta_2=spec.beta2, epsilon=spec.eps, **common
            )
        else:
            clf = MLPClassifier(
                solver="sgd",
                learning_rate="constant",
                momentum=spec.momentum,
                nesterovs_momentum=False,
                **common,
            )
        self.classes = np.arange(data.n_classes)
        clf.partial_fit(
            data.x_train[: spec.batch_size], data.y_train[: spec.batch_size], classes=self.classes
        )
        for coef, intercept, (W, b) in zip(clf.coefs_, clf.intercepts_, init, strict=True):
            coef[...] = W.T
            intercept[...] = b
        if hasattr(clf, "_optimizer"):
            del clf._optimizer  # the next partial_fit starts a fresh optimizer on coefs_
        clf.n_iter_, clf.t_, clf.loss_curve_ = 0, 0, []
        self.clf, self.data = clf, data

    def set_order(self, order: np.ndarray) -> None:
        self.order = order

    def train(self) -> None:
        self.clf.partial_fit(self.data.x_train[self.order], self.data.y_train[self.order])

    def accuracy(self) -> float:
        return float(self.clf.score(self.data.x_test, self.data.y_test))
