"""Optuna search spaces, one function per model family: (trial, weighted) -> estimator keyword arguments.
A space that also takes `n_rows` (the training rows) is given it, to keep its costly corners in check.

`weighted` (preprocessing.imbalance.method auto; never for a regression): the search also tries balanced
class weights, so that the validation metric decides whether reweighting helps. XGBoost's `class_weight` is
translated at fit time (scale_pos_weight for binary tasks, sample weights for multiclass).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna


def _class_weight(trial: optuna.Trial, weighted: bool, choices: tuple = (None, "balanced")) -> dict[str, Any]:
    return {"class_weight": trial.suggest_categorical("class_weight", list(choices))} if weighted else {}


def logistic_regression_space(trial: optuna.Trial, weighted: bool = True) -> dict[str, Any]:
    return {"C": trial.suggest_float("C", 1e-3, 1e2, log=True), **_class_weight(trial, weighted)}


def linear_space(trial: optuna.Trial, weighted: bool = False) -> dict[str, Any]:
    """Regression: ridge (an exact solve) or elastic net; their alphas are on different scales."""
    if trial.suggest_categorical("penalty", ["l2", "elasticnet"]) == "l2":
        return {"penalty": "l2", "alpha": trial.suggest_float("alpha", 1e-3, 1e3, log=True)}
    return {"penalty": "elasticnet", "alpha_en": trial.suggest_float("alpha_en", 1e-4, 1.0, log=True),
            "l1_ratio": trial.suggest_float("l1_ratio", 0.05, 1.0)}


# Training rows up to which a forest may grow 300 trees. Past them its trees draw 10k-row bootstraps
# (RF_ROWS_PER_TREE) and 150 trees score within 0.001 AUC of 300 on adult, bank_marketing and a 30k-row
# table at half the cost (bench/README.md, issue 31); past 200k rows the most trees fall further with the
# square root of the rows (100 from 450k): a trial's cost grows with rows x trees.
RF_FULL_TREES_ROWS = 10_000
RF_MANY_TREES = 150
RF_SQRT_FROM_ROWS = 50_000  # 300 trees x sqrt(this / rows): 150 at 200k rows


def rf_max_trees(n_rows: int | None) -> int:
    if not n_rows or n_rows <= RF_FULL_TREES_ROWS:
        return 300
    return max(100, min(RF_MANY_TREES, int(300 * (RF_SQRT_FROM_ROWS / n_rows) ** 0.5) // 50 * 50))


def random_forest_space(trial: optuna.Trial, weighted: bool = True, n_rows: int | None = None) -> dict[str, Any]:
    """`max_samples`: the share of the rows each tree's bootstrap draws, the cheapest lever on a forest's
    cost (a tree's time is about linear in its rows) that rarely costs accuracy."""
    return {
        "n_estimators": trial.suggest_int("n_estimators", 50, rf_max_trees(n_rows), step=50),
        "max_depth": trial.suggest_int("max_depth", 3, 20),
        "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 10),
        "max_features": trial.suggest_categorical("max_features", ["sqrt", "log2", 0.5]),
        "max_samples": trial.suggest_float("max_samples", 0.2, 1.0),
        **_class_weight(trial, weighted, (None, "balanced", "balanced_subsample")),
    }


def lightgbm_space(trial: optuna.Trial, weighted: bool = True) -> dict[str, Any]:
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 7, 127, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 5, 100, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
        **_class_weight(trial, weighted),
    }


def xgboost_space(trial: optuna.Trial, weighted: bool = True) -> dict[str, Any]:
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "max_depth": trial.suggest_int("max_depth", 2, 10),
        "min_child_weight": trial.suggest_float("min_child_weight", 0.5, 20.0, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
        **_class_weight(trial, weighted),
    }


def catboost_space(trial: optuna.Trial, weighted: bool = True) -> dict[str, Any]:
    """Symmetric trees: each level of depth doubles a tree's leaves and its cost, so depth stops at 8."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.3, log=True),
        "depth": trial.suggest_int("depth", 4, 8),
        "l2_leaf_reg": trial.suggest_float("l2_leaf_reg", 1.0, 30.0, log=True),
        "random_strength": trial.suggest_float("random_strength", 0.1, 10.0, log=True),
        "bagging_temperature": trial.suggest_float("bagging_temperature", 0.0, 1.0),
        **_class_weight(trial, weighted),
    }


SEARCH_SPACES: dict[str, Callable[..., dict[str, Any]]] = {
    "logistic_regression": logistic_regression_space,
    "linear": linear_space,
    "random_forest": random_forest_space,
    "lightgbm": lightgbm_space,
    "xgboost": xgboost_space,
    "catboost": catboost_space,
}
