"""What each stage of a run cost (`measure`): wall time, CPU time and peak RSS, measured in-process.

Peak RSS is sampled every `SAMPLE_EVERY_S` by one thread per process, so a shorter spike can be missed.
CPU time is the whole process's: overlapping stages (the family searches) each count all of it.
A stage peaking near the memory it had is logged as a warning that names what to change.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("gauntlet.monitoring")

SAMPLE_EVERY_S = 0.05
WARN_AT_SHARE = 0.8  # of the memory the stage could use: its RSS at the start + MemAvailable then

ADVICE = {
    "load_dataset": "convert the file to Parquet (read a column at a time), or train on a sample (data.sample_rows)",
    "validate_dataset": "train on a sample (data.sample_rows)",
    "split_dataset": "train on a sample (data.sample_rows)",
    "evaluate": "set evaluation.explain: false and fewer evaluation.bootstrap_resamples",
}
SEARCH_ADVICE = ("fewer families at once (search.parallelism: 1), float32 columns in the file, fewer "
                 "trials (models.<family>.n_trials), or a sample of the rows (data.sample_rows)")


def rss_bytes() -> int:
    """This process's resident memory now (Linux /proc; 0 where it cannot be read)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def available_bytes() -> int | None:
    """The machine's MemAvailable (Linux), or None."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


@dataclass
class Usage:
    name: str
    started: float = field(default_factory=time.perf_counter)
    cpu_started: float = field(default_factory=time.process_time)
    rss_start: int = field(default_factory=rss_bytes)
    available_start: int | None = field(default_factory=lambda: available_bytes())
    peak: int = 0
    record: dict[str, Any] = field(default_factory=dict)

    def close(self) -> dict[str, Any]:
        rss_end = rss_bytes()
        self.peak = max(self.peak, self.rss_start, rss_end)
        mb = 1 / 2**20
        self.record = {
            "wall_s": round(time.perf_counter() - self.started, 3),
            "cpu_s": round(time.process_time() - self.cpu_started, 3),
            "peak_rss_mb": round(self.peak * mb, 1),
            "rss_start_mb": round(self.rss_start * mb, 1),
            "rss_end_mb": round(rss_end * mb, 1),
        }
        if self.available_start is not None:
            room = self.rss_start + self.available_start
            self.record["memory_available_mb"] = round(room * mb, 1)
            if self.peak >= WARN_AT_SHARE * room:
                advice = SEARCH_ADVICE if self.name.startswith("search") else ADVICE.get(self.name, SEARCH_ADVICE)
                self.record["memory_warning"] = (
                    f"stage {self.name} peaked at {self.peak * mb:,.0f} MB, {100 * self.peak / room:.0f}% of the "
                    f"{room * mb:,.0f} MB this machine had for it; to use less: {advice}")
                log.warning(self.record["memory_warning"])
        return self.record


class _Sampler:
    """One thread per process, sampling RSS for every open stage; it stops when none is open."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: list[Usage] = []
        self._thread: threading.Thread | None = None

    def add(self, usage: Usage) -> None:
        with self._lock:
            self._open.append(usage)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="stage-memory", daemon=True)
                self._thread.start()

    def remove(self, usage: Usage) -> None:
        with self._lock:
            if usage in self._open:
                self._open.remove(usage)

    def _run(self) -> None:
        while True:
            rss = rss_bytes()
            with self._lock:
                if not self._open:
                    self._thread = None
                    return
                for usage in self._open:
                    usage.peak = max(usage.peak, rss)
            time.sleep(SAMPLE_EVERY_S)


_SAMPLER = _Sampler()


def start(name: str) -> Usage:
    """Begin measuring stage `name`; `stop(usage)` ends it and returns its figures."""
    usage = Usage(name)
    _SAMPLER.add(usage)
    return usage


def stop(usage: Usage) -> dict[str, Any]:
    """End a stage begun by `start` (a second call returns the same figures)."""
    if not usage.record:
        _SAMPLER.remove(usage)
        usage.close()
    return usage.record


@contextmanager
def measure(name: str) -> Iterator[Usage]:
    """Measure the block as stage `name`; the figures are in `.record` once it ends (even by an error)."""
    usage = start(name)
    try:
        yield usage
    finally:
        stop(usage)


def format_stages(stages: dict[str, dict[str, Any]]) -> str:
    """The stages as an aligned text table: stage, wall s, CPU s, peak RSS MB."""
    rows = [("stage", "wall s", "cpu s", "peak MB")]
    rows += [(name + (" (reused: earlier run)" if r.get("reused_from") else ""), f"{r['wall_s']:.1f}",
              f"{r['cpu_s']:.1f}", f"{r['peak_rss_mb']:,.0f}") for name, r in stages.items()]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row))
             for row in rows]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])
