"""Regression around the champion (pure: no Prefect, no Comet): the target transform, split-conformal
prediction intervals, residual summaries and bootstrap intervals of the regression metrics.

`RegressionModel` is what a regression run gates and registers: the pipeline (or an averaging
ensemble) and the half-width of its conformal interval, fitted on the validation residuals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin

from tasks.ml.metrics import compute_regression_metrics, mape_is_meaningful

TRANSFORMS = ("none", "log1p")


def forward(y: np.ndarray, transform: str) -> np.ndarray:
    """The target as the models fit it (`y` itself for none)."""
    return np.log1p(y) if transform == "log1p" else y


def inverse(pred: np.ndarray, transform: str) -> np.ndarray:
    """Model output back on the target's own scale (`pred` itself for none)."""
    return np.expm1(pred) if transform == "log1p" else pred


class TargetTransformed(RegressorMixin, BaseEstimator):
    """A regressor fitted on a transformed target, predicting on the target's own scale (the last step
    of a candidate's pipeline when preprocessing.target_transform chose log1p)."""

    def __init__(self, regressor: Any = None, transform: str = "log1p") -> None:
        self.regressor = regressor
        self.transform = transform

    def fit(self, X: Any, y: Any) -> TargetTransformed:
        self.regressor.fit(X, forward(np.asarray(y, dtype=np.float64), self.transform))
        return self

    def predict(self, X: Any) -> np.ndarray:
        return inverse(np.asarray(self.regressor.predict(X), dtype=np.float64), self.transform)

    def __sklearn_is_fitted__(self) -> bool:
        from sklearn.utils.validation import check_is_fitted

        try:
            check_is_fitted(self.regressor)
        except Exception:  # noqa: BLE001 - NotFittedError, or a regressor scikit-learn cannot inspect
            return False
        return True


def unwrap(model: Any) -> Any:
    """The fitted regressor inside a TargetTransformed (or the model itself)."""
    return model.regressor if isinstance(model, TargetTransformed) else model


# auto: log1p is probed only for a non-negative target this skewed (a price, a count), on at most this
# many training rows; it is chosen when it scores better on the validation split.
SKEW_FOR_LOG = 1.0
PROBE_ROWS = 20_000


def probe_wanted(mode: str, y: np.ndarray, y_min: float | None = None) -> bool:
    """Whether auto fits the probe: a non-negative target (`y_min`: the whole target's) skewed beyond SKEW_FOR_LOG."""
    low = float(y.min()) if y_min is None else min(y_min, float(y.min()))
    return mode == "auto" and low >= 0 and float(pd.Series(y).skew()) > SKEW_FOR_LOG


def choose_target_transform(
    mode: str, X_train: Any, y_train: np.ndarray, X_valid: Any, y_valid: np.ndarray, seed: int = 0,
    y_min: float | None = None,
) -> tuple[str, str]:
    """(transform, why) for preprocessing.target_transform `mode`; auto fits a quick LightGBM both ways
    (encoded arrays in, original scale out) and keeps what scores the better validation R2. `y_min`: the
    whole target's minimum when the rows given are a sample."""
    y_all = np.concatenate([y_train, y_valid])
    y_min = float(y_all.min()) if y_min is None else min(y_min, float(y_all.min()))
    if mode == "none":
        return "none", "preprocessing.target_transform is none"
    if y_min <= -1:
        if mode == "log1p":
            raise ValueError(f"preprocessing.target_transform log1p needs target values above -1, but the lowest is "
                             f"{y_min:g}; set it to none or auto")
        return "none", "the target has values at or below -1 (log1p is undefined there)"
    if mode == "log1p":
        return "log1p", "preprocessing.target_transform is log1p"
    skew = float(pd.Series(y_all).skew())
    if not probe_wanted(mode, y_all, y_min):
        return "none", f"the target is not a skewed positive quantity (skew {skew:.2f})"
    from lightgbm import LGBMRegressor

    rows = np.random.default_rng(seed).permutation(len(y_train))[:PROBE_ROWS]
    X_fit = X_train.iloc[rows] if hasattr(X_train, "iloc") else X_train[rows]
    scores = {}
    for transform in TRANSFORMS:
        model = LGBMRegressor(n_estimators=200, learning_rate=0.1, random_state=seed, n_jobs=1, verbose=-1,
                              deterministic=True, force_col_wise=True)
        try:
            model.fit(X_fit, forward(y_train[rows], transform))
        except Exception as exc:  # noqa: BLE001 - a probe that cannot fit decides nothing
            return "none", f"the probe could not fit ({type(exc).__name__}: {exc})"
        pred = inverse(model.predict(X_valid), transform)
        scores[transform] = compute_regression_metrics(y_valid, pred, with_mape=False)["r2"]
    chosen = "log1p" if scores["log1p"] > scores["none"] else "none"
    return chosen, (f"skew {skew:.2f}; a quick LightGBM scored validation R2 {scores['log1p']:.4f} on log1p(target) "
                    f"and {scores['none']:.4f} on the target itself")


def conformal_half_width(y: np.ndarray, pred: np.ndarray, coverage: float) -> float:
    """Split-conformal: the ceil((n + 1) * coverage)-th smallest absolute residual of held-out rows, so that
    [pred - w, pred + w] covers a new row with probability >= coverage (rows exchangeable)."""
    residuals = np.sort(np.abs(np.asarray(y, dtype=np.float64) - np.asarray(pred, dtype=np.float64)))
    n = len(residuals)
    rank = math.ceil((n + 1) * coverage)
    return float(residuals[min(rank, n) - 1]) if n else float("nan")


@dataclass
class RegressionModel:
    """The registered object of a regression run: a model on raw columns, and its conformal interval."""

    model: Any
    coverage: float = 0.9
    half_width: float | None = None  # fitted by `fit_interval` on rows the model never trained on
    calibration_rows: int = 0
    name: str = ""
    calibrator: Any = None  # classification's fields, always empty here: shared code reads them
    threshold: float | None = None

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.model.predict(X), dtype=np.float64)

    def fit_interval(self, X: pd.DataFrame, y: np.ndarray) -> RegressionModel:
        self.half_width = conformal_half_width(y, self.predict(X), self.coverage)
        self.calibration_rows = len(y)
        return self

    def interval(self, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        width = np.nan if self.half_width is None else self.half_width
        return pred - width, pred + width

    def predict_interval(self, X: pd.DataFrame) -> pd.DataFrame:
        """`prediction`, `prediction_lower`, `prediction_upper` for each row of X."""
        pred = self.predict(X)
        lower, upper = self.interval(pred)
        index = X.index if hasattr(X, "index") else None
        return pd.DataFrame({"prediction": pred, "prediction_lower": lower, "prediction_upper": upper}, index=index)


class AveragingEnsemble:
    """The regression ensemble: the mean of the members' predictions. Members take raw feature columns."""

    def __init__(self, members: list[Any], names: list[str]) -> None:
        self.members = members
        self.names = names

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return np.mean([np.asarray(m.predict(X), dtype=np.float64) for m in self.members], axis=0)


def coverage_of(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    y = np.asarray(y, dtype=np.float64)
    return float(np.mean((y >= lower) & (y <= upper))) if len(y) else float("nan")


def residual_summary(y: np.ndarray, pred: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Residual (actual - predicted) quantiles over all rows, then the error by decile of the prediction."""
    y, pred = np.asarray(y, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    residual = y - pred
    rows = [{"part": "all rows", "rows": len(y), "pred_min": float(pred.min()), "pred_max": float(pred.max()),
             **_residual_stats(residual)}]
    order = np.argsort(pred, kind="stable")
    for k, chunk in enumerate(np.array_split(order, min(bins, len(order)))):
        if len(chunk):
            rows.append({"part": f"prediction decile {k + 1}", "rows": len(chunk), "pred_min": float(pred[chunk].min()),
                         "pred_max": float(pred[chunk].max()), **_residual_stats(residual[chunk])})
    return pd.DataFrame(rows)


def _residual_stats(residual: np.ndarray) -> dict[str, float]:
    q = np.quantile(residual, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {"residual_mean": float(residual.mean()), "residual_q05": float(q[0]), "residual_q25": float(q[1]),
            "residual_median": float(q[2]), "residual_q75": float(q[3]), "residual_q95": float(q[4]),
            "mae": float(np.abs(residual).mean()), "rmse": float(np.sqrt(np.mean(residual ** 2)))}


def bootstrap_regression_intervals(
    y: np.ndarray, pred: np.ndarray, *, n_resamples: int = 200, seed: int = 0, level: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap of every regression metric: resample the rows with replacement, recompute."""
    rng = np.random.default_rng(seed)
    y, pred = np.asarray(y, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    with_mape = mape_is_meaningful(y)
    draws: dict[str, list[float]] = {}
    for _ in range(n_resamples):
        idx = rng.integers(0, len(y), len(y))
        for key, value in compute_regression_metrics(y[idx], pred[idx], with_mape=with_mape).items():
            draws.setdefault(key, []).append(value)
    tail = (1 - level) / 2 * 100
    return {k: (float(np.nanpercentile(v, tail)), float(np.nanpercentile(v, 100 - tail))) for k, v in draws.items()}


def group_errors(y: np.ndarray, pred: np.ndarray, groups: pd.Series) -> tuple[pd.DataFrame, dict[str, float]]:
    """Errors per group of a sensitive column, and the largest gap in mean absolute error between groups."""
    frame = pd.DataFrame({"y": np.asarray(y, dtype=np.float64), "pred": np.asarray(pred, dtype=np.float64),
                          "group": groups.astype(object).where(groups.notna(), "(missing)").astype(str).to_numpy()})
    rows = []
    for name, part in frame.groupby("group", sort=True):
        error = part.pred - part.y
        rows.append({"group": name, "rows": len(part), "mean_actual": part.y.mean(), "mean_predicted": part.pred.mean(),
                     "mae": error.abs().mean(), "rmse": float(np.sqrt((error ** 2).mean())), "bias": error.mean()})
    table = pd.DataFrame(rows)
    return table, {"mae_gap": float(table["mae"].max() - table["mae"].min()) if len(table) else float("nan")}
