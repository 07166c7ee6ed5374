"""What the evaluation builds and measures around the champion (pure: no Prefect, no Comet).

`DecisionModel` is what is gated *and* registered: the pipeline (or `SoftVoteEnsemble`), an optional
calibrator and binary threshold, all fitted on validation, so a reloaded model predicts what was evaluated.
Also here: bootstrap intervals, threshold tuning, permutation importance, TreeSHAP and fairness metrics.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin

from tasks.ml.metrics import ResampledCurves, compute_metrics, compute_regression_metrics, normalized, predict_labels


class SoftVoteEnsemble:
    """Soft voting: the mean of the members' class probabilities. Members take raw feature columns."""

    def __init__(self, members: list[Any], names: list[str]) -> None:
        self.members = members
        self.names = names

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return np.mean([np.asarray(m.predict_proba(X)) for m in self.members], axis=0)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)


class _Prefit(ClassifierMixin, BaseEstimator):
    """A fitted model seen by CalibratedClassifierCV as a classifier (frozen: never refitted)."""

    def __init__(self, model: Any = None, n_classes: int = 2) -> None:
        self.model = model
        self.n_classes = n_classes

    def fit(self, X: Any = None, y: Any = None) -> _Prefit:
        self.classes_ = np.arange(self.n_classes)  # the model is already fitted: nothing to learn
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        return np.asarray(self.model.predict_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)


def fit_calibrator(model: Any, X_valid: pd.DataFrame, y_valid: np.ndarray, method: str, n_classes: int) -> Any:
    """sigmoid (Platt) or isotonic calibration of a fitted model, fitted on the validation rows only."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator

    calibrator = CalibratedClassifierCV(FrozenEstimator(_Prefit(model, n_classes).fit()), method=method)
    calibrator.fit(X_valid, y_valid)
    return calibrator


@dataclass
class DecisionModel:
    """The registered object: model -> (calibrated) probabilities -> labels (threshold for binary)."""

    model: Any
    calibrator: Any = None
    threshold: float | None = None  # binary: predict the positive class when P(positive) >= threshold
    name: str = ""

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        if self.calibrator is not None:
            return np.asarray(self.calibrator.predict_proba(X))
        return np.asarray(self.model.predict_proba(X))

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return predict_labels(self.predict_proba(X), self.threshold)


def _estimators(model: Any) -> Iterator[Any]:
    """The fitted estimators inside a decision model, an ensemble or a pipeline."""
    from tasks.ml.regression import unwrap

    inner = getattr(model, "members", None) or [getattr(model, "model", None) or model]
    for member in inner:
        if member is not model:
            yield from _estimators(member)
        elif hasattr(member, "steps"):  # a Pipeline: its last step is the model
            yield unwrap(member.steps[-1][1])
        elif hasattr(member, "get_params"):
            yield member


@contextmanager
def on_every_core(model: Any) -> Iterator[None]:
    """Inside, the model predicts on every core: the evaluation runs alone, while the search may have fitted
    it on one thread. Outside it keeps its own count, which is what gets registered (and served)."""
    cores = os.cpu_count() or 1
    changed = []
    for estimator in _estimators(model):
        threads = estimator.get_params(deep=False).get("n_jobs", cores)
        if threads is not None and threads != cores and threads != -1:
            estimator.set_params(n_jobs=cores)
            changed.append((estimator, threads))
    try:
        yield
    finally:
        for estimator, threads in changed:
            estimator.set_params(n_jobs=threads)


def tune_threshold(y: np.ndarray, proba: np.ndarray, metric: str, beta: float, direction: str) -> float:
    """The binary threshold that gives the best `metric` on these (validation) rows.

    Candidates are the midpoints between distinct scores (at most 200 quantiles); ties go to the
    threshold closest to 0.5. Threshold-free metrics (roc_auc, log_loss...) keep 0.5.
    """
    if metric not in ("fbeta", "f1", "accuracy", "balanced_accuracy", "precision", "recall", "mcc"):
        return 0.5
    scores = np.asarray(proba)[:, 1]
    cuts = np.unique(np.quantile(scores, np.linspace(0, 1, 201)))
    candidates = np.unique(np.concatenate([[0.5], (cuts[:-1] + cuts[1:]) / 2]))
    best, best_value = 0.5, None
    for t in sorted(candidates, key=lambda c: abs(c - 0.5)):
        value = compute_metrics(y, proba, n_classes=2, beta=beta, threshold=float(t), only=metric)[metric]
        if best_value is None or (value > best_value if direction == "maximize" else value < best_value):
            best, best_value = float(t), value
    return best


def bootstrap_intervals(
    y: np.ndarray, proba: np.ndarray, *, n_classes: int, beta: float, average: str, threshold: float | None,
    n_resamples: int = 200, seed: int = 0, level: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap: resample the rows with replacement, recompute every metric."""
    rng = np.random.default_rng(seed)
    n = len(y)
    draws: dict[str, list[float]] = {}
    # Binary: the scores are sorted once, not twice per resample (ROC and PR curves).
    curves = ResampledCurves(y, normalized(proba)[:, 1]) if n_classes == 2 else None
    for _ in range(n_resamples):
        idx = rng.integers(0, n, n)
        if len(np.unique(y[idx])) < 2:
            continue
        for key, value in compute_metrics(y[idx], proba[idx], n_classes=n_classes, beta=beta, average=average,
                                          threshold=threshold, curve=curves.of(idx) if curves else None).items():
            draws.setdefault(key, []).append(value)
    tail = (1 - level) / 2 * 100
    return {k: (float(np.nanpercentile(v, tail)), float(np.nanpercentile(v, 100 - tail))) for k, v in draws.items()}


PERMUTATION_BATCH_ROWS = 50_000


def permutation_importances(
    model: Any, X: pd.DataFrame, y: np.ndarray, *, metric: str, n_classes: int, beta: float, average: str,
    threshold: float | None, n_repeats: int = 5, seed: int = 0,
) -> pd.DataFrame:
    """How much the metric worsens when one raw column is shuffled (on the rows given: validation).

    Positive = the model relies on the column. Works on any object with predict_proba (a pipeline,
    an ensemble, a calibrated model), on the raw columns a user passes, not on encoded ones.
    """
    rng = np.random.default_rng(seed)
    sign = -1.0 if metric in ("log_loss", "brier", "rmse", "mae", "medae", "mape") else 1.0
    predict = model.predict if not n_classes else model.predict_proba  # n_classes 0: a regression

    def score(output: np.ndarray) -> float:
        if not n_classes:
            return sign * compute_regression_metrics(y, output, with_mape=metric == "mape")[metric]
        return sign * compute_metrics(y, output, n_classes=n_classes, beta=beta, average=average,
                                      threshold=threshold, only=metric)[metric]

    baseline = score(np.asarray(predict(X)))
    n = len(X)
    # Copies drawn as one at a time would, predicted in stacks of ~PERMUTATION_BATCH_ROWS rows: one call each.
    jobs = [(column, X[column].to_numpy()[rng.permutation(n)]) for column in X.columns for _ in range(n_repeats)]
    per_stack = max(1, PERMUTATION_BATCH_ROWS // max(n, 1))
    drops: dict[str, list[float]] = {column: [] for column in X.columns}
    for start in range(0, len(jobs), per_stack):
        stack = jobs[start:start + per_stack]
        copies = []
        for column, values in stack:
            shuffled = X.copy()
            shuffled[column] = values
            copies.append(shuffled)
        proba = np.asarray(predict(pd.concat(copies, ignore_index=True)))
        for k, (column, _) in enumerate(stack):
            drops[column].append(baseline - score(proba[k * n:(k + 1) * n]))
    rows = [{"feature": column, "importance_mean": float(np.mean(values)), "importance_std": float(np.std(values))}
            for column, values in drops.items()]
    table = pd.DataFrame(rows)
    return table.sort_values("importance_mean", ascending=False, ignore_index=True)


def tree_shap_values(pipeline: Any, X: pd.DataFrame) -> tuple[np.ndarray, list[str], np.ndarray] | None:
    """Exact TreeSHAP from LightGBM's, XGBoost's or CatBoost's own implementation; None for other models.

    Returns (values [rows x encoded features]: the positive class's, or |values| summed over classes;
    the feature names; the encoded values as numbers, category codes for native categories).
    """
    from tasks.ml.regression import unwrap

    model = getattr(pipeline, "named_steps", {}).get("model") if hasattr(pipeline, "named_steps") else None
    if model is None:
        return None
    model = unwrap(model)  # a regressor fitted on log1p(target): SHAP values on that scale
    kind = type(model).__name__
    if kind not in ("LGBMClassifier", "XGBClassifier", "LGBMRegressor", "XGBRegressor", "CatBoostClassifier",
                    "CatBoostRegressor"):
        return None
    pre = pipeline.named_steps["preprocess"]
    encoded = pre.transform(X)
    names = [str(n) for n in pre.get_feature_names_out()]
    threads = os.cpu_count() or 1  # the search may have fitted with one thread per family
    if kind == "LGBMRegressor":
        contrib = np.asarray(model.predict(encoded, pred_contrib=True, num_threads=threads))
    elif kind == "LGBMClassifier":
        contrib = np.asarray(model.predict_proba(encoded, pred_contrib=True, num_threads=threads))
    elif kind.startswith("CatBoost"):  # rows x (features + 1); multiclass: rows x classes x (features + 1)
        from catboost import Pool

        from tasks.ml.estimators import category_columns

        pool = Pool(encoded, cat_features=category_columns(encoded) or None)
        contrib = np.asarray(model.get_feature_importance(pool, type="ShapValues", thread_count=threads))
    else:
        import xgboost as xgb

        booster = model.get_booster().copy()
        booster.set_param({"nthread": threads})
        matrix = xgb.DMatrix(encoded, enable_categorical=True)
        # The trees the model predicts with: an early-stopped booster holds more, past its best round.
        best = getattr(model, "best_iteration", None)
        rounds = (0, best + 1) if best is not None else (0, 0)
        contrib = np.asarray(booster.predict(matrix, pred_contribs=True, iteration_range=rounds))
    n_features = len(names)
    if contrib.ndim == 3:  # xgboost multiclass: rows x classes x (features + 1)
        values = np.abs(contrib[:, :, :n_features]).sum(axis=1)
    elif contrib.shape[1] == n_features + 1:  # binary: the positive class's log-odds (regression: the output's)
        values = contrib[:, :n_features]
    else:  # lightgbm multiclass: classes blocks of (features + 1), side by side
        blocks = contrib.reshape(len(contrib), -1, n_features + 1)
        values = np.abs(blocks[:, :, :n_features]).sum(axis=1)
    if isinstance(encoded, pd.DataFrame):
        numbers = np.column_stack([
            encoded[c].cat.codes.to_numpy(dtype=float) if isinstance(encoded[c].dtype, pd.CategoricalDtype)
            else encoded[c].to_numpy(dtype=float) for c in encoded.columns])
    else:
        numbers = np.asarray(encoded, dtype=float)
    return values, names, numbers


def fairness_report(
    y: np.ndarray, y_pred: np.ndarray, groups: pd.Series, *, positive: int = 1,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Per-group rates and the two gaps: demographic parity difference (largest gap in the rate of
    positive predictions) and equalized odds difference (largest gap in TPR or FPR), for the class
    `positive` (multiclass: one class against the rest)."""
    frame = pd.DataFrame({"y": (np.asarray(y) == positive).astype(int),
                          "pred": (np.asarray(y_pred) == positive).astype(int),
                          "group": groups.astype(object).where(groups.notna(), "(missing)").astype(str).to_numpy()})
    rows = []
    for name, part in frame.groupby("group", sort=True):
        pos, neg = part[part.y == 1], part[part.y == 0]
        rows.append({
            "group": name, "rows": len(part), "selection_rate": part.pred.mean(),
            "true_positive_rate": pos.pred.mean() if len(pos) else np.nan,
            "false_positive_rate": neg.pred.mean() if len(neg) else np.nan,
            "accuracy": (part.pred == part.y).mean(), "base_rate": part.y.mean(),
        })
    table = pd.DataFrame(rows)

    def gap(column: str) -> float:
        values = table[column].dropna()
        return float(values.max() - values.min()) if len(values) else float("nan")

    summary = {
        "demographic_parity_difference": gap("selection_rate"),
        "equalized_odds_difference": float(np.nanmax([gap("true_positive_rate"), gap("false_positive_rate")])),
    }
    return table, summary
