"""The fused CPU training step: one Numba call per batch, generated from the step's ops.

    gather X, Y rows -> for each hidden layer: Z = A_prev W^T (BLAS), A = f(Z + b) [dropout]
    or f(BN(Z)) -> output: Z, A, loss, delta_L, db_L [sample weights] -> for each layer, top
    down: delta = dA [* mask] * f'(.) [back through batch norm], db, dW = delta^T A_prev,
    dA_prev = delta W (BLAS), then the layer's weights updated while W and dW are in cache
    -> gradients (data-parallel training stops here, before any update) -> the rest of the
    update (biases, batch norm's parameters; with norm clipping: ||g||^2, then everything)

The step is described once, as data: ``xpmlp.core.plan.StepPlan.ops`` (a model's layers,
each with its kind: plain, dropout or batch norm). ``step_source`` turns those ops into the
source of ``train_step``, one fragment of ``OP_SOURCE`` per op with the layers unrolled, and
``generated_step`` compiles it: there is no hand-written twin of the step to keep in line.
Each call in it is a kernel of ``xpmlp.kernels.cpu`` already compiled for its activation,
loss or rule, bound to a placeholder (the ones below for every step, ``forward_{l}``,
``backward_{l}``, ``wide_backward_{l}`` for hidden layer l:
``FUSED.kernel(train_step, dtype, forward_0=<compiled kernel>, ...)``). So every formula is
still written once, in its registry entry and ``cpu.py``; this module strings the kernels
together and calls BLAS itself, so a step costs one Python call instead of about twenty (the
per-op path: ``MLP.run_ops``, which runs the same ops one launch at a time, and
``MLP.apply_gradients``). Each hidden layer has its own kernels, so hidden layers with
different activations, and a model with dropout on some layers and batch norm on others,
take the fused step too; a layer without dropout or batch norm calls none of their kernels
(they are neither built nor loaded).

Per-batch scalars are rows, set once per epoch and indexed by the step's ``row`` (the batch
within the epoch): the optimizer's hyperparameters ``hyper_rows[row]`` (the learning rate
times the schedule's factor, bias corrections: ``Optimizer.hyper_rows``), the L2 coefficient
``decays[row]`` and the dropout masks' keys ``keys[row, l]``
(``xpmlp.core.regularization.dropout_key``), so nothing on the host changes between batches
(``xpmlp.backends.numpy_backend.FusedStep.epoch_rows``). Dropout and batch norm
(``Regularization``, the ``hidden`` argument): per hidden layer, the settings
``Dense.forward`` and ``Dense.backward`` use in training (rates, batch-norm arrays).

The matrix products go to one ``cblas_?gemm``, the caller's ``cblas`` argument (a ctypes
function): the process's BLAS library, which the per-op path's ``matmul`` calls too
(``xpmlp.machine.blas.MatmulProvider.cblas_gemm``: Intel MKL's, or NumPy's own), with the operands
and transposes ``numpy.matmul`` gives it: the same library, thread pool and bits. Where the
provider computes a forward product Z = A W^T as its twin Z^T = W A^T (few rows on NumPy's
OpenBLAS: ``MatmulProvider.twin``), so does the step (``forward_product``, into the caller's
``Zts`` buffers; empty ones where not); and where the provider cuts a product into parts of
its rows, one thread each (``MatmulProvider.row_cuts``: NumPy's OpenBLAS, whose products run
on one thread), a step in one block cuts it there too, on Numba's threads (``gemm_split``,
the caller's ``cuts``; a row block's step never cuts).

On several cores the caller may cut a batch into row blocks
(``xpmlp.backends.row_blocks``): each block runs ``train_step`` up to the gradients on a
thread of its own (``update_now`` False, ``first_row`` its first row in the batch, for the
dropout masks), and ``update_step``, generated beside it from the same update ops, adds the
blocks' gradients and updates one thread's share of the parameters.

A generated step's source is written once to a file of the caller's cache directory (named
by its hash), so that Numba's disk cache, which keys on a function's file, keeps the compiled
step from one process to the next.
"""

from __future__ import annotations

import collections
import hashlib
import os
import sys
import tempfile
import types
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from numba import njit, prange

from .compiler import Target, placeholder

if TYPE_CHECKING:
    from numba.core.dispatcher import Dispatcher

output_forward = placeholder("output_forward", "compiled bias_activation(_rows) of the output")
output_loss = placeholder("output_loss", "compiled loss_output_delta of the output layer")
update = placeholder("update", "compiled optimizer_step of the optimizer's rule")
sum_squares_of = placeholder("sum_squares_of", "compiled grad_sum_squares")
gather = placeholder("gather", "compiled gather_rows")
weigh_output = placeholder(
    "weigh_output", "compiled weight_output_delta of the loss (sample weights on the output delta)"
)
#: the placeholders of every ``train_step`` (each hidden layer has its own besides:
#: ``layer_placeholders``): each is bound to a compiled kernel of ``cpu.py``.
BOUND = ("output_forward", "output_loss", "update", "sum_squares_of", "gather", "weigh_output")

#: ``train_step``'s ``weights`` argument for a weighted batch: the sample weights of every
#: row of X (``sample``, indexed as X is, by ``idx``), the batch's factor ``scale``
#: (r_i = sample[idx[i]] scale) and ``r``, the (m,) buffer that receives r.
RowWeights = collections.namedtuple("RowWeights", ("sample", "scale", "r"))

#: ``train_step``'s ``hidden`` argument for a model with dropout or batch norm: per hidden
#: layer l, the arguments the per-op path gives its kernels in training (``Dense.forward``,
#: ``Dense.backward``, ``NumpyBackend``'s dropout and batch-norm ops; the masks' keys are
#: ``train_step``'s ``keys[row, l]``): ``thresholds[l]`` (``dropout_threshold``),
#: ``scales[l]`` = 1 / (1 - rate), ``momenta[l]`` (0 for a batch of one row), ``eps[l]``,
#: ``inv_m1`` = 1 / max(m - 1, 1); the arrays of the batch-normalized layers (``Zhats``,
#: ``stats``, ``gammas``, ``betas``, ``dgammas``, ``dbetas``, ``means``, ``variances``:
#: running estimates), empty stand-ins for the others.
Regularization = collections.namedtuple(
    "Regularization",
    (
        "thresholds",
        "scales",
        "momenta",
        "eps",
        "inv_m1",
        "Zhats",
        "stats",
        "gammas",
        "betas",
        "dgammas",
        "dbetas",
        "means",
        "variances",
    ),
)


def _fused_kernel(fn: types.FunctionType) -> Dispatcher[types.FunctionType]:
    """``njit(cache=True)``, named by a hash of its module (its plan) and the bound kernels'
    names (their activation, loss or rule, dtype and fingerprint: ``Target.kernel``), so
    Numba's on-disk cache, which keys on the name, tells a relu step from a tanh one (and the
    name stays short enough for a file name)."""
    bound = "|".join(
        [fn.__module__, fn.__qualname__, f"nogil={_NOGIL}"]
        + [
            fn.__globals__[name].py_func.__qualname__
            for name in fn.__globals__["PLACEHOLDERS"]
            if name in fn.__code__.co_names  # bound where the function calls it
        ]
    )
    fn.__qualname__ = f"{fn.__name__}__{hashlib.sha256(bound.encode()).hexdigest()[:16]}"
    # a step whose source could not be written to a file is compiled in memory only
    on_disk = os.path.isfile(fn.__code__.co_filename)
    return njit(cache=on_disk, error_model="numpy", nogil=_NOGIL)(fn)


#: the steps release the GIL: the row blocks of a batch run the step in threads of their own
#: at once (``xpmlp.backends.row_blocks``). It is part of a step's cached name: Numba's disk
#: cache does not key on it, and would load a step compiled without it.
_NOGIL = True
#: compiles ``train_step`` with its kernels bound.
FUSED = Target("cpu-fused", njit(error_model="numpy"), _fused_kernel)


#: ``train_step``'s parameters: every generated step has this signature.
PARAMETERS = (
    "cblas, X, Y, idx, Ws, bs, dWs, dbs, Zs, As, deltas, Zts, cuts, Yb, out_stats, skip, inv_m, "
    "p, g, "
    "state, hyper_rows, decays, row, n_decay, w_at, l1, clip_value, max_norm, sum_squares, "
    "wide, hidden, keys, weights, update_now, first_row"
)
#: ``update_step``'s parameters besides ``train_step``'s: the other row blocks' gradients
#: (one row each), every block's non-finite flag and the share [lo, hi) of the flat parameter
#: vector to update
UPDATE_PARAMETERS = "parts, skips, lo, hi"

#: the dropout settings of hidden layer {l} (``Regularization``), as its kernels take them
_MASK = "keys[row, {l}], hidden.thresholds[{l}], hidden.scales[{l}]"

#: the source of each op of the step (``xpmlp.core.plan.StepPlan.ops``), per kind: {l} is the
#: op's layer and {n} = l + 1. A hidden layer's kernels are its own
#: placeholders (``forward_{l}``, ``backward_{l}``, ``wide_backward_{l}``: ``layer_placeholders``),
#: bound to the compiled kernels of its activation and kind.
OP_SOURCE: dict[tuple[str, str], str] = {
    ("gather", ""): "gather(X, idx, As[0])\ngather(Y, idx, Yb)",
    # Z = A_prev W^T, A = f(Z + b) [dropout] or f(BN(Z)) [dropout]
    ("forward", "plain"): (
        "forward_product(cblas, As[{l}], Ws[{l}], Zs[{l}], Zts[{l}], cuts[0][{l}])\n"
        "forward_{l}(Zs[{l}], bs[{l}], As[{n}])"
    ),
    ("forward", "dropout"): (
        "forward_product(cblas, As[{l}], Ws[{l}], Zs[{l}], Zts[{l}], cuts[0][{l}])\n"
        "forward_{l}(Zs[{l}], bs[{l}], As[{n}], first_row, " + _MASK + ")"
    ),
    ("forward", "norm"): (
        "forward_product(cblas, As[{l}], Ws[{l}], Zs[{l}], Zts[{l}], cuts[0][{l}])\n"
        "forward_{l}(Zs[{l}], bs[{l}], hidden.gammas[{l}], hidden.betas[{l}], hidden.stats[{l}], "
        "hidden.means[{l}], hidden.variances[{l}], hidden.Zhats[{l}], As[{n}], "
        "hidden.momenta[{l}], hidden.eps[{l}], inv_m, hidden.inv_m1, " + _MASK + ")"
    ),
    # Z = A W^T, A = f(Z + b); the loss, delta_L and db_L; sample weights r_i = w[idx_i] s
    ("output", "output"): (
        "forward_product(cblas, As[{l}], Ws[{l}], Zs[{l}], Zts[{l}], cuts[0][{l}])\n"
        "output_forward(Zs[{l}], bs[{l}], As[{n}])\n"
        "output_loss(Zs[{l}], As[{n}], Yb, deltas[{l}], dbs[{l}], out_stats, skip, inv_m)\n"
        "if weights is not None:\n"
        "    for i in range(idx.shape[0]):\n"
        "        weights.r[i] = weights.sample[idx[i]] * weights.scale\n"
        "    weigh_output(Zs[{l}], As[{n}], Yb, weights.r, deltas[{l}], dbs[{l}], out_stats)"
    ),
    # deltas[l] holds dA: delta = dA [* mask] * f'(.) [back through BN] in place, and db
    ("backward", "output"): "",
    ("backward", "plain"): (
        "if wide[{l}]:\n"
        "    wide_backward_{l}(deltas[{l}], Zs[{l}], As[{n}], deltas[{l}], dbs[{l}])\n"
        "else:\n"
        "    backward_{l}(deltas[{l}], Zs[{l}], As[{n}], deltas[{l}], dbs[{l}])"
    ),
    ("backward", "dropout"): (
        "if wide[{l}]:\n"
        "    wide_backward_{l}(deltas[{l}], Zs[{l}], deltas[{l}], dbs[{l}], first_row, "
        + _MASK
        + ")\n"
        "else:\n"
        "    backward_{l}(deltas[{l}], Zs[{l}], deltas[{l}], dbs[{l}], first_row, " + _MASK + ")"
    ),
    ("backward", "norm"): (
        "backward_{l}(deltas[{l}], hidden.Zhats[{l}], hidden.gammas[{l}], hidden.betas[{l}], "
        "hidden.stats[{l}], deltas[{l}], hidden.dgammas[{l}], hidden.dbetas[{l}], dbs[{l}], "
        "inv_m, " + _MASK + ")"
    ),
    # data-parallel training and lbfgs take the gradients here (``update_now`` False)
    ("gradients", ""): "if not update_now:\n    return",
    # a layer's weights as soon as dW is complete (while W and dW are in cache), unless norm
    # clipping needs the whole gradient's norm first
    ("update", "weights"): (
        "if update_now and max_norm == 0.0:\n"
        "    update(p[w_at[{l}] : w_at[{n}]], g[w_at[{l}] : w_at[{n}]], state, w_at[{l}], "
        "hyper, decays[row], n_decay, skip, l1, clip_value, max_norm, sum_squares)"
    ),
    # the rest: the biases and batch norm's parameters (the weights are done), or, with norm
    # clipping, every parameter after the norm of the whole gradient
    ("update", ""): (
        "if max_norm > 0.0:\n"
        "    sum_squares_of(g, clip_value, sum_squares)\n"
        "    update(p, g, state, 0, hyper, decays[row], n_decay, skip, l1, clip_value, max_norm, "
        "sum_squares)\n"
        "else:\n"
        "    update(p[n_decay:], g[n_decay:], state, n_decay, hyper, decays[row], n_decay, skip, "
        "l1, clip_value, max_norm, sum_squares)"
    ),
}
#: the step's first line: this step's hyperparameters, row ``row`` of the epoch's, as the
#: rule's tuple ({hyper}: one item per hyperparameter)
_HYPER = "hyper = ({hyper})"
#: each op in the notes' terms: the comment above its source in the generated step
OP_MATH: dict[tuple[str, str], str] = {
    ("gather", ""): "A_0, Y <- the batch's rows of X, Y",
    ("forward", "plain"): "Z = A_prev W^T, A = f(Z + b)",
    ("forward", "dropout"): "Z = A_prev W^T, A = f(Z + b) * mask / (1 - rate)",
    ("forward", "norm"): "Z = A_prev W^T, A = f(gamma BN(Z) + beta) [* mask / (1 - rate)]",
    ("output", "output"): "Z = A_prev W^T, A = f(Z + b); loss, delta = dL/dZ, db [* weights]",
    ("backward", "output"): "dW = delta^T A_prev, dA_prev = delta W",
    ("backward", "plain"): "delta = dA * f'(Z), db; dW = delta^T A_prev, dA_prev = delta W",
    ("backward", "dropout"): (
        "delta = dA * mask / (1 - rate) * f'(Z), db; dW = delta^T A_prev, dA_prev = delta W"
    ),
    ("backward", "norm"): (
        "delta = back through f and BN, dgamma, dbeta; dW = delta^T A_prev, dA_prev = delta W"
    ),
    ("gradients", ""): "the gradients are complete (data-parallel training averages them here)",
    ("update", "weights"): "W <- the optimizer's rule (clipped, penalized) with this batch's "
    "hyperparameters",
    ("update", ""): "the rest of p <- the optimizer's rule (with norm clipping: all of p)",
}
#: after each backward op: dW = delta^T A_prev, and dA_prev = delta W below the first layer
_PRODUCTS = "gemm_split(cblas, deltas[{l}], As[{l}], dWs[{l}], True, False, cuts[1][{l}])"
_PRODUCT_DOWN = (
    "gemm_split(cblas, deltas[{l}], Ws[{l}], deltas[{below}], False, False, cuts[2][{l}])"
)

#: the placeholders of a hidden layer's kernels, per kind
_LAYER_SLOTS = {
    "plain": ("forward", "backward", "wide_backward"),
    "dropout": ("forward", "backward", "wide_backward"),
    "norm": ("forward", "backward"),
}


#: a step's ops as ``step_source`` reads them: (name, layer, kind), ``Op.as_tuple``
Ops = Sequence[tuple[str, int, str]]


def layer_placeholders(ops: Ops) -> dict[str, tuple[int, str, str]]:
    """The per-layer placeholders of the step of ``ops``: name -> (layer, kind, slot), slot
    being "forward", "backward" or "wide_backward" (the backward kernel's parallel form)."""
    return {
        f"{slot}_{l}": (l, kind, slot)
        for name, l, kind in ops
        if name == "forward"
        for slot in _LAYER_SLOTS[kind]
    }


def step_source(ops: Ops) -> str:
    """The source of ``train_step`` for ``ops`` (``StepPlan.ops`` as (name, layer, kind)):
    one fragment of ``OP_SOURCE`` per op, in order, layers unrolled."""
    (n_hyper,) = (int(kind) for name, l, kind in ops if name == "update" and l < 0)
    body = [_HYPER.format(hyper=", ".join(f"hyper_rows[row, {j}]" for j in range(n_hyper)))]
    if n_hyper == 1:
        body[0] = body[0].replace("])", "],)")  # a tuple of one
    for name, l, kind in ops:
        key = (name, "" if name == "update" and l < 0 else kind)
        body.append(
            f"# {name} {l} ({kind}): {OP_MATH[key]}" if l >= 0 else f"# {name}: {OP_MATH[key]}"
        )
        text = OP_SOURCE[key].format(l=l, n=l + 1)
        if text:
            body.extend(text.splitlines())
        if name == "backward":
            body.append(_PRODUCTS.format(l=l))
            if l > 0:
                body.append(_PRODUCT_DOWN.format(l=l, below=l - 1))
    lines = "\n".join("    " + line for line in body)
    return (
        "# generated by xpmlp.kernels.fused_cpu.step_source: the fused training step of\n"
        f"# {', '.join(f'{n}[{l}]:{k}' if l >= 0 else n for n, l, k in ops)}\n"
        f"def train_step({PARAMETERS}):\n"
        f"    {_DOC!r}\n"
        f"{lines}\n"
        "\n\n"
        f"def update_step({PARAMETERS}, {UPDATE_PARAMETERS}):\n"
        f"    {_UPDATE_DOC!r}\n"
        f"    {body[0]}\n"
        f"{_UPDATE_SOURCE}"
    )


#: the update of a step cut into row blocks (``xpmlp.backends.row_blocks``), on the share
#: [lo, hi) of the parameters: the gradient is the blocks' gradients added in block order;
#: with norm clipping the caller gives one share, the whole vector (the norm is the whole's)
_UPDATE_SOURCE = """\
    # a block's loss not finite: no update, as for the whole batch (each share sets the flag)
    for c in range(skips.shape[0]):
        if skips[c, 0] != 0.0:
            skip[0] = 1.0
    # g = g_0 + g_1 + ...: the gradient of the whole batch (g holds block 0's)
    add_parts(g[lo:hi], parts[:, lo:hi])
    if max_norm > 0.0:
        sum_squares_of(g, clip_value, sum_squares)
    update(p[lo:hi], g[lo:hi], state, lo, hyper, decays[row], n_decay, skip, l1, clip_value, \
max_norm, sum_squares)
"""


_DOC = (
    "One training step of the batch X[idx], Y[idx] (generated from the step's ops by "
    "xpmlp.kernels.fused_cpu.step_source; see that module for the arguments)."
)
_UPDATE_DOC = (
    "The update after train_step(..., update_now=False) ran on each row block of the batch: "
    "parameters [lo, hi) (xpmlp.backends.row_blocks)."
)
_GENERATED: dict[str, types.FunctionType] = {}


def generated_update(ops: Ops, directory: Path | None) -> types.FunctionType:
    """``update_step`` for ``ops``: the step's update after its row blocks' gradients
    (``xpmlp.backends.row_blocks``), from the module of ``generated_step(ops, directory)``,
    with the same placeholders to bind."""
    step = generated_step(ops, directory)
    return step.__globals__["update_step"]  # type: ignore[no-any-return]


def generated_step(ops: Ops, directory: Path | None) -> types.FunctionType:
    """``train_step`` for ``ops``, with its placeholders (``BOUND`` and ``layer_placeholders``)
    as globals for ``FUSED.kernel`` to bind: the same function object for the same ops within
    a process. Its source is written once to ``directory`` (a file named by the source's
    hash, never rewritten: Numba's disk cache keys on that file), so that a later process
    loads the compiled step instead of compiling it; with ``directory`` None, or one that
    cannot be written, the step is compiled in memory only."""
    source = step_source(ops)
    digest = hashlib.sha256(source.encode()).hexdigest()[:20]
    fn = _GENERATED.get(digest)
    if fn is not None:
        return fn
    module_name = f"{__name__}_step_{digest}"
    path = _write_once(directory, f"step_{digest}.py", source) if directory is not None else None
    module = types.ModuleType(module_name)
    module.__file__ = str(path) if path is not None else None
    namespace = module.__dict__
    namespace.update({name: globals()[name] for name in BOUND})
    namespace.update(gemm_split=gemm_split, forward_product=forward_product, add_parts=add_parts)
    layers = layer_placeholders(ops)
    for name, (l, kind, slot) in layers.items():
        namespace[name] = placeholder(name, f"compiled {slot} kernel of hidden layer {l} ({kind})")
    namespace["PLACEHOLDERS"] = (*BOUND, *layers)
    if path is not None:
        sys.modules[module_name] = module  # what inspect.getmodule (Numba's cache) looks up
    exec(compile(source, str(path) if path else f"<{module_name}>", "exec"), namespace)
    fn = _GENERATED[digest] = namespace["train_step"]
    return fn


def _write_once(directory: Path, name: str, text: str) -> Path | None:
    """``directory/name`` holding ``text``: written (atomically) only if absent; None where the
    directory cannot be written."""
    path = directory / name
    try:
        if path.is_file() and path.read_text() == text:
            return path
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError:
        return None
    return path


# ---------------------------------------------------------------------- BLAS
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112


def gemm(cblas, a, b, out, ta, tb):
    """out = op(a) op(b), op(x) = x^T when its flag is set: one call of ``cblas`` (a ctypes
    ``cblas_?gemm``) on C-contiguous 2-D arrays, as numpy.matmul makes it; a product over
    k = 0 is zeros."""
    m, n = out.shape
    k = a.shape[0] if ta else a.shape[1]
    if m == 0 or n == 0:
        return
    if k == 0:
        out[...] = 0.0
        return
    gemm_rows(cblas, a, b, out, ta, tb, 0, m)


@njit(cache=True, nogil=True)
def gemm_rows(cblas, a, b, out, ta, tb, lo, hi):
    """Rows [lo, hi) of out = op(a) op(b) (m, n, k > 0): one ``cblas`` call, the one
    ``numpy.matmul(a[lo:hi], b, out=out[lo:hi])`` makes (op(a)'s rows lo..hi: a's columns
    where it is transposed)."""
    n = out.shape[1]
    k = a.shape[0] if ta else a.shape[1]
    lda, ldb, ldc = max(a.shape[1], 1), max(b.shape[1], 1), max(n, 1)
    item = out.itemsize
    first = lo if ta else lo * lda
    cblas(
        ROW_MAJOR,
        TRANS if ta else NO_TRANS,
        TRANS if tb else NO_TRANS,
        hi - lo,
        n,
        k,
        1.0,
        a.ctypes.data + first * item,
        lda,
        b.ctypes.data,
        ldb,
        0.0,
        out.ctypes.data + lo * ldc * item,
        ldc,
    )


def gemm_split(cblas, a, b, out, ta, tb, cuts):
    """``gemm``, cut into the parts of out's rows [cuts[p], cuts[p + 1]) at once on Numba's
    threads where ``cuts`` has more than one part (``gemm_parts``)."""
    if cuts.size > 2:
        gemm_parts(cblas, a, b, out, ta, tb, cuts)
    else:
        gemm(cblas, a, b, out, ta, tb)


def forward_product(cblas, a, w, z, zt, cuts):
    """z = a w^T (cut as ``gemm_split`` cuts it); where ``zt`` is a buffer of z's transposed
    shape (its size not 0: where ``MatmulProvider.twin`` says so), as its twin zt = w a^T,
    then transposed into z: the same sums, faster on NumPy's OpenBLAS for few rows
    (``xpmlp.machine.blas.twin_pays``)."""
    if zt.size == 0:
        gemm_split(cblas, a, w, z, False, True, cuts)
        return
    gemm(cblas, w, a, zt, False, True)
    n, m = zt.shape
    for i in range(m):
        for j in range(n):
            z[i, j] = zt[j, i]


@njit(parallel=True, cache=True, nogil=True)
def gemm_parts(cblas, a, b, out, ta, tb, cuts):
    """out = op(a) op(b) as one ``gemm_rows`` call per part of out's rows [cuts[p],
    cuts[p + 1]), the parts at once on Numba's threads, as the OpenBLAS route cuts a product
    (``xpmlp.machine.blas.MatmulProvider.row_cuts``), each on one OpenBLAS thread."""
    for p in prange(cuts.size - 1):
        gemm_rows(cblas, a, b, out, ta, tb, cuts[p], cuts[p + 1])


def add_parts(g, parts):
    """g[k] <- g[k] + parts[0, k] + parts[1, k] + ..., added in that order for every k: the
    gradient of a batch whose row blocks wrote their gradients into g and ``parts``."""
    for c in range(parts.shape[0]):
        part = parts[c]
        for k in range(g.size):
            g[k] += part[k]
