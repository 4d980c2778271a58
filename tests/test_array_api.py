"""The registries' reference array formulas are written against the array API standard: run
on ``array_api_strict`` (which has no NumPy methods, no value-based casting and no fancy
setitem), they give NumPy's numbers in the input's dtype."""

from __future__ import annotations

import numpy as np
import pytest

from xpmlp.backends import get_backend
from xpmlp.core.activations import ACTIVATIONS
from xpmlp.core.losses import LOSSES

xp = pytest.importorskip("array_api_strict", reason="array-api-strict is in the test extra")

#: erfc is not in the standard: gelu's reference takes SciPy's (or CuPy's), not the namespace's
OUTSIDE_THE_STANDARD = {"gelu"}
ACTIVATION_NAMES = [name for name in ACTIVATIONS if name not in OUTSIDE_THE_STANDARD]


def numpy_namespace() -> object:
    return get_backend("numpy").array_api


def strict(a: np.ndarray) -> object:
    return xp.asarray(a)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_activation_formulas_run_on_the_strict_namespace(name: str, dtype: type) -> None:
    entry = ACTIVATIONS[name]
    Z = np.random.default_rng(0).standard_normal((5, 4)).astype(dtype)
    A = entry.array(xp, strict(Z))
    assert A.dtype == strict(Z).dtype
    np.testing.assert_array_equal(np.from_dlpack(A), entry.array(numpy_namespace(), Z))
    if entry.array_derivative is not None:
        D = entry.array_derivative(xp, strict(Z), A)
        assert D.dtype == A.dtype
        np.testing.assert_array_equal(
            np.from_dlpack(D), entry.array_derivative(numpy_namespace(), Z, np.from_dlpack(A))
        )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_formulas_run_on_the_strict_namespace(name: str, dtype: type) -> None:
    entry = LOSSES[name]
    rng = np.random.default_rng(1)
    output = ACTIVATIONS[entry.default_output]
    Z = rng.standard_normal((6, 3)).astype(dtype)
    A = output.array(numpy_namespace(), Z)
    Y = {
        "distributions": np.eye(3, dtype=dtype)[rng.integers(0, 3, 6)],
        "probabilities": rng.random((6, 3)).astype(dtype),
        "counts": rng.integers(0, 4, (6, 3)).astype(dtype),
    }.get(entry.targets, A + 0.5)
    terms = entry.array_terms(xp, strict(Z), strict(A), strict(Y))
    assert terms.dtype == strict(Z).dtype and terms.shape == (6,)
    np.testing.assert_allclose(
        np.from_dlpack(terms), entry.array_terms(numpy_namespace(), Z, A, Y), rtol=1e-6
    )
    delta = entry.delta(xp, output, strict(Z), strict(A), strict(Y))
    assert delta.dtype == strict(Z).dtype
    np.testing.assert_array_equal(
        np.from_dlpack(delta), entry.delta(numpy_namespace(), output, Z, A, Y)
    )


def test_the_numpy_backend_hands_the_formulas_the_standard_namespace() -> None:
    import array_api_compat

    api = get_backend("numpy").array_api
    assert array_api_compat.is_numpy_namespace(api)
    assert api is not np  # the compat wrapper: xp.astype, xp.concat ... on any NumPy
