"""The timing protocol: warm-up rounds, then repeats in which the tasks alternate.

With tasks t1..tk, warm-up w and repeats R the run order is

    round 0 .. w-1 (untimed):  t1 t2 ... tk
    round w .. w+R-1 (kept):   t1 t2 ... tk

so a drift of the machine (another process, clocks, thermals) lands on every
task alike instead of on whichever ran last. Each task is called with the
round number and returns its own measurement (seconds, or a rate), so it can
leave its untimed setup out. ``summarize`` gives the median, min and max.

Before each task the cores are left idle for ``settle`` seconds (untimed). A BLAS
keeps its worker threads spinning after its last call (OpenBLAS for about 2^28
cycles, ~0.1 s; Intel OpenMP for its 0.2 s blocktime; GNU OpenMP briefly), and
without the pause they take cores from the first part of the next task, which
is then another library's: a fixed penalty that a short timed unit (the quick
profile's) feels many times more than a long one.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence

Task = Callable[[int], float]


def rounds(names: Sequence[str], repeats: int, warmup: int = 0) -> list[tuple[int, str]]:
    """The (round, task) order of a run: every round runs every task, in the given order."""
    return [(r, name) for r in range(warmup + repeats) for name in names]


def alternate(
    tasks: Mapping[str, Task],
    repeats: int,
    warmup: int = 1,
    on_result: Callable[[int, str, float], None] | None = None,
    settle: float = 0.0,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, list[float]]:
    """Run ``tasks`` in alternation, each after ``settle`` idle seconds; the measurements of
    the kept rounds, per task."""
    kept: dict[str, list[float]] = {name: [] for name in tasks}
    for r, name in rounds(list(tasks), repeats, warmup):
        if settle > 0:
            sleep(settle)
        value = tasks[name](r)
        if on_result is not None:
            on_result(r, name, value)
        if r >= warmup:
            kept[name].append(value)
    return kept


def summarize(values: Sequence[float]) -> dict[str, float | list[float]]:
    """{"median", "min", "max", "values"} of a list of measurements."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "values": list(values),
    }
