"""xpmlp.MLPClassifier against scikit-learn's MLPClassifier: test accuracy and fit time.

    python benchmarks/bench_sklearn.py                       # digits and MNIST, 5 seeds
    python benchmarks/bench_sklearn.py --datasets digits --threads 2
    python benchmarks/bench_sklearn.py --datasets mnist --seeds 2 --max-iter 10

Both estimators get the same hyper-parameters: scikit-learn's defaults ("default") and one
tuned setting ("tuned": two hidden layers, batch 128, learning_rate_init 2e-3, early
stopping off). digits: load_digits, a 70/30 split, standardized on the training part.
MNIST: xpmlp.datasets.load_mnist (XPMLP_DATA_DIR, else the repository's data/mnist),
pixels / 255. Per setting, the mean over the seeds of the test accuracy and the fit seconds;
BLAS and Numba use the same thread count (--threads) for both. xpmlp runs in float32 (its
default), scikit-learn in float64 (its dtype for float64 input). Not a test: nothing here
is collected by pytest (no test functions).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from typing import Any

import numpy as np

SETTINGS: dict[str, dict[str, Any]] = {
    "default": {},
    "tuned": {
        "hidden_layer_sizes": (256, 128),
        "batch_size": 128,
        "learning_rate_init": 2e-3,
        "alpha": 1e-4,
    },
}


def load(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    if name == "digits":
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0)
        scaler = StandardScaler().fit(X_train)
        return scaler.transform(X_train), scaler.transform(X_test), y_train, y_test
    from xpmlp.datasets import load_mnist

    data = load_mnist(download=False, progress=False)
    return (
        data.x_train.reshape(len(data.x_train), -1) / 255.0,
        data.x_test.reshape(len(data.x_test), -1) / 255.0,
        data.y_train,
        data.y_test,
    )


def run(make: Any, data: tuple[np.ndarray, ...], seeds: int) -> tuple[float, float, float]:
    """Mean test accuracy, mean fit seconds and mean iterations over the seeds."""
    from sklearn.exceptions import ConvergenceWarning

    X_train, X_test, y_train, y_test = data
    accs, secs, iters = [], [], []
    for seed in range(seeds):
        est = make(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            t0 = time.perf_counter()
            est.fit(X_train, y_train)
            secs.append(time.perf_counter() - t0)
        accs.append(est.score(X_test, y_test))
        iters.append(est.n_iter_)
    return float(np.mean(accs)), float(np.mean(secs)), float(np.mean(iters))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="digits,mnist")
    parser.add_argument("--settings", default="default,tuned")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--max-iter",
        type=int,
        default=None,
        help="cap max_iter for both (scikit-learn's default is 200)",
    )
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--json", default=None, help="write the results here too")
    args = parser.parse_args(argv)

    import numba
    from sklearn.neural_network import MLPClassifier as SkClassifier
    from threadpoolctl import threadpool_limits

    import xpmlp

    if args.threads:
        numba.set_num_threads(args.threads)
    results = []
    with threadpool_limits(args.threads):
        xpmlp.MLPClassifier(max_iter=1, backend=args.backend).fit(  # compile the kernels
            np.random.default_rng(0).standard_normal((50, 4)), np.arange(50) % 3
        )
        for dataset in args.datasets.split(","):
            data = load(dataset)
            for setting in args.settings.split(","):
                params = dict(SETTINGS[setting])
                if args.max_iter:
                    params["max_iter"] = args.max_iter
                ours = run(
                    lambda s, p=params: xpmlp.MLPClassifier(  # float32 on float64 data
                        random_state=s, backend=args.backend, dtype="float32", **p
                    ),
                    data,
                    args.seeds,
                )
                theirs = run(
                    lambda s, p=params: SkClassifier(random_state=s, **p), data, args.seeds
                )
                row = {
                    "dataset": dataset,
                    "setting": setting,
                    "params": repr(params),
                    "seeds": args.seeds,
                    "threads": args.threads,
                    "xpmlp_accuracy": ours[0],
                    "sklearn_accuracy": theirs[0],
                    "xpmlp_fit_s": ours[1],
                    "sklearn_fit_s": theirs[1],
                    "xpmlp_iters": ours[2],
                    "sklearn_iters": theirs[2],
                    "speedup": theirs[1] / ours[1],
                }
                results.append(row)
                print(
                    f"{dataset:7s} {setting:8s} accuracy xpmlp {ours[0]:.4f} sklearn "
                    f"{theirs[0]:.4f} (diff {100 * (ours[0] - theirs[0]):+.2f} pt) | fit "
                    f"xpmlp {ours[1]:.2f} s sklearn {theirs[1]:.2f} s "
                    f"({theirs[1] / ours[1]:.1f}x) | iters {ours[2]:.0f} / {theirs[2]:.0f}",
                    flush=True,
                )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
