"""``xpmlp explain``: the shipped worked examples, new ones computed here from the formulas,
deliberate mismatches and malformed files."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xpmlp import cli
from xpmlp.core.activations import ACTIVATIONS
from xpmlp.core.errors import WorkedExampleError
from xpmlp.core.losses import LOSSES
from xpmlp.teach.explain import parse_document, parse_file, trace

EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "examples" / "worked_examples.json"
SHIPPED = json.loads(EXAMPLES.read_text())

# Every list of names here comes from the registries.
HIDDEN = ACTIVATIONS.names(lambda a: a.hidden)  # may be a hidden layer's activation
OUTPUT_ONLY = ACTIVATIONS.names(lambda a: not a.hidden)  # softmax
FORWARD_ONLY = ACTIVATIONS.names(lambda a: not a.differentiable)  # hardlimit


@pytest.fixture
def xpmlp(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """``xpmlp explain ...`` through ``cli.main``; returns (exit status, stdout, stderr).

    Only the explain subcommand is registered, so these tests do not depend on the
    other subcommands' modules.
    """
    monkeypatch.setattr(cli, "SUBCOMMANDS", {"explain": cli.SUBCOMMANDS["explain"]})

    def call(*args: str) -> tuple[int, str, str]:
        status = cli.main(["explain", *args])
        out, err = capsys.readouterr()
        return status, out, err

    return call


def write(tmp_path: Path, doc: Any, name: str = "ex.json") -> str:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


# ---------------------------------------------------------------------------- the formulas
F = {
    "identity": lambda z: z,
    "linear": lambda z: z,
    "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0.0),
    "softmax": lambda z: np.exp(z) / np.exp(z).sum(axis=1, keepdims=True),
}
DF = {  # f'(z), elementwise
    "identity": lambda z: np.ones_like(z),
    "linear": lambda z: np.ones_like(z),
    "sigmoid": lambda z: F["sigmoid"](z) * (1.0 - F["sigmoid"](z)),
    "tanh": lambda z: 1.0 / np.cosh(z) ** 2,
    "relu": lambda z: (z > 0).astype(float),
}


def loss_and_dA(loss: str, Yhat: np.ndarray, Y: np.ndarray) -> tuple[float, np.ndarray]:
    """L of the batch mean and dL/dYhat, from the conventions' formulas."""
    m = Y.shape[0]
    if loss == "squared_error":
        return ((Y - Yhat) ** 2).sum() / m, 2.0 * (Yhat - Y) / m
    if loss == "half_squared_error":
        return ((Y - Yhat) ** 2).sum() / (2 * m), (Yhat - Y) / m
    if loss == "binary_cross_entropy":
        L = -(Y * np.log(Yhat) + (1 - Y) * np.log(1 - Yhat)).sum() / m
        return L, -(Y / Yhat - (1 - Y) / (1 - Yhat)) / m
    return -(Y * np.log(Yhat)).sum() / m, -(Y / Yhat) / m  # cross_entropy


def worked_example(x, layers, y, loss, lr) -> dict[str, Any]:
    """A worked example with every expected number computed here in plain float64 NumPy."""
    X, Y = np.array(x, float), np.array(y, float)
    Ws = [np.array(layer["W"], float) for layer in layers]
    bs = [np.array(layer["b"], float) for layer in layers]
    fs = [layer["activation"] for layer in layers]
    Z, A = [], [X]
    for W, b, f in zip(Ws, bs, fs, strict=True):
        Z.append(A[-1] @ W.T + b)
        A.append(F[f](Z[-1]))
    L, dA = loss_and_dA(loss, A[-1], Y)
    if fs[-1] == "softmax":  # dL/dz_j = sum_k dL/da_k a_k (delta_kj - a_j), per sample
        S = A[-1]
        delta = S * (dA - (dA * S).sum(axis=1, keepdims=True))
    else:
        delta = dA * DF[fs[-1]](Z[-1])
    deltas = [delta]
    for l in range(len(Ws) - 2, -1, -1):
        deltas.insert(0, (deltas[0] @ Ws[l + 1]) * DF[fs[l]](Z[l]))
    dW = [d.T @ a for d, a in zip(deltas, A[:-1], strict=True)]
    db = [d.sum(axis=0) for d in deltas]
    return {
        "name": f"{len(Ws)}-layer {'/'.join(fs)} with {loss}, m = {X.shape[0]}",
        "x": x,
        "y": y,
        "layers": layers,
        "loss": loss,
        "learning_rate": lr,
        "atol": 1e-10,
        "expect": {
            "z": [z.tolist() for z in Z],
            "a": [a.tolist() for a in A[1:]],
            "loss": float(L),
            "delta": [d.tolist() for d in deltas],
            "grad_W": [g.tolist() for g in dW],
            "grad_b": [g.tolist() for g in db],
            "W_after": [(W - lr * g).tolist() for W, g in zip(Ws, dW, strict=True)],
            "b_after": [(b - lr * g).tolist() for b, g in zip(bs, db, strict=True)],
        },
    }


def n_expected(example: dict[str, Any]) -> int:
    expect = example["expect"]
    return sum(np.size(v) if k == "loss" else sum(np.size(e) for e in v) for k, v in expect.items())


NEW_EXAMPLES = {
    "tanh+sigmoid, squared error, 3 samples": worked_example(
        x=[[0.5, -1.0], [1.5, 0.25], [-0.3, 0.8]],
        layers=[
            {
                "W": [[0.2, -0.4], [0.7, 0.1], [-0.5, 0.3]],
                "b": [0.1, -0.2, 0.05],
                "activation": "tanh",
            },
            {"W": [[0.6, -0.3, 0.9]], "b": [-0.1], "activation": "sigmoid"},
        ],
        y=[[1.0], [0.0], [0.5]],
        loss="squared_error",
        lr=0.5,
    ),
    "relu/linear/softmax, cross entropy, 2 samples": worked_example(
        x=[[1.0, 2.0, -1.0], [0.5, -0.5, 2.0]],
        layers=[
            {"W": [[0.3, 0.2, 0.1], [-0.2, 0.4, 0.5]], "b": [0.1, 0.2], "activation": "relu"},
            {"W": [[0.5, -0.6], [0.8, 0.2]], "b": [0.0, -0.1], "activation": "linear"},
            {
                "W": [[0.1, 0.2], [-0.3, 0.4], [0.5, -0.6]],
                "b": [0.01, 0.02, 0.03],
                "activation": "softmax",
            },
        ],
        y=[[0, 0, 1], [1, 0, 0]],
        loss="cross_entropy",
        lr=0.1,
    ),
    "sigmoid, binary cross entropy, 2 outputs, 4 samples": worked_example(
        x=[[0.1, 0.9], [0.8, 0.2], [0.5, 0.5], [-0.4, 0.3]],
        layers=[
            {
                "W": [[1.0, -1.0], [0.5, 0.5], [-0.7, 0.2]],
                "b": [0.0, 0.1, -0.1],
                "activation": "sigmoid",
            },
            {"W": [[0.3, -0.2, 0.6], [-0.5, 0.4, 0.1]], "b": [0.2, -0.3], "activation": "sigmoid"},
        ],
        y=[[1, 0], [0, 1], [1, 1], [0, 0]],
        loss="binary_cross_entropy",
        lr=1.0,
    ),
    "identity output, half squared error": worked_example(
        x=[[2.0, -1.0], [0.0, 3.0]],
        layers=[{"W": [[0.5, 0.25], [-1.0, 0.75]], "b": [1.0, -2.0], "activation": "identity"}],
        y=[[1.0, 2.0], [-1.0, 0.5]],
        loss="half_squared_error",
        lr=0.2,
    ),
}


def document(*examples: dict[str, Any]) -> dict[str, Any]:
    return {"format": "worked-backprop-example/1", "examples": list(examples)}


# ---------------------------------------------------------------------------- passing checks
def test_shipped_examples_pass_check(xpmlp) -> None:
    status, out, err = xpmlp(str(EXAMPLES), "--check", "--backend", "numpy")
    assert status == 0, out + err
    lines = [line.strip() for line in out.splitlines()]
    # 4 expected numbers in example 0 (z and a of two 1-unit layers); examples 1 and 2 in full
    assert "ok: 4 numbers within atol 1e-09" in lines
    assert f"ok: {n_expected(SHIPPED['examples'][1])} numbers within atol 1e-09" in lines
    assert f"ok: {n_expected(SHIPPED['examples'][2])} numbers within atol 1e-09" in lines
    assert "FAILED" not in out and "mismatch" not in out


def test_shipped_examples_pass_in_float32_with_looser_atol(xpmlp) -> None:
    status, out, err = xpmlp(str(EXAMPLES), "--check", "--dtype", "float32", "--backend", "numpy")
    assert status == 0, out + err
    assert out.count("numbers within atol 1e-05") == len(SHIPPED["examples"])
    assert "float32 on numpy" in out


@pytest.mark.parametrize("name", NEW_EXAMPLES)
def test_new_examples_computed_from_the_formulas_pass(xpmlp, tmp_path: Path, name: str) -> None:
    example = NEW_EXAMPLES[name]
    status, out, err = xpmlp(write(tmp_path, document(example)), "--check", "--backend", "numpy")
    assert status == 0, out + err
    assert f"ok: {n_expected(example)} numbers within atol 1e-10" in out
    status, out, err = xpmlp(
        write(tmp_path, document(example)), "--check", "--backend", "numpy", "--dtype", "float32"
    )
    assert status == 0, out + err


def test_new_examples_fail_when_the_formula_is_wrong(xpmlp, tmp_path: Path) -> None:
    """The cross-entropy gradient without the 1/m of the batch mean must be caught."""
    example = copy.deepcopy(NEW_EXAMPLES["relu/linear/softmax, cross entropy, 2 samples"])
    example["expect"]["grad_b"][2] = [2 * v for v in example["expect"]["grad_b"][2]]
    status, out, _ = xpmlp(write(tmp_path, document(example)), "--check", "--backend", "numpy")
    assert status == 1
    assert out.count("mismatch: examples[0].expect.grad_b[2]") == 3


def test_output_labels_every_layer(xpmlp) -> None:
    status, out, _ = xpmlp(str(EXAMPLES), "--example", "1", "--backend", "numpy")
    assert status == 0
    for l in (1, 2, 3):
        for label in (
            f"W[{l}]",
            f"b[{l}]",
            f"Z[{l}] =",
            f"A[{l}] =",
            f"delta[{l}] =",
            f"dW[{l}] (grad_W)",
            f"db[{l}] (grad_b)",
            f"W[{l}] <- W[{l}] - 0.1 dW[{l}]",
            f"b[{l}] <- b[{l}] - 0.1 db[{l}]",
        ):
            assert label in out, label
    assert "A[3] = sigmoid(Z[3])" in out and "relu'(Z[2])" in out
    assert "0.815928" in out  # yhat, to 6 significant digits
    assert "ok:" not in out  # no --check, no comparison


def test_forward_only_example_and_hardlimit(xpmlp, tmp_path: Path) -> None:
    example = {
        "x": [[0.5, -1.0], [2.0, 1.0]],
        "layers": [{"W": [[1.0, 1.0]], "b": [-0.25], "activation": "hardlimit"}],
        "expect": {"z": [[[-0.75], [2.75]]], "a": [[[0.0], [1.0]]]},
    }
    status, out, err = xpmlp(write(tmp_path, document(example)), "--check", "--backend", "numpy")
    assert status == 0, out + err
    assert "ok: 4 numbers" in out and "delta[" not in out


def test_select_example_by_name(xpmlp) -> None:
    status, out, _ = xpmlp(
        str(EXAMPLES), "--example", "squared error", "--check", "--backend", "numpy"
    )
    assert status == 0
    assert "examples[2]" in out and "examples[1]" not in out
    status, _, err = xpmlp(str(EXAMPLES), "--example", "no such example")
    assert status == 2 and "--example 'no such example' matches no example" in err


def test_plan_prints_the_step_as_data_and_the_fused_step_generated_from_it(xpmlp) -> None:
    from xpmlp.kernels import fused_cpu

    status, out, _ = xpmlp(str(EXAMPLES), "--example", "1", "--plan", "--backend", "numpy")
    assert status == 0
    assert "the training step as data (model.step_plan):" in out
    assert "  forward 0 (relu, plain)\n  forward 1 (relu, plain)\n  output 2 (sigmoid" in out
    assert "  update (sgd_rule, 1 hyperparameter)" in out
    # the printed source is the generated step's, op by op, with the notes' formulas
    assert "def train_step(" in out and "backward_0(deltas[0]" in out
    assert f"# gather: {fused_cpu.OP_MATH['gather', '']}" in out
    status, plain, _ = xpmlp(str(EXAMPLES), "--example", "1", "--backend", "numpy")
    assert status == 0 and "model.step_plan" not in plain  # only when asked for


# ---------------------------------------------------------------------------- mismatches
def test_perturbed_expected_value_exits_1_and_names_the_field(xpmlp, tmp_path: Path) -> None:
    doc = copy.deepcopy(SHIPPED)
    doc["examples"][1]["expect"]["grad_W"][1][0][1] += 1e-6
    status, out, _ = xpmlp(write(tmp_path, doc), "--check", "--backend", "numpy")
    assert status == 1
    (line,) = [s for s in out.splitlines() if "mismatch" in s]
    assert "examples[1].expect.grad_W[1][0][1]" in line
    assert "grad_W, layer 2, index (0, 1)" in line
    assert "computed -0.09939880947017309" in line
    assert f"FAILED: 1 of {n_expected(doc['examples'][1])} numbers" in out
    assert f"1 of {len(SHIPPED['examples'])} examples failed" in out


def test_perturbed_loss_is_reported(xpmlp, tmp_path: Path) -> None:
    doc = copy.deepcopy(SHIPPED)
    doc["examples"][2]["expect"]["loss"] = 15.0
    status, out, _ = xpmlp(write(tmp_path, doc), "--check", "--backend", "numpy")
    assert status == 1
    assert "examples[2].expect.loss (loss): expected 15.0, computed 16.0" in out


# ---------------------------------------------------------------------------- malformed files
def shipped_with(change) -> dict[str, Any]:
    doc = copy.deepcopy(SHIPPED)
    change(doc)
    return doc


def _set(path: tuple, value: Any):
    def change(doc: dict[str, Any]) -> None:
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def _delete(path: tuple):
    def change(doc: dict[str, Any]) -> None:
        target = doc
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return change


MALFORMED = {
    "not JSON": ('{"format": "worked-backprop-example/1", "examples": [', "not valid JSON"),
    "wrong format": (
        shipped_with(_set(("format",), "worked-backprop-example/2")),
        "format: expected 'worked-backprop-example/1', got a string",
    ),
    "no examples": (document(), "examples: expected a non-empty list"),
    "missing x": (shipped_with(_delete(("examples", 1, "x"))), "examples[1].x: missing"),
    "W columns": (
        shipped_with(_set(("examples", 1, "layers", 0, "W"), [[1, 2, 3], [4, 5, 6]])),
        "examples[1].layers[0].W: expected a 2-D list of numbers with 2 columns (the previous "
        "layer's width), got 3",
    ),
    "W columns between hidden layers": (
        shipped_with(_set(("examples", 1, "layers", 2, "W"), [[0.9, 1.0, 1.1]])),
        "examples[1].layers[2].W: expected a 2-D list of numbers with 2 columns",
    ),
    "ragged W": (
        shipped_with(_set(("examples", 2, "layers", 0, "W"), [[1, 1], [1]])),
        "examples[2].layers[0].W: expected a rectangular 2-D list",
    ),
    "b length": (
        shipped_with(_set(("examples", 0, "layers", 0, "b"), [0.05, 0.1])),
        "examples[0].layers[0].b: expected a list of 1 numbers (one per row of W), got 2",
    ),
    "unknown activation": (
        shipped_with(_set(("examples", 0, "layers", 1, "activation"), "swish")),
        'examples[0].layers[1].activation: unknown activation "swish"; expected one of '
        f"{', '.join(ACTIVATIONS.names())} (linear is another name for identity)",
    ),
    **{
        f"{name} in a hidden layer": (
            shipped_with(_set(("examples", 1, "layers", 0, "activation"), name)),
            f"examples[1].layers[0].activation: {name} is for the output layer only",
        )
        for name in OUTPUT_ONLY
    },
    "unknown loss": (
        shipped_with(_set(("examples", 1, "loss"), "hinge")),
        f'examples[1].loss: unknown loss "hinge"; expected one of {", ".join(LOSSES.names())}',
    ),
    "softmax without cross entropy": (
        shipped_with(_set(("examples", 2, "layers", 1, "activation"), "softmax")),
        "examples[2].loss: 'squared_error' after a 'softmax' output layer (layers[1]) is not "
        "supported: output_activation='softmax' is not valid",
    ),
    "binary cross entropy without sigmoid": (
        shipped_with(_set(("examples", 1, "layers", 2, "activation"), "identity")),
        "examples[1].loss: 'binary_cross_entropy' after a 'identity' output layer (layers[2]) "
        "is not supported: output_activation='identity' is not valid (loss='binary_cross_entropy' "
        "pairs with sigmoid); expected one of 'sigmoid'",
    ),
    **{
        f"{name} with a loss": (
            shipped_with(_set(("examples", 2, "layers", 0, "activation"), name)),
            f"examples[2].layers[0].activation: {name!r} is forward-only",
        )
        for name in FORWARD_ONLY
    },
    "non-numeric x": (
        shipped_with(_set(("examples", 0, "x"), [[0.5, "1.0"]])),
        'examples[0].x[0][1]: expected a finite number, got a string "1.0"',
    ),
    "boolean weight": (
        shipped_with(_set(("examples", 2, "layers", 1, "b"), [True])),
        "examples[2].layers[1].b[0]: expected a finite number, got a boolean",
    ),
    "y shape": (
        shipped_with(_set(("examples", 1, "y"), [[1.0, 0.0]])),
        "examples[1].y: expected shape (1, 1) (one row per sample of x, one column per "
        "unit of the last layer), got (1, 2)",
    ),
    "loss without y": (
        shipped_with(_delete(("examples", 1, "y"))),
        "examples[1].y: missing, but the example has loss 'binary_cross_entropy'",
    ),
    "learning rate": (
        shipped_with(_set(("examples", 2, "learning_rate"), "fast")),
        "examples[2].learning_rate: expected a positive number",
    ),
    "expect shape": (
        shipped_with(_set(("examples", 1, "expect", "grad_W", 2), [[1.0], [2.0]])),
        "examples[1].expect.grad_W[2]: expected shape (1, 2) for layer 3, got (2, 1)",
    ),
    "expect layer count": (
        shipped_with(_set(("examples", 0, "expect", "z"), [[[0.4]]])),
        "examples[0].expect.z: expected a list with one entry per layer (2)",
    ),
    "backward expectations without a loss": (
        shipped_with(_set(("examples", 0, "expect", "loss"), 0.5)),
        "examples[0].expect.loss: given, but the example has no loss",
    ),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_file_exits_2_naming_the_field(xpmlp, tmp_path: Path, case: str) -> None:
    doc, message = MALFORMED[case]
    path = write(tmp_path, doc)
    with pytest.raises(WorkedExampleError) as info:
        parse_file(path)
    assert message in str(info.value)
    status, out, err = xpmlp(path, "--check")
    assert status == 2
    assert err.startswith("xpmlp explain: error: ") and message in err
    assert out == ""


def test_missing_file_exits_2(xpmlp, tmp_path: Path) -> None:
    status, _, err = xpmlp(str(tmp_path / "nope.json"))
    assert status == 2 and "nope.json: cannot read the file" in err


# ---------------------------------------------------------------------------- the registries
def names_listed(message: str) -> tuple[str, ...]:
    """The names after "expected one of " in an error message (up to " (" or " in ...")."""
    match = re.search(r"expected one of (\w+(?:, \w+)*)", message)
    assert match, message
    return tuple(match.group(1).split(", "))


X = [[0.5, -1.0], [1.5, 0.25], [-0.3, 0.8]]  # with W1, b1: every Z[1] at least 0.05 from 0
W1, B1 = [[0.2, -0.4], [0.7, 0.1], [-0.5, 0.3]], [0.1, -0.2, 0.05]
W2, B2 = [[0.6, -0.3, 0.9]], [-0.1]
Y = [[1.0], [0.0], [0.5]]


def hidden_layer_example(activation: str) -> dict[str, Any]:
    """x -> 3 units of ``activation`` -> 1 identity unit; with half_squared_error, y and a
    learning rate where backpropagation can go through the activation, else forward only."""
    example: dict[str, Any] = {
        "name": f"{activation} hidden layer",
        "x": X,
        "layers": [
            {"W": W1, "b": B1, "activation": activation},
            {"W": W2, "b": B2, "activation": "identity"},
        ],
    }
    if ACTIVATIONS[activation].differentiable:
        example |= {"loss": "half_squared_error", "y": Y, "learning_rate": 0.1}
    return example


def half_squared_error(activation: str, W: np.ndarray, b: np.ndarray) -> float:
    """The example's loss as a function of layer 1's W and b, from the registry's reference
    formula of the activation (the derivative is not used: the test differentiates this)."""
    A1 = ACTIVATIONS[activation].array(np, np.array(X) @ W.T + b)
    A2 = A1 @ np.array(W2).T + np.array(B2)
    return float(((A2 - np.array(Y)) ** 2).sum() / (2 * len(X)))


def finite_differences(f, p: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar f at every entry of p."""
    grad = np.zeros_like(p)
    for idx in np.ndindex(p.shape):
        up, down = p.copy(), p.copy()
        up[idx] += eps
        down[idx] -= eps
        grad[idx] = (f(up) - f(down)) / (2 * eps)
    return grad


def test_the_new_activations_may_be_in_a_hidden_layer() -> None:
    assert {"gelu", "leaky_relu"} <= set(HIDDEN)


@pytest.mark.parametrize("activation", HIDDEN)
def test_every_hidden_activation_of_the_registry_is_parsed_and_traced(activation: str) -> None:
    (example,) = parse_document(document(hidden_layer_example(activation)))
    assert example.layers[0].activation == activation
    result = trace(example, "numpy")
    W, b = np.array(W1), np.array(B1)
    Z1 = np.array(X) @ W.T + b
    np.testing.assert_allclose(result.z[0], Z1, rtol=0, atol=1e-12)
    np.testing.assert_allclose(result.a[0], ACTIVATIONS[activation].array(np, Z1), atol=1e-12)
    if not example.trains:  # forward-only (hardlimit): no loss, no backward pass
        assert result.delta is None and result.grad_W is None
        return
    assert result.loss == pytest.approx(half_squared_error(activation, W, b), abs=1e-12)
    dW = finite_differences(lambda p: half_squared_error(activation, p, b), W)
    db = finite_differences(lambda p: half_squared_error(activation, W, p), b)
    np.testing.assert_allclose(result.grad_W[0], dW, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(result.grad_b[0], db, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(result.W_after[0], W - 0.1 * result.grad_W[0], atol=1e-12)


@pytest.mark.parametrize("layer", [0, 1])
def test_an_activation_not_in_the_registry_lists_exactly_its_names(layer: int) -> None:
    raw = hidden_layer_example("tanh")
    raw["layers"][layer]["activation"] = "swish"
    with pytest.raises(WorkedExampleError) as info:
        parse_document(document(raw))
    message = str(info.value)
    assert message.startswith(
        f'examples[0].layers[{layer}].activation: unknown activation "swish"; expected one of '
    )
    assert names_listed(message) == ACTIVATIONS.names()
    assert "(linear is another name for identity)" in message


def test_a_loss_not_in_the_registry_lists_exactly_its_names() -> None:
    raw = hidden_layer_example("tanh") | {"loss": "hinge"}
    with pytest.raises(WorkedExampleError, match=r"examples\[0\]\.loss: unknown loss") as info:
        parse_document(document(raw))
    assert names_listed(str(info.value)) == LOSSES.names()


@pytest.mark.parametrize("activation", OUTPUT_ONLY)
def test_an_output_only_activation_in_a_hidden_layer_lists_the_hidden_ones(activation: str) -> None:
    raw = hidden_layer_example("tanh")
    raw["layers"][0]["activation"] = activation
    with pytest.raises(WorkedExampleError, match="is for the output layer only") as info:
        parse_document(document(raw))
    assert names_listed(str(info.value)) == HIDDEN


@pytest.mark.parametrize("loss", LOSSES.names())
@pytest.mark.parametrize("output", ACTIVATIONS.names(lambda a: a.output))
def test_a_loss_is_accepted_after_exactly_the_outputs_it_pairs_with(loss: str, output: str) -> None:
    """The parser follows losses.check_pairing and the differentiable flag, and every pair it
    accepts can be traced."""
    raw = {
        "x": [[0.5, -1.0]],
        "y": [[0.25, 0.75]],
        "loss": loss,
        "learning_rate": 0.5,
        "layers": [{"W": [[0.3, 0.1], [-0.2, 0.4]], "b": [0.0, 0.1], "activation": output}],
    }
    entry = ACTIVATIONS[output]
    if not LOSSES[loss].pairs_with(entry):
        with pytest.raises(WorkedExampleError, match=r"examples\[0\]\.loss: .* is not supported"):
            parse_document(document(raw))
    elif not entry.differentiable:
        with pytest.raises(WorkedExampleError, match="is forward-only"):
            parse_document(document(raw))
    else:
        (example,) = parse_document(document(raw))
        result = trace(example, "numpy")
        assert result.loss is not None and np.isfinite(result.loss)
        assert result.W_after is not None


def test_a_setting_the_model_refuses_names_the_example(xpmlp, tmp_path: Path) -> None:
    """Softmax over one output unit parses (a forward pass is defined) but MLP refuses it."""
    raw = {"x": [[1.0]], "layers": [{"W": [[2.0]], "b": [0.0], "activation": "softmax"}]}
    status, out, err = xpmlp(write(tmp_path, document(raw)), "--backend", "numpy")
    assert status == 2 and out == ""
    assert err.startswith("xpmlp explain: error: examples[0]: softmax over one output unit")


# ---------------------------------------------------------------------------- perceptron examples
PERCEPTRON = next(e for e in SHIPPED["examples"] if e.get("kind") == "perceptron")
PERCEPTRON_INDEX = SHIPPED["examples"].index(PERCEPTRON)


def rule_by_hand(
    x: list, y: list, W: list, b: list, eta: float, max_epochs: int
) -> tuple[list[dict[str, Any]], int, bool]:
    """The perceptron learning rule in plain Python (no NumPy, no xpmlp): the updates as the
    file format writes them, the epochs run and whether the last one had no error."""
    W, b = [list(map(float, row)) for row in W], list(map(float, b))
    labels = [row if isinstance(row, list) else [row] for row in y]
    updates = []
    for epoch in range(1, max_epochs + 1):
        errors = 0
        for i, (xi, yi) in enumerate(zip(x, labels, strict=True)):
            n = [
                sum(w * v for w, v in zip(row, xi, strict=True)) + bk
                for row, bk in zip(W, b, strict=True)
            ]
            a = [1.0 if nk >= 0 else 0.0 for nk in n]
            e = [t - ak for t, ak in zip(yi, a, strict=True)]
            W = [
                [w + eta * ek * v for w, v in zip(row, xi, strict=True)]
                for row, ek in zip(W, e, strict=True)
            ]
            b = [bk + eta * ek for bk, ek in zip(b, e, strict=True)]
            errors += any(e)
            one = len(a) == 1 and not isinstance(y[0], list)
            updates.append(
                {
                    "epoch": epoch,
                    "sample": i,
                    "n": n[0] if one else n,
                    "a": a[0] if one else a,
                    "error": e[0] if one else e,
                    "W": [list(row) for row in W],
                    "b": list(b),
                }
            )
        if not errors:
            return updates, epoch, True
    return updates, max_epochs, False


def perceptron_example(x, y, W, b, eta=1.0, max_epochs=10, **extra) -> dict[str, Any]:
    updates, n_iter, converged = rule_by_hand(x, y, W, b, eta, max_epochs)
    return {
        "kind": "perceptron",
        "name": "a perceptron",
        "x": x,
        "y": y,
        "W": W,
        "b": b,
        "learning_rate": eta,
        "max_epochs": max_epochs,
        "expect": {
            "updates": updates,
            "n_iter": n_iter,
            "converged": converged,
            "W": updates[-1]["W"],
            "b": updates[-1]["b"],
        },
        **extra,
    }


def n_expected_perceptron(example: dict[str, Any]) -> int:
    expect = example["expect"]
    per_update = sum(int(np.size(v)) for u in expect["updates"] for v in u.values())
    return per_update + 2 + int(np.size(expect["W"])) + int(np.size(expect["b"]))


def test_the_shipped_perceptron_example_is_the_rule_worked_by_hand() -> None:
    """Its expected updates are what the rule gives, computed here without xpmlp."""
    updates, n_iter, converged = rule_by_hand(
        PERCEPTRON["x"],
        PERCEPTRON["y"],
        PERCEPTRON["W"],
        PERCEPTRON["b"],
        PERCEPTRON["learning_rate"],
        PERCEPTRON["max_epochs"],
    )
    assert PERCEPTRON["y"] == [0, 0, 0, 1]  # AND
    assert PERCEPTRON["expect"]["updates"] == updates
    assert (PERCEPTRON["expect"]["n_iter"], PERCEPTRON["expect"]["converged"]) == (6, True)
    assert converged and n_iter == 6


def test_the_shipped_perceptron_example_passes_check_and_prints_every_update(xpmlp) -> None:
    status, out, err = xpmlp(
        str(EXAMPLES), "--check", "--backend", "numpy", "--example", "perceptron"
    )
    assert status == 0, out + err
    assert f"examples[{PERCEPTRON_INDEX}]: perceptron learning AND" in out
    assert "perceptron 2 -> 1 unit (hardlimit), m = 4, learning rate 1, at most 10 epochs" in out
    assert "n = W x + b, a = hardlimit(n) = 1 if n >= 0 else 0" in out
    table = [line.split() for line in out.splitlines() if re.match(r"\s+\d+\s+\d+\s+\[", line)]
    assert len(table) == 24  # 6 epochs of 4 samples
    assert table[1][-2:] == ["(no", "change)"]
    assert table[3] == ["1", "3", "[1", "1]", "1", "-1", "0", "1", "[1", "1]", "0"]
    assert "epoch 5: 1 of 4 samples misclassified" in out
    assert "converged: epoch 6 made no error, so training stops (n_iter = 6)" in out
    assert f"ok: {n_expected_perceptron(PERCEPTRON)} numbers within atol 1e-09" in out


def test_a_wrong_expected_update_is_reported_with_its_epoch_and_sample(
    xpmlp, tmp_path: Path
) -> None:
    doc = copy.deepcopy(SHIPPED)
    example = doc["examples"][PERCEPTRON_INDEX]
    example["expect"]["updates"][5]["W"][0][1] = 1  # epoch 2, sample 1: W is [[1, 0]]
    example["expect"]["n_iter"] = 5
    status, out, _ = xpmlp(write(tmp_path, doc), "--check", "--backend", "numpy")
    assert status == 1
    where = f"examples[{PERCEPTRON_INDEX}].expect"
    assert (
        f"mismatch: {where}.updates[5].W[0][1] (epoch 2, sample 1): expected 1.0, computed "
        "0.0, |difference| 1 > atol 1e-09"
    ) in out
    assert f"mismatch: {where}.n_iter (epochs run): expected 5, computed 6" in out
    assert f"FAILED: 2 of {n_expected_perceptron(example)} numbers" in out


def test_a_missing_update_is_reported(xpmlp, tmp_path: Path) -> None:
    example = perceptron_example([[0, 0], [0, 1], [1, 0], [1, 1]], [0, 1, 1, 1], [[0, 0]], [0])
    del example["expect"]["updates"][-1]
    status, out, _ = xpmlp(write(tmp_path, document(example)), "--check", "--backend", "numpy")
    assert status == 1
    assert (
        "examples[0].expect.updates (number of presentations of a sample): expected 15, computed 16"
    ) in out


def test_xor_in_a_perceptron_example_is_reported_as_not_separable(xpmlp, tmp_path: Path) -> None:
    example = perceptron_example(
        [[0, 0], [0, 1], [1, 0], [1, 1]], [0, 1, 1, 0], [[0, 0]], [0], max_epochs=20
    )
    example["expect"] = {"n_iter": 3, "converged": False, "W": [[-1, 0]], "b": [0]}
    status, out, err = xpmlp(write(tmp_path, document(example)), "--check", "--backend", "numpy")
    assert status == 0, out + err
    assert "not converged after 3 epoch(s): the perceptron did not converge" in out
    assert "not linearly separable" in out and "ok: 5 numbers" in out


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_perceptron_examples_computed_by_hand_pass(xpmlp, tmp_path: Path, dtype: str) -> None:
    """Real-valued inputs, eta 0.5, a start away from zero, and two output units (y rows)."""
    examples = [
        perceptron_example(
            [[0.5, -1.0], [1.5, 0.25], [-0.3, 0.8], [2.0, 1.0]],
            [0, 1, 0, 1],
            [[0.2, -0.4]],
            [0.1],
            eta=0.5,
            max_epochs=50,
        ),
        perceptron_example(
            [[0, 0], [0, 1], [1, 0], [1, 1]],
            [[0, 0], [0, 1], [0, 1], [1, 1]],
            [[0, 0], [0, 0]],
            [0, 0],
        ),
    ]
    status, out, err = xpmlp(
        write(tmp_path, document(*examples)), "--check", "--backend", "numpy", "--dtype", dtype
    )
    assert status == 0, out + err
    assert "perceptron 2 -> 2 units" in out and "[2 1; 1 1]" in out
    for example in examples:
        assert example["expect"]["converged"]
        assert f"ok: {n_expected_perceptron(example)} numbers" in out


def test_an_unknown_update_field_is_noted(xpmlp, tmp_path: Path) -> None:
    example = perceptron_example([[0, 0], [1, 1]], [0, 1], [[0, 0]], [0])
    example["expect"]["updates"][0]["theta"] = [0, 0, 0]
    example["expect"]["margin"] = 1
    status, out, _ = xpmlp(write(tmp_path, document(example)), "--check", "--backend", "numpy")
    assert status == 0
    assert "note: examples[0].expect.updates[0].theta is not a known field" in out
    assert "note: examples[0].expect.margin is not a known field" in out


def test_a_perceptron_example_takes_its_defaults() -> None:
    (example,) = parse_document(document({"kind": "perceptron", "x": [[1.0], [-1.0]], "y": [1, 0]}))
    assert example.learning_rate == 1.0 and example.max_epochs == 100
    np.testing.assert_array_equal(example.W, [[0.0]])
    np.testing.assert_array_equal(example.b, [0.0])


def with_perceptron(change) -> dict[str, Any]:
    doc = copy.deepcopy(SHIPPED)
    change(doc["examples"][PERCEPTRON_INDEX])
    return doc


def _set_in(*path_and_value: Any):
    """Set the value (the last argument) at the path of keys before it."""
    path, value = path_and_value[:-1], path_and_value[-1]

    def change(example: dict[str, Any]) -> None:
        target = example
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


P = f"examples[{PERCEPTRON_INDEX}]"
MALFORMED_PERCEPTRON = {
    "unknown kind": (
        _set_in("kind", "adaline"),
        f"{P}.kind: expected one of 'mlp', 'perceptron' (\"mlp\" when absent), "
        'got a string "adaline"',
    ),
    "label 2": (
        _set_in("y", [0, 0, 2, 1]),
        f"{P}.y[2]: expected a label 0 or 1 (the hard-limit output's values), got 2",
    ),
    "too few labels": (
        _set_in("y", [0, 0, 1]),
        f"{P}.y: expected 4 labels (one per sample of x), got 3",
    ),
    "missing y": (lambda e: e.pop("y"), f"{P}.y: missing; a perceptron example needs x"),
    "W shape": (
        _set_in("W", [[0, 0, 0]]),
        f"{P}.W: expected shape (1, 2) (one row per output unit, one column per input), got (1, 3)",
    ),
    "b length": (_set_in("b", [0, 0]), f"{P}.b: expected shape (1,)"),
    "max_epochs": (_set_in("max_epochs", 0), f"{P}.max_epochs: expected an integer >= 1, got 0"),
    "fractional max_epochs": (
        _set_in("max_epochs", 2.5),
        f"{P}.max_epochs: expected an integer >= 1, got 2.5",
    ),
    "learning rate": (
        _set_in("learning_rate", -1),
        f"{P}.learning_rate: expected a positive number",
    ),
    "output 2": (
        _set_in("expect", "updates", 0, "a", 2),
        f"{P}.expect.updates[0].a: expected values among 0, 1, got 2",
    ),
    "error 2": (
        _set_in("expect", "updates", 0, "error", [2]),
        f"{P}.expect.updates[0].error: expected values among -1, 0, 1, got 2",
    ),
    "epoch 0": (
        _set_in("expect", "updates", 0, "epoch", 0),
        f"{P}.expect.updates[0].epoch: expected an integer >= 1 and <= 10, got 0",
    ),
    "sample 4": (
        _set_in("expect", "updates", 0, "sample", 4),
        f"{P}.expect.updates[0].sample: expected an integer >= 0 and <= 3, got 4",
    ),
    "update W shape": (
        _set_in("expect", "updates", 1, "W", [0, 0]),
        f"{P}.expect.updates[1].W[0]: expected a 1-D list of numbers",
    ),
    "update not an object": (
        _set_in("expect", "updates", 2, [1, 2]),
        f"{P}.expect.updates[2]: expected an object with some of epoch, "
        "sample, n, a, error, W, b, got a list",
    ),
    "updates not a list": (
        _set_in("expect", "updates", {"epoch": 1}),
        f"{P}.expect.updates: expected a list with one object per presentation of a sample",
    ),
    "n_iter beyond max_epochs": (
        _set_in("expect", "n_iter", 11),
        f"{P}.expect.n_iter: expected an integer >= 1 and <= 10, got 11",
    ),
    "converged as text": (
        _set_in("expect", "converged", "yes"),
        f'{P}.expect.converged: expected true or false, got a string "yes"',
    ),
}


@pytest.mark.parametrize("case", MALFORMED_PERCEPTRON)
def test_a_malformed_perceptron_example_exits_2_naming_the_field(
    xpmlp, tmp_path: Path, case: str
) -> None:
    change, message = MALFORMED_PERCEPTRON[case]
    path = write(tmp_path, with_perceptron(change))
    with pytest.raises(WorkedExampleError) as info:
        parse_file(path)
    assert message in str(info.value)
    status, out, err = xpmlp(path, "--check")
    assert status == 2 and out == "" and message in err
