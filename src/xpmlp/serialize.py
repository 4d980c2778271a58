"""Saving and loading trained models: an ``.npz`` of host arrays plus JSON metadata.

The file holds ``params`` (the flat parameter vector) and ``meta`` (a JSON
string: layer sizes, activations, loss, dtype, optimizer settings, version).
It is written to a temporary file beside the target and renamed into place,
so a crash never leaves half a model; it is read with ``allow_pickle=False``.
A model saved on one backend loads on any other.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy

from ._atomic import atomic_write
from ._version import __version__
from .errors import DataFileError

FORMAT = "xpmlp-model/1"


def save_model(model: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` to ``path`` (``.npz`` is appended if missing), atomically."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    meta = {
        "format": FORMAT,
        "xpmlp_version": __version__,
        "layer_sizes": model.layer_sizes,
        "activations": model.activations,
        "loss": model.loss,
        "dtype": model.dtype.name,
        "optimizer": model.optimizer.state_dict(),
        "trained_on": {"backend": model.backend.name, "device": model.backend.device},
        "history": model.history_,
    }
    params = model.backend.to_numpy(model.params)
    with atomic_write(path, "wb") as f:
        numpy.savez(f, params=params, meta=numpy.array(json.dumps(meta)))
    return path


def load_model(path: str | os.PathLike[str], *, backend: Any = None) -> Any:
    """Read a model written by ``save_model``, onto ``backend`` (default: the one in force)."""
    from .model import MLP

    path = Path(path)
    try:
        with numpy.load(path, allow_pickle=False) as data:
            params = data["params"]
            meta = json.loads(str(data["meta"]))
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise DataFileError(f"{path}: not a readable xpmlp model file ({exc})") from None
    if meta.get("format") != FORMAT:
        raise DataFileError(f"{path}: format is {meta.get('format')!r}; expected {FORMAT!r}")
    opt = dict(meta["optimizer"])
    name = opt.pop("name")
    model = MLP(
        meta["layer_sizes"],
        activation=meta["activations"][:-1],
        output_activation=meta["activations"][-1],
        loss=meta["loss"],
        optimizer=name,
        learning_rate=opt.get("learning_rate"),
        momentum=opt.get("momentum", 0.9) or 0.9,
        weight_decay=opt.get("weight_decay", 0.0),
        beta1=opt.get("beta1", 0.9),
        beta2=opt.get("beta2", 0.999),
        eps=opt.get("eps", 1e-8),
        dtype=meta["dtype"],
        backend=backend,
    )
    if params.shape != model.params.shape:
        raise DataFileError(
            f"{path}: holds {params.shape[0]} parameters; layer sizes {meta['layer_sizes']} "
            f"need {model.params.shape[0]}"
        )
    with model.backend.activate():
        model.params[...] = model.backend.asarray(params, dtype=model.dtype)
    model.history_ = list(meta.get("history", []))
    return model
