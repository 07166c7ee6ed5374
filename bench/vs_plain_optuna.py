"""gauntlet's full `train` flow against a plain hand-written Optuna loop, on the same data and budget.

    .venv/bin/python bench/vs_plain_optuna.py --data ../shared/datasets/adult.parquet --target income \
        [--trials 20] [--repeat 3] [--set key=value ...]

The plain loop is what an engineer would write by hand, one process, no Prefect and no tracking:
one stratified train/valid/test split, one ColumnTransformer fitted once, then for each family a
seeded TPE study with the same search spaces and trial counts, models using every core
(n_jobs=-1), LightGBM/XGBoost early-stopped on the valid split with the same patience, the best
model of each study kept and the champion (best valid F-beta) scored once on the test split.

gauntlet runs `python flows/train.py` (its temporary Prefect server, Comet offline, the local
registry, evaluation and reports included). The two alternate A/B in fresh processes; the script
prints each run, both medians, the ratio and both champions' test ROC-AUC.
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

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("logistic_regression", "random_forest", "lightgbm", "xgboost")


def plain_loop(path: str, target: str, n_trials: int, seed: int, patience: int, beta: float) -> dict:
    """The hand-written baseline. Returns wall seconds, champion, its valid F-beta and test ROC-AUC."""
    start = time.perf_counter()
    import lightgbm as lgb
    import numpy as np
    import optuna
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import fbeta_score, roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    from xgboost import XGBClassifier

    from tasks.ml.search_spaces import SEARCH_SPACES

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if path.startswith("builtin:"):  # the bundled demo table (scikit-learn's breast cancer)
        from tasks.ml.data import load_table

        frame = load_table(path)
    else:
        frame = pd.read_parquet(path)
    y = pd.factorize(frame[target], sort=True)[0]  # breast cancer: benign 0, malignant 1 (gauntlet's positive)
    X = frame.drop(columns=[target])
    X_rest, X_test, y_rest, y_test = train_test_split(X, y, test_size=0.2, stratify=y, random_state=seed)
    X_train, X_valid, y_train, y_valid = train_test_split(
        X_rest, y_rest, test_size=0.25, stratify=y_rest, random_state=seed
    )
    numeric = [c for c in X.columns if pd.api.types.is_numeric_dtype(X[c])]
    categorical = [c for c in X.columns if c not in numeric]
    pre = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
        ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"),
                              OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=5,
                                            max_categories=50, sparse_output=False)), categorical),
    ])
    Xt = pre.fit_transform(X_train).astype(np.float32)
    Xv = pre.transform(X_valid).astype(np.float32)
    Xs = pre.transform(X_test).astype(np.float32)

    def fit(family: str, params: dict):
        if family == "logistic_regression":
            model = LogisticRegression(max_iter=3000, random_state=seed, **params)
            return model.fit(Xt, y_train)
        if family == "random_forest":
            from sklearn.ensemble import RandomForestClassifier

            return RandomForestClassifier(random_state=seed, n_jobs=-1, **params).fit(Xt, y_train)
        if family == "lightgbm":
            model = lgb.LGBMClassifier(n_estimators=2000, subsample_freq=1, random_state=seed, n_jobs=-1,
                                       verbose=-1, **params)
            return model.fit(Xt, y_train, eval_X=(Xv,), eval_y=(y_valid,),
                             callbacks=[lgb.early_stopping(patience, verbose=False)])
        weight = params.pop("class_weight", None)
        if weight == "balanced":
            params["scale_pos_weight"] = float((y_train == 0).sum() / max((y_train == 1).sum(), 1))
        model = XGBClassifier(n_estimators=2000, tree_method="hist", random_state=seed, n_jobs=-1,
                              early_stopping_rounds=patience, eval_metric="logloss", **params)
        return model.fit(Xt, y_train, eval_set=[(Xv, y_valid)], verbose=False)

    best: dict[str, tuple[float, object]] = {}
    seconds = {}
    for family in FAMILIES:
        family_start = time.perf_counter()
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))

        def objective(trial: optuna.Trial, family: str = family) -> float:
            model = fit(family, SEARCH_SPACES[family](trial, True))
            score = fbeta_score(y_valid, model.predict(Xv), beta=beta)
            if family not in best or score > best[family][0]:
                best[family] = (score, model)
            return score

        study.optimize(objective, n_trials=n_trials)
        seconds[family] = round(time.perf_counter() - family_start, 1)
    champion = max(best, key=lambda f: best[f][0])
    model = best[champion][1]
    test_auc = roc_auc_score(y_test, model.predict_proba(Xs)[:, 1])
    return {"wall": time.perf_counter() - start, "champion": champion,
            "valid_fbeta": best[champion][0], "test_roc_auc": float(test_auc), "search_seconds": seconds}


def run_plain(args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--plain-only", "--data", args.data, "--target", args.target,
           "--trials", str(args.trials)]
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"plain loop failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["wall"] = wall  # the whole process, imports included, like gauntlet's
    return result


def run_gauntlet(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="gauntlet-bench-") as tmp:
        data = args.data if args.data.startswith("builtin:") else str(Path(args.data).resolve())
        sets = [f"artifacts_dir={tmp}", f"data.path={data}", f"data.target={args.target}"]
        for family in FAMILIES:
            sets += [f"models.{family}.n_trials={args.trials}", f"models.{family}.timeout_s=null"]
        cmd = [sys.executable, "flows/train.py", "--config", args.config]
        for item in sets + args.overrides:
            cmd += ["--set", item]
        start = time.perf_counter()
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "COMET_API_KEY": ""})
        wall = time.perf_counter() - start
        if out.returncode != 0:
            raise SystemExit(f"gauntlet failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
        (run,) = (Path(tmp) / "runs").iterdir()
        report = json.loads((run / "report.json").read_text())
    champion = report["champion"]
    searches = {c["family"]: c.get("search_seconds") for c in report["candidates"]}
    return {"wall": wall, "champion": champion, "test_roc_auc": report["test_metrics"].get("roc_auc"),
            "registered": report.get("registered"), "search_seconds": searches}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/datasets/adult.parquet"))
    parser.add_argument("--target", default="income")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--config", default="config/train.yaml")
    parser.add_argument("--set", action="append", default=[], dest="overrides", help="extra gauntlet overrides")
    parser.add_argument("--plain-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_only:
        sys.path.insert(0, str(ROOT))
        print(json.dumps(plain_loop(args.data, args.target, args.trials, seed=42, patience=50, beta=0.5)))
        return 0

    print(f"{Path(args.data).name}, {args.trials} trials per family, {os.cpu_count()} cores, {args.repeat} A/B rounds")
    plain, ours = [], []
    for i in range(args.repeat):
        p = run_plain(args)
        plain.append(p)
        print(f"round {i + 1} plain   : {p['wall']:6.1f} s, champion {p['champion']}, test ROC-AUC "
              f"{p['test_roc_auc']:.4f}; search s {p['search_seconds']}", flush=True)
        g = run_gauntlet(args)
        ours.append(g)
        print(f"round {i + 1} gauntlet: {g['wall']:6.1f} s, champion {g['champion']}, test ROC-AUC "
              f"{g['test_roc_auc']:.4f}, registered {g['registered']}; search s {g['search_seconds']}", flush=True)
    mp = statistics.median(r["wall"] for r in plain)
    mg = statistics.median(r["wall"] for r in ours)
    ap = statistics.median(r["test_roc_auc"] for r in plain)
    ag = statistics.median(r["test_roc_auc"] for r in ours)
    print(f"median wall: plain {mp:.1f} s, gauntlet {mg:.1f} s, ratio gauntlet/plain {mg / mp:.2f}")
    print(f"median champion test ROC-AUC: plain {ap:.4f}, gauntlet {ag:.4f} (difference {ag - ap:+.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
