"""Classification and regression metrics, champion selection and the deployment gate (pure functions)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from sklearn import metrics as skm

Direction = Literal["maximize", "minimize"]


def predict_labels(proba: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """argmax, or for binary tasks with a tuned threshold: positive when P(positive) >= threshold."""
    proba = np.asarray(proba)
    if threshold is not None and proba.shape[1] == 2:
        return (proba[:, 1] >= threshold).astype(int)
    return proba.argmax(axis=1)


def _label_metrics(y: np.ndarray, pred: np.ndarray, k: int, beta: float, average: str) -> dict[str, float]:
    """Label metrics as scikit-learn defines them (zero_division=0; binary: class 1), from the confusion matrix.

    Skips scikit-learn's per-call checks: the bootstrap, permutation and threshold loops call it thousands of times.
    """
    matrix = np.bincount(y * k + pred, minlength=k * k).reshape(k, k).astype(float)
    total = matrix.sum()
    tp = np.diag(matrix)
    support, predicted = matrix.sum(axis=1), matrix.sum(axis=0)

    def ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.divide(a, b, out=np.zeros_like(a), where=b > 0)

    precision, recall = ratio(tp, predicted), ratio(tp, support)

    def f(b: float) -> np.ndarray:
        return ratio((1 + b * b) * precision * recall, b * b * precision + recall)

    if k == 2:
        pick = {"precision": precision[1], "recall": recall[1], "f1": f(1.0)[1], "fbeta": f(beta)[1]}
    elif average == "micro":
        micro = tp.sum() / total if total else 0.0
        pick = dict.fromkeys(("precision", "recall", "f1", "fbeta"), micro)
    else:
        weights = support / support.sum() if average == "weighted" else np.full(k, 1.0 / k)
        pick = {"precision": precision @ weights, "recall": recall @ weights,
                "f1": f(1.0) @ weights, "fbeta": f(beta) @ weights}
    covariance = tp.sum() * total - predicted @ support
    spread = np.sqrt((total**2 - predicted @ predicted) * (total**2 - support @ support))
    return {
        "accuracy": tp.sum() / total if total else 0.0,
        "balanced_accuracy": float(recall[support > 0].mean()),
        **pick,
        "mcc": covariance / spread if spread > 0 else 0.0,
    }


def _binary_curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives at each distinct score, highest first (scikit-learn's `_binary_clf_curve`)."""
    order = np.argsort(score, kind="mergesort")[::-1]
    score, y = score[order], y[order]
    ends = np.r_[np.flatnonzero(np.diff(score)), y.size - 1]  # the last row of each run of equal scores
    tps = np.cumsum(y, dtype=np.float64)[ends]
    return tps, 1.0 + ends - tps


def normalized(proba: np.ndarray) -> np.ndarray:
    """Probabilities as the metrics take them: clipped away from 0 (log loss), rows summing to 1."""
    proba = np.clip(np.asarray(proba, dtype=np.float64), 1e-15, 1.0)
    return proba / proba.sum(axis=1, keepdims=True)


class ResampledCurves:
    """`_binary_curve` of resamples of one (y, score) pair, sorted once: a resample's curve is its row counts
    summed over the runs of equal scores (O(n) instead of a sort of n rows; the bootstrap's main cost)."""

    def __init__(self, y: np.ndarray, score: np.ndarray) -> None:
        self.order = np.argsort(score, kind="mergesort")[::-1]
        self.y = np.asarray(y)[self.order].astype(np.float64)
        self.ends = np.r_[np.flatnonzero(np.diff(score[self.order])), len(self.order) - 1]

    def of(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The curve of the resample that draws `rows` (indices into the original arrays, repeats allowed)."""
        counts = np.bincount(rows, minlength=len(self.order))[self.order].astype(np.float64)
        tps = np.cumsum(counts * self.y)[self.ends]
        seen = np.cumsum(counts)[self.ends]
        drawn = np.diff(np.r_[0.0, seen]) > 0  # scores the resample does not hold are no point of its curve
        return tps[drawn], (seen - tps)[drawn]


def binary_roc_auc(y: np.ndarray, score: np.ndarray, curve: tuple[np.ndarray, np.ndarray] | None = None) -> float:
    """ROC-AUC as scikit-learn's roc_auc_score computes it (tested equal); NaN when `y` holds one class.

    Skips scikit-learn's per-call checks, which the bootstrap would pay on every resample.
    `curve`: (y, score)'s `_binary_curve`, when already known.
    """
    tps, fps = _binary_curve(y, score) if curve is None else curve
    if tps[-1] == 0 or fps[-1] == 0:
        return float("nan")
    return float(np.trapezoid(np.r_[0.0, tps] / tps[-1], np.r_[0.0, fps] / fps[-1]))


def binary_average_precision(y: np.ndarray, score: np.ndarray,
                             curve: tuple[np.ndarray, np.ndarray] | None = None) -> float:
    """Average precision as scikit-learn's average_precision_score computes it (tested equal), without its checks."""
    tps, fps = _binary_curve(y, score) if curve is None else curve
    if tps[-1] == 0:
        return float(skm.average_precision_score(y, score))  # no positive: scikit-learn's warning and value
    precision, recall = tps / (tps + fps), tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def compute_metrics(
    y_true: np.ndarray,
    proba: np.ndarray,
    *,
    n_classes: int,
    beta: float = 0.5,
    average: str = "macro",
    threshold: float | None = None,
    only: str | None = None,
    curve: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, float]:
    """All metrics gauntlet reports, from encoded labels (binary: 1 = positive) and probabilities.

    Label metrics use `threshold` on P(positive) for binary tasks when given, argmax otherwise.
    Multiclass: precision/recall/F by `average`, ROC-AUC and PR-AUC one-vs-rest macro, Brier summed
    over classes. `only`: compute just that metric (bootstrap and permutation loops). `curve`: a binary
    task's `_binary_curve` of these rows, when known (ResampledCurves).
    """
    y_true = np.asarray(y_true)
    proba = normalized(proba)
    y_pred = predict_labels(proba, threshold)
    onehot = np.eye(n_classes)[y_true]
    labels = list(range(n_classes))
    label_scores = _label_metrics(y_true, y_pred, n_classes, beta, average)
    def roc_auc() -> float:
        if n_classes == 2:
            return binary_roc_auc(y_true, proba[:, 1], curve)
        try:
            return skm.roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=labels)
        except ValueError:  # a class absent from y_true: AUC is undefined
            return float("nan")

    def pr_auc() -> float:
        if n_classes == 2:
            return binary_average_precision(y_true, proba[:, 1], curve)
        present = onehot.sum(axis=0) > 0
        return float(np.mean([skm.average_precision_score(onehot[:, k], proba[:, k])
                              for k in range(n_classes) if present[k]]))

    squared = (onehot - proba) ** 2
    computers = {
        **{name: (lambda name=name: label_scores[name]) for name in label_scores},
        # scikit-learn's log_loss on these clipped, normalised probabilities, without its checks
        "log_loss": lambda: -np.mean(np.log(proba[np.arange(len(y_true)), y_true])),
        "brier": lambda: np.mean(squared[:, 1] if n_classes == 2 else squared.sum(axis=1)),
        "roc_auc": roc_auc,
        "pr_auc": pr_auc,
    }
    names = [only] if only else list(computers)
    return {name: float(computers[name]()) for name in names}


# Regression metrics and whether higher or lower is better (issue 19 builds the regression task on them).
REGRESSION_METRIC_DIRECTIONS: dict[str, Direction] = {
    "rmse": "minimize", "mae": "minimize", "r2": "maximize", "mape": "minimize", "medae": "minimize",
}
# MAPE divides by the target: it is left out when some |target| is under this share of the median |target|.
MAPE_MIN_ABS_SHARE = 0.01


def mape_is_meaningful(y: np.ndarray) -> bool:
    """No target value is near 0 (relative to the typical one), so percentage errors stay finite and fair."""
    magnitude = np.abs(np.asarray(y, dtype="float64"))
    return bool(len(magnitude)) and float(magnitude.min()) > MAPE_MIN_ABS_SHARE * float(np.median(magnitude))


def compute_regression_metrics(y: np.ndarray, pred: np.ndarray, with_mape: bool | None = None) -> dict[str, float]:
    """rmse, mae, r2, medae, and mape when `with_mape` (default: when no target is near 0).

    Plain numpy (no per-call checks): the bootstrap calls it hundreds of times. r2 is 1 - SSE/SST,
    and 0 for a constant target (SST = 0), where scikit-learn's r2_score is undefined."""
    y, pred = np.asarray(y, dtype="float64"), np.asarray(pred, dtype="float64")
    error = pred - y
    sse = float(error @ error)
    sst = float(((y - y.mean()) ** 2).sum())
    out = {
        "rmse": math.sqrt(sse / len(y)),
        "mae": float(np.abs(error).mean()),
        "r2": 1.0 - sse / sst if sst > 0 else 0.0,
        "medae": float(np.median(np.abs(error))),
    }
    if mape_is_meaningful(y) if with_mape is None else with_mape:
        out["mape"] = float(np.mean(np.abs(error) / np.abs(y)))
    return out


def confusion_summary(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[Any]) -> list[dict[str, Any]]:
    """TP/TN/FP/FN: one row for the positive class (binary), one row per class one-vs-rest otherwise."""
    matrix = skm.confusion_matrix(y_true, y_pred, labels=list(range(len(classes))))
    total = matrix.sum()
    rows = []
    shown = [1] if len(classes) == 2 else range(len(classes))
    for k in shown:
        tp = int(matrix[k, k])
        fp = int(matrix[:, k].sum() - tp)
        fn = int(matrix[k, :].sum() - tp)
        rows.append({"class": classes[k], "TP": tp, "TN": int(total - tp - fp - fn), "FP": fp, "FN": fn})
    return rows


def is_better(a: float, b: float, direction: Direction) -> bool:
    """Is score `a` strictly better than `b`? NaN is never better; anything beats NaN."""
    if a is None or math.isnan(a):
        return False
    if b is None or math.isnan(b):
        return True
    return a > b if direction == "maximize" else a < b


def passes_gate(value: float, threshold: float, direction: Direction) -> bool:
    if value is None or math.isnan(value):
        return False
    return value >= threshold if direction == "maximize" else value <= threshold


def select_champion(candidates: Sequence[Any], metric: str, direction: Direction) -> Any:
    """The candidate with the best *validation* `metric`; failed candidates never win.

    Ties on `metric` go to the lower validation log loss (the better-calibrated model), then to
    the earlier candidate, so the choice is deterministic. Raises ValueError when no candidate
    has a finite score.
    """
    best = None
    for cand in candidates:
        score = cand.valid_metrics.get(metric, float("nan"))
        if getattr(cand, "status", "ok") != "ok" or math.isnan(score):
            continue
        if best is None:
            best = cand
            continue
        best_score = best.valid_metrics[metric]
        if is_better(score, best_score, direction):
            best = cand
        elif score == best_score and metric != "log_loss" and is_better(
            cand.valid_metrics.get("log_loss", float("nan")),
            best.valid_metrics.get("log_loss", float("nan")),
            "minimize",
        ):
            best = cand
    if best is None:
        names = ", ".join(f"{c.family} ({c.status})" for c in candidates) or "none"
        raise ValueError(f"no candidate has a usable validation {metric}; candidates: {names}")
    return best
