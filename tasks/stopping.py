"""Stopping a training when asked: the first SIGINT or SIGTERM stops every search at its next trial
boundary (a boosting fit at its next round), finished trials stay in their studies, nothing is
registered, and the command ends with `stopped by SIGINT after N trials; rerun to resume` (exit code
130, or 143 for SIGTERM). A second signal exits at once.

Stdlib only; the handlers are installed by the command (`gauntlet train`) or the flow, in the main thread.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Iterator

from config.errors import GauntletError

_event = threading.Event()
_state = {"signal": None, "trials": 0, "relay": False}
_lock = threading.Lock()


class Stopped(GauntletError):
    """The run was asked to stop (a signal, or Prefect's cancellation)."""

    def __init__(self, signum: int | None = None, trials: int | None = None) -> None:
        self.signum = signum if signum is not None else _state["signal"] or signal.SIGINT
        self.trials = trials if trials is not None else _state["trials"]
        name = signal.Signals(self.signum).name
        super().__init__(f"stopped by {name} after {self.trials} trials; rerun to resume")

    def __reduce__(self) -> tuple:  # from a search process back to the run (search.executor processes)
        return (Stopped, (self.signum, self.trials))

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


def trial_finished(count: int = 1) -> None:
    with _lock:
        _state["trials"] += count


def _handle(signum: int, frame: object) -> None:
    if _event.is_set():  # the second signal: the default action, at once (the shell sees 128 + signum)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    request(signum)
    if _state["relay"]:  # search.executor processes: the searches run in child processes of this one
        _relay()
    print(f"{signal.Signals(signum).name} received: stopping at the next trial boundary "
          "(finished trials are kept); send it again to exit at once", file=sys.stderr, flush=True)


class _DropStopTracebacks(logging.Filter):
    """Optuna logs the trial a stop interrupted as failed (twice, once with a traceback): the run says it once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (_event.is_set() or (record.exc_info and isinstance(record.exc_info[1], Stopped)))


_FILTER = _DropStopTracebacks()
OPTUNA_TRIALS_LOGGER = "optuna.study._optimize"  # where Optuna logs each failed trial


def _in_search_process() -> bool:
    """The main thread of a search's child process (search.executor processes)."""
    return threading.current_thread() is threading.main_thread() and multiprocessing.parent_process() is not None


def install() -> bool:
    """SIGINT and SIGTERM request a stop (main thread only; returns whether the handlers were installed)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _handle)
    logging.getLogger(OPTUNA_TRIALS_LOGGER).addFilter(_FILTER)
    return True


def _handle_in_child(signum: int, frame: object) -> None:
    request(signum)  # the parent process decides when to give up at once


def install_in_child() -> bool:
    """A search process's SIGINT requests a stop for its whole task (Prefect's engines leave SIGINT alone)."""
    if not _in_search_process():
        return False
    signal.signal(signal.SIGINT, _handle_in_child)
    return True


@contextlib.contextmanager
def in_child() -> Iterator[None]:
    """Around a search in a child process (search.executor processes): SIGINT (a terminal's Ctrl-C, or
    relayed by the parent) and SIGTERM stop it at its next trial. Prefect's engines around it install a
    SIGTERM bridge that would raise in the middle of a trial: the handlers are installed innermost."""
    if not _in_search_process():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    for signum in previous:
        signal.signal(signum, _handle_in_child)
    logging.getLogger(OPTUNA_TRIALS_LOGGER).addFilter(_FILTER)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def _relay() -> None:
    """SIGINT to this process's multiprocessing children: outside a search (between Prefect's engines) their
    SIGTERM raises, SIGINT never does."""
    for child in multiprocessing.active_children():
        with contextlib.suppress(OSError):
            os.kill(child.pid, signal.SIGINT)


@contextlib.contextmanager
def relaying() -> Iterator[None]:
    """While inside, a signal this process receives is passed on to its multiprocessing children."""
    _state["relay"] = True
    try:
        if _event.is_set():  # asked before the children existed
            _relay()
        yield
    finally:
        _state["relay"] = False


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """Install the handlers for one run (the train flow) and put the previous ones back after it.

    Prefect's flow engine puts its own SIGTERM bridge in first, which raises in the main thread while the
    search threads run on: the handlers are installed again here. A stop an earlier run in this process
    received (a notebook's interrupted train()) is forgotten on entry; under `gauntlet train`, which
    installed the handlers before the flow, a stop it received while setting up is kept.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    if previous[signal.SIGINT] is not _handle:
        _event.clear()
        _state.update(signal=None, trials=0)
    install()
    try:
        yield
    finally:
        for signum, handler in previous.items():
            if getattr(handler, "__module__", "").startswith("prefect."):
                continue  # the flow engine's bridge: ours stay until the engine puts back what it found
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
