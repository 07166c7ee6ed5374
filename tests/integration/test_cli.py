"""The command line as a user meets it: bad input ends with one readable line and exit code 2."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.helpers import last_line, run_cli


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "data.trget=x"], "error: invalid config in config/smoke.yaml: data.trget: unknown key; allowed keys here: path, target"),
        (["--set", "models.xgboost.n_trials=-1"], "models.xgboost.n_trials: Input should be greater than or equal to 1 (got -1)"),
        (["--set", "models.tabnet.enabled=true"], "models.tabnet: unknown key"),
        (["--set", "evaluation.deployment_threshold=1.2"], "deployment_threshold 1.2 is outside [0, 1]"),
        (["--set", "data.path=no/such/file.csv"], "error: data file not found: no/such/file.csv; set data.path to an existing CSV or Parquet file"),
        (["--set", "search.cv_folds=1"], "search.cv_folds: cv_folds 1 is not cross-validation; use 0 (the valid split) or 2 and more"),
        (["--set", "preprocessing.imbalance.method=smote", "--set", "preprocessing.categorical.encoding=native"],
         "smote interpolates numbers and cannot follow categorical.encoding native"),
        (["--set", "evaluation.calibration=platt"], "evaluation.calibration: Input should be 'none', 'sigmoid' or 'isotonic'"),
        (["--set", "search.parallelism=0"], "search.parallelism: parallelism must be auto or a whole number >= 1"),
        (["--set", "search.pruner=asha"], "search.pruner: Input should be 'median', 'successive_halving', 'hyperband' or 'none'"),
    ],
)
def test_bad_config_or_missing_file_ends_with_one_line(args, message, tmp_path):
    out = run_cli("--config", "config/smoke.yaml", "--set", f"artifacts_dir={tmp_path}", *args)
    assert out.returncode == 2, out.stderr
    assert message in last_line(out.stderr)
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()  # nothing started


def test_missing_target_column_is_named_before_training(tmp_path):
    pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]}).to_csv(tmp_path / "t.csv", index=False)
    out = run_cli("--config", "config/smoke.yaml", "--set", f"artifacts_dir={tmp_path}",
                  "--set", f"data.path={tmp_path / 't.csv'}", "--set", "data.target=label")
    assert out.returncode == 2
    assert "target column 'label' not found" in last_line(out.stderr)
    assert "set data.target: columns: a, b" in last_line(out.stderr)


def test_single_class_target_fails_in_validation_with_one_line(tmp_path):
    """Validation inside the flow (after Prefect starts) still ends with one line, and no run output."""
    frame = pd.DataFrame({"x": range(40), "y": ["same"] * 40})
    frame.to_parquet(tmp_path / "one.parquet")
    out = run_cli("--config", "config/smoke.yaml", "--set", f"artifacts_dir={tmp_path}",
                  "--set", f"data.path={tmp_path / 'one.parquet'}", "--set", "data.target=y")
    assert out.returncode == 2, out.stderr[-2000:]
    assert last_line(out.stderr) == (
        "error: validate_dataset: target 'y' has a single class ('same'); a classifier needs at least 2 "
        "classes: check data.target and the rows of the file"
    )
    assert not (tmp_path / "registry").exists()
    assert not list(tmp_path.glob("runs/*/splits/*.parquet"))  # validation failed before the split


def test_evaluate_cli_refuses_a_folder_that_is_not_a_run(tmp_path):
    out = run_cli("--run", str(tmp_path), script="flows/evaluate.py")
    assert out.returncode == 2
    assert "is not a gauntlet run (no config.json)" in last_line(out.stderr)


def test_evaluate_cli_refuses_to_change_what_the_run_trained_on(tmp_path):
    out = run_cli("--run", str(tmp_path), "--set", "registry.model_name=other", script="flows/evaluate.py")
    assert out.returncode == 2
    assert "a re-evaluation cannot change registry.model_name" in last_line(out.stderr)


def test_evaluate_cli_on_a_run_without_candidates(tmp_path):
    run = tmp_path / "20260101-000000-abcdef-x"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "manifest.json").write_text(json.dumps({
        "dataset": {"target": "y", "task": "binary", "classes": [0, 1], "features": ["a"], "numeric_features": ["a"],
                    "categorical_features": []},
        "data": {"path": "t.csv", "sha256": "0" * 64}, "splits": {}, "config_hash": "0", "packages": {}}))
    out = run_cli("--run", str(run), script="flows/evaluate.py")
    assert out.returncode == 2, out.stderr[-2000:]
    assert "no candidate has a usable validation fbeta" in last_line(out.stderr)


def test_unknown_sensitive_or_categorical_columns_are_named_before_training(tmp_path):
    pd.DataFrame({"a": [1, 2, 3], "sex": ["f", "m", "f"], "y": [0, 1, 0]}).to_csv(tmp_path / "t.csv", index=False)
    base = ["--config", "config/smoke.yaml", "--set", f"artifacts_dir={tmp_path}", "--set",
            f"data.path={tmp_path / 't.csv'}", "--set", "data.target=y"]
    out = run_cli(*base, "--set", "evaluation.sensitive_columns=[gender]")
    assert out.returncode == 2
    assert "evaluation.sensitive_columns names columns not in" in last_line(out.stderr)
    assert "['gender']; columns: a, sex, y" in last_line(out.stderr)
    out = run_cli(*base, "--set", "preprocessing.categorical.columns=[store]")
    assert out.returncode == 2 and "preprocessing.categorical.columns names columns not in" in last_line(out.stderr)
    assert not (tmp_path / "runs").exists()
