"""What an estimator is given: host (NumPy, pandas, lists) or device (CuPy) arrays.

Host inputs go through scikit-learn's ``validate_data`` (its messages, feature names,
n_features_in_). A CuPy X stays on the device: it is checked there (shape, finiteness,
feature count) and never copied to the host. A SciPy sparse X (CSR or CSC; other formats
are converted to CSR) stays sparse on the host: ``SparseRows`` densifies the rows of one
batch or chunk at a time, on the host, and copies them to the backend, never the whole
matrix. An ``xpmlp.DeviceData`` was checked when it was made and is on the backend already:
it goes in as it is (its backend and dtype must be the network's).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy
from sklearn.utils.validation import _check_sample_weight, validate_data

from ..backends.device_data import DeviceData

if TYPE_CHECKING:  # numpy.typing only for the checker: importing it sets numpy.typing
    from numpy.typing import ArrayLike, DTypeLike

    from ..backends.base import Backend
    from ..core.aliases import Array, ArrayModule, DeviceObject, SparseMatrix
    from ..train.model import MLP
    from .base import BaseMLP, Features


def input_dtype(X: object) -> str:
    """The dtype parameters follow where ``dtype`` is not given: "float64" for float64
    input (a NumPy, SciPy sparse or CuPy array, or a pandas object whose columns are all
    float64), else "float32" (xpmlp's default: float32 arrays, integers, lists)."""
    dtype = getattr(X, "dtype", None)
    if dtype is None and hasattr(X, "dtypes"):  # a pandas DataFrame
        kinds = {str(d) for d in X.dtypes}
        return "float64" if kinds == {"float64"} else "float32"
    if dtype is None:  # a list, or another object without a dtype
        return "float32"
    try:
        return "float64" if numpy.dtype(dtype) == numpy.float64 else "float32"
    except TypeError:  # a dtype NumPy does not know (pandas' extension dtypes)
        return "float32"


def is_device_array(a: object) -> bool:
    """A CuPy array (checked by its type's module: CuPy need not be importable)."""
    return type(a).__module__.split(".", 1)[0] == "cupy"


def array_module(a: object) -> ArrayModule:
    """cupy for a CuPy array, else numpy (CuPy 14's arrays have no ``__array_namespace__``)."""
    if is_device_array(a):
        import cupy

        xp: ArrayModule = cupy
        return xp
    return numpy


def to_host(a: object) -> Array:
    """A CuPy array as NumPy (small arrays only: labels, weights); anything else as is (so
    ``Array``: whatever was given, NumPy for CuPy)."""
    device: DeviceObject = a
    return device.get() if is_device_array(a) else device


NO_Y = "no_validation"  # scikit-learn's marker: validate X alone


def targets_of(X: Features, y: ArrayLike | None) -> ArrayLike | None:
    """y, or the targets of an ``xpmlp.DeviceData`` X (which must not be given beside it)."""
    if not isinstance(X, DeviceData):
        return y
    if y is not None:
        raise ValueError(
            "X is an xpmlp.DeviceData, which holds its targets: pass y inside it "
            "(DeviceData(X, y, ...)), not beside it"
        )
    return X.y


def _check_features(est: BaseMLP, n: int, reset: bool) -> None:
    """n_features_in_ set (reset) or checked, for an X scikit-learn's validation skips."""
    if reset:
        est.n_features_in_ = n
        if hasattr(est, "feature_names_in_"):
            del est.feature_names_in_
    elif n != est.n_features_in_:
        raise ValueError(
            f"X has {n} features, but {type(est).__name__} is expecting "
            f"{est.n_features_in_} features as input."
        )


def check_X(
    est: BaseMLP, X: Features, reset: bool, y: ArrayLike | None = NO_Y, **options: object
) -> tuple[Array, Array]:
    """(X, y) validated: host X by ``validate_data``, device X in place (feature count set or
    checked against ``n_features_in_``). y (None is refused: fit needs it) is validated with
    a host X by ``validate_data``; with y left out (``NO_Y``) the y returned is None. An
    ``xpmlp.DeviceData`` X was checked when it was made: its array and y come back as they
    are (the feature count set or checked)."""
    if isinstance(X, DeviceData):
        _check_features(est, int(X.X.shape[1]), reset)
        return X.X, (None if isinstance(y, str) and y == NO_Y else y)
    if not is_device_array(X):
        options = {
            "dtype": (numpy.float64, numpy.float32),
            "accept_sparse": ["csr", "csc"],
            **options,
        }
        if isinstance(y, str) and y == NO_Y:
            return validate_data(est, X, reset=reset, **options), None
        checked: tuple[Array, Array] = validate_data(
            est, X, y, reset=reset, multi_output=True, **options
        )
        return checked
    if y is None:
        raise ValueError(f"{type(est).__name__} requires y to be passed, but the target y is None.")
    return _check_device_X(est, X, reset, y)


def _check_device_X(est: BaseMLP, X: Array, reset: bool, y: Array) -> tuple[Array, Array]:
    """``check_X`` of a CuPy X (y not None), on the device."""
    xp = __import__("cupy")
    if X.ndim != 2:
        raise ValueError(f"Expected 2D array, got {X.ndim}D array instead")
    if X.dtype.kind not in "fiub":
        raise ValueError(f"X has dtype {X.dtype}; expected a numeric CuPy array")
    if X.dtype.kind != "f":
        X = X.astype(numpy.float64)
    if X.shape[0] < 1:
        raise ValueError(
            f"Found array with 0 sample(s) (shape={X.shape}) while a minimum of 1 is required."
        )
    if not bool(xp.isfinite(X).all()):
        raise ValueError("Input X contains NaN or infinity.")
    _check_features(est, int(X.shape[1]), reset)
    if not isinstance(y, str):
        if y.shape[0] != X.shape[0]:
            raise ValueError(
                f"Found input variables with inconsistent numbers of samples: "
                f"[{X.shape[0]}, {y.shape[0]}]"
            )
    return X, y


#: scikit-learn's message for weights that training made non-finite (its tests match it).
NON_FINITE = (
    "Solver produced non-finite parameter weights. The input data may contain "
    "large values and need to be preprocessed."
)


def to_device(model: MLP, a: Array, name: str = "X") -> Array | SparseRows:
    """A validated array (``check_X``: finite) as a backend array in the model's dtype, which
    must hold its values (none may overflow to inf in float32): a dense array is copied to
    the backend (one pass on the device: the model's own ``to_device`` would check
    everything ``validate_data`` just checked again); a sparse one becomes ``SparseRows``."""
    rows: Array | SparseRows
    if is_sparse(a):
        rows = SparseRows(model.backend, a, model.dtype)
        finite = bool(numpy.isfinite(rows.matrix.data).all())
    else:
        rows = model.backend.asarray(a, dtype=model.dtype)
        finite = bool(model.backend.xp.isfinite(rows).all())
    if not finite:
        # scikit-learn's message first: its float64 fit of such data fails with it
        raise ValueError(
            f"{NON_FINITE} {name} holds values beyond the range of the model's "
            f"dtype {model.dtype.name}; rescale the data or use dtype='float64'"
        )
    return rows


def is_sparse(a: object) -> bool:
    """A SciPy sparse matrix or array (checked without importing SciPy)."""
    return type(a).__module__.split(".", 1)[0] == "scipy" and hasattr(a, "tocsr")


class SparseRows:
    """A host sparse X (CSR, in the model's dtype) that hands out dense backend arrays of
    some of its rows: the one place where sparse input is densified (on the host, then
    copied to the backend: a CuPy array on the CUDA backend).

    ``X[a:b]`` (the chunks of prediction, evaluation and lbfgs), ``rows(idx)`` (host
    indices) and ``take_rows(idx, out)`` (a shuffled mini-batch), ``subset(idx)`` (the
    early-stopping split, still sparse)."""

    def __init__(self, backend: Backend, matrix: SparseMatrix, dtype: DTypeLike) -> None:
        self.backend = backend
        self.matrix: SparseMatrix = matrix.tocsr().astype(dtype, copy=False)
        self.dtype: numpy.dtype[numpy.floating] = self.matrix.dtype
        self.shape: tuple[int, int] = self.matrix.shape

    def _dense(self, part: SparseMatrix) -> Array:
        return self.backend.asarray(part.toarray(), dtype=self.dtype)

    def __getitem__(self, rows: slice) -> Array:
        if not isinstance(rows, slice):
            raise TypeError(
                f"SparseRows takes a slice of rows; got {type(rows).__name__} (rows() for indices)"
            )
        return self._dense(self.matrix[rows])

    def rows(self, idx: numpy.ndarray) -> Array:
        """The rows idx (host indices), dense, on the backend."""
        return self._dense(self.matrix[idx])

    def take_rows(self, idx: Array, out: Array) -> None:
        """out[...] = the rows idx (indices on the backend or the host), dense: a mini-batch
        of ``xpmlp.train.loop.run_epoch``."""
        out[...] = self.rows(self.backend.to_numpy(idx))

    def subset(self, idx: numpy.ndarray) -> SparseRows:
        """The rows idx (host indices), still sparse."""
        return SparseRows(self.backend, self.matrix[idx], self.dtype)


def sample_weights(sample_weight: ArrayLike | None, X: Array) -> numpy.ndarray | None:
    """Host float64 weights (n,), checked as scikit-learn checks them, or None."""
    if sample_weight is None:
        return None
    sample_weight = to_host(sample_weight)
    n = X.shape[0]
    weights: numpy.ndarray = _check_sample_weight(
        sample_weight, numpy.empty((n, 0)), dtype=numpy.float64
    )
    return weights


def batch_sums(
    weights: numpy.ndarray | None,
    order: numpy.ndarray,
    batch_size: int,
) -> numpy.ndarray:
    """Per mini-batch of ``order``, its rows or (with weights) its weights' sum."""
    starts = numpy.arange(0, order.shape[0], batch_size)
    sums: numpy.ndarray
    if weights is None:
        sums = numpy.minimum(batch_size, order.shape[0] - starts).astype(numpy.float64)
    else:
        sums = numpy.add.reduceat(weights[order], starts)
    return sums
