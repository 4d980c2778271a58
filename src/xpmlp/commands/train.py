"""``xpmlp train``: train an MLP on MNIST with a progress bar, then print the test accuracy.

Under an MPI launcher (``mpiexec -n N xpmlp train``, ``srun -n N --mpi=pmix xpmlp train``)
each of the N ranks trains on its interleaved share of MNIST (rank r takes samples r,
r + N, ...) through ``xpmlp.distributed`` (``--distributed``, default auto), with
``--batch-size`` split evenly between the ranks (so a step sees as many samples as in
one process, and an epoch takes as many steps), with its CPU
threads set to the cores of its machine divided by the ranks there, and its GPU (with
``--backend cuda``) the node-local rank modulo the GPUs it sees. Only rank 0 prints and
writes ``--out``, ``--checkpoint``, ``--report`` and ``--plot``; an error on any rank aborts
the whole job.

``--checkpoint FILE`` saves the model with its training state after every epoch;
``--resume FILE`` goes on from such a file to ``--epochs`` (the run's last epoch), with the
weights the run would have had without the interruption (same options, same backend).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from ..core.errors import ParameterError, XpmlpError
from ..core.validation import PRECISIONS

if TYPE_CHECKING:
    import numpy

    from ..backends.base import Backend
    from ..core.aliases import Record
    from ..core.schedules import LRScheduler
    from ..distributed.base import Communicator
    from ..plots.training import Report
    from ..train.early_stopping import EarlyStopping
    from ..train.model import MLP


class _GradientOptions(TypedDict):
    """The model's gradient keywords of the options (``MLP(**...)``)."""

    l1: float | None
    clip_grad_norm: float | None
    clip_grad_value: float | None


class _StoppingOptions(TypedDict, total=False):
    """fit's early-stopping keywords of the options (none without --early-stopping), or its
    validation data (the test set, when there is no early stopping)."""

    early_stopping: EarlyStopping
    validation_fraction: float
    validation_data: tuple[numpy.ndarray, numpy.ndarray]


class _Defaults(TypedDict):
    epochs: int
    batch_size: int
    hidden: str
    activation: str
    optimizer: str
    schedule: str
    seed: int
    dtype: str


DEFAULTS: _Defaults = {
    "epochs": 8,
    "batch_size": 128,
    "hidden": "512,256",
    "activation": "relu",
    "optimizer": "adam",
    "schedule": "cosine",
    "seed": 0,
    "dtype": "float32",
}


def _hidden_sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()] if text.strip() else []
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--hidden {text!r}: expected comma-separated positive integers, e.g. 512,256"
        ) from None
    if any(n < 1 for n in sizes):
        raise argparse.ArgumentTypeError(f"--hidden {text!r}: layer widths must be >= 1")
    return sizes


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0 (a random seed), else ArgumentTypeError."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def _number(low: float, *, inclusive: bool) -> Callable[[str], float]:
    """An argparse type: a finite float > low (or >= low when ``inclusive``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        ok = value >= low if inclusive else value > low
        if not (ok and value < float("inf")):
            raise argparse.ArgumentTypeError(
                f"expected a finite number {'>=' if inclusive else '>'} {low:g}, got {text}"
            )
        return value

    return parse


def _dropout_rates(text: str) -> float | list[float]:
    """An argparse type: one dropout rate in [0, 1), or comma-separated rates (one per hidden
    layer)."""
    try:
        rates = [float(s) for s in text.split(",")]
    except ValueError:
        rates = []
    if not rates or not all(0.0 <= r < 1.0 for r in rates):
        raise argparse.ArgumentTypeError(
            f"--dropout {text!r}: expected a rate in [0, 1), or comma-separated rates, one per "
            "hidden layer, e.g. 0.2 or 0.2,0.1"
        )
    return rates[0] if len(rates) == 1 else rates


def configure_parser(p: argparse.ArgumentParser) -> None:
    from ..backends import BACKEND_NAMES
    from ..core.activations import ACTIVATIONS, trainable_hidden
    from ..core.optim import OPTIMIZERS, SCHEDULES
    from ..distributed import BACKENDS as DISTRIBUTED_BACKENDS

    d = DEFAULTS
    p.add_argument(
        "--backend",
        choices=BACKEND_NAMES,
        default=None,
        help=f"{', '.join(BACKEND_NAMES)} (default: $XPMLP_BACKEND, else auto)",
    )
    p.add_argument(
        "--epochs",
        type=_positive_int,
        default=d["epochs"],
        help=f"passes over the training set (default {d['epochs']})",
    )
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=d["batch_size"],
        help=f"samples per mini-batch (default {d['batch_size']}); under an MPI "
        "launcher, per step over all ranks, split evenly between them",
    )
    p.add_argument(
        "--lr",
        type=_number(0.0, inclusive=False),
        default=None,
        help="learning rate (default: the optimizer's, "
        + ", ".join(f"{e.default_learning_rate:g} for {e.name}" for e in OPTIMIZERS.values())
        + ")",
    )
    p.add_argument(
        "--hidden",
        type=_hidden_sizes,
        default=_hidden_sizes(d["hidden"]),
        help=f"hidden layer widths, comma-separated (default {d['hidden']})",
    )
    p.add_argument(
        "--activation",
        choices=ACTIVATIONS.names(trainable_hidden),
        default=d["activation"],
        help="hidden-layer activation (default relu)",
    )
    p.add_argument(
        "--optimizer",
        choices=OPTIMIZERS.names(),
        default=d["optimizer"],
        help="optimizer (default adam)",
    )
    p.add_argument(
        "--schedule",
        choices=SCHEDULES.names(),
        default=d["schedule"],
        help="learning-rate schedule over the run (default cosine: from --lr down "
        "to 0; step, exponential, linear and plateau take the settings below)",
    )
    p.add_argument(
        "--weight-decay",
        type=_number(0.0, inclusive=True),
        default=0.0,
        help="L2 weight decay (default 0)",
    )
    # regularization of the hidden layers (dropout, batch norm)
    p.add_argument(
        "--dropout",
        type=_dropout_rates,
        default=0.0,
        help="dropout rate after each hidden layer in training, or comma-separated "
        "rates, one per hidden layer (default 0: none)",
    )
    p.add_argument(
        "--batch-norm",
        action="store_true",
        help="batch normalization before each hidden layer's activation",
    )
    p.add_argument(
        "--deterministic",
        action="store_true",
        help="the same bits at any --threads and under any load: BLAS splits each "
        "product among a fixed number of threads (2)",
    )
    p.add_argument(
        "--seed",
        type=_non_negative_int,
        default=d["seed"],
        help="random seed, an integer >= 0 (default 0)",
    )
    p.add_argument("--dtype", choices=("float32", "float64"), default=d["dtype"])
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="compute precision of the matrix products: fp32 (default); tf32 on NVIDIA "
        "tensor cores (--backend cuda); weights stay in --dtype",
    )
    p.add_argument(
        "--limit",
        type=_positive_int,
        default=None,
        help="train on the first N training samples only (at least 10 per rank; "
        "with --early-stopping, 20: 10 held out to validate on)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="directory with the MNIST files (default: $XPMLP_DATA_DIR, else the "
        "repository's data/mnist, else a download cache)",
    )
    p.add_argument(
        "--no-download", action="store_true", help="fail instead of downloading missing MNIST files"
    )
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="CPU threads for BLAS and Numba (default: all cores; under an MPI "
        "launcher, the machine's cores divided by its ranks)",
    )
    p.add_argument(
        "--distributed",
        choices=DISTRIBUTED_BACKENDS,
        default="auto",
        help="how the ranks of an MPI launch (mpiexec -n N xpmlp train) communicate: "
        "auto (nccl when every rank has a GPU of its own, else mpi when launched "
        "with several ranks, else single), single, mpi or nccl (default auto)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="save the trained model here (.npz); if that fails (disk full), the "
        "file keeps what it held and the model is saved in the temporary "
        "directory instead, under a name the error gives",
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        metavar="FILE",
        help="save the model with its training state here (.npz) after every "
        "epoch, for --resume; if a save fails (disk full), training stops, the "
        "file keeps the last checkpoint written and the model is saved as for --out",
    )
    p.add_argument(
        "--resume",
        default=None,
        metavar="CHECKPOINT",
        help="go on with the run saved in CHECKPOINT (by --checkpoint or --out): "
        "its model, optimizer state, epoch and shuffling; --epochs is then the "
        "run's last epoch, and the same --batch-size, --schedule and --limit give "
        "the weights of the run done in one go. The model options ("
        + ", ".join(RESUME_FIXED)
        + ") come from the checkpoint: given with a "
        "different value they are an error. Free to change on resume: --epochs, "
        "--out, --checkpoint, --report, --plot, --quiet, --threads, --backend, "
        "--data-dir, and (then no longer the run done in one go) --batch-size, "
        "--limit, --schedule and its settings, --early-stopping and its settings",
    )
    p.add_argument(
        "--report",
        default=None,
        help="write a JSON report: per-epoch loss, accuracies, seconds, samples/s; "
        "the test set's confusion matrix and misclassified digits",
    )
    p.add_argument(
        "--plot",
        default=None,
        help="draw the report here (a .png name: PNG is the only format "
        "written): loss and accuracies per epoch, confusion matrix, misclassified "
        "digits (needs matplotlib: pip install -e '.[plot]' in the xpmlp checkout)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _configure_regularization(p)


def _configure_regularization(p: argparse.ArgumentParser) -> None:
    """The options of L1, gradient clipping, the schedules' settings and early stopping."""
    from ..train.early_stopping import VALIDATION_MONITORS

    g = p.add_argument_group("regularization, schedule settings and early stopping")
    g.add_argument(
        "--l1",
        type=_number(0.0, inclusive=True),
        default=None,
        help="L1 penalty on the weights: + l1 sign(W) on their gradient (default 0)",
    )
    g.add_argument(
        "--clip-norm",
        type=_number(0.0, inclusive=False),
        default=None,
        help="clip the gradients by their global L2 norm over all parameters, as "
        "torch.nn.utils.clip_grad_norm_ (default: no clipping)",
    )
    g.add_argument(
        "--clip-value",
        type=_number(0.0, inclusive=False),
        default=None,
        help="clamp each gradient to [-v, v], as torch.nn.utils.clip_grad_value_ "
        "(default: no clamping)",
    )
    g.add_argument(
        "--step-size",
        type=_positive_int,
        default=None,
        help="--schedule step: epochs between decays (default 10)",
    )
    g.add_argument(
        "--gamma",
        type=_number(0.0, inclusive=False),
        default=None,
        help="--schedule step or exponential: the decay factor (default 0.1 for "
        "step, 0.9 for exponential)",
    )
    g.add_argument(
        "--plateau-patience",
        type=_non_negative_int,
        default=None,
        help="--schedule plateau: epochs without improvement before the rate is cut (default 10)",
    )
    g.add_argument(
        "--plateau-factor",
        type=_number(0.0, inclusive=False),
        default=None,
        help="--schedule plateau: the factor of each cut (default 0.1)",
    )
    g.add_argument(
        "--min-lr",
        type=_number(0.0, inclusive=True),
        default=None,
        help="--schedule plateau: the lowest learning rate (default 0)",
    )
    g.add_argument(
        "--warmup",
        type=_non_negative_int,
        default=0,
        help="epochs of linear warm-up before the schedule, from --warmup-start "
        "times the rate (default 0: none; at most --epochs)",
    )
    g.add_argument(
        "--warmup-start",
        type=_number(0.0, inclusive=False),
        default=0.1,
        help="the warm-up's first factor (default 0.1)",
    )
    g.add_argument(
        "--early-stopping",
        type=_positive_int,
        nargs="?",
        const=5,
        default=None,
        metavar="PATIENCE",
        help="stop when the validation loss has not improved for PATIENCE epochs "
        "(default 5) and keep the best epoch's weights; the validation set is "
        "--validation-fraction of the training set",
    )
    g.add_argument(
        "--min-delta",
        type=_number(0.0, inclusive=True),
        default=0.0,
        help="--early-stopping: the least change that counts as an improvement (default 0)",
    )
    g.add_argument(
        "--monitor",
        choices=VALIDATION_MONITORS,
        default="val_loss",
        help="--early-stopping: what to watch (default val_loss)",
    )
    g.add_argument(
        "--validation-fraction",
        type=_number(0.0, inclusive=False),
        default=0.1,
        help="--early-stopping: the share of the training set held out to "
        "monitor (default 0.1); it must leave at least 10 samples (per rank) to "
        "validate on and 10 to train on",
    )


#: the options that --resume takes from the checkpoint (an explicit different value is an error)
RESUME_FIXED = (
    "--hidden",
    "--activation",
    "--optimizer",
    "--lr",
    "--weight-decay",
    "--seed",
    "--dtype",
    "--precision",
    "--dropout",
    "--batch-norm",
    "--l1",
    "--clip-norm",
    "--clip-value",
)
#: options that only --early-stopping reads
EARLY_STOPPING_ONLY = ("monitor", "min_delta", "validation_fraction")
MNIST_TRAINING_SAMPLES = 60_000
#: the fewest samples each rank may train on, and hold out to validate on (--early-stopping)
MIN_TRAINING_SAMPLES = 10
MIN_VALIDATION_SAMPLES = 10


def given(args: argparse.Namespace, dest: str) -> bool:
    """Whether option ``dest`` was given on the command line (``xpmlp.cli`` records them in
    ``args._explicit``); False without that record (a Namespace built by hand): the checks
    that need it are then skipped."""
    return dest in getattr(args, "_explicit", ())


def check_png_name(option: str, path: str) -> None:
    """ParameterError unless ``path`` ends in ``.png``: pictures are written as PNG only, and a
    ``.jpg`` or ``.txt`` name would hold a PNG under a false name."""
    suffix = Path(path).suffix
    if suffix.lower() != ".png":
        raise ParameterError(
            f"{option} {path!r}: pictures are written as PNG; expected a file name ending in "
            f".png, got {('suffix ' + repr(suffix)) if suffix else 'no suffix'}"
        )


def validate_options(args: argparse.Namespace, ranks: int = 1) -> None:
    """Every check of ``xpmlp train``'s options against each other (the parser checks each one
    alone), before anything is loaded; ParameterError saying what was received and what was
    expected. ``ranks``: the processes of an MPI launch, each training on its share."""
    if args.warmup > args.epochs:
        raise ParameterError(
            f"--warmup {args.warmup} is longer than the run (--epochs {args.epochs}): expected "
            f"at most {args.epochs} epochs of warm-up"
        )
    if args.early_stopping is None:
        for dest in EARLY_STOPPING_ONLY:
            if given(args, dest):
                option = "--" + dest.replace("_", "-")
                raise ParameterError(
                    f"{option} is a setting of --early-stopping, which was not given: add "
                    f"--early-stopping [PATIENCE], or leave {option} out"
                )
    n = min(args.limit or MNIST_TRAINING_SAMPLES, MNIST_TRAINING_SAMPLES)
    share = n // ranks  # the smallest rank's (rank r takes samples r, r + ranks, ...)
    each = f" per rank ({n} samples over {ranks} ranks)" if ranks > 1 else ""
    if share < MIN_TRAINING_SAMPLES:
        raise ParameterError(
            f"--limit {args.limit} leaves {share} training sample(s){each}: expected at least "
            f"{MIN_TRAINING_SAMPLES * ranks}"
        )
    if args.early_stopping is not None:
        fraction = args.validation_fraction
        if not fraction < 1:
            raise ParameterError(
                f"--validation-fraction {fraction:g}: expected a number > 0 and < 1"
            )
        if share < MIN_VALIDATION_SAMPLES + MIN_TRAINING_SAMPLES:
            raise ParameterError(
                f"--early-stopping with --limit {args.limit}: {share} training sample(s){each} "
                f"cannot be split into at least {MIN_VALIDATION_SAMPLES} to validate on and "
                f"{MIN_TRAINING_SAMPLES} to train on: expected --limit "
                f"{(MIN_VALIDATION_SAMPLES + MIN_TRAINING_SAMPLES) * ranks} or more"
            )
        held_out = min(share - 1, max(1, round(fraction * share)))  # as fit's hold-out
        if held_out < MIN_VALIDATION_SAMPLES or share - held_out < MIN_TRAINING_SAMPLES:
            raise ParameterError(
                f"--validation-fraction {fraction:g} of {share} training samples{each} holds "
                f"out {held_out} to validate on and leaves {share - held_out} to train on: "
                f"expected at least {MIN_VALIDATION_SAMPLES} of each (a fraction between "
                f"{MIN_VALIDATION_SAMPLES / share:.3g} and "
                f"{1 - MIN_TRAINING_SAMPLES / share:.3g})"
            )
    if args.resume:
        resume = Path(args.resume)
        if not resume.exists():
            raise ParameterError(
                f"--resume {args.resume!r}: no such file; expected a file "
                "written by --checkpoint or --out"
            )
        if not resume.is_file():
            raise ParameterError(
                f"--resume {args.resume!r} is not a file; expected a file "
                "written by --checkpoint or --out"
            )


def _regularization(
    args: argparse.Namespace,
) -> tuple[_GradientOptions, LRScheduler, _StoppingOptions]:
    """From the options: the model's gradient keywords, the schedule, and fit's early-stopping
    keywords (empty without --early-stopping)."""
    from ..core.schedules import make_schedule
    from ..train.early_stopping import EarlyStopping

    gradient: _GradientOptions = {
        "l1": args.l1,
        "clip_grad_norm": args.clip_norm,
        "clip_grad_value": args.clip_value,
    }
    schedule = make_schedule(
        args.schedule,
        warmup=args.warmup,
        warmup_start=args.warmup_start,
        step_size=args.step_size,
        gamma=args.gamma,
        patience=args.plateau_patience,
        factor=args.plateau_factor,
        min_lr=args.min_lr,
    )
    stopping: _StoppingOptions = {}
    if args.early_stopping is not None:
        stopping = {
            "early_stopping": EarlyStopping(
                patience=args.early_stopping, min_delta=args.min_delta, monitor=args.monitor
            ),
            "validation_fraction": args.validation_fraction,
        }
    return gradient, schedule, stopping


def versions() -> dict[str, str]:
    import numba
    import numpy

    from .._version import __version__

    out = {
        "xpmlp": __version__,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "numba": numba.__version__,
    }
    try:
        import cupy

        out["cupy"] = cupy.__version__
    except Exception:
        pass
    return out


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (``.`` or the root at worst)."""
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _probe_write(folder: Path) -> None:
    """Create and delete a temporary file in ``folder``; OSError if that is not possible."""
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".xpmlp-write-check-"):
        pass


def check_output_path(option: str, path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path once it is known that a file can be written there.

    Contract: ``path`` is not an existing directory, and its nearest existing
    ancestor (its parent, or the folder from which saving will create the
    missing ones) is a directory in which this process can create a file,
    checked by creating and deleting a temporary file there. Nothing else is
    created. Otherwise raises ParameterError naming ``option``, ``path`` and
    the reason, so that a bad output path fails before any data is loaded.
    """
    target = Path(path)
    where = f"{option} {str(path)!r}"
    try:
        if target.is_dir():
            raise ParameterError(f"{where} is a directory; expected a file path")
        folder = _nearest_existing(target.parent)
        if not folder.is_dir():
            raise ParameterError(f"{where} cannot be written: {str(folder)!r} is not a directory")
        _probe_write(folder)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ParameterError(f"{where} cannot be written: {reason}") from None
    return target


def _model_file(out: str) -> Path:
    """The file ``save_model`` writes for ``--out out`` (it appends ``.npz`` when missing)."""
    path = Path(out)
    if path.suffix == ".npz" or not path.name:
        return path
    return path.with_name(path.name + ".npz")


def check_outputs(args: argparse.Namespace) -> None:
    """Raise ParameterError unless the files of ``--out``, ``--report`` and ``--plot`` can be
    written (and, with ``--plot``, PlotDependencyError unless matplotlib is installed).

    ``--out`` is checked as given (an existing directory is refused, even though
    ``save_model`` would write ``DIR.npz`` beside it) and as the ``.npz`` file written.
    """
    for option in ("out", "checkpoint"):
        given = getattr(args, option, None)
        if given:
            check_output_path(f"--{option}", given)
            if _model_file(given) != Path(given):
                check_output_path(f"--{option}", _model_file(given))
    if args.report:
        check_output_path("--report", args.report)
    if getattr(args, "plot", None):
        from ..plots import require_matplotlib

        require_matplotlib()
        check_output_path("--plot", args.plot)
        check_png_name("--plot", args.plot)


def run(args: argparse.Namespace) -> int:
    """Check the output paths, then train with the asked thread count; the exit status.

    Under an MPI launcher with several ranks, ``_run_rank`` does it on each rank.
    """
    from ..distributed import init
    from ..machine.threads import cpu_threads

    comm = init(args.distributed)
    if comm.world_size > 1:
        return _run_rank(args, comm)
    validate_options(args)
    check_outputs(args)
    with cpu_threads(args.threads) as notes:
        for note in notes:
            print(f"xpmlp train: {note}", file=sys.stderr)
        return _train(args, comm, args.threads)


def _run_rank(args: argparse.Namespace, comm: Communicator) -> int:
    """One rank of several: rank 0 checks the output paths; threads default to the cores of
    this machine divided by its ranks; any error prints and aborts every rank (the
    ``xpmlp`` command would otherwise print it and return, leaving the others waiting)."""
    from ..distributed.faults import abort_job, is_agreed, mark_agreed
    from ..machine.threads import available_cores, cpu_threads

    try:
        check_same_options(args, comm)
        try:
            validate_options(args, comm.world_size)
        except ParameterError as exc:  # the same options on every rank: the same error
            raise mark_agreed(exc) from None
        if comm.rank == 0:
            check_outputs(args)
        threads = args.threads or max(1, available_cores() // comm.local_size)
        with cpu_threads(threads) as notes:
            for note in notes if comm.rank == 0 else ():
                print(f"xpmlp train: {note}", file=sys.stderr)
            return _train(args, comm, threads)
    except XpmlpError as exc:
        abort_job(comm, f"xpmlp train: error: {exc}", 2, agreed=is_agreed(exc))
    except KeyboardInterrupt:
        from ..cli import close_progress_bars

        close_progress_bars()
        abort_job(comm, "xpmlp train: interrupted", 130)
    except BaseException as exc:
        abort_job(comm, "".join(traceback.format_exception(exc)), 1, agreed=is_agreed(exc))


#: options that may differ between the ranks of a job: where files are read and written
#: (only rank 0 writes), what is printed, and the CPU threads of each
PER_RANK_OPTIONS = frozenset(
    {
        "out",
        "checkpoint",
        "report",
        "plot",
        "quiet",
        "threads",
        "data_dir",
        "no_download",
        "command",
    }
)


def check_same_options(args: argparse.Namespace, comm: Communicator) -> None:
    """A collective at the start of every rank: DistributedError (raised alike on every rank)
    unless every rank was given the same training options (all but ``PER_RANK_OPTIONS``),
    naming each that differs with its value on that rank and on rank 0. Without it, ranks
    given different ``--dropout`` would train different models without a word, and ranks
    given different ``--batch-norm`` would die inside an MPI collective."""
    from ..distributed.faults import check_same_settings

    options = {
        key: value
        for key, value in sorted(vars(args).items())
        if not key.startswith("_") and key not in PER_RANK_OPTIONS
    }
    check_same_settings(
        comm, {"--" + k.replace("_", "-"): v for k, v in options.items()}, "xpmlp train"
    )


def _rank_batch_size(batch_size: int, ranks: int) -> int:
    """Each rank's share of the step's ``batch_size`` samples; ParameterError (raised alike on
    every rank) unless it divides evenly."""
    if batch_size % ranks == 0:
        return batch_size // ranks
    from ..distributed.faults import mark_agreed

    low, high = batch_size // ranks * ranks, -(-batch_size // ranks) * ranks
    raise mark_agreed(
        ParameterError(
            f"--batch-size {batch_size} is the samples of a step over all {ranks} ranks, split "
            f"evenly between them: expected a multiple of {ranks} (e.g. "
            f"{low if low else high} or {high})"
        )
    )


def _train(args: argparse.Namespace, comm: Communicator, threads: int | None = None) -> int:
    """Load MNIST (this rank's interleaved share of it), build and fit the model, print the
    test accuracy, save what was asked (rank 0 only)."""
    from ..backends import get_backend, resolve_backend_name
    from ..datasets import load_mnist
    from ..distributed import default_device
    from ..machine.atomic import atomic_write
    from ..train.model import MLP

    root, ranks = comm.rank == 0, comm.world_size
    batch_size = _rank_batch_size(args.batch_size, ranks)
    device = None
    if comm.name != "single" and resolve_backend_name(args.backend) != "numpy":
        device = default_device(comm)  # None where no GPU: "auto" then resolves to numpy
    backend = get_backend(args.backend, device=device)
    if resolve_backend_name(args.backend) == "auto" and root and not args.quiet:
        from ..backends import describe_auto_choice

        print(f"backend: {describe_auto_choice()}", file=sys.stderr)
    quiet = args.quiet or not root
    log: Callable[..., None] = (
        (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr))
    )
    resumed = _resumed_model(args, backend)
    dtype = args.dtype if resumed is None else resumed.dtype.name
    if resumed is None:  # before the data: --precision that the backend lacks stops here
        backend.check_precision(args.precision, dtype)
    data = load_mnist(args.data_dir, download=not args.no_download, progress=not quiet)
    x_train, y_train = data.x_train, data.y_train
    if args.limit is not None:
        x_train, y_train = x_train[: args.limit], y_train[: args.limit]
    x_test, y_test = data.x_test, data.y_test
    all_x_test, all_y_test = x_test, y_test
    n_train, n_test = len(x_train), len(x_test)
    if ranks > 1:  # rank r takes samples r, r + N, ...
        x_train, y_train = x_train[comm.rank :: ranks], y_train[comm.rank :: ranks]
        x_test, y_test = x_test[comm.rank :: ranks], y_test[comm.rank :: ranks]
    scale = 1.0 / 255.0
    x_train = (x_train * scale).astype(dtype)
    x_test = (x_test * scale).astype(dtype)
    gradient, schedule, stopping = _regularization(args)
    if resumed is None:
        sizes = [x_train.shape[1], *args.hidden, 10]
        model = MLP(
            sizes,
            activation=args.activation,
            optimizer=args.optimizer,
            learning_rate=args.lr,
            weight_decay=args.weight_decay,
            dtype=dtype,
            backend=backend,
            seed=args.seed,
            dropout=args.dropout,
            batch_norm=args.batch_norm,
            deterministic=args.deterministic,
            precision=args.precision,
            **gradient,
        )
    else:
        model, sizes = resumed, resumed.layer_sizes
        log(f"resumed: {args.resume} after epoch {model.epoch_} ({model.steps_} steps)")
    log(f"model: {model}")
    log(f"device: {backend.device}")
    log(f"data: {n_train} training and {n_test} test samples")
    if ranks > 1:
        log(
            f"distributed: {ranks} ranks over {comm.name}, each with its interleaved share "
            f"(rank 0: {len(x_train)} training, {len(x_test)} test samples), {threads} CPU "
            f"thread(s) per rank; a step's batch of {args.batch_size} samples is {batch_size} "
            "per rank"
        )
    test_set = None
    if stopping and root:  # the validation set is held out: the test set is evaluated aside
        with model.backend.activate():
            test_set = model.to_device((all_x_test * scale).astype(dtype), all_y_test)

    def epoch_done(r: Record) -> None:
        if test_set is not None:
            from ..train.loop import evaluate

            with model.backend.activate():
                r["test_loss"], r["test_accuracy"] = evaluate(model, *test_set)
            log(
                f"epoch {r['epoch']}/{args.epochs}: validation loss {r['val_loss']:.4f}, "
                f"validation accuracy {r['val_accuracy']:.4f}"
            )
        log(
            f"epoch {r['epoch']}/{args.epochs}: loss {r['loss']:.4f}, train accuracy "
            f"{r['train_accuracy']:.4f}, test accuracy "
            f"{r['test_accuracy' if test_set is not None else 'val_accuracy']:.4f} "
            f"({r['seconds']:.2f} s, {r['samples_per_s']:,.0f} samples/s, {r['step']} step)"
        )
        if args.checkpoint:
            save_checkpoint(model, args.checkpoint, r["epoch"])

    epochs_before = len(model.history_)  # a resumed model's earlier epochs
    started = time.perf_counter()
    model.fit(
        x_train,
        y_train,
        epochs=args.epochs,
        batch_size=batch_size,
        **(stopping or {"validation_data": (x_test, y_test)}),
        lr_schedule=schedule,
        progress=not quiet,
        callback=epoch_done,
        initial_epoch=model.epoch_,
        comm=None if comm.name == "single" else comm,
    )
    wall = time.perf_counter() - started
    history = model.history_
    train_seconds = sum(r["seconds"] for r in history[epochs_before:])  # this run's only
    if not stopping:
        for r in history:  # a resumed run's earlier records may have been renamed already
            if "val_accuracy" in r:
                r["test_loss"], r["test_accuracy"] = r.pop("val_loss", None), r.pop("val_accuracy")
    if not root:
        return 0
    if test_set is not None:  # the best epoch's weights may have been put back
        from ..train.loop import evaluate

        with model.backend.activate():
            test_accuracy = evaluate(model, *test_set)[1]
        epochs = _early_stopping_epochs(model)
        stopped = (
            f"stopped at epoch {epochs['stopped_epoch']}"
            if epochs["stopped_epoch"]
            else "ran every epoch"
        )
        log(
            f"early stopping: {stopped}; the weights of epoch {epochs['best_epoch']} (best "
            f"{args.monitor}) are kept"
        )
    else:
        test_accuracy = history[-1]["test_accuracy"]
    ran = len(history) - epochs_before
    this_run = f"; this run: {ran} epoch(s)" if epochs_before else ""
    print(
        f"test accuracy: {test_accuracy:.4f} after {len(history)} epoch(s){this_run}; "
        f"training {train_seconds:.1f} s ({max(wall, train_seconds):.1f} s with evaluation) "
        f"on {backend.name}"
    )
    failed: list[XpmlpError] = []  # the outputs that could not be written, reported at the end
    if args.out:
        try:
            path = write_model(model, args.out, "--out")
            log(f"model saved to {path}")
        except OutputError as exc:
            failed.append(exc)
    if args.report or args.plot:
        report: Report = {
            "command": "xpmlp train",
            "arguments": {k: v for k, v in vars(args).items() if not k.startswith("_")},
            "backend": backend.name,
            "device": backend.device,
            "versions": versions(),
            "model": {
                "layer_sizes": sizes,
                "activations": model.activations,
                "loss": model.loss,
                "optimizer": model.optimizer.describe(),
                "dtype": model.dtype.name,
                "precision": model.precision,
                "dropout": model.dropout,
                "batch_norm": model.batch_norm,
            },
            "distributed": {"backend": comm.name, "world_size": ranks, "threads_per_rank": threads},
            "epochs": history,
            "test_accuracy": test_accuracy,
            **({"early_stopping": _early_stopping_epochs(model)} if stopping else {}),
            "training_seconds": train_seconds,
            "wall_seconds": wall,
            **errors_on_test_set(model, (all_x_test * scale).astype(dtype), all_y_test),
        }
    if args.report:
        try:
            with written("--report", args.report), atomic_write(args.report) as f:
                json.dump(report, f, indent=2, default=str)
            log(f"report written to {args.report}")
        except OutputError as exc:
            failed.append(exc)
    if args.plot:
        from ..plots import save_png, training_figure

        wrong = [w["index"] for w in report["misclassified"]]
        images = all_x_test[wrong].reshape(len(wrong), 28, 28)
        try:
            with written("--plot", args.plot):
                save_png(training_figure(report, images), args.plot)
            log(f"picture written to {args.plot}")
        except OutputError as exc:
            failed.append(exc)
    if failed:
        raise OutputError("; and ".join(str(e) for e in failed))
    return 0


class OutputError(XpmlpError, OSError):
    """An output file could not be written (disk full, ...): the file keeps what it held."""


@contextmanager
def written(option: str, path: str | os.PathLike[str], rescued: str = "") -> Iterator[None]:
    """Turn an OSError raised while writing ``path`` (atomically: the file keeps what it held)
    into one OutputError naming ``option``, ``path`` and the reason; ``rescued`` is added."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, XpmlpError):
            raise
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise OutputError(
            f"{option} {str(path)!r} could not be written ({reason}); the file "
            f"keeps what it held before{rescued}"
        ) from None


def rescue_locations(path: str | os.PathLike[str]) -> list[Path]:
    """Where to save a model whose file could not be written: the temporary directory, the
    home directory and the working directory (other file systems, perhaps), in that order,
    less the folder that just failed."""
    failed = Path(path).resolve().parent
    name = f"xpmlp-rescued-{os.getpid()}-{_model_file(str(path)).name}"
    seen, out = {failed}, []
    for folder in (tempfile.gettempdir(), Path.home(), Path.cwd()):
        try:
            folder = Path(folder).resolve()
        except (OSError, RuntimeError):
            continue
        if folder not in seen:
            seen.add(folder)
            out.append(folder / name)
    return out


def _early_stopping_epochs(model: MLP) -> dict[str, int | None]:
    """The model's ``best_epoch_`` and ``stopped_epoch_``, which ``fit`` sets
    (``xpmlp.train.loop``), by the names of the run's report."""
    return {"best_epoch": model.best_epoch_, "stopped_epoch": model.stopped_epoch_}


def write_model(model: MLP, path: str, option: str, rescue_note: str = "") -> Path:
    """``save_model(model, path)``; if that fails (disk full, ...), the model is saved to the
    first of ``rescue_locations`` that takes it and OutputError names both files."""
    from ..io.serialize import save_model

    try:
        with written(option, path):
            return save_model(model, path)
    except OutputError as exc:
        failure = str(exc)
    for place in rescue_locations(path):
        try:
            saved = save_model(model, place)
        except OSError:
            continue
        raise OutputError(
            f"{failure}; the trained model{rescue_note} was saved to {str(saved)!r} instead"
        ) from None
    raise OutputError(
        f"{failure}; the trained model{rescue_note} could not be saved anywhere "
        f"else either (tried {', '.join(map(str, rescue_locations(path)))})"
    )


def save_checkpoint(model: MLP, path: str, epoch: int) -> None:
    """The checkpoint after ``epoch``; on failure (disk full, ...) training stops with one
    OutputError saying that ``path`` still holds the previous checkpoint and where this
    epoch's model was saved instead."""
    try:
        write_model(model, path, "--checkpoint", f" of epoch {epoch}")
    except OutputError as exc:
        raise OutputError(
            f"{exc}; training stopped (--resume {str(path)!r} goes on from the "
            "last checkpoint written)"
        ) from None


def _resumed_model(args: argparse.Namespace, backend: Backend) -> MLP | None:
    """The model of ``--resume`` on ``backend`` (None without it); ParameterError unless it
    classifies MNIST digits and has epochs left before ``--epochs``."""
    if not getattr(args, "resume", None):
        return None
    from ..io.serialize import load_model

    try:
        model = load_model(args.resume, backend=backend)
    except OSError as exc:  # gone since the options were checked, unreadable, ...
        raise ParameterError(
            f"--resume {args.resume!r} cannot be read: {exc.strerror or exc}"
        ) from None
    if model.n_features != 784 or model.n_outputs != 10 or not model.is_classifier:
        raise ParameterError(
            f"--resume {args.resume!r}: the model has layers {model.layer_sizes} with output "
            f"{model.activations[-1]!r}; expected an MNIST classifier (784 inputs, 10 outputs)"
        )
    if model.epoch_ >= args.epochs:
        raise ParameterError(
            f"--resume {args.resume!r}: the checkpoint is at epoch {model.epoch_} and --epochs "
            f"is {args.epochs}; --epochs is the run's last epoch: give more than "
            f"{model.epoch_} to train on"
        )
    check_resume_options(args, model)
    return model


def _checkpoint_options(model: MLP) -> dict[str, object]:
    """The values the options of ``RESUME_FIXED`` have in ``model`` (a loaded checkpoint), as
    the parser gives them (dests of ``args``)."""
    opt = model.optimizer
    hidden_activations = model.activations[:-1]
    dropout = list(model.dropout)
    return {
        "hidden": list(model.layer_sizes[1:-1]),
        "activation": hidden_activations[0]
        if len(set(hidden_activations)) == 1
        else hidden_activations,
        "optimizer": opt.name,
        "lr": opt.learning_rate,
        "weight_decay": opt.weight_decay,
        "seed": model.seed,
        "dtype": model.dtype.name,
        "precision": model.precision,
        "dropout": dropout[0] if len(set(dropout)) <= 1 and dropout else dropout,
        "batch_norm": any(model.batch_norm),
        "l1": opt.l1,
        "clip_norm": opt.clip_grad_norm,
        "clip_value": opt.clip_grad_value,
    }


def _same(given_value: object, saved: object) -> bool:
    if isinstance(given_value, float) or isinstance(saved, float):
        try:
            # float() of any value, a TypeError or ValueError meaning "not the same"
            a, b = float(given_value), float(saved)  # type: ignore[arg-type]
            return abs(a - b) <= 1e-12 * max(1.0, abs(b))
        except (TypeError, ValueError):
            return False
    if isinstance(given_value, list) and isinstance(saved, list):
        return len(given_value) == len(saved) and all(map(_same, given_value, saved))
    return bool(given_value == saved)


def check_resume_options(args: argparse.Namespace, model: MLP) -> None:
    """ParameterError naming each option of ``RESUME_FIXED`` given on the command line with a
    value other than the checkpoint's (``--resume`` goes on with the checkpoint's model and
    optimizer: such an option would be ignored)."""
    saved = _checkpoint_options(model)
    conflicts = []
    for option in RESUME_FIXED:
        dest = option[2:].replace("-", "_")
        if not given(args, dest):
            continue
        value, theirs = getattr(args, dest), saved[dest]
        if dest == "l1" and value == 0 and theirs == 0:
            continue
        if dest == "dropout" and isinstance(value, list) and not isinstance(theirs, list):
            theirs = [theirs] * len(value)
        if not _same(value, theirs):
            conflicts.append(f"{option} {_shown(value)} but the checkpoint has {_shown(theirs)}")
    if conflicts:
        raise ParameterError(
            f"--resume {args.resume!r} goes on with the checkpoint's model and optimizer, and "
            f"was given {'; '.join(conflicts)}: leave "
            f"{'these options' if len(conflicts) > 1 else 'the option'} out, or give the "
            "checkpoint's value (to change them, start a new run without --resume)"
        )


def _shown(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ",".join(_shown(v) for v in value) if value else "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def errors_on_test_set(
    model: MLP,
    x_test: numpy.ndarray,
    y_test: numpy.ndarray,
) -> dict[str, object]:
    """The report's fields on the model's errors over the whole test set:
    ``confusion_matrix`` (row: true label, column: predicted; counts) and ``misclassified``
    (the first ``MAX_MISCLASSIFIED`` (25) of them in test-set order: ``index`` into the test set,
    ``true`` and ``predicted`` labels)."""
    from ..plots import MAX_MISCLASSIFIED, confusion_matrix, misclassified_digits

    predicted = model.predict(x_test)
    return {
        "confusion_matrix": confusion_matrix(y_test, predicted, model.n_outputs),
        "misclassified": misclassified_digits(y_test, predicted, MAX_MISCLASSIFIED),
    }
