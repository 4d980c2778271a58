"""xpmlp.MLPClassifier and xpmlp.MLPRegressor: behaviour, attributes, labels, weights,
partial_fit, pickling, clone, Pipeline, GridSearchCV.

In float64 the estimators train exactly as scikit-learn's (same initialization, same
shuffling, same update rules for sgd and lbfgs), so many tests hold them to
scikit-learn's own MLP on the same data.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_digits, load_iris  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkClassifier  # noqa: E402
from sklearn.neural_network import MLPRegressor as SkRegressor  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import xpmlp  # noqa: E402
from xpmlp import MLPClassifier, MLPRegressor  # noqa: E402
from xpmlp.core.errors import BackendUnavailableError  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_digits(return_X_y=True)
    return X[:300] / 16.0, y[:300]


def small(**params):
    return {
        "hidden_layer_sizes": (20,),
        "random_state": 1,
        "max_iter": 3,
        "backend": "numpy",
        **params,
    }


# ---------------------------------------------------------------------- scikit-learn's numbers
@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_unweighted_fits_take_the_fused_step_to_the_per_op_bits(
    digits, solver, monkeypatch
) -> None:
    """Without sample weights the numpy backend's fused step trains each batch: the bits of
    the per-op path, and (float64, sgd) scikit-learn's numbers."""
    from xpmlp.backends.numpy_backend import NumpyBackend

    X, y = digits
    params = small(solver=solver, alpha=0.01, batch_size=64, momentum=0.9)
    calls = []
    real = NumpyBackend.fused_step
    monkeypatch.setattr(
        NumpyBackend, "fused_step", lambda self, model: calls.append(1) or real(self, model)
    )
    fused = MLPClassifier(dtype="float64", **params).fit(X, y)
    assert calls and fused.mlp_.backend._steps.get(fused.mlp_) is not None  # its own cache
    assert "_fused_step" not in vars(fused.mlp_)
    monkeypatch.setattr(NumpyBackend, "fused_step", lambda self, model: None)
    per_op = MLPClassifier(dtype="float64", **params).fit(X, y)
    for a, b in zip(
        fused.coefs_ + fused.intercepts_, per_op.coefs_ + per_op.intercepts_, strict=True
    ):
        np.testing.assert_array_equal(a, b)
    assert fused.loss_curve_ == per_op.loss_curve_
    if solver == "sgd":
        theirs = SkClassifier(**{k: v for k, v in params.items() if k != "backend"}).fit(X, y)
        np.testing.assert_allclose(fused.coefs_[0], theirs.coefs_[0], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(fused.loss_curve_, theirs.loss_curve_, rtol=1e-10)


@pytest.mark.parametrize("solver", ["sgd", "lbfgs"])
def test_float64_training_is_scikit_learns(digits, solver) -> None:
    X, y = digits
    w = np.random.default_rng(0).integers(1, 4, len(y)).astype(float)
    params = {"solver": solver, "alpha": 0.01, "batch_size": 64}
    ours = MLPClassifier(dtype="float64", **small(**params)).fit(X, y, sample_weight=w)
    sk_params = {k: v for k, v in small(**params).items() if k != "backend"}
    theirs = SkClassifier(**sk_params).fit(X, y, sample_weight=w)
    for a, b in zip(
        ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_, strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-10)
    assert ours.n_iter_ == theirs.n_iter_
    if solver == "sgd":
        np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-10)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=1e-9)


@pytest.mark.parametrize("loss", ["squared_error", "poisson"])
def test_float64_regression_is_scikit_learns(digits, loss) -> None:
    X, _ = digits
    Y = np.c_[X[:, 10], 2 * X[:, 20]]
    params = {"solver": "sgd", "alpha": 0.01, "loss": loss, "learning_rate_init": 0.01}
    ours = MLPRegressor(dtype="float64", **small(**params)).fit(X, Y)
    sk_params = {k: v for k, v in small(**params).items() if k != "backend"}
    theirs = SkRegressor(**sk_params).fit(X, Y)
    np.testing.assert_allclose(ours.coefs_[0], theirs.coefs_[0], rtol=1e-9, atol=1e-12)
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-10)
    assert ours.score(X, Y) == pytest.approx(theirs.score(X, Y), rel=1e-9)
    assert ours.out_activation_ == theirs.out_activation_


def test_early_stopping_matches_scikit_learn_and_records_the_validation_loss(digits) -> None:
    X, y = digits
    params = small(solver="sgd", early_stopping=True, max_iter=6)
    ours = MLPClassifier(dtype="float64", **params).fit(X, y)
    theirs = SkClassifier(**{k: v for k, v in params.items() if k != "backend"}).fit(X, y)
    np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_)
    assert ours.best_validation_score_ == theirs.best_validation_score_
    assert len(ours.validation_loss_curve_) == ours.n_iter_ == theirs.n_iter_
    assert all(np.isfinite(ours.validation_loss_curve_))
    assert ours.best_loss_ is None


# ---------------------------------------------------------------------- attributes and labels
def test_fitted_attributes(digits) -> None:
    X, y = digits
    est = MLPClassifier(hidden_layer_sizes=(16, 8), max_iter=4, random_state=0).fit(
        X.astype(np.float32), y
    )
    assert list(est.classes_) == list(range(10))
    assert [c.shape for c in est.coefs_] == [(64, 16), (16, 8), (8, 10)]
    assert [b.shape for b in est.intercepts_] == [(16,), (8,), (10,)]
    assert all(isinstance(c, np.ndarray) and c.dtype == np.float32 for c in est.coefs_)
    assert est.n_layers_ == 4 and est.n_outputs_ == 10 and est.out_activation_ == "softmax"
    assert est.n_iter_ == 4 and est.t_ == 4 * len(y) and len(est.loss_curve_) == 4
    assert est.loss_ == est.loss_curve_[-1] and est.best_loss_ == min(est.loss_curve_)
    assert est.validation_scores_ is None and est.validation_loss_curve_ is None
    assert est.n_features_in_ == 64
    assert isinstance(est.mlp_, xpmlp.MLP) and est.mlp_.dtype == np.float32
    np.testing.assert_allclose(est.predict_proba(X).sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(np.exp(est.predict_log_proba(X)), est.predict_proba(X), rtol=1e-5)


def test_string_labels_binary_and_the_onnx_contract() -> None:
    X, y = load_iris(return_X_y=True)
    labels = np.where(y == 0, "setosa", "other")
    est = MLPClassifier(max_iter=50, random_state=0).fit(X, labels)
    assert list(est.classes_) == ["other", "setosa"]
    assert est.n_outputs_ == 1 and est.out_activation_ == "logistic"
    assert est._onnx_binary_proba is True and est.mlp_.activations[-1] == "sigmoid"
    P = est.predict_proba(X)
    p = est.mlp_.predict_proba(X)[:, 0]
    np.testing.assert_allclose(P, np.c_[1 - p, p], rtol=1e-6)
    assert set(est.predict(X)) <= {"other", "setosa"}
    assert est.score(X, labels) > 0.95
    multi = MLPClassifier(max_iter=5, random_state=0).fit(X, y)
    assert multi._onnx_binary_proba is False


def test_multilabel_indicator_targets() -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 5))
    Y = np.c_[X[:, 0] > 0, X[:, 1] + X[:, 2] > 0, X[:, 3] < 0].astype(int)
    est = MLPClassifier(hidden_layer_sizes=(32,), max_iter=300, random_state=0).fit(X, Y)
    assert est.out_activation_ == "logistic" and est.n_outputs_ == 3
    assert est.predict(X).shape == (200, 3) and est.predict_proba(X).shape == (200, 3)
    assert est.score(X, Y) > 0.9  # subset accuracy


def test_regressor_single_and_multi_output() -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 4))
    y = X @ [1.0, -2.0, 0.5, 0.0]
    est = MLPRegressor(hidden_layer_sizes=(32,), max_iter=300, random_state=0).fit(X, y)
    assert est.predict(X).shape == (300,) and est.score(X, y) > 0.95
    Y = np.c_[y, -y]
    assert MLPRegressor(max_iter=5, random_state=0).fit(X, Y).predict(X).shape == (300, 2)


def test_poisson_needs_non_negative_targets() -> None:
    X = np.ones((10, 2))
    with pytest.raises(ValueError, match="poisson"):
        MLPRegressor(loss="poisson").fit(X, -np.ones(10))


# ---------------------------------------------------------------------- weights
def test_integer_sample_weights_equal_repeated_rows(digits) -> None:
    X, y = digits
    w = np.random.default_rng(1).integers(0, 3, len(y))
    params = small(solver="lbfgs", dtype="float64", max_iter=20)
    weighted = MLPClassifier(**params).fit(X, y, sample_weight=w)
    repeated = MLPClassifier(**params).fit(np.repeat(X, w, axis=0), np.repeat(y, w))
    np.testing.assert_allclose(
        weighted.predict_proba(X), repeated.predict_proba(X), rtol=1e-7, atol=1e-10
    )


def test_unit_weights_take_the_weighted_path_to_the_same_numbers(digits) -> None:
    X, y = digits
    params = small(solver="adam", dtype="float64")
    plain = MLPClassifier(**params).fit(X, y)
    ones = MLPClassifier(**params).fit(X, y, sample_weight=np.ones(len(y)))
    np.testing.assert_allclose(plain.coefs_[0], ones.coefs_[0], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(plain.loss_curve_, ones.loss_curve_, rtol=1e-12)


def test_class_weight_is_sample_weight_per_class(digits) -> None:
    X, y = digits
    weights = {c: 1.0 + c for c in range(10)}
    params = small(dtype="float64")
    by_class = MLPClassifier(class_weight=weights, **params).fit(X, y)
    by_sample = MLPClassifier(**params).fit(X, y, sample_weight=1.0 + y)
    np.testing.assert_allclose(by_class.coefs_[0], by_sample.coefs_[0], rtol=1e-12)
    balanced = MLPClassifier(class_weight="balanced", **params).fit(X, y)
    assert not np.allclose(balanced.coefs_[0], by_class.coefs_[0])
    with pytest.raises(ValueError, match="balanced"):
        MLPClassifier(class_weight="balanced").partial_fit(X, y, classes=np.arange(10))


# ---------------------------------------------------------------------- incremental training
def test_partial_fit_needs_classes_first_and_counts_iterations(digits) -> None:
    X, y = digits
    est = MLPClassifier(**small())
    with pytest.raises(ValueError, match="classes"):
        est.partial_fit(X, y)
    est.partial_fit(X[:100], y[:100], classes=np.arange(10))
    est.partial_fit(X[100:], y[100:])
    assert est.n_iter_ == 2 and est.t_ == len(y) and len(est.loss_curve_) == 2
    with pytest.raises(ValueError, match="classes"):
        est.partial_fit(X, y + 20)
    assert not hasattr(MLPClassifier(solver="lbfgs"), "partial_fit")


def test_warm_start_continues_and_plain_fit_restarts(digits) -> None:
    X, y = digits
    est = MLPClassifier(warm_start=True, **small()).fit(X, y)
    held = est.coefs_[0]
    first = held.copy()
    est.fit(X, y)
    assert est.n_iter_ == 3 and len(est.loss_curve_) == 6
    assert not np.allclose(first, est.coefs_[0])
    assert held is est.coefs_[0]  # as scikit-learn's: the array held follows the training
    fresh = MLPClassifier(**small()).fit(X, y)
    np.testing.assert_array_equal(fresh.coefs_[0], first)


# ---------------------------------------------------------------------- what users asked for
def test_early_stopping_on_the_validation_loss(digits) -> None:
    X, y = digits
    est = MLPClassifier(
        early_stopping=True,
        early_stopping_metric="loss",
        n_iter_no_change=2,
        tol=0.0,
        **small(max_iter=100, solver="sgd", learning_rate_init=0.5),
    ).fit(X, y)
    curve = est.validation_loss_curve_
    assert est.best_validation_loss_ == min(curve)
    best = int(np.argmin(curve))
    assert est.n_iter_ == len(curve) and best == len(curve) - 4  # 3 (> 2) epochs not better
    assert est.best_validation_score_ == est.validation_scores_[best]


def test_adaptive_learning_rate_applies_to_adam_too(digits) -> None:
    X, y = digits
    est = MLPClassifier(
        learning_rate="adaptive", n_iter_no_change=1, tol=10.0, **small(max_iter=5)
    ).fit(X, y)
    # iteration 1 improves on inf; 2 stalls twice in a row at 3 and at 5: two divisions
    assert est._learning_rate == pytest.approx(0.001 / 5**2)


def test_callbacks_see_each_iteration_and_can_stop(digits) -> None:
    X, y = digits
    seen = []

    def stop_at_two(est, info):
        seen.append(info)
        return info["n_iter"] == 2

    est = MLPClassifier(callbacks=[stop_at_two], **small(max_iter=10)).fit(X, y)
    assert est.n_iter_ == 2 and [i["n_iter"] for i in seen] == [1, 2]
    assert seen[-1]["loss"] == est.loss_
    lbfgs = MLPClassifier(callbacks=[stop_at_two], **small(solver="lbfgs", max_iter=10))
    assert lbfgs.fit(X, y).n_iter_ == 2


def test_verbose_prints_scikit_learns_lines_and_verbose_2_a_bar(digits, capsys) -> None:
    X, y = digits
    MLPClassifier(verbose=True, **small(max_iter=2)).fit(X, y)
    out = capsys.readouterr()
    assert "Iteration 1, loss = " in out.out and "Iteration 2, loss = " in out.out
    MLPClassifier(verbose=2, **small(max_iter=2)).fit(X, y)
    assert "MLPClassifier" in capsys.readouterr().err  # the bar's description


# ---------------------------------------------------------------------- scikit-learn plumbing
def test_pickle_clone_and_unusable_backend(digits) -> None:
    X, y = digits
    est = MLPClassifier(**small()).fit(X, y)
    blob = pickle.dumps(est)
    assert b"mlp_" in blob
    back = pickle.loads(blob)
    np.testing.assert_array_equal(back.predict_proba(X), est.predict_proba(X))
    back.partial_fit(X, y)  # the optimizer's state came along
    assert back.n_iter_ == 4
    assert clone(est).get_params() == est.get_params() and not hasattr(clone(est), "mlp_")
    state = est.__getstate__()
    assert isinstance(state["mlp_"]["arrays"]["params"], np.ndarray)  # MLP.state_dict
    state["mlp_"]["backend"] = "cuda"
    try:
        xpmlp.get_backend("cuda")
    except BackendUnavailableError:
        with pytest.raises(BackendUnavailableError, match="fitted with backend='cuda'"):
            MLPClassifier().__setstate__(state)


def test_pipeline_and_grid_search_in_two_processes(digits) -> None:
    X, y = digits
    est = MLPClassifier(**small(max_iter=30, learning_rate_init=0.01))
    pipe = make_pipeline(StandardScaler(), est)
    grid = GridSearchCV(pipe, {"mlpclassifier__alpha": [1e-4, 1e-1]}, cv=2, n_jobs=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        grid.fit(X, y)
    assert grid.best_score_ > 0.6
    assert isinstance(grid.best_estimator_[-1].mlp_, xpmlp.MLP)


def test_scikit_learn_is_needed_only_for_the_estimators() -> None:
    code = (
        "import sys; sys.modules['sklearn'] = None\n"
        "import xpmlp\n"
        "from xpmlp import *\n"
        "assert 'sklearn' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "assert 'MLPClassifier' in dir(xpmlp)\n"
        "try:\n"
        "    xpmlp.MLPClassifier\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert 'pip install -e ".[sklearn]" in the xpmlp checkout' in out


def test_invalid_parameters_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="solver"):
        MLPClassifier(solver="newton").fit(np.ones((4, 2)), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="early_stopping_metric"):
        MLPClassifier(early_stopping_metric="f1").fit(np.ones((4, 2)), [0, 1, 0, 1])


# ---------------------------------------------------------------------- row weights, per op
def test_row_weights_scale_the_output_delta_and_the_loss() -> None:
    """MLP.backward_pass with row weights r: the gradient and the loss of (1/m) sum r_i l_i,
    the same as repeating row i r_i times (integer r), on the fused CPU kernels."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((6, 3)), rng.integers(0, 3, 6)
    r = np.array([1.0, 2.0, 0.0, 3.0, 1.0, 1.0])
    model = xpmlp.MLP([3, 4, 3], dtype="float64", backend="numpy")

    def gradients(Xb, yb, weights):
        ws = model.workspace(len(Xb))
        ws.X[...], ws.Y[...] = model.to_device(Xb, yb)
        stats, skip = np.zeros(2), np.zeros(1)
        model.forward_pass(ws)
        model.backward_pass(ws, stats, skip, weights)
        return model.grads.copy(), stats[0]

    g_w, loss_w = gradients(X, y, r * len(y) / r.sum())
    g_rep, loss_rep = gradients(
        np.repeat(X, r.astype(int), axis=0), np.repeat(y, r.astype(int)), None
    )
    np.testing.assert_allclose(g_w, g_rep, rtol=1e-12, atol=1e-15)
    assert loss_w / len(y) == pytest.approx(loss_rep / r.sum(), rel=1e-12)


# ---------------------------------------------------------------------- CUDA
@pytest.mark.cuda
def test_cupy_in_cupy_out(digits) -> None:
    cupy = pytest.importorskip("cupy", reason="needs CuPy and a CUDA GPU")
    try:
        xpmlp.get_backend("cuda")
    except BackendUnavailableError as exc:
        pytest.skip(f"needs a usable CUDA GPU: {exc}")
    X, y = digits
    est = MLPClassifier(**{**small(), "backend": "cuda"}).fit(X, y)
    assert isinstance(est.predict_proba(X), np.ndarray)
    X_dev = cupy.asarray(X)
    P = est.predict_proba(X_dev)
    assert isinstance(P, cupy.ndarray)
    np.testing.assert_allclose(P.get(), est.predict_proba(X), rtol=1e-5)
    assert isinstance(est.predict(X_dev), cupy.ndarray)
    reg = MLPRegressor(**{**small(), "backend": "cuda"}).fit(X_dev, cupy.asarray(X[:, 10]))
    assert isinstance(reg.predict(X_dev), cupy.ndarray)
    assert reg.score(X_dev, X[:, 10]) == pytest.approx(reg.score(X, X[:, 10]), rel=1e-5)


# ---------------------------------------------------------------------- scikit-learn's behaviours
def test_dtype_not_given_follows_the_input_float_dtype(digits) -> None:
    """dtype=None: float64 input trains float64 parameters (scikit-learn's rule), anything
    else float32; a dtype given wins (float64 input is not upcast from, nor float32 to)."""
    import scipy.sparse

    X, y = digits
    params = small(max_iter=1)
    for data, expected in [
        (X, np.float64),
        (X.astype(np.float32), np.float32),
        ((X * 16).astype(int), np.float32),
        ((X * 16).astype(int).tolist(), np.float32),
        (scipy.sparse.csr_matrix(X), np.float64),
    ]:
        est = MLPClassifier(**params).fit(data, y)
        assert est.mlp_.dtype == expected
        assert all(a.dtype == expected for a in est.coefs_ + est.intercepts_)
        reg = MLPRegressor(**params).fit(data, y)
        assert reg.predict(data).dtype == expected
    assert MLPClassifier(dtype="float32", **params).fit(X, y).mlp_.dtype == np.float32
    assert (
        MLPClassifier(dtype="float64", **params).fit(X.astype(np.float32), y).mlp_.dtype
        == np.float64
    )
    warm = MLPClassifier(warm_start=True, **params).fit(X.astype(np.float32), y)
    assert warm.fit(X, y).mlp_.dtype == np.float32  # the network keeps its dtype
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(X)
    assert MLPClassifier(**params).fit(frame, y).mlp_.dtype == np.float64
    assert MLPClassifier(**params).fit(frame.astype(np.float32), y).mlp_.dtype == np.float32


def test_coefs_and_intercepts_edits_and_assignments_reach_predict(digits) -> None:
    X, y = digits
    est = MLPClassifier(**small(solver="sgd")).fit(X, y)
    before = est.predict_proba(X)
    held = est.coefs_[-1]
    held *= 0  # in place: every class gets the same logit but for the intercepts
    est.intercepts_[-1][...] = 0
    np.testing.assert_allclose(est.predict_proba(X), 0.1, rtol=1e-12)
    est.intercepts_[-1] = np.arange(10.0)  # assigned: a new array (float64, a list would do)
    assert (est.predict(X) == 9).all()
    est.coefs_ = [c.copy() for c in est.coefs_]  # a new list of new arrays
    est.coefs_[-1] += 1.0
    assert (est.predict(X) == 9).all()
    restored = MLPClassifier(**small(solver="sgd")).fit(X, y)
    est.coefs_, est.intercepts_ = restored.coefs_, restored.intercepts_
    np.testing.assert_array_equal(est.predict_proba(X), before)
    # pickling carries the edits; partial_fit trains on from them and updates the arrays held
    est.intercepts_[-1] = est.intercepts_[-1] + 100.0 * (np.arange(10) == 3)
    back = pickle.loads(pickle.dumps(est))
    assert (back.predict(X) == 3).all()
    held = back.coefs_[0]
    first = held.copy()
    back.partial_fit(X, y)
    assert held is back.coefs_[0] and not np.array_equal(held, first)
    with pytest.raises(
        ValueError,
        match=r"coefs_\[1\] has shape \(3, 10\); the network "
        r"needs \(20, 10\)",
    ):
        back.coefs_[1] = np.zeros((3, 10))
        back.predict(X)
    back.coefs_ = back.coefs_[:1]
    with pytest.raises(ValueError, match="coefs_ must be a list of 2 arrays"):
        back.predict(X)


def test_coefs_set_before_partial_fit_are_the_start_as_in_scikit_learn(digits) -> None:
    """An unfitted estimator given coefs_ and intercepts_ trains from them with partial_fit
    (scikit-learn's test_fit does this); float64 sgd gives scikit-learn's numbers."""
    X, y = digits
    rng = np.random.default_rng(0)
    coefs = [rng.standard_normal((64, 20)) * 0.1, rng.standard_normal((20, 10)) * 0.1]
    intercepts = [rng.standard_normal(20) * 0.1, rng.standard_normal(10) * 0.1]
    params = {
        "solver": "sgd",
        "hidden_layer_sizes": (20,),
        "momentum": 0.0,
        "alpha": 0.01,
        "learning_rate_init": 0.1,
        "batch_size": 300,
        "random_state": 0,
    }
    models = []
    for est in (MLPClassifier(dtype="float64", backend="numpy", **params), SkClassifier(**params)):
        est.coefs_ = [c.copy() for c in coefs]
        est.intercepts_ = [b.copy() for b in intercepts]
        est.n_layers_, est.n_outputs_, est.out_activation_ = 3, 10, "softmax"
        est.t_, est.n_iter_, est.best_loss_, est.loss_curve_ = 0, 0, np.inf, []
        est._no_improvement_count = 0
        est.partial_fit(X, y, classes=np.arange(10))
        models.append(est)
    ours, theirs = models
    for a, b in zip(
        ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_, strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    assert not np.allclose(ours.coefs_[0], coefs[0])  # it did train from them
    with pytest.raises(
        ValueError,
        match=r"coefs_\[0\] has shape \(64, 20\); the network "
        r"needs \(10, 20\)",
    ):
        fresh = MLPClassifier(**params)
        fresh.coefs_, fresh.intercepts_ = coefs, intercepts
        fresh.partial_fit(X[:, :10], y, classes=np.arange(10))


@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs"])
def test_sparse_input_trains_as_dense_one_batch_at_a_time(digits, solver, monkeypatch) -> None:
    """CSR and CSC X train to the dense numbers, densifying no more than a batch (or a
    prediction chunk, or an lbfgs chunk) at a time."""
    import scipy.sparse

    import xpmlp.train.model
    from xpmlp.estimators import data, lbfgs

    X, y = digits
    densified = []
    real = data.SparseRows._dense
    monkeypatch.setattr(
        data.SparseRows,
        "_dense",
        lambda self, part: densified.append(part.shape[0]) or real(self, part),
    )
    monkeypatch.setattr(xpmlp.train.model, "PREDICT_CHUNK", 70)
    monkeypatch.setattr(lbfgs, "CHUNK", 128)
    params = small(
        solver=solver, batch_size=64, dtype="float64", early_stopping=solver != "lbfgs", max_iter=4
    )
    dense = MLPClassifier(**params).fit(X, y)
    for make in (scipy.sparse.csr_matrix, scipy.sparse.csc_array):
        densified.clear()
        est = MLPClassifier(**params).fit(make(X), y)
        assert densified and max(densified) <= 128
        for a, b in zip(
            est.coefs_ + est.intercepts_, dense.coefs_ + dense.intercepts_, strict=True
        ):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
        densified.clear()
        np.testing.assert_allclose(est.predict_proba(make(X)), dense.predict_proba(X), rtol=1e-12)
        assert max(densified) <= 70 and sum(densified) == len(X)
    reg = MLPRegressor(**params).fit(scipy.sparse.csr_matrix(X), X[:, 10])
    np.testing.assert_allclose(
        reg.predict(scipy.sparse.csr_matrix(X)),
        MLPRegressor(**params).fit(X, X[:, 10]).predict(X),
        rtol=1e-10,
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_diverging_fit_with_early_stopping_keeps_the_best_weights(dtype) -> None:
    """scikit-learn's test_mlp_diverging_loss: no error, a NaN last validation score, the
    best weights kept, and a warning that says so; without early stopping, an error."""
    X, y = load_iris(return_X_y=True)
    params = {
        "hidden_layer_sizes": 100,
        "activation": "identity",
        "solver": "sgd",
        "learning_rate_init": 1.0,
        "max_iter": 20,
        "random_state": 0,
        "dtype": dtype,
    }
    est = MLPRegressor(early_stopping=True, **params)
    with pytest.warns(ConvergenceWarning, match="not finite at iteration .* keeps the weights"):
        est.fit(X, y)
    assert np.isnan(est.validation_scores_[-1]) and np.isnan(est.validation_loss_curve_[-1])
    assert est.n_iter_ == len(est.validation_scores_) < 20
    assert all(np.isfinite(a).all() for a in est.coefs_ + est.intercepts_)
    assert np.isfinite(est.predict(X)).all()
    with pytest.raises(ValueError, match="Solver produced non-finite parameter weights"):
        MLPRegressor(early_stopping=False, **params).fit(X, y)


def test_verbose_other_than_2_prints_scikit_learns_lines(capsys) -> None:
    X, y = [[3, 2], [1, 6]], [1, 0]
    MLPClassifier(solver="sgd", max_iter=2, verbose=10, hidden_layer_sizes=2).fit(X, y)
    out = capsys.readouterr()
    assert "Iteration 1, loss = " in out.out and "Iteration 2, loss = " in out.out
    assert "MLPClassifier" not in out.err  # no bar


def test_a_stratified_split_too_small_names_the_labels() -> None:
    X, y = [[1, 2], [2, 3], [3, 4], [4, 5]], ["a", "a", "a", "b"]
    with pytest.raises(
        ValueError,
        match=r"too few members are: \['True'\].*'True' the label "
        r"'b'",
    ):
        MLPClassifier(early_stopping=True).fit(X, y)


def test_values_beyond_float32_are_refused_with_scikit_learns_message() -> None:
    X = np.array([[1e39, 1.0], [2.0, 3.0], [1.0, 1.0]])
    with pytest.raises(
        ValueError,
        match="Solver produced non-finite parameter weights.*X "
        "holds values beyond the range of the model's dtype "
        "float32",
    ):
        MLPRegressor(dtype="float32").fit(X, [1.0, 2.0, 3.0])


@pytest.mark.cuda
def test_cuda_sparse_input_and_coefs_edits(digits) -> None:
    """On CUDA: sparse batches densified on the host and copied, the dense numbers; coefs_
    are host copies that edits reach predict through, and that fits write back in place."""
    import scipy.sparse

    try:
        xpmlp.get_backend("cuda")
    except BackendUnavailableError as exc:
        pytest.skip(f"needs a usable CUDA GPU: {exc}")
    X, y = digits
    params = {**small(solver="sgd", dtype="float64", early_stopping=True), "backend": "cuda"}
    dense = MLPClassifier(**params).fit(X, y)
    est = MLPClassifier(**params).fit(scipy.sparse.csr_matrix(X), y)
    np.testing.assert_allclose(est.coefs_[0], dense.coefs_[0], rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(
        est.predict_proba(scipy.sparse.csc_matrix(X)), dense.predict_proba(X), rtol=1e-10
    )
    est = MLPClassifier(**{**params, "early_stopping": False}).fit(X, y)
    held = est.coefs_[-1]
    held *= 0
    est.intercepts_[-1] = np.arange(10.0)
    assert (est.predict(X) == 9).all()
    first = held.copy()
    est.partial_fit(X, y)
    assert held is est.coefs_[-1] and not np.array_equal(held, first)


def test_learning_rate_schedules_as_scikit_learns_private_tests_check_them() -> None:
    """scikit-learn's test_learning_rate_warmstart and test_adaptive_learning_rate (which
    read its private _optimizer, so tests/test_sklearn_upstream.py skips them), on xpmlp's
    _learning_rate."""
    X, y = [[3, 2], [1, 6], [5, 6], [-2, -4]], [1, 1, 1, 0]
    for learning_rate in ["invscaling", "constant"]:
        est = MLPClassifier(
            solver="sgd",
            hidden_layer_sizes=4,
            learning_rate=learning_rate,
            max_iter=1,
            power_t=0.25,
            warm_start=True,
        )
        before = est.fit(X, y)._learning_rate
        after = est.fit(X, y)._learning_rate
        if learning_rate == "constant":
            assert before == after == est.learning_rate_init
        else:
            assert after == est.learning_rate_init / pow(8 + 1, est.power_t)
    est = MLPClassifier(tol=0.5, max_iter=3000, solver="sgd", learning_rate="adaptive")
    est.fit([[3, 2], [1, 6]], [1, 0])
    assert est.max_iter > est.n_iter_ and est._learning_rate < 1e-6


@pytest.mark.parametrize(
    "options",
    [dict(dropout=0.2), dict(batch_norm=True), dict(dropout=[0.3, 0.0], batch_norm=[False, True])],
)
def test_a_pickled_estimator_keeps_the_whole_training_state(digits, options) -> None:
    """An estimator pickles its network's own record (``MLP.state_dict``): the dropout step,
    batch norm's running estimates, the optimizer's rows and step count come back, so the
    unpickled estimator predicts as the original and warm-starts to the same bits."""
    X, y = digits
    params = small(hidden_layer_sizes=(16, 12), warm_start=True, **options)
    est = MLPClassifier(**params).fit(X, y)
    assert est.mlp_.seed == 1 and (any(est.mlp_.dropout) or any(est.mlp_.batch_norm))
    back = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(back.predict_proba(X), est.predict_proba(X))
    mine, theirs = back.mlp_.train_state_, est.mlp_.train_state_
    assert mine.dropout_step == theirs.dropout_step and mine.steps == theirs.steps > 0
    np.testing.assert_array_equal(mine.running_mean, theirs.running_mean)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
        back.fit(X, y)
    for a, b in zip(back.coefs_ + back.intercepts_, est.coefs_ + est.intercepts_, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(back.mlp_.params, est.mlp_.params)
    assert back.loss_curve_ == est.loss_curve_


def test_an_estimator_pickled_by_the_first_release_still_loads(digits) -> None:
    """The first release pickled the network as a snapshot (parameters, optimizer rows and
    step count): it is read as the training state it is."""
    X, y = digits
    est = MLPClassifier(**small()).fit(X, y)
    state = est.__getstate__()
    model = est.mlp_
    state["mlp_"] = {
        "layer_sizes": list(model.layer_sizes),
        "activations": model.activations,
        "loss": model.loss,
        "dtype": model.dtype.name,
        "backend": "numpy",
        "device": None,
        "params": np.array(model.params),
        "optimizer": model.optimizer.describe(),
        "optimizer_state": np.array(model.optimizer.state),
        "optimizer_t": model.optimizer.t,
    }
    state["_best_params"] = None
    back = MLPClassifier()
    back.__setstate__(state)
    np.testing.assert_array_equal(back.predict_proba(X), est.predict_proba(X))
    assert back.mlp_.optimizer.t == model.optimizer.t
    np.testing.assert_array_equal(back.mlp_.optimizer.state, model.optimizer.state)


def test_device_data_enters_the_estimators_once(digits, monkeypatch) -> None:
    """An ``xpmlp.DeviceData`` (checked once, on the backend) goes into fit, predict and
    score without scikit-learn's validation running again, to the bits of the arrays."""
    import xpmlp.estimators.data as estimator_data

    X, y = digits
    calls: list[int] = []
    real = estimator_data.validate_data
    monkeypatch.setattr(
        estimator_data, "validate_data", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    data = xpmlp.DeviceData(X, y, backend="numpy", dtype="float64")
    targets = xpmlp.DeviceData(X, y / 10.0, backend="numpy", dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fitted = [MLPClassifier(**small()).fit(data), MLPRegressor(**small()).fit(targets)]
        figures = [
            (est.predict(d), est.score(d)) for est, d in zip(fitted, (data, targets), strict=True)
        ]
        assert calls == []  # never validated again
        arrays = [MLPClassifier(**small()).fit(X, y), MLPRegressor(**small()).fit(X, y / 10.0)]
    assert calls  # arrays go through scikit-learn's validation
    for ours, theirs, (predicted, score), yy in zip(
        fitted, arrays, figures, (y, y / 10.0), strict=True
    ):
        for a, b in zip(
            ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_, strict=True
        ):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(predicted, theirs.predict(X))
        assert score == theirs.score(X, yy) and ours.n_features_in_ == X.shape[1]
    with pytest.raises(
        ValueError, match="the data is float64 but the estimator's dtype is 'float32'"
    ):
        MLPClassifier(**small(dtype="float32")).fit(data)
    with pytest.raises(ValueError, match="holds its targets"):
        MLPClassifier(**small()).fit(data, y)
    with pytest.raises(
        ValueError, match="X has 10 features, but MLPClassifier is expecting 64 features"
    ):
        fitted[0].predict(xpmlp.DeviceData(X[:, :10], backend="numpy", dtype="float64"))
