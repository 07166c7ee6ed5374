import math

import numpy as np
import pytest
from sklearn.metrics import fbeta_score

from tasks.ml.metrics import compute_metrics, confusion_summary, is_better, passes_gate, select_champion
from tasks.ml.results import Candidate


def proba_for(pred_pos: list[float]) -> np.ndarray:
    p = np.asarray(pred_pos, dtype=float)
    return np.column_stack([1 - p, p])


def test_binary_metrics_match_hand_computed_values():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    p = proba_for([0.9, 0.8, 0.2, 0.7, 0.1, 0.1, 0.3, 0.2])  # TP=2, FN=1, FP=1, TN=4
    m = compute_metrics(y, p, n_classes=2, beta=0.5)
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    # F-beta = (1 + b^2) P R / (b^2 P + R)
    assert m["fbeta"] == pytest.approx((1.25 * (2 / 3) * (2 / 3)) / (0.25 * (2 / 3) + 2 / 3))
    assert m["roc_auc"] == pytest.approx(12.5 / 15)  # one tie (0.2 vs 0.2) counts half
    assert m["log_loss"] > 0


def test_beta_weights_precision_over_recall():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    p = proba_for([0.9, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])  # precision 1.0, recall 0.5
    half = compute_metrics(y, p, n_classes=2, beta=0.5)["fbeta"]
    two = compute_metrics(y, p, n_classes=2, beta=2.0)["fbeta"]
    assert half > two
    assert half == pytest.approx(fbeta_score(y, (p[:, 1] > 0.5).astype(int), beta=0.5))


def test_multiclass_metrics_and_one_vs_rest_confusion():
    y = np.array([0, 1, 2, 2, 1, 0])
    p = np.eye(3)[[0, 1, 2, 1, 1, 0]] * 0.8 + 0.2 / 3
    m = compute_metrics(y, p, n_classes=3, average="macro")
    assert m["accuracy"] == pytest.approx(5 / 6)
    rows = confusion_summary(y, p.argmax(axis=1), ["a", "b", "c"])
    assert [r["class"] for r in rows] == ["a", "b", "c"]
    assert rows[1] == {"class": "b", "TP": 2, "TN": 3, "FP": 1, "FN": 0}
    assert all(r["TP"] + r["TN"] + r["FP"] + r["FN"] == 6 for r in rows)


def test_binary_confusion_is_about_the_positive_class():
    rows = confusion_summary(np.array([1, 1, 0, 0, 0]), np.array([1, 0, 1, 0, 0]), ["no", "yes"])
    assert rows == [{"class": "yes", "TP": 1, "TN": 2, "FP": 1, "FN": 1}]


@pytest.mark.filterwarnings("ignore:.*(single label|Only one class).*")
def test_auc_is_nan_when_a_class_is_absent():
    m = compute_metrics(np.array([1, 1]), proba_for([0.9, 0.8]), n_classes=2)
    assert math.isnan(m["roc_auc"])


def cand(family, status="ok", **metrics):
    return Candidate(family=family, status=status, valid_metrics=metrics)


def test_champion_maximises_by_default():
    pool = [cand("lr", fbeta=0.80), cand("rf", fbeta=0.91), cand("xgb", fbeta=0.85)]
    assert select_champion(pool, "fbeta", "maximize").family == "rf"


def test_champion_with_a_lower_is_better_metric():
    pool = [cand("lr", log_loss=0.30), cand("rf", log_loss=0.12), cand("xgb", log_loss=0.25)]
    assert select_champion(pool, "log_loss", "minimize").family == "rf"


def test_failed_and_nan_candidates_never_win_and_ties_keep_the_first():
    pool = [
        cand("broken", status="failed", fbeta=0.99),
        cand("nan", fbeta=float("nan")),
        cand("lr", fbeta=0.9),
        cand("rf", fbeta=0.9),
    ]
    assert select_champion(pool, "fbeta", "maximize").family == "lr"


def test_ties_go_to_the_lower_validation_log_loss():
    pool = [cand("lgbm", fbeta=0.99, log_loss=0.20), cand("lr", fbeta=0.99, log_loss=0.08),
            cand("rf", fbeta=0.97, log_loss=0.01)]
    assert select_champion(pool, "fbeta", "maximize").family == "lr"


def test_no_usable_candidate_is_an_error():
    with pytest.raises(ValueError, match="no candidate has a usable validation fbeta"):
        select_champion([cand("a", status="failed")], "fbeta", "maximize")


def test_gate_and_comparison_respect_direction():
    assert passes_gate(0.7, 0.7, "maximize") and not passes_gate(0.69, 0.7, "maximize")
    assert passes_gate(0.2, 0.3, "minimize") and not passes_gate(0.31, 0.3, "minimize")
    assert not passes_gate(float("nan"), 0.0, "maximize")
    assert is_better(0.2, 0.3, "minimize") and not is_better(0.2, 0.3, "maximize")
    assert is_better(0.1, float("nan"), "maximize") and not is_better(float("nan"), 0.1, "maximize")



@pytest.mark.parametrize("n_classes", [2, 3, 5])
@pytest.mark.parametrize("average", ["macro", "weighted", "micro"])
def test_label_metrics_match_scikit_learn(n_classes, average):
    """gauntlet computes label metrics from the confusion matrix (fast, for the bootstrap loops);
    they must equal scikit-learn's, including classes that are never predicted."""
    import warnings

    from sklearn import metrics as skm

    rng = np.random.default_rng(n_classes)
    for trial in range(15):
        n = int(rng.integers(5, 60))
        y = rng.integers(0, n_classes, n)
        proba = rng.dirichlet(np.ones(n_classes), n)
        if trial % 3 == 0:
            proba[:, 0] += 3
            proba /= proba.sum(axis=1, keepdims=True)
        pred = proba.argmax(axis=1)
        ours = compute_metrics(y, proba, n_classes=n_classes, beta=0.5, average=average)
        kw = ({"average": "binary", "zero_division": 0} if n_classes == 2
              else {"average": average, "labels": list(range(n_classes)), "zero_division": 0})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference = {
                "accuracy": skm.accuracy_score(y, pred), "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
                "precision": skm.precision_score(y, pred, **kw), "recall": skm.recall_score(y, pred, **kw),
                "f1": skm.f1_score(y, pred, **kw), "fbeta": skm.fbeta_score(y, pred, beta=0.5, **kw),
                "mcc": skm.matthews_corrcoef(y, pred),
            }
        for key, value in reference.items():
            assert ours[key] == pytest.approx(value, abs=1e-12), (key, trial)


@pytest.mark.parametrize("seed", range(6))
def test_fast_binary_curves_equal_scikit_learns(seed):
    """ROC-AUC, average precision and log loss without scikit-learn's per-call checks: the same
    values, ties in the scores included (rounded scores), on balanced and rare positives."""
    from sklearn import metrics as skm

    from tasks.ml.metrics import binary_average_precision, binary_roc_auc

    rng = np.random.default_rng(seed)
    n = [7, 50, 333, 2000, 2000, 5000][seed]
    y = (rng.random(n) < (0.5 if seed % 2 else 0.05)).astype(int)
    y[:2] = [0, 1]
    score = np.clip(0.3 * y + rng.random(n), 0, 1)
    if seed >= 3:
        score = np.round(score, 1)  # many ties
    assert binary_roc_auc(y, score) == pytest.approx(skm.roc_auc_score(y, score), rel=1e-12)
    assert binary_average_precision(y, score) == pytest.approx(skm.average_precision_score(y, score), rel=1e-12)
    proba = np.c_[1 - score, score]
    ours = compute_metrics(y, proba, n_classes=2)
    clipped = np.clip(proba, 1e-15, 1)
    clipped /= clipped.sum(axis=1, keepdims=True)
    assert ours["log_loss"] == pytest.approx(skm.log_loss(y, clipped, labels=[0, 1]), rel=1e-12)
    assert np.isnan(binary_roc_auc(np.zeros(5, dtype=int), score[:5]))


def test_regression_metrics_agree_with_scikit_learn():
    from sklearn import metrics as skm

    from tasks.ml.metrics import REGRESSION_METRIC_DIRECTIONS, compute_regression_metrics

    rng = np.random.default_rng(0)
    y = rng.lognormal(3, 0.5, size=500)
    pred = y * rng.normal(1, 0.1, size=500)
    got = compute_regression_metrics(y, pred)
    assert got["rmse"] == pytest.approx(skm.root_mean_squared_error(y, pred))
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, pred))
    assert got["r2"] == pytest.approx(skm.r2_score(y, pred))
    assert got["medae"] == pytest.approx(skm.median_absolute_error(y, pred))
    assert got["mape"] == pytest.approx(skm.mean_absolute_percentage_error(y, pred))
    assert set(got) == set(REGRESSION_METRIC_DIRECTIONS)


def test_mape_is_left_out_when_a_target_is_near_zero_and_r2_of_a_constant_is_zero():
    from tasks.ml.metrics import compute_regression_metrics

    y = np.array([0.0, 10.0, 20.0, 30.0])
    assert "mape" not in compute_regression_metrics(y, y + 1)
    assert "mape" in compute_regression_metrics(y + 5, y + 6)
    assert compute_regression_metrics(np.full(4, 3.0), np.full(4, 3.0))["r2"] == 0.0


def test_a_resamples_curve_from_the_scores_sorted_once_equals_sorting_the_resample():
    """The bootstrap sorts the scores once: a resample's curve is its row counts over the runs of equal
    scores, the same points as sorting the resample itself (ties, repeats and missing scores included)."""
    from tasks.ml.metrics import ResampledCurves, _binary_curve, binary_average_precision, binary_roc_auc

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400)
    score = np.round(rng.random(400), 2)  # many ties
    curves = ResampledCurves(y, score)
    for _ in range(20):
        rows = rng.integers(0, 400, 400)
        expected = _binary_curve(y[rows], score[rows])
        got = curves.of(rows)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])
        assert binary_roc_auc(y[rows], score[rows], got) == binary_roc_auc(y[rows], score[rows])
        assert binary_average_precision(y[rows], score[rows], got) == binary_average_precision(y[rows], score[rows])
