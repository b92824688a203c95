"""How does the report's cost grow with the study? 1,000, 10,000 and 100,000 trials, in one run.

    python -m benchmarks.bench_report [--sizes 1000 10000 100000] [--list-trials 10000]
    python -m benchmarks.bench_report --baseline REF --sizes 30 1000 [--repeats 3]

Each size is built in a fresh process, so that its peak memory is its own: the trials are added to an
in-memory storage through Optuna's API with the user attrs a real run stores (10 epochs of history
each), then `build_report` is timed alone; the peak is the process's resident memory, study included.
The growth ratio is time(10x trials) / time(trials): 10 is linear. Then `study list` is timed as a real
command on a SQLite storage that holds a study of --list-trials trials (goals on 2 cores: 10,000 trials
in under 30 s, 100,000 in under 5 minutes and 4 GB, `study list` in under 3 s).

With --baseline, each size is built by this checkout and by REF's (a temporary worktree), alternated,
and the ratio this/REF is printed for each pair.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATUSES = ("complete", "pruned", "complete", "diverged", "failed")


def _one(n: int) -> None:
    """In a fresh process: build the study, time the report, print JSON."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import make_study

    from study.report import build_report

    start = time.perf_counter()
    study = make_study(n, statuses=STATUSES, epochs=10)
    made = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        build_report(study, Path(tmp))
        seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"trials": n, "seconds": seconds, "peak_mb": peak_mb, "build_study_s": made}))


def measure(n: int, checkout: Path = ROOT) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_report", "--one", str(n)], cwd=checkout,
                         env={**os.environ, "PYTHONPATH": str(checkout)}, capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def against(ref: str, sizes: list[int], repeats: int) -> None:
    """Each size built by REF's code and by this checkout's, alternated, `repeats` pairs."""
    from benchmarks.baseline import checkout

    with checkout(ref) as old:
        measure(20, old)  # warm
        for n in sizes:
            pairs = []
            for i in range(repeats):
                order = (old, ROOT) if i % 2 == 0 else (ROOT, old)
                took = {path: measure(n, path)["seconds"] for path in order}
                pairs.append((took[old], took[ROOT]))
            print(f"report of {n:>7,} trials: {ref} / this checkout, s: "
                  + ", ".join(f"{a:.2f}/{b:.2f}" for a, b in pairs)
                  + " | this/ref: " + ", ".join(f"{b / a:.2f}" for a, b in pairs), flush=True)


def list_seconds(n: int) -> tuple[float, float]:
    """Seconds of `python -m study list` on a SQLite storage with an n-trial study, and of `--help` there
    (the command's fixed start-up, to read the first against)."""
    sys.path.insert(0, str(ROOT / "tests"))
    import optuna
    from conftest import make_study

    from study.storage import open_storage

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'big.db'}"
        optuna.copy_study(from_study_name="made", from_storage=make_study(n, epochs=10, statuses=STATUSES)._storage,
                          to_storage=open_storage(url))
        times = []
        for args in (["list", "--storage", url], ["--help"]):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "study", *args], cwd=ROOT, capture_output=True, check=True)
            times.append(time.perf_counter() - start)
    return times[0], times[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--list-trials", type=int, default=10_000, help="0 skips the `study list` timing")
    parser.add_argument("--baseline", help="a git ref whose reports to time too, alternated, in the same run")
    parser.add_argument("--repeats", type=int, default=3, help="pairs per size, with --baseline")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return _one(args.one)
    measure(20)  # warm: font cache, compiled bytecode
    print(f"{os.cpu_count()} cores")
    if args.baseline:
        return against(args.baseline, args.sizes, args.repeats)
    previous = None
    for n in args.sizes:
        r = measure(n)
        growth = f" | growth x{r['seconds'] / previous['seconds']:.1f} for x{n / previous['trials']:.0f} trials" \
            if previous else ""
        print(f"report of {n:>7,} trials: {r['seconds']:7.1f} s, peak {r['peak_mb']:6.0f} MB "
              f"(building the study took {r['build_study_s']:.1f} s){growth}", flush=True)
        previous = r
    if args.list_trials:
        listed, bare = list_seconds(args.list_trials)
        print(f"study list, SQLite, {args.list_trials:,} trials: {listed:.2f} s (the command's start-up alone, "
              f"--help: {bare:.2f} s)")


if __name__ == "__main__":
    main()
