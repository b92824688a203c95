"""Signals as requests to stop: a terminal's hang-up arrives more than once, and is one request."""
import os
import signal

import pytest

from study import interrupts


@pytest.fixture(autouse=True)
def sighup_restored():
    before = signal.getsignal(signal.SIGHUP)
    yield
    signal.signal(signal.SIGHUP, before)


def test_a_second_sighup_is_the_hang_up_s_echo_not_a_second_request():
    """The kernel signals a hung-up terminal's job, and so does its shell: taken as "asked twice", the second
    broke the clean stop off at whatever line it landed on."""
    with interrupts.handled():
        os.kill(os.getpid(), signal.SIGHUP)
        try:
            os.kill(os.getpid(), signal.SIGHUP)
        except KeyboardInterrupt:
            pytest.fail("the second SIGHUP raised at once, in its handler")
        assert interrupts.requested() == "SIGHUP"
        with pytest.raises(KeyboardInterrupt, match="SIGHUP"):
            interrupts.check()  # at the next safe point, once
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN  # not SIGHUP's default, which would kill the exit


def test_a_server_s_second_sighup_cannot_kill_it_while_it_exits():
    """After the first SIGHUP's KeyboardInterrupt, the block's exit restored SIGHUP's default, and the second
    killed the server before it closed its storage."""
    with pytest.raises(KeyboardInterrupt, match="SIGHUP"):
        with interrupts.terminated_as_interrupted():
            os.kill(os.getpid(), signal.SIGHUP)
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN  # the echo, while the server exits: ignored
