"""
Benchmark results
=================

``xpmlp bench`` writes its measurements to ``bench.json`` (and a Markdown table,
``bench.md``). This example renders the three full CPU runs committed in
``benchmarks/results/cpu-2threads-abc/`` (a 2-core AMD EPYC, 2 threads): samples per
second of ``xpmlp-numpy`` and PyTorch on the workloads A, B and C, and their ratio. Only
ratios within one run mean much: that machine's speed drifted by up to 1.9x between runs.
"""

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

try:
    HERE = Path(__file__).resolve().parent
except NameError:  # run by sphinx-gallery, where __file__ may be absent
    HERE = Path.cwd()
ROOT = next(p for p in (HERE, *HERE.parents) if (p / "benchmarks" / "results").is_dir())
RUNS = sorted((ROOT / "benchmarks" / "results" / "cpu-2threads-abc").glob("run*/bench.json"))

runs = [json.loads(path.read_text()) for path in RUNS]
table = {}  # (workload, row) -> [samples/s per run]
ratios = {}  # workload -> [xpmlp-numpy vs torch per run]
for run in runs:
    for workload in run["workloads"]:
        for row in workload["rows"]:
            table.setdefault((workload["key"], row["row"]), []).append(row["samples_per_s"])
            if row["row"] == "xpmlp-numpy" and row.get("vs_torch"):
                ratios.setdefault(workload["key"], []).append(row["vs_torch"])

print(f"{len(runs)} runs, started {', '.join(r['started'][:16] for r in runs)}")
print(
    f"{'workload':8s} {'row':12s} "
    + " ".join(f"{'run ' + str(i + 1):>10s}" for i in range(len(runs)))
)
for (key, row), values in sorted(table.items()):
    print(f"{key:8s} {row:12s} " + " ".join(f"{v:10,.0f}" for v in values))

# %%
# The ratio t_torch / t_xpmlp per workload (above 1: xpmlp is faster), one bar per run,
# and the median of the three.

keys = sorted(ratios)
fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
width = 0.8 / len(runs)
for i in range(len(runs)):
    ax.bar(
        np.arange(len(keys)) + (i - (len(runs) - 1) / 2) * width,
        [ratios[k][i] for k in keys],
        width,
        label=f"run {i + 1}",
    )
for j, key in enumerate(keys):
    median = float(np.median(ratios[key]))
    ax.text(j, max(ratios[key]) + 0.05, f"median {median:.2f}x", ha="center")
ax.axhline(1.0, color="k", lw=1)
descriptions = {w["key"]: w["description"].split(";")[0] for w in runs[0]["workloads"]}
ax.set_xticks(range(len(keys)), [f"{k}: batch {descriptions[k].split('batch ')[-1]}" for k in keys])
ax.set(
    ylabel="xpmlp-numpy speed / PyTorch speed",
    ylim=(0, max(map(max, ratios.values())) + 0.4),
    title="xpmlp-numpy vs PyTorch (CPU), same-run ratios",
)
ax.legend(loc="upper right")
plt.show()
