"""Printing to stdout that survives `study run ... | head`.

    >>> say("trial 3 complete")
    trial 3 complete

Once the reader of a pipe has gone, stdout is pointed at /dev/null and the run goes on quietly: the
study, its checkpoints and its report are still written, and no BrokenPipeError reaches the user.
"""
from __future__ import annotations

import os
import sys


def say(text: str) -> None:
    try:
        print(text, flush=True)
    except BrokenPipeError:
        silence_stdout()


def silence_stdout() -> None:
    """Point stdout at /dev/null (what Python's docs advise on EPIPE), so later writes and the flush at
    exit do not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)
