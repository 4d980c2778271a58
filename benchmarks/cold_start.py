"""Cold start: the first and the second fit in a fresh process, and what the first costs more.

    python benchmarks/cold_start.py                 # 3 fresh processes, medians
    python benchmarks/cold_start.py --runs 5 --json cold.json

Each run is a new Python process that imports xpmlp (timed), loads 20,000 MNIST rows, then
fits ``MLPClassifier((256, 128), max_iter=5, dtype="float32")`` twice (scikit-learn is
imported before the timed fits, so its import does not count). The kernels come from Numba's
on-disk cache after the first run ever; what the first fit costs more than the second is
Numba's start-up (its typing context) and the loading of the cached kernels.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

RUN = """
import json, time, warnings
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
fits = []
for _ in range(2):
    t0 = time.perf_counter()
    Est((256, 128), max_iter=5, random_state=0, dtype="float32").fit(X, y)
    fits.append(time.perf_counter() - t0)
print(json.dumps({"import": t_import, "first": fits[0], "second": fits[1]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="fresh processes (default 3)")
    parser.add_argument("--json", help="write the runs and medians here")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error(f"--runs {args.runs}: expected at least 1")
    runs = []
    for _ in range(args.runs):
        done = subprocess.run([sys.executable, "-c", RUN], capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            sys.exit(f"a run failed:\n{done.stderr[-2000:]}")
        runs.append(json.loads(done.stdout.splitlines()[-1]))
    medians = {k: statistics.median(r[k] for r in runs) for k in ("import", "first", "second")}
    medians["first - second"] = statistics.median(r["first"] - r["second"] for r in runs)
    for key, value in medians.items():
        print(f"{key:>15}: {value:.3f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"runs": runs, "medians": medians}, f, indent=1)


if __name__ == "__main__":
    main()
