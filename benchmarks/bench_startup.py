"""How long the light commands take to answer: `study --help`, `study spaces` and `study list`, each as a
fresh process, against a bare `python -c pass` in the same run (the interpreter's own start-up).

    python -m benchmarks.bench_startup [--repeat 5]

`list` reads a SQLite storage holding one finished `quick`-sized study, made once before timing.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def seconds(args: list[str], cwd: Path, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([sys.executable, *args], cwd=cwd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        subprocess.run([sys.executable, "-m", "study", "run", "quick", "-q", "--no-report", "--trials", "4",
                        "--set", "study.confirm.seeds=0"], cwd=cwd, check=True, capture_output=True)
        bare = seconds(["-c", "pass"], cwd, args.repeat)
        print(f"python -c pass: {bare:.2f} s (the baseline)")
        for command in (["--help"], ["spaces"], ["list"]):
            t = seconds(["-m", "study", *command], cwd, args.repeat)
            print(f"study {command[0]:<8} {t:.2f} s, x{t / bare:.1f} the bare interpreter")


if __name__ == "__main__":
    main()
