"""How long does the report of a 1,000-trial study take to build? Against one of 100 trials, same run.

    python -m benchmarks.bench_report

Trials are added through Optuna's API with the user attrs a real run stores, so only report
building is timed (aim: under 30 s for 1,000 trials on a 2-core machine).
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import make_study  # noqa: E402

from study.report import build_report  # noqa: E402

STATUSES = ("complete", "pruned", "complete", "diverged", "failed")


def seconds(n: int) -> float:
    study = make_study(n, statuses=STATUSES, epochs=10)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        build_report(study, Path(tmp))
        return time.perf_counter() - start


def main() -> None:
    seconds(20)  # warm: imports, font cache
    small, big = seconds(100), seconds(1000)
    print(f"report: 100 trials {small:.2f} s | 1000 trials {big:.2f} s | 1000/100 ratio x{big / small:.2f}")


if __name__ == "__main__":
    main()
