"""The evaluation flow end to end: reports, intervals, calibration and threshold on validation only,
the registered model reproducing what was evaluated, champion vs challenger, ensembles, fairness."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks import registry
from tests.helpers import SHARED_DATASETS, comet_archives, smoke_params

pytestmark = pytest.mark.usefixtures("prefect_harness")

REPORT_FILES = [
    "performance_metrics.csv", "confusion_matrix_summary.csv", "classification_report.csv",
    "test_predictions.csv", "confusion_matrix.png", "roc_curve.png", "pr_curve.png", "calibration_curve.png",
    "permutation_importance.csv", "permutation_importance.png", "model_card.md",
]


@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory):
    """A smoke run with sigmoid calibration and a tuned threshold, spying on what those fits see."""
    from flows.train import train
    from tasks.ml import evaluation

    artifacts = tmp_path_factory.mktemp("artifacts")
    seen = {}
    fit_calibrator, tune_threshold = evaluation.fit_calibrator, evaluation.tune_threshold

    def spy_calibrator(model, X, y, method, n_classes):
        seen["calibrator"] = X.copy()
        return fit_calibrator(model, X, y, method, n_classes)

    def spy_threshold(y, proba, metric, beta, direction):
        seen["threshold_rows"] = len(y)
        return tune_threshold(y, proba, metric, beta, direction)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(evaluation, "fit_calibrator", spy_calibrator)
        mp.setattr(evaluation, "tune_threshold", spy_threshold)
        report = train(params=smoke_params(artifacts, **{
            "evaluation.calibration": "sigmoid", "evaluation.tune_threshold": True, "evaluation.explain": True,
            "models.random_forest.enabled": False, "models.xgboost.enabled": False, "models.catboost.enabled": False,
        }))
    return report, artifacts, seen


def test_every_report_file_with_intervals_around_the_estimates(calibrated_run):
    report, artifacts, _ = calibrated_run
    reports = Path(report.run_dir) / "reports"
    for name in REPORT_FILES:
        assert (reports / name).is_file() and (reports / name).stat().st_size > 0, name
    perf = pd.read_csv(reports / "performance_metrics.csv")
    test_row = perf[perf["split"] == "test"].iloc[0]
    for metric in ("accuracy", "precision", "recall", "f1", "fbeta", "roc_auc", "pr_auc", "mcc", "log_loss", "brier"):
        assert test_row[f"{metric}_lower"] <= test_row[metric] <= test_row[f"{metric}_upper"], metric
        assert report.intervals[metric][0] <= report.test_metrics[metric] <= report.intervals[metric][1]
    card = (reports / "model_card.md").read_text()
    assert f"**Gate decision: {report.gate.reason}**" in card
    assert "sigmoid calibration" in card and "tuned on validation" in card and "## Limitations" in card
    version_dir = artifacts / "registry" / "breast_cancer-diagnosis" / str(report.registry_version)
    assert "Gate decision" in (version_dir / "MODEL_CARD.md").read_text()
    importance = pd.read_csv(reports / "permutation_importance.csv")
    assert len(importance) == 30 and importance["importance_mean"].iloc[0] > 0
    classification = pd.read_csv(reports / "classification_report.csv")
    assert {"benign", "malignant", "macro avg"} <= set(classification["class"])


def test_calibration_and_threshold_see_validation_rows_only(calibrated_run):
    report, _, seen = calibrated_run
    splits = Path(report.run_dir) / "splits"
    manifest = json.loads((Path(report.run_dir) / "manifest.json").read_text())
    features = manifest["dataset"]["features"]
    valid = pd.read_parquet(splits / "valid.parquet")[features]
    test = pd.read_parquet(splits / "test.parquet")[features]
    pd.testing.assert_frame_equal(seen["calibrator"].reset_index(drop=True), valid.reset_index(drop=True))
    assert seen["threshold_rows"] == len(valid)
    # no test row reached a fit: none of them is among the rows the calibrator saw
    seen_rows = set(map(tuple, seen["calibrator"].to_numpy().round(10)))
    assert not any(tuple(row) in seen_rows for row in test.to_numpy().round(10))
    assert report.calibration == "sigmoid" and report.decision_threshold is not None


def test_the_reloaded_registered_model_reproduces_the_evaluated_predictions(calibrated_run):
    report, artifacts, _ = calibrated_run
    model = registry.load_model(artifacts / "registry", "breast_cancer-diagnosis")
    assert model.metadata["decision_threshold"] == report.decision_threshold
    assert model.metadata["calibration"] == "sigmoid"
    test = pd.read_parquet(Path(report.run_dir) / "splits" / "test.parquet")
    evaluated = pd.read_csv(Path(report.run_dir) / "reports" / "test_predictions.csv")
    proba = model.predict_proba(test)
    assert np.array_equal(proba.to_numpy(), evaluated[["proba_benign", "proba_malignant"]].to_numpy())
    assert list(model.predict(test)) == evaluated["predicted"].tolist()  # the tuned threshold is applied


def test_comet_and_prefect_get_the_plots_and_tables(calibrated_run):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    report, artifacts, _ = calibrated_run
    evaluation = next(a for a in comet_archives(artifacts / "comet").values() if "champion_family" in a["others"])
    figures = {str(name) for _, name in evaluation["uploads"]}
    for figure in ("roc_curve", "pr_curve", "calibration_curve", "permutation_importance"):
        assert any(figure in name for name in figures), (figure, evaluation["uploads"])
    assert "test_fbeta_lower" in evaluation["metrics"] and "test_fbeta_upper" in evaluation["metrics"]
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["classification-report", "permutation-importance"])))
    assert {a.key for a in found if report.run_id in (a.description or "")} == {
        "classification-report", "permutation-importance"}


def test_champion_vs_challenger_weak_then_strong_then_weak(tmp_path):
    from flows.train import train
    from tasks.ml.data import load_table

    mean_and_worst = [c for c in load_table("builtin:breast_cancer").columns if c.startswith(("mean ", "worst "))]
    weak = {"data.drop_columns": mean_and_worst, "evaluation.deployment_threshold": 0.3,
            "models.random_forest.enabled": False, "models.xgboost.enabled": False, "models.catboost.enabled": False,
            "models.lightgbm.enabled": False, "tracking.backend": "none", "evaluation.explain": False}
    strong = {**weak, "data.drop_columns": []}

    first = train(params=smoke_params(tmp_path, **weak))
    assert first.registered and first.registry_version == 1
    better = train(params=smoke_params(tmp_path, **strong))
    assert better.registered and better.registry_version == 2
    assert better.gate.incumbent_version == 1 and better.gate.improvement > better.gate.min_improvement > 0
    assert "beats the champion v1 by +" in better.gate.reason
    again = train(params=smoke_params(tmp_path, **weak))
    assert not again.registered and again.gate.incumbent_version == 2
    assert registry.get_alias(tmp_path / "registry", "breast_cancer-diagnosis") == 2
    saved = json.loads((Path(again.run_dir) / "report.json").read_text())
    assert saved["gate"]["reason"].startswith("champion stays at v2: challenger -")
    assert f"{again.gate.incumbent_value:.4f}" in saved["gate"]["reason"]  # both numbers are stated
    assert f"{again.gate.test_value:.4f}" in saved["gate"]["reason"]


def test_rerunning_or_reevaluating_never_adds_a_version(tmp_path):
    """The same run twice ties: the champion stays. Re-evaluating a registered run, even with a
    lower threshold, adds no version and leaves the run's own report as it was."""
    from flows.evaluate import evaluate
    from flows.train import train

    settings = {"tracking.backend": "none", "models.random_forest.enabled": False,
                "models.xgboost.enabled": False, "models.catboost.enabled": False, "models.lightgbm.enabled": False}
    first = train(params=smoke_params(tmp_path, **settings))
    second = train(params=smoke_params(tmp_path, **settings))
    root, name = tmp_path / "registry", "breast_cancer-diagnosis"
    assert first.registered and not second.registered
    assert second.gate.improvement == 0 and second.gate.reason.startswith("champion stays at v1: challenger +0.0000")
    own = (Path(first.run_dir) / "report.json").read_bytes()
    redo = evaluate(run_dir=first.run_dir, deployment_threshold=0.1)
    assert not redo.registered and "already registered as version 1" in redo.gate.reason
    assert registry.list_versions(root, name) == [1] and registry.get_alias(root, name) == 1
    assert (Path(first.run_dir) / "report.json").read_bytes() == own  # what the run registered stays
    record = Path(first.run_dir) / "evaluations" / redo.evaluation / "report.json"
    assert json.loads(record.read_text())["gate"]["threshold"] == 0.1
    assert (record.parent / "reports" / "model_card.md").is_file()
    # Without the comparison the gate passes, but the same model bytes add no version either.
    third = train(params=smoke_params(tmp_path, **settings, **{"evaluation.compare_with_champion": False}))
    assert third.gate.passed and not third.registered and "identical to breast_cancer-diagnosis version 1" in (
        third.registry_note or "")
    assert registry.list_versions(root, name) == [1]


def _mix_table(path, n=3000):
    """A logit with a product term: linear models miss it, trees approximate it, and their errors differ."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 6))
    logit = 1.2 * X[:, 0] - X[:, 1] + 0.8 * X[:, 2] + 1.5 * (X[:, 3] * X[:, 4] > 0) - 0.75
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(6)])
    frame["y"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    frame.to_csv(path, index=False)
    return frame


MIX = {"data.target": "y", "evaluation.ensemble.enabled": True, "evaluation.comparison_metric": "log_loss",
       "evaluation.deployment_threshold": 1.0, "tracking.backend": "none", "models.catboost.enabled": False,
       "models.xgboost.enabled": False}  # their defaults' trials alone come close


def test_a_soft_voting_ensemble_competes_and_can_win(tmp_path):
    from flows.train import train

    frame = _mix_table(tmp_path / "mix.csv")
    report = train(params=smoke_params(tmp_path, **MIX, **{"data.path": str(tmp_path / "mix.csv"),
                                                           "evaluation.ensemble.method": "vote"}))
    board = {row["family"]: row for row in report.leaderboard()}
    assert "ensemble" in board
    ensemble = next(c for c in report.candidates if c.family == "ensemble")
    assert len(ensemble.best_params["members"]) == 3
    assert report.champion == "ensemble" and report.registered  # averaging three models beat each of them
    model = registry.load_model(tmp_path / "registry", "mix-y")
    assert type(model.pipeline.model).__name__ == "SoftVoteEnsemble"
    assert set(model.predict(frame.head(20))) <= {0, 1}


def test_the_greedy_ensemble_wins_where_it_helps_and_records_its_weights(tmp_path):
    from flows.train import train

    frame = _mix_table(tmp_path / "mix.csv")
    report = train(params=smoke_params(tmp_path, **MIX, **{"data.path": str(tmp_path / "mix.csv")}))
    ensemble = next(c for c in report.candidates if c.family == "ensemble")
    weights = ensemble.best_params["weights"]
    assert ensemble.best_params["method"] == "greedy" and len(weights) >= 2
    assert sum(weights.values()) == pytest.approx(1.0, abs=1e-3)
    singles = [c.valid_metrics["log_loss"] for c in report.candidates if c.family != "ensemble"]
    assert ensemble.valid_metrics["log_loss"] < min(singles)  # better on valid than every family alone
    assert report.champion == "ensemble" and report.registered
    board = {row["family"]: row for row in report.leaderboard()}
    assert {f: board[f]["ensemble_weight"] for f in weights} == weights and board["ensemble"]["ensemble_weight"] is None
    assert all(board[f]["ensemble_weight"] == 0.0 for f in board if f not in weights and f != "ensemble")
    model = registry.load_model(tmp_path / "registry", "mix-y")
    assert type(model.pipeline.model).__name__ == "WeightedSoftVote"
    assert np.allclose(model.predict_proba(frame.head(50)).sum(axis=1), 1.0)
    card = (tmp_path / "registry" / "mix-y" / str(report.registry_version) / "MODEL_CARD.md").read_text()
    assert "Ensemble weights (greedy selection on validation): " in card
    assert all(f"{f} {w:.2f}" in card for f, w in weights.items())
    # Measured on test and registered: each member refitted on train+valid, with the weights chosen on valid.
    refit = registry.read_metadata(tmp_path / "registry", "mix-y", report.registry_version)["train_valid_refit"]
    assert refit["rows"] == 2400 and set(refit["members"]) == set(weights) == set(model.pipeline.model.names)
    blend = model.pipeline.model
    assert np.allclose(blend.weights, [weights[n] for n in blend.names], atol=1e-3)
    test = pd.read_parquet(Path(report.run_dir) / "splits" / "test.parquet")
    seen = pd.read_csv(Path(report.run_dir) / "reports" / "test_predictions.csv")
    assert np.allclose(model.predict_proba(test).to_numpy(), seen[["proba_0", "proba_1"]].to_numpy())
    from tasks.modeling import load_pipeline

    searched = load_pipeline(ensemble.pipeline_path, ensemble.pipeline_sha256)  # the members fitted on train
    assert not np.allclose(searched.predict_proba(test[model.features]), seen[["proba_0", "proba_1"]].to_numpy())


@pytest.mark.parametrize(("overrides", "rows", "kind"), [
    ({"search.cv_folds": 3}, 1800, "train"),  # K folds of train: the weights see 1,800 rows, not valid's 600
    ({"search.small_data_rows": 2000}, 2400, "train+valid"),  # small-data mode: no valid split is held out
])
def test_in_cv_runs_the_greedy_weights_are_chosen_out_of_fold(tmp_path, overrides, rows, kind):
    from flows.train import train

    _mix_table(tmp_path / "mix.csv")
    report = train(params=smoke_params(tmp_path, **MIX, **overrides, **{
        "data.path": str(tmp_path / "mix.csv"), "models.random_forest.enabled": False}))
    singles = [c for c in report.candidates if c.family != "ensemble"]
    assert {c.oof_rows for c in singles} == {kind}
    for c in singles:
        saved = np.load(c.oof_path)
        assert len(saved["rows"]) == rows and saved["predictions"].shape == (rows, 2)
        assert np.allclose(saved["predictions"].sum(axis=1), 1.0)
    ensemble = next(c for c in report.candidates if c.family == "ensemble")
    assert f"out-of-fold predictions on {kind}" in ensemble.selection
    assert ensemble.best_params["chosen_on"] == f"out-of-fold predictions on {kind}"
    assert len(ensemble.best_params["weights"]) >= 2
    if kind == "train":  # the blend is scored on valid, which the weights never saw, like every family
        from sklearn.metrics import log_loss

        from tasks.modeling import load_pipeline

        valid = pd.read_parquet(Path(report.run_dir) / "splits" / "valid.parquet")
        blend = load_pipeline(ensemble.pipeline_path, ensemble.pipeline_sha256)
        proba = blend.predict_proba(valid.drop(columns="y"))
        assert ensemble.valid_metrics["log_loss"] == pytest.approx(log_loss(valid["y"], proba), rel=1e-6)
    else:  # small data: every candidate was scored out of fold; the blend of three beats each
        assert report.champion == "ensemble"
        card = (Path(report.run_dir) / "reports" / "model_card.md").read_text()
        assert f"Ensemble weights (greedy selection on out-of-fold predictions on {kind}): " in card


def test_the_greedy_ensemble_is_not_chosen_where_one_family_is_best_alone(tmp_path):
    """A label that is a line through x0: logistic regression is all but exact and sure of it; blending in
    the forest's coarser probabilities only costs log loss, so no ensemble competes and a family wins."""
    from flows.train import train

    rng = np.random.default_rng(3)
    X = rng.normal(size=(1500, 4))
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(4)]).assign(y=(X[:, 0] + 0.5 * X[:, 1] > 0).astype(int))
    frame.to_csv(tmp_path / "line.csv", index=False)
    report = train(params=smoke_params(tmp_path, **MIX, **{
        "data.path": str(tmp_path / "line.csv"), "models.lightgbm.enabled": False,
        "models.logistic_regression.n_trials": 4}))
    assert {c.family for c in report.candidates} == {"logistic_regression", "random_forest"}
    assert report.champion == "logistic_regression"
    assert all(row["ensemble_weight"] is None for row in report.leaderboard())


@pytest.mark.datasets
def test_fairness_on_adult_by_sex(tmp_path):
    adult = SHARED_DATASETS / "adult.parquet"
    if not adult.is_file():
        pytest.skip(f"{adult} is absent (../shared/datasets is not checked out)")
    from flows.train import train

    report = train(params=smoke_params(tmp_path, **{
        "data.path": str(adult), "data.target": "income", "evaluation.sensitive_columns": ["sex"],
        "models.random_forest.enabled": False, "models.logistic_regression.enabled": False,
        "tracking.backend": "none",
    }))
    summary = report.fairness["sex"]
    assert 0 < summary["demographic_parity_difference"] < 1 and 0 < summary["equalized_odds_difference"] < 1
    table = pd.read_csv(Path(report.run_dir) / "reports" / "fairness_sex.csv")
    assert set(table["group"]) == {"Female", "Male"}
    assert table.set_index("group").loc["Male", "selection_rate"] > table.set_index("group").loc["Female",
                                                                                               "selection_rate"]
    card = (Path(report.run_dir) / "reports" / "model_card.md").read_text()
    assert "## Fairness (test split)" in card and "| sex |" in card
    # The same run with a gate limit below the measured gap is refused, and says why.
    limited = train(params=smoke_params(tmp_path / "limited", **{
        "data.path": str(adult), "data.target": "income", "evaluation.sensitive_columns": ["sex"],
        "evaluation.fairness_max_difference": 0.05, "models.random_forest.enabled": False,
        "models.logistic_regression.enabled": False, "models.xgboost.enabled": False, "models.catboost.enabled": False,
        "tracking.backend": "none", "evaluation.explain": False,
    }))
    assert not limited.registered and "demographic parity difference on 'sex'" in limited.gate.reason
