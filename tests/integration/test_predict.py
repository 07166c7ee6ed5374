"""Batch prediction: the `predict` flow on a real smoke training's registry and test split."""

from __future__ import annotations

import json
import pickle
import shutil
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from config.errors import DataError, RegistryError
from tasks import registry
from tasks.ml.scoring import SchemaError
from tests.helpers import last_line, run_cli

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(scope="module")
def trained(trained_smoke):
    return trained_smoke


def _registry(artifacts):
    return str(artifacts / "registry")


def _test_split(report):
    from tasks.runs import RunPaths

    return RunPaths(report.run_dir).split("test")


def test_predict_reproduces_the_evaluation_exactly(trained, tmp_path):
    from flows.predict import predict

    report, artifacts = trained
    out = tmp_path / "predictions.parquet"
    summary = predict(input_path=str(_test_split(report)), output_path=str(out), registry_dir=_registry(artifacts))
    assert summary.rows == 114 and summary.model_version == report.registry_version
    assert summary.ignored_columns == ["diagnosis"]  # the target, present in the test split, is not an input
    got = pd.read_parquet(out)
    seen = pd.read_csv(report.reports["test_predictions"])  # what the gate saw, row by row
    assert list(got.columns) == ["prediction", "proba_benign", "proba_malignant", "model_version"]
    assert got["prediction"].tolist() == seen["predicted"].tolist()
    np.testing.assert_array_equal(got[["proba_benign", "proba_malignant"]].to_numpy(),
                                  seen[["proba_benign", "proba_malignant"]].to_numpy())  # exact, not close
    assert (got["model_version"] == report.registry_version).all()
    assert not list(tmp_path.glob(".*partial"))


def test_csv_in_chunks_with_kept_columns_matches_one_pass(trained, tmp_path):
    from flows.predict import predict

    report, artifacts = trained
    frame = pd.read_parquet(_test_split(report))
    frame.insert(0, "row_id", np.arange(len(frame)) * 10)
    frame = frame[list(reversed(frame.columns))]  # column order does not matter
    source = tmp_path / "rows.csv"
    frame.to_csv(source, index=False)
    whole = predict(input_path=str(source), output_path=str(tmp_path / "whole.parquet"),
                    registry_dir=_registry(artifacts))
    chunked = predict(input_path=str(source), output_path=str(tmp_path / "chunked.csv"),
                      registry_dir=_registry(artifacts), keep_columns=["row_id"], chunk_rows=7)
    assert whole.rows == chunked.rows == len(frame) and sorted(whole.ignored_columns) == ["diagnosis", "row_id"]
    a, b = pd.read_parquet(tmp_path / "whole.parquet"), pd.read_csv(tmp_path / "chunked.csv")
    assert b["row_id"].tolist() == frame["row_id"].tolist()  # input order kept across 17 chunks
    assert b["prediction"].tolist() == a["prediction"].tolist()
    np.testing.assert_allclose(b["proba_malignant"], a["proba_malignant"], rtol=0, atol=1e-15)


def test_missing_column_is_refused_before_scoring(trained, tmp_path):
    from tasks.prediction import preflight

    report, artifacts = trained
    frame = pd.read_parquet(_test_split(report)).drop(columns=["mean radius"])
    source = tmp_path / "rows.parquet"
    frame.to_parquet(source)
    with pytest.raises(SchemaError, match="input lacks the feature column 'mean radius' that the model was"):
        preflight(str(source), str(tmp_path / "out.parquet"), _registry(artifacts), None, "champion", None, [])
    result = run_cli("--input", str(source), "--output", str(tmp_path / "out.parquet"), "--registry",
                     _registry(artifacts), script="flows/predict.py", timeout=120)
    assert result.returncode == 2
    assert last_line(result.stderr).startswith("error: input lacks the feature column 'mean radius'")
    assert "Traceback" not in result.stderr and not (tmp_path / "out.parquet").exists()


def test_bad_value_late_in_the_file_leaves_no_output(trained, tmp_path):
    from flows.predict import predict

    report, artifacts = trained
    frame = pd.read_parquet(_test_split(report)).astype({"mean area": object})
    frame.loc[100, "mean area"] = "n/a?"
    source, out = tmp_path / "rows.csv", tmp_path / "out.csv"
    frame.to_csv(source, index=False)
    with pytest.raises(SchemaError, match=r"column 'mean area' must hold numbers, but row 100 holds 'n/a\?'"):
        predict(input_path=str(source), output_path=str(out), registry_dir=_registry(artifacts), chunk_rows=25)
    assert not out.exists() and not list(tmp_path.glob(".*partial"))  # 4 chunks were written, then removed


def test_tampered_model_is_refused_and_never_unpickled(trained, tmp_path, monkeypatch):
    from flows.predict import predict
    from tasks import modeling, registry

    report, artifacts = trained
    copy = tmp_path / "registry"
    shutil.copytree(_registry(artifacts), copy)
    name = registry.list_models(copy)[0]
    model_file = copy / name / str(report.registry_version) / "model.pkl"
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_file.write_bytes(bytes(data))

    def never(*args, **kwargs):
        raise AssertionError("a model file that failed its checksum was unpickled")

    monkeypatch.setattr(modeling, "pickle", SimpleNamespace(load=never))  # the registry's unpickling only
    out = tmp_path / "out.parquet"
    with pytest.raises(RegistryError, match="fails its checksum .* it was changed or damaged"):
        predict(input_path=str(_test_split(report)), output_path=str(out), registry_dir=str(copy))
    assert not out.exists()
    monkeypatch.setattr(modeling, "pickle", pickle)
    registry.load_model(_registry(artifacts), name)  # the untouched original still loads


def test_choosing_the_model(trained, tmp_path):
    from tasks.prediction import preflight

    report, artifacts = trained
    source, out = str(_test_split(report)), str(tmp_path / "out.parquet")
    reg = _registry(artifacts)
    name, version, _, rows = preflight(source, out, reg, None, "champion", report.registry_version, [])
    assert version == report.registry_version and rows == 114
    with pytest.raises(RegistryError, match="has no version 99"):
        preflight(source, out, reg, None, "champion", 99, [])
    with pytest.raises(RegistryError, match="has no 'staging' alias .* pass --version N"):
        preflight(source, out, reg, None, "staging", None, [])
    with pytest.raises(RegistryError, match="no model named 'other' in the registry"):
        preflight(source, out, reg, "other", "champion", None, [])
    two = tmp_path / "two"
    shutil.copytree(reg, two)
    shutil.copytree(two / name, two / "second")
    history = two / "second" / "alias_history.jsonl"
    history.write_text(history.read_text().replace('"time": "20', '"time": "21'))  # its champion moved last
    assert preflight(source, out, str(two), None, "champion", None, [])[0] == "second"
    with pytest.raises(RegistryError, match=r"holds 2 models \(.*\); name one with --model"):
        registry.resolve_model_name(str(two), None)  # operations that move aliases still need a name
    with pytest.raises(DataError, match="unsupported file type"):
        preflight(source, str(tmp_path / "out.xlsx"), reg, None, "champion", None, [])
    with pytest.raises(DataError, match="input file not found"):
        preflight(str(tmp_path / "nope.csv"), out, reg, None, "champion", None, [])
    with pytest.raises(DataError, match="--keep names column"):
        preflight(source, out, reg, None, "champion", None, ["nope"])


def test_cli_scores_a_file(trained, tmp_path):
    report, artifacts = trained
    out = tmp_path / "p.csv"
    result = run_cli("--input", str(_test_split(report)), "--output", str(out), "--registry", _registry(artifacts),
                     "--version", str(report.registry_version), script="flows/predict.py", timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert last_line(result.stdout).startswith(f"114 predictions of breast_cancer-diagnosis version "
                                               f"{report.registry_version} -> {out}")
    assert len(pd.read_csv(out)) == 114


def test_registered_version_records_its_input_schema(trained):
    from tasks import registry

    report, artifacts = trained
    meta = registry.read_metadata(_registry(artifacts), "breast_cancer-diagnosis", report.registry_version)
    columns = meta["input_schema"]["columns"]
    assert [c["name"] for c in columns] == meta["features"] and len(columns) == 30
    assert {c["kind"] for c in columns} == {"numeric"} and {c["dtype"] for c in columns} == {"float64"}
    json.dumps(meta)
