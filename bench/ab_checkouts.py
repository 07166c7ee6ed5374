"""gauntlet's own `train` wall time on two checkouts of the project, interleaved A/B.

    .venv/bin/python bench/ab_checkouts.py --before /path/to/old/checkout [--after .] \
        [--data builtin:breast_cancer --target diagnosis] [--rounds 4] [--trials 20]

Make the old checkout with `git worktree add --detach ../before <commit>` and link its `.venv` to
this one's; it runs with PYTHONPATH set to its own folder, so its code wins over the editable
install. Each checkout gets its own new PREFECT_HOME (a Prefect database grows with every run, and an
older, larger one slows the server down), warmed by one untimed run. Every family gets `--trials`
trials with no time limit. Prints each run, both medians and the ratio after/before.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("logistic_regression", "random_forest", "lightgbm", "xgboost")


def train_once(root: Path, args: argparse.Namespace, own_path: bool, home: Path) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory(prefix="gauntlet-ab-") as tmp:
        sets = [f"artifacts_dir={tmp}", f"data.path={args.data}", f"data.target={args.target}"]
        for family in FAMILIES:
            sets += [f"models.{family}.n_trials={args.trials}", f"models.{family}.timeout_s=null"]
        cmd = [sys.executable, "flows/train.py", "--config", "config/train.yaml", "--quiet"]
        for item in sets:
            cmd += ["--set", item]
        env = {**os.environ, "COMET_API_KEY": "", "PREFECT_HOME": str(home)}
        if own_path:
            env["PYTHONPATH"] = str(root)
        start = time.perf_counter()
        out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - start
        if out.returncode != 0:
            raise SystemExit(f"{root}: train failed:\n{out.stderr[-3000:]}")
        (run,) = (Path(tmp) / "runs").iterdir()
        return wall, json.loads((run / "report.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, type=Path)
    parser.add_argument("--after", default=ROOT, type=Path)
    parser.add_argument("--data", default="builtin:breast_cancer")
    parser.add_argument("--target", default="diagnosis")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    if not args.data.startswith("builtin:"):
        args.data = str(Path(args.data).resolve())
    walls: dict[str, list[float]] = {"before": [], "after": []}
    sides = (("before", args.before.resolve()), ("after", args.after.resolve()))
    homes = {side: Path(tempfile.mkdtemp(prefix=f"gauntlet-ab-home-{side}-")) for side, _ in sides}
    for side, root in sides:  # migrations of the new database, not timed
        train_once(root, args, own_path=side == "before", home=homes[side])
    for i in range(1, args.rounds + 1):
        for side, root in sides:
            wall, report = train_once(root, args, own_path=side == "before", home=homes[side])
            walls[side].append(wall)
            searches = {c["family"]: c["search_seconds"] for c in report["candidates"]}
            print(f"round {i} {side:6s}: {wall:6.1f} s, champion {report['champion']}, test ROC-AUC "
                  f"{report['test_metrics'].get('roc_auc', float('nan')):.4f}; search s {searches}", flush=True)
    for home in homes.values():
        shutil.rmtree(home, ignore_errors=True)
    before, after = statistics.median(walls["before"]), statistics.median(walls["after"])
    print(f"median wall: before {before:.1f} s, after {after:.1f} s, ratio after/before {after / before:.3f}")


if __name__ == "__main__":
    main()
