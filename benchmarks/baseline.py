"""A git ref checked out beside this one, so that a benchmark measures before and after in the same run.

    with checkout("5c0158c") as path:       # a temporary worktree, removed after
        env = {**os.environ, "PYTHONPATH": str(path)}
    with checkouts(args.baseline) as sides:  # [(ref, its worktree), ("this", ROOT)]; just this without a ref
        for label, path in sides: ...
"""
from __future__ import annotations

import argparse
import contextlib
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def checkout(ref: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(path), ref], cwd=ROOT, check=True)
        try:
            yield path
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=True)


@contextlib.contextmanager
def checkouts(ref: str | None) -> Iterator[list[tuple[str, Path]]]:
    """The checkouts a benchmark alternates: `ref`'s worktree first, if given, then this one."""
    if ref is None:
        yield [("this", ROOT)]
        return
    with checkout(ref) as path:
        yield [(ref, path), ("this", ROOT)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--baseline and --repeat, for a benchmark that alternates checkouts(args.baseline) and shows medians."""
    parser.add_argument("--baseline", help="a git ref to measure too, in the same run, from a temporary worktree")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, alternated; the median is shown")
