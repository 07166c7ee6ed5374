"""Every encoder path on a small synthetic table with a learnable signal: fit on train, predict on
rows with unseen levels, integer-coded categoricals, dates, infinities and missing values."""

import pickle

import numpy as np
import pandas as pd
import pytest

from tasks.ml.data import encode_target, split_dataset, validate_dataset
from tasks.ml.estimators import get_family
from tasks.ml.preprocessing import (
    INFREQUENT,
    MISSING,
    CategoryLevels,
    DatetimeFeatures,
    PreprocessOptions,
    as_category_strings,
    build_preprocessor,
)
from tasks.ml.search import DataSettings, SearchSettings, best_pipeline, prepare_data, resample, run_study


def shop_table(n=600, seed=0):
    """city (string, 8 levels + rare ones), store (integer code), opened (date), spend (with NaN/inf)."""
    rng = np.random.default_rng(seed)
    city = rng.choice([f"city_{i}" for i in range(8)], size=n).astype(object)
    city[:6] = [f"rare_{i}" for i in range(6)]  # six levels seen once: grouped as infrequent
    city[rng.random(n) < 0.05] = None
    store = rng.integers(0, 5, size=n)
    spend = rng.normal(size=n)
    spend[rng.random(n) < 0.05] = np.nan
    spend[7] = np.inf
    opened = pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 900, size=n), unit="D")
    score = (np.isin(city, ["city_1", "city_2", "city_3"]).astype(float) + (store == 4) * 1.5
             + np.nan_to_num(spend, posinf=0) * 0.5 + rng.normal(0, 0.5, size=n))
    return pd.DataFrame({
        "city": city, "store": store, "spend": spend, "opened": opened,
        "churn": np.where(score > np.quantile(score, 0.7), "yes", "no"),
    })


@pytest.fixture(scope="module")
def shop():
    frame = shop_table()
    info = validate_dataset(frame, "churn", categorical_columns=["store"])
    return frame, info, split_dataset(frame, info, seed=0)


def unseen_rows(test: pd.DataFrame) -> pd.DataFrame:
    rows = test.head(6).copy()
    rows["city"] = ["atlantis", "city_1", None, "rare_0", "city_9", "city_2"]
    rows["store"] = [99, 4, 3, 2, 1, 0]  # 99: a store code never seen in training
    return rows


def test_the_synthetic_table_is_what_the_encoders_are_tested_on(shop):
    _, info, _ = shop
    assert info.categorical_features == ["city", "store"]
    assert info.numeric_features == ["spend"] and info.datetime_features == ["opened"]


@pytest.mark.parametrize("encoding", ["onehot", "ordinal", "target", "native"])
@pytest.mark.parametrize("family", ["logistic_regression", "random_forest", "lightgbm", "xgboost", "catboost"])
def test_every_encoding_and_family_fits_learns_and_takes_unseen_levels(shop, encoding, family):
    _, info, parts = shop
    spec = get_family(family)
    settings = DataSettings(options=PreprocessOptions(encoding=encoding))
    data = prepare_data(spec, info, parts["train"], parts["valid"], settings)
    native = (encoding == "native" and spec.native_categorical) or family == "catboost"  # its own, always
    assert isinstance(data.X_train, pd.DataFrame) == native
    study, kept = run_study(spec, data, SearchSettings(metric="roc_auc", direction="maximize", n_trials=2,
                                                       early_stopping_rounds=10))
    pipeline, _, _, _, valid_metrics = best_pipeline(spec, data, study, kept, SearchSettings(
        metric="roc_auc", direction="maximize", n_trials=2, early_stopping_rounds=10))
    assert valid_metrics["roc_auc"] > 0.7  # the signal in city, store and spend was learned
    restored = pickle.loads(pickle.dumps(pipeline))
    proba = restored.predict_proba(unseen_rows(parts["test"])[info.features])
    assert proba.shape == (6, 2) and np.all(np.isfinite(proba)) and np.allclose(proba.sum(axis=1), 1)
    # Column order of new data does not matter: columns are taken by name.
    shuffled = unseen_rows(parts["test"])[list(reversed(info.features))]
    assert np.allclose(restored.predict_proba(shuffled), proba)


def test_onehot_groups_rare_levels_and_caps_the_level_count(shop):
    _, info, parts = shop
    X = parts["train"][["city"]]
    pre = build_preprocessor([], ["city"], scale=False, options=PreprocessOptions(max_levels=4))
    out = pre.fit_transform(X)
    assert out.shape[1] == 4  # three kept levels + one infrequent column
    assert "city_infrequent_sklearn" in pre.get_feature_names_out()
    rows = pre.transform(pd.DataFrame({"city": ["atlantis", "rare_1"]}))
    assert np.all(rows.sum(axis=1) == 1)  # unseen and rare: both the infrequent column


def test_ordinal_codes_unseen_levels_as_minus_one():
    X = pd.DataFrame({"c": ["a"] * 10 + ["b"] * 10})
    pre = build_preprocessor([], ["c"], scale=False, options=PreprocessOptions(encoding="ordinal"))
    pre.fit(X)
    assert pre.transform(pd.DataFrame({"c": ["a", "b", "zzz"]})).ravel().tolist() == [0, 1, -1]


def test_target_encoding_is_cross_fitted_on_train():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"c": rng.choice(list("abcdefgh"), size=400)})
    y = (X["c"].isin(["a", "b"]) ^ (rng.random(400) < 0.1)).astype(int).to_numpy()
    pre = build_preprocessor([], ["c"], scale=False, options=PreprocessOptions(encoding="target"))
    crossed = pre.fit_transform(X, y).ravel()
    plain = pre.transform(X).ravel()
    # fit_transform encodes each row with folds that exclude it; transform uses the whole fit.
    assert not np.allclose(crossed, plain)
    assert plain[X["c"].eq("a").to_numpy()].mean() > 0.7 > 0.3 > plain[X["c"].eq("h").to_numpy()].mean()
    unseen = pre.transform(pd.DataFrame({"c": ["zzz"]})).ravel()[0]
    assert unseen == pytest.approx(y.mean(), abs=0.01)  # an unseen level gets the overall rate


def test_native_categories_keep_learned_levels_and_map_unseen_to_infrequent():
    X = pd.DataFrame({"c": ["a"] * 10 + ["b"] * 6 + ["c"] * 2 + [None] * 5})
    levels = CategoryLevels(max_levels=10, min_frequency=5).fit(X)
    assert levels.levels_["c"] == ["a", "b", MISSING, INFREQUENT]
    out = levels.transform(pd.DataFrame({"c": ["a", "c", "zzz", None]}))
    assert out["c"].tolist() == ["a", INFREQUENT, INFREQUENT, MISSING]
    assert list(out["c"].cat.categories) == levels.levels_["c"]  # same codes at fit and predict


def test_integer_codes_are_one_level_whether_read_as_int_or_float():
    as_int = as_category_strings(pd.DataFrame({"store": [1, 2, 3]}))
    as_float = as_category_strings(pd.DataFrame({"store": [1.0, 2.0, np.nan]}))
    assert as_int.ravel().tolist() == ["1", "2", "3"]
    assert as_float.ravel().tolist() == ["1", "2", MISSING]


def test_numbers_dates_infinities_and_missing_indicators():
    X = pd.DataFrame({
        "x": [1.0, np.nan, np.inf, 3.0],
        "when": pd.to_datetime(["2024-01-31 10:00", "2024-02-29", None, "2024-12-25"], format="ISO8601"),
    })
    options = PreprocessOptions(missing_indicators=True)
    pre = build_preprocessor(["x"], [], scale=False, datetime=["when"], options=options).fit(X)
    out = pre.transform(X)
    names = list(pre.get_feature_names_out())
    assert names[:2] == ["x", "missingindicator_x"]
    assert names[2:] == ["when_year", "when_month", "when_day", "when_day_of_week", "when_day_of_year",
                          "when_hour"]
    assert out[:, 0].tolist() == [1.0, 2.0, 2.0, 3.0]  # NaN and inf -> the median of 1 and 3
    assert out[:, 1].tolist() == [0, 1, 1, 0]
    assert out[0, 2:5].tolist() == [2024, 1, 31] and out[0, 7] == 10
    assert np.all(np.isfinite(out))  # the missing date was imputed too
    assert DatetimeFeatures().fit(X[["when"]].iloc[1:2]).parts_["when"][-1] == "day_of_year"  # no hour: all midnight


def test_a_date_part_never_repeats_a_column_the_table_already_has():
    """hotel_bookings has arrival_date and arrival_date_year: CatBoost refuses a table with one name twice."""
    X = pd.DataFrame({"arrival_date": pd.to_datetime(["2016-01-03", "2017-05-20", "2015-07-01"]),
                      "arrival_date_year": [2016, 2017, 2015], "hotel": ["a", "b", "a"]})
    pre = build_preprocessor(["arrival_date_year"], ["hotel"], scale=False, datetime=["arrival_date"],
                             native=True).fit(X)
    out = pre.transform(X)
    names = list(pre.get_feature_names_out())
    assert len(set(names)) == len(names) == out.shape[1] and list(out.columns) == names
    assert "arrival_date__year" in names and "arrival_date_month" in names
    assert out["arrival_date__year"].tolist() == out["arrival_date_year"].tolist() == [2016, 2017, 2015]


def test_resampling_changes_training_rows_only(shop):
    _, info, parts = shop
    spec = get_family("logistic_regression")
    plain = prepare_data(spec, info, parts["train"], parts["valid"])
    for method, grows in (("smote", True), ("random_over", True), ("random_under", False)):
        data = prepare_data(spec, info, parts["train"], parts["valid"], DataSettings(imbalance=method))
        assert (len(data.y_train) > len(plain.y_train)) == grows, method
        assert np.bincount(data.y_train)[0] == np.bincount(data.y_train)[1]  # balanced
        assert np.array_equal(data.X_valid, plain.X_valid) and np.array_equal(data.y_valid, plain.y_valid)
        assert data.n_train_rows == len(parts["train"])
    X, y = resample(np.zeros((10, 1)), np.array([0] * 8 + [1] * 2), "none", 0)
    assert len(y) == 10


def test_cross_validation_scores_trials_on_folds_of_train(shop):
    _, info, parts = shop
    spec = get_family("lightgbm")
    data = prepare_data(spec, info, parts["train"], parts["valid"], DataSettings(cv_folds=3))
    assert data.mode == "cv" and len(data.folds) == 3
    assert sum(len(f.y_valid) for f in data.folds) == len(parts["train"])  # every train row scored once
    assert np.array_equal(data.y_valid, encode_target(parts["valid"]["churn"], info.classes))
    settings = SearchSettings(metric="roc_auc", direction="maximize", n_trials=2, early_stopping_rounds=10)
    study, kept = run_study(spec, data, settings)
    assert "roc_auc_std" in study.best_trial.user_attrs and kept is None
    pipeline, fit_info, _, refitted, valid_metrics = best_pipeline(spec, data, study, kept, settings)
    assert refitted and valid_metrics["roc_auc"] != pytest.approx(study.best_value)  # scored on valid
    assert fit_info["best_iteration"] > 0


def test_time_ordered_folds_never_train_on_the_future():
    rng = np.random.default_rng(3)
    n = 300
    frame = pd.DataFrame({
        "when": pd.date_range("2023-01-01", periods=n, freq="D"), "x": rng.normal(size=n),
        "y": np.where(np.arange(n) % 4 == 0, "a", "b"),
    })
    info = validate_dataset(frame, "y", time_column="when")
    parts = split_dataset(frame, info, strategy="time", time_column="when")
    data = prepare_data(get_family("logistic_regression"), info, parts["train"], parts["valid"],
                        DataSettings(cv_folds=3, split_strategy="time"))
    sizes = [len(f.y_train) for f in data.folds]
    assert sizes == sorted(sizes) and len(set(sizes)) == 3  # expanding window: past rows only


def test_small_data_switches_to_repeated_stratified_cv_on_train_and_valid():
    from tasks.ml.data import load_table

    wine = load_table("builtin:wine")  # 178 rows, classes of 48 to 71 rows
    info = validate_dataset(wine, "cultivar")
    parts = split_dataset(wine, info, seed=0)
    spec = get_family("xgboost")
    data = prepare_data(spec, info, parts["train"], parts["valid"], DataSettings(small_data_rows=60, cv_repeats=2))
    assert data.mode == "repeated_cv" and len(data.folds) == 10 and data.X_valid is None
    assert len(data.y_train) == len(parts["train"]) + len(parts["valid"])
    assert "2x5-fold repeated stratified CV on train+valid" in data.description
    settings = SearchSettings(metric="f1", direction="maximize", n_trials=2, early_stopping_rounds=10)
    study, kept = run_study(spec, data, settings)
    pipeline, fit_info, _, _, valid_metrics = best_pipeline(spec, data, study, kept, settings)
    assert valid_metrics["f1"] == pytest.approx(study.best_value)  # the cross-validated score
    assert fit_info["best_iteration"] == study.best_trial.user_attrs["best_iteration"]
    assert set(pipeline.predict(parts["test"][info.features])) <= {0, 1, 2}
    holdout = prepare_data(spec, info, parts["train"], parts["valid"], DataSettings(small_data_rows=30))
    assert holdout.mode == "holdout"


def test_class_weight_method_reweights_every_family(shop):
    _, info, parts = shop
    for family in ("logistic_regression", "lightgbm", "xgboost"):
        spec = get_family(family)
        data = prepare_data(spec, info, parts["train"], parts["valid"])
        settings = SearchSettings(metric="recall", direction="maximize", n_trials=1, early_stopping_rounds=10,
                                  imbalance="class_weight")
        study, kept = run_study(spec, data, settings)
        assert "class_weight" not in study.best_params  # fixed, not searched
        model = kept.estimator
        if family == "xgboost":
            assert model.get_params()["scale_pos_weight"] == pytest.approx(
                (data.y_train == 0).sum() / (data.y_train == 1).sum())
        else:
            assert model.get_params()["class_weight"] == "balanced"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_median_imputer_matches_scikit_learns(dtype):
    """Same medians (empty columns included), same output, dtype and names, with or without indicators."""
    from sklearn.impute import SimpleImputer

    from tasks.ml.preprocessing import MedianImputer

    rng = np.random.default_rng(0)
    X = rng.normal(size=(1001, 6)).astype(dtype)
    X[rng.random(X.shape) < 0.2] = np.nan
    X[:, 3] = np.nan  # an empty column: keep_empty_features gives it 0
    X[:, 5] = rng.normal(size=1001)  # nothing missing: no indicator column
    frame = pd.DataFrame(X, columns=list("abcdef"))
    for indicators in (False, True):
        ours = MedianImputer(add_indicator=indicators).fit(frame)
        sklearn = SimpleImputer(strategy="median", keep_empty_features=True, add_indicator=indicators).fit(frame)
        assert ours.statistics_.dtype == sklearn.statistics_.dtype
        np.testing.assert_array_equal(ours.statistics_, sklearn.statistics_)
        out = ours.transform(frame)
        np.testing.assert_array_equal(out, sklearn.transform(frame))
        assert out.dtype == sklearn.transform(frame).dtype
        assert list(ours.get_feature_names_out()) == list(sklearn.get_feature_names_out())
    assert np.isnan(X).any()  # copy=True (the default) leaves its input alone
    filled = MedianImputer(copy=False).fit(X)
    out = filled.transform(X)
    assert np.shares_memory(out, X) and not np.isnan(X).any()  # copy=False fills a writeable array in place


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_columnwise_scaler_matches_scikit_learns(dtype):
    """Same statistics (missing values, a constant column, an empty one), same output and dtype."""
    from sklearn.preprocessing import StandardScaler

    from tasks.ml.preprocessing import ColumnwiseScaler

    rng = np.random.default_rng(1)
    X = (rng.normal(size=(2001, 5)) * [1, 1e3, 1e-3, 1, 1] + [0, 5, -2, 0, 0]).astype(dtype)
    X[:, 3] = 7.0  # constant: scale 1
    for missing in (False, True):
        if missing:
            X[rng.random(X.shape) < 0.1] = np.nan
            X[:, 4] = np.nan
        ours, sklearn = ColumnwiseScaler().fit(X), StandardScaler().fit(X)
        np.testing.assert_array_equal(ours.n_samples_seen_, sklearn.n_samples_seen_)
        for name in ("mean_", "var_", "scale_"):
            np.testing.assert_allclose(getattr(ours, name), getattr(sklearn, name), rtol=1e-9, equal_nan=True)
            assert getattr(ours, name).dtype == getattr(sklearn, name).dtype
        np.testing.assert_allclose(ours.transform(X), sklearn.transform(X), rtol=1e-5, atol=1e-6, equal_nan=True)
        assert ours.transform(X).dtype == dtype
    frame = pd.DataFrame(X[:, :3], columns=["a", "b", "c"])  # feature names are kept like scikit-learn's
    assert list(ColumnwiseScaler().fit(frame).feature_names_in_) == ["a", "b", "c"]


def test_numeric_encoding_is_row_major_and_infinities_are_imputed():
    """LightGBM and XGBoost take a row-major array without copying it at every fit."""
    from tasks.ml.preprocessing import build_preprocessor

    frame = pd.DataFrame({"a": np.arange(50, dtype=np.float32), "b": np.ones(50, dtype=np.float32)})
    frame.loc[3, "a"], frame.loc[4, "b"] = np.inf, np.nan
    encoded = build_preprocessor(["a", "b"], [], scale=False).fit_transform(frame)
    assert encoded.flags.c_contiguous and encoded.dtype == np.float32
    assert encoded[3, 0] == np.median(np.delete(np.arange(50), 3)) and encoded[4, 1] == 1.0
    assert not np.shares_memory(encoded, frame["a"].to_numpy())
