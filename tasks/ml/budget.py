"""Time limits of a search: a family's own cap (`timeout_s`) and its share of a whole-search budget.

The budget (`search.time_budget_s`) is shared among the families by their expected cost (trial cost x
trials), as FLAML does; a family that ends early hands its unused time to those still searching. Once a
family has timed trials, its need is what it learned (recent seconds per trial x trials still owed)
instead of the prior, and the time the measured families have left is shared again by those needs.
Families search `parallel` at a time, so the budget holds `total_s x parallel` family-seconds, and no
trial starts after `total_s` of wall time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class SearchBudget:
    """One run's whole-search budget, shared by its families (thread-safe)."""

    def __init__(self, total_s: float, weights: dict[str, float], parallel: int = 1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total_s, self.clock = float(total_s), clock
        self.deadline = clock() + self.total_s
        weight_sum = sum(weights.values()) or 1.0
        capacity = self.total_s * max(1, parallel)
        self.weights = dict(weights)
        self.allotted = {f: min(self.total_s, capacity * w / weight_sum) for f, w in weights.items()}
        self._started: dict[str, float] = {}
        self._ended: set[str] = set()
        self.need: dict[str, float] = {}  # learned seconds still needed, per family that timed its trials
        self._lock = threading.Lock()

    def begin(self, family: str) -> None:
        with self._lock:
            self._started.setdefault(family, self.clock())

    def end(self, family: str) -> None:
        """The family's search ended (or was never needed): its unused share goes to the families
        still to finish."""
        with self._lock:
            if family in self._ended or family not in self.weights:
                return
            self._ended.add(family)
            used = self.clock() - self._started[family] if family in self._started else 0.0
            surplus = self.allotted.get(family, 0.0) - used
            self.allotted[family] = used
            waiting = {f: w for f, w in self.weights.items() if f not in self._ended}
            if surplus > 0 and waiting:
                total = sum(waiting.values()) or 1.0
                for f, w in waiting.items():
                    self.allotted[f] = min(self.total_s, self.allotted[f] + surplus * w / total)

    def observe(self, family: str, seconds_per_trial: float, trials_left: int) -> None:
        """The family's recent trials took `seconds_per_trial` each, and it owes `trials_left`: the time
        left to the families measured so far is shared again in proportion to what each still needs."""
        with self._lock:
            if family in self._ended or family not in self.weights:
                return
            self.need[family] = max(0.0, seconds_per_trial) * max(0, trials_left)
            now = self.clock()
            measured = [f for f in self.need if f not in self._ended and f in self._started]
            left = {f: max(0.0, self.allotted[f] - (now - self._started[f])) for f in measured}
            pool, total_need = sum(left.values()), sum(self.need[f] for f in measured)
            if len(measured) < 2 or total_need <= 0:
                return
            for f in measured:
                self.allotted[f] = min(self.total_s, (now - self._started[f]) + pool * self.need[f] / total_need)

    def share_left(self, family: str) -> float:
        """Seconds the family may still start trials in (never past the budget's end)."""
        with self._lock:
            now = self.clock()
            started = self._started.get(family, now)
            return min(self.allotted.get(family, 0.0) - (now - started), self.deadline - now)


class TimeLimits:
    """When one family's search stops starting trials; `stopped_by` names the limit that ended it."""

    def __init__(self, family: str, timeout_s: float | None = None, budget: SearchBudget | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.family, self.timeout_s, self.budget, self.clock = family, timeout_s, budget, clock
        self.started = clock()
        self.stopped_by: str | None = None  # "timeout_s" or "time budget"
        self.recent: list[float] = []  # seconds of this process's last trials
        if budget is not None:
            budget.begin(family)

    def reached(self) -> str | None:
        """The limit reached now, if any (and remember it)."""
        if self.timeout_s is not None and self.clock() - self.started >= self.timeout_s:
            self.stopped_by = "timeout_s"
        elif self.budget is not None and self.budget.share_left(self.family) <= 0:
            self.stopped_by = "time budget"
        return self.stopped_by

    def trial_ended(self, seconds: float, trials_left: int, window: int = 3) -> None:
        """A trial of the family took `seconds`; the budget learns the family's pace from its last few
        (threads change as other families end)."""
        self.recent = [*self.recent[-(window - 1):], seconds]
        if self.budget is not None:
            self.budget.observe(self.family, sum(self.recent) / len(self.recent), trials_left)

    def close(self) -> None:
        if self.budget is not None:
            self.budget.end(self.family)


def stop_note(stopped_by: str, done: int, n_trials: int) -> str:
    """The leaderboard's state of a search a limit ended, e.g. 'stopped: time budget, 10/50 trials'."""
    return f"stopped: {stopped_by}, {done}/{n_trials} trials"


def raise_hint(stopped_by: str, family: str) -> str:
    """The config key to raise when `stopped_by` ended the family's search early."""
    return f"models.{family}.timeout_s" if stopped_by == "timeout_s" else "search.time_budget_s"
