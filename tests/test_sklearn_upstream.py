"""scikit-learn's own MLP tests on xpmlp's estimators, read from the installed scikit-learn.

At collection, the source of ``sklearn/neural_network/tests/test_mlp.py`` of the installed
scikit-learn is executed with its one line ``from sklearn.neural_network import
MLPClassifier, MLPRegressor`` removed and those two names bound to xpmlp's estimators
(nothing else in it is changed; its file name and line numbers stay in the tracebacks).
Its tests are collected here once per run, named ``<test>__<run>``:

- ``float32``: xpmlp's estimators with ``dtype="float32"`` (xpmlp's default precision);
- ``float64``: with ``dtype="float64"`` (scikit-learn's precision);
- ``default``: the estimators as they are (``dtype`` not given: the parameters follow the
  input's float dtype), for the tests whose subject that is (``DEFAULT_ONLY``).

Skipped, each with its reason (``-ra`` lists them): the tests that call or read
scikit-learn's private internals (``PRIVATE``), and in the fixed-dtype runs the case of
``test_mlp_param_dtypes`` whose input dtype is not the run's (it checks that an unset
dtype follows the input; the ``default`` run runs it). Everything else must pass.
Without scikit-learn (or where its installation has no tests) the module is skipped.
"""

from __future__ import annotations

import os
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sklearn = pytest.importorskip(
    "sklearn",
    reason="scikit-learn is not installed: pip install "
    '-e ".[sklearn]" to run its MLP tests on xpmlp',
)

from xpmlp import MLPClassifier, MLPRegressor  # noqa: E402

UPSTREAM = Path(sklearn.__file__).resolve().parent / "neural_network" / "tests" / "test_mlp.py"
IMPORT_LINE = "from sklearn.neural_network import MLPClassifier, MLPRegressor"

#: upstream tests that need scikit-learn's private internals, which xpmlp does not have.
PRIVATE = {
    "test_gradient": "calls scikit-learn's private MLP._loss_grad_lbfgs (xpmlp's gradients "
    "are held to finite differences in tests/test_gradients.py)",
    "test_learning_rate_warmstart": "reads scikit-learn's private MLP._optimizer.learning_rate "
    "(xpmlp keeps the schedule in _learning_rate: "
    "tests/test_estimators.py)",
    "test_adaptive_learning_rate": "reads scikit-learn's private MLP._optimizer.learning_rate "
    "(xpmlp keeps the schedule in _learning_rate: "
    "tests/test_estimators.py)",
}
#: tests of what the estimators do with ``dtype`` not given: the ``default`` run's.
DEFAULT_ONLY = (
    "test_mlp_param_dtypes",
    "test_mlp_classifier_dtypes_casting",
    "test_mlp_regressor_dtypes_casting",
)


def _with_dtype(base: type, dtype: str) -> type:
    """``base`` with ``dtype`` as its default: the same __init__ (scikit-learn reads the
    parameters from its signature) with that one keyword default changed."""
    init = base.__init__
    fixed = types.FunctionType(
        init.__code__, init.__globals__, "__init__", init.__defaults__, init.__closure__
    )
    fixed.__kwdefaults__ = {**init.__kwdefaults__, "dtype": dtype}
    name = f"{base.__name__}_{dtype}"
    cls = type(
        name,
        (base,),
        {
            "__init__": fixed,
            "__module__": __name__,
            "__qualname__": name,
            "__doc__": f"xpmlp.{base.__name__} with dtype={dtype!r}.",
        },
    )
    globals()[name] = cls  # picklable by name (the joblib test pickles an estimator)
    return cls


RUNS: dict[str, tuple[type, type]] = {
    "float32": (_with_dtype(MLPClassifier, "float32"), _with_dtype(MLPRegressor, "float32")),
    "float64": (_with_dtype(MLPClassifier, "float64"), _with_dtype(MLPRegressor, "float64")),
    "default": (MLPClassifier, MLPRegressor),
}


def _upstream_module(run: str, source: str) -> types.ModuleType:
    """test_mlp.py executed with MLPClassifier and MLPRegressor bound to the run's."""
    module = types.ModuleType(f"sklearn_test_mlp_{run}")
    module.__file__ = str(UPSTREAM)
    module.MLPClassifier, module.MLPRegressor = RUNS[run]
    # the import line becomes a blank one: line numbers stay those of the file
    exec(compile(source.replace(IMPORT_LINE, "", 1), str(UPSTREAM), "exec"), module.__dict__)
    return module


def _skip_case(func: Any, argname: str, value: Any, reason: str) -> None:
    """Skip the one case ``argname=value`` of a parametrized test function."""
    marks = []
    for mark in func.pytestmark:
        if mark.name == "parametrize" and mark.args[0] == argname:
            values = [
                pytest.param(v, marks=pytest.mark.skip(reason=reason)) if v is value else v
                for v in mark.args[1]
            ]
            mark = pytest.mark.parametrize(argname, values, **mark.kwargs).mark
        marks.append(mark)
    func.pytestmark = marks


def _collect() -> None:
    if not UPSTREAM.is_file():
        pytest.skip(
            f"this scikit-learn installation has no tests ({UPSTREAM} is missing)",
            allow_module_level=True,
        )
    source = UPSTREAM.read_text(encoding="utf-8")
    if source.count(IMPORT_LINE) != 1:
        raise RuntimeError(
            f"{UPSTREAM} no longer imports the estimators with the one line "
            f"{IMPORT_LINE!r}: update tests/test_sklearn_upstream.py"
        )
    for run in RUNS:
        module = _upstream_module(run, source)
        names = [n for n, f in vars(module).items() if n.startswith("test_") and callable(f)]
        for name in PRIVATE:
            if name not in names:
                raise RuntimeError(f"{UPSTREAM} has no {name} any more: update PRIVATE")
        for name in names:
            if run == "default" and name not in DEFAULT_ONLY:
                continue
            func = getattr(module, name)
            if name in PRIVATE:
                func = pytest.mark.skip(reason=PRIVATE[name])(func)
            elif run != "default" and name == "test_mlp_param_dtypes":
                other = np.float64 if run == "float32" else np.float32
                _skip_case(
                    func,
                    "dtype",
                    other,
                    f"the {run} run fixes dtype; this case checks "
                    "that an unset dtype follows the input's (the default run has it)",
                )
            globals()[f"{name}__{run}"] = func


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """scikit-learn's ``global_random_seed`` (its conftest, which is not loaded here): 42, or
    the seeds SKLEARN_TESTS_GLOBAL_RANDOM_SEED names ("all", "a-b" or one seed in 0..99)."""
    if "global_random_seed" not in metafunc.fixturenames:
        return
    var = os.environ.get("SKLEARN_TESTS_GLOBAL_RANDOM_SEED")
    if var is None:
        seeds = [42]
    elif var == "all":
        seeds = list(range(100))
    elif "-" in var:
        start, stop = var.split("-")
        seeds = list(range(int(start), int(stop) + 1))
    else:
        seeds = [int(var)]
    if min(seeds) < 0 or max(seeds) > 99:
        raise ValueError(
            f"SKLEARN_TESTS_GLOBAL_RANDOM_SEED must name seeds in [0, 99] (or 'all'); got {var!r}"
        )
    metafunc.parametrize("global_random_seed", seeds)


_collect()
