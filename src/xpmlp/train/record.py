"""A model as a record of plain data: its settings and its ``TrainState``, as JSON values
(``meta``) and host arrays (``params``, ``state.<name>``).

The record is the one description of a model behind its files (``xpmlp.io.serialize``), its
pickles (``pickle_state``, ``unpickle_into``), ``MLP.state_dict`` and ``MLP.from_state``, and
so the estimators' pickles. ``meta`` holds the layer sizes, activations, loss, dtype,
optimizer settings, seed, init, version, history, dropout rates and batch-norm flags, and
the training state of ``xpmlp.train.checkpoint``.

Reading a record checks all of it (``_check_meta``, ``_checked_params``,
``checkpoint.check_training``) before any model is built: whatever is wrong raises
``DataFileError`` naming where the record came from and the defect. A record of another
``format`` raises ``DataFileError`` naming that format and this one.

The format stays ``xpmlp-model/1``: the training state is an addition that older readers
ignore, and records written before it, without ``training``, ``seed`` or ``init``, load with
a fresh optimizer at epoch 0, seed 0, init auto.
"""

from __future__ import annotations

import json
import reprlib
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy

from .._version import __version__
from ..core.architecture import parameter_count
from ..core.errors import BackendUnavailableError, DataFileError
from ..core.validation import PRECISIONS
from .checkpoint import Meta, check_training, restore_training, training_arrays, training_meta

if TYPE_CHECKING:
    from ..backends.base import Backend
    from .model import MLP

FORMAT = "xpmlp-model/1"
DTYPES = ("float32", "float64")

_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlist, _short.maxdict = 60, 60, 6, 6


STATE = "state."  # the prefix of the named state arrays' members in the .npz


def model_record(model: MLP) -> tuple[Meta, dict[str, numpy.ndarray]]:
    """The metadata (JSON values) and the host arrays (``params`` and ``state.<name>``) that
    describe ``model`` and its training state."""
    ts = model.train_state_
    meta: Meta = {
        "format": FORMAT,
        "xpmlp_version": __version__,
        "layer_sizes": model.layer_sizes,
        "activations": model.activations,
        "loss": model.loss,
        "dtype": model.dtype.name,
        "optimizer": model.optimizer.describe(),
        "seed": model.seed,
        "init": model.init,
        "trained_on": {"backend": model.backend.name, "device": model.backend.device},
        "history": ts.history,
    }
    if model.deterministic:
        meta["deterministic"] = True
    if model.precision != "fp32":
        meta["precision"] = model.precision
    if any(model.dropout) or any(model.batch_norm):
        meta.update(
            dropout=model.dropout, batch_norm=model.batch_norm, dropout_steps=ts.dropout_step
        )
    with model.backend.activate():
        meta["training"] = training_meta(model)
        arrays = {"params": numpy.array(model.backend.to_numpy(ts.params))}
        arrays.update({STATE + k: v for k, v in training_arrays(model).items()})
    return meta, arrays


def model_from_record(
    cls: type[MLP],
    meta: object,
    arrays: dict[str, numpy.ndarray],
    where: Path | str,
    backend: Backend,
) -> MLP:
    """The model of class ``cls`` (``MLP``) that ``model_record`` described, on ``backend``;
    every part checked first (``DataFileError`` naming ``where`` and the first defect)."""
    checked = _check_meta(meta, where)
    params = _checked_params(arrays["params"], checked, where)
    state = {k[len(STATE) :]: v for k, v in arrays.items() if k.startswith(STATE)}
    state = check_training(checked.get("training"), state, params.shape[0], checked["dtype"], where)
    model = _model_from_meta(cls, checked, params, where, backend)
    restore_training(model, checked.get("training"), state, where)
    return model


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_layer_sizes(value: object) -> bool:
    return isinstance(value, list) and len(value) >= 2 and all(_is_int(n) and n > 0 for n in value)


def _is_str_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(a, str) for a in value)


def _is_optimizer(value: object) -> bool:
    return isinstance(value, dict) and isinstance(value.get("name"), str)


# Required metadata entries in the order they are checked ('format' first, so a foreign
# file is reported as such): name, test, what is expected.
_META_FIELDS: tuple[tuple[str, Callable[[object], bool], str], ...] = (
    ("format", lambda v: isinstance(v, str) and v == FORMAT, repr(FORMAT)),
    ("layer_sizes", _is_layer_sizes, "a list of at least 2 positive integers"),
    ("activations", _is_str_list, "a list of activation names (strings)"),
    ("loss", lambda v: isinstance(v, str), "a loss name (a string)"),
    ("dtype", lambda v: isinstance(v, str) and v in DTYPES, " or ".join(map(repr, DTYPES))),
    ("optimizer", _is_optimizer, "an object with a string 'name'"),
)


def _check_meta(meta: object, path: Path | str) -> Meta:
    """Check the decoded metadata of the file at ``path``, before any model is built.

    It must be a JSON object with ``format`` == FORMAT; ``layer_sizes`` a list of >= 2
    positive ints; ``activations`` a list of ``len(layer_sizes) - 1`` strings; ``loss`` a
    string; ``dtype`` one of DTYPES; ``optimizer`` an object with a string ``name``;
    ``history``, if present, a list; ``seed``, if present, an integer >= 0; ``init``, if
    present, a string (``training``: ``checkpoint.check_training``). Other entries are
    ignored. Names are not checked here
    (``_model_from_meta`` reports unknown ones). Raises ``DataFileError`` on the first defect;
    returns ``meta``, checked.
    """
    if not isinstance(meta, dict):
        raise DataFileError(
            f"{path}: the metadata is a JSON {_json_type(meta)} ({_short.repr(meta)}); "
            "expected a JSON object"
        )
    for key, is_valid, expected in _META_FIELDS:
        if key not in meta:
            raise DataFileError(f"{path}: the metadata has no {key!r}; expected {expected}")
        if not is_valid(meta[key]):
            raise DataFileError(
                f"{path}: metadata {key!r} is {_short.repr(meta[key])}; expected {expected}"
            )
    n_layers = len(meta["layer_sizes"]) - 1
    if len(meta["activations"]) != n_layers:
        raise DataFileError(
            f"{path}: metadata 'activations' has {len(meta['activations'])} names; "
            f"layer sizes {meta['layer_sizes']} need {n_layers}"
        )
    if "history" in meta and not isinstance(meta["history"], list):
        raise DataFileError(
            f"{path}: metadata 'history' is {_short.repr(meta['history'])}; expected a list"
        )
    if "seed" in meta and not (_is_int(meta["seed"]) and meta["seed"] >= 0):
        raise DataFileError(
            f"{path}: metadata 'seed' is {_short.repr(meta['seed'])}; expected an integer >= 0"
        )
    if "init" in meta and not isinstance(meta["init"], str):
        raise DataFileError(
            f"{path}: metadata 'init' is {_short.repr(meta['init'])}; expected an initializer "
            "name (a string)"
        )
    return meta


def _json_type(value: object) -> str:
    """The JSON name of the type of a decoded JSON ``value``."""
    if value is None:
        return "null"
    for kind, name in ((bool, "boolean"), (str, "string"), (list, "array"), (dict, "object")):
        if isinstance(value, kind):
            return name
    return "number"


def _parameter_count(layer_sizes: list[int], batch_norm: object = ()) -> int:
    """Weights plus biases of the dense layers between ``layer_sizes``, plus gamma and beta of
    the hidden layers whose ``batch_norm`` flag is true."""
    flags = batch_norm if isinstance(batch_norm, list) else []
    return parameter_count(layer_sizes, [f is True for f in flags])


def _checked_params(params: numpy.ndarray, meta: Meta, path: Path | str) -> numpy.ndarray:
    """``params`` as ``meta['dtype']``, after checking it against the checked ``meta``.

    It must be a 1-D array of floats (dtype kind 'f') holding exactly the parameter count
    of ``meta['layer_sizes']``, all finite once in ``meta['dtype']`` (a float64 value too
    large for float32 counts as infinite). Raises ``DataFileError`` naming the defect.
    """
    if params.dtype.kind != "f":
        raise DataFileError(
            f"{path}: 'params' has dtype {params.dtype}; expected floating point numbers"
        )
    expected = _parameter_count(meta["layer_sizes"], meta.get("batch_norm", []))
    if params.shape != (expected,):
        raise DataFileError(
            f"{path}: 'params' has shape {params.shape}; layer sizes {meta['layer_sizes']} "
            f"need a flat vector of shape ({expected},)"
        )
    with numpy.errstate(over="ignore", invalid="ignore"):
        cast = params.astype(meta["dtype"])
    bad = numpy.flatnonzero(~numpy.isfinite(cast))
    if bad.size:
        raise DataFileError(
            f"{path}: 'params' has {bad.size} value(s) that are NaN or infinite in "
            f"{meta['dtype']} (first at index {bad[0]}: {float(params[bad[0]])!r}); expected "
            "finite values"
        )
    return cast


def _model_from_meta(
    cls: type[MLP], meta: Meta, params: numpy.ndarray, path: Path | str, backend: Backend
) -> MLP:
    """The MLP that checked ``meta`` describes, on ``backend``, holding checked ``params``.

    ``ValueError``/``TypeError``/``OverflowError`` from the constructor (an unknown
    activation, loss or optimizer name, a bad hyperparameter) become ``DataFileError``
    naming ``path``.
    """
    from ..core.optim import from_description

    _check_registered(meta, path)
    try:
        model = cls(
            meta["layer_sizes"],
            activation=meta["activations"][:-1],
            output_activation=meta["activations"][-1],
            loss=meta["loss"],
            optimizer=from_description(meta["optimizer"]),
            dtype=meta["dtype"],
            init=meta.get("init", "auto"),
            seed=meta.get("seed", 0),
            backend=backend,
            dropout=meta.get("dropout", 0.0),
            batch_norm=meta.get("batch_norm", False),
            deterministic=meta.get("deterministic", False) is True,
            precision=_precision_on(meta.get("precision", "fp32"), backend, path),
        )
    except (ValueError, TypeError, OverflowError) as exc:
        raise DataFileError(f"{path}: the metadata describes no valid model ({exc})") from None
    ts = model.train_state_
    steps = meta.get("dropout_steps", 0)
    ts.dropout_step = steps if _is_int(steps) and steps >= 0 else 0
    with model.backend.activate():
        ts.params[...] = model.backend.asarray(params, dtype=model.dtype)
    ts.history = list(meta.get("history", []))
    return model


def _precision_on(precision: object, backend: Backend, path: Path | str) -> str:
    """The saved compute precision, or "fp32" where ``backend`` does not offer it (a model
    trained with TF32 on a GPU, loaded on the CPU: a ``UserWarning`` says so); any other
    string is left to ``MLP``'s check."""
    if not isinstance(precision, str):
        raise DataFileError(f"{path}: precision={precision!r} in the metadata is not a name")
    if precision in PRECISIONS and precision not in backend.precisions:
        warnings.warn(
            f"{path}: the model was trained with precision={precision!r}, which the "
            f"{backend.name} backend does not offer; it runs with precision='fp32'",
            UserWarning,
            stacklevel=4,
        )
        return "fp32"
    return precision


def _check_registered(meta: Meta, path: Path | str) -> None:
    """Every activation and the optimizer that checked ``meta`` names is registered in this
    process; else ``DataFileError`` saying which to register (a user's entry, registered in
    the process that saved the model, must be registered again before loading)."""
    from ..core.activations import ACTIVATIONS
    from ..core.optim import OPTIMIZERS

    wanted: list[tuple[str, Mapping[str, object], object, str]] = [
        ("activation", ACTIVATIONS, name, "register_activation") for name in meta["activations"]
    ]
    wanted.append(("optimizer", OPTIMIZERS, meta["optimizer"]["name"], "register_optimizer"))
    for family, registry, name, register in wanted:
        if name not in registry:
            raise DataFileError(
                f"{path}: the model uses the {family} {name!r}, which is not registered in this "
                f"process (registered: {', '.join(registry)}); register it first, with "
                f"xpmlp.{register}({name!r}, ...) as in the process that saved the model"
            )


# ---------------------------------------------------------------------- pickling
PICKLE_VERSION = 1


def pickle_state(model: MLP) -> dict[str, object]:
    """What ``MLP.__getstate__`` pickles: ``model_record``'s metadata and host arrays (copies),
    the backend's name and, on a GPU, its index."""
    meta, arrays = model_record(model)
    meta = json.loads(json.dumps(meta))  # an independent copy of the history and settings
    return {
        "xpmlp_pickle": PICKLE_VERSION,
        "meta": meta,
        "arrays": arrays,
        "backend": model.backend.name,
        "device": getattr(model.backend, "device_index", None),
    }


def unpickle_into(model: MLP, state: object, backend: Backend | None = None) -> None:
    """Make the blank ``model`` the one ``pickle_state`` described, on ``backend`` (default:
    ``backend_for_unpickling``)."""
    where = "the pickled MLP"
    version = state.get("xpmlp_pickle") if isinstance(state, dict) else None
    if not isinstance(state, dict) or version != PICKLE_VERSION:
        found = "no version" if version is None else f"version {version!r}"
        raise DataFileError(
            f"{where}: not the state of an xpmlp.MLP pickle of version "
            f"{PICKLE_VERSION} (found {found}); was it written by another "
            "xpmlp version?"
        )
    if backend is None:
        backend = backend_for_unpickling(state.get("backend"), state.get("device"))
    built = model_from_record(type(model), state["meta"], state["arrays"], where, backend)
    model.__dict__.update(built.__dict__)


def backend_for_unpickling(name: str | None, device: int | None) -> Backend:
    """The backend a pickled model comes back to: the one named by ``use_backend`` or
    ``XPMLP_BACKEND`` where either is set, else the one it was pickled on (``name``).

    A model pickled on ``cuda`` where CUDA cannot run raises ``BackendUnavailableError``
    saying so and how to unpickle it on the CPU instead.
    """
    from ..backends import get_backend, requested_backend_name, table

    requested = requested_backend_name()
    if requested is not None:
        return get_backend(requested)
    default = table.BY_NAME["numpy"]
    row = default if name is None else table.BY_PICKLE.get(name, default)
    if not row.selectable:  # the simulator's, the reference backend: a new one
        return row.factory(None)
    try:
        return get_backend(row.name, device=device)
    except ValueError:  # that device does not exist here: the backend's current one
        return get_backend(row.name)
    except BackendUnavailableError as exc:
        raise BackendUnavailableError(
            f"this MLP was pickled on backend {row.name!r} (device {device}), which cannot run "
            f"in this process: {exc} To unpickle it on the CPU, set XPMLP_BACKEND=numpy (or "
            "auto) in this process's environment before unpickling, or unpickle inside "
            "`with xpmlp.use_backend('numpy'):`; xpmlp.load_model(path, backend='numpy') "
            "does the same for a saved file"
        ) from exc
