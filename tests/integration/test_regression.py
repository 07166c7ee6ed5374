"""Regression end to end on real data: the `train` flow on builtin:diabetes (and, when ../shared is there,
california_housing and bike_sharing_hour), then batch prediction, the REST answer, load_model and ONNX."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks import registry
from tests.helpers import comet_archives, shared_dataset, smoke_params

pytestmark = pytest.mark.usefixtures("prefect_harness")

MODEL = "diabetes-target"
DIABETES = {"data.path": "builtin:diabetes", "data.target": "target", "evaluation.deployment_threshold": 0.3}


@pytest.fixture(scope="module")
def diabetes_run(tmp_path_factory):
    """The acceptance command's run, with explanations, errors by group, ONNX and the production refit on."""
    from flows.train import train

    artifacts = tmp_path_factory.mktemp("regression")
    report = train(params=smoke_params(artifacts, **DIABETES, **{
        "evaluation.explain": True, "evaluation.sensitive_columns": ["sex"], "registry.refit_on_full_data": True,
        "registry.export_onnx": _onnx_installed()}))
    return report, artifacts


def _onnx_installed() -> bool:
    from tasks.ml.onnx_export import available

    return available()


def test_diabetes_registers_a_regression_champion_with_its_reports(diabetes_run):
    report, artifacts = diabetes_run
    assert report.task == "regression" and report.metric == "r2" and report.registered
    assert report.gate.direction == "maximize" and report.gate.test_value >= 0.3
    assert {c.family for c in report.candidates} == {"linear", "random_forest", "lightgbm", "xgboost"}
    assert all(c.status == "ok" and c.n_trials == 2 for c in report.candidates)
    reports = Path(report.run_dir) / "reports"
    perf = pd.read_csv(reports / "performance_metrics.csv")
    test_row = perf[perf["split"] == "test"].iloc[0]
    for metric in ("rmse", "mae", "r2"):
        assert test_row[f"{metric}_lower"] <= test_row[metric] <= test_row[f"{metric}_upper"]
    assert test_row["r2"] == pytest.approx(report.test_metrics["r2"])
    assert not (reports / "confusion_matrix_summary.csv").exists()
    residuals = pd.read_csv(reports / "residual_summary.csv")
    assert report.confusion == [] and residuals["part"].iloc[0] == "all rows" and residuals["rows"].iloc[0] == 89
    for png in ("predicted_vs_actual", "residuals_vs_predicted", "residual_histogram", "permutation_importance"):
        assert (reports / f"{png}.png").stat().st_size > 1000
    importance = pd.read_csv(reports / "permutation_importance.csv")
    assert set(importance["feature"]) == {"age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"}
    assert importance["importance_mean"].iloc[0] > 0  # shuffling the top feature costs validation R2
    assert set(pd.read_csv(reports / "errors_by_sex.csv")["group"]) == {1.0, 2.0}
    predictions = pd.read_csv(reports / "test_predictions.csv")
    assert list(predictions.columns) == ["actual", "predicted", "prediction_lower", "prediction_upper"]
    interval = report.prediction_interval
    assert interval["coverage"] == 0.9 and interval["half_width"] > 0
    inside = predictions["actual"].between(predictions["prediction_lower"], predictions["prediction_upper"])
    assert interval["test_coverage"] == pytest.approx(inside.mean())
    saved = json.loads((Path(report.run_dir) / "report.json").read_text())
    assert saved["prediction_interval"]["test_coverage"] == pytest.approx(interval["test_coverage"])
    card = (reports / "model_card.md").read_text()
    assert "Task: regression; target `target`" in card and "split-conformal" in card and "predict_interval" in card
    manifest = json.loads((Path(report.run_dir) / "manifest.json").read_text())
    assert manifest["dataset"]["task"] == "regression" and manifest["dataset"]["target_transform"] == "none"
    assert set(manifest["splits"]["test"]["target"]) == {"min", "median", "mean", "max"}


def test_the_champion_is_refitted_and_comet_holds_the_regression_figures(diabetes_run):
    report, artifacts = diabetes_run
    meta = registry.read_metadata(artifacts / "registry", MODEL, report.registry_version)
    assert meta["task"] == "regression" and meta["classes"] == [] and meta["metric"] == "r2"
    assert meta["refit"]["refitted"] is True and meta["refit"]["rows"] == 442
    assert meta["prediction_interval"]["half_width"] == pytest.approx(report.prediction_interval["half_width"])
    gated = registry.load_model(artifacts / "registry", MODEL, gated=True)
    refitted = registry.load_model(artifacts / "registry", MODEL)
    test = pd.read_parquet(Path(report.run_dir) / "splits" / "test.parquet")
    assert not np.allclose(gated.predict(test), refitted.predict(test))  # the refit learnt the test rows too
    archives = comet_archives(artifacts / "comet")
    evaluation = next(a for name, a in archives.items() if name.endswith("-evaluation"))
    assert evaluation["metrics"]["test_r2"][0][1] == pytest.approx(report.test_metrics["r2"])
    uploaded = {name for _, name in evaluation["uploads"]}
    assert {"predicted_vs_actual", "residual_histogram"} <= uploaded, uploaded


def test_batch_rest_and_api_predictions_are_numbers_with_intervals(diabetes_run, tmp_path):
    from fastapi.testclient import TestClient

    from flows.predict import predict
    from gauntlet.api import load_model
    from tasks.serving import ModelHolder, create_app

    report, artifacts = diabetes_run
    rows = pd.read_parquet(Path(report.run_dir) / "splits" / "test.parquet")
    source = tmp_path / "rows.csv"
    rows.to_csv(source, index=False)
    summary = predict(str(source), str(tmp_path / "out.parquet"), registry_dir=str(artifacts / "registry"),
                      keep_columns=["target"])
    scored = pd.read_parquet(summary.output_path)
    assert list(scored.columns) == ["target", "prediction", "prediction_lower", "prediction_upper", "model_version"]
    assert scored["prediction"].dtype == "float64" and (scored["prediction_lower"] < scored["prediction"]).all()

    model = load_model(MODEL, registry=artifacts / "registry")
    interval = model.predict_interval(rows)
    assert np.allclose(interval["prediction"], scored["prediction"])
    assert np.allclose(model.predict(rows), scored["prediction"])
    with pytest.raises(registry.RegistryError, match="regression model: it has no class probabilities"):
        model.predict_proba(rows)

    holder = ModelHolder(artifacts / "registry", reload_every_s=None)
    body = json.loads(rows.drop(columns="target").head(2).to_json(orient="records"))
    answer = TestClient(create_app(holder)).post("/predict", json=body)
    assert answer.status_code == 200, answer.text
    first = answer.json()["predictions"][0]
    assert set(first) == {"prediction", "interval"}
    assert first["prediction"] == pytest.approx(scored["prediction"].iloc[0])
    assert first["interval"] == pytest.approx([scored["prediction_lower"].iloc[0], scored["prediction_upper"].iloc[0]])


def test_onnx_export_of_the_regression_champion_predicts_like_it(diabetes_run):
    onnxruntime = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    report, artifacts = diabetes_run
    root = artifacts / "registry"
    meta = registry.read_metadata(root, MODEL, report.registry_version)
    assert meta["onnx"]["exported"] is True, meta["onnx"]
    test = pd.read_parquet(Path(report.run_dir) / "splits" / "test.parquet")
    session = onnxruntime.InferenceSession(str(root / MODEL / str(report.registry_version) / "model.onnx"),
                                           providers=["CPUExecutionProvider"])
    feeds = {meta["onnx"]["inputs"][c]: test[[c]].to_numpy(np.float32) for c in meta["features"]}
    (onnx_pred,) = session.run(None, feeds)
    expected = registry.load_model(root, MODEL).predict(test.astype({c: "float32" for c in meta["features"]}))
    assert np.abs(onnx_pred.ravel() - expected).max() <= 1e-3 * expected.std()


def test_ensemble_and_a_lower_is_better_metric_follow_the_challenger_rule(diabetes_run, tmp_path):
    """A second run into the same registry, ranked on rmse (lower is better) with an averaging ensemble:
    the gate compares it with the registered champion on that metric."""
    from flows.train import train

    report, artifacts = diabetes_run
    second = train(params=smoke_params(artifacts, **{
        **DIABETES, "evaluation.comparison_metric": "rmse", "evaluation.deployment_threshold": 80.0,
        "evaluation.ensemble.enabled": True, "evaluation.ensemble.method": "vote", "evaluation.ensemble.top_k": 2,
        "tracking.backend": "none",
        "search.seed": 7, "models.random_forest.enabled": False, "models.xgboost.enabled": False, "models.catboost.enabled": False}))
    assert second.metric == "rmse" and second.gate.direction == "minimize"
    ensemble = next(c for c in second.candidates if c.family == "ensemble")
    assert ensemble.best_params["voting"] == "mean" and len(ensemble.best_params["members"]) == 2
    assert second.gate.incumbent_version == report.registry_version
    assert second.gate.incumbent_value is not None and second.gate.test_value <= 80.0
    better = second.gate.incumbent_value - second.gate.test_value > second.gate.min_improvement
    assert second.registered == better


# ------------------------------------------------------------------------ real public tables


shared = shared_dataset


@pytest.mark.datasets
def test_california_housing_beats_default_lightgbm_and_covers_as_asked(tmp_path):
    """One categorical, missing values and a capped target: the champion's test R2 is at least a default
    LGBMRegressor's on the same train rows minus 0.01, and the interval covers 0.9 +- 0.05 of test rows."""
    from lightgbm import LGBMRegressor
    from sklearn.metrics import r2_score

    from flows.train import train

    report = train(params=smoke_params(tmp_path, **{
        "data.path": str(shared("california_housing")), "data.target": "median_house_value",
        "tracking.backend": "none", "models.random_forest.enabled": False, "data.sample_rows": 8000}))
    run = Path(report.run_dir)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["dataset"]["task"] == "regression" and manifest["dataset"]["categorical_features"] == [
        "ocean_proximity"]
    train_rows, test = (pd.read_parquet(run / "splits" / f"{n}.parquet") for n in ("train", "test"))
    assert train_rows["total_bedrooms"].isna().any()

    def prepare(frame: pd.DataFrame) -> pd.DataFrame:
        X = frame.drop(columns="median_house_value")
        return X.assign(ocean_proximity=pd.Categorical(X["ocean_proximity"]))

    default = LGBMRegressor(verbose=-1, random_state=0).fit(prepare(train_rows), train_rows["median_house_value"])
    default_r2 = r2_score(test["median_house_value"], default.predict(prepare(test)))
    assert report.registered and report.test_metrics["r2"] >= default_r2 - 0.01, (report.test_metrics, default_r2)
    assert abs(report.prediction_interval["test_coverage"] - 0.9) <= 0.05


@pytest.mark.datasets
def test_bike_sharing_splits_on_time_and_predicts_counts(tmp_path):
    from flows.train import train

    report = train(params=smoke_params(tmp_path, **{
        "data.path": str(shared("bike_sharing_hour")), "data.target": "cnt", "split.strategy": "time",
        "split.time_column": "dteday", "tracking.backend": "none", "evaluation.deployment_threshold": 0.5,
        "models.random_forest.enabled": False, "models.xgboost.enabled": False, "models.catboost.enabled": False, "data.sample_rows": 6000}))
    run = Path(report.run_dir)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["dataset"]["task"] == "regression" and "dteday" not in manifest["dataset"]["features"]
    ranges = [manifest["splits"][name]["time_range"] for name in ("train", "valid", "test")]
    assert ranges[0][1] <= ranges[1][0] and ranges[1][1] <= ranges[2][0]  # train < valid < test in time
    assert manifest["dataset"]["target_transform"] in ("none", "log1p")  # decided on valid by a probe
    assert report.registered and report.test_metrics["r2"] > 0.5
