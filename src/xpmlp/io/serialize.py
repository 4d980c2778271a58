"""Saving and loading trained models: an ``.npz`` of host arrays plus JSON metadata.

The file holds the model's record (``xpmlp.train.record``): ``params`` (the flat parameter
vector), ``meta`` (a JSON string: the settings and the training state) and one member
``state.<name>`` per named state array (the optimizer's rows once it has taken a step, the
model's buffers). A saved model is a checkpoint: training resumed from it goes on as it
would have (``xpmlp.train.checkpoint``). The file is written to a temporary file beside the
target and renamed into place, so a crash never leaves half a model; it is read with
``allow_pickle=False``. A model saved on one backend loads on any other.

Loading checks the container here and the record in ``xpmlp.train.record`` before any model is
built: whatever is wrong with a file it raises ``DataFileError`` naming the file and the
defect; a missing file raises ``FileNotFoundError``.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy

from ..core.errors import DataFileError
from ..machine.atomic import atomic_write
from ..train.model import MLP
from ..train.record import STATE, model_from_record, model_record

if TYPE_CHECKING:
    from ..backends.base import Backend

# What reading a damaged archive can raise besides DataFileError (FileNotFoundError is let
# through before these are caught). zipfile raises RuntimeError for encrypted members and
# NotImplementedError for unknown compression methods; zlib and struct for garbled bytes.
_UNREADABLE = (
    OSError,
    ValueError,
    EOFError,
    KeyError,
    RuntimeError,
    NotImplementedError,
    zipfile.BadZipFile,
    zlib.error,
    struct.error,
)


def save_model(model: MLP, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` with its training state to ``path`` (``.npz`` is appended if missing),
    atomically."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    meta, arrays = model_record(model)
    with atomic_write(path, "wb") as f:
        # allow_pickle is numpy's default, named: else mypy matches **arrays against it
        numpy.savez(f, allow_pickle=True, meta=numpy.array(json.dumps(meta)), **arrays)
    return path


def load_model(path: str | os.PathLike[str], *, backend: str | Backend | None = None) -> MLP:
    """Read a model written by ``save_model``, onto ``backend`` (default: the one in force),
    with its training state: ``fit`` goes on from where it stopped.

    Raises ``FileNotFoundError`` if ``path`` does not exist and ``DataFileError`` (naming
    ``path`` and the defect) for any file that is not a well-formed xpmlp model.
    """
    from ..backends import get_backend

    path = Path(path)
    backend = get_backend(backend)  # a bad backend argument is not the file's fault
    meta, arrays = _read_archive(path)
    return model_from_record(MLP, meta, arrays, path, backend)


def _read_archive(path: Path) -> tuple[object, dict[str, numpy.ndarray]]:
    """The decoded JSON ``meta`` of the ``.npz`` at ``path`` and its arrays: ``params`` and
    the ``state.<name>`` members (other members are ignored).

    Only the container is checked here: an ``.npz`` archive holding ``params`` and ``meta``,
    ``meta`` a single string of valid JSON. Raises ``FileNotFoundError`` or ``DataFileError``.
    """
    try:
        loaded = numpy.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except _UNREADABLE as exc:
        raise DataFileError(f"{path}: not a readable xpmlp model file ({exc})") from None
    if not isinstance(loaded, numpy.lib.npyio.NpzFile):
        raise DataFileError(
            f"{path}: holds a single array (a .npy file, shape {getattr(loaded, 'shape', '?')}); "
            "expected an .npz archive with 'params' and 'meta'"
        )
    with loaded as data:
        missing = sorted({"params", "meta"} - set(data.files))
        if missing:
            raise DataFileError(
                f"{path}: the archive has no {missing} (it holds {sorted(data.files)}); "
                "expected 'params' and 'meta': not an xpmlp model file"
            )
        try:
            meta = data["meta"]
            arrays = {k: data[k] for k in data.files if k == "params" or k.startswith(STATE)}
        except _UNREADABLE as exc:
            raise DataFileError(f"{path}: not a readable xpmlp model file ({exc})") from None
    return _decoded_meta(meta, path), arrays


def _decoded_meta(meta: numpy.ndarray, path: Path | str) -> object:
    """The JSON value in ``meta``, a 0-d string array (``DataFileError`` otherwise)."""
    if meta.shape != () or meta.dtype.kind != "U":
        raise DataFileError(
            f"{path}: 'meta' is an array of dtype {meta.dtype} and shape {meta.shape}; "
            "expected a single string of JSON"
        )
    try:
        return json.loads(meta.item())
    except (ValueError, RecursionError) as exc:
        raise DataFileError(f"{path}: 'meta' is not valid JSON ({exc})") from None
