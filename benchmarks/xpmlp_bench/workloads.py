"""The benchmark's workloads (A-D) and its three profiles: full, quick and tiny.

=====  ======================  =====  =================  ===================================
key    model                   batch  optimizer          timed unit
=====  ======================  =====  =================  ===================================
A      784-512-256-10 ReLU     128    momentum 0.9, 0.05  one epoch (overhead-bound)
B      784-512-256-10 ReLU     1024   momentum 0.9, 0.05  one epoch
C      784-4096-4096-10 ReLU   4096   momentum 0.9, 0.05  a fixed number of steps (GEMM-bound)
D      784-512-256-10 ReLU     128    Adam 1e-3           training seconds to 98 % test accuracy
=====  ======================  =====  =================  ===================================

Softmax cross-entropy everywhere. ``quick`` times A and B on the full profile's
unit (one 60k-sample epoch) with 3 repeats instead of 5; it shrinks C to 2048 wide
and D to one seed and two epochs. All of its ratios are indicative only: C and D
time another model or too few epochs, and three repeats of a 1-2 s epoch on a busy
2-core machine do not pin a median (2-core AMD EPYC, 2 threads, 2026-11-27: quick
gave B 1.24x and A 1.59x PyTorch where the median of three full runs gave 1.26x
and 2.21x; one of quick's A epochs took 1.05 s, another 2.05 s). ``tiny`` runs all
four on a small synthetic problem (for the tests).

Why quick once disagreed with full (A 1.75x vs 1.10x, B 1.56x vs 0.86x against
PyTorch on a 2-core Xeon): it timed a 10k-sample epoch (79 steps for A, 10 for
B), under a quarter of a second, and every PyTorch unit started right after
xpmlp's, while OpenBLAS's worker threads were still spinning (see ``schedule``).
Both gaps fit one fixed cost of about 0.1 s added to each PyTorch unit: half a
quick unit, a tenth of a full epoch. (Inferred from those figures; at one
thread, where nothing spins, xpmlp/PyTorch per-sample times on 10k and 60k
epochs agree.) Now every task starts after ``Profile.settle_seconds`` idle, and
A/B keep the full epoch, so quick measures what full does, with fewer repeats.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

MNIST_SIZES = (784, 512, 256, 10)


@dataclass(frozen=True)
class Workload:
    """One benchmark configuration; ``kind`` is "epoch", "steps" or "to_accuracy"."""

    key: str
    layer_sizes: tuple[int, ...]
    batch_size: int
    optimizer: str  # "momentum" or "adam"
    learning_rate: float
    kind: str
    n_samples: int | None = None  # samples per timed epoch; None: the whole training set
    steps: int = 0  # kind "steps": steps per timed unit
    repeats: int = 5
    warmup: int = 1  # untimed rounds first (JIT compilation, caches, allocator)
    seeds: tuple[int, ...] = (0,)
    max_epochs: int = 10  # kind "to_accuracy"
    target_accuracy: float = 0.98  # kind "to_accuracy"
    note: str = ""
    dropout: float = 0.0  # after each hidden layer, in training
    batch_norm: bool = False  # between each hidden layer's Dense transform and its ReLU

    @property
    def model_text(self) -> str:
        return "-".join(str(n) for n in self.layer_sizes)

    @property
    def optimizer_text(self) -> str:
        if self.optimizer == "adam":
            return f"Adam lr {self.learning_rate:g}"
        return f"SGD momentum 0.9 lr {self.learning_rate:g}"

    def unit_samples(self, n_train: int) -> int:
        """Samples in one timed unit (an epoch, or steps x batch)."""
        if self.kind == "steps":
            return min(self.steps * self.batch_size, n_train)
        return n_train if self.n_samples is None else min(self.n_samples, n_train)

    def unit_text(self, n_train: int) -> str:
        n = self.unit_samples(n_train)
        steps = -(-n // self.batch_size)
        if self.kind == "steps":
            return f"{steps} steps ({n} samples)"
        if self.kind == "to_accuracy":
            return (
                f"up to {self.max_epochs} epochs of {n} samples to "
                f"{self.target_accuracy:.1%} test accuracy, seeds {list(self.seeds)}"
            )
        return f"1 epoch = {n} samples ({steps} steps)"

    @property
    def regularization_text(self) -> str:
        parts = (["batch norm"] if self.batch_norm else []) + (
            [f"dropout {self.dropout:g}"] if self.dropout else []
        )
        return "".join(f", {p}" for p in parts)

    def describe(self, n_train: int) -> str:
        return (
            f"{self.key}: {self.model_text} ReLU{self.regularization_text}, softmax CE, "
            f"{self.optimizer_text}, "
            f"batch {self.batch_size}; timed unit: {self.unit_text(n_train)}"
            + (f"; {self.note}" if self.note else "")
        )


@dataclass(frozen=True)
class Profile:
    """A set of workloads plus the settings of the peak and GEMM-only probes."""

    name: str
    workloads: dict[str, Workload]
    description: str
    peak_sizes: tuple[int, ...] = (1024, 2048)  # square sgemm sizes on the CPU
    gpu_peak_sizes: tuple[int, ...] = (4096, 8192)
    probe_seconds: float = 0.5  # minimum sustained time of each peak measurement
    settle_seconds: float = 0.3  # idle before each timed task (``schedule.alternate``)
    synthetic: dict[str, int] = field(default_factory=dict)  # tiny: the generated data set


def _base() -> dict[str, Workload]:
    sgd = dict(optimizer="momentum", learning_rate=0.05)
    return {
        "A": Workload("A", MNIST_SIZES, 128, kind="epoch", repeats=5, **sgd),
        "B": Workload("B", MNIST_SIZES, 1024, kind="epoch", repeats=5, **sgd),
        "C": Workload("C", (784, 4096, 4096, 10), 4096, kind="steps", steps=3, repeats=3, **sgd),
        "D": Workload(
            "D",
            MNIST_SIZES,
            128,
            "adam",
            1e-3,
            "to_accuracy",
            seeds=(0, 1, 2),
            max_epochs=10,
            target_accuracy=0.98,
        ),
        "E": Workload(
            "E", MNIST_SIZES, 128, kind="epoch", repeats=5, dropout=0.2, batch_norm=True, **sgd
        ),
    }


def full_profile() -> Profile:
    return Profile(
        "full",
        _base(),
        "full: A and B 5 epochs each after 1 warm-up epoch, "
        "C 3 steps x 3 repeats after a 1-step warm-up, D 3 seeds x up to 10 epochs, "
        "E (A with batch norm and dropout 0.2) as A",
    )


def quick_profile() -> Profile:
    w = _base()
    same = "quick: the full profile's unit, 3 repeats (full: 5); ratios indicative only"
    indicative = "ratios indicative only, not those of the full run"
    quick = {
        "A": replace(w["A"], repeats=3, note=same),
        "B": replace(w["B"], repeats=3, note=same),
        "C": replace(
            w["C"],
            layer_sizes=(784, 2048, 2048, 10),
            batch_size=2048,
            steps=2,
            repeats=3,
            note=f"quick: 2048 wide, batch 2048, 2 steps; {indicative}",
        ),
        "D": replace(
            w["D"],
            seeds=(0,),
            max_epochs=2,
            note="quick: 1 seed, at most 2 epochs (98% is usually not reached); " + indicative,
        ),
        "E": replace(w["E"], repeats=3, note=same),
    }
    return Profile(
        "quick",
        quick,
        "quick: A/B as in the full profile with 3 repeats instead "
        "of 5, C 2048 wide x 2 steps x 3 repeats, D 1 seed x 2 epochs; peak probes "
        "0.25 s. Its ratios are indicative only: the full profile's are the "
        "figures to quote",
        peak_sizes=(2048,),
        gpu_peak_sizes=(4096,),
        probe_seconds=0.25,
    )


def tiny_profile() -> Profile:
    sizes = (20, 16, 8, 3)
    sgd = dict(optimizer="momentum", learning_rate=0.05)
    tiny = {
        "A": Workload("A", sizes, 16, kind="epoch", repeats=2, **sgd),
        "B": Workload("B", sizes, 64, kind="epoch", repeats=2, **sgd),
        "C": Workload("C", (20, 32, 32, 3), 64, kind="steps", steps=2, repeats=2, **sgd),
        "D": Workload(
            "D",
            sizes,
            16,
            "adam",
            1e-2,
            "to_accuracy",
            seeds=(0,),
            max_epochs=3,
            target_accuracy=0.8,
        ),
        "E": Workload("E", sizes, 16, kind="epoch", repeats=2, dropout=0.2, batch_norm=True, **sgd),
    }
    return Profile(
        "tiny",
        tiny,
        "tiny: a synthetic 3-class problem (for tests)",
        peak_sizes=(64,),
        gpu_peak_sizes=(256,),
        probe_seconds=0.01,
        settle_seconds=0.0,
        synthetic={"n_train": 256, "n_test": 128, "n_features": 20, "n_classes": 3},
    )


PROFILES = {"full": full_profile, "quick": quick_profile, "tiny": tiny_profile}
