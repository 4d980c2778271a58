"""Test accuracy of xpmlp-numpy and PyTorch on workload A for several seeds (no timing).

    python benchmarks/accuracy_seeds.py [--seeds 1,2,3] [--epochs 6] [--threads 2]

Each seed gives both rows the same initial weights (``initial_weights(spec, seed)``) and
the same batch orders (``default_rng(ORDER_SEED + seed)``), as ``xpmlp bench`` does for
seed 0; after ``--epochs`` epochs (the bench's 1 warm-up + 5 timed) it prints both test
accuracies. It tells a systematic gap between the two from the spread of the runs.
"""

from __future__ import annotations

import argparse

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import numba
    import threadpoolctl
    import torch

    from xpmlp_bench.peers import TorchRow
    from xpmlp_bench.rows import ModelSpec, XpmlpRow, initial_weights
    from xpmlp_bench.runner import ORDER_SEED, load_data
    from xpmlp_bench.workloads import full_profile

    torch.set_num_threads(args.threads)
    numba.set_num_threads(args.threads)
    threadpoolctl.threadpool_limits(args.threads)
    profile = full_profile()
    data = load_data(profile)
    spec = ModelSpec.of(profile.workloads["A"])
    for seed in map(int, args.seeds.split(",")):
        init = initial_weights(spec, seed)
        rng = np.random.default_rng(ORDER_SEED + seed)
        orders = [rng.permutation(len(data.y_train)) for _ in range(args.epochs)]
        accuracies = {}
        for row in (XpmlpRow("numpy"), TorchRow("cpu")):
            row.prepare(spec, init, data)
            for order in orders:
                row.set_order(order)
                row.train()
            accuracies[row.name] = row.accuracy()
        print(
            f"seed {seed}: " + ", ".join(f"{k} {v:.4f}" for k, v in accuracies.items()), flush=True
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
