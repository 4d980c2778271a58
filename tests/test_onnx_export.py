"""ONNX export: every activation of the registry is mapped or refused in one table, and
onnxruntime's output of the exported graph matches predict_proba."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest

import xpmlp
from xpmlp import MLP
from xpmlp.core.activations import ACTIVATIONS
from xpmlp.io.onnx import (
    ONNX_ACTIVATIONS,
    OnnxDependencyError,
    OnnxExportError,
    Refused,
    to_onnx,
)

HIDDEN = ACTIVATIONS.names(lambda a: a.hidden)
ELEMENTWISE_OUTPUTS = ACTIVATIONS.names(lambda a: a.output and a.elementwise)


def test_every_activation_is_mapped_or_refused_in_the_table() -> None:
    for name in ACTIVATIONS.names():
        entry = ONNX_ACTIVATIONS.get(name)
        assert callable(entry) or isinstance(entry, Refused), name


def random_model(
    sizes: list[int],
    hidden: list[str] | str = "relu",
    output: str | None = None,
    dtype: str = "float32",
    seed: int = 0,
) -> MLP:
    """A model with random weights and biases of about unit scale (no training needed)."""
    loss = "cross_entropy" if output in (None, "softmax") else "squared_error"
    model = MLP(
        sizes,
        activation=hidden,
        output_activation=output,
        loss=loss,
        dtype=dtype,
        backend="numpy",
        seed=seed,
    )
    rng = np.random.default_rng(seed)
    model.set_weights(
        [
            (rng.standard_normal(W.shape) / np.sqrt(W.shape[1]), 0.5 * rng.standard_normal(b.shape))
            for W, b in model.get_weights()
        ]
    )
    return model


def onnx_output(proto: Any, X: np.ndarray) -> np.ndarray:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    onnx.checker.check_model(proto, full_check=True)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"X": X})
    return out


def inputs(n: int, dtype: str = "float32", rows: int = 64) -> np.ndarray:
    return (2 * np.random.default_rng(7).standard_normal((rows, n))).astype(dtype)


@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("n_hidden", [1, 3])
def test_hidden_activations_match_predict_proba(hidden: str, n_hidden: int) -> None:
    pytest.importorskip("onnx")
    model = random_model([5, *[8] * n_hidden, 4], hidden)
    X = inputs(5)
    out = onnx_output(to_onnx(model), X)
    assert out.dtype == np.float32 and out.shape == (64, 4)
    np.testing.assert_allclose(out, model.predict_proba(X), rtol=0, atol=1e-5)


@pytest.mark.parametrize("output", ELEMENTWISE_OUTPUTS)
def test_output_activations_match_predict_proba(output: str) -> None:
    pytest.importorskip("onnx")
    model = random_model([3, 6, 2], "tanh", output)
    X = inputs(3)
    np.testing.assert_allclose(
        onnx_output(to_onnx(model), X), model.predict_proba(X), rtol=0, atol=1e-5
    )


def test_a_model_without_hidden_layers() -> None:
    pytest.importorskip("onnx")
    model = random_model([6, 3])
    X = inputs(6)
    np.testing.assert_allclose(
        onnx_output(to_onnx(model), X), model.predict_proba(X), rtol=0, atol=1e-5
    )


@pytest.mark.parametrize("hidden", sorted(set(HIDDEN) - {"gelu"}))
def test_a_float64_model_exports_in_float64(hidden: str) -> None:
    pytest.importorskip("onnx")
    model = random_model([4, 7, 7, 3], hidden, dtype="float64")
    X = inputs(4, "float64")
    out = onnx_output(to_onnx(model), X)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, model.predict_proba(X), rtol=0, atol=1e-12)


def test_a_float64_gelu_takes_erf_in_float32() -> None:
    """onnxruntime has no float64 Erf: the graph casts around it (about 1e-7 |z| off)."""
    pytest.importorskip("onnx")
    model = random_model([1, 1, 1], "gelu", "identity", dtype="float64")
    model.set_weights([(np.ones((1, 1)), np.zeros(1)), (np.ones((1, 1)), np.zeros(1))])
    z = np.linspace(-6.0, 6.0, 2001).reshape(-1, 1)
    out = onnx_output(to_onnx(model), z)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, model.predict_proba(z), rtol=0, atol=1e-6)


def test_a_trained_model_exports_what_it_learned() -> None:
    pytest.importorskip("onnx")
    X = inputs(4, rows=200)
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1)
    model = MLP([4, 16, 3], backend="numpy", seed=1).fit(X, y, epochs=5, batch_size=32)
    np.testing.assert_allclose(
        onnx_output(to_onnx(model), X), model.predict_proba(X), rtol=0, atol=1e-5
    )


class Estimator:
    """What to_onnx asks of an estimator: a fitted MLP in mlp_, and the binary flag."""

    def __init__(self, mlp: Any, binary: bool) -> None:
        self.mlp_ = mlp
        if binary:
            self._onnx_binary_proba = True


@pytest.mark.parametrize("binary", [True, False])
def test_an_estimators_single_sigmoid_output_gives_two_columns(binary: bool) -> None:
    pytest.importorskip("onnx")
    model = MLP([3, 5, 1], loss="binary_cross_entropy", backend="numpy", seed=2)
    X = inputs(3)
    out = onnx_output(to_onnx(Estimator(model, binary)), X)
    p = model.predict_proba(X)
    expected = np.hstack([1 - p, p]) if binary else p
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)


def test_the_binary_flag_leaves_other_outputs_alone() -> None:
    pytest.importorskip("onnx")
    model = random_model([3, 5, 3])
    out = onnx_output(to_onnx(Estimator(model, True)), inputs(3))
    assert out.shape == (64, 3)


def test_a_refused_activation_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ONNX_ACTIVATIONS, "tanh", Refused("it is a test's refusal"))
    with pytest.raises(OnnxExportError, match="layer 1 uses activation 'tanh'.*test's refusal"):
        to_onnx(random_model([3, 4, 2], "tanh"))
    monkeypatch.delitem(ONNX_ACTIVATIONS, "relu")
    with pytest.raises(OnnxExportError, match="'relu'.*no ONNX mapping"):
        to_onnx(random_model([3, 4, 2], "relu"))


def test_without_onnx_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(
        OnnxDependencyError, match=r"pip install -e '\.\[onnx\]' in the xpmlp checkout"
    ):
        to_onnx(random_model([3, 4, 2]))
    assert isinstance(OnnxDependencyError("x"), ImportError)


def test_what_is_not_a_model() -> None:
    with pytest.raises(xpmlp.ParameterError, match="expected an xpmlp.MLP"):
        to_onnx(object())
    with pytest.raises(xpmlp.NotFittedError):
        to_onnx(Estimator(None, False))
    with pytest.raises(xpmlp.ParameterError, match="mlp_ is a str"):
        to_onnx(Estimator("model", False))


def test_to_onnx_is_public() -> None:
    assert xpmlp.to_onnx is to_onnx and "to_onnx" in xpmlp.__all__


def test_batch_norm_and_dropout_export_as_the_model_predicts() -> None:
    """Batch norm at inference (running estimates) is in the graph; dropout is not."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((96, 5)).astype("float32")
    y = (X[:, 0] - X[:, 1] > 0).astype(int) + (X[:, 2] > 1)
    model = MLP([5, 9, 7, 3], batch_norm=[True, False], dropout=0.2, backend="numpy", seed=2).fit(
        X, y, epochs=3, batch_size=16
    )
    np.testing.assert_allclose(onnx_output(to_onnx(model), X), model.predict_proba(X), atol=1e-5)


@pytest.mark.filterwarnings("ignore:Stochastic Optimizer")  # 20 iterations are enough here
@pytest.mark.parametrize("binary", [True, False])
def test_fitted_estimators_export_their_predict_proba(binary: bool) -> None:
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(4)
    X = rng.standard_normal((120, 4)).astype("float32")
    y = (X[:, 0] > 0).astype(int) + (0 if binary else (X[:, 1] > 0.5))
    clf = xpmlp.MLPClassifier(
        hidden_layer_sizes=(8,), max_iter=20, random_state=0, backend="numpy"
    ).fit(X, y)
    out = onnx_output(to_onnx(clf), X)
    assert out.shape == (120, 2 if binary else 3)
    np.testing.assert_allclose(out, clf.predict_proba(X), atol=1e-5)
