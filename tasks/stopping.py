"""Stopping a training when asked: the first SIGINT or SIGTERM stops every search at its next trial
boundary (a boosting fit at its next round), finished trials stay in their studies, nothing is
registered, and the command ends with `stopped by SIGINT after N trials; rerun to resume` (exit code
130, or 143 for SIGTERM). A second signal exits at once.

Stdlib only; the handlers are installed by the command (`gauntlet train`) or the flow, in the main thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator

from config.errors import GauntletError

_event = threading.Event()
_state = {"signal": None, "trials": 0}
_lock = threading.Lock()


class Stopped(GauntletError):
    """The run was asked to stop (a signal, or Prefect's cancellation)."""

    def __init__(self, signum: int | None = None) -> None:
        self.signum = signum if signum is not None else _state["signal"] or signal.SIGINT
        name = signal.Signals(self.signum).name
        super().__init__(f"stopped by {name} after {_state['trials']} trials; rerun to resume")

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum)


def requested() -> bool:
    return _event.is_set()


def request(signum: int = signal.SIGINT) -> None:
    if not _event.is_set():
        _state["signal"] = signum
        _event.set()


def check() -> None:
    """Raise Stopped when a stop was requested: the search loops and the boosting callbacks call it."""
    if _event.is_set():
        raise Stopped()


def trial_finished() -> None:
    with _lock:
        _state["trials"] += 1


def _handle(signum: int, frame: object) -> None:
    if _event.is_set():  # the second signal: the default action, at once (the shell sees 128 + signum)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    request(signum)
    print(f"{signal.Signals(signum).name} received: stopping at the next trial boundary "
          "(finished trials are kept); send it again to exit at once", file=sys.stderr, flush=True)


class _DropStopTracebacks(logging.Filter):
    """Optuna logs the trial a stop interrupted as failed (twice, once with a traceback): the run says it once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (_event.is_set() or (record.exc_info and isinstance(record.exc_info[1], Stopped)))


_FILTER = _DropStopTracebacks()


def install() -> bool:
    """SIGINT and SIGTERM request a stop (main thread only; returns whether the handlers were installed)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _handle)
    logging.getLogger("optuna.study._optimize").addFilter(_FILTER)
    return True


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """Install the handlers for one run (the train flow) and put the previous ones back after it.

    A stop an earlier run in this process received (a notebook's interrupted train()) is forgotten on
    entry. Under `gauntlet train`, which installed the handlers first, this changes nothing.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is _handle:
        yield
        return
    _event.clear()
    _state.update(signal=None, trials=0)
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    install()
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
