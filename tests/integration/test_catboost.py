"""CatBoost, the fifth family, through every stage: a classification table with text categories (which it
takes itself whatever the encoding says) and a regression one, real fits, smoke-sized: the search, TreeSHAP,
the refit, ONNX (numeric inputs only), prediction intervals and the REST answer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks import registry
from tests.helpers import smoke_params

pytestmark = pytest.mark.usefixtures("prefect_harness")

ONLY_CATBOOST = {**{f"models.{f}.enabled": False for f in ("logistic_regression", "linear", "random_forest",
                                                           "lightgbm", "xgboost")},
                 "models.catboost.enabled": True}  # smoke.yaml leaves it out of the other tests' runs


def shop_csv(path: Path, n: int = 400, seed: int = 0) -> Path:
    """Churn that depends on a text city (8 levels) and a number; the city carries most of the signal."""
    rng = np.random.default_rng(seed)
    city = rng.choice([f"city_{i}" for i in range(8)], size=n)
    spend = rng.normal(size=n)
    score = np.isin(city, ["city_1", "city_2", "city_3"]) * 1.5 + 0.5 * spend + rng.normal(0, 0.5, size=n)
    frame = pd.DataFrame({"city": city, "spend": spend, "churn": np.where(score > np.quantile(score, 0.6), "yes", "no")})
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def shop_run(tmp_path_factory):
    from flows.train import train

    artifacts = tmp_path_factory.mktemp("catboost")
    data = shop_csv(artifacts / "shop.csv")
    report = train(params=smoke_params(artifacts, **ONLY_CATBOOST, **{
        "data.path": str(data), "data.target": "churn", "evaluation.explain": True,
        "evaluation.deployment_threshold": 0.5, "registry.export_onnx": True}))
    return report, artifacts


def test_catboost_learns_text_categories_itself_and_is_explained(shop_run):
    from tasks.runs import RunPaths

    report, artifacts = shop_run
    (candidate,) = report.candidates
    assert candidate.family == "catboost" and candidate.status == "ok" and candidate.n_trials == 2
    assert 0 < candidate.best_iteration < 2000  # early-stopped on the valid split
    assert report.champion == "catboost" and report.registered and report.test_metrics["roc_auc"] > 0.75
    reports = Path(report.run_dir) / "reports"
    shap = pd.read_csv(reports / "shap_importance.csv")
    assert "city" in set(shap.iloc[:, 0])  # one column per raw category column: CatBoost saw "city" whole
    assert (reports / "shap_summary.png").stat().st_size > 1000
    pipeline = registry.load_model(artifacts / "registry", "shop-churn")
    rows = pd.read_parquet(RunPaths(report.run_dir).split("test")).head(4).assign(city=["atlantis", "city_1", None,
                                                                                        "city_2"])
    proba = pipeline.predict_proba(rows).to_numpy()  # unseen and missing levels are scored, not refused
    assert proba.shape == (4, 2) and np.allclose(proba.sum(axis=1), 1)
    meta = registry.read_metadata(artifacts / "registry", "shop-churn", report.registry_version)
    assert meta["onnx"]["exported"] is False and "only numeric inputs" in meta["onnx"]["reason"]


def test_catboost_regression_refits_exports_and_serves_intervals(tmp_path):
    from fastapi.testclient import TestClient

    from flows.train import train
    from tasks.serving import ModelHolder, create_app

    onnx = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    report = train(params=smoke_params(tmp_path, **ONLY_CATBOOST, **{
        "data.path": "builtin:diabetes", "data.target": "target", "evaluation.deployment_threshold": 0.2,
        "registry.refit_on_full_data": True, "registry.export_onnx": True, "tracking.backend": "none"}))
    assert report.task == "regression" and report.champion == "catboost" and report.registered
    root, name = tmp_path / "registry", "diabetes-target"
    meta = registry.read_metadata(root, name, report.registry_version)
    assert meta["refit"]["refitted"] and meta["refit"]["boosting_rounds"]["refit"] > 0
    assert meta["onnx"]["exported"] is True, meta["onnx"]
    rows = pd.read_parquet(Path(report.run_dir) / "splits" / "test.parquet").drop(columns="target")
    session = onnx.InferenceSession(str(root / name / str(report.registry_version) / "model.onnx"),
                                    providers=["CPUExecutionProvider"])
    (onnx_pred,) = session.run(None, {meta["onnx"]["inputs"][c]: rows[[c]].to_numpy(np.float32)
                                      for c in meta["features"]})
    model = registry.load_model(root, name)
    assert np.allclose(onnx_pred.ravel(), model.predict(rows), atol=1e-3 * np.std(model.predict(rows)))
    body = json.loads(rows.head(2).to_json(orient="records"))
    answer = TestClient(create_app(ModelHolder(root, reload_every_s=None))).post("/predict", json=body)
    assert answer.status_code == 200, answer.text
    first = answer.json()["predictions"][0]
    assert first["interval"][0] < first["prediction"] < first["interval"][1]
    assert first["prediction"] == pytest.approx(float(model.predict(rows.head(1))[0]))
