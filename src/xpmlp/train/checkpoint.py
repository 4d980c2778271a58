"""What training needs to go on from where it stopped: the record of a model's training
state (``MLP.train_state_``, ``xpmlp.TrainState``) read from it and put back, here and only
here (``save_model``'s files, ``MLP.state_dict`` and pickles, and so the estimators' pickles,
all use it).

Besides the parameters and the settings, the record carries (the metadata's ``training``):

=============  ==========================================================================
epoch          epochs trained over the model's life (``MLP.epoch_``)
steps          optimizer steps taken (``MLP.steps_``; Adam's bias correction reads it)
rng            the shuffling generator's state as JSON where the backend can read it
               (NumPy's PCG64), else null (CuPy keeps its generators' state on the GPU)
lr_schedule    the last fit's schedule and its position: name, step, total steps
stopping       optional: early stopping's memory, {no_improvement: count, best_value:
               number or null (none yet), best_epoch: count or null}; files without it
               (the first release's) load with none
arrays         the names of the named state arrays:
               ``optimizer.<row>`` one per row of the optimizer's state (``velocity``;
               ``m``, ``v``; ...), written once a step was taken (before, the state is
               the optimizer's fresh one, which loading rebuilds);
               ``buffer.<name>`` one per entry of ``MLP.buffers`` (arrays a layer keeps
               besides its parameters, such as a batch norm's running means)
=============  ==========================================================================

The history and the dropout step sit beside it in the file's metadata (``history``,
``dropout_steps``: ``xpmlp.io.serialize``); the best parameters are kept during a fit only.

Where the saved ``rng`` is null or of another backend's kind (a model saved on CUDA and
loaded on NumPy, or the reverse), loading seeds a new generator from (seed, epoch)
(``reseeded``): training continues with shuffles of its own, not the straight run's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal, overload

import numpy

from ..core.aliases import Decoded
from ..core.errors import DataFileError

if TYPE_CHECKING:
    from ..backends.base import Backend
    from ..core.aliases import Generator
    from .model import MLP

#: decoded JSON metadata: checked entry by entry (``check_training``, ``record._check_meta``)
#: before it is used, so its values are ``Decoded``
Meta = dict[str, Decoded]

OPTIMIZER, BUFFER = "optimizer.", "buffer."  # the groups of named state arrays


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def reseeded(backend: Backend, seed: int, epoch: int) -> Generator:
    """A generator of ``backend`` seeded from (seed, epoch), for a state that cannot carry."""
    entropy = numpy.random.SeedSequence([seed, epoch]).generate_state(1, numpy.uint32)[0]
    return backend.rng(int(entropy))


def training_meta(model: MLP) -> Meta:
    """The JSON part of the model's training state (see the module docstring)."""
    ts = model.train_state_
    return {
        "epoch": ts.epoch,
        "steps": ts.steps,
        "rng": model.backend.rng_state(ts.rng),
        "lr_schedule": ts.lr_schedule,
        "stopping": {
            "no_improvement": ts.no_improvement,
            "best_value": ts.best_value if math.isfinite(ts.best_value) else None,
            "best_epoch": ts.best_epoch,
        },
        "arrays": sorted(training_arrays(model, names_only=True)),
    }


@overload
def training_arrays(
    model: MLP,
    names_only: Literal[False] = False,
) -> dict[str, numpy.ndarray]: ...
@overload
def training_arrays(model: MLP, names_only: Literal[True]) -> dict[str, None]: ...
def training_arrays(
    model: MLP,
    names_only: bool = False,
) -> Mapping[str, numpy.ndarray | None]:
    """The named state arrays as host copies (see the module docstring); None for each with
    ``names_only``."""
    ts, host = model.train_state_, model.backend.to_numpy
    opt = ts.optimizer
    arrays: dict[str, numpy.ndarray | None] = {}
    if opt.t > 0:
        for row, name in enumerate(opt.state_names):
            arrays[OPTIMIZER + name] = None if names_only else numpy.array(host(opt.state[row]))
    for name, buffer in ts.buffers.items():
        arrays[BUFFER + name] = None if names_only else numpy.array(host(buffer))
    return arrays


def check_training(
    training: object, arrays: dict[str, numpy.ndarray], n_params: int, dtype: str, where: Path | str
) -> dict[str, numpy.ndarray]:
    """The state arrays cast to ``dtype``, once ``training`` (the decoded ``training`` entry,
    None for a file without one) and ``arrays`` are found well formed; ``DataFileError``
    naming ``where`` and the defect otherwise.

    ``training`` must be an object with counts ``epoch`` and ``steps``, ``rng`` null or an
    object with a string ``kind``, ``lr_schedule`` null or {name: str, step: count, total:
    count}, ``arrays`` the list of the names of ``arrays``; each optimizer row is a vector of
    ``n_params`` floats, every array finite in ``dtype``.
    """
    if training is None:
        if arrays:
            raise DataFileError(
                f"{where}: holds state arrays {sorted(arrays)} but the "
                "metadata has no 'training' entry describing them"
            )
        return {}
    if not isinstance(training, dict):
        raise DataFileError(
            f"{where}: metadata 'training' is a {type(training).__name__}; expected an object"
        )
    for key in ("epoch", "steps"):
        if not _is_count(training.get(key)):
            raise DataFileError(
                f"{where}: metadata 'training' {key!r} is "
                f"{training.get(key)!r}; expected an integer >= 0"
            )
    rng = training.get("rng")
    if rng is not None and not (isinstance(rng, dict) and isinstance(rng.get("kind"), str)):
        raise DataFileError(
            f"{where}: metadata 'training' 'rng' is {_short(rng)}; expected "
            "null or an object with a string 'kind'"
        )
    schedule = training.get("lr_schedule")
    if schedule is not None and not (
        isinstance(schedule, dict)
        and isinstance(schedule.get("name"), str)
        and _is_count(schedule.get("step"))
        and _is_count(schedule.get("total"))
    ):
        raise DataFileError(
            f"{where}: metadata 'training' 'lr_schedule' is "
            f"{_short(schedule)}; expected null or an object with a string "
            "'name' and integers 'step' and 'total' >= 0"
        )
    _check_stopping(training.get("stopping"), where)
    names = training.get("arrays")
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise DataFileError(
            f"{where}: metadata 'training' 'arrays' is {_short(names)}; "
            "expected a list of array names"
        )
    if sorted(names) != sorted(arrays):
        raise DataFileError(
            f"{where}: the metadata lists state arrays {sorted(names)} but "
            f"the file holds {sorted(arrays)}"
        )
    return {name: _checked_array(name, a, n_params, dtype, where) for name, a in arrays.items()}


def _check_stopping(stopping: object, where: Path | str) -> None:
    """DataFileError unless ``stopping`` is None or {no_improvement: count, best_value: a
    finite number or null, best_epoch: count or null}."""
    if stopping is None:
        return
    value = stopping.get("best_value") if isinstance(stopping, dict) else None
    if not (
        isinstance(stopping, dict)
        and _is_count(stopping.get("no_improvement"))
        and (
            value is None
            or (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
            )
        )
        and (stopping.get("best_epoch") is None or _is_count(stopping["best_epoch"]))
    ):
        raise DataFileError(
            f"{where}: metadata 'training' 'stopping' is {_short(stopping)}; "
            "expected an object with an integer 'no_improvement' >= 0, a "
            "finite 'best_value' or null, and an integer 'best_epoch' or null"
        )


def _checked_array(
    name: str, a: numpy.ndarray, n_params: int, dtype: str, where: Path | str
) -> numpy.ndarray:
    if not (name.startswith(OPTIMIZER) or name.startswith(BUFFER)):
        raise DataFileError(
            f"{where}: state array {name!r} is of no known group; expected "
            f"names starting with {OPTIMIZER!r} or {BUFFER!r}"
        )
    if a.dtype.kind != "f":
        raise DataFileError(
            f"{where}: state array {name!r} has dtype {a.dtype}; expected floating point numbers"
        )
    if name.startswith(OPTIMIZER) and a.shape != (n_params,):
        raise DataFileError(
            f"{where}: state array {name!r} has shape {a.shape}; expected "
            f"one value per parameter, shape ({n_params},)"
        )
    with numpy.errstate(over="ignore", invalid="ignore"):
        cast = a.astype(dtype)
    if not numpy.isfinite(cast).all():
        raise DataFileError(
            f"{where}: state array {name!r} has values that are NaN or "
            f"infinite in {dtype}; expected finite values"
        )
    return cast


def restore_training(
    model: MLP, training: Meta | None, arrays: dict[str, numpy.ndarray], where: Path | str
) -> None:
    """Put checked state (``check_training``'s) into ``model``, fresh from its constructor.

    Without ``training`` (an older file) the model keeps its fresh optimizer, epoch 0.
    ``DataFileError`` when the arrays do not fit the model's optimizer or buffers.
    """
    buffers = {name[len(BUFFER) :]: a for name, a in arrays.items() if name.startswith(BUFFER)}
    own = model.buffers  # a property that builds its dict: read once
    missing = sorted(set(own) - set(buffers))
    if missing:
        raise DataFileError(
            f"{where}: the model's buffer(s) {', '.join(map(repr, missing))} "
            "are missing (a model with batch norm saves its running estimates)"
        )
    if training is None:
        return
    be, ts = model.backend, model.train_state_
    opt = ts.optimizer
    rows = {name[len(OPTIMIZER) :]: a for name, a in arrays.items() if name.startswith(OPTIMIZER)}
    if rows and sorted(rows) != sorted(opt.state_names):
        raise DataFileError(
            f"{where}: the optimizer state rows are {sorted(rows)}; optimizer "
            f"{opt.name!r} keeps {sorted(opt.state_names)}"
        )
    if training["steps"] > 0 and opt.state_names and not rows:
        raise DataFileError(
            f"{where}: {training['steps']} optimizer steps were taken but the "
            f"file holds no state for optimizer {opt.name!r}"
        )
    for name, a in buffers.items():
        into = own.get(name)
        if into is None or tuple(into.shape) != a.shape:
            raise DataFileError(
                f"{where}: buffer {name!r} of shape {a.shape} does not fit the model (its "
                f"buffers: { ({k: tuple(v.shape) for k, v in own.items()}) })"
            )
    with be.activate():
        for row, name in enumerate(opt.state_names):
            if name in rows:
                opt.state[row] = be.asarray(rows[name], dtype=model.dtype)
        for name, a in buffers.items():
            own[name][...] = be.asarray(a, dtype=model.dtype)
        opt.restore_steps(training["steps"])
        ts.epoch = training["epoch"]
        ts.lr_schedule = training.get("lr_schedule")
        ts.rng = _restored_rng(model, training.get("rng"), where)
        stopping = training.get("stopping") or {}
        ts.no_improvement = stopping.get("no_improvement", 0)
        best = stopping.get("best_value")
        ts.best_value = math.inf if best is None else float(best)
        ts.best_epoch = stopping.get("best_epoch")


def _restored_rng(model: MLP, state: Meta | None, where: Path | str) -> Generator:
    """The saved generator where this backend can take it, else one reseeded."""
    if state is not None:
        try:
            rng = model.backend.rng_from_state(state)
        except (ValueError, TypeError, KeyError, OverflowError) as exc:
            raise DataFileError(
                f"{where}: metadata 'training' 'rng' is no valid generator "
                f"state ({type(exc).__name__}: {exc})"
            ) from None
        if rng is not None:
            return rng
    return reseeded(model.backend, model.seed, model.epoch_)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
