"""Ctrl-C, SIGTERM and a terminal's hang-up as a request to stop at the next safe point, not an exception at
a random line.

    >>> import os
    >>> with handled():                             # SIGINT, SIGTERM and SIGHUP set a flag instead of raising
    ...     os.kill(os.getpid(), signal.SIGTERM)
    ...     try:
    ...         check()                             # raises here, between two training steps
    ...     except KeyboardInterrupt as stop:
    ...         print("stopped by", stop)
    stopped by SIGTERM

A KeyboardInterrupt raised in the middle of a storage write could leave a trial running forever; a
flag read between steps and between trials cannot. A second signal raises at once, for a user who
really means it. Worker processes of `--jobs N` ignore SIGINT and SIGHUP and stop on their parent's
SIGTERM, so that a terminal's Ctrl-C or hang-up, sent to the whole process group, is handled once, by the
parent.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator

from study.console import detach_hung_up_terminal

_requested: str | None = None


def requested() -> str | None:
    """The name of the signal that asked this process to stop, if one did."""
    return _requested


def check() -> None:
    if _requested is not None:
        raise KeyboardInterrupt(_requested)


def request(name: str) -> None:
    global _requested
    _requested = name


def _on_signal(signum: int, frame: Any) -> None:
    name = signal.Signals(signum).name
    _terminal_gone(signum)
    if _requested is not None:
        raise KeyboardInterrupt(name)  # asked twice: stop now
    request(name)


def _terminal_gone(signum: int) -> None:
    """What every stop signal's handler does first, where the terminal has hung up: its writes go to
    /dev/null (a --jobs worker learns of a hang-up by its parent's SIGTERM), and SIGHUP is ignored from then
    on. A terminal hangs up once: a second SIGHUP (the kernel's to the foreground job, then the shell's to its
    jobs) is its echo, not a user asking twice, and after the handler SIGHUP's default would kill the process
    mid-stop; `installed` leaves it ignored."""
    detach_hung_up_terminal()
    if signum == signal.SIGHUP:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)


@contextlib.contextmanager
def installed(handler: Any, signals: tuple[int, ...]) -> Iterator[None]:
    """Within the block, `handler` handles `signals`; the previous handlers come back after it, where the
    handler is still the one installed. Only the main thread can own signal handlers: elsewhere this does
    nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, old in previous.items():
            if signal.getsignal(s) is handler:
                signal.signal(s, old)


@contextlib.contextmanager
def handled(signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)) -> Iterator[None]:
    """Within the block, `signals` request a stop. A SIGHUP (the terminal or ssh session closed) killed the
    command where it stood, its trials left running."""
    global _requested
    try:
        with installed(_on_signal, _not_ignored(signals)):
            yield
    finally:
        _requested = None


def _not_ignored(signals: tuple[int, ...]) -> tuple[int, ...]:
    """`signals`, less a SIGHUP that the process ignores: `nohup` asked for that."""
    return tuple(s for s in signals if s != signal.SIGHUP or signal.getsignal(s) is not signal.SIG_IGN)
