"""xpmlp: multi-layer perceptrons trained by backpropagation, on NumPy or CuPy arrays.

One MLP implementation runs on either backend; Numba-compiled fused kernels do
the elementwise work of the forward and backward passes on both.
"""

from __future__ import annotations

from . import optim, training
from ._version import __version__
from .backends import BACKEND_NAMES, Backend, get_backend, use_backend
from .backends.device_data import DeviceData
from .core.activations import register_activation
from .core.errors import (
    BackendUnavailableError,
    ConcurrentFitError,
    DataFileError,
    DeviceMemoryError,
    DistributedError,
    NotDifferentiableError,
    NotFittedError,
    NotSeparableWarning,
    ParameterError,
    TrainingDivergedError,
    XpmlpError,
)
from .core.optim import SGD, Adagrad, Adam, Optimizer, RMSprop, register_optimizer
from .io.onnx import to_onnx
from .io.serialize import load_model, save_model
from .teach.perceptron import Perceptron
from .train.model import MLP
from .train.state import TrainState

#: the scikit-learn estimators, imported on first use (scikit-learn is needed only then;
#: they are left out of __all__ so that ``from xpmlp import *`` works without it)
_ESTIMATORS = ("MLPClassifier", "MLPRegressor")


def __getattr__(name: str) -> object:
    """xpmlp.MLPClassifier and xpmlp.MLPRegressor, from xpmlp.estimators when first asked for."""
    if name in _ESTIMATORS:
        from . import estimators

        return getattr(estimators, name)
    raise AttributeError(f"module 'xpmlp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_ESTIMATORS})


__all__ = [
    "BACKEND_NAMES",
    "MLP",
    "SGD",
    "Adagrad",
    "Adam",
    "Backend",
    "BackendUnavailableError",
    "ConcurrentFitError",
    "DataFileError",
    "DeviceData",
    "DeviceMemoryError",
    "DistributedError",
    "NotDifferentiableError",
    "NotFittedError",
    "NotSeparableWarning",
    "Optimizer",
    "ParameterError",
    "Perceptron",
    "RMSprop",
    "TrainState",
    "TrainingDivergedError",
    "XpmlpError",
    "__version__",
    "get_backend",
    "load_model",
    "optim",
    "register_activation",
    "register_optimizer",
    "save_model",
    "to_onnx",
    "training",
    "use_backend",
]
