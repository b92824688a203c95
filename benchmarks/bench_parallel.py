"""Does --jobs 2 help on this machine? Trials per minute with one and two workers on the same study.

    python -m benchmarks.bench_parallel [--trials 16]

Both runs use the `quick` space without pruning on a fresh SQLite storage; the ratio is the figure.
Worker processes cost a start-up (a Python with torch imported), so short trials gain less.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from study.config import load_config
from study.runner import run_study


def trials_per_minute(jobs: int, n_trials: int, epochs: int) -> float:
    cfg = load_config("quick", [f"study.n_trials={n_trials}", "study.pruner={name: none}", "study.confirm.seeds=0",
                                f"training.budget={epochs}"])
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run_study(cfg, f"sqlite:///{Path(tmp) / 'b.db'}", torch.device("cpu"), checkpoint_root=Path(tmp),
                  quiet=True, jobs=jobs)
        return n_trials / (time.perf_counter() - start) * 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, nargs="+", default=[8, 64], help="trial lengths to compare")
    args = parser.parse_args()
    for epochs in args.epochs:
        one, two = trials_per_minute(1, args.trials, epochs), trials_per_minute(2, args.trials, epochs)
        print(f"{os.cpu_count()} cores, {epochs} epochs/trial: --jobs 1 {one:.1f} trials/min | "
              f"--jobs 2 {two:.1f} trials/min | scaling x{two / one:.2f}")


if __name__ == "__main__":
    main()
