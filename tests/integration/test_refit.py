"""registry.refit_on_full_data: the registered production model is the gated champion's pipeline and
hyperparameters fitted on every row; the gated model stays beside it for audit and comparisons."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks import registry
from tests.helpers import smoke_params

pytestmark = pytest.mark.usefixtures("prefect_harness")

MODEL = "breast_cancer-diagnosis"
ONLY = {"models.random_forest.enabled": False, "models.xgboost.enabled": False, "models.catboost.enabled": False, "tracking.backend": "none"}


def all_rows(run_dir: str) -> int:
    return sum(len(pd.read_parquet(Path(run_dir) / "splits" / f"{s}.parquet")) for s in ("train", "valid", "test"))


def test_refit_registers_a_model_fitted_on_every_row_with_the_gated_hyperparameters(tmp_path):
    from flows.train import train

    report = train(params=smoke_params(tmp_path, **ONLY, **{"models.logistic_regression.enabled": False,
                                                            "registry.refit_on_full_data": True}))
    root = tmp_path / "registry"
    assert report.registered and report.champion == "lightgbm"
    meta = registry.read_metadata(root, MODEL, report.registry_version)
    refit = meta["refit"]
    assert refit["refitted"] and refit["rows"] == all_rows(report.run_dir) == 569
    assert refit["gated_rows"] == len(pd.read_parquet(Path(report.run_dir) / "splits" / "train.parquet"))
    assert "held-out evaluation of gated_model.pkl" in refit["metrics_from"]
    assert meta["test_metrics"] == report.test_metrics  # the version's metrics: the gated model's
    production, gated = registry.load_model(root, MODEL), registry.load_model(root, MODEL, gated=True)
    prod_model, gated_model = (m.pipeline.model.named_steps["model"] for m in (production, gated))
    for name, value in refit["params"].items():
        assert getattr(prod_model, name) == getattr(gated_model, name) == value, name
    champion = next(c for c in report.candidates if c.family == "lightgbm")
    assert refit["params"] == champion.best_params
    rounds = refit["boosting_rounds"]
    assert rounds["gated"] == champion.best_iteration
    assert prod_model.n_estimators == rounds["refit"] == round(champion.best_iteration * 569 / refit["gated_rows"])
    # The gated model: the same hyperparameters refitted on train+valid before the test split was read.
    measured = meta["train_valid_refit"]
    assert measured["rows"] == 569 - len(pd.read_parquet(Path(report.run_dir) / "splits" / "test.parquet"))
    assert gated_model.n_estimators == measured["boosting_rounds"]["refit"] == round(
        champion.best_iteration * measured["rows"] / refit["gated_rows"])
    assert "fitted on train+valid before the refit" in refit["metrics_from"]
    assert production.pipeline.threshold == gated.pipeline.threshold
    # The gated model is the one the evaluation measured, byte for byte in behaviour.
    test = pd.read_parquet(Path(report.run_dir) / "splits" / "test.parquet")
    seen = pd.read_csv(Path(report.run_dir) / "reports" / "test_predictions.csv")
    assert list(gated.predict(test)) == seen["predicted"].tolist()
    labels, proba = production.predict_both(test)
    assert np.isfinite(proba.to_numpy()).all() and set(labels) <= set(production.classes)
    assert registry.verify(root) == []


@pytest.mark.parametrize("train_valid", [True, False])
def test_without_refit_the_registered_model_is_the_measured_one(tmp_path, train_valid):
    """The registered model is the one the test split measured: by default the champion refitted on
    train+valid before that read; with evaluation.refit_on_train_valid off, the search's own train-split fit."""
    from flows.train import train
    from tasks.modeling import load_pipeline

    report = train(params=smoke_params(tmp_path, **ONLY, **{"models.lightgbm.enabled": False,
                                                            "evaluation.refit_on_train_valid": train_valid}))
    root = tmp_path / "registry"
    meta = registry.read_metadata(root, MODEL, report.registry_version)
    assert "refit" not in meta and not (root / MODEL / str(report.registry_version) / "gated_model.pkl").exists()
    splits = Path(report.run_dir) / "splits"
    test = pd.read_parquet(splits / "test.parquet")
    seen = pd.read_csv(Path(report.run_dir) / "reports" / "test_predictions.csv")
    model = registry.load_model(root, MODEL)
    assert list(model.predict(test)) == seen["predicted"].tolist()
    champion = next(c for c in report.candidates if c.family == report.champion)
    searched = load_pipeline(champion.pipeline_path, champion.pipeline_sha256).predict_proba(test[model.features])
    same = np.allclose(model.predict_proba(test).to_numpy(), searched)
    if train_valid:
        rows = sum(len(pd.read_parquet(splits / f"{s}.parquet")) for s in ("train", "valid"))
        assert meta["train_valid_refit"]["rows"] == rows and not same  # more rows, another fit
        card = (root / MODEL / str(report.registry_version) / "MODEL_CARD.md").read_text()
        assert f"fitted again on train+valid ({rows} rows) before the test split was read" in card
    else:
        assert "train_valid_refit" not in meta and same


def test_a_calibrated_champion_is_registered_as_gated_with_the_reason(tmp_path):
    from flows.train import train

    report = train(params=smoke_params(tmp_path, **ONLY, **{"models.lightgbm.enabled": False,
                                                            "registry.refit_on_full_data": True,
                                                            "evaluation.calibration": "sigmoid"}))
    root = tmp_path / "registry"
    refit = registry.read_metadata(root, MODEL, report.registry_version)["refit"]
    assert refit["refitted"] is False and "calibration is fitted on held-out rows" in refit["reason"]
    assert not (root / MODEL / str(report.registry_version) / "gated_model.pkl").exists()
    test = pd.read_parquet(Path(report.run_dir) / "splits" / "test.parquet")
    seen = pd.read_csv(Path(report.run_dir) / "reports" / "test_predictions.csv")
    assert list(registry.load_model(root, MODEL).predict(test)) == seen["predicted"].tolist()  # the gated model
