"""gauntlet against AutoML peers on the shared tables, on the same split: AutoGluon-Tabular, FLAML, default CatBoost.

    .venv/bin/python bench/vs_automl.py [--tables adult,telco_churn,...] [--peers autogluon,flaml,catboost] \
        [--gauntlet-args 'models.xgboost.n_trials=5 split.strategy=time'] [--trials N] [--out automl.csv]

The peers run in a separate interpreter (`--peer-python`, default $GAUNTLET_PEER_PYTHON, else
../agvenv/bin/python), so the project's environment never needs AutoGluon. Its set-up, no torch:

    python3 -m venv ../agvenv
    ../agvenv/bin/pip install 'autogluon.tabular[lightgbm,catboost,xgboost]==1.6.3' 'flaml[automl]==2.7.0' \
        catboost pandas pyarrow scikit-learn
    # flaml's extra adds xgboost 2.1 (< 3) into the same folder as AutoGluon's xgboost-cpu 3.2, and 2.1's
    # XGBClassifier fails under scikit-learn 1.9 (`_estimator_type` undefined): keep 3.2 alone
    ../agvenv/bin/pip uninstall -y xgboost xgboost-cpu nvidia-nccl-cu12
    ../agvenv/bin/pip install 'xgboost-cpu==3.2.0'

For each table: `gauntlet train` with config/train.yaml's own trial counts (`--trials N` sets every
family to N; `--gauntlet-args` adds `--set` overrides; comparison metric `--metric` for classification,
R2 for regression), timed as a whole (its Prefect server and evaluation included). Then, on that run's own
train/valid/test files, each peer in a fresh process (imports included in its wall time):
AutoGluon `presets="medium_quality"` without neural nets (NN_TORCH, FASTAI excluded) and FLAML's AutoML,
both fit on train+valid with gauntlet's wall time as `time_limit` / `time_budget`; and an untuned
CatBoost (categorical columns as strings, missing as a level) fit on train, early-stopped on valid.
Every peer is scored on the same test rows: ROC-AUC (macro one-vs-rest for several classes), or R2 and
RMSE for regression. Prints one line per table as it ends, then one markdown table; `--out` writes a CSV.
Needs ../shared/datasets.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import ROOT, SEED, Splits, test_scores  # noqa: E402

TABLES = {"adult": "income", "bank_marketing": "y", "telco_churn": "Churn", "dry_bean": "Class",
          "hotel_bookings": "is_canceled", "california_housing": "median_house_value", "bike_sharing_hour": "cnt"}
REGRESSION = {"california_housing", "bike_sharing_hour"}
PEERS = ("autogluon", "flaml", "catboost")
FAMILIES = ("logistic_regression", "linear", "random_forest", "lightgbm", "xgboost", "catboost")
MISSING = "__missing__"


# --- the run's split files, for every task -----------------------------------------------------------

class TaskSplits(Splits):
    """peers.Splits, with a regression target kept as numbers, and each categorical column holding one
    vocabulary (the train+valid levels; a level seen only in test is missing) in the three parts."""

    def __init__(self, run_dir: Path) -> None:
        dataset = json.loads((Path(run_dir) / "manifest.json").read_text())["dataset"]
        classes = list(dataset.get("classes") or [])
        self.task = dataset.get("task") or ("regression" if not classes else
                                            "binary" if len(classes) == 2 else "multiclass")
        if self.task != "regression":
            super().__init__(run_dir)
        else:
            self.target, self.classes, self.n_classes = dataset["target"], [], 0
            self.features = list(dataset["features"])
            self.categorical = [c for c in dataset["categorical_features"] if c in self.features]
            self.datetime = [c for c in dataset.get("datetime_features", []) if c in self.features]
            parts = {name: pd.read_parquet(Path(run_dir) / "splits" / f"{name}.parquet")
                     for name in ("train", "valid", "test")}
            self.y = {k: part[self.target].astype(float).to_numpy() for k, part in parts.items()}
            self.X = {k: self._features(part) for k, part in parts.items()}
        for c in self.categorical:
            levels = sorted(set(self.X["train"][c].dropna()) | set(self.X["valid"][c].dropna()), key=str)
            for X in self.X.values():
                X[c] = X[c].cat.set_categories(levels)

    def fit_frame(self) -> tuple[pd.DataFrame, np.ndarray]:
        """train+valid as one table (the AutoML peers hold out what they need themselves)."""
        return (pd.concat([self.X["train"], self.X["valid"]], ignore_index=True),
                np.concatenate([self.y["train"], self.y["valid"]]))


def scores(s: TaskSplits, predicted: np.ndarray) -> dict[str, float]:
    """Probabilities (classification) or values (regression) of the test rows, scored."""
    if s.task == "regression":
        from sklearn.metrics import r2_score

        y = s.y["test"]
        return {"test_r2": float(r2_score(y, predicted)), "test_rmse": float(np.sqrt(np.mean((y - predicted) ** 2)))}
    return test_scores(s.y["test"], np.asarray(predicted, dtype=float), s.n_classes)


# --- the peers (run inside --peer-python) ------------------------------------------------------------

def autogluon(s: TaskSplits, seconds: float, work: Path) -> dict:
    from autogluon.tabular import TabularPredictor

    start = time.perf_counter()
    X, y = s.fit_frame()
    label = "__label__"
    metric = {"binary": "roc_auc", "multiclass": "roc_auc_ovr_macro", "regression": "r2"}[s.task]
    predictor = TabularPredictor(label=label, problem_type=s.task, eval_metric=metric, path=str(work / "autogluon"),
                                 verbosity=0)
    predictor.fit(X.assign(**{label: y}), presets="medium_quality", time_limit=max(1.0, seconds),
                  excluded_model_types=["NN_TORCH", "FASTAI"])
    fit = time.perf_counter() - start
    if s.task == "regression":
        predicted = predictor.predict(s.X["test"]).to_numpy(dtype=float)
    else:
        predicted = predictor.predict_proba(s.X["test"])[list(range(s.n_classes))].to_numpy()
    return {"fit_s": fit, "champion": predictor.model_best, "models": predictor.model_names(), **scores(s, predicted)}


def flaml(s: TaskSplits, seconds: float, work: Path) -> dict:
    from flaml import AutoML

    start = time.perf_counter()
    X, y = s.fit_frame()
    metric = {"binary": "roc_auc", "multiclass": "roc_auc_ovr", "regression": "r2"}[s.task]
    automl = AutoML()
    automl.fit(X_train=X, y_train=y, task="regression" if s.task == "regression" else "classification",
               metric=metric, time_budget=max(1.0, seconds), seed=SEED, verbose=0, n_jobs=os.cpu_count() or 1,
               log_file_name=str(work / "flaml.log"))
    fit = time.perf_counter() - start
    predicted = automl.predict(s.X["test"]) if s.task == "regression" else automl.predict_proba(s.X["test"])
    return {"fit_s": fit, "champion": automl.best_estimator, **scores(s, predicted)}


def catboost(s: TaskSplits, seconds: float, work: Path) -> dict:
    from catboost import CatBoostClassifier, CatBoostRegressor

    def strings(X: pd.DataFrame) -> pd.DataFrame:
        X = X.copy()
        for c in s.categorical:
            X[c] = X[c].astype(object).where(X[c].notna(), MISSING).astype(str)
        return X

    start = time.perf_counter()
    X = {k: strings(v) for k, v in s.X.items()}
    kind = CatBoostRegressor if s.task == "regression" else CatBoostClassifier
    model = kind(random_seed=SEED, verbose=False, train_dir=str(work / "catboost"), allow_writing_files=False)
    model.fit(X["train"], s.y["train"], cat_features=s.categorical, eval_set=(X["valid"], s.y["valid"]))
    fit = time.perf_counter() - start
    predicted = model.predict(X["test"]) if s.task == "regression" else model.predict_proba(X["test"])
    return {"fit_s": fit, "champion": f"CatBoost ({model.get_best_iteration()} trees)", **scores(s, predicted)}


def peer_main(args: argparse.Namespace) -> int:
    result = {"autogluon": autogluon, "flaml": flaml, "catboost": catboost}[args.peer](
        TaskSplits(Path(args.run_dir)), float(args.seconds), Path(args.work))
    Path(args.result).write_text(json.dumps(result))
    return 0


def run_peer(python: str, peer: str, run_dir: Path, seconds: float, work: Path, timeout: float) -> dict:
    """One peer in a fresh `python` process; its wall time with the imports. A failure is a result too."""
    if not Path(python).exists():
        return {"error": f"no peer interpreter {python} (--peer-python / GAUNTLET_PEER_PYTHON)"}
    folder = Path(tempfile.mkdtemp(prefix=f"{peer}-", dir=work))
    result = folder / "result.json"
    cmd = [python, __file__, "--peer", peer, "--run-dir", str(run_dir), "--seconds", f"{seconds:.1f}",
           "--work", str(folder), "--result", str(result)]
    start = time.perf_counter()
    try:
        out = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"wall": time.perf_counter() - start, "error": f"killed after {timeout:.0f} s"}
    wall = time.perf_counter() - start
    if out.returncode != 0 or not result.exists():
        return {"wall": wall, "error": (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1][:300]}
    return {**json.loads(result.read_text()), "wall": wall}


# --- gauntlet ----------------------------------------------------------------------------------------

def run_gauntlet(data: Path, target: str, artifacts: Path, metric: str, overrides: list[str],
                 config: str) -> dict:
    """`gauntlet train` in a fresh process, as bench/peers.py runs it, but with the config's own trial
    counts and time limits unless overrides say otherwise. The run folder stays under `artifacts`."""
    sets = [f"artifacts_dir={artifacts}", f"data.path={data.resolve()}", f"data.target={target}",
            f"evaluation.comparison_metric={metric}", *overrides]
    cmd = [str(Path(sys.executable).parent / "gauntlet"), "train", "--config", config, "--quiet"]
    for item in sets:
        cmd += ["--set", item]
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "COMET_API_KEY": ""})
    wall = time.perf_counter() - start
    if out.returncode != 0:
        return {"wall": wall, "error": (out.stderr.strip() or out.stdout.strip()).splitlines()[-1][:300]}
    run = max((artifacts / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    report = json.loads((run / "report.json").read_text())
    m = report["test_metrics"]
    return {"wall": wall, "run_dir": run, "champion": report["champion"], "test_roc_auc": m.get("roc_auc"),
            "test_r2": m.get("r2"), "test_rmse": m.get("rmse")}


# --- the table ---------------------------------------------------------------------------------------

def primary(result: dict | None, regression: bool) -> float | None:
    if not result or result.get("error"):
        return None
    return result.get("test_r2" if regression else "test_roc_auc")


def cell(result: dict | None, regression: bool) -> str:
    value = primary(result, regression)
    if result is None:
        return "-"
    if value is None:
        return "failed"
    return f"{value:.4f} / {result['test_rmse']:,.0f}" if regression else f"{value:.4f}"


def wall_cell(result: dict | None) -> str:
    return f"{result['wall']:.0f}" if result and "wall" in result else "-"


def flat(row: dict) -> dict:
    """One CSV line: every number and name of a table's results, prefixed by who produced it."""
    line = {"table": row["table"], "task": row["task"], "gauntlet_minus_best_peer": row["margin"]}
    for who in ("gauntlet", *PEERS):
        for key, value in (row.get(who) or {}).items():
            if key != "run_dir":
                line[f"{who}_{key}"] = (round(value, 5) if isinstance(value, float) else
                                        ";".join(value) if isinstance(value, list) else value)
    return line


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", default=",".join(TABLES))
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument("--gauntlet-args", default="", help="extra gauntlet overrides, 'key=value key=value'")
    parser.add_argument("--trials", type=int, default=None, 
                        help="every family this many trials (default: the config's)")
    parser.add_argument("--metric", default="roc_auc", help="gauntlet's comparison metric on classification tables")
    parser.add_argument("--config", default="config/train.yaml")
    parser.add_argument("--datasets", default=str(ROOT.parent / "shared/datasets"))
    parser.add_argument("--peer-python", default=os.environ.get("GAUNTLET_PEER_PYTHON",
                                                                str(ROOT.parent / "agvenv/bin/python")))
    parser.add_argument("--out", default=None, help="CSV file, one line per table (rewritten after each table)")
    for hidden in ("--peer", "--run-dir", "--seconds", "--work", "--result"):
        parser.add_argument(hidden, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:
        return peer_main(args)

    peers = [p for p in args.peers.split(",") if p]
    unknown = sorted(set(peers) - set(PEERS)) + sorted(set(args.tables.split(",")) - set(TABLES))
    if unknown:
        parser.error(f"unknown peer or table: {', '.join(unknown)} "
                     f"(peers: {', '.join(PEERS)}; tables: {', '.join(TABLES)})")
    overrides = [item for item in shlex.split(args.gauntlet_args) if item != "--set"]
    if args.trials is not None:
        overrides = [f"models.{f}.n_trials={args.trials}" for f in FAMILIES] + overrides
    print(f"{os.cpu_count()} cores, peers {', '.join(peers)} with {args.peer_python}, "
          f"gauntlet overrides {overrides or 'none'}", flush=True)
    rows = []
    for name in args.tables.split(","):
        regression = name in REGRESSION
        row = {"table": name, "task": "regression" if regression else "classification"}
        with tempfile.TemporaryDirectory(prefix="gauntlet-automl-") as tmp:
            g = run_gauntlet(Path(args.datasets) / f"{name}.parquet", TABLES[name], Path(tmp) / "artifacts",
                             "r2" if regression else args.metric, overrides, args.config)
            row["gauntlet"] = g
            if not g.get("error"):
                row["task"] = TaskSplits(g["run_dir"]).task
                for peer in peers:
                    timeout = 3 * g["wall"] + 600  # AutoGluon and FLAML overrun their budget a little
                    row[peer] = run_peer(args.peer_python, peer, g["run_dir"], g["wall"], Path(tmp), timeout)
        others = [v for v in (primary(row.get(p), regression) for p in peers) if v is not None]
        mine = primary(g, regression)
        row["margin"] = round(mine - max(others), 5) if mine is not None and others else None
        rows.append(row)
        print(" | ".join([name, *(f"{who} {wall_cell(row.get(who))} s {cell(row.get(who), regression)} "
                                  f"({(row.get(who) or {}).get('champion') or (row.get(who) or {}).get('error')})"
                                  for who in ("gauntlet", *peers))]), flush=True)
        if args.out:
            lines = [flat(r) for r in rows]
            keys = list(dict.fromkeys(k for line in lines for k in line))
            with open(args.out, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=keys)
                writer.writeheader()
                writer.writerows(lines)
    print()
    print("ROC-AUC (macro one-vs-rest for several classes); regression: R2 / RMSE. Peers' s: their process, "
          "imports included; AutoGluon and FLAML were given gauntlet's s.")
    print("| table | metric | gauntlet s | gauntlet | AutoGluon | AutoGluon s | FLAML | FLAML s | CatBoost "
          "| CatBoost s | gauntlet - best peer |")
    print("|---|---|" + "---:|" * 9)
    for r in rows:
        reg = r["task"] == "regression"
        metric = "R2 / RMSE" if reg else ("macro ROC-AUC" if r["task"] == "multiclass" else "ROC-AUC")
        margin = f"{r['margin']:+.4f}" if r["margin"] is not None else "-"
        print(f"| {r['table']} | {metric} | {wall_cell(r['gauntlet'])} | {cell(r['gauntlet'], reg)} "
              f"| {cell(r.get('autogluon'), reg)} | {wall_cell(r.get('autogluon'))} "
              f"| {cell(r.get('flaml'), reg)} | {wall_cell(r.get('flaml'))} "
              f"| {cell(r.get('catboost'), reg)} | {wall_cell(r.get('catboost'))} | {margin} |")
    for r in rows:
        for who in ("gauntlet", *PEERS):
            if (r.get(who) or {}).get("error"):
                print(f"{r['table']}: {who} failed: {r[who]['error']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
