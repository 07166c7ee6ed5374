"""Regression's pure parts: task detection, missing targets, the split, the target transform, conformal
intervals, residual summaries and the bootstrap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from config.errors import DataError
from tasks.ml.data import load_builtin, split_positions, validate_dataset
from tasks.ml.regression import (
    RegressionModel,
    TargetTransformed,
    bootstrap_regression_intervals,
    choose_target_transform,
    conformal_half_width,
    coverage_of,
    residual_summary,
)


@pytest.fixture(scope="module")
def diabetes():
    return load_builtin("diabetes")


def test_auto_detects_a_regression_and_describes_its_target(diabetes):
    info = validate_dataset(diabetes, "target")
    assert info.task == "regression" and info.is_regression and info.classes == []
    assert info.features == ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
    assert info.target_summary["min"] == 25 and info.target_summary["max"] == 346
    assert info.class_counts == {}


def test_an_integer_target_with_few_values_stays_a_classification():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=600), "rating": rng.integers(1, 6, 600)})
    info = validate_dataset(frame, "rating")
    assert info.task == "multiclass" and info.classes == [1, 2, 3, 4, 5]
    assert validate_dataset(frame, "rating", task="regression").task == "regression"


def test_a_float_target_forced_to_binary_gets_one_line_naming_regression(diabetes):
    frame = diabetes.assign(target=diabetes["target"] / 3.0)
    with pytest.raises(DataError) as err:
        validate_dataset(frame, "target", task="binary")
    message = str(err.value)
    assert "\n" not in message and "data.task is binary" in message and "set data.task: regression" in message
    assert "fractional numbers" in message


def test_regression_refuses_text_constants_and_copies_of_the_target(diabetes):
    with pytest.raises(DataError, match="values, not numbers; choose a numeric target"):
        validate_dataset(diabetes.assign(target="x" + diabetes["target"].astype(str)), "target", task="regression")
    with pytest.raises(DataError, match="is constant"):
        validate_dataset(diabetes.assign(target=5.0), "target", task="regression")
    with pytest.raises(DataError, match="feature 'leak' is a copy of the target"):
        validate_dataset(diabetes.assign(leak=diabetes["target"]), "target")


def test_rows_without_a_target_are_counted_and_split_nowhere(diabetes):
    frame = diabetes.copy()
    frame.loc[frame.index[::10], "target"] = np.nan
    info = validate_dataset(frame, "target")
    assert info.task == "regression" and info.n_rows_missing_target == 45
    parts = split_positions(frame, info, seed=0)
    placed = np.concatenate(list(parts.values()))
    assert len(placed) == len(frame) - 45 and frame["target"].take(placed).notna().all()
    with pytest.raises(DataError, match="only 20 rows of 'target' have a value; a regression needs at least 30"):
        validate_dataset(frame.assign(target=[1.5] * 20 + [np.nan] * (len(frame) - 20)), "target",
                         task="regression")


def test_the_stratified_split_spreads_the_target_evenly(diabetes):
    info = validate_dataset(diabetes, "target")
    parts = split_positions(diabetes, info, strategy="stratified", seed=3)
    medians = [diabetes["target"].take(rows).median() for rows in parts.values()]
    assert max(medians) - min(medians) < 0.1 * diabetes["target"].median()  # deciles in every part
    small = diabetes.head(30)  # the fewest rows a regression takes: fewer bins than 10
    sizes = {k: len(v) for k, v in split_positions(small, validate_dataset(small, "target"), seed=0).items()}
    assert sizes == {"train": 18, "valid": 6, "test": 6}


def test_log1p_is_chosen_for_a_skewed_price_and_not_for_a_symmetric_target():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(3000, 4))
    price = np.exp(2 + X[:, 0] + 0.5 * X[:, 1] ** 2 + rng.normal(0, 0.4, 3000))
    chosen, why = choose_target_transform("auto", X[:2000], price[:2000], X[2000:], price[2000:])
    assert chosen == "log1p" and "skew" in why
    symmetric = X[:, 0] * 3 + rng.normal(size=3000)
    assert choose_target_transform("auto", X[:2000], symmetric[:2000], X[2000:], symmetric[2000:])[0] == "none"
    with pytest.raises(ValueError, match="log1p needs target values above -1"):
        choose_target_transform("log1p", X[:2000], symmetric[:2000], X[2000:], symmetric[2000:])


def test_a_transformed_regressor_predicts_on_the_original_scale():
    from sklearn.linear_model import LinearRegression

    X = np.arange(1, 50, dtype=float).reshape(-1, 1)
    y = np.expm1(0.1 * X[:, 0])  # log1p(y) is linear in X
    model = TargetTransformed(LinearRegression(), "log1p").fit(X, y)
    assert np.allclose(model.predict(X), y)


def test_split_conformal_intervals_cover_new_rows_at_the_asked_rate():
    rng = np.random.default_rng(2)
    y = rng.normal(size=20_000)
    pred = y + rng.standard_t(4, size=y.size)  # heavy-tailed errors
    width = conformal_half_width(y[:2000], pred[:2000], 0.9)
    assert coverage_of(y[2000:], pred[2000:] - width, pred[2000:] + width) == pytest.approx(0.9, abs=0.02)
    assert conformal_half_width(np.zeros(9), np.arange(9.0), 0.9) == 8.0  # ceil(10 x 0.9) = the 9th smallest


def test_regression_model_gives_intervals_around_its_predictions():
    class Doubler:
        def predict(self, X):
            return 2 * np.asarray(X["x"], dtype=float)

    X = pd.DataFrame({"x": np.arange(100.0)})
    model = RegressionModel(Doubler(), coverage=0.8).fit_interval(X, 2 * X["x"].to_numpy() + np.linspace(-5, 5, 100))
    frame = model.predict_interval(X.head(3))
    assert list(frame.columns) == ["prediction", "prediction_lower", "prediction_upper"]
    assert np.allclose(frame["prediction_upper"] - frame["prediction"], model.half_width)
    assert 3.5 < model.half_width < 4.5 and model.calibration_rows == 100


def test_residual_summary_and_bootstrap_intervals():
    rng = np.random.default_rng(3)
    y = rng.uniform(10, 20, 500)
    pred = y + rng.normal(0, 1, 500)
    summary = residual_summary(y, pred)
    assert list(summary["part"])[:2] == ["all rows", "prediction decile 1"] and len(summary) == 11
    assert summary["rows"].iloc[1:].sum() == 500
    intervals = bootstrap_regression_intervals(y, pred, n_resamples=100, seed=0)
    assert {"rmse", "mae", "r2", "medae", "mape"} <= set(intervals)
    low, high = intervals["rmse"]
    assert low < 1.0 < high


@pytest.mark.parametrize("family, transform", [("lightgbm", "log1p"), ("xgboost", "none")])
def test_tree_shap_explains_a_regressor_fitted_on_either_scale(diabetes, family, transform):
    from sklearn.pipeline import Pipeline

    from tasks.ml.data import split_dataset
    from tasks.ml.estimators import get_family
    from tasks.ml.evaluation import permutation_importances, tree_shap_values
    from tasks.ml.search import DataSettings, SearchSettings, fit_estimator, prepare_data

    info = validate_dataset(diabetes, "target")
    parts = split_dataset(diabetes, info, seed=0)
    spec = get_family(family)
    data = prepare_data(spec, info, parts["train"], parts["valid"], DataSettings(target_transform=transform))
    estimator, _ = fit_estimator(spec, data, {}, SearchSettings(metric="r2", direction="maximize", n_trials=1))
    model = TargetTransformed(estimator, transform) if transform != "none" else estimator
    pipeline = Pipeline([("preprocess", data.preprocessor), ("model", model)])
    values, names, encoded = tree_shap_values(pipeline, parts["valid"][info.features])
    assert values.shape == (len(parts["valid"]), len(info.features)) == encoded.shape
    assert names[int(np.abs(values).mean(axis=0).argmax())] in ("bmi", "s5")  # the known strongest inputs
    importance = permutation_importances(pipeline, parts["valid"][info.features], parts["valid"]["target"].to_numpy(),
                                         metric="rmse", n_classes=0, beta=0.5, average="macro", threshold=None)
    assert importance["feature"].iloc[0] in ("bmi", "s5") and importance["importance_mean"].iloc[0] > 0
