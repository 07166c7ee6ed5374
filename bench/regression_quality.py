"""Regression quality of a finished run against a default LGBMRegressor on the same split.

    .venv/bin/python bench/regression_quality.py artifacts/runs/<run_id> [--registry artifacts/registry]

Prints the champion's test R2 (from report.json), a default `LGBMRegressor()` fitted on the run's train
split and scored on its test split (category columns as pandas categories, as a user would), and the
coverage of the prediction interval that `flows/predict.py` writes for the test split.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def default_lightgbm_r2(run: Path, manifest: dict) -> float:
    from lightgbm import LGBMRegressor
    from sklearn.metrics import r2_score

    dataset = manifest["dataset"]
    features, target = dataset["features"], dataset["target"]
    train, test = (pd.read_parquet(run / "splits" / f"{name}.parquet") for name in ("train", "test"))

    def prepare(frame: pd.DataFrame) -> pd.DataFrame:
        X = frame[features].copy()
        for column in dataset["categorical_features"]:
            X[column] = pd.Categorical(X[column], categories=sorted(train[column].dropna().unique()))
        for column in dataset["datetime_features"]:
            X[column] = pd.to_datetime(X[column]).astype("int64")
        return X

    model = LGBMRegressor(verbose=-1, random_state=0).fit(prepare(train), train[target])
    return float(r2_score(test[target], model.predict(prepare(test))))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--registry", default=None, help="default: <artifacts>/registry beside the run")
    args = parser.parse_args()
    run = args.run.resolve()
    report, manifest = (json.loads((run / f).read_text()) for f in ("report.json", "manifest.json"))
    registry = args.registry or str(run.parents[1] / "registry")
    target = manifest["dataset"]["target"]
    baseline = default_lightgbm_r2(run, manifest)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "predictions.parquet"
        start = time.perf_counter()
        command = [sys.executable, str(ROOT / "flows" / "predict.py"), "--input", str(run / "splits" / "test.parquet"),
                   "--output", str(out), "--registry", registry, "--model", manifest["model_name"], "--keep", target]
        subprocess.run(command, check=True, cwd=ROOT, capture_output=True)
        seconds = time.perf_counter() - start
        scored = pd.read_parquet(out)
    inside = (scored[target] >= scored["prediction_lower"]) & (scored[target] <= scored["prediction_upper"])
    champion = report["test_metrics"]["r2"]
    print(f"run {run.name}: {manifest['data']['rows']:,} rows, target {target!r}, "
          f"transform {manifest['dataset']['target_transform']}")
    print(f"champion ({report['champion']}) test R2      {champion:.4f}")
    print(f"default LGBMRegressor test R2     {baseline:.4f}   (champion - default: {champion - baseline:+.4f})")
    print(f"flows/predict.py interval coverage {inside.mean():.4f} on {len(scored):,} test rows "
          f"(asked {report['prediction_interval']['coverage']}; predict took {seconds:.1f} s)")
    print(f"registered: {report['registered']} (version {report['registry_version']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
