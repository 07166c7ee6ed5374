"""gauntlet against its peers on the shared tables, on the same split: one table of wall time and test scores.

    .venv/bin/python bench/vs_peers.py [--trials 20] [--tables adult,bank_marketing,...] [--metric roc_auc]
    pip install -e '.[bench]'   # adds FLAML; without it the FLAML column says "not installed"

For each table: `gauntlet train` (every family all its trials, `--metric` as the comparison metric),
then on that run's own train/valid/test files: the hand-written Optuna loop of bench/peers.py (same
trials, its own search spaces, same metric), an untuned `LGBMClassifier()`, and FLAML's AutoML given
gauntlet's wall time. Test ROC-AUC (macro one-vs-rest for several classes) and test F-beta 0.5
(gauntlet's at its tuned threshold; the others at 0.5 or the top class). Needs ../shared/datasets.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import ROOT, Splits, default_lightgbm, flaml_automl, run_gauntlet, user_loop  # noqa: E402

TABLES = {"adult": "income", "bank_marketing": "y", "telco_churn": "Churn", "hotel_bookings": "is_canceled",
          "dry_bean": "Class"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--tables", default=",".join(TABLES))
    parser.add_argument("--metric", default="roc_auc", help="what gauntlet and the loop optimise")
    parser.add_argument("--datasets", default=str(ROOT.parent / "shared/datasets"))
    args = parser.parse_args()
    print(f"{args.trials} trials per family, metric {args.metric}, {os.cpu_count()} cores", flush=True)
    rows = []
    for name in args.tables.split(","):
        path = Path(args.datasets) / f"{name}.parquet"
        with tempfile.TemporaryDirectory(prefix="gauntlet-peers-") as tmp:
            g = run_gauntlet(str(path), TABLES[name], args.trials, Path(tmp), args.metric)
            splits = Splits(g["run_dir"])
            loop = user_loop(splits, args.trials, metric="roc_auc" if args.metric == "roc_auc" else "fbeta")
            lgbm = default_lightgbm(splits)
            flaml = flaml_automl(splits, g["wall"])
        row = {"table": name, "gauntlet": g, "plain loop": loop, "default LightGBM": lgbm, "FLAML": flaml}
        rows.append(row)
        print(" | ".join(f"{k} {_cell(v)}" if isinstance(v, dict) or v is None else str(v) for k, v in row.items()),
              flush=True)
    print()
    print("| table | gauntlet s | AUC | F0.5 | plain loop s | AUC | F0.5 | default LGBM AUC | F0.5 "
          "| FLAML AUC | F0.5 | gauntlet AUC - best peer |")
    print("|---|" + "---:|" * 11)
    for r in rows:
        g, p, d, f = r["gauntlet"], r["plain loop"], r["default LightGBM"], r["FLAML"]
        best = max(x["test_roc_auc"] for x in (p, d, f) if x)
        fl = f"{f['test_roc_auc']:.4f} | {f['test_fbeta']:.4f}" if f else "not installed | -"
        print(f"| {r['table']} | {g['wall']:.0f} | {g['test_roc_auc']:.4f} | {g['test_fbeta']:.4f} | {p['wall']:.0f} "
              f"| {p['test_roc_auc']:.4f} | {p['test_fbeta']:.4f} | {d['test_roc_auc']:.4f} | {d['test_fbeta']:.4f} "
              f"| {fl} | {g['test_roc_auc'] - best:+.4f} |")
    return 0


def _cell(result: dict | None) -> str:
    if result is None:
        return "not installed"
    searches = f" (search s {result['search_seconds']})" if "search_seconds" in result else ""
    return f"{result['wall']:.0f} s AUC {result['test_roc_auc']:.4f} F0.5 {result['test_fbeta']:.4f}{searches}"


if __name__ == "__main__":
    sys.exit(main())
