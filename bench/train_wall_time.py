"""Wall time and peak memory of whole training runs, as a user runs them (run by hand).

    .venv/bin/python bench/train_wall_time.py [--config config/train.yaml] [--repeat 3] [--set k=v ...]

Each repeat is a fresh `python flows/train.py` process (Prefect's temporary server included), with
its outputs in a temporary folder. Prints one line per run and a summary; the per-family search
seconds come from the run's report.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/train.yaml")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()

    walls = []
    print(f"config {args.config} {' '.join(args.overrides)}; {os.cpu_count()} cores")
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="gauntlet-bench-") as tmp:
            cmd = [sys.executable, "flows/train.py", "--config", args.config, "--set", f"artifacts_dir={tmp}"]
            for item in args.overrides:
                cmd += ["--set", item]
            start = time.perf_counter()
            out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            wall = time.perf_counter() - start
            if out.returncode != 0:
                print(out.stderr[-2000:])
                return 1
            (run,) = (Path(tmp) / "runs").iterdir()
            report = json.loads((run / "report.json").read_text())
            searches = {c["family"]: round(c["search_seconds"], 1) for c in report["candidates"]}
            trials = sum(c["n_trials"] for c in report["candidates"])
            walls.append(wall)
            print(f"run {i + 1}: {wall:6.1f} s wall, {trials} trials, champion {report['champion']} "
                  f"test {report['metric']}={report['test_metrics'][report['metric']]:.4f}; search s {searches}")
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"wall time: median {statistics.median(walls):.1f} s, min {min(walls):.1f} s, max {max(walls):.1f} s; "
          f"peak RSS of the largest process {peak_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
