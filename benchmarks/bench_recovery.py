"""What a crash costs: `study run` killed outright (SIGKILL, the OOM killer's way) partway, then run again,
against the same run left alone.

    python -m benchmarks.bench_recovery                        # both engines, killed half-way
    python -m benchmarks.bench_recovery --baseline da581bd     # and the code before a change, in the same run

Each run is `python -m study run quick --no-report -q --engine E` in a fresh folder with a fresh SQLite
file. The figure is (time to the kill + the rerun's time) / the time of a run never killed: what the
user waits in all, as a multiple of what they would have waited. The rerun pays its imports again and
retrains the dead trials' epochs after their last checkpoint; anything beyond that is waiting. Medians
of --repeat runs, alternated: a kill lands in a different trial or phase each time.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import baseline


def _command(engine: str) -> list[str]:
    return [sys.executable, "-m", "study", "run", "quick", "-q", "--no-report", "--engine", engine]


def _run(cmd: list[str], cwd: str, env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def whole(engine: str, checkout: Path) -> float:
    """Seconds of a run that is never killed."""
    with tempfile.TemporaryDirectory() as tmp:
        return _run(_command(engine), tmp, {**os.environ, "PYTHONPATH": str(checkout)})


def crashed(engine: str, checkout: Path, kill_after: float) -> float:
    """Seconds until the kill, plus the rerun's."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    with tempfile.TemporaryDirectory() as tmp:
        first = subprocess.Popen(_command(engine), cwd=tmp, env=env, stdout=subprocess.DEVNULL,
                                 start_new_session=True)
        time.sleep(kill_after)
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        return kill_after + _run(_command(engine), tmp, env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", nargs="+", default=["sequential", "population"])
    parser.add_argument("--at", type=float, default=0.5, help="the kill, as a fraction of an unkilled run's time")
    baseline.add_arguments(parser)
    args = parser.parse_args()
    with baseline.checkouts(args.baseline) as checkouts:
        for engine in args.engine:
            times: dict = {}
            for _ in range(args.repeat):
                for label, path in checkouts:
                    alone = whole(engine, path)
                    times.setdefault((label, "whole"), []).append(alone)
                    times.setdefault((label, "crashed"), []).append(crashed(engine, path, args.at * alone))
            for label, _ in checkouts:
                alone, total = statistics.median(times[(label, "whole")]), statistics.median(times[(label, "crashed")])
                print(f"{label:>8}: quick, {engine} engine: never killed {alone:.1f} s | killed at {args.at:.0%} and "
                      f"run again {total:.1f} s in all | crash cost x{total / alone:.2f}")


if __name__ == "__main__":
    main()
