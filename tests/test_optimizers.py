"""Every optimizer of the registry against ``torch.optim``: 25 steps of a small MLP in float64.

The model (4-6-5-3, tanh, softmax + cross-entropy) and a stack of ``torch.nn.Linear``
layers start from the same weights (``get_weights``), see the same 25 batches, and take
``backward`` + ``step`` 25 times; their parameters must then agree to float64 rounding
(relative 1e-12), with and without weight decay, with L1 and gradient clipping (by value and
by global norm: ``torch.nn.utils.clip_grad_value_`` / ``clip_grad_norm_`` on p.grad, and
l1 sign(W) added to it), on the NumPy backend (compiled kernels),
the reference backend (array code), marked ``cudasim`` the CUDA kernels in Numba's
simulator (``NUMBA_ENABLE_CUDASIM=1 python -m pytest -m cudasim tests/test_optimizers.py``),
and marked ``cuda`` the CUDA backend on a GPU.

Weight decay is L2 on the weights only, so PyTorch gets two parameter groups: the weights
with ``weight_decay``, the biases without. Also here: the optimizers' options beyond the
registry defaults (centered RMSprop, RMSprop with momentum, Adagrad's lr_decay and initial
accumulator), float32 steps against PyTorch's float32 steps, descriptions and validation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import xpmlp
from xpmlp.backends.base import Backend
from xpmlp.core.errors import ParameterError
from xpmlp.core.optim import (
    HYPERPARAMETERS,
    OPTIMIZERS,
    SGD,
    Adagrad,
    Adam,
    Optimizer,
    RMSprop,
    from_description,
    make_optimizer,
)

torch = pytest.importorskip("torch", reason="torch is not installed (pip install torch)")

SIZES = [4, 6, 5, 3]
STEPS = 25
BATCH = 8
RTOL = 1e-12  # relative to the largest magnitude of each parameter tensor
WEIGHT_DECAYS = (0.0, 0.01)

#: options beyond each registry entry's defaults (the objects' keywords).
VARIANTS: dict[str, Callable[[float], Optimizer]] = {
    "rmsprop-centered": lambda wd: RMSprop(0.01, centered=True, weight_decay=wd),
    "rmsprop-momentum": lambda wd: RMSprop(0.01, momentum=0.9, weight_decay=wd),
    "rmsprop-centered-momentum": lambda wd: RMSprop(
        0.005, alpha=0.9, eps=1e-6, momentum=0.5, centered=True, weight_decay=wd
    ),
    "rmsprop-small-alpha": lambda wd: RMSprop(0.01, alpha=0.3, centered=True, weight_decay=wd),
    "adagrad-decay": lambda wd: Adagrad(
        0.05, lr_decay=0.1, initial_accumulator_value=0.1, eps=1e-8, weight_decay=wd
    ),
    "adam-betas": lambda wd: Adam(0.01, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=wd),
}


def registry_optimizer(name: str, weight_decay: float) -> Optimizer:
    """The registry's optimizer ``name`` with its default learning rate."""
    return make_optimizer(name, weight_decay=weight_decay)


def torch_optimizer(opt: Optimizer, weights: list[Any], biases: list[Any]) -> Any:
    """The ``torch.optim`` optimizer with ``opt``'s hyperparameters: weight decay on the
    weights' group only, the single-tensor code (``foreach=False``)."""
    groups = [
        {"params": weights, "weight_decay": opt.weight_decay},
        {"params": biases, "weight_decay": 0.0},
    ]
    lr = opt.learning_rate
    if isinstance(opt, SGD):
        return torch.optim.SGD(
            groups, lr=lr, momentum=opt.momentum, nesterov=opt.nesterov, foreach=False
        )
    if isinstance(opt, Adam):
        return torch.optim.Adam(
            groups, lr=lr, betas=(opt.beta1, opt.beta2), eps=opt.eps, foreach=False
        )
    if isinstance(opt, RMSprop):
        return torch.optim.RMSprop(
            groups,
            lr=lr,
            alpha=opt.alpha,
            eps=opt.eps,
            momentum=opt.momentum,
            centered=opt.centered,
            foreach=False,
        )
    if isinstance(opt, Adagrad):
        return torch.optim.Adagrad(
            groups,
            lr=lr,
            lr_decay=opt.lr_decay,
            eps=opt.eps,
            initial_accumulator_value=opt.initial_accumulator_value,
            foreach=False,
        )
    raise AssertionError(f"no torch.optim counterpart written here for {opt!r}: add one")


def data() -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """40 samples of 4 features, labels 0..2, and the rows of 25 batches of 8."""
    rng = np.random.default_rng(20240601)
    X = rng.standard_normal((40, SIZES[0]))
    y = rng.integers(0, SIZES[-1], 40)
    batches = [rng.choice(40, BATCH, replace=False) for _ in range(STEPS)]
    return X, y, batches


def train_torch(
    weights: list[tuple[np.ndarray, np.ndarray]],
    opt: Optimizer,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """25 steps of torch.nn.Linear layers (tanh, then cross-entropy of the logits)."""
    X, y, batches = data()
    layers = []
    for W, b in weights:
        layer = torch.nn.Linear(W.shape[1], W.shape[0], dtype=torch.float64)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(W))
            layer.bias.copy_(torch.from_numpy(b))
        layers.append(layer)
    reference = torch_optimizer(opt, [la.weight for la in layers], [la.bias for la in layers])
    for rows in batches:
        h = torch.from_numpy(X[rows])
        for layer in layers[:-1]:
            h = torch.tanh(layer(h))
        loss = torch.nn.functional.cross_entropy(layers[-1](h), torch.from_numpy(y[rows]))
        reference.zero_grad()
        loss.backward()
        apply_gradient_options(opt, layers)
        reference.step()
    return [(la.weight.detach().numpy().copy(), la.bias.detach().numpy().copy()) for la in layers]


def apply_gradient_options(opt: Optimizer, layers: list[Any]) -> None:
    """What our optimizers do to the gradient before their rule, in PyTorch: clip p.grad by
    value, then by the global norm over every parameter, then add l1 sign(W) to the weights'
    gradients (torch.optim has no L1; weight decay the optimizer adds itself)."""
    params = [p for la in layers for p in (la.weight, la.bias)]
    if opt.clip_grad_value is not None:
        torch.nn.utils.clip_grad_value_(params, opt.clip_grad_value, foreach=False)
    if opt.clip_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(params, opt.clip_grad_norm, foreach=False)
    if opt.l1:
        for la in layers:
            la.weight.grad.add_(torch.sign(la.weight.detach()), alpha=opt.l1)


def train_xpmlp(opt: Optimizer, backend: Any) -> tuple[list[Any], list[Any]]:
    """(initial weights, weights after 25 backward/step calls) of the 4-6-5-3 model."""
    X, y, batches = data()
    model = xpmlp.MLP(
        SIZES, activation="tanh", optimizer=opt, dtype="float64", backend=backend, seed=7
    )
    initial = model.get_weights()
    model.set_weights(initial)
    for rows in batches:
        model.backward(model.forward(X[rows]), y[rows])
        model.step()
    return initial, model.get_weights()


def max_relative_difference(ours: list[Any], theirs: list[Any]) -> float:
    """max over the parameter tensors of max|ours - theirs| / max|theirs|."""
    worst = 0.0
    for (W, b), (Wt, bt) in zip(ours, theirs, strict=True):
        for a, t in ((W, Wt), (b, bt)):
            worst = max(worst, float(np.abs(a - t).max() / np.abs(t).max()))
    return worst


def check_against_torch(opt: Optimizer, backend: Any) -> float:
    initial, ours = train_xpmlp(opt, backend)
    theirs = train_torch(initial, opt)
    moved = max_relative_difference(initial, theirs)
    assert moved > 1e-4, f"{opt!r}: the parameters hardly moved ({moved:.3g}); a weak test"
    worst = max_relative_difference(ours, theirs)
    assert worst <= RTOL, f"{opt!r} on {backend!r}: {worst:.3g} relative from torch.optim"
    return worst


def backends() -> list[Any]:
    return [pytest.param("numpy", id="numpy"), pytest.param(Backend(), id="reference")]


# ---------------------------------------------------------------------- against torch.optim
def test_every_optimizer_of_the_registry_is_compared_here() -> None:
    names = set(OPTIMIZERS)
    assert {"sgd", "momentum", "nesterov", "adam", "rmsprop", "adagrad"} <= names
    for name in names:  # torch_optimizer knows each one's class
        opt = make_optimizer(name)
        torch_optimizer(opt, [torch.zeros(1, requires_grad=True)], [])


@pytest.mark.parametrize("weight_decay", WEIGHT_DECAYS, ids=lambda wd: f"wd={wd:g}")
@pytest.mark.parametrize("name", tuple(OPTIMIZERS))
@pytest.mark.parametrize("backend", backends())
def test_registry_optimizer_matches_torch(name: str, weight_decay: float, backend: Any) -> None:
    check_against_torch(registry_optimizer(name, weight_decay), backend)


@pytest.mark.parametrize("weight_decay", WEIGHT_DECAYS, ids=lambda wd: f"wd={wd:g}")
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("backend", backends())
def test_optimizer_options_match_torch(variant: str, weight_decay: float, backend: Any) -> None:
    check_against_torch(VARIANTS[variant](weight_decay), backend)


@pytest.mark.parametrize("backend", backends())
def test_the_comparison_sees_a_learning_rate_off_by_one_part_in_a_billion(backend: Any) -> None:
    """The tolerance is tight enough to matter: RMSprop whose host scalars use lr (1 + 1e-9)
    ends more than 1e-12 (relative) away from torch.optim's."""
    opt = RMSprop(0.01)
    opt.hyperparameters = lambda step, lr: RMSprop.hyperparameters(  # type: ignore[method-assign]
        opt, step, lr * (1 + 1e-9)
    )
    with pytest.raises(AssertionError, match="relative from torch.optim"):
        check_against_torch(opt, backend)


@pytest.fixture
def simulated(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The CUDA backend's kernels in Numba's simulator, with a few threads per block."""
    from xpmlp.kernels import cuda as kcuda

    from xpmlp.backends.cuda_sim import SimulatedCudaBackend

    monkeypatch.setattr(kcuda, "THREADS_PER_BLOCK", 16)
    monkeypatch.setattr(kcuda, "MAX_BLOCKS", 2)
    return SimulatedCudaBackend()


@pytest.mark.cudasim
@pytest.mark.parametrize("weight_decay", WEIGHT_DECAYS, ids=lambda wd: f"wd={wd:g}")
@pytest.mark.parametrize("name", [*OPTIMIZERS, *VARIANTS])
def test_cuda_kernels_match_torch_in_the_simulator(
    simulated: Any, name: str, weight_decay: float
) -> None:
    opt = (VARIANTS[name] if name in VARIANTS else lambda wd: registry_optimizer(name, wd))(
        weight_decay
    )
    check_against_torch(opt, simulated)


@pytest.mark.cuda
@pytest.mark.parametrize("weight_decay", WEIGHT_DECAYS, ids=lambda wd: f"wd={wd:g}")
@pytest.mark.parametrize("name", [*OPTIMIZERS, *VARIANTS])
def test_cuda_backend_matches_torch(name: str, weight_decay: float) -> None:
    """The same on a GPU (CuPy arrays, the compiled CUDA kernels)."""
    opt = (VARIANTS[name] if name in VARIANTS else lambda wd: registry_optimizer(name, wd))(
        weight_decay
    )
    check_against_torch(opt, "cuda")


# ---------------------------------------------------------------------- L1 and clipping
#: the gradient options, each strong enough to change every run (checked below): at the
#: start, the batches' global gradient norms are 0.44 to 1.06, their largest elements 0.16
#: to 0.56, so norm clipping at 0.2 and value clipping at 0.05 act on every batch.
GRADIENT_OPTIONS: dict[str, dict[str, float]] = {
    "l1": {"l1": 0.01},
    "clip-norm": {"clip_grad_norm": 0.2},
    "clip-value": {"clip_grad_value": 0.05},
    "all": {"l1": 0.003, "clip_grad_norm": 0.3, "clip_grad_value": 0.1},
}


def with_options(name: str, option: str, weight_decay: float = 0.01) -> Optimizer:
    opt = (
        VARIANTS[name](weight_decay) if name in VARIANTS else registry_optimizer(name, weight_decay)
    )
    opt.set_gradient_options(**GRADIENT_OPTIONS[option])
    return opt


@pytest.mark.parametrize("option", GRADIENT_OPTIONS)
@pytest.mark.parametrize("name", tuple(OPTIMIZERS))
@pytest.mark.parametrize("backend", backends())
def test_l1_and_clipping_match_torch(name: str, option: str, backend: Any) -> None:
    """25 float64 steps with L1 and/or clipping (and weight decay) against torch.optim after
    torch.nn.utils.clip_grad_value_ / clip_grad_norm_ and + l1 sign(W) on p.grad."""
    check_against_torch(with_options(name, option), backend)


@pytest.mark.parametrize("option", GRADIENT_OPTIONS)
def test_each_gradient_option_changes_the_run(option: str) -> None:
    """The options are strong enough for the comparison above to see them: the run ends more
    than 1e-6 (relative) away from the run without them."""
    _, plain = train_xpmlp(registry_optimizer("adam", 0.01), "numpy")
    _, optioned = train_xpmlp(with_options("adam", option), "numpy")
    assert max_relative_difference(optioned, plain) > 1e-6


@pytest.mark.cudasim
@pytest.mark.parametrize("option", GRADIENT_OPTIONS)
@pytest.mark.parametrize("name", [*OPTIMIZERS, "rmsprop-centered-momentum"])
def test_l1_and_clipping_match_torch_in_the_simulator(
    simulated: Any, name: str, option: str
) -> None:
    check_against_torch(with_options(name, option), simulated)


@pytest.mark.cuda
@pytest.mark.parametrize("option", GRADIENT_OPTIONS)
@pytest.mark.parametrize("name", tuple(OPTIMIZERS))
def test_l1_and_clipping_match_torch_on_the_gpu(name: str, option: str) -> None:
    check_against_torch(with_options(name, option), "cuda")


# ---------------------------------------------------------------------- float32, step by step
FLOAT32_CASES: dict[str, Callable[[], Optimizer]] = {
    "rmsprop": lambda: RMSprop(0.01, weight_decay=0.0),
    "rmsprop-centered-momentum": lambda: RMSprop(
        0.01, momentum=0.9, centered=True, weight_decay=0.0
    ),
    "rmsprop-small-alpha": lambda: RMSprop(0.01, alpha=0.25, centered=True),
    "adagrad": lambda: Adagrad(
        0.01, lr_decay=0.01, initial_accumulator_value=0.1, weight_decay=0.0
    ),
}


ULP32 = 2.0**-24  # float32's unit roundoff


@pytest.mark.parametrize("case", FLOAT32_CASES)
@pytest.mark.parametrize("backend", backends())
def test_float32_steps_are_as_accurate_as_torchs(case: str, backend: Any) -> None:
    """Five float32 steps of a 5000-element vector, each from torch.optim's parameters and
    state of the step before: ours and torch.optim's float32 step, each against the exact
    step (the same formula in float64 on the same float32 inputs). The operations are
    PyTorch's in PyTorch's order, but PyTorch's CPU kernels round differently in places (its
    addcmul, lerp and add(alpha=) are fused multiply-adds; its float32 sqrt is not always
    correctly rounded), so the results are not bit for bit the same; ours must be as close to
    the exact step as PyTorch's: per quantity, the largest error (in ulp of the terms) at most
    twice PyTorch's + 1, the mean error at most 1.5 times PyTorch's."""
    opt = FLOAT32_CASES[case]()
    be = xpmlp.get_backend(backend)
    rng = np.random.default_rng(5)
    size = 5000
    p0 = rng.standard_normal(size).astype(np.float32)
    grads = [
        (rng.standard_normal(size) * 10.0 ** rng.uniform(-3, 1, size)).astype(np.float32)
        for _ in range(5)
    ]
    param = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    reference = torch_optimizer(opt, [param], [])
    p = be.asarray(p0.copy())
    opt.bind(be, p)
    skip = be.zeros(1, np.float32)
    worst: dict[tuple[str, str], list[float]] = {}  # (who, what) -> [max, mean] over steps
    for step, grad in enumerate(grads, start=1):
        before = {"p": param.detach().numpy().copy()}  # torch's, and ours from it
        for row, name in enumerate(opt.state_names):
            if step > 1 and name in reference.state[param]:
                opt.state[row] = be.asarray(reference.state[param][name].numpy())
            before[name] = be.to_numpy(opt.state[row]).copy()
        p[...] = be.asarray(before["p"])
        exact_state = np.stack([before[n] for n in opt.state_names]).astype(np.float64)
        exact = {
            "p": opt.reference(
                np,
                before["p"].astype(np.float64),
                grad.astype(np.float64),
                exact_state,
                opt.hyperparameters(step, opt.learning_rate),
            )
        }
        exact |= {n: exact_state[r] for r, n in enumerate(opt.state_names)}
        param.grad = torch.from_numpy(grad.copy())
        reference.step()
        opt.step(be, p, be.asarray(grad), size, skip)
        results = {"ours": {"p": be.to_numpy(p)}, "torch": {"p": param.detach().numpy()}}
        for row, name in enumerate(opt.state_names):
            if name in reference.state[param]:
                results["ours"][name] = be.to_numpy(opt.state[row])
                results["torch"][name] = reference.state[param][name].numpy()
        for who, got in results.items():
            for name, value in got.items():
                scale = np.abs(before[name]) + np.abs(exact[name])
                err = np.abs(value - exact[name]) / np.maximum(scale, 1e-30) / ULP32
                seen = worst.setdefault((who, name), [0.0, 0.0])
                seen[:] = max(seen[0], float(err.max())), max(seen[1], float(err.mean()))
    for (who, name), (most, mean) in worst.items():
        if who == "ours":
            t_most, t_mean = worst["torch", name]
            assert most <= 2 * t_most + 1 and mean <= 1.5 * t_mean + 0.01, (
                f"{case}, {name}: ours {most:.3g} ulp of the terms from the exact step at most, "
                f"{mean:.3g} on average; torch.optim's {t_most:.3g} and {t_mean:.3g}"
            )


# ---------------------------------------------------------------------- building and saving
@pytest.mark.parametrize("name", ["rmsprop", "adagrad"])
def test_the_model_keyword_path_gives_pytorchs_defaults(name: str) -> None:
    model = xpmlp.MLP([3, 4, 2], optimizer=name, learning_rate=0.02, backend="numpy")
    opt = model.optimizer
    assert opt.name == name and opt.learning_rate == 0.02
    if name == "rmsprop":
        assert isinstance(opt, RMSprop)
        # the model passes its own momentum (0.9, for SGD): RMSprop's stays PyTorch's 0
        assert (opt.alpha, opt.eps, opt.momentum, opt.centered) == (0.99, 1e-8, 0.0, False)
        assert opt.state.shape == (1, model.params.size)
    else:
        assert isinstance(opt, Adagrad)
        # the model passes its own eps (1e-8, for Adam): Adagrad's stays PyTorch's 1e-10
        assert (opt.lr_decay, opt.initial_accumulator_value, opt.eps) == (0.0, 0.0, 1e-10)
    default = xpmlp.MLP([3, 4, 2], optimizer=name, backend="numpy").optimizer
    assert default.learning_rate == OPTIMIZERS[name].default_learning_rate == 0.01


def test_adagrad_accumulator_starts_at_its_initial_value() -> None:
    opt = Adagrad(initial_accumulator_value=0.25)
    model = xpmlp.MLP([3, 4, 2], optimizer=opt, backend="numpy")
    np.testing.assert_array_equal(opt.state, np.full((1, model.params.size), 0.25, np.float32))


@pytest.mark.parametrize(
    "opt",
    [
        RMSprop(),
        RMSprop(0.002, alpha=0.9, eps=1e-6, weight_decay=1e-4, momentum=0.5, centered=True),
        Adagrad(),
        Adagrad(0.1, lr_decay=0.01, initial_accumulator_value=0.5, eps=1e-8, weight_decay=1e-3),
    ],
    ids=repr,
)
def test_from_description_rebuilds_every_setting(opt: Optimizer) -> None:
    rebuilt = from_description(opt.describe())
    assert type(rebuilt) is type(opt) and rebuilt.describe() == opt.describe()
    assert rebuilt.rule is opt.rule and rebuilt.state_names == opt.state_names


def test_a_saved_model_keeps_its_rmsprop_settings(tmp_path) -> None:
    opt = RMSprop(0.003, momentum=0.5, centered=True)
    model = xpmlp.MLP([3, 4, 2], optimizer=opt, backend="numpy")
    xpmlp.save_model(model, tmp_path / "m.npz")
    assert xpmlp.load_model(tmp_path / "m.npz").optimizer.describe() == opt.describe()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: RMSprop(alpha=1.0),
            "alpha=1.0 is not valid; expected a finite number >= 0 and < 1",
        ),
        (lambda: RMSprop(alpha=-0.1), "alpha=-0.1 is not valid"),
        (lambda: RMSprop(eps=0.0), "eps=0.0 is not valid; expected a finite number > 0"),
        (lambda: RMSprop(momentum=1.5), "momentum=1.5 is not valid"),
        (
            lambda: RMSprop(centered="yes"),
            "centered='yes' is not valid; expected one of False, True",
        ),
        (lambda: RMSprop(learning_rate=0.0), "learning_rate=0.0 is not valid"),
        (
            lambda: Adagrad(lr_decay=-1.0),
            "lr_decay=-1.0 is not valid; expected a finite number >= 0",
        ),
        (
            lambda: Adagrad(initial_accumulator_value=float("nan")),
            "initial_accumulator_value=nan is not valid",
        ),
        (lambda: Adagrad(weight_decay=-0.1), "weight_decay=-0.1 is not valid"),
        (lambda: make_optimizer("rmsprop", alpha=2), "alpha=2 is not valid"),
        (
            lambda: from_description({"name": "adagrad", "lr_decay": "fast"}),
            "lr_decay='fast' is not valid",
        ),
        (lambda: from_description({"name": "rmsprop", "rho": 0.9}), "unknown settings ['rho']"),
    ],
)
def test_bad_hyperparameters_are_refused_naming_them(make: Callable[[], Any], message: str) -> None:
    with pytest.raises(ParameterError) as info:
        make()
    assert message in str(info.value)


def test_new_hyperparameters_are_validated_names() -> None:
    assert {"alpha", "centered", "lr_decay", "initial_accumulator_value"} <= set(HYPERPARAMETERS)


# ---------------------------------------------------------------------- conflicting settings
@pytest.mark.parametrize(
    ("optimizer", "keywords"),
    [
        (Adam(1e-3), {"learning_rate": 0.5}),
        (SGD(0.1, momentum=0.9), {"momentum": 0.5}),
        (RMSprop(), {"weight_decay": 0.0}),  # given is given, even at the default
        (Adagrad(), {"l1": 0.1, "clip_grad_norm": 1.0}),
        (Adam(), {"beta1": 0.8, "beta2": 0.9, "eps": 1e-6, "clip_grad_value": 2.0}),
    ],
    ids=lambda v: "+".join(v) if isinstance(v, dict) else type(v).__name__,
)
def test_model_keywords_with_an_optimizer_object_raise_naming_both(optimizer, keywords) -> None:
    with pytest.raises(ParameterError) as info:
        xpmlp.MLP([2, 3, 2], optimizer=optimizer, backend="numpy", **keywords)
    message = str(info.value)
    settings = ", ".join(f"{k}={v!r}" for k, v in keywords.items())
    assert message.startswith(f"{settings} conflict")
    assert f"optimizer={optimizer!r}" in message
    assert f"pass optimizer={optimizer.name!r} with {settings}" in message


def test_the_conflict_message_reads_as_the_issue_asks() -> None:
    with pytest.raises(ParameterError) as info:
        xpmlp.MLP([2, 3, 2], optimizer=Adam(1e-3), learning_rate=0.5, backend="numpy")
    assert str(info.value) == (
        "learning_rate=0.5 conflicts with optimizer=Adam(learning_rate=0.001, weight_decay=0.0, "
        "beta1=0.9, beta2=0.999, eps=1e-08): an optimizer object carries its own settings. Set "
        "it on the object (Adam(learning_rate=0.5, ...)), or pass optimizer='adam' with "
        "learning_rate=0.5"
    )


@pytest.mark.parametrize(
    ("name", "keyword", "applies_to"),
    [
        ("adam", "momentum", "'momentum', 'nesterov', 'rmsprop'"),
        ("sgd", "momentum", "'momentum', 'nesterov', 'rmsprop'"),
        ("momentum", "beta1", "'adam'"),
        ("rmsprop", "beta2", "'adam'"),
        ("adagrad", "momentum", "'momentum', 'nesterov', 'rmsprop'"),
        ("nesterov", "eps", "'adam', 'rmsprop', 'adagrad'"),
    ],
)
def test_a_keyword_the_named_optimizer_does_not_take_raises(name, keyword, applies_to) -> None:
    with pytest.raises(ParameterError) as info:
        xpmlp.MLP([2, 3, 2], optimizer=name, backend="numpy", **{keyword: 0.5})
    message = str(info.value)
    assert message.startswith(
        f"{keyword}=0.5 does not apply to optimizer={name!r}, which takes learning_rate, "
    )
    assert f"({keyword} applies to {applies_to})" in message
    with pytest.raises(ParameterError, match=f"{keyword}=0.5 does not apply"):
        make_optimizer(name, **{keyword: 0.5})


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_keyword_an_optimizer_takes_reaches_it(name) -> None:
    """The model keywords each optimizer takes (its entry's ``keywords``) all arrive: none is
    dropped on the way."""
    model_keywords = (
        "momentum",
        "beta1",
        "beta2",
        "eps",
        "weight_decay",
        "l1",
        "clip_grad_norm",
        "clip_grad_value",
    )
    values = {
        "momentum": 0.5,
        "beta1": 0.5,
        "beta2": 0.5,
        "eps": 0.5,
        "weight_decay": 0.5,
        "l1": 0.5,
        "clip_grad_norm": 0.5,
        "clip_grad_value": 0.5,
    }
    taken = [k for k in model_keywords if k in OPTIMIZERS[name].keywords]
    model = xpmlp.MLP(
        [2, 3, 2],
        optimizer=name,
        learning_rate=0.5,
        backend="numpy",
        **{k: values[k] for k in taken},
    )
    assert model.optimizer.name == name
    description = model.optimizer.describe()
    assert description["learning_rate"] == 0.5
    assert all(description[k] == 0.5 for k in taken), description
