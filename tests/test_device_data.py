"""``xpmlp.DeviceData``: X and y checked once and held on the backend; ``fit``, ``evaluate``,
``score``, ``predict`` and distributed sharding take it without checking again, and train to
the bits of plain arrays."""

from __future__ import annotations

import numpy as np
import pytest

import xpmlp
from xpmlp import MLP, DeviceData
from xpmlp.core.errors import ParameterError


def _data(m: int = 90, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, 5))
    return X, (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 0.7)


def _model(**options):
    return MLP([5, 8, 3], backend="numpy", seed=4, dropout=0.1, **options)


@pytest.fixture
def checks(monkeypatch):
    """Count the value checks (``check_numeric``: the scan for NaN, dtype and range)."""
    import xpmlp.backends.device_data as device_data
    import xpmlp.core.validation as validation

    calls: list[str] = []
    real = validation.check_numeric

    def counted(name, *args, **kwargs):
        calls.append(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(validation, "check_numeric", counted)
    monkeypatch.setattr(device_data, "check_numeric", counted)
    return calls


def test_device_data_is_checked_once_and_trains_to_the_bits_of_arrays(checks) -> None:
    X, y = _data()
    X_val, y_val = _data(40, seed=1)
    data = DeviceData(X, y, backend="numpy")
    val = DeviceData(X_val, y_val, backend="numpy", name="validation X")
    assert checks == ["X", "y", "validation X", "validation y"]
    checks.clear()
    on_device = _model().fit(data, epochs=3, batch_size=16, validation_data=val)
    results = (on_device.evaluate(data), on_device.score(data), on_device.predict(data))
    held_out = _model().fit(data, epochs=2, batch_size=16, validation_fraction=0.2)
    assert checks == []  # nothing checked again
    arrays = _model().fit(X, y, epochs=3, batch_size=16, validation_data=(X_val, y_val))
    assert checks == ["X", "y", "validation X", "validation y"]  # each once per call
    np.testing.assert_array_equal(on_device.params, arrays.params)

    def figures(model):  # the history without the timings
        return [
            {k: v for k, v in r.items() if k not in ("seconds", "samples_per_s")}
            for r in model.history_
        ]

    assert figures(on_device) == figures(arrays)
    assert results[0] == arrays.evaluate(X, y) and results[1] == arrays.score(X, y)
    np.testing.assert_array_equal(results[2], arrays.predict(X))
    np.testing.assert_array_equal(
        held_out.params, _model().fit(X, y, epochs=2, batch_size=16, validation_fraction=0.2).params
    )


def test_device_data_is_checked_when_made_and_against_the_model() -> None:
    X, y = _data()
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="X contains 1 NaN"):
        DeviceData(bad, y, backend="numpy")
    with pytest.raises(ValueError, match="expected a 2-D array"):
        DeviceData(X[0], backend="numpy")
    with pytest.raises(ParameterError, match="dtype='int8' is not valid"):
        DeviceData(X, y, backend="numpy", dtype="int8")
    data = DeviceData(X, y, backend="numpy", dtype="float64")
    with pytest.raises(ParameterError, match="the data is float64 but the model is float32"):
        _model().fit(data)
    with pytest.raises(
        ValueError, match="X has 5 features per sample; the model's input layer expects 4"
    ):
        MLP([4, 3], backend="numpy", dtype="float64").fit(data)
    with pytest.raises(ParameterError, match="holds its targets"):
        _model(dtype="float64").fit(data, y)
    with pytest.raises(ParameterError, match="has no targets"):
        _model().fit(DeviceData(X, backend="numpy"))
    with pytest.raises(ParameterError, match="fit needs targets"):
        _model().fit(X)
    with pytest.raises(ValueError, match=r"class labels from 0 to 2; the output layer has 2"):
        MLP([5, 2], backend="numpy", dtype="float64").fit(data)


def test_distributed_sharding_takes_device_data_unchecked(checks) -> None:
    import xpmlp.distributed as xd

    X, y = _data()
    data = DeviceData(X, y, backend="numpy")
    checks.clear()
    part = data.shard(1, 3)
    np.testing.assert_array_equal(part.X, X[1::3].astype(np.float32))
    np.testing.assert_array_equal(part.y, y[1::3])
    whole = xd.shard(data, xd.init("single"))
    assert len(whole) == len(data) and checks == []
    with pytest.raises(ParameterError, match="shard takes an xpmlp.DeviceData"):
        xd.shard(X, xd.init("single"))
    with pytest.raises(ParameterError, match="0 <= rank < world_size"):
        data.shard(3, 3)
    assert "DeviceData(X (90, 5), y (90,)" in repr(data) and xpmlp.DeviceData is DeviceData
