"""Wall time and peak memory of one family's search (or preprocessing), each run in a fresh process.

    PYTHONPATH=. .venv/bin/python bench/xgb_matrix_reuse.py [--repeat 3] [--cases xgb_synth ...]
    .venv/bin/python bench/xgb_matrix_reuse.py --code /work/before --code .     (two code versions)

Cases:
  xgb_synth   XGBoost search, 10 trials, make_classification 200,000 x 40 float32 (2% missing values)
  xgb_demo    XGBoost search, 20 trials, builtin:breast_cancer
  prep_synth  logistic regression's preprocessing (median imputation, scaling) on the synthetic table,
              five times: fitted on its train split, applied to train and valid
  lr_synth    logistic-regression search, 5 trials, on the synthetic table

A run builds the table and its splits, then resets the peak (Linux VmHWM, through /proc/self/clear_refs)
and times encoding (prepare_data) and the search (run_study). It prints the RSS before, the peak, and
the seconds. The code measured is whatever `tasks` imports: the directory on PYTHONPATH, or each
--code DIR in turn, alternating run by run so that both versions see the same machine load. The last
lines are the medians per case and version.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

MB = 1 << 20
CASES = ("xgb_synth", "xgb_demo", "prep_synth", "lr_synth")


def _status(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _table(case: str):  # noqa: ANN202
    import numpy as np
    import pandas as pd

    if case == "xgb_demo":
        from tasks.ml.data import load_table

        return load_table("builtin:breast_cancer"), "diagnosis"
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=200_000, n_features=40, n_informative=20, random_state=0)
    X = X.astype(np.float32)
    X[np.random.default_rng(0).random(X.shape) < 0.02] = np.nan
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    frame["label"] = np.where(y == 1, "yes", "no")
    return frame, "label"


def run_case(case: str) -> dict:
    import gc

    from config.runtime import configure_environment

    configure_environment()  # the process defaults of a train run (pyarrow on the system allocator...)
    import optuna

    import tasks.ml
    from tasks.ml.data import split_dataset, validate_dataset
    from tasks.ml.estimators import get_family
    from tasks.ml.search import DataSettings, SearchSettings, prepare_data, run_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    frame, target = _table(case)
    info = validate_dataset(frame, target)
    parts = split_dataset(frame, info, seed=0)
    del frame
    gc.collect()
    family = "xgboost" if case.startswith("xgb") else "logistic_regression"
    n_trials = {"xgb_synth": 10, "xgb_demo": 20, "lr_synth": 5}.get(case, 0)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # VmHWM := the current RSS
    before, start = _status("VmRSS"), time.perf_counter()
    spec = get_family(family)
    for _ in range(5 if case == "prep_synth" else 1):  # a fraction of a second each: five, for steadier times
        data = prepare_data(spec, info, parts["train"], parts["valid"], DataSettings())
        if case == "prep_synth":
            data.preprocessor.transform(parts["train"][info.features])  # scoring and refits transform too
    encoded = time.perf_counter()
    trials = 0
    if n_trials:
        settings = SearchSettings(metric="fbeta", direction="maximize", n_trials=n_trials, early_stopping_rounds=50)
        study, _ = run_study(spec, data, settings)
        trials = len(study.trials)
    done = time.perf_counter()
    return {"case": case, "code": str(Path(tasks.ml.__file__).resolve().parents[2]), "trials": trials,
            "encode_s": round(encoded - start, 2), "search_s": round(done - encoded, 2),
            "wall_s": round(done - start, 2), "rss_before_mb": round(before / MB),
            "peak_mb": round(_status("VmHWM") / MB)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--code", action="append", default=[], help="a checkout to measure (repeatable)")
    parser.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_case(args.child)), flush=True)
        return
    codes = [str(Path(c).resolve()) for c in args.code] or [None]
    results: dict[tuple[str, str], list[dict]] = {}
    for case in args.cases:
        for _ in range(args.repeat):
            for code in codes:
                env = dict(os.environ)
                if code is not None:
                    env["PYTHONPATH"] = code
                out = subprocess.run([sys.executable, __file__, "--child", case], env=env, capture_output=True,
                                     text=True, check=True, cwd=code or os.getcwd())
                row = json.loads(out.stdout.strip().splitlines()[-1])
                print(json.dumps(row), flush=True)
                results.setdefault((case, row["code"]), []).append(row)
    print(f"\n{'case':<12}{'code':<28}{'runs':>5}{'wall s':>9}{'encode s':>10}{'search s':>10}{'peak MB':>9}"
          f"{'before MB':>11}")
    for (case, code), rows in results.items():
        med = {k: statistics.median(r[k] for r in rows) for k in ("wall_s", "encode_s", "search_s", "peak_mb",
                                                                   "rss_before_mb")}
        print(f"{case:<12}{code[-28:]:<28}{len(rows):>5}{med['wall_s']:>9.2f}{med['encode_s']:>10.2f}"
              f"{med['search_s']:>10.2f}{med['peak_mb']:>9.0f}{med['rss_before_mb']:>11.0f}")


if __name__ == "__main__":
    main()
