"""The perceptron: AND and OR learned exactly by the learning rule, XOR refused with a
NotSeparableWarning (never a hang), XOR learned by a two-layer MLP and reproduced by the
notes' hand-set hard-limit network, and the inputs validated like the rest of the library."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

import xpmlp
from xpmlp import MLP, NotFittedError, NotSeparableWarning, ParameterError, Perceptron
from xpmlp.backends.base import Backend

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
AND, OR, XOR = [0, 0, 0, 1], [0, 1, 1, 1], [0, 1, 1, 0]

#: AND from W = 0, b = 0 with eta = 1, worked by hand: per presentation (epoch, sample,
#: net input n, output a, W and b after). The first epoch without an error is the sixth.
AND_BY_HAND = [
    (1, 0, 0, 1, [0, 0], -1),
    (1, 1, -1, 0, [0, 0], -1),
    (1, 2, -1, 0, [0, 0], -1),
    (1, 3, -1, 0, [1, 1], 0),
    (2, 0, 0, 1, [1, 1], -1),
    (2, 1, 0, 1, [1, 0], -2),
    (2, 2, -1, 0, [1, 0], -2),
    (2, 3, -1, 0, [2, 1], -1),
    (3, 0, -1, 0, [2, 1], -1),
    (3, 1, 0, 1, [2, 0], -2),
    (3, 2, 0, 1, [1, 0], -3),
    (3, 3, -2, 0, [2, 1], -2),
    (4, 0, -2, 0, [2, 1], -2),
    (4, 1, -1, 0, [2, 1], -2),
    (4, 2, 0, 1, [1, 1], -3),
    (4, 3, -1, 0, [2, 2], -2),
    (5, 0, -2, 0, [2, 2], -2),
    (5, 1, 0, 1, [2, 1], -3),
    (5, 2, -1, 0, [2, 1], -3),
    (5, 3, 0, 1, [2, 1], -3),
    (6, 0, -3, 0, [2, 1], -3),
    (6, 1, -2, 0, [2, 1], -3),
    (6, 2, -1, 0, [2, 1], -3),
    (6, 3, 0, 1, [2, 1], -3),
]


def fit_quietly(p: Perceptron, X: Any, y: Any, **kwargs: Any) -> Perceptron:
    """fit, with any warning an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return p.fit(X, y, **kwargs)


# ---------------------------------------------------------------------- AND, OR, XOR
@pytest.mark.parametrize(
    ("labels", "epochs", "W", "b"),
    [
        (AND, 6, [[2.0, 1.0]], [-3.0]),
        (OR, 4, [[1.0, 1.0]], [-1.0]),
    ],
    ids=["AND", "OR"],
)
@pytest.mark.parametrize("backend", ["numpy", Backend()], ids=["numpy", "reference"])
def test_and_and_or_are_learned_exactly(labels, epochs, W, b, backend) -> None:
    p = fit_quietly(Perceptron(max_iter=50, backend=backend), X, labels)
    assert p.converged_ and p.cycle_ is None
    assert p.n_iter_ == epochs == len(p.errors_)  # stopped at the first epoch without an error
    assert p.errors_[-1] == 0 and all(e > 0 for e in p.errors_[:-1])
    np.testing.assert_array_equal(p.W_, W)
    np.testing.assert_array_equal(p.b_, b)
    np.testing.assert_array_equal(p.predict(X), labels)
    assert p.predict(X).dtype == np.int64 and p.score(X, labels) == 1.0


def test_the_and_updates_are_the_ones_worked_by_hand() -> None:
    p = fit_quietly(Perceptron(max_iter=50), X, AND)
    assert len(p.updates_) == len(AND_BY_HAND) == 4 * p.n_iter_
    for u, (epoch, index, n, a, W, b) in zip(p.updates_, AND_BY_HAND, strict=True):
        assert (u.epoch, u.index) == (epoch, index)
        np.testing.assert_array_equal(u.x, X[index])
        assert (float(u.y[0]), float(u.n[0]), float(u.a[0])) == (AND[index], n, a)
        assert float(u.error[0]) == AND[index] - a and u.changed == (AND[index] != a)
        np.testing.assert_array_equal(u.W, [W])
        np.testing.assert_array_equal(u.b, [b])


def test_each_update_is_the_learning_rule() -> None:
    """theta <- theta + eta [1 x]^T (y - a), with a = hardlimit(W x + b), every presentation."""
    rng = np.random.default_rng(3)
    Xr = rng.standard_normal((30, 3))
    y = (Xr @ [1.0, -2.0, 0.5] + 0.3 >= 0).astype(int)
    eta = 0.25
    p = fit_quietly(Perceptron(max_iter=100, learning_rate=eta), Xr, y)
    W, b = np.zeros((1, 3)), np.zeros(1)
    for u in p.updates_:
        n = W @ u.x + b
        a = (n >= 0).astype(float)
        np.testing.assert_array_equal(u.n, n)
        np.testing.assert_array_equal(u.a, a)
        W, b = W + eta * np.outer(u.y - a, u.x), b + eta * (u.y - a)
        np.testing.assert_array_equal(u.W, W)
        np.testing.assert_array_equal(u.b, b)
    assert p.converged_ and p.score(Xr, y) == 1.0


def test_xor_is_not_linearly_separable() -> None:
    """From W = 0 the rule cycles: epoch 4 would start where epoch 3 did. fit stops there with
    the proof in the warning, long before max_iter."""
    with pytest.warns(NotSeparableWarning, match="not linearly separable") as record:
        p = Perceptron(max_iter=10_000).fit(X, XOR)
    message = str(record[0].message)
    assert "epoch 4 would start from the same W and b as epoch 3" in message
    assert "xpmlp.MLP([n, 4, 1]" in message
    assert not p.converged_ and p.cycle_ == (3, 4) and p.n_iter_ == 3
    assert p.errors_[-1] > 0 and p.score(X, XOR) < 1.0
    assert len(p.updates_) == 4 * 3


def test_xor_stops_at_max_iter_and_says_why() -> None:
    with pytest.warns(
        NotSeparableWarning,
        match=r"did not converge within max_iter=2 epochs "
        r"\(\d of 4 samples misclassified in the last one\): the training data "
        "may not be linearly separable",
    ):
        p = Perceptron(max_iter=2).fit(X, XOR)
    assert not p.converged_ and p.n_iter_ == 2 and p.cycle_ is None


def test_a_non_separable_data_set_returns_after_max_iter_epochs() -> None:
    """Noisy labels (no exact cycle expected with real-valued inputs): never a hang."""
    rng = np.random.default_rng(11)
    Xr = rng.standard_normal((200, 4))
    y = (Xr[:, 0] > 0).astype(int)
    y[:20] = 1 - y[:20]
    with pytest.warns(NotSeparableWarning):
        p = Perceptron(max_iter=30, learning_rate=0.1, record_updates=False).fit(Xr, y)
    assert not p.converged_ and p.n_iter_ <= 30 and p.updates_ == []
    assert len(p.errors_) == p.n_iter_


def test_separable_data_converge_and_the_learning_rate_only_scales_w_from_zero() -> None:
    rng = np.random.default_rng(5)
    Xr = rng.standard_normal((100, 5))
    score = Xr @ rng.standard_normal(5) - 0.2
    keep = np.abs(score) > 0.3  # a margin
    Xr, y = Xr[keep], (score[keep] >= 0).astype(int)
    one = fit_quietly(Perceptron(max_iter=1000), Xr, y)
    half = fit_quietly(Perceptron(max_iter=1000, learning_rate=0.5), Xr, y)
    assert one.converged_ and one.score(Xr, y) == 1.0
    assert half.n_iter_ == one.n_iter_
    np.testing.assert_array_equal(half.W_, 0.5 * one.W_)
    np.testing.assert_array_equal(half.b_, 0.5 * one.b_)


def test_several_output_units_learn_side_by_side() -> None:
    Y = np.array([AND, OR]).T  # (4, 2): unit 0 learns AND, unit 1 OR
    p = fit_quietly(Perceptron(max_iter=50), X, Y)
    assert p.converged_ and p.W_.shape == (2, 2) and p.b_.shape == (2,)
    np.testing.assert_array_equal(p.predict(X), Y)
    assert p.predict(X).shape == (4, 2) and p.score(X, Y) == 1.0
    assert p.updates_[0].a.shape == (2,)


def test_initial_weights_and_float32() -> None:
    p = fit_quietly(
        Perceptron(max_iter=50, dtype="float32"), X, AND, W_init=[2.0, 1.0], b_init=-3.0
    )  # already a solution: one epoch
    assert p.converged_ and p.n_iter_ == 1 and p.W_.dtype == np.float32
    np.testing.assert_array_equal(p.W_, [[2.0, 1.0]])
    p = fit_quietly(Perceptron(max_iter=50), X, AND, W_init=[[0.5, -0.5]], b_init=[0.25])
    assert p.converged_ and p.score(X, AND) == 1.0


def test_labels_may_be_booleans_or_floats() -> None:
    p = fit_quietly(Perceptron(), X.astype(float), np.array(OR, dtype=bool))
    np.testing.assert_array_equal(p.predict(X), OR)
    assert p.score(X, np.array(OR, dtype=float)) == 1.0


# ---------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_iter": 0}, "max_iter=0 is not valid; expected an integer >= 1"),
        ({"max_iter": 2.5}, "max_iter=2.5 is not valid"),
        ({"learning_rate": 0.0}, "learning_rate=0.0 is not valid; expected a finite number > 0"),
        ({"learning_rate": float("inf")}, "learning_rate=inf is not valid"),
        (
            {"dtype": "float16"},
            "dtype='float16' is not valid; expected one of 'float32', 'float64'",
        ),
        ({"record_updates": "yes"}, "record_updates='yes' is not valid"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ParameterError) as info:
        Perceptron(**kwargs)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        (
            (X, [0, 1, 2, 1]),
            {},
            ValueError,
            "y holds 1 sample(s) with labels other than 0 and 1 (e.g. 2 at sample 2); the "
            "perceptron's hard-limit output is 0 or 1, so expected labels 0 and 1",
        ),
        ((X, [0, -1, 0, 1]), {}, ValueError, "labels other than 0 and 1 (e.g. -1 at sample 1)"),
        ((X, [0.0, 0.5, 1.0, 1.0]), {}, ValueError, "(e.g. 0.5 at sample 1)"),
        ((X, [0, 1, 1]), {}, ValueError, "X has 4 samples but y has 3; expected the same number"),
        ((X, 1), {}, ValueError, "y is a scalar; expected one label per sample (4 of them)"),
        ((X, np.zeros((4, 1, 1))), {}, ValueError, "y has shape (4, 1, 1); expected (4,) labels"),
        (
            (X, ["a", "b", "c", "d"]),
            {},
            TypeError,
            "y has dtype <U1; expected a real numeric dtype",
        ),
        (
            ([0, 1, 1, 0], XOR),
            {},
            ValueError,
            "X has shape (4,); expected a 2-D array (samples, features) with at least one feature",
        ),
        ((np.zeros((0, 2)), []), {}, ValueError, "X is empty (0 samples)"),
        (([[0, np.nan], [1, 1]], [0, 1]), {}, ValueError, "X contains 1 NaN or infinite value(s)"),
        (
            (X, AND),
            {"W_init": [[0, 0, 0]]},
            ValueError,
            "W_init has shape (1, 3); expected (1, 2) (outputs, features)",
        ),
        ((X, AND), {"b_init": [0, 0]}, ValueError, "b_init has shape (2,); expected (1,)"),
        ((X, AND), {"W_init": [[np.inf, 0]]}, ValueError, "W_init contains 1 NaN or infinite"),
    ],
)
def test_bad_data_are_refused_naming_them(args, kwargs, error, message) -> None:
    with pytest.raises(error) as info:
        Perceptron().fit(*args, **kwargs)
    assert message in str(info.value)


def test_predict_and_score_check_their_arguments() -> None:
    p = Perceptron()
    with pytest.raises(NotFittedError, match=r"no weights yet; call fit\(X, y\) first"):
        p.predict(X)
    fit_quietly(p, X, AND)
    with pytest.raises(
        ValueError, match="X has 3 features per sample; the model's input layer expects 2"
    ):
        p.predict(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="labels other than 0 and 1"):
        p.score(X, [0, 0, 3, 1])
    with pytest.raises(
        ValueError,
        match=r"the perceptron has 1 output unit\(s\), so expected "
        r"\(4,\) labels",
    ):
        p.score(X, np.zeros((4, 2)))


def test_exported_from_xpmlp() -> None:
    assert xpmlp.Perceptron is Perceptron and issubclass(NotSeparableWarning, UserWarning)
    assert "Perceptron(max_iter=100, learning_rate=1" in repr(Perceptron(backend="numpy"))


# ---------------------------------------------------------------------- XOR with two layers
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_two_layer_mlp_learns_xor(seed: int) -> None:
    """Full-batch gradient descent, lr 1, 500 epochs: 100 of 100 seeds reach 100 % (checked
    when these settings were chosen; final loss below 0.0074)."""
    model = MLP(
        [2, 4, 1],
        activation="tanh",
        output_activation="sigmoid",
        loss="binary_cross_entropy",
        optimizer="sgd",
        learning_rate=1.0,
        dtype="float64",
        backend="numpy",
        seed=seed,
    )
    model.fit(X, XOR, epochs=500, batch_size=4)
    np.testing.assert_array_equal(model.predict(X), XOR)
    assert model.score(X, XOR) == 1.0 and model.history_[-1]["loss"] < 0.05


def test_the_notes_hand_set_network_computes_xor() -> None:
    """W1 = [[1, -1], [-1, 1]], b1 = [-0.5, -0.5]: unit 1 fires for (1, 0), unit 2 for
    (0, 1); W2 = [[1, 1]], b2 = [-0.5]: the output is their OR, hard-limit throughout."""
    net = MLP(
        [2, 2, 1],
        activation="hardlimit",
        output_activation="hardlimit",
        loss="squared_error",
        dtype="float64",
        backend="numpy",
    )
    net.set_weights([([[1, -1], [-1, 1]], [-0.5, -0.5]), ([[1, 1]], [-0.5])])
    np.testing.assert_array_equal(net.predict(X), XOR)
    np.testing.assert_array_equal(net.forward(X).A[1], [[0, 0], [0, 1], [1, 0], [0, 0]])
    assert net.score(X, XOR) == 1.0
