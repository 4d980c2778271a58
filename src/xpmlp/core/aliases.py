"""The type aliases of the public API, in one place.

``Untyped`` is the one unchecked alias; the others that stand for values no static type
describes are defined as it, each with its reason. ``Array``: an array is a NumPy
``ndarray`` or a CuPy one, by the backend chosen at run time, and CuPy ships no type
information (``ignore_missing_imports`` leaves it unchecked anyway). ``Record`` is an epoch's
history record: figures by name (floats, ints, and the odd string or None).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeAlias

#: a value mypy does not check (``typing.Any``): only the aliases below use it, each says why
Untyped: TypeAlias = Any
#: a NumPy or CuPy array (see the module docstring)
Array: TypeAlias = Untyped
#: a backend's random generator: numpy.random.Generator or CuPy's (untyped, as above)
Generator: TypeAlias = Untyped
#: an object of a GPU library that ships no type information (a CuPy stream, pinned buffer or
#: module attribute; NCCL's communicator), as ``Array`` is
DeviceObject: TypeAlias = Untyped
#: a SciPy sparse matrix or array (the estimators' sparse X), as SciPy ships no types
SparseMatrix: TypeAlias = Untyped
#: a Numba-compiled function (an ``@njit`` or ``@cuda.jit`` dispatcher), as Numba's types
#: describe neither its calls nor its attributes (``py_func``, ``[grid, block]``)
NumbaDispatcher: TypeAlias = Untyped
#: a value of decoded JSON (a report, a checkpoint's metadata, a worked-example file) that its
#: reader checks entry by entry before use, then reads as the type the check established
Decoded: TypeAlias = Untyped
#: an argument passed on unchanged to a library's function of many parameters (a subclass's
#: ``__init__`` forwarding argparse.ArgumentParser's), which checks it itself
PassedOn: TypeAlias = Untyped
#: an epoch's record in a model's history: its figures by name, each read as its own kind
Record: TypeAlias = dict[str, Untyped]
#: a JSON value (a schedule's description, a checkpoint's metadata)
JSON = dict[str, "JSON"] | list["JSON"] | str | int | float | bool | None
#: an array namespace, ``numpy`` or ``cupy`` (the backend's ``xp``)
ArrayModule = ModuleType
#: a function a kernel slot takes (a registry entry's formula, or the placeholder bound in its
#: slot): its signature and result differ from slot to slot, so they are left unchecked
KernelFunction: TypeAlias = Callable[..., Untyped]
