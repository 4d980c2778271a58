"""Writing a benchmark result: the terminal table, Markdown, JSON and a PNG chart.

The result is the dict of ``runner.run_benchmark``. Text and Markdown show
the same tables: one per workload, a row per trainer, then the peak the
percentages refer to and the rows that were skipped, with why.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xpmlp.machine.atomic import atomic_write

from .machine import blas_summary, xpmlp_blas_summary

TIMED_HEADERS = (
    "row",
    "s/unit",
    "min",
    "max",
    "samples/s",
    "GFLOP/s",
    "% peak",
    "GEMM s",
    "outside GEMM",
    "vs torch",
    "test acc",
)
D_HEADERS = (
    "row",
    "s to target",
    "min",
    "max",
    "reached",
    "epochs",
    "final acc",
    "s/epoch",
    "vs torch",
    "vs torch s/epoch",
)


def _f(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


BELOW_NOISE = "< noise"
NOISE_NOTE = (
    f"outside GEMM {BELOW_NOISE}: the products timed alone took as long as the whole "
    "step or longer (two separate, noisy timings), so the share spent outside them is "
    "below what this run can measure; it is shown as such, never as a negative share"
)


def outside_gemm_cell(share: float | None) -> str:
    """The "outside GEMM" cell: the share in percent, or ``BELOW_NOISE`` where the separate
    timings make it negative (the products alone timed slower than the whole step)."""
    if share is None:
        return "-"
    return BELOW_NOISE if share < 0 else f"{100 * share:.1f}%"


def _timed_cells(r: dict[str, Any]) -> list[str]:
    s = r["seconds"]
    return [
        r["row"],
        _f(s["median"], ".4f"),
        _f(s["min"], ".4f"),
        _f(s["max"], ".4f"),
        _f(r["samples_per_s"], ",.0f"),
        _f(r["gflops"], ".1f"),
        _f(100 * r["peak_fraction"], ".1f"),
        _f(r["gemm_seconds"], ".4f"),
        outside_gemm_cell(r["outside_gemm_share"]),
        _f(r["vs_torch"], ".2f") + "x" if r["vs_torch"] is not None else "-",
        _f(r["test_accuracy"], ".4f"),
    ]


def _d_cells(r: dict[str, Any]) -> list[str]:
    t = r["time_to_target"] or {}
    epochs = [e for e in r["epochs_to_target"] if e is not None]
    return [
        r["row"],
        _f(t.get("median"), ".2f"),
        _f(t.get("min"), ".2f"),
        _f(t.get("max"), ".2f"),
        f"{r['reached']}/{r['runs']}",
        ",".join(str(e) for e in epochs) or "-",
        ",".join(f"{a:.4f}" for a in r["final_accuracy"]),
        _f(r["epoch_seconds"]["median"], ".3f"),
        _f(r["vs_torch"], ".2f") + ("x" if r["vs_torch"] is not None else ""),
        _f(r["vs_torch_epoch"], ".2f") + ("x" if r["vs_torch_epoch"] is not None else ""),
    ]


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> str:
    """Rows of cells as an aligned text table, or a Markdown pipe table."""
    if markdown:
        lines = [
            "| " + " | ".join(headers) + " |",
            "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|",
        ]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join(
        [fmt.format(*headers), "  ".join("-" * w for w in widths)] + [fmt.format(*r) for r in rows]
    )


def _workload_block(w: dict[str, Any], markdown: bool) -> list[str]:
    title = f"### {w['description']}" if markdown else f"== {w['description']}"
    lines = [title, ""] if markdown else [title]
    if w["kind"] == "to_accuracy":
        lines.append(render_table(D_HEADERS, [_d_cells(r) for r in w["rows"]], markdown))
        lines.append("")
        lines.append(
            f"target {w['target_accuracy']:.1%} test accuracy; seconds = training "
            "only (evaluation after each epoch not timed); 'vs torch' only when every "
            "seed reached the target for both rows"
        )
    else:
        lines.append(render_table(TIMED_HEADERS, [_timed_cells(r) for r in w["rows"]], markdown))
        lines.append("")
        for dev, p in w["peaks"].items():
            lines.append(
                f"peak {dev} ({p['library']}): {p['gflops']:.1f} GFLOP/s = max(square sgemm "
                f"{p['square_gflops']:.1f}, workload shapes {p['workload_shapes_gflops']:.1f}); "
                f"denominator: {p['denominator']}"
            )
        flops = w["flops_per_unit"] / 1e9
        lines.append(
            f"unit: {w['unit_steps']} steps, {w['unit_samples']} samples, "
            f"{flops:.2f} GFLOP of matrix products; median of {w['repeats']} "
            f"alternating repeats after {w['warmup']} warm-up"
        )
        if w.get("row_blocks"):
            lines.append(w["row_blocks"])
        if any((r.get("outside_gemm_share") or 0) < 0 for r in w["rows"]):
            lines.append(NOISE_NOTE)
        setup = [(r["row"], r["setup_seconds"]) for r in w["rows"] if r.get("setup_seconds")]
        if setup:
            lines.append(
                "compile and capture, before the timed passes (not in the times): "
                + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in setup)
            )
    for name, reason in w.get("skipped", {}).items():
        lines.append(f"skipped: {name}: {reason}")
    lines.append("")
    return lines


def machine_lines(result: dict[str, Any]) -> list[str]:
    m = result["machine"]
    gpu = m.get("gpu") or {}
    torch = m.get("torch") or {}
    lines = [
        f"machine: {m['cpu']}, {m['logical_cores']} logical cores ({m['cores_available']} "
        f"available), load average at start {_f_list(m.get('load_average'))}, at end "
        f"{_f_list(result.get('load_average_end'))}",
        blas_summary(m),
        xpmlp_blas_summary(result),
        f"threads: {result['threads'] if result['threads'] is not None else 'unchanged'} "
        f"(Numba {m['numba']['num_threads']}, PyTorch {torch.get('num_threads', '-')}, "
        f"PyTorch BLAS {torch.get('blas', '-')})",
        "GPU: "
        + (
            gpu.get("name", "?")
            if gpu.get("usable")
            else f"none ({gpu.get('reason', 'not probed')})"
        ),
        "versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        f"data: {result['data']['source']}",
        "source: "
        + (
            f"git {m['source']['commit']} with {m['source']['changed_paths']} changed paths"
            if m.get("source")
            else "not a git checkout"
        ),
        f"profile: {result['profile_description']}",
    ]
    if m.get("env"):
        lines.append("env: " + ", ".join(f"{k}={v}" for k, v in m["env"].items()))
    lines.extend(f"note: {n}" for n in result.get("notes", []))
    return lines


def _f_list(values: Sequence[float] | None) -> str:
    return "-" if not values else "/".join(f"{v:.2f}" for v in values)


def text_report(result: dict[str, Any]) -> str:
    """The terminal report: machine lines, then a table per workload."""
    lines = machine_lines(result) + [""]
    for w in result["workloads"]:
        lines.extend(_workload_block(w, markdown=False))
    return "\n".join(lines)


COLUMNS_HELP = """\
Columns: s/unit = median seconds of one timed unit (min, max over the repeats); samples/s;
GFLOP/s = matrix-product FLOPs (2mnk each: forward, dW of every layer, dX of all but the
first) per second; % peak = of the device's sgemm peak measured in the same run; GEMM s =
the step's matrix products alone, per unit; outside GEMM = 1 - GEMM s / s/unit ("< noise"
where the products alone timed as slow as the whole step or slower); vs torch =
t_torch / t_row on the same device (> 1: faster than PyTorch)."""


def markdown_report(result: dict[str, Any]) -> str:
    lines = [f"# xpmlp bench ({result['profile']}, {result['started']})", ""]
    lines += [f"- {line}" for line in machine_lines(result)] + ["", COLUMNS_HELP, ""]
    for w in result["workloads"]:
        lines.extend(_workload_block(w, markdown=True))
    return "\n".join(lines)


def write_json(result: dict[str, Any], path: Path) -> None:
    with atomic_write(path, "w") as f:
        f.write(json.dumps(result, indent=2, allow_nan=False) + "\n")


def panel_values(w: dict[str, Any]) -> tuple[list[tuple[str, float | None]], str | None]:
    """The bars of workload ``w``'s panel, (row, value; None for a row of D that never reached
    the target), and a note: why the panel is empty, or what a row without a bar means (None
    when every row has a bar)."""
    rows = w["rows"]
    if not rows:
        skipped = ", ".join(w.get("skipped", {})) or "none"
        return [], f"no row ran (skipped: {skipped})"
    if w["kind"] != "to_accuracy":
        return [(r["row"], r["samples_per_s"]) for r in rows], None
    vals = [
        (r["row"], r["time_to_target"]["median"] if r["time_to_target"] else None) for r in rows
    ]
    epochs = w.get("max_epochs")
    within = f" within {epochs} epochs" if epochs else ""
    target = f"{w['target_accuracy']:.1%} test accuracy{within}"
    if all(v is None for _, v in vals):
        runs = max(r["runs"] for r in rows)
        best = max((a for r in rows for a in r["final_accuracy"]), default=None)
        reached = f"; best final accuracy {best:.2%}" if best is not None else ""
        return [], (
            f"empty: no row reached {target} in {runs} run(s){reached}, so there is "
            "no time to target to draw"
        )
    missing = any(v is None for _, v in vals)
    return vals, f"not reached: {target}" if missing else None


def write_png(result: dict[str, Any], path: Path) -> str:
    """A bar chart of speed per workload (samples/s; D: seconds to the target accuracy), each
    empty panel saying why; returns what happened."""
    try:
        from xpmlp.plots import new_figure, save_png
        from xpmlp.plots.canvas import PlotDependencyError

        workloads = result["workloads"]
        fig = new_figure(4 * max(1, len(workloads)), 3.5)
    except (ImportError, PlotDependencyError):
        return (
            f"no {path.name}: matplotlib is not installed (pip install -e '.[plot]' in the "
            "xpmlp checkout)"
        )
    axes = fig.subplots(1, max(1, len(workloads)), squeeze=False)
    for ax, w in zip(axes[0], workloads, strict=False):
        vals, note = panel_values(w)
        if w["kind"] == "to_accuracy":
            ax.set_xlabel(f"seconds to {w['target_accuracy']:.0%} (lower is better)")
        else:
            ax.set_xlabel("samples/s (higher is better)")
        ax.set_title(
            w["key"] + ": " + "-".join(map(str, w["layer_sizes"])) + f", batch {w['batch_size']}",
            fontsize=9,
        )
        if not vals:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.text(
                0.5,
                0.5,
                textwrap.fill(note or "empty", 34),
                ha="center",
                va="center",
                transform=ax.transAxes,
                fontsize=8,
                color="0.3",
            )
            continue
        ax.barh([v[0] for v in vals], [v[1] or 0.0 for v in vals], color="tab:blue")
        ax.invert_yaxis()
        for i, (_, value) in enumerate(vals):
            if value is None:  # a row of D that never reached the target: no time to draw
                ax.text(
                    0.02,
                    i,
                    textwrap.fill(note or "not reached", 40),
                    va="center",
                    ha="left",
                    fontsize=7,
                    color="0.3",
                    transform=ax.get_yaxis_transform(),
                )
    fig.suptitle(f"xpmlp bench ({result['profile']}): {result['machine']['cpu']}", fontsize=10)
    save_png(fig, path)
    return f"wrote {path}"


def write_all(result: dict[str, Any], out_dir: Path) -> list[str]:
    """bench.json, bench.md and bench.png under ``out_dir``, each written atomically; returns
    one message per file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(result, out_dir / "bench.json")
    with atomic_write(out_dir / "bench.md", "w") as f:
        f.write(markdown_report(result) + "\n")
    return [
        f"wrote {out_dir / 'bench.json'}",
        f"wrote {out_dir / 'bench.md'}",
        write_png(result, out_dir / "bench.png"),
    ]
