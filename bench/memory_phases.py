"""Peak memory of each data stage on one table, in one process (run by hand).

    .venv/bin/python bench/memory_phases.py PATH --target label [--families xgboost random_forest]

Runs the stages a `train` run runs before the searches (read, validate, split and write the
Parquet files, read back and encode each family's train/valid arrays) and prints, per stage, the
process's RSS before it, its peak during it (Linux VmHWM, reset between stages through
/proc/self/clear_refs) and its RSS after it, in MB. The table's in-memory size is the yardstick.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MB = 1 << 20


def _status(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as fh:  # "5" resets VmHWM to the current RSS
        fh.write("5")


class Phases:
    def __init__(self) -> None:
        self.rows: list[tuple[str, float, float, float, float]] = []

    def run(self, name: str, fn, *args):  # noqa: ANN001, ANN002, ANN201
        from tasks.ml.data import release_memory

        release_memory()
        _reset_peak()
        before, started = _status("VmRSS"), time.perf_counter()
        result = fn(*args)
        seconds = time.perf_counter() - started
        self.rows.append((name, before / MB, _status("VmHWM") / MB, _status("VmRSS") / MB, seconds))
        return result

    def print(self, table_bytes: int) -> None:
        print(f"table in memory: {table_bytes / MB:.0f} MB")
        print(f"{'stage':<30}{'before':>8}{'peak':>8}{'after':>8}{'peak-before':>13}{'x table':>9}{'s':>7}")
        for name, before, peak, after, seconds in self.rows:
            print(f"{name:<30}{before:>8.0f}{peak:>8.0f}{after:>8.0f}{peak - before:>13.0f}"
                  f"{(peak - before) * MB / table_bytes:>9.2f}{seconds:>7.1f}")


def split(frame, info, paths) -> None:  # noqa: ANN001 - what tasks.data.split_dataset does, without Prefect
    from tasks.ml import data as ml_data

    parts = ml_data.split_positions(frame, info)
    for name, rows in parts.items():
        ml_data.write_part(frame, rows, paths.split(name))
    ml_data.cross_split_duplicates(frame, parts, [*info.features, info.target])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--target", required=True)
    parser.add_argument("--families", nargs="*", default=["logistic_regression", "random_forest", "lightgbm",
                                                          "xgboost"])
    args = parser.parse_args()

    from gauntlet.runtime import configure_environment

    configure_environment()  # the allocator settings a run uses (imports come before any stage)
    from tasks.ml import data as ml_data
    from tasks.ml.estimators import get_family
    from tasks.ml.search import DataSettings
    from tasks.runs import RunPaths
    from tasks.search import shared_family_data as _prepare

    phases = Phases()
    frame = phases.run("read", ml_data.load_table, args.path)
    table_bytes = int(frame.memory_usage(index=False, deep=True).sum())
    info = phases.run("validate", ml_data.validate_dataset, frame, args.target)
    with tempfile.TemporaryDirectory() as tmp:
        paths = RunPaths(tmp)
        paths.splits.mkdir(parents=True)
        phases.run("split + write", split, frame, info, paths)
        del frame
        phases.run("drop the table", lambda: None)
        kept = []  # the searches hold every family's data at once
        for family in args.families:
            kept.append(phases.run(f"encode {family}", _prepare, get_family(family), info, paths, DataSettings()))
    phases.print(table_bytes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
