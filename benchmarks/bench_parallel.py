"""Does --jobs 2 help on this machine? The `run` command with one and two workers, end to end.

    python -m benchmarks.bench_parallel                    # quick as shipped, and with 8x longer trials
    python -m benchmarks.bench_parallel --epochs 8 --seeds 0 --repeat 5

Each run is `python -m study run quick -q --no-report` in a fresh folder with a fresh SQLite file, timed
from the command's start to its exit, as a user waits for it: imports, the search, the confirmation runs
and best.pt. The ratio of the two medians (of --repeat runs, alternated) is the figure: single runs of
a few seconds vary by 15% on a shared machine. A process needs seconds of imports (torch,
torch._dynamo on the first optimizer, scikit-learn) before its first epoch: --jobs 1 pays them once, and
--jobs 2 pays them in two processes at once, so short studies gain less than long ones.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import baseline
from benchmarks.baseline import ROOT


def seconds(jobs: int, epochs: int | None, seeds: int | None, checkout: Path = ROOT) -> float:
    cmd = [sys.executable, "-m", "study", "run", "quick", "-q", "--no-report", "--jobs", str(jobs)]
    if epochs is not None:
        cmd += ["--set", f"training.budget={epochs}"]
    if seeds is not None:
        cmd += ["--set", f"study.confirm.seeds={seeds}"]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run(cmd, cwd=tmp, check=True, stdout=subprocess.DEVNULL,
                       env={**os.environ, "PYTHONPATH": str(checkout)})
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, nargs="+", default=[8, 64],
                        help="epochs per trial (quick ships 8)")
    parser.add_argument("--seeds", type=int, help="confirmation seeds per arm (quick ships 5; 0: none)")
    baseline.add_arguments(parser)
    args = parser.parse_args()
    with baseline.checkouts(args.baseline) as checkouts:
        for epochs in args.epochs:
            times: dict = {}
            for _ in range(args.repeat):
                for label, path in checkouts:
                    for jobs in (1, 2):
                        times.setdefault((label, jobs), []).append(seconds(jobs, epochs, args.seeds, path))
            for label, _ in checkouts:
                one, two = statistics.median(times[(label, 1)]), statistics.median(times[(label, 2)])
                print(f"{label:>8}: {os.cpu_count()} cores, quick with {epochs} epochs/trial: --jobs 1 {one:.1f} s | "
                      f"--jobs 2 {two:.1f} s | speed-up x{one / two:.2f}")


if __name__ == "__main__":
    main()
