"""Search planning: which families start first, how many search at once, threads for each."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tasks.ml.estimators import FamilySpec, get_family


@dataclass(frozen=True)
class SearchPlan:
    order: list[str]  # families in start order
    parallel: int  # families searched at once
    threads: int  # threads for each family's models


def encoding_group(spec: FamilySpec, encoding: str) -> tuple[bool, bool]:
    """Families in one group encode the data alike (and share the arrays): scaled or not, native
    categories or not."""
    return spec.scale, spec.takes_categories(encoding)


# Training rows from which a forest starts after the boosters of its encoding. The family searching last
# gets every core: a forest's trees turn them into speed, a booster only partly (two 1-thread boosting
# fits at once take 24-30% less than one on 2 threads). On 120k rows that saved 5 s of a 147 s search;
# on 27k it was even, and on the demo's 341 rows a 2-thread forest was slower than a short booster tail.
FOREST_LAST_ROWS = 50_000


def plan_search(families: list[str], n_trials: dict[str, int], cores: int, parallelism: int | str,
                encoding: str, train_rows: int = 0) -> SearchPlan:
    """concurrency x threads never exceeds the cores; a family that ends hands its core on.

    Start order: longest searches first (trial cost x trials), except that a family whose encoding no
    other family shares starts first, so that its arrays are made and dropped while memory is low, and
    that from FOREST_LAST_ROWS training rows a forest (its fits scale with threads: `parallel_trials`
    False) starts after the others of its encoding.
    """
    wanted = cores if parallelism == "auto" else int(parallelism)
    parallel = max(1, min(len(families), wanted))
    groups = Counter(encoding_group(get_family(f), encoding) for f in families)
    forest_last = train_rows >= FOREST_LAST_ROWS
    order = sorted(families, key=lambda f: (groups[encoding_group(get_family(f), encoding)] > 1,
                                            forest_last and not get_family(f).parallel_trials,
                                            -get_family(f).cost * n_trials[f]))
    return SearchPlan(order, parallel, max(1, cores // parallel))


# When the ended-family markers were last read, per folder, and what they said: shared by the searches of
# this process. Each read is a system call that lets go of the GIL, and a search thread waits up to the
# 5 ms switch interval to get it back beside another busy one; a demo run asked 212 times (4 files each).
_ENDED_READ: dict[Path, tuple[float, frozenset[str]]] = {}
_ENDED_LOCK = threading.Lock()
# How long a read stands: families that end in this process are seen at once, other processes' within this.
ENDED_READ_S = 0.25


class CoreShare:
    """The machine's cores, shared by one run's family searches as they end.

    A family's next trial fits on `cores // min(parallel, families still searching)` threads: on 2 cores
    two families get one each, and the last one searching gets both. An ended family is a marker file in
    `folder`, so family searches in other processes (search.executor processes) see the same count.
    """

    def __init__(self, folder: str | Path, families: list[str], cores: int, parallel: int) -> None:
        self.folder, self.families = Path(folder), list(families)
        self.cores, self.parallel = max(1, cores), max(1, parallel)

    def begin(self, family: str) -> None:
        """The family searches (again): its cores are taken back."""
        (self.folder / family).unlink(missing_ok=True)
        self._forget()

    def end(self, family: str) -> None:
        """The family's search ended (done, failed or reused): its cores go to the others."""
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / family).touch()
        self._forget()

    def searching(self) -> int:
        ended = self._ended()
        return sum(f not in ended for f in self.families)

    def _ended(self) -> frozenset[str]:
        now = time.monotonic()
        with _ENDED_LOCK:
            read = _ENDED_READ.get(self.folder)
        if read is not None and now - read[0] < ENDED_READ_S:
            return read[1]
        try:
            ended = frozenset(os.listdir(self.folder))
        except FileNotFoundError:
            ended = frozenset()
        with _ENDED_LOCK:
            _ENDED_READ[self.folder] = (now, ended)
        return ended

    def _forget(self) -> None:
        with _ENDED_LOCK:
            _ENDED_READ.pop(self.folder, None)

    def threads(self, searching: int | None = None) -> int:
        """Threads for a trial that starts now (`searching`: families still searching, counted when None);
        the families searching at once never use more than the cores in all."""
        searching = self.searching() if searching is None else searching
        return max(1, self.cores // max(1, min(self.parallel, searching)))
