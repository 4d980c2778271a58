"""The forward pass and one whole training step, per backend and per peer.

Model 784-512-256-10 (ReLU, softmax cross-entropy, SGD momentum 0.9, lr 0.05)
at batch 128 and 1024 (workloads A and B), on random data. The forward pass is
``MLP.forward_pass`` on a workspace of the batch. A step is what ``xpmlp bench``
times per batch (``xpmlp.train.loop.run_epoch`` over one batch): gather the batch,
forward, backward, update, synchronize. Rows: xpmlp with the fused kernels
(numpy, cuda), xpmlp on the reference ``base.Backend`` (the same step without
fusion), the plain-NumPy ablation, and PyTorch eager (CPU, CUDA); and the numpy backend's
fused step (one compiled call per batch, its default) against its per-op path. Before
timing, the forward pass must give the reference model's probabilities, and one
step from the shared initial weights must give the reference's weights.
"""

from __future__ import annotations

import numpy as np
import pytest

from xpmlp import MLP
from xpmlp.backends.base import Backend
from xpmlp.backends.numpy_backend import NumpyBackend
from xpmlp_bench.data import synthetic
from xpmlp_bench.peers import TorchRow
from xpmlp_bench.plain import PlainNumpyRow
from xpmlp_bench.rows import ModelSpec, Row, XpmlpRow, initial_weights
from xpmlp_bench.workloads import MNIST_SIZES as SIZES
from xpmlp_bench.workloads import full_profile

BATCHES = tuple(full_profile().workloads[k].batch_size for k in "AB")  # 128, 1024
DATA = synthetic(n_train=4096, n_test=256, n_features=SIZES[0], n_classes=SIZES[-1])


def _row(name: str) -> Row:
    if name == "xpmlp-reference":
        return XpmlpRow(Backend(np), name=name)
    if name == "numpy-plain":
        return PlainNumpyRow()
    if name.startswith("torch-"):
        return TorchRow(name.split("-", 1)[1])
    return XpmlpRow(name.split("-", 1)[1])


def _weights(row: Row) -> list[np.ndarray]:
    if isinstance(row, XpmlpRow):
        return [row.model.backend.to_numpy(layer.W) for layer in row.model.layers]
    if isinstance(row, PlainNumpyRow):
        return [np.array(W) for W in row.W]
    return [m.weight.detach().cpu().numpy() for m in row.net if hasattr(m, "weight")]


@pytest.mark.parametrize("m", BATCHES)
def test_forward(benchmark, backend, m):
    be = backend
    model = MLP(list(SIZES), backend=be, seed=0)
    want = MLP(list(SIZES), backend=Backend(np), seed=0).predict_proba(DATA.x_train[:m])
    ws = model.workspace(m)  # the fixture made the backend's device and stream current
    ws.X[...] = be.asarray(DATA.x_train[:m])
    model.forward_pass(ws)
    np.testing.assert_allclose(be.to_numpy(ws.A[-1]), want, rtol=1e-4, atol=1e-6)
    benchmark.group = f"forward {'-'.join(map(str, SIZES))} m={m}"

    def run() -> None:
        model.forward_pass(ws)
        be.synchronize()

    benchmark(run)


@pytest.mark.parametrize("m", BATCHES)
def test_training_step(benchmark, step_row, m):
    name = step_row
    spec = ModelSpec(SIZES, m, "momentum", 0.05)
    init = initial_weights(spec, 0)
    order = np.random.default_rng(0).permutation(len(DATA.y_train))[:m]
    row, ref = _row(name), _row("xpmlp-reference")
    for r in (row, ref):
        r.prepare(spec, init, DATA)
        r.set_order(order)
        r.train()
    for got, want in zip(_weights(row), _weights(ref), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    benchmark.group = f"training step {'-'.join(map(str, SIZES))} m={m}"
    benchmark(row.train)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "per-op"])
@pytest.mark.parametrize("m", BATCHES)
def test_numpy_step_fused_or_per_op(benchmark, m, fused):
    """The numpy backend's step as one compiled call (``NumpyBackend.fused_step``) or as its
    operations one by one; both must give the reference's weights."""
    spec = ModelSpec(SIZES, m, "momentum", 0.05)
    init = initial_weights(spec, 0)
    order = np.random.default_rng(0).permutation(len(DATA.y_train))[:m]
    row = XpmlpRow(NumpyBackend(fused=fused), name="xpmlp-numpy")
    ref = _row("xpmlp-reference")
    for r in (row, ref):
        r.prepare(spec, init, DATA)
        r.set_order(order)
        r.train()
    assert (row.model.backend.fused_step(row.model) is not None) == fused
    for got, want in zip(_weights(row), _weights(ref), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    benchmark.group = f"numpy training step, fused or per-op, m={m}"
    benchmark(row.train)
