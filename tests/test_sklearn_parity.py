"""Accuracy on load_digits against scikit-learn's MLPClassifier: the same hyper-parameters,
a 70/30 split, standardized features, the mean test accuracy over five seeds within one
percentage point (float32 here, float64 there). Accuracy only: timings are for
benchmarks/bench_sklearn.py."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.datasets import load_digits  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkClassifier  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from xpmlp import MLPClassifier  # noqa: E402

SEEDS = range(5)
SETTINGS = {"hidden_layer_sizes": (64,), "max_iter": 60}  # scikit-learn's other defaults


def mean_accuracy(make) -> float:
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0)
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    scores = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for seed in SEEDS:
            scores.append(make(seed).fit(X_train, y_train).score(X_test, y_test))
    return float(np.mean(scores))


def test_digits_accuracy_within_one_point_of_scikit_learn() -> None:
    ours = mean_accuracy(
        lambda seed: MLPClassifier(random_state=seed, backend="numpy", dtype="float32", **SETTINGS)
    )
    theirs = mean_accuracy(lambda seed: SkClassifier(random_state=seed, **SETTINGS))
    assert theirs > 0.9  # the comparison means something
    assert abs(ours - theirs) <= 0.01, (ours, theirs)
