"""Export to ONNX: ``xpmlp.to_onnx(model)`` is an ``onnx.ModelProto`` computing ``predict_proba``.

    proto = xpmlp.to_onnx(model)                       # an MLP, or an estimator with mlp_
    onnx.save(proto, "model.onnx")
    onnxruntime.InferenceSession("model.onnx").run(None, {"X": X.astype("float32")})

The graph takes ``X`` (rows, n_0) and gives ``output`` (rows, n_L), in the model's dtype
(float32 or float64): per layer ``Z = MatMul(A, W^T) + b`` (W^T and b as initializers),
batch norm with the running estimates where the layer has it, and the activation's nodes
(dropout is a training-time operation: none in the graph). An estimator (any object whose
``mlp_`` is a fitted ``xpmlp.MLP``) that sets ``_onnx_binary_proba = True`` and whose MLP
has one sigmoid output gets the two columns [1 - p, p] of scikit-learn's ``predict_proba``.

``ONNX_ACTIVATIONS`` says, for every name of ``xpmlp.core.activations.ACTIVATIONS`` (and a few
that other activations may take), which ONNX nodes compute it, or why none can. onnx is
imported only when exporting: ``pip install -e '.[onnx]'`` in the checkout.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core.activations import LEAKY_SLOPE
from ..core.errors import NotFittedError, ParameterError, XpmlpError

if TYPE_CHECKING:
    from types import ModuleType

    import numpy
    from numpy.typing import ArrayLike
    from onnx import ModelProto, NodeProto, TensorProto

    from ..core.layers import BatchNorm
    from ..train.model import MLP

OPSET = 17  # Softmax over the last axis (opset 13 on), GreaterOrEqual (12 on)
IR_VERSION = 8  # the IR of opset 17, which onnxruntime 1.14 on reads
INPUT, OUTPUT = "X", "output"


class OnnxDependencyError(XpmlpError, ImportError):
    """The onnx package is needed and not installed."""


class OnnxExportError(XpmlpError, ValueError):
    """A model uses something ONNX cannot express (the message says what)."""


class _Graph:
    """Nodes and initializers of a graph being built, every value named once, in ``dtype``."""

    def __init__(self, onnx: ModuleType, dtype: numpy.dtype) -> None:
        import numpy

        self.onnx, self.dtype, self.float32 = onnx, dtype, numpy.dtype("float32")
        self.nodes: list[NodeProto] = []
        self.initializers: list[TensorProto] = []
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def constant(self, hint: str, value: ArrayLike) -> str:
        """An initializer holding ``value`` in the graph's dtype; its name."""
        import numpy

        name = self._name(hint)
        array = numpy.asarray(value, dtype=self.dtype)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, *inputs: str, output: str | None = None, **attributes: float) -> str:
        """One ``op`` node of ``inputs``; the name of its output."""
        output = output or self._name(op.lower())
        self.nodes.append(self.onnx.helper.make_node(op, list(inputs), [output], **attributes))
        return output


# ---------------------------------------------------------------------- the activations


def _gelu(g: _Graph, z: str) -> str:
    """z Phi(z) = 0.5 z (1 + erf(z / sqrt 2)). onnxruntime has no float64 Erf: a float64
    graph takes erf in float32 (GELU then within about 1e-7 |z| of the model's)."""
    u = g.node("Mul", z, g.constant("inv_sqrt2", 1 / math.sqrt(2.0)))
    if g.dtype.itemsize == 8:
        to = g.onnx.helper.np_dtype_to_tensor_dtype
        erf = g.node("Cast", g.node("Erf", g.node("Cast", u, to=to(g.float32))), to=to(g.dtype))
    else:
        erf = g.node("Erf", u)
    one_plus = g.node("Add", erf, g.constant("one", 1.0))
    return g.node("Mul", g.node("Mul", z, g.constant("half", 0.5)), one_plus)


def _hardlimit(g: _Graph, z: str) -> str:
    """1 if z >= 0 else 0, in the graph's dtype."""
    at_least_zero = g.node("GreaterOrEqual", z, g.constant("zero", 0.0))
    return g.node("Cast", at_least_zero, to=g.onnx.helper.np_dtype_to_tensor_dtype(g.dtype))


def _leaky_relu(g: _Graph, z: str) -> str:
    """z if z > 0 else slope z: Where and Mul, as ONNX's LeakyRelu holds its slope in float32
    (0.01 would be off by 2e-10 in a float64 graph)."""
    scaled = g.node("Mul", z, g.constant("slope", LEAKY_SLOPE))
    return g.node("Where", g.node("Greater", z, g.constant("zero", 0.0)), z, scaled)


def _silu(g: _Graph, z: str) -> str:
    return g.node("Mul", z, g.node("Sigmoid", z))


@dataclass(frozen=True)
class Refused:
    """An activation ONNX export cannot express, and why (for the error message)."""

    reason: str


#: registry name -> (graph, Z's name) -> A's name, or Refused. Every name of
#: ``xpmlp.core.activations.ACTIVATIONS`` must be here (tests/test_onnx_export.py checks it);
#: elu, selu, softplus and silu are here for activations of those names (PyTorch's defaults).
ONNX_ACTIVATIONS: dict[str, Callable[[_Graph, str], str] | Refused] = {
    "identity": lambda g, z: z,
    "sigmoid": lambda g, z: g.node("Sigmoid", z),
    "tanh": lambda g, z: g.node("Tanh", z),
    "relu": lambda g, z: g.node("Relu", z),
    "leaky_relu": _leaky_relu,
    "gelu": _gelu,
    "softmax": lambda g, z: g.node("Softmax", z, axis=-1),
    "exp": lambda g, z: g.node("Exp", z),
    "hardlimit": _hardlimit,
    "elu": lambda g, z: g.node("Elu", z, alpha=1.0),
    "selu": lambda g, z: g.node("Selu", z),
    "softplus": lambda g, z: g.node("Softplus", z),
    "silu": _silu,
}


# ---------------------------------------------------------------------- export


def _import_onnx() -> ModuleType:
    try:
        import onnx
    except ImportError as exc:
        raise OnnxDependencyError(
            f"exporting to ONNX needs the onnx package ({exc}); install it with "
            "pip install -e '.[onnx]' in the xpmlp checkout (or pip install 'onnx>=1.14')"
        ) from None
    return onnx


def _the_mlp(model: object) -> tuple[MLP, bool]:
    """The xpmlp.MLP of ``model`` (itself, or its ``mlp_``) and whether to give two
    probability columns for its single sigmoid output."""
    from ..train.model import MLP

    if isinstance(model, MLP):
        return model, False
    if not hasattr(model, "mlp_"):
        raise ParameterError(
            f"to_onnx got a {type(model).__name__}; expected an xpmlp.MLP or an estimator "
            "whose attribute mlp_ holds one (a fitted xpmlp estimator)"
        )
    mlp = model.mlp_
    if mlp is None:
        raise NotFittedError(f"this {type(model).__name__} is not fitted yet: call fit first")
    if not isinstance(mlp, MLP):
        raise ParameterError(
            f"{type(model).__name__}.mlp_ is a {type(mlp).__name__}; expected an xpmlp.MLP"
        )
    binary = (
        getattr(model, "_onnx_binary_proba", False) is True
        and mlp.n_outputs == 1
        and mlp.activations[-1] == "sigmoid"
    )
    return mlp, binary


def _batch_norm_inference(g: _Graph, mlp: MLP, norm: BatchNorm, l: int, Z: str) -> str:
    """gamma (Z - running_mean) / sqrt(running_var + eps) + beta, with the running estimates
    (batch norm at inference, as the model predicts): ``norm`` of layer ``l`` of ``mlp``."""
    import numpy

    from ..core.regularization import BN_EPS

    host = mlp.backend.to_numpy
    var = numpy.asarray(host(norm.running_var), dtype=g.dtype)
    inv_std = g.dtype.type(1.0) / numpy.sqrt(var + g.dtype.type(BN_EPS))
    centred = g.node("Sub", Z, g.constant(f"running_mean{l + 1}", host(norm.running_mean)))
    zhat = g.node("Mul", centred, g.constant(f"inv_std{l + 1}", inv_std))
    scaled = g.node("Mul", g.constant(f"gamma{l + 1}", host(norm.gamma)), zhat)
    return g.node("Add", scaled, g.constant(f"beta{l + 1}", host(norm.beta)))


def to_onnx(model: object, *, name: str = "xpmlp_mlp") -> ModelProto:
    """An ``onnx.ModelProto`` whose output is ``model``'s ``predict_proba`` (see the module
    docstring). ``OnnxExportError`` for an activation ONNX cannot express,
    ``OnnxDependencyError`` without the onnx package."""
    mlp, binary = _the_mlp(model)
    for l, act in enumerate(mlp.activations):
        entry = ONNX_ACTIVATIONS.get(act)
        if not callable(entry):
            why = entry.reason if isinstance(entry, Refused) else "it has no ONNX mapping"
            exportable = sorted(k for k, v in ONNX_ACTIVATIONS.items() if callable(v))
            raise OnnxExportError(
                f"layer {l + 1} uses activation {act!r}, which ONNX export cannot express: "
                f"{why}. Exportable: {', '.join(exportable)}"
            )
    onnx = _import_onnx()
    import numpy

    dtype = numpy.dtype(mlp.dtype.name)
    g = _Graph(onnx, dtype)
    A = INPUT
    for l, (W, b) in enumerate(mlp.get_weights()):
        Z = g.node(
            "Add", g.node("MatMul", A, g.constant(f"W{l + 1}_T", W.T)), g.constant(f"b{l + 1}", b)
        )
        norm = mlp.layers[l].norm
        if norm is not None:
            Z = _batch_norm_inference(g, mlp, norm, l, Z)
        A = ONNX_ACTIVATIONS[mlp.activations[l]](g, Z)  # type: ignore[operator]
    n_out = mlp.n_outputs
    if binary:
        A = g.node("Concat", g.node("Sub", g.constant("one", [[1.0]]), A), A, axis=1)
        n_out = 2
    g.node("Identity", A, output=OUTPUT)
    elem = onnx.helper.np_dtype_to_tensor_dtype(dtype)
    graph = onnx.helper.make_graph(
        g.nodes,
        name,
        [onnx.helper.make_tensor_value_info(INPUT, elem, ["rows", mlp.n_features])],
        [onnx.helper.make_tensor_value_info(OUTPUT, elem, ["rows", n_out])],
        g.initializers,
    )
    proto: ModelProto = onnx.helper.make_model(
        graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)], producer_name="xpmlp"
    )
    proto.ir_version = IR_VERSION
    from .._version import __version__

    proto.producer_version = __version__
    return proto
