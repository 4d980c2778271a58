"""``precision``: the compute precision of a model's matrix products ("fp32", "tf32", "bf16";
``xpmlp.core.validation.PRECISIONS``) on ``MLP``, the estimators and ``xpmlp train
--precision``. A backend offers some (``Backend.precisions``): the NumPy backend computes in
fp32 only, the CUDA backend in fp32 and tf32 (the own cuBLAS handle's TF32 math mode); bf16
is not written yet. Anything else is a ``ParameterError`` saying what was asked and what is
possible, before any work. The model's precision travels with it (files, checkpoints,
pickles); models run their products inside ``backend.compute_precision(model.precision)``.
"""

from __future__ import annotations

import contextlib
import pickle
import re

import numpy as np
import pytest

import xpmlp
from xpmlp import MLP, MLPClassifier, MLPRegressor
from xpmlp.backends.numpy_backend import NumpyBackend
from xpmlp.core.errors import ParameterError
from xpmlp.core.validation import PRECISIONS


class TensorCoreLike(NumpyBackend):
    """A NumPy backend that claims TF32 (as the CUDA backend does) and records which precision
    each of its products ran at: the logic of ``compute_precision`` without a GPU."""

    precisions = ("fp32", "tf32")

    def __init__(self) -> None:
        super().__init__()
        self.now = "fp32"
        self.seen: set[str] = set()

    @contextlib.contextmanager
    def compute_precision(self, precision: str):
        outer, self.now = self.now, precision
        try:
            yield
        finally:
            self.now = outer

    def matmul(self, a, b, out) -> None:
        self.seen.add(self.now)
        super().matmul(a, b, out)


def data(rows: int = 40):
    rng = np.random.default_rng(3)
    return rng.standard_normal((rows, 4)).astype("float32"), rng.integers(0, 3, rows)


def test_the_names_and_the_default() -> None:
    assert PRECISIONS == ("fp32", "tf32", "bf16")
    model = MLP([4, 5, 3], backend="numpy")
    assert model.precision == "fp32"
    assert "precision" not in repr(model)
    assert NumpyBackend.precisions == ("fp32",)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"precision": "fp16"}, "precision='fp16' is not valid; expected one of 'fp32', 'tf32'"),
        ({"precision": None}, "precision=None is not valid"),
        ({"precision": "tf32"}, "not available on the numpy backend, which computes in fp32"),
        ({"precision": "bf16"}, "precision='bf16' is not available yet"),
        (
            {"precision": "tf32", "dtype": "float64", "backend": TensorCoreLike()},
            "dtype='float64' computes in float64: use precision='fp32'",
        ),
    ],
)
def test_a_precision_the_backend_does_not_offer_is_refused(options, message) -> None:
    with pytest.raises(ParameterError, match=re.escape(message)):
        MLP([4, 5, 3], **{"backend": "numpy", **options})


def test_the_products_run_at_the_models_precision() -> None:
    X, y = data()
    be = TensorCoreLike()
    model = MLP([4, 5, 3], backend=be, precision="tf32", seed=1)
    assert "precision='tf32'" in repr(model)
    model.fit(X, y, epochs=1, batch_size=16)
    model.predict(X)
    assert be.seen == {"tf32"}
    assert be.now == "fp32"  # left as it was
    other = MLP([4, 5, 3], backend=be, seed=1)  # the same backend, another model
    be.seen.clear()
    other.fit(X, y, epochs=1, batch_size=16)
    assert be.seen == {"fp32"}


def test_the_precision_travels_with_the_model(tmp_path) -> None:
    X, y = data()
    be = TensorCoreLike()
    model = MLP([4, 5, 3], backend=be, precision="tf32", seed=1).fit(X, y, epochs=1)
    path = xpmlp.save_model(model, tmp_path / "m")
    assert xpmlp.load_model(path, backend=be).precision == "tf32"
    assert MLP.from_state(model.state_dict(), backend=be).precision == "tf32"
    # on a backend without TF32 (a GPU model loaded on the CPU): fp32, and a warning says so
    with pytest.warns(UserWarning, match="precision='tf32', which the numpy backend does not"):
        on_cpu = xpmlp.load_model(path, backend="numpy")
    assert on_cpu.precision == "fp32"
    np.testing.assert_array_equal(on_cpu.params, model.params)
    with pytest.warns(UserWarning, match="precision='tf32'"):
        again = pickle.loads(pickle.dumps(model))  # unpickled on the numpy backend by name
    assert again.precision == "fp32"


@pytest.mark.parametrize("cls", [MLPClassifier, MLPRegressor])
def test_the_estimators_take_the_precision(cls) -> None:
    X, y = data()
    target = y if cls is MLPClassifier else X[:, 0]
    assert cls().get_params()["precision"] == "fp32"
    with pytest.raises(ParameterError, match="not available on the numpy backend"):
        cls(max_iter=2, precision="tf32", backend="numpy").fit(X, target)
    with pytest.raises(ValueError, match="precision"):
        cls(max_iter=2, precision="half", backend="numpy").fit(X, target)
    be = TensorCoreLike()
    est = cls(hidden_layer_sizes=(5,), max_iter=2, precision="tf32", backend=be)
    est.fit(X.astype("float64"), target)  # float64 input, dtype=None: float32 parameters
    assert est.mlp_.precision == "tf32" and est.mlp_.dtype == np.float32
    assert be.seen == {"tf32"}


def test_the_cli_refuses_a_precision_before_loading_data(capsys, monkeypatch) -> None:
    from xpmlp.cli import main

    def no_data(*args: object, **kwargs: object) -> None:
        raise AssertionError("the data was loaded before the error")

    monkeypatch.setattr("xpmlp.datasets.load_mnist", no_data)
    monkeypatch.setattr("xpmlp.commands.train.load_mnist", no_data, raising=False)
    try:
        status = main(["train", "--backend", "numpy", "--precision", "tf32", "--epochs", "1"])
    except SystemExit as exc:
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("xpmlp train: error: precision='tf32' is not available on the numpy")
    assert len(err.splitlines()) == 1


def test_the_own_cublas_handle_sets_the_math_mode_of_each_precision() -> None:
    """``CublasHandle.set_precision``: TF32 tensor-op math for "tf32", the default math (true
    FP32) for "fp32" (the library call checked with a stand-in for libcublas)."""
    from xpmlp.backends import cublas

    calls = []

    class Lib:
        def cublasSetMathMode(self, handle, mode):  # noqa: N802 (cuBLAS's name)
            calls.append((handle, mode))
            return 0

    handle = cublas.CublasHandle.__new__(cublas.CublasHandle)
    handle._lib, handle._handle = Lib(), "h"
    handle.set_precision("tf32")
    handle.set_precision("fp32")
    assert calls == [("h", cublas.TF32_MATH), ("h", cublas.DEFAULT_MATH)] == [("h", 3), ("h", 0)]
    with pytest.raises(KeyError):
        handle.set_precision("bf16")


@pytest.mark.cuda
def test_tf32_on_a_gpu_trains_close_to_fp32_in_a_recorded_step() -> None:
    """On a GPU: TF32 products (recorded in the CUDA graph) give other bits than FP32 but the
    same model to about TF32's precision."""
    from xpmlp.backends.cuda_probe import probe_cuda

    probe = probe_cuda()
    if not probe.usable:
        pytest.skip(f"CUDA is not usable here: {probe.reason}")
    from xpmlp.backends.cuda_backend import CudaBackend

    rng = np.random.default_rng(0)
    X = rng.standard_normal((2048, 256)).astype("float32")
    y = (X[:, :10] @ rng.standard_normal(10) > 0).astype(int)
    fits = {}
    for precision in ("fp32", "tf32"):
        be = CudaBackend(graphs=True)
        model = MLP([256, 512, 2], backend=be, precision=precision, seed=2, learning_rate=1e-3)
        model.fit(X, y, epochs=2, batch_size=128)
        assert model.step_kind_ == "cuda-graph" and be.graph_error is None
        fits[precision] = (be.to_numpy(model.params), model.accuracy(X, y))
    (p32, acc32), (ptf, acctf) = fits["fp32"], fits["tf32"]
    assert not np.array_equal(p32, ptf)  # TF32 rounded the products
    np.testing.assert_allclose(ptf, p32, atol=5e-3)
    assert abs(acc32 - acctf) < 0.02
