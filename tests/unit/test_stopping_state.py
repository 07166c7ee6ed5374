"""tasks/stopping.py in one process: a run's handlers and stop state do not outlive it (a notebook)."""

from __future__ import annotations

import signal

from tasks import stopping


def test_a_run_restores_the_handlers_and_the_next_run_starts_unstopped():
    def mine(signum, frame):  # a notebook kernel's own handler
        pass

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        signal.signal(signal.SIGINT, mine)
        with stopping.handling():
            assert signal.getsignal(signal.SIGINT) is stopping._handle
            stopping.request(signal.SIGINT)  # Ctrl-C in the first run
            assert stopping.requested()
        assert signal.getsignal(signal.SIGINT) is mine
        assert signal.getsignal(signal.SIGTERM) is before[signal.SIGTERM]
        with stopping.handling():  # the next train() in the same kernel
            assert not stopping.requested()
            stopping.check()  # does not raise
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def test_under_the_command_the_handlers_it_installed_stay_and_a_stop_is_kept():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with stopping.handling():
            stopping.install()  # as `gauntlet train` does before the flow starts
            stopping.request(signal.SIGTERM)
            with stopping.handling():  # the flow inside the command
                assert stopping.requested()
            assert signal.getsignal(signal.SIGINT) is stopping._handle
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
        with stopping.handling():  # leaves the process unstopped for the tests after this one
            pass
