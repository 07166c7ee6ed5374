"""The peers gauntlet is measured against, on one gauntlet run's own split files (same rows, same test).

- `user_loop`: the Optuna loop an engineer writes by hand, with search spaces of their own (not
  gauntlet's): four families one after another, each fit on every core, LightGBM/XGBoost early-stopped
  on valid, the best model per family kept, the champion scored once on test.
- `default_lightgbm`: an untuned `LGBMClassifier()` on the training rows (pandas categories).
- `flaml_automl`: FLAML's AutoML at a given wall time (`pip install -e '.[bench]'`).
- `run_gauntlet`: `gauntlet train` (the `train` flow) in a fresh process; its run folder is kept for the peers.

Shared by bench/vs_plain_optuna.py and bench/vs_peers.py; every result is a dict with `wall`,
`test_roc_auc`, `test_fbeta` (threshold 0.5, or the top class; macro over classes when there are more
than two) and what else the peer knows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("logistic_regression", "random_forest", "lightgbm", "xgboost")
SEED = 42


# --- gauntlet -------------------------------------------------------------------------------------

def run_gauntlet(data: str, target: str, trials: int, artifacts: Path, metric: str = "auto",
                 overrides: list[str] = (), config: str = "config/train.yaml") -> dict[str, Any]:
    """gauntlet's whole `train` flow (Prefect, Comet offline, registry, reports), every family running
    all its trials (time limits lifted). The run folder stays under `artifacts` for the peers."""
    data = data if data.startswith("builtin:") else str(Path(data).resolve())
    sets = [f"artifacts_dir={artifacts}", f"data.path={data}", f"data.target={target}",
            f"evaluation.comparison_metric={metric}", "search.time_budget_s=null"]
    for family in FAMILIES:
        sets += [f"models.{family}.n_trials={trials}", f"models.{family}.timeout_s=null"]
    cmd = [str(Path(sys.executable).parent / "gauntlet"), "train", "--config", config, "--quiet"]
    for item in [*sets, *overrides]:
        cmd += ["--set", item]
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "COMET_API_KEY": ""})
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"gauntlet failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    run = max((Path(artifacts) / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    report = json.loads((run / "report.json").read_text())
    stages = json.loads((run / "manifest.json").read_text()).get("stages", {})
    return {"wall": wall, "run_dir": run, "champion": report["champion"],
            "stages": {name: round(figures.get("wall_s", 0.0), 1) for name, figures in stages.items()},
            "test_roc_auc": report["test_metrics"].get("roc_auc"), "test_fbeta": report["test_metrics"].get("fbeta"),
            "registered": report.get("registered"),
            "search_seconds": {c["family"]: c.get("search_seconds") for c in report["candidates"]}}


# --- the run's split files ------------------------------------------------------------------------

class Splits:
    """train/valid/test of a gauntlet run, the features as a user would hand them to a library."""

    def __init__(self, run_dir: Path) -> None:
        manifest = json.loads((Path(run_dir) / "manifest.json").read_text())["dataset"]
        self.target, self.classes = manifest["target"], list(manifest["classes"])
        self.features = list(manifest["features"])
        self.categorical = [c for c in manifest["categorical_features"] if c in self.features]
        self.datetime = [c for c in manifest.get("datetime_features", []) if c in self.features]
        parts = {name: pd.read_parquet(Path(run_dir) / "splits" / f"{name}.parquet")
                 for name in ("train", "valid", "test")}
        index = {str(c): i for i, c in enumerate(self.classes)}
        self.y = {k: part[self.target].astype(str).map(index).to_numpy() for k, part in parts.items()}
        self.X = {k: self._features(part) for k, part in parts.items()}
        self.n_classes = len(self.classes)

    def _features(self, frame: pd.DataFrame) -> pd.DataFrame:
        X = frame[self.features].copy()
        for c in self.datetime:  # a date as days since the epoch
            X[c] = pd.to_datetime(X[c], errors="coerce").astype("int64") / 86_400e9
        for c in self.categorical:
            X[c] = X[c].map(lambda v: v if pd.isna(v) else str(v)).astype("category")
        return X


def test_scores(y: np.ndarray, proba: np.ndarray, n_classes: int, beta: float = 0.5) -> dict[str, float]:
    from sklearn.metrics import fbeta_score, roc_auc_score

    if n_classes == 2:
        return {"test_roc_auc": float(roc_auc_score(y, proba[:, 1])),
                "test_fbeta": float(fbeta_score(y, (proba[:, 1] >= 0.5).astype(int), beta=beta))}
    labels = list(range(n_classes))
    return {"test_roc_auc": float(roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=labels)),
            "test_fbeta": float(fbeta_score(y, proba.argmax(axis=1), beta=beta, average="macro", labels=labels))}


def _valid_score(y: np.ndarray, proba: np.ndarray, n_classes: int, metric: str, beta: float) -> float:
    if metric == "roc_auc":
        return test_scores(y, proba, n_classes, beta)["test_roc_auc"]
    return test_scores(y, proba, n_classes, beta)["test_fbeta"]


# --- the hand-written loop -------------------------------------------------------------------------

def user_loop(s: Splits, n_trials: int, metric: str = "roc_auc", beta: float = 0.5, patience: int = 50,
              n_jobs: int | None = None) -> dict[str, Any]:
    """What an engineer writes: one-hot + median imputation, a TPE study per family on the valid split."""
    start = time.perf_counter()
    import lightgbm as lgb
    import optuna
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    from xgboost import XGBClassifier

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    n_jobs = n_jobs or os.cpu_count() or 1
    numeric = [c for c in s.features if c not in s.categorical]
    onehot = make_pipeline(SimpleImputer(strategy="most_frequent"),
                           OneHotEncoder(handle_unknown="ignore", min_frequency=5, sparse_output=False))
    pre = ColumnTransformer([("num", SimpleImputer(strategy="median"), numeric), ("cat", onehot, s.categorical)])
    frames = {k: X.astype({c: object for c in s.categorical}) for k, X in s.X.items()}
    Xt = pre.fit_transform(frames["train"]).astype(np.float32)
    Xv, Xs = (pre.transform(frames[k]).astype(np.float32) for k in ("valid", "test"))
    scaler = StandardScaler().fit(Xt)  # for the linear model only
    yt, yv = s.y["train"], s.y["valid"]
    k = s.n_classes

    def fit_predict(family: str, trial: optuna.Trial) -> tuple[Any, np.ndarray]:
        if family == "logistic_regression":
            model = LogisticRegression(C=trial.suggest_float("C", 1e-3, 1e2, log=True), max_iter=1000)
            model.fit(scaler.transform(Xt), yt)
            return model, model.predict_proba(scaler.transform(Xv))
        if family == "random_forest":
            model = RandomForestClassifier(
                n_estimators=trial.suggest_int("n_estimators", 50, 300),
                max_depth=trial.suggest_int("max_depth", 2, 24),
                min_samples_leaf=trial.suggest_int("min_samples_leaf", 1, 10),
                max_features=trial.suggest_categorical("max_features", ["sqrt", "log2", 0.5]),
                max_samples=trial.suggest_float("max_samples", 0.2, 1.0),
                n_jobs=n_jobs, random_state=SEED).fit(Xt, yt)
            return model, model.predict_proba(Xv)
        common = dict(
            learning_rate=trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
            subsample=trial.suggest_float("subsample", 0.5, 1.0),
            colsample_bytree=trial.suggest_float("colsample_bytree", 0.5, 1.0),
            reg_lambda=trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
            n_estimators=2000, n_jobs=n_jobs, random_state=SEED)
        if family == "lightgbm":
            model = lgb.LGBMClassifier(num_leaves=trial.suggest_int("num_leaves", 8, 256, log=True),
                                       min_child_samples=trial.suggest_int("min_child_samples", 5, 100, log=True),
                                       subsample_freq=1, verbose=-1, **common)
            model.fit(Xt, yt, eval_X=(Xv,), eval_y=(yv,), callbacks=[lgb.early_stopping(patience, verbose=False)])
            return model, model.predict_proba(Xv)
        model = XGBClassifier(max_depth=trial.suggest_int("max_depth", 2, 10),
                              min_child_weight=trial.suggest_float("min_child_weight", 0.5, 20.0, log=True),
                              tree_method="hist", early_stopping_rounds=patience, **common)
        model.fit(Xt, yt, eval_set=[(Xv, yv)], verbose=False)
        return model, model.predict_proba(Xv)

    best: dict[str, tuple[float, Any]] = {}
    seconds = {}
    for family in FAMILIES:
        family_start = time.perf_counter()

        def objective(trial: optuna.Trial, family: str = family) -> float:
            model, proba = fit_predict(family, trial)
            score = _valid_score(yv, proba, k, metric, beta)
            if family not in best or score > best[family][0]:
                best[family] = (score, model)
            return score

        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=SEED))
        study.optimize(objective, n_trials=n_trials)
        seconds[family] = round(time.perf_counter() - family_start, 1)
    champion = max(best, key=lambda f: best[f][0])
    model = best[champion][1]
    proba = model.predict_proba(scaler.transform(Xs) if champion == "logistic_regression" else Xs)
    return {"wall": time.perf_counter() - start, "champion": champion, "search_seconds": seconds,
            **test_scores(s.y["test"], proba, k, beta)}


# --- untuned LightGBM and FLAML ---------------------------------------------------------------------

def default_lightgbm(s: Splits, beta: float = 0.5) -> dict[str, Any]:
    import lightgbm as lgb

    start = time.perf_counter()
    model = lgb.LGBMClassifier(random_state=SEED, verbose=-1).fit(s.X["train"], s.y["train"])
    proba = model.predict_proba(s.X["test"])
    return {"wall": time.perf_counter() - start, **test_scores(s.y["test"], proba, s.n_classes, beta)}


def flaml_automl(s: Splits, seconds: float, beta: float = 0.5) -> dict[str, Any] | None:
    """FLAML's AutoML searching `seconds` of wall time on the valid split; None where it is not installed."""
    try:
        from flaml import AutoML
    except ImportError:
        return None
    start = time.perf_counter()
    automl = AutoML()
    automl.fit(X_train=s.X["train"], y_train=s.y["train"], X_val=s.X["valid"], y_val=s.y["valid"],
               task="classification", metric="roc_auc" if s.n_classes == 2 else "roc_auc_ovr",
               time_budget=max(1.0, seconds), seed=SEED, verbose=0, n_jobs=os.cpu_count() or 1)
    proba = automl.predict_proba(s.X["test"])
    return {"wall": time.perf_counter() - start, "champion": automl.best_estimator,
            **test_scores(s.y["test"], proba, s.n_classes, beta)}
