"""The evaluation's building blocks on small real fits: intervals, threshold, calibration,
ensembles, explanations and fairness."""

import pickle

import numpy as np
import pandas as pd
import pytest

from tasks.ml import evaluation as ev
from tasks.ml.data import encode_target, split_dataset, validate_dataset
from tasks.ml.estimators import get_family
from tasks.ml.metrics import compute_metrics
from tasks.ml.search import SearchSettings, best_pipeline, prepare_data, run_study


@pytest.fixture(scope="module")
def fitted(breast_cancer):
    info = validate_dataset(breast_cancer, "diagnosis")
    parts = split_dataset(breast_cancer, info, seed=0)
    pipelines = {}
    for family in ("logistic_regression", "lightgbm", "xgboost"):
        spec = get_family(family)
        data = prepare_data(spec, info, parts["train"], parts["valid"])
        settings = SearchSettings(metric="fbeta", direction="maximize", n_trials=2, early_stopping_rounds=10)
        study, kept = run_study(spec, data, settings)
        pipelines[family] = best_pipeline(spec, data, study, kept, settings)[0]
    X = {n: p[info.features] for n, p in parts.items()}
    y = {n: encode_target(p["diagnosis"], info.classes) for n, p in parts.items()}
    return info, pipelines, X, y


def test_new_metrics_have_known_values():
    y = np.array([0, 0, 1, 1])
    perfect = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]])
    m = compute_metrics(y, perfect, n_classes=2)
    assert m["pr_auc"] == 1.0 and m["mcc"] == 1.0
    assert m["brier"] == pytest.approx(np.mean([0.01, 0.04, 0.09, 0.01]))
    # threshold 0.8 turns the 0.7 row negative: recall halves
    assert compute_metrics(y, perfect, n_classes=2, threshold=0.8)["recall"] == 0.5
    three = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    assert compute_metrics(np.array([0, 1, 2]), three, n_classes=3)["pr_auc"] == 1.0


def test_bootstrap_intervals_contain_the_estimate_and_narrow_with_more_rows():
    rng = np.random.default_rng(0)

    def sample(n):
        y = rng.integers(0, 2, n)
        p1 = np.clip(y * 0.3 + rng.random(n) * 0.7, 0, 1)
        return y, np.column_stack([1 - p1, p1])

    widths = []
    for n in (100, 2000):
        y, proba = sample(n)
        point = compute_metrics(y, proba, n_classes=2)
        ci = ev.bootstrap_intervals(y, proba, n_classes=2, beta=0.5, average="macro", threshold=None,
                                    n_resamples=200, seed=1)
        for key in ("fbeta", "roc_auc", "log_loss", "brier", "mcc"):
            assert ci[key][0] <= point[key] <= ci[key][1], key
        widths.append(ci["roc_auc"][1] - ci["roc_auc"][0])
        again = ev.bootstrap_intervals(y, proba, n_classes=2, beta=0.5, average="macro", threshold=None,
                                       n_resamples=200, seed=1)
        assert again == ci  # seeded
    assert widths[1] < widths[0] / 2


def test_threshold_tuning_finds_the_best_cut_on_the_rows_given():
    y = np.array([0] * 50 + [1] * 50)
    p1 = np.concatenate([np.linspace(0.0, 0.6, 50), np.linspace(0.65, 1.0, 50)])  # separable at 0.62
    proba = np.column_stack([1 - p1, p1])
    t = ev.tune_threshold(y, proba, "f1", 1.0, "maximize")
    assert 0.6 < t <= 0.65
    assert compute_metrics(y, proba, n_classes=2, threshold=t)["f1"] == 1.0
    assert ev.tune_threshold(y, proba, "roc_auc", 1.0, "maximize") == 0.5  # threshold-free metric


def test_decision_model_calibrates_on_the_rows_it_is_given_and_applies_its_threshold(fitted):
    info, pipelines, X, y = fitted
    model = pipelines["lightgbm"]
    calibrator = ev.fit_calibrator(model, X["valid"], y["valid"], "sigmoid", 2)
    decision = ev.DecisionModel(model, calibrator=calibrator, threshold=0.3)
    proba = decision.predict_proba(X["test"])
    assert not np.allclose(proba, model.predict_proba(X["test"]))  # calibration changed the scores
    assert np.array_equal(decision.predict(X["test"]), (proba[:, 1] >= 0.3).astype(int))
    restored = pickle.loads(pickle.dumps(decision))
    assert np.array_equal(restored.predict_proba(X["test"]), proba)
    isotonic = ev.fit_calibrator(model, X["valid"], y["valid"], "isotonic", 2)
    assert np.allclose(isotonic.predict_proba(X["test"]).sum(axis=1), 1)


def test_soft_vote_averages_member_probabilities(fitted):
    _, pipelines, X, y = fitted
    members = [pipelines["logistic_regression"], pipelines["xgboost"]]
    ensemble = ev.SoftVoteEnsemble(members, ["logistic_regression", "xgboost"])
    expected = (members[0].predict_proba(X["test"]) + members[1].predict_proba(X["test"])) / 2
    assert np.allclose(ensemble.predict_proba(X["test"]), expected)
    assert np.array_equal(ensemble.predict(X["test"]), expected.argmax(axis=1))


def test_the_evaluation_predicts_on_every_core_and_registers_the_models_own_threads(fitted, monkeypatch):
    """Inside on_every_core each booster of a decision model or ensemble predicts on every core, the same
    probabilities; after it, each has its own thread count again (what is pickled and served)."""
    import os

    _, pipelines, X, _ = fitted
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    boosters = [pipelines[f].steps[-1][1] for f in ("lightgbm", "xgboost")]
    for booster in boosters:
        booster.set_params(n_jobs=1)
    ensemble = ev.SoftVoteEnsemble([pipelines["lightgbm"], pipelines["xgboost"]], ["lightgbm", "xgboost"])
    decision = ev.DecisionModel(ensemble, threshold=0.4)
    before = decision.predict_proba(X["test"])
    with ev.on_every_core(decision):
        assert [b.get_params()["n_jobs"] for b in boosters] == [3, 3]
        assert np.allclose(decision.predict_proba(X["test"]), before)
    assert [b.get_params()["n_jobs"] for b in boosters] == [1, 1]
    assert pickle.loads(pickle.dumps(decision)).model.members[0].steps[-1][1].get_params()["n_jobs"] == 1


def test_permutation_importance_ranks_signal_above_noise(fitted):
    info, pipelines, X, y = fitted
    frame = X["valid"].copy()
    table = ev.permutation_importances(pipelines["logistic_regression"], frame, y["valid"], metric="roc_auc",
                                       n_classes=2, beta=0.5, average="macro", threshold=None, n_repeats=3)
    assert list(table.columns) == ["feature", "importance_mean", "importance_std"]
    assert set(table["feature"]) == set(info.features)
    assert table["importance_mean"].iloc[0] > 0 and table["importance_mean"].is_monotonic_decreasing


@pytest.mark.parametrize("family", ["lightgbm", "xgboost"])
def test_tree_shap_values_add_up_to_the_models_margin(fitted, family):
    _, pipelines, X, _ = fitted
    pipeline = pipelines[family]
    values, names, encoded = ev.tree_shap_values(pipeline, X["valid"])
    assert encoded.shape == values.shape
    assert values.shape == (len(X["valid"]), len(names))
    encoded = pipeline.named_steps["preprocess"].transform(X["valid"])
    model = pipeline.named_steps["model"]
    margin = (model.predict(encoded, raw_score=True) if family == "lightgbm"
              else model.predict(encoded, output_margin=True))
    # contributions + the bias term = the raw score: exact TreeSHAP, not an approximation
    bias = margin - values.sum(axis=1)
    assert np.allclose(bias, bias[0], atol=1e-4)
    assert ev.tree_shap_values(pipelines["logistic_regression"], X["valid"]) is None


def test_fairness_differences_on_known_rates():
    groups = pd.Series(["a"] * 4 + ["b"] * 4)
    y = np.array([1, 1, 0, 0, 1, 1, 0, 0])
    pred = np.array([1, 1, 1, 0, 1, 0, 0, 0])  # a: selects 3/4, TPR 1, FPR 0.5; b: 1/4, TPR 0.5, FPR 0
    table, summary = ev.fairness_report(y, pred, groups)
    assert table["selection_rate"].tolist() == [0.75, 0.25]
    assert summary["demographic_parity_difference"] == pytest.approx(0.5)
    assert summary["equalized_odds_difference"] == pytest.approx(0.5)
    same, fair = ev.fairness_report(y, y, groups)
    assert fair["equalized_odds_difference"] == 0.0
