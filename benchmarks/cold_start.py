"""Cold start: the first and the second fit in a fresh process, and what the first costs more.

    python benchmarks/cold_start.py                       # 5 fresh processes per row, medians
    python benchmarks/cold_start.py --runs 7 --out benchmarks/results/cold-start
    python benchmarks/cold_start.py --rows xpmlp --json cold.json
    python benchmarks/cold_start.py --rows xpmlp,xpmlp-numba-first   # Numba's import apart

Row "first and second fit in a fresh process": each run is a new Python process that imports
the library (timed), loads 20,000 MNIST rows (scaled to [0, 1], float32), then fits
``MLPClassifier((256, 128), max_iter=5, random_state=0)`` twice, the second on a new
estimator. ``xpmlp``: xpmlp's estimator with ``dtype="float32"`` (scikit-learn, which it
builds on, is imported before the timed fits, so its import does not count there);
``sklearn``: scikit-learn's own, for reference (its import is the timed one).
``xpmlp-numba-first``: xpmlp's row with ``import numba`` before the timed fits (``import xpmlp``
defers it to the first backend that runs kernels, so the plain row's first fit pays it): the
difference between the two rows is Numba's import, what is left is the steps' own cold start.

Numba's on-disk cache holds xpmlp's kernels after the first run ever: one untimed process runs
first (``--no-warmup`` skips it), so the timed runs measure a cold process with a warm cache,
as a user's second session is; the runs may write and read Python's bytecode cache, as an
installed package has it (PYTHONDONTWRITEBYTECODE is dropped from their environment unless
``--no-bytecode-cache``). For xpmlp each run also counts what its first fit did with
Numba: the kernels it compiled and those it loaded from the disk cache, and whether Numba's
typing registries were imported (``numba.np.linalg`` among the modules: a cache load that
refreshed Numba's contexts, the cost ``kernels/compiler.py`` avoids). The load average is
read before and after every run: the rows are only comparable on a quiet machine. Beside the
wall-clock seconds each run records the main thread's CPU seconds of each fit
(``time.thread_time``): the first fit's extra work (imports, cache loads) runs there, and that
difference moves less than the wall-clock one when other processes share the cores (the
step's BLAS and Numba threads are not counted; the main thread runs its share of them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROW = "first and second fit in a fresh process"
KEYS = ("import", "first", "second")

XPMLP = """
import json, sys, time, warnings
t0 = time.perf_counter()
import xpmlp
t_import = time.perf_counter() - t0
import numpy as np
from xpmlp.datasets import load_mnist
warnings.simplefilter("ignore")
Est = xpmlp.MLPClassifier  # imports scikit-learn, untimed
d = load_mnist()
X = (d.x_train[:20000].reshape(20000, -1) / 255.0).astype(np.float32)
y = d.y_train[:20000]
# PREIMPORT
numba_before = "numba" in sys.modules
fits, cpu_s = [], []
for i in range(2):
    t0, c0 = time.perf_counter(), time.thread_time()
    Est((256, 128), max_iter=5, random_state=0, dtype="float32").fit(X, y)
    fits.append(time.perf_counter() - t0)
    cpu_s.append(time.thread_time() - c0)
    if i == 0:
        from xpmlp.kernels import cpu, fused_cpu
        kernels = [*cpu.CPU._kernels.values(), *fused_cpu.FUSED._kernels.values()]
        loaded = sum(sum(k.stats.cache_hits.values()) for k in kernels)
        compiled = sum(sum(k.stats.cache_misses.values()) for k in kernels)
        registries = "numba.np.linalg" in sys.modules
print(json.dumps({"import": t_import, "first": fits[0], "second": fits[1],
                  "first, CPU": cpu_s[0], "second, CPU": cpu_s[1],
                  "numba imported before the first fit": numba_before,
                  "kernels loaded from the cache": loaded, "kernels compiled": compiled,
                  "numba typing registries imported": registries}))
"""

SKLEARN = """
import json, time, warnings
t0 = time.perf_counter()
from sklearn.neural_network import MLPClassifier as Est
t_import = time.perf_counter() - t0
import numpy as np
from xpmlp.datasets import load_mnist
warnings.simplefilter("ignore")
d = load_mnist()
X = (d.x_train[:20000].reshape(20000, -1) / 255.0).astype(np.float32)
y = d.y_train[:20000]
fits, cpu_s = [], []
for _ in range(2):
    t0, c0 = time.perf_counter(), time.thread_time()
    Est((256, 128), max_iter=5, random_state=0).fit(X, y)
    fits.append(time.perf_counter() - t0)
    cpu_s.append(time.thread_time() - c0)
print(json.dumps({"import": t_import, "first": fits[0], "second": fits[1],
                  "first, CPU": cpu_s[0], "second, CPU": cpu_s[1]}))
"""

#: xpmlp's row with ``import numba`` done before the timed fits (its seconds not counted): what
#: the first fit costs more than the second beyond importing the compiler, i.e. the steps'
#: own cold start (loading them from Numba's disk cache), shown beside the plain row.
XPMLP_NUMBA_FIRST = XPMLP.replace("# PREIMPORT", "import numba")

ROWS = {"xpmlp": XPMLP, "xpmlp-numba-first": XPMLP_NUMBA_FIRST, "sklearn": SKLEARN}


def load_average() -> list[float] | None:
    try:
        with open("/proc/loadavg", encoding="utf-8") as f:
            return [float(v) for v in f.read().split()[:3]]
    except OSError:
        return None


def machine() -> dict[str, object]:
    """The CPU, its cores and the library versions (the load is recorded per run)."""
    import importlib.metadata

    from xpmlp.backends.numpy_backend import cpu_model

    versions = {}
    for dist in ("xpmlp", "numpy", "numba", "scikit-learn", "mkl"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    try:
        source = (
            subprocess.run(
                ["git", "describe", "--always", "--dirty"],
                capture_output=True,
                text=True,
                check=False,
                cwd=Path(__file__).parent,
            ).stdout.strip()
            or None
        )
    except OSError:
        source = None
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "versions": versions,
        "source": source,
        "env": {
            k: v
            for k, v in os.environ.items()
            if k.startswith(("NUMBA_", "XPMLP_", "OMP_", "KMP_", "MKL_", "OPENBLAS_"))
        },
    }


def child_environment(bytecode: bool) -> dict[str, str]:
    """This process's environment, less PYTHONDONTWRITEBYTECODE when ``bytecode``: an installed
    package has its .pyc files, and without them every run compiles xpmlp's modules anew."""
    env = dict(os.environ)
    if bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def one_run(row: str, env: dict[str, str]) -> dict[str, object]:
    before = load_average()
    done = subprocess.run(
        [sys.executable, "-c", ROWS[row]], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        sys.exit(f"a {row} run failed:\n{done.stderr[-2000:]}")
    run = json.loads(done.stdout.splitlines()[-1])
    run["first - second"] = run["first"] - run["second"]
    run["first - second, CPU"] = run["first, CPU"] - run["second, CPU"]
    run["load before"], run["load after"] = before, load_average()
    return run


def medians(runs: list[dict[str, object]]) -> dict[str, float]:
    return {
        k: statistics.median(float(r[k]) for r in runs)  # type: ignore[arg-type]
        for k in (*KEYS, "first - second", "first - second, CPU")
    }


def markdown(result: dict[str, object]) -> str:
    mach = result["machine"]
    assert isinstance(mach, dict)
    lines = [
        f"# Cold start: {ROW}",
        "",
        f"{mach['cpu']}, {mach['cores']} cores, Python {mach['python']}, "
        + ", ".join(f"{k} {v}" for k, v in mach["versions"].items() if v)
        + ".",
        f"{result['runs per row']} fresh processes per row (after "
        f"{'one untimed warm-up process each' if result['warmup'] else 'no warm-up'}); "
        "medians, seconds. Load average (1 min) over the runs: "
        f"{result['load 1 min']}. Bytecode cache: "
        f"{'off (PYTHONDONTWRITEBYTECODE)' if result['PYTHONDONTWRITEBYTECODE'] else 'on'}.",
        "",
        "| row | import | first fit | second fit | first - second | first - second, "
        "main thread's CPU |",
        "|---|---|---|---|---|---|",
    ]
    rows = result["rows"]
    assert isinstance(rows, dict)
    for row, data in rows.items():
        m = data["medians"]
        lines.append(
            f"| {row} | {m['import']:.3f} | {m['first']:.3f} | {m['second']:.3f} | "
            f"{m['first - second']:.3f} | {m['first - second, CPU']:.3f} |"
        )
    for row, data in rows.items():
        if row.startswith("xpmlp"):  # the rows that count Numba's cache loads and compiles
            runs = data["runs"]
            lines += [
                "",
                f"{row}: first fit, per run: kernels loaded from Numba's cache "
                f"{[r['kernels loaded from the cache'] for r in runs]}, compiled "
                f"{[r['kernels compiled'] for r in runs]}, Numba's typing registries "
                f"imported {[r['numba typing registries imported'] for r in runs]}.",
            ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per row (5)")
    parser.add_argument(
        "--rows",
        default="xpmlp,sklearn",
        help=f"some of {', '.join(ROWS)}, comma-separated (default: xpmlp,sklearn)",
    )
    parser.add_argument(
        "--no-warmup",
        action="store_true",
        help="no untimed process first (the first run may then compile)",
    )
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="keep PYTHONDONTWRITEBYTECODE if it is set (then every run "
        "compiles xpmlp's modules from source)",
    )
    parser.add_argument("--json", help="write the runs and medians here")
    parser.add_argument("--out", help="a folder for cold_start.json and cold_start.md")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error(f"--runs {args.runs}: expected at least 1")
    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown or not rows:
        parser.error(f"--rows {args.rows}: expected some of {', '.join(ROWS)}")
    env = child_environment(bytecode=not args.no_bytecode_cache)
    if not args.no_warmup:  # fills Numba's cache (and the bytecode cache)
        for row in rows:
            one_run(row, env)
    runs: dict[str, list[dict[str, object]]] = {row: [] for row in rows}
    for _ in range(args.runs):  # the rows alternate: drift of a shared machine hits both
        for row in rows:
            runs[row].append(one_run(row, env))
    loads = [
        r["load before"][0]
        for rs in runs.values()
        for r in rs  # type: ignore[index]
        if r["load before"] is not None
    ]
    result: dict[str, object] = {
        "row": ROW,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "runs per row": args.runs,
        "warmup": not args.no_warmup,
        "PYTHONDONTWRITEBYTECODE": env.get("PYTHONDONTWRITEBYTECODE"),
        "load 1 min": (f"{min(loads):.2f}-{max(loads):.2f} (median {statistics.median(loads):.2f})")
        if loads
        else "unknown",
        "rows": {row: {"medians": medians(rs), "runs": rs} for row, rs in runs.items()},
    }
    text = markdown(result)
    print(text, end="")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "cold_start.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        (out / "cold_start.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
