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

