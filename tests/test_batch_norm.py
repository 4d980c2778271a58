"""Batch normalization: the fused kernels against the reference (CPU here, the CUDA simulator
with ``-m cudasim``), agreement with ``torch.nn.BatchNorm1d`` in training and eval mode
(forward, every gradient, running estimates, after several optimizer steps), finite
differences, inference with the running estimates, and the model's keyword and file.
"""

from __future__ import annotations

import numpy as np
import pytest
from kernel_cases import (
    BACKWARD,
    DTYPES,
    ELEMENTWISE,
    batch_norm_inputs,
    run_batch_norm_backward,
    run_batch_norm_forward,
    run_batch_norm_inference,
    seed,
)
from test_gradients import host, set_params

from xpmlp import MLP
from xpmlp.backends.base import Backend
from xpmlp.backends.numpy_backend import NumpyBackend
from xpmlp.core.errors import ParameterError
from xpmlp.io.serialize import load_model, save_model

REFERENCE = Backend()
SHAPES = [(2, 1), (7, 3), (150, 9)]


def assert_near(got, expected, what: str = "", ulps: float = 64.0) -> None:
    """|got - expected| <= ulps eps (|expected| + max |expected|): the kernels' and the
    reference's sums and normalizations round differently, by a few eps of the largest
    value an array holds."""
    got, expected = np.asarray(got), np.asarray(expected, dtype=np.float64)
    eps = float(np.finfo(got.dtype).eps)
    bound = ulps * eps * (np.abs(expected) + np.abs(expected).max(initial=0.0))
    bad = ~(np.abs(got - expected) <= bound)
    assert not bad.any(), (what, got[bad][:4], expected[bad][:4])


# ---------------------------------------------------------------------- kernels vs reference
@pytest.mark.parametrize("rate", [0.0, 0.3])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", ELEMENTWISE)
def test_batch_norm_forward_and_inference(act, shape, dtype, rate) -> None:
    rng = seed("bn-forward", act, shape, dtype)
    inputs = batch_norm_inputs(shape, dtype, rng)
    ref = run_batch_norm_forward(REFERENCE, act, *inputs, 11, rate)
    got = run_batch_norm_forward(NumpyBackend(), act, *inputs, 11, rate)
    for name, g, e in zip(
        ("Z", "stats", "running_mean", "running_var", "Zhat", "A"), got, ref, strict=True
    ):
        assert_near(g, e, f"{act} {name}")
    np.testing.assert_array_equal(got[-1] == 0, ref[-1] == 0)
    ref = run_batch_norm_inference(REFERENCE, act, *inputs)
    got = run_batch_norm_inference(NumpyBackend(), act, *inputs)
    for g, e in zip(got, ref, strict=True):
        assert_near(g, e, f"{act} inference")


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("rate", [0.0, 0.3])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", BACKWARD)
def test_batch_norm_backward(act, shape, dtype, rate, in_place) -> None:
    rng = seed("bn-backward", act, shape, dtype)
    Z, b, gamma, beta, rmean, rvar = batch_norm_inputs(shape, dtype, rng)
    _, stats, _, _, Zhat, _ = run_batch_norm_forward(
        REFERENCE, act, Z, b, gamma, beta, rmean, rvar, 5, rate
    )
    dA = rng.standard_normal(shape).astype(dtype)
    ref = run_batch_norm_backward(REFERENCE, act, dA, Zhat, gamma, beta, stats, 5, rate)
    got = run_batch_norm_backward(
        NumpyBackend(), act, dA, Zhat, gamma, beta, stats, 5, rate, in_place
    )
    # delta's terms dBN, mean(dBN) and Zhat mean(dBN Zhat) cancel: tolerance from their size
    scale = np.abs(gamma * stats[1]) * (np.abs(dA).max() * (1 + np.abs(Zhat).max()))
    for name, g, e in zip(("delta", "dgamma", "dbeta", "db"), got, ref, strict=True):
        eps = float(np.finfo(np.dtype(dtype)).eps)
        np.testing.assert_allclose(
            g, e, rtol=64 * eps, atol=64 * eps * shape[0] * float(scale.max()), err_msg=name
        )


def test_a_batch_of_one_row_leaves_the_running_estimates_alone() -> None:
    inputs = batch_norm_inputs((1, 4), "float64", seed("one-row"))
    for be in (REFERENCE, NumpyBackend()):
        Z, stats, rmean, rvar, Zhat, A = run_batch_norm_forward(be, "tanh", *inputs, 0, 0.0)
        np.testing.assert_array_equal(rmean, inputs[4])
        np.testing.assert_array_equal(rvar, inputs[5])
        np.testing.assert_array_equal(Zhat, 0.0)
        np.testing.assert_allclose(A, np.tanh(inputs[3])[None], rtol=1e-15)


# ---------------------------------------------------------------------- torch
torch = pytest.importorskip("torch")


def torch_twin(model: MLP, acts: list[str]):
    """The torch network of a 2-hidden-layer xpmlp model with batch norm, same parameters."""
    nn = torch.nn
    layers = []
    fs = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
    for l, layer in enumerate(model.layers):
        lin = nn.Linear(layer.n_in, layer.n_out, dtype=torch.float64)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(host(model, layer.W)))
            lin.bias.copy_(torch.from_numpy(host(model, layer.b)))
        layers.append(lin)
        if l < len(acts):
            bn = nn.BatchNorm1d(layer.n_out, dtype=torch.float64)
            with torch.no_grad():
                bn.weight.copy_(torch.from_numpy(host(model, layer.norm.gamma)))
                bn.bias.copy_(torch.from_numpy(host(model, layer.norm.beta)))
            layers += [bn, fs[acts[l]]()]
    return nn.Sequential(*layers)


@pytest.mark.parametrize("backend", ["reference", "numpy"])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_matches_torch_batchnorm1d_in_training_and_eval(backend, optimizer) -> None:
    """Float64, 2 hidden layers with batch norm: 6 steps of forward, backward (every gradient,
    gamma and beta included) and optimizer update against torch, then the running estimates
    and eval-mode outputs, to 1e-12. L2 decay on the weights only (torch: a parameter group).

    With Adam to 1e-9 only: the gradient of the Dense bias before batch norm is zero but for
    rounding (~1e-17, in torch as here), and Adam's m / (sqrt(v) + eps) turns that noise
    into updates of ~lr 1e-9 that differ between any two implementations."""
    tol = 1e-9 if optimizer == "adam" else 1e-12
    acts = ["relu", "tanh"]
    rng = seed("torch-bn", backend, optimizer)
    be = REFERENCE if backend == "reference" else "numpy"
    model = MLP(
        [5, 7, 6, 3],
        activation=acts,
        batch_norm=True,
        dtype="float64",
        backend=be,
        optimizer=optimizer,
        learning_rate=0.05,
        weight_decay=0.01,
        seed=2,
    )
    with model.backend.activate():  # gamma and beta away from their initial 1 and 0
        model.params[model.n_weights :] = model.backend.asarray(
            rng.normal(0.5, 0.5, model.params.size - model.n_weights)
        )
    net = torch_twin(model, acts)
    lins = [m for m in net if isinstance(m, torch.nn.Linear)]
    bns = [m for m in net if isinstance(m, torch.nn.BatchNorm1d)]
    others = [p for m in lins for p in (m.bias,)] + [p for m in bns for p in m.parameters()]
    groups = [
        {"params": [m.weight for m in lins], "weight_decay": 0.01},
        {"params": others, "weight_decay": 0.0},
    ]
    opt = (
        torch.optim.Adam(groups, lr=0.05)
        if optimizer == "adam"
        else torch.optim.SGD(groups, lr=0.05, momentum=0.9 if optimizer == "momentum" else 0)
    )
    net.train()
    for _ in range(6):
        X, y = rng.standard_normal((16, 5)), rng.integers(0, 3, 16)
        grads = model.backward(model.forward(X), y)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(X)), torch.from_numpy(y))
        loss.backward()
        assert abs(grads.loss - loss.item()) < tol
        for layer, lin in zip(model.layers, lins, strict=True):
            np.testing.assert_allclose(host(model, layer.dW), lin.weight.grad, atol=tol)
            np.testing.assert_allclose(host(model, layer.db), lin.bias.grad, atol=tol)
        for layer, bn in zip(model.layers, bns, strict=False):
            np.testing.assert_allclose(host(model, layer.norm.dgamma), bn.weight.grad, atol=tol)
            np.testing.assert_allclose(host(model, layer.norm.dbeta), bn.bias.grad, atol=tol)
        model.step()
        opt.step()
    for layer, lin in zip(model.layers, lins, strict=True):
        np.testing.assert_allclose(host(model, layer.W), lin.weight.detach(), atol=tol)
    for layer, bn in zip(model.layers, bns, strict=False):
        np.testing.assert_allclose(host(model, layer.norm.gamma), bn.weight.detach(), atol=tol)
        np.testing.assert_allclose(host(model, layer.norm.running_mean), bn.running_mean, atol=tol)
        np.testing.assert_allclose(host(model, layer.norm.running_var), bn.running_var, atol=tol)
    net.eval()
    X = rng.standard_normal((9, 5))
    with torch.no_grad():
        expected = torch.softmax(net(torch.from_numpy(X)), dim=1).numpy()
    np.testing.assert_allclose(model.predict_proba(X), expected, atol=tol)


# ---------------------------------------------------------------------- finite differences
@pytest.mark.parametrize("backend", ["reference", "numpy"])
@pytest.mark.parametrize(
    ("output", "loss"), [("softmax", "cross_entropy"), ("identity", "squared_error")]
)
def test_gradients_match_finite_differences(backend, output, loss) -> None:
    """The training-mode loss (batch statistics) as a function of every parameter, gamma and
    beta included."""
    rng = seed("bn-fd", backend, loss)
    be = REFERENCE if backend == "reference" else "numpy"
    model = MLP(
        [4, 6, 5, 3],
        activation=["sigmoid", "tanh"],
        output_activation=output,
        loss=loss,
        batch_norm=[True, True],
        optimizer="sgd",
        dtype="float64",
        backend=be,
    )
    p0 = rng.normal(0.0, 0.7, model.params.shape)
    X = rng.standard_normal((7, 4))
    y = rng.integers(0, 3, 7) if loss == "cross_entropy" else rng.standard_normal((7, 3))

    def loss_and_grads(p: np.ndarray) -> tuple[float, np.ndarray]:
        set_params(model, p)
        g = model.backward(model.forward(X), y)
        return g.loss, host(model, model.grads)

    _, grads = loss_and_grads(p0)
    eps = 1e-6
    numeric = np.empty_like(p0)
    for i in range(p0.size):
        e = np.zeros_like(p0)
        e[i] = eps
        numeric[i] = (loss_and_grads(p0 + e)[0] - loss_and_grads(p0 - e)[0]) / (2 * eps)
    np.testing.assert_allclose(grads, numeric, rtol=1e-5, atol=1e-8)


# ---------------------------------------------------------------------- the model
def test_inference_uses_the_running_estimates() -> None:
    rng = seed("bn-inference")
    X, y = rng.standard_normal((60, 4)), rng.integers(0, 2, 60)
    model = MLP([4, 5, 2], activation="tanh", batch_norm=True, dtype="float64", backend="numpy")
    model.fit(X, y, epochs=2, batch_size=20)
    rm, rv = model.running_mean.copy(), model.running_var.copy()
    assert not np.allclose(rm, 0.0) and not np.allclose(rv, 1.0)
    (W1, b1), (W2, b2) = model.get_weights()
    gamma, beta = model.layers[0].norm.gamma, model.layers[0].norm.beta
    H = np.tanh(gamma * (X @ W1.T + b1 - rm) / np.sqrt(rv + 1e-5) + beta)
    Z2 = H @ W2.T + b2
    expected = np.exp(Z2) / np.exp(Z2).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(model.predict_proba(X), expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(model.running_mean, rm)  # prediction leaves them alone


def test_gamma_and_beta_live_after_the_biases_and_are_not_decayed() -> None:
    model = MLP(
        [3, 4, 5, 2], batch_norm=[False, True], optimizer="sgd", weight_decay=0.5, backend="numpy"
    )
    n_b = 4 + 5 + 2
    assert model.params.size == model.n_weights + n_b + 2 * 5
    norm = model.layers[1].norm
    assert model.layers[0].norm is None and model.layers[2].norm is None
    np.testing.assert_array_equal(norm.gamma, 1.0)
    np.testing.assert_array_equal(norm.beta, 0.0)
    assert np.shares_memory(norm.gamma, model.params[model.n_weights + n_b :])
    model.params[...] = 1.0
    model.grads[...] = 0.0
    model.apply_gradients(np.zeros(1, np.float32))
    assert (model.params[: model.n_weights] < 1.0).all()  # weights decayed
    np.testing.assert_array_equal(model.params[model.n_weights :], 1.0)  # b, gamma, beta not


@pytest.mark.parametrize("bad", [[True], [True, False, True], 1, "yes"])
def test_invalid_batch_norm_is_refused(bad) -> None:
    with pytest.raises(ParameterError, match="batch_norm"):
        MLP([4, 5, 6, 2], batch_norm=bad, backend="numpy")


def test_saved_and_reloaded_with_its_running_estimates(tmp_path) -> None:
    rng = seed("bn-save")
    X, y = rng.standard_normal((40, 4)), rng.integers(0, 3, 40)
    model = MLP([4, 6, 5, 3], batch_norm=[True, False], dropout=0.1, backend="numpy")
    assert "batch_norm=[True, False]" in repr(model)
    assert model.describe()["batch_norm"] == [True, False]
    assert model.describe()["dropout"] == [0.1, 0.1]
    model.fit(X, y, epochs=2, batch_size=8)
    path = save_model(model, tmp_path / "bn")
    assert {"state.buffer.running_mean", "state.buffer.running_var"} <= set(np.load(path).files)
    loaded = load_model(path, backend="numpy")
    assert loaded.batch_norm == [True, False]
    np.testing.assert_array_equal(loaded.running_var, model.running_var)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    data = dict(np.load(path))
    del data["state.buffer.running_var"]
    np.savez(tmp_path / "broken.npz", **data)
    from xpmlp.core.errors import DataFileError

    with pytest.raises(DataFileError, match="running_var"):
        load_model(tmp_path / "broken.npz", backend="numpy")


# ---------------------------------------------------------------------- CUDA simulator
@pytest.mark.cudasim
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_cuda_simulated_kernels_match_the_reference(act, dtype, monkeypatch) -> None:
    from xpmlp.kernels import cuda as kcuda

    from xpmlp.backends.cuda_sim import SimulatedCudaBackend

    monkeypatch.setattr(kcuda, "THREADS_PER_BLOCK", 4)  # fewer threads than columns
    sim = SimulatedCudaBackend()
    rng = seed("sim-bn", act, dtype)
    inputs = batch_norm_inputs((13, 6), dtype, rng)
    for rate in (0.0, 0.5):
        ref = run_batch_norm_forward(REFERENCE, act, *inputs, 8, rate)
        got = run_batch_norm_forward(sim, act, *inputs, 8, rate)
        for g, e in zip(got, ref, strict=True):
            assert_near(g, e, "forward")
        stats, Zhat = ref[1], ref[4]
        dA = rng.standard_normal(Zhat.shape).astype(dtype)
        args = (dA, Zhat, inputs[2], inputs[3], stats, 8, rate)
        scale = np.abs(inputs[2] * stats[1]).max() * np.abs(dA).max() * (1 + np.abs(Zhat).max())
        eps = float(np.finfo(np.dtype(dtype)).eps)
        for g, e in zip(
            run_batch_norm_backward(sim, act, *args, in_place=True),
            run_batch_norm_backward(REFERENCE, act, *args),
            strict=True,
        ):
            np.testing.assert_allclose(g, e, rtol=64 * eps, atol=64 * eps * 13 * scale)
    for g, e in zip(
        run_batch_norm_inference(sim, act, *inputs),
        run_batch_norm_inference(REFERENCE, act, *inputs),
        strict=True,
    ):
        assert_near(g, e, "inference")


@pytest.mark.cudasim
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_cuda_simulated_model_trains_like_the_numpy_backend(monkeypatch) -> None:
    """Dropout and batch norm together, two epochs of 3 batches: same weights, running
    estimates and predictions."""
    from xpmlp.kernels import cuda as kcuda

    from xpmlp.backends.cuda_sim import SimulatedCudaBackend

    monkeypatch.setattr(kcuda, "THREADS_PER_BLOCK", 32)
    rng = seed("sim-train")
    X, y = rng.standard_normal((50, 5)), rng.integers(0, 3, 50)
    models = [
        MLP(
            [5, 6, 4, 3],
            dropout=[0.3, 0.2],
            batch_norm=True,
            dtype="float64",
            optimizer="rmsprop",
            backend=be,
            seed=1,
        )
        for be in ("numpy", SimulatedCudaBackend())
    ]
    for model in models:
        model.fit(X, y, epochs=2, batch_size=20, shuffle=False)
    a, b = models
    np.testing.assert_allclose(host(b, b.params), host(a, a.params), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(host(b, b.running_var), host(a, a.running_var), rtol=1e-12)
    np.testing.assert_allclose(b.predict_proba(X), a.predict_proba(X), atol=1e-10)
