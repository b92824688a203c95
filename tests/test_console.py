"""Printing that outlives its reader: a pipe closed by `| head`, a terminal that hung up."""
import os
import pty
import sys
import time

from conftest import cli_env

# A --jobs worker: it ignores SIGHUP (its parent handles it) and prints its lines until its parent's SIGTERM.
WORKER = """\
import signal, sys, time
from study.console import say
signal.signal(signal.SIGHUP, signal.SIG_IGN)
say("ready")
while sys.stdin.isatty():  # until the terminal hangs up
    time.sleep(0.01)
say("a line to the terminal that hung up")
say("and another")
"""


def test_a_line_to_a_terminal_that_hung_up_is_dropped_not_raised(tmp_path):
    """Its write fails with EIO: a worker that printed a trial's line there crashed and left its trials running."""
    pid, master = pty.fork()
    if pid == 0:
        try:
            os.execve(sys.executable, [sys.executable, "-c", WORKER], cli_env())
        finally:
            os._exit(127)
    seen, end = b"", time.monotonic() + 60
    while b"ready" not in seen:
        assert time.monotonic() < end, seen
        seen += os.read(master, 1024)
    os.close(master)  # the hang-up
    while not (done := os.waitpid(pid, os.WNOHANG))[0]:
        assert time.monotonic() < end, "the child did not end"
        time.sleep(0.05)
    assert os.waitstatus_to_exitcode(done[1]) == 0
