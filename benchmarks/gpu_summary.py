"""summary.json for benchmarks/gpu_check.sh, from its work directory; no xpmlp import.

    python benchmarks/gpu_summary.py environment OUT.json
        device (nvidia-smi), versions and git commit, written once by the environment step
    python benchmarks/gpu_summary.py summary WORK SUMMARY.json --steps a,b,... --budget S
        --start EPOCH [--table]
        summary.json from WORK/steps.tsv (name, status, rc, seconds, note per line), the
        environment JSON and each step's JSON; --table prints one line per step

Runs with any Python 3.10+ (the system python3 even when xpmlp did not install); every
figure extraction is guarded: a JSON that is missing or shaped otherwise gives an "error"
figure, never a crash.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ENVIRONMENT_JSON = "environment.json"
STEPS_TSV = "steps.tsv"
#: the JSON a step writes into the work directory's logs folder
STEP_JSON = {
    "launch-overhead": "launch_overhead.json",
    "graph": "graph.json",
    "train": "train.json",
    "train-numpy": "train-numpy.json",
    "train-fast": "train-fast.json",
    "bench": "bench/bench.json",
}
MODULES = ("numpy", "numba", "numba_cuda", "cupy", "torch", "pytest")


def _run(cmd: list[str]) -> str | None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def environment() -> dict[str, Any]:
    """Device (nvidia-smi name, driver, memory, or "none"), versions and git commit."""
    smi = _run(
        ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
    )
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in MODULES:
        try:
            versions[name] = str(importlib.import_module(name).__version__)
        except Exception as exc:  # noqa: BLE001 - any failure to import is a finding
            versions[name] = f"unavailable ({type(exc).__name__}: {exc})"[:200]
    try:
        import cupy

        v = cupy.cuda.runtime.runtimeGetVersion()
        versions["cuda_runtime"] = f"{v // 1000}.{v % 1000 // 10}"
    except Exception as exc:  # noqa: BLE001
        versions["cuda_runtime"] = f"unavailable ({type(exc).__name__})"
    return {
        "device": smi.splitlines()[0] if smi else "none",
        "versions": versions,
        "git_commit": _run(["git", "rev-parse", "HEAD"]),
    }


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _r(x: Any, digits: int = 4) -> Any:
    return round(x, digits) if isinstance(x, float) else x


def train_figures(report: dict[str, Any]) -> dict[str, Any]:
    """Test accuracy, training seconds and the training seconds to reach 98% test accuracy."""
    fig: dict[str, Any] = {
        "test_accuracy": _r(report["test_accuracy"]),
        "training_seconds": _r(report["training_seconds"], 3),
        "epochs": len(report.get("epochs", [])),
    }
    elapsed, to_98 = 0.0, None
    for epoch in report.get("epochs", []):
        elapsed += epoch["seconds"]
        if epoch.get("test_accuracy") is not None and epoch["test_accuracy"] >= 0.98:
            to_98 = elapsed
            break
    fig["seconds_to_98"] = _r(to_98, 3)
    fig["fast_98_under_1s"] = to_98 is not None and to_98 < 1.0
    return fig


def launch_figures(report: dict[str, Any]) -> dict[str, Any]:
    """Host µs per launch of each row (or its error)."""
    return {
        name: _r(r["host_us"], 2) if "host_us" in r else f"error: {r.get('error')}"
        for name, r in report["rows"].items()
    }


def graph_figures(report: dict[str, Any]) -> dict[str, Any]:
    """{strategy: ok} and the numeric top-level figures."""
    fig: dict[str, Any] = {name: bool(s.get("ok")) for name, s in report["strategies"].items()}
    fig.update(
        {
            k: _r(v)
            for k, v in report.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
    )
    return fig


def bench_figures(result: dict[str, Any]) -> dict[str, Any]:
    """Per "workload/row": median seconds of a unit (time to target for kind to_accuracy) and
    vs_torch = t_torch / t_row on the same device (> 1: faster than PyTorch)."""
    fig: dict[str, Any] = {}
    for w in result["workloads"]:
        for r in w["rows"]:
            if w.get("kind") == "to_accuracy":
                median = (r.get("time_to_target") or {}).get("median")
            else:
                median = r["seconds"]["median"]
            fig[f"{w['key']}/{r['row']}"] = {
                "median_s": _r(median, 5),
                "vs_torch": _r(r.get("vs_torch"), 3),
            }
        for name, reason in (w.get("skipped") or {}).items():
            fig[f"{w['key']}/{name}"] = f"skipped: {reason}"
    return fig


def compare_figures(logs: Path) -> dict[str, Any]:
    cuda = _load(logs / STEP_JSON["train"])["test_accuracy"]
    cpu = _load(logs / STEP_JSON["train-numpy"])["test_accuracy"]
    return {
        "cuda_accuracy": _r(cuda),
        "numpy_accuracy": _r(cpu),
        "gap_pp": _r(100 * abs(cuda - cpu), 3),
    }


def pytest_figures(log: Path) -> dict[str, Any]:
    """The last pytest summary line ("3 failed, 40 passed, 2 skipped in 61.2s")."""
    lines = [
        ln.strip("= ")
        for ln in log.read_text(errors="replace").splitlines()
        if re.search(r"\b(passed|failed|error|errors|skipped|deselected)\b.* in [\d.]+s", ln)
    ]
    return {"pytest": lines[-1]} if lines else {}


EXTRACTORS = {
    "launch-overhead": launch_figures,
    "graph": graph_figures,
    "train": train_figures,
    "train-numpy": train_figures,
    "train-fast": train_figures,
    "bench": bench_figures,
}


def step_figures(name: str, logs: Path) -> dict[str, Any]:
    """The key figures of one step; {"error": ...} when they cannot be read."""
    try:
        if name in EXTRACTORS:
            path = logs / STEP_JSON[name]
            return EXTRACTORS[name](_load(path)) if path.exists() else {}
        if name == "train-compare":
            return compare_figures(logs)
        if name == "tests-cuda" and (logs / f"{name}.log").exists():
            return pytest_figures(logs / f"{name}.log")
        if name == "probe" and (logs / "probe.log").exists():
            lines = (logs / "probe.log").read_text(errors="replace").strip().splitlines()
            return {"last_line": lines[-1][:300]} if lines else {}
    except Exception as exc:  # noqa: BLE001 - a figure never stops the summary
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}
    return {}


def read_steps(path: Path) -> dict[str, dict[str, Any]]:
    """name -> {status, rc, seconds, note} from the tab-separated lines (the last one wins)."""
    steps: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return steps
    for line in path.read_text(errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) < 4:
            continue
        name, status, rc, seconds = parts[:4]
        steps[name] = {
            "status": status,
            "rc": int(rc) if rc.lstrip("-").isdigit() else None,
            "seconds": float(seconds) if seconds else None,
            "note": parts[4] if len(parts) > 4 and parts[4] else None,
        }
    return steps


def summary(work: Path, names: list[str], budget: float, start: float) -> dict[str, Any]:
    logs = work / "logs"
    env_path = logs / ENVIRONMENT_JSON
    try:
        env = _load(env_path) if env_path.exists() else {}
    except (OSError, ValueError) as exc:
        env = {"error": f"{type(exc).__name__}: {exc}"}
    done = read_steps(logs / STEPS_TSV)
    steps = []
    for name in names:
        rec = done.get(name, {"status": "not_run", "rc": None, "seconds": None, "note": None})
        figures = step_figures(name, logs) if rec["status"] not in ("not_run", "skipped") else {}
        steps.append({"name": name, **rec, "figures": figures})
    return {
        "device": env.get("device", "unknown"),
        "versions": env.get("versions", {}),
        "git_commit": env.get("git_commit"),
        "budget_seconds": budget,
        "total_seconds": round(time.time() - start, 1),
        "failed": [s["name"] for s in steps if s["status"] in ("failed", "timed_out")],
        "steps": steps,
    }


KEY_FIGURE = {
    "train": ("test_accuracy", "training_seconds"),
    "train-numpy": ("test_accuracy", "training_seconds"),
    "train-fast": ("test_accuracy", "training_seconds", "seconds_to_98", "fast_98_under_1s"),
    "train-compare": ("gap_pp",),
    "tests-cuda": ("pytest",),
}


def key_figure(step: dict[str, Any]) -> str:
    """A short text of a step's main figures for the one-line table."""
    fig = step["figures"]
    if not fig:
        return step.get("note") or ""
    if "error" in fig:
        return f"figures: {fig['error']}"[:100]
    if step["name"] == "bench":
        return " ".join(
            f"{k} {v['vs_torch']}x"
            for k, v in fig.items()
            if isinstance(v, dict) and not k.endswith("/torch-cuda")
        )[:160]
    keys = KEY_FIGURE.get(step["name"], tuple(fig))
    text = " ".join(f"{k}={fig[k]}" for k in keys if k in fig)
    return (text or (step.get("note") or ""))[:160]


def table(result: dict[str, Any]) -> str:
    lines = [
        f"device: {result['device']}; total {result['total_seconds']}s of budget "
        f"{result['budget_seconds']}s"
    ]
    for s in result["steps"]:
        secs = "-" if s["seconds"] is None else f"{s['seconds']:.0f}s"
        lines.append(f"{s['name']:<16} {s['status']:<10} {secs:>5}  {key_figure(s)}")
    return "\n".join(lines)


def write_json(obj: Any, path: Path) -> None:
    """Write atomically: a temporary file beside it, then os.replace."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("environment")
    e.add_argument("out", type=Path)
    s = sub.add_parser("summary")
    s.add_argument("work", type=Path)
    s.add_argument("out", type=Path)
    s.add_argument("--steps", required=True)
    s.add_argument("--budget", type=float, required=True)
    s.add_argument("--start", type=float, required=True)
    s.add_argument("--table", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "environment":
        env = environment()
        write_json(env, args.out)
        print(json.dumps(env, indent=2))
        return 0
    result = summary(args.work, args.steps.split(","), args.budget, args.start)
    write_json(result, args.out)
    if args.table:
        print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
