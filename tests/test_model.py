"""The MLP as a user meets it: fit/predict/score, seeds, dtypes, backends agreeing, input
validation before any work, hardlimit, divergence, save/load, the learner's API, batching,
progress and history."""

from __future__ import annotations

import math
import os
import re

import numpy as np
import pytest

import xpmlp
from xpmlp import MLP, load_model, save_model
from xpmlp.backends.base import Backend
from xpmlp.backends.numpy_backend import NumpyBackend

BACKENDS = {"numpy": lambda: "numpy", "reference": Backend, "cuda": lambda: "cuda"}
#: every backend; CUDA only where a GPU is usable (marked ``cuda``: skipped with the reason)
ON_EVERY_BACKEND = pytest.mark.parametrize(
    "backend", ["numpy", "reference", pytest.param("cuda", marks=pytest.mark.cuda)]
)


def blobs(m: int = 240, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well separated Gaussian classes in 4-D."""
    rng = np.random.default_rng(seed)
    centers = np.array([[2.0, 2.0, 0.0, 0.0], [-2.0, 2.0, 0.0, 0.0], [0.0, -2.0, 1.0, 0.0]])
    y = rng.integers(0, 3, size=m)
    return centers[y] + 0.7 * rng.standard_normal((m, 4)), y


X3, Y3 = blobs()


def small_model(backend="numpy", **options) -> MLP:
    options = {"seed": 0, "learning_rate": 0.01, **options}
    return MLP(
        [4, 16, 3], backend=BACKENDS[backend]() if backend in BACKENDS else backend, **options
    )


def host(a) -> np.ndarray:
    """A host copy of a backend array (CuPy arrays copy through ``get``)."""
    return a.get() if hasattr(a, "get") else np.array(a)


# ---------------------------------------------------------------------- learning


@ON_EVERY_BACKEND
def test_fit_learns_three_blobs(backend) -> None:
    model = small_model(backend).fit(X3, Y3, epochs=15, batch_size=32)
    assert model.score(X3, Y3) > 0.9
    X_test, y_test = blobs(120, seed=1)
    pred = model.predict(X_test)
    assert pred.shape == (120,) and pred.dtype.kind == "i"
    assert (pred == y_test).mean() > 0.9
    proba = model.predict_proba(X_test)
    assert proba.shape == (120, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(proba.argmax(axis=1), pred)


def test_binary_classifier_with_one_sigmoid_output() -> None:
    y = (Y3 == 0).astype(int)
    model = MLP([4, 8, 1], loss="binary_cross_entropy", learning_rate=0.02, backend="numpy")
    model.fit(X3, y, epochs=15, batch_size=16)
    pred = model.predict(X3)
    assert set(np.unique(pred)) <= {0, 1}
    assert (pred == y).mean() > 0.9
    assert model.score(X3, y) == pytest.approx((pred == y).mean())


def test_regression_r2() -> None:
    rng = np.random.default_rng(5)
    X = rng.uniform(-1, 1, size=(300, 3))
    y = X @ np.array([1.5, -2.0, 0.5]) + 0.3
    model = MLP(
        [3, 16, 1], activation="tanh", loss="squared_error", learning_rate=0.01, backend="numpy"
    )
    model.fit(X, y, epochs=40, batch_size=16)
    assert model.predict(X).shape == (300, 1)
    assert model.score(X, y) > 0.9


# ---------------------------------------------------------------------- reproducibility


@ON_EVERY_BACKEND
def test_same_seed_gives_bit_identical_parameters(backend) -> None:
    a = small_model(backend, seed=3).fit(X3, Y3, epochs=2, batch_size=32)
    b = small_model(backend, seed=3).fit(X3, Y3, epochs=2, batch_size=32)
    np.testing.assert_array_equal(host(a.params), host(b.params))
    c = small_model(backend, seed=4)
    assert not np.array_equal(host(c.params), host(small_model(backend, seed=3).params))
    c.fit(X3, Y3, epochs=2, batch_size=32)
    assert not np.array_equal(host(a.params), host(c.params))


def test_the_seed_also_drives_the_shuffle() -> None:
    """Same initial parameters, different seeds: different shuffles, different results."""
    a, b = small_model(seed=1), small_model(seed=2)
    b.params[...] = a.params
    a.fit(X3, Y3, epochs=1, batch_size=16)
    b.fit(X3, Y3, epochs=1, batch_size=16)
    assert not np.array_equal(host(a.params), host(b.params))


@pytest.mark.parametrize(
    ("optimizer", "options"),
    [
        ("sgd", {"learning_rate": 0.05}),
        ("momentum", {"weight_decay": 1e-3}),
        ("nesterov", {}),
        ("adam", {"weight_decay": 1e-3}),
    ],
)
@pytest.mark.parametrize(
    ("activation", "loss"),
    [("relu", "cross_entropy"), ("tanh", "cross_entropy"), ("sigmoid", "squared_error")],
)
def test_numpy_and_reference_backends_train_alike(optimizer, options, activation, loss) -> None:
    models = [
        MLP(
            [4, 9, 7, 3],
            activation=activation,
            loss=loss,
            optimizer=optimizer,
            dtype="float64",
            backend=be,
            seed=11,
            **options,
        )
        for be in ("numpy", Backend())
    ]
    targets = np.eye(3)[Y3] if loss == "squared_error" else Y3
    for model in models:
        model.fit(X3, targets, epochs=3, batch_size=25)  # 240 = 9 batches of 25 and one of 15
    np.testing.assert_allclose(models[0].params, models[1].params, rtol=1e-9, atol=1e-12)
    assert models[0].history_[-1]["loss"] == pytest.approx(models[1].history_[-1]["loss"], rel=1e-9)


# ---------------------------------------------------------------------- dtypes


def all_arrays(model: MLP, fp, g) -> dict[str, np.ndarray]:
    arrays = {
        "params": model.params,
        "grads": model.grads,
        "optimizer.state": model.optimizer.state,
    }
    for i, (z, a, d) in enumerate(zip(fp.Z, fp.A[1:], g.delta, strict=True)):
        arrays |= {f"Z[{i}]": z, f"A[{i + 1}]": a, f"delta[{i}]": d}
    arrays |= {f"dW[{i}]": w for i, w in enumerate(g.dW)} | {
        f"db[{i}]": b for i, b in enumerate(g.db)
    }
    for rows, ws in model._local.__dict__.get("workspaces", {}).items():
        for name in ("X", "Y"):
            arrays[f"workspace[{rows}].{name}"] = getattr(ws, name)
        for name in ("Z", "A", "delta"):
            for i, a in enumerate(getattr(ws, name)):
                arrays[f"workspace[{rows}].{name}[{i}]"] = a
    return arrays


@pytest.mark.parametrize("optimizer", ["adam", "momentum"])
@pytest.mark.parametrize(
    ("dtype", "expected"), [(None, np.float32), ("float32", np.float32), ("float64", np.float64)]
)
def test_dtype_is_kept_everywhere(dtype, expected, optimizer) -> None:
    options = {} if dtype is None else {"dtype": dtype}
    model = small_model(optimizer=optimizer, **options)
    X64 = X3.astype(np.float64)  # float64 input never upcasts a float32 model
    model.fit(X64, Y3, epochs=1, batch_size=50)
    fp = model.forward(X64[:7])
    g = model.backward(fp, Y3[:7])
    model.step()
    for name, a in all_arrays(model, fp, g).items():
        assert a.dtype == expected, name
    assert model.predict_proba(X64).dtype == expected
    assert model._learner_stats.dtype == expected
    assert model.dtype == expected
    assert isinstance(g.loss, float)


# ---------------------------------------------------------------------- validation


def check_rejected(model: MLP, call, error, *words: str) -> None:
    """``call`` raises ``error`` whose message holds every word, and no parameter changed."""
    before = host(model.params).copy()
    history = list(model.history_)
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    np.testing.assert_array_equal(host(model.params), before)
    assert model.history_ == history


X_NAN = X3.copy()
X_NAN[5, 2] = np.nan
X_INF = X3.copy()
X_INF[0, 0] = -np.inf


@pytest.mark.parametrize(
    ("X", "y", "error", "words"),
    [
        (X3[:, :3], Y3, ValueError, ("X", "3 features", "expects 4")),
        (X3, Y3[:-1], ValueError, ("240", "239", "y")),
        (X3[:-3], Y3, ValueError, ("237", "240")),
        (X3.astype(str), Y3, TypeError, ("X", "dtype", "numeric")),
        (X3.astype(object), Y3, TypeError, ("X", "object", "numeric")),
        (X3.astype(complex), Y3, TypeError, ("X", "complex", "numeric")),
        (X3, Y3.astype(str), TypeError, ("y", "dtype", "numeric")),
        (X3, Y3.astype(complex), TypeError, ("y", "complex")),
        (X_NAN, Y3, ValueError, ("X", "NaN", "finite")),
        (X_INF, Y3, ValueError, ("X", "infinite", "finite")),
        (X3, np.where(Y3 == 1, np.nan, Y3), ValueError, ("y", "NaN", "finite")),
        (X3, Y3 + 1, ValueError, ("y", "labels", "[0, 2]", "3 units")),
        (X3, Y3 - 1, ValueError, ("y", "labels", "-1", "[0, 2]")),
        (X3, Y3 + 0.5, ValueError, ("y", "integer labels")),
        (X3[:0], Y3[:0], ValueError, ("X", "empty", "0 samples")),
        (X3[:, 0], Y3, ValueError, ("X", "2-D")),
        (X3[None], Y3, ValueError, ("X", "2-D")),
        (X3, np.zeros((240, 5)), ValueError, ("y", "(240, 5)", "(240, 3)")),
    ],
    ids=[
        "features",
        "y-shorter",
        "X-shorter",
        "X-strings",
        "X-object",
        "X-complex",
        "y-strings",
        "y-complex",
        "X-nan",
        "X-inf",
        "y-nan",
        "label-too-big",
        "label-negative",
        "label-not-integer",
        "empty",
        "X-1d",
        "X-3d",
        "y-wrong-columns",
    ],
)
@ON_EVERY_BACKEND
def test_bad_data_is_refused_before_any_work(backend, X, y, error, words) -> None:
    model = small_model(backend)
    check_rejected(model, lambda: model.fit(X, y, epochs=1), error, *words)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"batch_size": 0}, ("batch_size=0", ">= 1")),
        ({"batch_size": -5}, ("batch_size=-5",)),
        ({"batch_size": 2.5}, ("batch_size=2.5", "integer")),
        ({"epochs": 0}, ("epochs=0", ">= 1")),
        ({"epochs": 1.5}, ("epochs=1.5", "integer")),
        ({"epochs": True}, ("epochs=True",)),
        ({"validation_data": (X3[:, :2], Y3)}, ("validation X", "2 features")),
        ({"validation_data": (X3, Y3[:10])}, ("240", "10")),
    ],
)
def test_bad_fit_options_are_refused_before_any_work(kwargs, words) -> None:
    model = small_model()
    check_rejected(model, lambda: model.fit(X3, Y3, **{"epochs": 1, **kwargs}), ValueError, *words)


@pytest.mark.parametrize("method", ["predict", "predict_proba", "forward"])
@pytest.mark.parametrize(
    ("X", "error", "words"),
    [
        (X3[:, :2], ValueError, ("2 features", "expects 4")),
        (X3[:0], ValueError, ("empty",)),
        (X_NAN, ValueError, ("NaN",)),
        (X3.astype(str), TypeError, ("numeric",)),
    ],
    ids=["features", "empty", "nan", "strings"],
)
def test_bad_inputs_to_prediction(method, X, error, words) -> None:
    model = small_model()
    check_rejected(model, lambda: getattr(model, method)(X), error, *words)


def test_score_checks_its_arguments() -> None:
    model = small_model()
    check_rejected(model, lambda: model.score(X3, Y3[:3]), ValueError, "240", "3")


@pytest.mark.parametrize(
    ("args", "kwargs", "words"),
    [
        ([[]], {}, ("layer_sizes=[]", "at least two positive integers")),
        ([[4]], {}, ("layer_sizes=[4]",)),
        ([[4, 0, 3]], {}, ("layer_sizes=[4, 0, 3]",)),
        ([[4, -2]], {}, ("layer_sizes",)),
        ([[4, 2.5]], {}, ("layer_sizes",)),
        ([[4, True]], {}, ("layer_sizes",)),
        (["4,3"], {}, ("layer_sizes",)),
        ([[4, 8, 3]], {"activation": "swish"}, ("activation='swish'", "'relu'")),
        ([[4, 8, 3]], {"activation": "softmax"}, ("activation='softmax'",)),
        ([[4, 8, 8, 3]], {"activation": ["relu"]}, ("activation", "2")),
        ([[4, 3]], {"loss": "hinge"}, ("loss='hinge'", "'cross_entropy'")),
        ([[4, 3]], {"optimizer": "lamb"}, ("optimizer='lamb'", "'adam'")),
        ([[4, 3]], {"output_activation": "swish"}, ("output_activation='swish'",)),
        (
            [[4, 3]],
            {"output_activation": "softmax", "loss": "squared_error"},
            ("softmax", "squared_error", "'identity'"),
        ),
        (
            [[4, 3]],
            {"output_activation": "sigmoid", "loss": "cross_entropy"},
            ("softmax", "cross_entropy"),
        ),
        ([[4, 3]], {"learning_rate": -0.1}, ("learning_rate=-0.1", "> 0")),
        ([[4, 3]], {"learning_rate": 0}, ("learning_rate=0", "> 0")),
        ([[4, 3]], {"learning_rate": math.inf}, ("learning_rate=inf", "finite")),
        ([[4, 3]], {"momentum": 1.0}, ("momentum=1.0",)),
        ([[4, 3]], {"beta2": -0.1}, ("beta2",)),
        ([[4, 3]], {"weight_decay": -1e-4}, ("weight_decay",)),
        ([[4, 3]], {"init": "zeros"}, ("init='zeros'",)),
        ([[4, 3]], {"dtype": "float16"}, ("dtype='float16'", "'float32'")),
        ([[4, 3]], {"seed": -1}, ("seed=-1",)),
    ],
)
def test_bad_constructor_arguments(args, kwargs, words) -> None:
    with pytest.raises(ValueError) as info:
        MLP(*args, backend="numpy", **kwargs)
    for word in words:
        assert word in str(info.value), str(info.value)


def test_an_optimizer_that_is_no_optimizer() -> None:
    with pytest.raises(TypeError, match="optimizer"):
        MLP([4, 3], optimizer=object(), backend="numpy")


def test_numpy_integers_are_valid_layer_sizes() -> None:
    model = MLP([np.int64(4), 16, np.int32(3)], backend="numpy")
    assert model.layer_sizes == [4, 16, 3]


def test_scalar_targets_get_a_clear_error() -> None:
    model = small_model()
    check_rejected(model, lambda: model.fit(X3, 1), ValueError, "y")


def test_labels_outside_a_single_sigmoid_output_are_refused() -> None:
    model = MLP([4, 8, 1], loss="binary_cross_entropy", backend="numpy")
    check_rejected(model, lambda: model.fit(X3, np.where(Y3 > 0, 2, 0)), ValueError, "y")


# ---------------------------------------------------------------------- hardlimit

AND_OR_INPUTS = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)


def test_hardlimit_perceptron_forward_and_predict() -> None:
    """A hand-set perceptron computes AND; a hardlimit hidden layer (OR, NAND) makes XOR."""
    and_gate = MLP([2, 1], output_activation="hardlimit", loss="squared_error", backend="numpy")
    and_gate.layers[0].W[...] = [[1.0, 1.0]]
    and_gate.layers[0].b[...] = [-1.5]
    np.testing.assert_array_equal(and_gate.predict(AND_OR_INPUTS), [0, 0, 0, 1])
    np.testing.assert_array_equal(and_gate.predict_proba(AND_OR_INPUTS)[:, 0], [0, 0, 0, 1])

    xor = MLP(
        [2, 2, 1],
        activation="hardlimit",
        output_activation="hardlimit",
        loss="squared_error",
        backend="numpy",
    )
    xor.layers[0].W[...] = [[1.0, 1.0], [-1.0, -1.0]]
    xor.layers[0].b[...] = [-0.5, 1.5]
    xor.layers[1].W[...] = [[1.0, 1.0]]
    xor.layers[1].b[...] = [-1.5]
    fp = xor.forward(AND_OR_INPUTS)
    np.testing.assert_array_equal(fp.A[1], [[0, 1], [1, 1], [1, 1], [1, 0]])
    np.testing.assert_array_equal(xor.predict(AND_OR_INPUTS), [0, 1, 1, 0])


@pytest.mark.parametrize(("hidden", "output"), [("hardlimit", "identity"), ("relu", "hardlimit")])
def test_hardlimit_cannot_be_trained(hidden, output) -> None:
    model = MLP(
        [2, 3, 1],
        activation=hidden,
        output_activation=output,
        loss="squared_error",
        backend="numpy",
    )
    y = AND_OR_INPUTS[:, 0]
    check_rejected(
        model,
        lambda: model.fit(AND_OR_INPUTS, y),
        xpmlp.NotDifferentiableError,
        "hardlimit",
        "derivative",
        "zero",
    )
    fp = model.forward(AND_OR_INPUTS)
    check_rejected(
        model,
        lambda: model.backward(fp, y),
        xpmlp.NotDifferentiableError,
        "hardlimit",
        "backpropagation",
    )


# ---------------------------------------------------------------------- divergence

X_LOUD = 100 * np.random.default_rng(0).standard_normal((300, 4))
Y_LOUD = (X_LOUD[:, 0] + X_LOUD[:, 1] > 0).astype(int)


def replay_until_not_finite(model: MLP, X, y, batch_size: int) -> tuple[int, np.ndarray]:
    """Steps by hand through one unshuffled epoch; returns the first batch whose loss is not
    finite and the parameters before it."""
    for batch, start in enumerate(range(0, len(X), batch_size)):
        g = model.backward(
            model.forward(X[start : start + batch_size]), y[start : start + batch_size]
        )
        if not math.isfinite(g.loss):
            return batch, host(model.params).copy()
        model.step()
    raise AssertionError("the replay never diverged")


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@ON_EVERY_BACKEND
def test_a_huge_learning_rate_raises_training_diverged(backend) -> None:
    def make() -> MLP:
        return MLP(
            [4, 16, 2], optimizer="sgd", learning_rate=1e6, seed=0, backend=BACKENDS[backend]()
        )

    model = make()
    with pytest.raises(xpmlp.TrainingDivergedError) as info:
        model.fit(X_LOUD, Y_LOUD, epochs=3, batch_size=32, shuffle=False)
    message = str(info.value)
    match = re.search(r"epoch (\d+), batch (\d+)", message)
    assert match, message
    assert "smaller learning rate" in message and "1e+06" in message
    assert np.isfinite(host(model.params)).all()
    bad_batch, params_before = replay_until_not_finite(make(), X_LOUD, Y_LOUD, 32)
    assert (int(match.group(1)), int(match.group(2))) == (1, bad_batch)
    np.testing.assert_allclose(host(model.params), params_before, rtol=1e-6)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@ON_EVERY_BACKEND
def test_params_stay_finite_when_the_update_itself_overflows(backend) -> None:
    model = MLP(
        [4, 32, 32, 32, 2], optimizer="sgd", learning_rate=1e3, seed=0, backend=BACKENDS[backend]()
    )
    with pytest.raises(xpmlp.TrainingDivergedError):
        model.fit(X_LOUD, Y_LOUD, epochs=3, batch_size=32)
    assert np.isfinite(host(model.params)).all()


# ---------------------------------------------------------------------- save and load


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer", ["sgd", "nesterov", "adam"])
def test_save_load_round_trip(tmp_path, dtype, optimizer) -> None:
    model = small_model(dtype=dtype, optimizer=optimizer).fit(X3, Y3, epochs=2, batch_size=32)
    path = save_model(model, tmp_path / "model")
    assert path == tmp_path / "model.npz"
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]  # no temporary file left behind
    loaded = load_model(path, backend="numpy")
    np.testing.assert_array_equal(loaded.predict_proba(X3), model.predict_proba(X3))
    np.testing.assert_array_equal(loaded.params, model.params)
    assert loaded.params.dtype == model.params.dtype
    assert loaded.layer_sizes == model.layer_sizes
    assert loaded.activations == model.activations and loaded.loss == model.loss
    assert loaded.optimizer.name == model.optimizer.name
    assert loaded.optimizer.learning_rate == model.optimizer.learning_rate
    assert loaded.history_ == model.history_
    on_reference = load_model(path, backend=Backend())
    np.testing.assert_allclose(
        on_reference.predict_proba(X3), model.predict_proba(X3), rtol=1e-5, atol=1e-6
    )


def test_the_file_loads_without_pickle(tmp_path, monkeypatch) -> None:
    path = save_model(small_model(), tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as data:  # no object arrays inside
        assert set(data.files) == {"params", "meta"}
    calls = []
    real_load = np.load

    def spy_load(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(xpmlp.io.serialize.numpy, "load", spy_load)
    load_model(path, backend="numpy")
    assert calls and all(c.get("allow_pickle") is False for c in calls)


@pytest.mark.parametrize("existing", [False, True])
def test_a_failure_mid_write_leaves_no_file(tmp_path, monkeypatch, existing) -> None:
    target = tmp_path / "m.npz"
    if existing:
        save_model(small_model(seed=1), target)
    before = target.read_bytes() if existing else None

    def broken_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(xpmlp.io.serialize.numpy, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        save_model(small_model(), target)
    if existing:  # the old file is intact
        assert sorted(os.listdir(tmp_path)) == ["m.npz"]
        assert target.read_bytes() == before
    else:
        assert os.listdir(tmp_path) == []


def corrupt_variants(tmp_path) -> dict[str, bytes]:
    good = save_model(small_model(), tmp_path / "good.npz").read_bytes()
    return {
        "garbage": b"this is not a model" * 10,
        "pickle-like": b"\x80\x04\x95" + b"\x00" * 40,
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "bit-flip": good[:80] + bytes([good[80] ^ 0xFF]) + good[81:],
    }


@pytest.mark.parametrize(
    "variant",
    ["garbage", "pickle-like", "truncated", "empty", "bit-flip"],
)
def test_a_corrupt_file_gives_data_file_error(tmp_path, variant) -> None:
    path = tmp_path / f"{variant}.npz"
    path.write_bytes(corrupt_variants(tmp_path)[variant])
    with pytest.raises(xpmlp.DataFileError, match=re.escape(str(path))):
        load_model(path, backend="numpy")


def test_a_foreign_npz_gives_data_file_error(tmp_path) -> None:
    path = tmp_path / "other.npz"
    np.savez(path, params=np.zeros(3), meta=np.array('{"format": "something-else"}'))
    with pytest.raises(xpmlp.DataFileError, match="format"):
        load_model(path, backend="numpy")
    np.savez(path, weights=np.zeros(3))
    with pytest.raises(xpmlp.DataFileError):
        load_model(path, backend="numpy")


# ---------------------------------------------------------------------- the learner's API


def test_forward_keeps_z_and_a_of_every_layer() -> None:
    model = MLP([4, 6, 5, 3], backend="numpy", dtype="float64")
    X = X3[:7]
    fp = model.forward(X)
    assert [z.shape for z in fp.Z] == [(7, 6), (7, 5), (7, 3)]
    assert [a.shape for a in fp.A] == [(7, 4), (7, 6), (7, 5), (7, 3)]
    np.testing.assert_array_equal(fp.A[0], X)
    A = X
    for layer, z, a in zip(model.layers, fp.Z, fp.A[1:], strict=True):  # independent forward
        z_ref = A @ np.array(layer.W).T + np.array(layer.b)
        np.testing.assert_allclose(z, z_ref, rtol=1e-12, atol=1e-12)
        A = (
            np.maximum(z_ref, 0)
            if layer.activation.name == "relu"
            else (np.exp(z_ref) / np.exp(z_ref).sum(axis=1, keepdims=True))
        )
        np.testing.assert_allclose(a, A, rtol=1e-12, atol=1e-15)


def test_backward_returns_delta_dw_db_per_layer_and_step_applies_them() -> None:
    model = MLP([4, 6, 5, 3], optimizer="sgd", learning_rate=0.1, backend="numpy", dtype="float64")
    X, y = X3[:9], Y3[:9]
    fp = model.forward(X)
    g = model.backward(fp, y)
    assert [d.shape for d in g.delta] == [(9, 6), (9, 5), (9, 3)]
    assert [w.shape for w in g.dW] == [(6, 4), (5, 6), (3, 5)]
    assert [b.shape for b in g.db] == [(6,), (5,), (3,)]
    np.testing.assert_allclose(g.delta[-1], (fp.A[-1] - np.eye(3)[y]) / 9, rtol=1e-12)
    for l in range(3):
        np.testing.assert_allclose(g.dW[l], g.delta[l].T @ fp.A[l], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(g.db[l], g.delta[l].sum(axis=0), rtol=1e-12, atol=1e-15)
    expected_loss = -np.log(fp.A[-1][np.arange(9), y]).mean()
    assert g.loss == pytest.approx(expected_loss, rel=1e-12)
    before, grads = host(model.params).copy(), host(model.grads).copy()
    model.step()
    np.testing.assert_allclose(model.params, before - 0.1 * grads, rtol=1e-14, atol=1e-16)


# ---------------------------------------------------------------------- batches, progress, history


class CountingBackend(NumpyBackend):
    """Records the size of every gathered mini-batch."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def gather_rows(self, X, idx, out) -> None:
        if X.shape[1] == 4:  # the features (Y is gathered too)
            self.batches.append(int(idx.shape[0]))
        super().gather_rows(X, idx, out)


def test_the_last_partial_batch_is_used() -> None:
    be = CountingBackend()
    X, y = X3[:10], Y3[:10]
    model = MLP([4, 5, 3], optimizer="sgd", learning_rate=0.5, backend=be, dtype="float64")
    start = host(model.params).copy()
    model.fit(X, y, epochs=2, batch_size=4, shuffle=False)
    assert be.batches == [4, 4, 2, 4, 4, 2]
    by_hand = MLP([4, 5, 3], optimizer="sgd", learning_rate=0.5, backend="numpy", dtype="float64")
    by_hand.params[...] = start
    for _ in range(2):
        for s in (slice(0, 4), slice(4, 8), slice(8, 10)):
            by_hand.backward(by_hand.forward(X[s]), y[s])
            by_hand.step()
    np.testing.assert_allclose(model.params, by_hand.params, rtol=1e-12, atol=1e-14)


def test_progress_bar_goes_to_stderr(capsys) -> None:
    small_model().fit(X3, Y3, epochs=2, batch_size=32, progress=True)
    out, err = capsys.readouterr()
    assert out == ""
    assert "epoch 1/2" in err and "epoch 2/2" in err
    assert "loss=" in err and "acc=" in err


def test_no_progress_bar_by_default(capsys) -> None:
    small_model().fit(X3, Y3, epochs=1)
    assert capsys.readouterr() == ("", "")


def test_history_records_every_epoch() -> None:
    records = []
    model = small_model().fit(
        X3, Y3, epochs=3, batch_size=32, validation_data=blobs(60, seed=2), callback=records.append
    )
    assert model.history_ == records and len(records) == 3
    for epoch, rec in enumerate(records, start=1):
        assert set(rec) == {
            "epoch",
            "loss",
            "train_accuracy",
            "seconds",
            "samples_per_s",
            "val_loss",
            "val_accuracy",
            "step",
        }
        assert rec["epoch"] == epoch
        assert 0 <= rec["train_accuracy"] <= 1 and 0 <= rec["val_accuracy"] <= 1
        assert rec["loss"] > 0 and rec["seconds"] > 0
        assert rec["samples_per_s"] == pytest.approx(240 / rec["seconds"])
    assert records[-1]["loss"] < records[0]["loss"]
    assert "val_accuracy" not in small_model().fit(X3, Y3, epochs=1).history_[0]


def test_history_loss_and_accuracy_are_the_epochs_means() -> None:
    """With a negligible learning rate the parameters do not move, so the epoch's mean loss
    and accuracy are those of the initial model, computed here independently."""
    model = MLP(
        [4, 6, 3], optimizer="sgd", learning_rate=1e-300, dtype="float64", backend="numpy", seed=9
    )
    W1, W2 = (np.array(layer.W) for layer in model.layers)
    b1, b2 = (np.array(layer.b) for layer in model.layers)
    Z = np.maximum(X3 @ W1.T + b1, 0) @ W2.T + b2
    log_p = Z - Z.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    model.fit(X3, Y3, epochs=1, batch_size=50, validation_data=(X3, Y3))
    rec = model.history_[0]
    assert rec["loss"] == pytest.approx(-log_p[np.arange(240), Y3].mean(), rel=1e-10)
    accuracy = (Z.argmax(axis=1) == Y3).mean()
    assert rec["train_accuracy"] == pytest.approx(accuracy)
    assert rec["val_accuracy"] == pytest.approx(accuracy)
    assert rec["val_loss"] == pytest.approx(rec["loss"], rel=1e-10)


# ---------------------------------------------------------------------- weights in and out
def test_set_weights_then_get_weights_round_trip_and_drive_the_forward_pass() -> None:
    model = MLP(
        [3, 4, 2],
        activation="identity",
        output_activation="identity",
        loss="squared_error",
        dtype="float64",
    )
    rng = np.random.default_rng(0)
    weights = [
        (rng.standard_normal((4, 3)), rng.standard_normal(4)),
        (rng.standard_normal((2, 4)), rng.standard_normal(2)),
    ]
    model.set_weights(weights)
    for (W, b), (W_in, b_in) in zip(model.get_weights(), weights, strict=True):
        np.testing.assert_array_equal(W, W_in)
        np.testing.assert_array_equal(b, b_in)
    X = rng.standard_normal((5, 3))
    (W1, b1), (W2, b2) = weights
    np.testing.assert_allclose(model.predict(X), (X @ W1.T + b1) @ W2.T + b2, rtol=1e-12)
    got = model.get_weights()
    got[0][0][...] = 0  # host copies: the model is untouched
    assert model.get_weights()[0][0].any()


@pytest.mark.parametrize(
    ("weights", "words"),
    [
        ([(np.zeros((4, 3)), np.zeros(4))], "1 (W, b) pairs; expected one per layer (2)"),
        (
            [(np.zeros((3, 4)), np.zeros(4)), (np.zeros((2, 4)), np.zeros(2))],
            "layer 0: W has shape (3, 4); expected (4, 3)",
        ),
        (
            [(np.zeros((4, 3)), np.zeros(4)), (np.zeros((2, 4)), np.zeros((2, 1)))],
            "layer 1: b has shape (2, 1); expected (2,)",
        ),
    ],
)
def test_set_weights_refuses_wrong_shapes(weights, words) -> None:
    model = MLP([3, 4, 2])
    before = model.params.copy()
    with pytest.raises(ValueError, match=re.escape(words)):
        model.set_weights(weights)
    if "layer 1" not in words:
        np.testing.assert_array_equal(model.params, before)


def test_every_public_call_runs_inside_backend_activate(tmp_path) -> None:
    """The MLP makes its backend current around each call (on a GPU: its device and stream)."""

    class Watching(NumpyBackend):
        name = "watching"

        def __init__(self) -> None:
            super().__init__()
            self.depth, self.outside = 0, []

        def activate(self):
            import contextlib

            @contextlib.contextmanager
            def active():
                self.depth += 1
                try:
                    yield
                finally:
                    self.depth -= 1

            return active()

        def __getattribute__(self, name: str):
            value = object.__getattribute__(self, name)
            if (
                callable(value)
                and not name.startswith("_")
                and name not in ("activate", "to_numpy", "synchronize")
                and object.__getattribute__(self, "__dict__").get("depth") == 0
            ):
                object.__getattribute__(self, "outside").append(name)
            return value

    be = Watching()
    X, y = X3[:40].astype("float32"), Y3[:40]
    model = MLP([4, 5, 3], backend=be)
    model.fit(X, y, epochs=1, batch_size=16, validation_data=(X, y))
    model.backward(model.forward(X[:8]), y[:8])
    model.step()
    model.set_weights(model.get_weights())
    model.predict(X), model.predict_proba(X), model.score(X, y)
    load_model(save_model(model, tmp_path / "m"), backend=be)
    assert be.outside == []


# ---------------------------------------------------------------------- out of device memory
class SmallDevice(NumpyBackend):
    """A NumPy backend that, like a full GPU, refuses any array over ``limit`` values."""

    name = "small-device"

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def _check(self, n: int) -> None:
        if n > self.limit:
            raise xpmlp.DeviceMemoryError(f"the GPU ran out of memory allocating {n} values")

    def empty(self, shape, dtype):
        self._check(int(np.prod(shape)))
        return super().empty(shape, dtype)

    def zeros(self, shape, dtype):
        self._check(int(np.prod(shape)))
        return super().zeros(shape, dtype)

    def asarray(self, a, dtype=None):
        self._check(int(np.size(a)))
        return super().asarray(a, dtype)


@pytest.mark.parametrize(
    ("limit", "call", "words"),
    [
        (100, "build", ["parameters, gradients and adam state of layers 4-50-3", "smaller layers"]),
        (
            4000,
            "fit_big_batch",
            ["activations of a batch of 200 rows through layers 4-50-3", "smaller batch_size"],
        ),
        (4000, "fit_big_data", ["training set (1200 samples", "fit on part of the data"]),
        (4000, "forward_many", ["activations of a batch of 300 rows", "fewer rows"]),
    ],
)
def test_out_of_device_memory_says_for_what_and_what_to_try(limit, call, words) -> None:
    rng = np.random.default_rng(0)

    def X(m: int) -> np.ndarray:
        return rng.standard_normal((m, 4)).astype("float32")

    def y(m: int) -> np.ndarray:
        return rng.integers(0, 3, size=m)

    calls = {
        "build": lambda: MLP([4, 50, 3], backend=SmallDevice(limit)),
        "fit_big_batch": lambda: MLP([4, 50, 3], backend=SmallDevice(limit)).fit(
            X(200), y(200), batch_size=200, epochs=1
        ),
        "fit_big_data": lambda: MLP([4, 50, 3], backend=SmallDevice(limit)).fit(
            X(1200), y(1200), batch_size=16, epochs=1
        ),
        "forward_many": lambda: MLP([4, 50, 3], backend=SmallDevice(limit)).forward(X(300)),
    }
    with pytest.raises(xpmlp.DeviceMemoryError) as info:
        calls[call]()
    message = str(info.value)
    for word in [*words, "MiB", "the GPU ran out of memory allocating"]:
        assert word in message
