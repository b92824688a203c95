"""How many more trials per minute does the population engine train than the sequential one?

    python -m benchmarks.bench_population [--device cuda] [--trials 64] [--sizes 1 4 16 64]

A `quick`-like study: the same MLP (2 x 64, ReLU) on 8x8 digits at batch 64 for 8 epochs; each trial
draws its optimizer (sgd, sgd_momentum, adam), lr, init and seed. The same trials are trained by
`run_sequential` one after another and by `run_population` in groups of K, in one run on one machine;
printed: trials/min, microseconds per model-step (a step of one trial), and the ratio to sequential.
Validation, divergence checks and history are included; storage and checkpoints are not.
"""
from __future__ import annotations

import argparse
import random
import time

import torch

from study.config import TrialConfig
from study.datacache import DataCache
from study.engine import run_sequential
from study.population import run_population
from study.trial import prepare


def configs(n: int) -> list[TrialConfig]:
    rng = random.Random(0)
    return [TrialConfig(dataset="digits", model="mlp", depth=2, width=64, batch_size=64, budget=8,
                        schedule="cosine", optimizer=rng.choice(["sgd", "sgd_momentum", "adam"]),
                        lr=10 ** rng.uniform(-3, -1), momentum=0.9, init=rng.choice(["he", "xavier"]), seed=i)
            for i in range(n)]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16, 64])
    args = parser.parse_args()
    device = torch.device(args.device)
    cache = DataCache()
    cfgs = configs(args.trials)
    steps = sum(prepare(c, device, cache=cache).budget.total_iters for c in cfgs)

    def sequential() -> None:
        for c in cfgs:
            run_sequential(prepare(c, device, cache=cache))

    def population(k: int) -> None:
        for i in range(0, len(cfgs), k):
            run_population([prepare(c, device, cache=cache) for c in cfgs[i:i + k]])

    timed(lambda: run_population([prepare(c, device, cache=cache) for c in cfgs[:4]]))  # warm
    base = timed(sequential)
    print(f"{device}, {torch.get_num_threads()} threads, {args.trials} trials, {steps // args.trials} steps each")
    print(f"sequential:      {args.trials / base * 60:8.1f} trials/min {base / steps * 1e6:8.1f} us/model-step")
    for k in args.sizes:
        t = timed(lambda k=k: population(k))
        print(f"population K={k:<3} {args.trials / t * 60:8.1f} trials/min {t / steps * 1e6:8.1f} us/model-step"
              f"  x{base / t:.2f}", flush=True)


if __name__ == "__main__":
    main()
