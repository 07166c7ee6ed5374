"""Wall time and peak memory of a full `train` run on synthetic tables of growing size (run by hand).

    .venv/bin/python bench/scale_rows.py [--rows 10000 100000 1000000] [--features 40] [--trials 5]

Each size is a synthetic binary table (sklearn's make_classification: 40 float32 features, 2
classes, some noise), written once as Parquet to a temporary folder, then trained by a fresh
`python flows/train.py` process with `--trials` trials per family. Peak RSS is sampled every 0.2 s
over the whole process tree (the flow process, Prefect's temporary server, any helper) and is also
reported for the flow process alone (its VmHWM, the kernel's high-water mark). The float32 table's
size is the yardstick.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("logistic_regression", "random_forest", "lightgbm", "xgboost")


def make_table(path: Path, rows: int, features: int, seed: int = 0) -> int:
    """Write the table; returns its float32 size in bytes. (This process's memory is not measured.)"""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.datasets import make_classification

    # One draw of the whole table (the same seed per chunk would repeat the same rows in every
    # chunk, and the valid and test rows would be copies of training rows), written in chunks.
    X, y = make_classification(n_samples=rows, n_features=features, n_informative=features // 2,
                               n_redundant=features // 8, flip_y=0.05, class_sep=0.8, random_state=seed)
    writer = None
    chunk = 200_000
    for start in range(0, rows, chunk):
        part = slice(start, min(rows, start + chunk))
        table = pa.table({**{f"x{i:02d}": X[part, i].astype(np.float32) for i in range(features)},
                          "label": y[part].astype(np.int8)})
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()
    return rows * features * 4


def _tree_rss(pid: int) -> int:
    """RSS in bytes of a process and its descendants (Linux /proc)."""
    total, stack = 0, [pid]
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    while stack:
        p = stack.pop()
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
        stack.extend(children.get(p, []))
    return total


def vm_hwm(pid: int) -> int:
    """The process's own high-water RSS in bytes (VmHWM: the kernel's, so no peak between samples is
    missed; 0 once it is gone). Not the child's ru_maxrss: a child forked from this process inherits
    this process's RSS at fork time as its ru_maxrss, which after building a 1M-row table here was
    1,144 MB, whatever the child itself used."""
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run(path: Path, trials: int, artifacts: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "flows/train.py", "--config", "config/train.yaml",
           "--set", f"artifacts_dir={artifacts}", "--set", f"data.path={path}", "--set", "data.target=label"]
    for family in FAMILIES:
        cmd += ["--set", f"models.{family}.n_trials={trials}", "--set", f"models.{family}.timeout_s=null"]
    for item in extra:
        cmd += ["--set", item]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0, 0.0]
    own = [0]

    def sample() -> None:
        while proc.poll() is None:
            rss = _tree_rss(proc.pid)
            if rss > peak[0]:
                peak[:] = [rss, time.perf_counter() - start]
            own[0] = max(own[0], vm_hwm(proc.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - start
    sampler.join()
    log = Path(tempfile.gettempdir()) / f"gauntlet-scale-{artifacts.parent.name}.log"
    log.write_text(out)  # the run's log, kept: its timestamps say which stage the peak fell in
    if proc.returncode != 0:
        raise SystemExit(f"train failed (log: {log}):\n{out[-4000:]}")
    (run_dir,) = (artifacts / "runs").iterdir()
    report = json.loads((run_dir / "report.json").read_text())
    return {"wall": wall, "tree_peak": peak[0], "tree_peak_at": peak[1], "flow_peak": own[0], "log": log,
            "champion": report["champion"],
            "roc_auc": report["test_metrics"].get("roc_auc"),
            "search_seconds": {c["family"]: c.get("search_seconds") for c in report["candidates"]}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--features", type=int, default=40)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    print(f"{args.features} float32 features, {args.trials} trials per family, {os.cpu_count()} cores")
    probe = subprocess.run([sys.executable, "-c", "import flows.train, resource; "
                            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"],
                           cwd=ROOT, capture_output=True, text=True, check=True)
    print(f"baseline: importing the train flow (Prefect, scikit-learn, LightGBM, XGBoost, Optuna, pandas) "
          f"takes {int(probe.stdout.split()[-1]) / 1024:.0f} MB before any data")
    baseline = None
    for rows in sorted(args.rows):
        with tempfile.TemporaryDirectory(prefix="gauntlet-scale-") as tmp:
            path = Path(tmp) / f"synthetic_{rows}.parquet"
            size = make_table(path, rows, args.features)
            result = run(path, args.trials, Path(tmp) / "artifacts", args.overrides)
            flow_peak = result["flow_peak"]
            mb = 1 << 20
            baseline = baseline or (rows, flow_peak)  # the smallest size: Prefect, the libraries, no data
            growth = "" if baseline[0] == rows else (
                f"; {(flow_peak - baseline[1]) / mb:.0f} MB above the {baseline[0]:,}-row run "
                f"({(flow_peak - baseline[1]) / size:.1f}x the table)")
            print(f"{rows:>9,} rows: {result['wall']:7.1f} s wall; table {size / mb:6.0f} MB as float32; "
                  f"peak RSS: flow process (VmHWM) {flow_peak / mb:6.0f} MB "
                  f"({flow_peak / size:.1f}x the table{growth}), whole process tree {result['tree_peak'] / mb:6.0f} MB "
                  f"({result['tree_peak'] / size:.1f}x) at {result['tree_peak_at']:.0f} s; "
                  f"champion {result['champion']} ROC-AUC "
                  f"{result['roc_auc']:.4f}; search s {result['search_seconds']}; log {result['log']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
