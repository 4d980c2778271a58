"""The sgd and adam solvers: scikit-learn's epoch loop around xpmlp's one training loop.

Per mini-batch b of r_b rows (weights w_i, sum s_b; unweighted: w_i = 1, s_b = r_b), as
scikit-learn's ``_backprop``:

    gradient = sum_i w_i grad l_i / s_b + alpha W / s_b
    loss_b   = sum_i w_i l_i / s_b + 0.5 alpha ||W||^2 / s_b

Each epoch is one ``xpmlp.train.loop.run_epoch`` (the training loop of ``MLP.fit``, on the
backend's fused step where it has one) with the epoch's ``BatchSettings``: the first term is
the step's batch-mean gradient with the row weights r_i = w_i r_b / s_b on the output delta
(``sample_weight`` and ``weight_scale``), the second the optimizer's L2 term with the
coefficient alpha / s_b of each batch (``weight_decay``: the last, short batch gets its own
alpha / r_b), and ``penalty`` records ||W||^2 of each batch for the loss. Per epoch (host,
after it): loss_curve_, the learning-rate schedule (invscaling, adaptive: for adam too), tol
and n_iter_no_change, early stopping on the validation score or loss, the callbacks. The
epoch's order is drawn on the host from random_state, as scikit-learn draws it, and copied to
the device once per epoch (a sparse X stays on the host: each batch's rows are densified
there and copied, ``SparseRows.take_rows``).

tol and n_iter_no_change (and early stopping's choice of weights) are
``xpmlp.train.early_stopping``'s one rule in its scikit-learn convention
(``early_stopping.scikit_learn``), its memory the model's ``train_state_``. ``best_loss_``,
``best_validation_score_``, ``best_validation_loss_`` and ``_no_improvement_count`` are
scikit-learn's names for that memory: read into the training state when a fit starts (a user
may set them, as in scikit-learn) and written back after every iteration.

A loss that is not finite stops the training (the optimizer steps no more from that batch
on: the weights are the last finite ones). Without early stopping that is an error, as in
scikit-learn; with early stopping the iteration is recorded with a NaN validation score
and loss (scikit-learn's diverged weights score NaN), the weights of the best validation
score are kept, and a ConvergenceWarning says so.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, cast

import numpy
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from ..train import loop
from ..train.early_stopping import Watch, scikit_learn
from ..train.loop import RunState
from .data import NON_FINITE, SparseRows, batch_sums
from .evaluate import evaluate
from .network import make_optimizer

if TYPE_CHECKING:
    from ..core.aliases import Array
    from ..train.loop import ProgressBar
    from ..train.model import MLP
    from .base import BaseMLP

#: one iteration's figures: the iteration, the training loss and, with early stopping, the
#: validation score and loss (what the callbacks and the verbose lines get)
Info = dict[str, float]


def fit_stochastic(
    est: BaseMLP,
    X: Array | SparseRows,
    Y: Array,
    sw: numpy.ndarray | None,
    incremental: bool,
    stratify: Array | None,
) -> None:
    """Train ``est.mlp_`` on device X, Y (host weights sw) by est.solver (see module doc)."""
    model = est.mlp_
    be = model.backend
    if not incremental or not hasattr(est, "_learning_rate"):
        model.optimizer = make_optimizer(est)
        model.optimizer.bind(be, model.params)
        est._learning_rate = float(est.learning_rate_init)
    if est.early_stopping and incremental:
        raise ValueError("partial_fit does not support early_stopping=True")
    n_all = X.shape[0]
    X_val = Y_val = sw_val = None
    if est.early_stopping:
        try:
            train, val = train_test_split(
                numpy.arange(n_all),
                random_state=est._random_state,
                test_size=est.validation_fraction,
                stratify=stratify,
            )
        except ValueError as exc:
            if stratify is None or "least populated class" not in str(exc):
                raise
            labels = est.classes_.tolist()
            raise ValueError(  # scikit-learn's message names the indicator's values
                f"{exc}. (The split is stratified as scikit-learn's, by the binary target's "
                f"indicator: 'False' is the label {labels[0]!r} of y, 'True' the label "
                f"{labels[1]!r}.)"
            ) from exc
        if val.shape[0] < 2:
            raise ValueError(
                "The validation set is too small. Increase 'validation_fraction' "
                "or the size of your dataset."
            )
        train_dev, val_dev = be.asarray(train), be.asarray(val)
        if isinstance(X, SparseRows):
            X_val, X = X.subset(val), X.subset(train)
        else:
            X_val, X = X[val_dev], X[train_dev]
        Y_val, Y = Y[val_dev], Y[train_dev]
        if sw is not None:
            sw, sw_val = sw[train], be.asarray(sw[val], dtype=model.dtype)
    n = X.shape[0]
    if est.batch_size == "auto":
        batch_size = min(200, n)
    else:
        given = cast(int, est.batch_size)  # "auto" or an integer (the parameter's constraints)
        if given > n:
            warnings.warn(
                "Got `batch_size` less than 1 or larger than sample size. It is "
                "going to be clipped",
                stacklevel=3,
            )
        batch_size = int(numpy.clip(given, 1, n))
    sw_dev = None if sw is None else be.asarray(sw, dtype=model.dtype)
    n_batches = -(-n // batch_size)
    state = RunState.allocate(model, n_batches)
    loop.announce_step(model, 3, X=X)  # mlp_.step_kind_, and why if slower
    l2 = be.zeros(n_batches, model.dtype)
    per_output = 1.0 if model.is_classifier or model.loss == "poisson" else Y.shape[1]
    softmax = model.activations[-1] == "softmax"
    sample_idx = numpy.arange(n)
    rows = batch_sums(None, sample_idx, batch_size)  # each batch's row count, every epoch
    bar = _progress_bar(est)
    est.n_iter_ = 0 if not incremental else est.n_iter_
    watch = _watch(est, model)
    try:
        for _ in range(est.max_iter):
            if est.shuffle:  # sklearn.utils.shuffle's draw, without its validation
                perm = numpy.arange(n)
                est._random_state.shuffle(perm)
                sample_idx = sample_idx[perm]
            sums = batch_sums(sw, sample_idx, batch_size)
            model.optimizer.learning_rate = est._learning_rate
            loop.run_epoch(
                model,
                X,
                Y,
                be.asarray(sample_idx),
                batch_size,
                state,
                settings=loop.BatchSettings(
                    weight_decay=est.alpha / sums,
                    sample_weight=sw_dev,
                    weight_scale=None if sw_dev is None else rows / sums,
                    penalty=l2,
                ),
            )
            stats = be.to_numpy(state.batch_stats[:, 0]).astype(numpy.float64)
            l2_host = be.to_numpy(l2).astype(numpy.float64)
            diverged = float(be.to_numpy(state.skip)[0]) != 0 or not numpy.isfinite(stats).all()
            if diverged and not est.early_stopping:
                raise ValueError(
                    f"{NON_FINITE} (Training stopped at iteration {est.n_iter_ + 1}; the "
                    "weights are the last finite ones.)"
                )
            est.loss_ = float(
                (stats / per_output + 0.5 * est.alpha * l2_host * rows / sums).sum() / n
            )
            est.n_iter_ += 1
            est.t_ += n
            est.loss_curve_.append(est.loss_)
            info: Info = {"n_iter": est.n_iter_, "loss": est.loss_}
            if est.early_stopping:
                val_loss, val_score = (
                    evaluate(model, X_val, Y_val, sw_val, est.alpha, softmax)
                    if not diverged
                    else (numpy.nan, numpy.nan)
                )
                est.validation_scores_.append(val_score)
                est.validation_loss_curve_.append(val_loss)
                info.update(validation_score=val_score, validation_loss=val_loss)
            _report(est, bar, info)
            if diverged:
                memory = model.train_state_
                if memory.best_params is None:  # no iteration scored: the weights fit began
                    memory.best_params, memory.best_epoch = state.last_finite, 0  # with
                    kept = "the weights this fit started from (no iteration scored)"
                else:
                    kept = (
                        f"the weights of the best validation score ({est.best_validation_score_:g})"
                    )
                warnings.warn(
                    f"The training loss was not finite at iteration {est.n_iter_}: training "
                    "stopped there (the learning rate may be too large, or the data need "
                    f"scaling); the estimator keeps {kept}.",
                    ConvergenceWarning,
                    stacklevel=3,
                )
                break
            exhausted = _update_no_improvement_count(est, watch, info)
            if est.learning_rate == "invscaling":
                est._learning_rate = est.learning_rate_init / (est.t_ + 1) ** est.power_t
            stop = any(bool(cb(est, dict(info))) for cb in (est.callbacks or ()))
            if exhausted:
                if _trigger_stopping(est):
                    break
                watch.restart_count()
                est._no_improvement_count = 0
            if stop or incremental:
                break
            if est.n_iter_ == est.max_iter:
                warnings.warn(
                    f"Stochastic Optimizer: Maximum iterations ({est.max_iter}) reached and "
                    "the optimization hasn't converged yet.",
                    ConvergenceWarning,
                    stacklevel=3,
                )
    except KeyboardInterrupt:
        warnings.warn("Training interrupted by user.", stacklevel=3)
    finally:
        if bar is not None:
            bar.close()
    watch.finish()  # with early stopping: the parameters of the best validation figure


def _watch(est: BaseMLP, model: MLP) -> Watch:
    """scikit-learn's rule (``early_stopping.scikit_learn``) on the model's training state,
    its memory read from the estimator's attributes (scikit-learn's names for it)."""
    rule = scikit_learn(
        est.tol, est.n_iter_no_change, est.early_stopping, est.early_stopping_metric
    )
    watch = Watch(rule, model, resume=True)
    memory = model.train_state_
    if not est.early_stopping:
        best = est.best_loss_
    elif rule.monitor == "val_loss":
        best = est.best_validation_loss_
    else:
        best = -est.best_validation_score_  # the rule minimizes: the negated score
    memory.best_value, memory.no_improvement = float(best), int(est._no_improvement_count)
    return watch


def _update_no_improvement_count(est: BaseMLP, watch: Watch, info: Info) -> bool:
    """scikit-learn's rule on this iteration's figures (``info``), its memory published
    under scikit-learn's names; True when n_iter_no_change is exceeded."""
    memory = watch.state
    before = memory.best_value
    record = {
        "loss": info["loss"],
        "val_score": info.get("validation_score"),
        "val_loss": info.get("validation_loss"),
    }
    exhausted = watch.update(est.n_iter_, record)
    est._no_improvement_count = memory.no_improvement
    if not est.early_stopping:
        est.best_loss_ = memory.best_value
    elif memory.best_value != before:  # a new best: its score and loss both
        est.best_validation_score_ = record["val_score"]
        est.best_validation_loss_ = record["val_loss"]
    return exhausted


def _trigger_stopping(est: BaseMLP) -> bool:
    """Stop, or (learning_rate='adaptive') divide the learning rate by 5 and go on, until it
    is at most 1e-6."""
    what = "Validation score" if est.early_stopping else "Training loss"
    if est.early_stopping and est.early_stopping_metric == "loss":
        what = "Validation loss"
    msg = (
        f"{what} did not improve more than tol={est.tol:f} for {est.n_iter_no_change} "
        "consecutive epochs."
    )
    if est.learning_rate != "adaptive":
        _say(est, msg + " Stopping.")
        return True
    if est._learning_rate <= 1e-6:
        _say(est, msg + " Learning rate too small. Stopping.")
        return True
    est._learning_rate /= 5.0
    _say(est, msg + f" Setting learning rate to {est._learning_rate:f}")
    return False


def _progress_bar(est: BaseMLP) -> ProgressBar | None:
    """A tqdm bar over the iterations when verbose == 2 (other true values: scikit-learn's
    lines)."""
    if not est.verbose or int(est.verbose) != 2:
        return None
    from tqdm.auto import tqdm

    bar: ProgressBar = tqdm(total=est.max_iter, desc=type(est).__name__, unit="iter", leave=False)
    return bar


def _say(est: BaseMLP, message: str) -> None:
    if est.verbose:
        print(message)


def _report(est: BaseMLP, bar: ProgressBar | None, info: Info) -> None:
    """scikit-learn's verbose lines, or the bar's step and figures."""
    if bar is not None:
        bar.update(1)
        bar.set_postfix({k: f"{v:.5g}" for k, v in info.items() if k != "n_iter"})
    elif est.verbose:
        print(f"Iteration {info['n_iter']}, loss = {info['loss']:.8f}")
        if "validation_score" in info:
            print(f"Validation score: {info['validation_score']:f}")
