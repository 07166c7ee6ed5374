"""gauntlet's full `train` flow against the Optuna loop a user writes by hand, at equal trials.

    .venv/bin/python bench/vs_plain_optuna.py --data ../shared/datasets/adult.parquet --target income \
        [--trials 20] [--repeat 3] [--metric auto] [--set key=value ...]

Each round runs `gauntlet train` (its temporary Prefect server, Comet offline, the local registry,
evaluation and reports included; every family runs all its trials), then, in a fresh process, the
hand-written loop of bench/peers.py on that run's own train/valid/test files: the user's own search
spaces, four families one after another, every fit on every core, LightGBM/XGBoost early-stopped on
valid. Both optimise the same metric (`--metric`: auto is gauntlet's default, F-beta 0.5; the loop then
uses F-beta at threshold 0.5). Prints each round, both medians, the ratio and both champions' test scores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import ROOT, Splits, run_gauntlet, user_loop  # noqa: E402


def loop_metric(metric: str) -> str:
    return "roc_auc" if metric == "roc_auc" else "fbeta"


def run_user_loop(run_dir: Path, trials: int, metric: str) -> dict:
    """The loop in a fresh process (imports included in its wall time, as gauntlet's are)."""
    cmd = [sys.executable, __file__, "--loop-only", str(run_dir), "--trials", str(trials), "--metric", metric]
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"plain loop failed:\n{out.stderr[-3000:]}")
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "wall": wall}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/datasets/adult.parquet"))
    parser.add_argument("--target", default="income")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--metric", default="auto", help="evaluation.comparison_metric for both sides")
    parser.add_argument("--config", default="config/train.yaml")
    parser.add_argument("--set", action="append", default=[], dest="overrides", help="extra gauntlet overrides")
    parser.add_argument("--loop-only", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loop_only:
        result = user_loop(Splits(Path(args.loop_only)), args.trials, metric=loop_metric(args.metric))
        print(json.dumps(result))
        return 0

    print(f"{Path(args.data).name}, {args.trials} trials per family, {os.cpu_count()} cores, {args.repeat} rounds")
    plain, ours = [], []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="gauntlet-bench-") as tmp:
            g = run_gauntlet(args.data, args.target, args.trials, Path(tmp), args.metric, args.overrides, args.config)
            p = run_user_loop(g["run_dir"], args.trials, args.metric)
        ours.append(g)
        plain.append(p)
        print(f"round {i + 1} gauntlet: {g['wall']:6.1f} s, champion {g['champion']}, test ROC-AUC "
              f"{g['test_roc_auc']:.4f}, registered {g['registered']}; search s {g['search_seconds']}; "
              f"stages s {g['stages']}", flush=True)
        print(f"round {i + 1} plain   : {p['wall']:6.1f} s, champion {p['champion']}, test ROC-AUC "
              f"{p['test_roc_auc']:.4f}; search s {p['search_seconds']}", flush=True)
    mp = statistics.median(r["wall"] for r in plain)
    mg = statistics.median(r["wall"] for r in ours)
    ap = statistics.median(r["test_roc_auc"] for r in plain)
    ag = statistics.median(r["test_roc_auc"] for r in ours)
    print(f"median wall: plain {mp:.1f} s, gauntlet {mg:.1f} s, ratio gauntlet/plain {mg / mp:.2f}")
    print(f"median champion test ROC-AUC: plain {ap:.4f}, gauntlet {ag:.4f} (difference {ag - ap:+.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
