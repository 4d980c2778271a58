"""The type aliases of the public API, in one place.

``Array`` is ``Any`` because no honest static type exists for it: an array is a NumPy
``ndarray`` or a CuPy one, by the backend chosen at run time, and CuPy ships no type
information (``ignore_missing_imports`` makes it ``Any`` anyway). ``Record`` is an epoch's
history record: figures by name (floats, ints, and the odd string or None).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

#: a NumPy or CuPy array (see the module docstring)
Array = Any
#: a backend's random generator: numpy.random.Generator or CuPy's (untyped, as above)
Generator = Any
#: an epoch's record in a model's history
Record = dict[str, Any]
#: a JSON value (a schedule's description, a checkpoint's metadata)
JSON = dict[str, "JSON"] | list["JSON"] | str | int | float | bool | None
#: an array namespace, ``numpy`` or ``cupy`` (the backend's ``xp``)
ArrayModule = ModuleType
#: a function a kernel slot takes (a registry entry's formula, or the placeholder bound in its
#: slot): ``Callable[..., Any]``, as the signatures differ from slot to slot
KernelFunction = Callable[..., Any]
#: an object of a GPU library that ships no type information (a CuPy stream, pinned buffer or
#: module attribute; NCCL's communicator): ``Any``, as ``Array`` is
DeviceObject = Any
#: a Numba-compiled function (an ``@njit`` or ``@cuda.jit`` dispatcher): ``Any``, as Numba's
#: types describe neither its calls nor its attributes (``py_func``, ``[grid, block]``)
NumbaDispatcher = Any
