"""Pickling and deep-copying an MLP: host arrays and the backend's name travel, the model comes
back (in this process or another) predicting and training as the original does."""

from __future__ import annotations

import copy
import multiprocessing
import pickle
import threading
from typing import Any

import numpy as np
import pytest

import xpmlp
from xpmlp import MLP
from xpmlp.backends.base import Backend
from xpmlp.backends.cuda_probe import probe_cuda
from xpmlp.train.record import pickle_state


def blobs(m: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = np.array([[2.0, 2.0, 0.0], [-2.0, 2.0, 0.0], [0.0, -2.0, 1.0]])
    y = rng.integers(0, 3, size=m)
    return (centers[y] + 0.9 * rng.standard_normal((m, 3))), y


X, Y = blobs()
FIT = {"epochs": 2, "batch_size": 16}


def trained(optimizer: str = "adam", dtype: str = "float32", backend: Any = "numpy") -> MLP:
    return MLP([3, 6, 3], optimizer=optimizer, dtype=dtype, backend=backend, seed=3).fit(
        X, Y, **FIT
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer", ["nesterov", "adam", "rmsprop"])
def test_a_pickle_round_trip_predicts_and_trains_on_identically(optimizer: str, dtype: str) -> None:
    model = trained(optimizer, dtype)
    model.predict(X)  # a thread-local workspace exists; the fit lock is a lock
    copy_ = pickle.loads(pickle.dumps(model))
    assert type(copy_) is MLP and copy_.backend is model.backend
    assert copy_.dtype == model.dtype and copy_.optimizer.describe() == model.optimizer.describe()
    np.testing.assert_array_equal(copy_.predict_proba(X), model.predict_proba(X))
    assert copy_.history_ == model.history_ and copy_.history_ is not model.history_
    model.fit(X, Y, **FIT)
    copy_.fit(X, Y, **FIT)
    np.testing.assert_array_equal(copy_.params, model.params)
    np.testing.assert_array_equal(copy_.optimizer.state, model.optimizer.state)
    assert copy_.steps_ == model.steps_ and copy_.epoch_ == model.epoch_ == 4


def test_a_deepcopy_is_an_independent_model() -> None:
    model = trained("momentum")
    twin = copy.deepcopy(model)
    assert twin.backend is model.backend
    assert twin.fit_lock is not model.fit_lock
    before = model.params.copy(), model.optimizer.state.copy()
    np.testing.assert_array_equal(twin.params, model.params)
    twin.fit(X, Y, **FIT)
    np.testing.assert_array_equal(model.params, before[0])  # the original did not move
    np.testing.assert_array_equal(model.optimizer.state, before[1])
    assert model.epoch_ == 2 and twin.epoch_ == 4
    assert not np.shares_memory(twin.params, model.params)
    model.fit(X, Y, **FIT)  # and both went on alike
    np.testing.assert_array_equal(twin.params, model.params)


def test_a_model_in_a_list_deep_copies_once() -> None:
    model = trained("sgd")
    pair = copy.deepcopy([model, model])
    assert pair[0] is pair[1] and pair[0] is not model


def test_the_reference_backend_pickles_as_itself() -> None:
    model = trained("adam", "float64", backend=Backend())
    back = pickle.loads(pickle.dumps(model))
    assert back.backend.name == "reference"
    np.testing.assert_array_equal(back.predict_proba(X), model.predict_proba(X))


def unpickle_predict_and_train(blob: bytes) -> tuple[np.ndarray, np.ndarray, str]:
    """In a spawned process: the unpickled model's predictions, its parameters after two
    more epochs, and its backend's name."""
    model = pickle.loads(blob)
    proba = model.predict_proba(X)
    model.fit(X, Y, **FIT)
    return proba, model.params, model.backend.name


def test_a_pickle_crosses_into_a_spawned_process() -> None:
    model = trained("adam")
    blob = pickle.dumps(model)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        proba, params, backend = pool.apply(unpickle_predict_and_train, (blob,))
    np.testing.assert_array_equal(proba, model.predict_proba(X))
    model.fit(X, Y, **FIT)
    np.testing.assert_array_equal(params, model.params)
    assert backend == "numpy"


def cuda_pickle_state() -> dict[str, Any]:
    """The state a model pickled on GPU 0 has (made here from a NumPy model: the backend's
    name and device are all that differ; its generator's state does not travel)."""
    state = pickle_state(trained("adam"))
    state["meta"]["training"]["rng"] = None
    return {**state, "backend": "cuda", "device": 0}


@pytest.mark.skipif(probe_cuda().usable, reason="CUDA is usable here: the pickle would load")
def test_a_cuda_pickle_where_cuda_cannot_run_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("XPMLP_BACKEND", raising=False)
    state = cuda_pickle_state()
    with pytest.raises(xpmlp.BackendUnavailableError) as info:
        MLP.__new__(MLP).__setstate__(state)
    message = str(info.value)
    assert "pickled on backend 'cuda'" in message and "XPMLP_BACKEND=numpy" in message
    assert "use_backend('numpy')" in message


def test_xpmlp_backend_or_use_backend_decides_where_a_pickle_loads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = cuda_pickle_state()
    monkeypatch.setenv("XPMLP_BACKEND", "numpy")
    model = MLP.__new__(MLP)
    model.__setstate__(state)
    assert model.backend.name == "numpy" and model.steps_ == 16
    monkeypatch.delenv("XPMLP_BACKEND")
    with xpmlp.use_backend("numpy"):
        again = MLP.__new__(MLP)
        again.__setstate__(state)
    np.testing.assert_array_equal(again.params, model.params)


@pytest.mark.parametrize("state", [None, {}, {"xpmlp_pickle": 99}, [1, 2]])
def test_a_foreign_pickle_state_is_a_data_file_error(state: Any) -> None:
    with pytest.raises(xpmlp.DataFileError, match="pickle"):
        MLP.__new__(MLP).__setstate__(state)


def test_a_damaged_pickle_state_is_checked_like_a_file() -> None:
    state = pickle_state(trained("adam"))
    state["arrays"]["params"] = state["arrays"]["params"][:-1]
    with pytest.raises(xpmlp.DataFileError, match="the pickled MLP: 'params' has shape"):
        MLP.__new__(MLP).__setstate__(state)


def test_pickling_while_another_thread_predicts() -> None:
    model = trained("adam")
    done = threading.Event()

    def predict_until_done() -> None:
        while not done.is_set():
            model.predict(X)

    worker = threading.Thread(target=predict_until_done)
    worker.start()
    try:
        blobs_ = [pickle.dumps(model) for _ in range(5)]
    finally:
        done.set()
        worker.join()
    for blob in blobs_:
        np.testing.assert_array_equal(pickle.loads(blob).params, model.params)


@pytest.mark.cuda
def test_a_cuda_model_pickles_and_comes_back_on_cuda_or_numpy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("XPMLP_BACKEND", raising=False)
    model = trained("adam", backend="cuda")
    blob = pickle.dumps(model)
    back = pickle.loads(blob)
    assert back.backend.name == "cuda"
    np.testing.assert_array_equal(back.predict_proba(X), model.predict_proba(X))
    np.testing.assert_array_equal(back.optimizer.state.get(), model.optimizer.state.get())
    twin = copy.deepcopy(model)
    twin.fit(X, Y, **FIT)
    assert twin.steps_ == 32 and model.steps_ == 16
    monkeypatch.setenv("XPMLP_BACKEND", "numpy")
    on_cpu = pickle.loads(blob)
    assert on_cpu.backend.name == "numpy"
    np.testing.assert_allclose(
        on_cpu.predict_proba(X), model.predict_proba(X), rtol=1e-5, atol=1e-6
    )
