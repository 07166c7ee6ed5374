"""The real `train` flow on the data cases of issue 4: reproducibility, leakage, resampling, and
real public tables from ../shared/datasets (skipped with a reason when they are absent)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from config.paths import PROJECT_ROOT
from tests.helpers import shared_dataset, smoke_params

pytestmark = pytest.mark.usefixtures("prefect_harness")

SPLITS = ("train", "valid", "test")


def run(tmp_path: Path, **overrides):
    from flows.train import train

    report = train(params=smoke_params(tmp_path, **{"tracking.backend": "none", **overrides}))
    run_dir = Path(report.run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return report, run_dir, manifest


def only(*families: str) -> dict:
    return {f"models.{f}.enabled": f in families for f in ("logistic_regression", "random_forest", "lightgbm",
                                                             "xgboost")}


def test_same_data_config_and_seed_give_identical_splits_and_best_params(tmp_path):
    families = only("lightgbm", "xgboost")
    overrides = {**families, "models.lightgbm.n_trials": 4, "models.xgboost.n_trials": 4, "search.seed": 11}
    first, first_dir, first_manifest = run(tmp_path / "a", **overrides)
    second, second_dir, second_manifest = run(tmp_path / "b", **overrides)
    for name in SPLITS:
        assert (first_dir / "splits" / f"{name}.parquet").read_bytes() == (
            second_dir / "splits" / f"{name}.parquet").read_bytes()
    assert first_manifest["config_hash"] == second_manifest["config_hash"]  # only artifacts_dir differs
    for a, b in zip(first.candidates, second.candidates, strict=True):
        assert a.family == b.family and a.status == b.status == "ok"
        assert a.best_params == b.best_params and a.best_params  # identical, and not empty
        assert a.valid_metrics == b.valid_metrics
    # A different search seed explores other parameters: the check above can fail.
    third, _, _ = run(tmp_path / "c", **{**overrides, "search.seed": 12})
    assert [c.best_params for c in third.candidates] != [c.best_params for c in first.candidates]


def test_a_copy_of_the_target_is_refused_naming_the_column(tmp_path):
    from config.errors import DataError
    from flows.train import train
    from tasks.ml.data import load_table

    frame = load_table("builtin:breast_cancer")
    frame["diagnosis_code"] = frame["diagnosis"].map({"malignant": "M", "benign": "B"})
    frame.to_csv(tmp_path / "leaky.csv", index=False)
    params = smoke_params(tmp_path, **{"data.path": str(tmp_path / "leaky.csv")})
    state = train(params=params, return_state=True)
    assert state.is_failed()
    with pytest.raises(DataError, match="feature 'diagnosis_code' is a copy of the target 'diagnosis'.*"
                                        "add it to data.drop_columns"):
        state.result()
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").glob("*/candidates/*.pkl"))


def test_smote_grows_training_rows_only_and_leaves_valid_and_test_byte_identical(tmp_path):
    families = only("logistic_regression", "lightgbm")
    plain, plain_dir, _ = run(tmp_path / "none", **families, **{"preprocessing.imbalance.method": "none"})
    smote, smote_dir, manifest = run(tmp_path / "smote", **families, **{"preprocessing.imbalance.method": "smote"})
    for name in SPLITS:
        assert (plain_dir / "splits" / f"{name}.parquet").read_bytes() == (
            smote_dir / "splits" / f"{name}.parquet").read_bytes()
    train_rows = manifest["splits"]["train"]["rows"]
    balance = manifest["splits"]["train"]["class_balance"]
    for candidate in smote.candidates:
        assert candidate.train_rows == train_rows
        assert candidate.train_rows_fitted == 2 * max(balance.values()) > train_rows  # minority grown to majority
    for candidate in plain.candidates:
        assert candidate.train_rows == candidate.train_rows_fitted == train_rows
    # The evaluation scored both runs on the same untouched rows.
    cells = ("TP", "TN", "FP", "FN")
    assert sum(smote.confusion[0][c] for c in cells) == sum(plain.confusion[0][c] for c in cells) == (
        manifest["splits"]["test"]["rows"])


# ------------------------------------------------------------------------ real public tables


shared = shared_dataset


def split_frames(run_dir: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(run_dir / "splits" / f"{name}.parquet") for name in SPLITS}


def assert_class_balance_within_one_point(parts: dict[str, pd.DataFrame], target: str) -> None:
    shares = pd.DataFrame({n: p[target].astype(str).value_counts(normalize=True) for n, p in parts.items()})
    spread = (shares.max(axis=1) - shares.min(axis=1)) * 100
    assert (spread <= 1.0).all(), shares


@pytest.mark.datasets
def test_adult_categoricals_missing_values_and_imbalance(tmp_path):
    report, run_dir, manifest = run(tmp_path, **{"data.path": str(shared("adult")), "data.target": "income"})
    dataset = manifest["dataset"]
    assert {"workclass", "occupation", "native_country"} <= set(dataset["categorical_features"])
    assert all(c.status == "ok" for c in report.candidates), report.candidates
    assert report.test_metrics["roc_auc"] > 0.85
    parts = split_frames(run_dir)
    assert sum(len(p) for p in parts.values()) == manifest["data"]["rows"] == 48827
    assert parts["train"]["occupation"].isna().any()  # missing values reached training, imputed there
    assert_class_balance_within_one_point(parts, "income")


@pytest.mark.datasets
def test_dry_bean_seven_classes_with_missing_values(tmp_path):
    report, run_dir, manifest = run(
        tmp_path, **only("logistic_regression", "lightgbm", "xgboost"),
        **{"data.path": str(shared("dry_bean")), "data.target": "Class", "evaluation.comparison_metric": "f1"},
    )
    assert manifest["dataset"]["task"] == "multiclass" and len(manifest["dataset"]["classes"]) == 7
    assert any("class 'BOMBAY' is 3.8% of the rows" in w for w in manifest["warnings"])
    assert report.test_metrics["f1"] > 0.85 and report.test_metrics["roc_auc"] > 0.95  # macro F1, one-vs-rest AUC
    assert len(report.confusion) == 7
    parts = split_frames(run_dir)
    assert parts["train"]["Area"].isna().any()
    assert_class_balance_within_one_point(parts, "Class")


@pytest.mark.datasets
def test_hotel_bookings_time_split(tmp_path):
    report, run_dir, manifest = run(
        tmp_path, **only("logistic_regression", "lightgbm"),
        **{"data.path": str(shared("hotel_bookings")), "data.target": "is_canceled",
           "split.strategy": "time", "split.time_column": "arrival_date"},
    )
    parts = split_frames(run_dir)
    assert parts["train"]["arrival_date"].max() < parts["valid"]["arrival_date"].min()
    assert parts["valid"]["arrival_date"].max() < parts["test"]["arrival_date"].min()
    ranges = {name: manifest["splits"][name]["time_range"] for name in SPLITS}
    assert ranges["train"][1] < ranges["valid"][0] <= ranges["valid"][1] < ranges["test"][0]
    assert "arrival_date" not in manifest["dataset"]["features"]  # it orders the rows; not a feature
    assert report.test_metrics["roc_auc"] > 0.8


@pytest.mark.datasets
def test_telco_group_split_keeps_each_group_in_one_split(tmp_path):
    report, run_dir, manifest = run(
        tmp_path, **only("logistic_regression", "lightgbm"),
        **{"data.path": str(shared("telco_churn")), "data.target": "Churn",
           "split.strategy": "group", "split.group_column": "tenure", "search.cv_folds": 3},
    )
    parts = split_frames(run_dir)
    groups = {name: set(p["tenure"]) for name, p in parts.items()}
    assert not groups["train"] & groups["valid"] and not groups["train"] & groups["test"]
    assert not groups["valid"] & groups["test"]
    assert "tenure" not in manifest["dataset"]["features"]
    assert all("3-fold grouped stratified CV on train" in c.selection for c in report.candidates)
    assert report.test_metrics["roc_auc"] > 0.75
    assert np.isclose(sum(manifest["splits"][n]["rows"] for n in SPLITS), manifest["data"]["rows"])


def test_data_sample_rows_trains_on_a_stratified_sample(tmp_path):
    from flows.train import train

    report = train(params=smoke_params(tmp_path, **{"data.sample_rows": 300, "tracking.backend": "none",
                                                    "models.random_forest.enabled": False,
                                                    "models.xgboost.enabled": False, "models.catboost.enabled": False}))
    manifest = json.loads((Path(report.run_dir) / "manifest.json").read_text())
    rows = sum(manifest["splits"][s]["rows"] for s in ("train", "valid", "test"))
    assert rows == 300
    from config.schema import load_config
    from tasks.search import study_name

    sampled = load_config(PROJECT_ROOT / "config" / "smoke.yaml", {"data.sample_rows": 300})
    every = load_config(PROJECT_ROOT / "config" / "smoke.yaml")
    sha = manifest["data"]["sha256"]
    assert study_name(sampled, "lightgbm", sha) != study_name(every, "lightgbm", sha)  # other rows, other study
