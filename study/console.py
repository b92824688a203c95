"""Printing to stdout that survives `study run ... | head`.

    >>> say("trial 3 complete")
    trial 3 complete

Once the reader of a pipe has gone, stdout is pointed at /dev/null and the run goes on quietly: the
study, its checkpoints and its report are still written, and no BrokenPipeError reaches the user. So
once the terminal has hung up (SIGHUP), whose writes fail with EIO.
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys


def say(text: str) -> None:
    try:
        print(text, flush=True)
    except BrokenPipeError:
        silence_stdout()
    except OSError as exc:
        if exc.errno != errno.EIO:
            raise
        detach_hung_up_terminal()  # a --jobs worker's line, written before its parent's SIGTERM reached it


def silence_stdout() -> None:
    """Point stdout at /dev/null (what Python's docs advise on EPIPE), so later writes and the flush at
    exit do not fail again."""
    _to_devnull(sys.stdout.fileno())


def _to_devnull(fd: int) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def detach_hung_up_terminal() -> None:
    """Point stdout and stderr at /dev/null where they are a terminal that hung up (its window or ssh session
    closed): a write there fails with EIO, which would break off the stop half-way. A hung-up terminal is a
    character device that isatty() no longer takes for a terminal; a live one, a file and a pipe are kept."""
    for fd in (1, 2):
        with contextlib.suppress(OSError):  # a closed fd: nothing to point
            if stat.S_ISCHR(os.fstat(fd).st_mode) and not os.isatty(fd):
                _to_devnull(fd)
