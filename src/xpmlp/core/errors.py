"""The exceptions xpmlp raises on purpose.

Every error a user can cause has its own class here, so callers can catch
exactly what they mean and the message can say what was received and what was
expected.
"""

from __future__ import annotations


class XpmlpError(Exception):
    """Base class of every error raised on purpose by xpmlp."""


class ParameterError(XpmlpError, ValueError):
    """A parameter or setting has a value xpmlp cannot use (the message says what was received
    and what was expected)."""


class BackendUnavailableError(XpmlpError, RuntimeError):
    """A backend was asked for by name but cannot run here (cause and remedy in the message)."""


class DeviceMemoryError(XpmlpError, MemoryError):
    """The GPU ran out of memory (the message says what to try)."""


class DataFileError(XpmlpError, ValueError):
    """A data file is missing, truncated, corrupt or fails its checksum."""


class DownloadError(XpmlpError, OSError):
    """A data file could not be downloaded from any mirror."""


class TrainingDivergedError(XpmlpError, FloatingPointError):
    """The training loss became NaN or infinite; the model keeps its last finite parameters."""


class WorkedExampleError(XpmlpError, ValueError):
    """A worked-example file is malformed (the message names the field)."""


class NotDifferentiableError(XpmlpError, ValueError):
    """Backpropagation was asked to go through an activation with no usable derivative."""


class ConcurrentFitError(XpmlpError, RuntimeError):
    """``fit`` was called on a model that another thread is fitting."""


class DistributedError(XpmlpError, RuntimeError):
    """A job of several processes cannot go on: its ranks disagree (settings, data shapes) or
    the communication library is missing or misconfigured (the message says which)."""


class NotSeparableWarning(UserWarning):
    """The perceptron learning rule did not converge within ``max_iter`` epochs: the training
    data are not linearly separable (proven when an epoch starts from the weights of an
    earlier one, so the rule cycles for ever), or need more epochs."""


class NotFittedError(XpmlpError, RuntimeError):
    """A model was asked to predict or score before ``fit`` gave it weights."""


class StepFallbackWarning(UserWarning):
    """``fit`` trains with a slower step than its backend has (the per-op path instead of the
    fused CPU step, or kernel launches instead of a CUDA graph) because this model, or this
    kind of run, cannot take the faster one; the message says why. Once per ``fit``."""
