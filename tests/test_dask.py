"""The estimators on Dask: GridSearchCV under joblib's dask backend on a two-process
LocalCluster, and partial_fit through dask-ml's Incremental (block by block, for data
larger than memory)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
distributed = pytest.importorskip("distributed", reason="needs dask[distributed]")

from sklearn.datasets import load_digits  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402

from xpmlp import MLPClassifier  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=40,
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_digits(return_X_y=True)
    return X[:400] / 16.0, y[:400]


def test_grid_search_under_joblib_dask_backend(client, digits) -> None:
    import joblib

    X, y = digits
    est = MLPClassifier(
        hidden_layer_sizes=(16,),
        max_iter=30,
        learning_rate_init=0.01,
        random_state=0,
        backend="numpy",
    )
    grid = GridSearchCV(est, {"alpha": [1e-4, 1e-2]}, cv=2)
    with joblib.parallel_backend("dask"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        grid.fit(X, y)
    assert grid.best_score_ > 0.7
    assert len(grid.cv_results_["mean_test_score"]) == 2


def test_partial_fit_through_dask_ml_incremental(client, digits) -> None:
    dask_array = pytest.importorskip("dask.array")
    wrappers = pytest.importorskip("dask_ml.wrappers", reason="needs dask-ml")
    X, y = digits
    X_dask = dask_array.from_array(X, chunks=(100, X.shape[1]))
    y_dask = dask_array.from_array(y, chunks=100)
    inc = wrappers.Incremental(
        MLPClassifier(
            hidden_layer_sizes=(16,), learning_rate_init=0.01, random_state=0, backend="numpy"
        )
    )
    for _ in range(8):
        inc.partial_fit(X=X_dask, y=y_dask, classes=np.arange(10))
    fitted = inc.estimator_
    assert fitted.n_iter_ == 8 * X_dask.numblocks[0]  # one partial_fit per block
    assert fitted.t_ == 8 * len(y)
    assert fitted.score(X, y) > 0.7
