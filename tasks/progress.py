"""What a person at the terminal sees while a run works: the stage, and a line per family's search.

The searches report to `BOARD`, one per process (with search.executor: process, a family's line moves
only when it ends). `Display` shows it live on a terminal, holding Prefect's console logs back
meanwhile, as plain `[progress]` lines otherwise, or not at all with `--quiet`.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from tasks.stopping import OPTUNA_TRIALS_LOGGER


@dataclass
class FamilyLine:
    family: str
    budget: int
    metric: str
    done: int = 0
    best: float | None = None
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    state: str = "searching"

    def elapsed(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def text(self) -> str:
        best = f"{self.best:.4f}" if self.best is not None else "-"
        return (f"{self.family}: {self.done}/{self.budget} trials, best {self.metric} {best}, "
                f"{self.elapsed():.1f} s, {self.state}")


class Board:
    """The run's progress as the searches report it (thread-safe; `version` counts the changes)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.stage = ""
        self.families: dict[str, FamilyLine] = {}
        self.version = 0

    def reset(self) -> None:
        with self._lock:
            self.stage, self.families, self.version = "", {}, self.version + 1

    def set_stage(self, name: str) -> None:
        with self._lock:
            self.stage = name
            self.version += 1

    def family_started(self, family: str, budget: int, metric: str) -> None:
        with self._lock:
            self.families[family] = FamilyLine(family, budget, metric)
            self.version += 1

    def trial_done(self, family: str, done: int, best: float | None) -> None:
        with self._lock:
            line = self.families.get(family)
            if line is not None:
                line.done, line.best = done, best
                self.version += 1

    def family_ended(self, family: str, state: str) -> None:
        with self._lock:
            line = self.families.get(family)
            if line is not None:
                line.ended, line.state = time.monotonic(), state
                self.version += 1

    def snapshot(self) -> tuple[int, str, list[FamilyLine]]:
        with self._lock:
            lines = [FamilyLine(**vars(line)) for line in self.families.values()]
            return self.version, self.stage, lines

    def __reduce__(self) -> tuple:
        # Tasks that search.executor processes sends to another process are pickled with the globals they
        # use: the board goes by name, and that process reports to its own (its lock does not pickle).
        return (process_board, ())


BOARD = Board()


def process_board() -> Board:
    """This process's board."""
    return BOARD


class _UserErrorsWithoutTraceback(logging.Filter):
    """Drops the traceback from a log record of a GauntletError (a bad config or table, worded with its fix):
    the command ends with that one line; a traceback would only bury it."""

    def filter(self, record: logging.LogRecord) -> bool:
        from config.errors import GauntletError
        from tasks import stopping

        if stopping.requested() and record.levelno >= logging.WARNING and "Stopped" in record.getMessage():
            return False  # each task and flow failing on the stop: the command says it once, at its end
        if record.exc_info and isinstance(record.exc_info[1], GauntletError):
            record.exc_info, record.exc_text = None, None
        return True


USER_ERRORS = _UserErrorsWithoutTraceback()


def _prefect_console_handlers() -> list[logging.Handler]:
    from prefect.logging.handlers import PrefectConsoleHandler

    found: dict[int, logging.Handler] = {}
    for logger in [logging.getLogger(), *[logging.getLogger(n) for n in list(logging.root.manager.loggerDict)]]:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, PrefectConsoleHandler):
                found[id(handler)] = handler
    return list(found.values())


def quiet_stop_logs() -> None:
    """In a search process (search.executor processes): its console, like the run's, says nothing of a stop."""
    for handler in _prefect_console_handlers():
        handler.addFilter(USER_ERRORS)


class _NoDrainNotice(logging.Filter):
    """Prefect's event worker, sending a command's last events as the process exits, says it is "Still
    processing items"; they are sent all the same, and a failed command's last line stays its error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Still processing items")


def quiet_exit_drain() -> None:
    """For a command whose flow sends no heartbeat (nothing to join at its end, see tasks.stages)."""
    logging.getLogger("EventsWorker").addFilter(_NoDrainNotice())


class _OneLinePerFailedTrial(logging.Filter):
    """Optuna's warning for a failed trial without its traceback: one line per trial on a quiet or live
    console (the error is kept in the trial's `error` attribute and named if the family fails)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info, record.exc_text = None, None
        return True


FAILED_TRIALS = _OneLinePerFailedTrial()


class Display:
    """Shows `BOARD` while a command runs: mode 'live', 'plain' or 'off' ('auto': live on a terminal)."""

    def __init__(self, mode: str = "auto", stream: TextIO | None = None, plain_every_s: float = 5.0,
                 live_every_s: float = 0.1) -> None:
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "live" if getattr(self.stream, "isatty", lambda: False)() else "plain"
        self.mode, self.plain_every_s, self.live_every_s = mode, plain_every_s, live_every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._held: list[tuple[logging.Handler, int]] = []
        self._filtered: list[logging.Handler] = []

    def __enter__(self) -> Display:
        BOARD.reset()
        self._quiet_user_errors()
        if self.mode in ("live", "off"):
            self._hold_console_logs(logging.WARNING)
            logging.getLogger(OPTUNA_TRIALS_LOGGER).addFilter(FAILED_TRIALS)
        if self.mode != "off":
            self._thread = threading.Thread(target=self._live if self.mode == "live" else self._plain,
                                            name="progress-display", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for handler, level in self._held:
            handler.setLevel(level)
        for handler in self._filtered:
            handler.removeFilter(USER_ERRORS)
        logging.getLogger(OPTUNA_TRIALS_LOGGER).removeFilter(FAILED_TRIALS)

    def _console_handlers(self) -> list[logging.Handler]:
        return _prefect_console_handlers()

    def _quiet_user_errors(self) -> None:
        """A bad input's one-line error, not Prefect's traceback of it, while the command runs."""
        self._filtered = self._console_handlers()
        for handler in self._filtered:
            handler.addFilter(USER_ERRORS)

    def _hold_console_logs(self, level: int) -> None:
        """Raise the level of the handlers that print Prefect's and gauntlet's logs on the console."""
        for handler in self._console_handlers():
            self._held.append((handler, handler.level))
            handler.setLevel(max(handler.level, level))

    # -- live: a rich table redrawn in place ------------------------------------------------------

    def _table(self) -> Any:
        from rich.table import Table

        _, stage, lines = BOARD.snapshot()
        table = Table(title=f"gauntlet: {stage or 'starting'}", title_justify="left", expand=False)
        for column in ("family", "trials", "best", "elapsed", "state"):
            table.add_column(column, justify="right" if column in ("trials", "elapsed") else "left")
        for line in lines:
            bar_width = 10
            filled = int(bar_width * min(line.done, line.budget) / max(line.budget, 1))
            best = f"{line.metric} {line.best:.4f}" if line.best is not None else "-"
            table.add_row(line.family, f"{'#' * filled}{'.' * (bar_width - filled)} {line.done}/{line.budget}", best,
                          f"{line.elapsed():.1f} s", line.state)
        return table

    def _live(self) -> None:
        from rich.console import Console
        from rich.live import Live

        console = Console(file=self.stream, force_terminal=True)
        seen = -1
        with Live(self._table(), console=console, auto_refresh=False, transient=False) as live:
            while not self._stop.wait(self.live_every_s):
                version = BOARD.version
                if version != seen:
                    seen = version
                    live.update(self._table(), refresh=True)
            live.update(self._table(), refresh=True)

    # -- plain: lines a log can keep ----------------------------------------------------------------

    def _plain(self) -> None:
        shown: dict[str, tuple[int, str]] = {}
        stage_shown = ""
        last_print: dict[str, float] = {}
        while True:
            stopping = self._stop.wait(0.5)
            _, stage, lines = BOARD.snapshot()
            if stage and stage != stage_shown:
                stage_shown = stage
                self._print(f"[progress] stage: {stage}")
            now = time.monotonic()
            for line in lines:
                key = (line.done, line.state)
                due = now - last_print.get(line.family, 0.0) >= self.plain_every_s or line.ended is not None
                if shown.get(line.family) != key and (due or stopping):
                    shown[line.family], last_print[line.family] = key, now
                    self._print(f"[progress] {line.text()}")
            if stopping:
                return

    def _print(self, text: str) -> None:
        try:
            # One write: print() writes text and newline apart, and another thread's log line can land between.
            self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed pipe: progress is never a reason to fail
            pass
