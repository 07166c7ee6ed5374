"""ONNX export (registry.export_onnx): the champion stored as model.onnx only when it predicts like
the original; onnxruntime runs it here."""

from __future__ import annotations

import hashlib
import pickle

import numpy as np
import pandas as pd
import pytest

from tests.helpers import smoke_params

pytestmark = pytest.mark.usefixtures("prefect_harness")
onnxruntime = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory):
    from flows.train import train

    artifacts = tmp_path_factory.mktemp("onnx")
    report = train(params=smoke_params(artifacts, **{"registry.export_onnx": True, "models.catboost.enabled": True}))
    assert report.registered
    return report, artifacts


def test_champion_is_stored_as_onnx_that_predicts_like_it(exported_run):
    from tasks import registry
    from tasks.runs import RunPaths

    report, artifacts = exported_run
    root, name = artifacts / "registry", "breast_cancer-diagnosis"
    meta = registry.read_metadata(root, name, report.registry_version)
    record = meta["onnx"]
    assert record["exported"] is True and record["label_agreement"] == 1.0 and record["parity_rows"] == 114
    onnx_file = root / name / str(report.registry_version) / "model.onnx"
    assert hashlib.sha256(onnx_file.read_bytes()).hexdigest() == meta["files_sha256"]["model.onnx"]
    test = pd.read_parquet(RunPaths(report.run_dir).split("test"))
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    feeds = {record["inputs"][c]: test[[c]].to_numpy(np.float32) for c in meta["features"]}
    labels, proba = session.run(None, feeds)
    original = registry.load_model(root, name)
    expected = original.predict_proba(test).to_numpy()
    assert np.abs(proba - expected).max() <= record["tolerance"]
    assert [original.classes[k] for k in labels] == list(original.predict(test))


@pytest.mark.parametrize("family", ["logistic_regression", "random_forest", "lightgbm", "xgboost", "catboost"])
def test_every_family_exports_on_numeric_data(exported_run, family):
    from tasks.ml.evaluation import DecisionModel
    from tasks.ml.onnx_export import export
    from tasks.runs import RunPaths

    report, _ = exported_run
    paths = RunPaths(report.run_dir)
    pipeline = pickle.loads((paths.candidates / f"{family}.pkl").read_bytes())
    test = pd.read_parquet(paths.split("test")).drop(columns=["diagnosis"])
    data, record = export(DecisionModel(pipeline, threshold=0.4), test)
    assert record["exported"] is True, record
    assert data and record["max_abs_probability_diff"] <= record["tolerance"]


def test_what_onnx_cannot_express_is_recorded_not_fatal(exported_run):
    from tasks.ml.evaluation import DecisionModel
    from tasks.ml.onnx_export import export
    from tasks.runs import RunPaths

    report, _ = exported_run
    paths = RunPaths(report.run_dir)
    pipeline = pickle.loads((paths.candidates / "lightgbm.pkl").read_bytes())
    test = pd.read_parquet(paths.split("test")).drop(columns=["diagnosis"])
    data, record = export(DecisionModel(pipeline, calibrator=object()), test)
    assert data is None and record == {"exported": False, "reason": record["reason"]}
    assert "calibrated" in record["reason"]
    data, record = export(DecisionModel(pipeline), test.assign(**{"mean radius": test["mean radius"].astype(str)}))
    assert data is None and "only numeric inputs" in record["reason"] and "'mean radius'" in record["reason"]


def test_with_a_refit_the_onnx_file_is_the_registered_refitted_model(tmp_path):
    from flows.train import train
    from tasks import registry
    from tasks.runs import RunPaths

    report = train(params=smoke_params(tmp_path, **{
        "registry.export_onnx": True, "registry.refit_on_full_data": True, "tracking.backend": "none",
        "models.logistic_regression.enabled": False, "models.random_forest.enabled": False,
        "models.xgboost.enabled": False, "models.catboost.enabled": False}))
    root, name = tmp_path / "registry", "breast_cancer-diagnosis"
    meta = registry.read_metadata(root, name, report.registry_version)
    assert meta["refit"]["refitted"] and meta["onnx"]["exported"]
    test = pd.read_parquet(RunPaths(report.run_dir).split("test"))
    session = onnxruntime.InferenceSession(str(root / name / str(report.registry_version) / "model.onnx"),
                                           providers=["CPUExecutionProvider"])
    _, proba = session.run(None, {meta["onnx"]["inputs"][c]: test[[c]].to_numpy(np.float32) for c in meta["features"]})
    refitted = registry.load_model(root, name).predict_proba(test).to_numpy()
    gated = registry.load_model(root, name, gated=True).predict_proba(test).to_numpy()
    assert np.abs(proba - refitted).max() <= meta["onnx"]["tolerance"] < np.abs(proba - gated).max()
