"""Feature preprocessing: transformers over named column groups, fitted on training rows only.

numbers    inf -> missing, imputation (median by default), optional missing indicators, scaling
           for the families that need it
dates      expanded to calendar numbers (year, month, day, weekday, day of year, hour)
categories "__missing__" as a level of its own, then one of
           onehot   one column per level; rare levels and levels past the cap grouped as infrequent
           ordinal  one integer code per level, unseen levels -> -1
           target   scikit-learn's TargetEncoder: cross-fitted on train, so no row sees its own label
           native   a pandas category column (levels learned on train, unseen -> infrequent) that
                    LightGBM and XGBoost split on directly; other families fall back to onehot

Unseen levels at predict time never raise: each encoder maps them to a known code. Everything here
is a module-level class or function so that fitted pipelines pickle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.compose import ColumnTransformer
from sklearn.impute import MissingIndicator, SimpleImputer
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, OrdinalEncoder, StandardScaler, TargetEncoder
from sklearn.utils.validation import check_is_fitted, validate_data

from tasks.ml.values import as_datetimes

MISSING = "__missing__"
INFREQUENT = "__infrequent__"
ENCODINGS = ("onehot", "ordinal", "target", "native")


@dataclass(frozen=True)
class PreprocessOptions:
    """The preprocessing settings the pipeline needs (from `preprocessing` in the config)."""

    encoding: str = "onehot"
    max_levels: int = 50
    min_frequency: int = 5
    imputation: str = "median"
    missing_indicators: bool = False
    seed: int = 42

    @classmethod
    def from_config(cls, preprocessing: Any, seed: int = 42) -> PreprocessOptions:
        return cls(
            encoding=preprocessing.categorical.encoding,
            max_levels=preprocessing.categorical.max_levels,
            min_frequency=preprocessing.categorical.min_frequency,
            imputation=preprocessing.numeric.imputation,
            missing_indicators=preprocessing.numeric.missing_indicators,
            seed=seed,
        )


def _column_strings(series: pd.Series) -> np.ndarray:
    """One column -> object array of level names. Integer-valued numbers print without ".0", so a
    code read as 3 or 3.0 is the same level; missing -> "__missing__"."""
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        values = series.to_numpy(dtype="float64", na_value=np.nan)
        out = np.full(len(values), MISSING, dtype=object)
        finite = np.isfinite(values)
        if np.all(values[finite] == np.round(values[finite])):
            out[finite] = values[finite].astype(np.int64).astype(str)
        else:
            out[finite] = values[finite].astype(str)
        return out
    values = series.astype(object)
    return np.asarray(values.where(series.notna(), MISSING), dtype=object).astype(str).astype(object)


def as_category_strings(frame: pd.DataFrame) -> np.ndarray:
    """Categorical-ish columns -> a 2-D object array of strings, missing -> "__missing__"."""
    frame = pd.DataFrame(frame)
    if frame.shape[1] == 0:
        return np.empty((len(frame), 0), dtype=object)
    return np.column_stack([_column_strings(frame[c]) for c in frame.columns])


def _float_dtype(dtypes: Any) -> type:
    """float32 when every column already is (a float32 table stays half the size), else float64."""
    dtypes = list(dtypes)
    return np.float32 if dtypes and all(d == np.float32 for d in dtypes) else np.float64


def inf_to_nan(frame: Any) -> Any:
    """Infinite numbers -> NaN, so that imputation fills them like any missing value.

    Makes exactly one copy, which the steps after it (imputation, scaling) then work on in place.
    A DataFrame is copied a column at a time into a row-major array: the order LightGBM and XGBoost
    take without a copy of their own each fit (pandas' to_numpy gives column-major).
    """
    if isinstance(frame, pd.DataFrame):
        values = np.empty(frame.shape, dtype=_float_dtype(frame.dtypes))
        for j in range(frame.shape[1]):
            column = frame.iloc[:, j].to_numpy(dtype=values.dtype, na_value=np.nan)
            values[:, j] = column
            infinite = np.isinf(column)
            if infinite.any():
                values[infinite, j] = np.nan
        return pd.DataFrame(values, index=frame.index, columns=frame.columns, copy=False)
    array = np.asarray(frame)
    values = np.array(array, dtype=_float_dtype([array.dtype]), copy=True)
    values[np.isinf(values)] = np.nan
    return values


class CategoryLevels(TransformerMixin, BaseEstimator):
    """Native categories: each column -> a pandas category column with the levels kept at fit.

    Levels seen in fewer than `min_frequency` training rows, past the `max_levels` most frequent,
    or never seen in training all become "__infrequent__".
    """

    def __init__(self, max_levels: int = 50, min_frequency: int = 5) -> None:
        self.max_levels = max_levels
        self.min_frequency = min_frequency

    def fit(self, X: pd.DataFrame, y: Any = None) -> CategoryLevels:
        X = pd.DataFrame(X)
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        self.levels_: dict[str, list[str]] = {}
        for column in X.columns:
            counts = pd.Series(_column_strings(X[column])).value_counts()
            counts = counts[counts >= self.min_frequency]
            ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[: self.max_levels - 1]
            self.levels_[str(column)] = [level for level, _ in ranked] + [INFREQUENT]
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        X = pd.DataFrame(X)
        out = {}
        for column in self.feature_names_in_:
            levels = self.levels_[str(column)]
            strings = pd.Series(_column_strings(X[column]), index=X.index)
            strings = strings.where(strings.isin(levels), INFREQUENT)
            out[column] = pd.Categorical(strings, categories=levels)
        return pd.DataFrame(out, index=X.index)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.asarray(self.feature_names_in_, dtype=object)


class DatetimeFeatures(TransformerMixin, BaseEstimator):
    """Date/time columns -> year, month, day, weekday, day of year (and hour when times vary)."""

    PARTS = ("year", "month", "day", "day_of_week", "day_of_year")

    def __init__(self, reserved: tuple[str, ...] = ()) -> None:
        self.reserved = reserved  # the table's other column names, which the parts' names must not repeat

    @staticmethod
    def _as_datetime(series: pd.Series) -> pd.Series:
        return as_datetimes(series)[0]  # offsets -> UTC; unparseable -> missing (scoring refuses them first)

    def fit(self, X: pd.DataFrame, y: Any = None) -> DatetimeFeatures:
        X = pd.DataFrame(X)
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        self.parts_: dict[str, list[str]] = {}
        for column in X.columns:
            values = self._as_datetime(X[column])
            with_time = bool((values.dropna().dt.hour != 0).any())
            self.parts_[str(column)] = [*self.PARTS, *(["hour"] if with_time else [])]
        return self

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        X = pd.DataFrame(X)
        columns = []
        for column in self.feature_names_in_:
            values = self._as_datetime(X[column])
            for part in self.parts_[str(column)]:
                columns.append(getattr(values.dt, part).to_numpy(dtype="float64", na_value=np.nan))
        return np.column_stack(columns) if columns else np.empty((len(X), 0))

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """`<column>_<part>`; where the table already has that name (hotel_bookings' arrival_date_year beside
        arrival_date), `<column>__<part>`, so that named outputs (CatBoost's, pandas') stay unique."""
        taken = {str(c) for c in getattr(self, "reserved", ())}
        names = []
        for c in self.feature_names_in_:
            for part in self.parts_[str(c)]:
                name, sep = f"{c}_{part}", "_"
                while name in taken:
                    sep += "_"
                    name = f"{c}{sep}{part}"
                taken.add(name)
                names.append(name)
        return np.asarray(names, dtype=object)


FLOATS = (np.float64, np.float32)  # float32 stays float32; other numbers become float64


def _names_in(estimator: Any, input_features: Any) -> np.ndarray:
    """scikit-learn's input-name convention: the names given, those seen at fit, or x0, x1..."""
    if input_features is not None:
        return np.asarray(input_features, dtype=object)
    if hasattr(estimator, "feature_names_in_"):
        return np.asarray(estimator.feature_names_in_, dtype=object)
    return np.asarray([f"x{i}" for i in range(estimator.n_features_in_)], dtype=object)


class MedianImputer(TransformerMixin, BaseEstimator):
    """Missing values -> the column's training median (0 for a column with none), taken a column at
    a time: what SimpleImputer(strategy="median", keep_empty_features=True) gives, without sorting a
    masked copy of every training row at once.

    copy=False fills the array it is handed in place (a read-only view, such as a DataFrame's, is
    copied first). Missing-value indicator columns, when asked for, follow the imputed ones.
    """

    missing_values = np.nan  # what is imputed (for converters that read SimpleImputer's attributes)

    def __init__(self, add_indicator: bool = False, copy: bool = True) -> None:
        self.add_indicator = add_indicator
        self.copy = copy

    def fit(self, X: Any, y: Any = None) -> MedianImputer:
        X = validate_data(self, X, dtype=FLOATS, ensure_all_finite="allow-nan")
        self.statistics_ = np.empty(X.shape[1], dtype=np.result_type(X.dtype, np.float32))
        for j in range(X.shape[1]):
            present = X[:, j][~np.isnan(X[:, j])]
            self.statistics_[j] = np.median(present) if present.size else 0
        self.indicator_ = MissingIndicator(error_on_new=False).fit(X) if self.add_indicator else None
        return self

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=FLOATS, ensure_all_finite="allow-nan", copy=self.copy,
                          force_writeable=True)
        indicators = self.indicator_.transform(X) if self.indicator_ is not None else None
        for j in range(X.shape[1]):
            column = X[:, j]  # a view: filled in place
            column[np.isnan(column)] = self.statistics_[j]
        return X if indicators is None else np.hstack((X, indicators))

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self)
        names = _names_in(self, input_features)
        if self.indicator_ is None:
            return names
        return np.concatenate([names, self.indicator_.get_feature_names_out(names)])


class ColumnwiseScaler(StandardScaler):
    """StandardScaler whose mean and variance are taken one column at a time, in float64.

    scikit-learn's fit works on the whole array at once in float64 (X - mean, its square, a NaN mask
    as floats); column by column it is one column's copy. Same statistics (tested against
    StandardScaler); sparse input or sample weights go to scikit-learn's own fit.
    """

    def fit(self, X, y=None, sample_weight=None):  # noqa: ANN001, ANN201
        from scipy import sparse

        if sample_weight is not None or sparse.issparse(X):
            return super().fit(X, y, sample_weight)
        X = validate_data(self, X, dtype=FLOATS, ensure_all_finite="allow-nan", reset=True)
        counts = np.empty(X.shape[1], dtype=np.int64)
        means = np.empty(X.shape[1], dtype=np.float64)
        variances = np.empty(X.shape[1], dtype=np.float64)
        for j in range(X.shape[1]):
            column = X[:, j].astype(np.float64)
            column = column[~np.isnan(column)]
            counts[j], means[j] = column.size, column.mean() if column.size else np.nan
            variances[j] = np.mean((column - means[j]) ** 2) if column.size else np.nan
        self.n_samples_seen_ = counts if (counts != X.shape[0]).any() else int(X.shape[0])
        self.mean_ = means if self.with_mean else None
        self.var_ = variances if self.with_std else None
        self.scale_ = None
        if self.with_std:
            # scikit-learn's test for a constant column (variance within float64 rounding): scale 1
            eps = np.finfo(np.float64).eps
            constant = variances <= counts * eps * variances + (counts * means * eps) ** 2
            self.scale_ = np.where(constant, 1.0, np.sqrt(variances))
        return self


class ColumnGroups(TransformerMixin, BaseEstimator):
    """Named column groups, each through its own transformer, side by side: scikit-learn's
    ColumnTransformer as gauntlet uses it (columns by name, the rest dropped, names not prefixed).

    A lone dense block is handed over as it is, where np.hstack would copy it: a numeric table's
    whole encoded array twice in memory at the peak. Every block is a fresh array (the numeric steps
    start with inf_to_nan's copy), so it shares nothing with the input.
    """

    def __init__(self, transformers: list[tuple[str, Any, list[str]]]) -> None:
        self.transformers = transformers

    def fit(self, X: pd.DataFrame, y: Any = None) -> ColumnGroups:
        self.fit_transform(X, y)
        return self

    def fit_transform(self, X: pd.DataFrame, y: Any = None) -> Any:
        self._check_frame(X)
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        self.transformers_, blocks = [], []
        for name, transformer, columns in self.transformers:
            fitted = clone(transformer)
            blocks.append(fitted.fit_transform(X[list(columns)], y))
            self.transformers_.append((name, fitted, list(columns)))
        return self._stack(blocks)

    def transform(self, X: pd.DataFrame) -> Any:
        check_is_fitted(self)
        self._check_frame(X)
        missing = {c for _, _, columns in self.transformers_ for c in columns} - set(X.columns)
        if missing:
            raise ValueError(f"columns are missing: {missing}")
        return self._stack([transformer.transform(X[columns]) for _, transformer, columns in self.transformers_])

    @staticmethod
    def _check_frame(X: Any) -> None:
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"columns are taken by name: expected a pandas DataFrame, got {type(X).__name__}")

    @staticmethod
    def _stack(blocks: list[Any]) -> Any:
        if len(blocks) == 1 and isinstance(blocks[0], np.ndarray):
            return blocks[0]
        if all(isinstance(block, pd.DataFrame) for block in blocks):
            return pd.concat(blocks, axis=1)  # set_output(transform="pandas"): encoding native
        return np.hstack(blocks)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self)
        names = [t.get_feature_names_out(np.asarray(c, dtype=object)) for _, t, c in self.transformers_]
        return np.concatenate(names) if names else np.empty(0, dtype=object)

    def set_output(self, *, transform: str | None = None) -> ColumnGroups:
        super().set_output(transform=transform)
        for _, transformer, _ in [*self.transformers, *getattr(self, "transformers_", [])]:
            transformer.set_output(transform=transform)
        return self


def _imputer(options: PreprocessOptions, indicators: bool) -> Any:
    # copy=False: the step before it (inf_to_nan, DatetimeFeatures) always hands over a fresh array.
    if options.imputation == "median":
        return MedianImputer(add_indicator=indicators, copy=False)
    if options.imputation == "zero":
        return SimpleImputer(strategy="constant", fill_value=0.0, add_indicator=indicators,
                             keep_empty_features=True, copy=False)
    return SimpleImputer(strategy=options.imputation, add_indicator=indicators, keep_empty_features=True,
                         copy=False)


def _category_encoder(options: PreprocessOptions, native: bool) -> list[tuple[str, Any]]:
    if native:
        return [("levels", CategoryLevels(options.max_levels, options.min_frequency))]
    steps: list[tuple[str, Any]] = [
        ("as_strings", FunctionTransformer(as_category_strings, feature_names_out="one-to-one"))
    ]
    if options.encoding == "ordinal":
        steps.append(("ordinal", OrdinalEncoder(
            handle_unknown="use_encoded_value", unknown_value=-1, min_frequency=options.min_frequency,
            max_categories=options.max_levels, dtype=np.float32,
        )))
    elif options.encoding == "target":
        cv = StratifiedKFold(5, shuffle=True, random_state=options.seed)  # cross-fitting folds
        steps.append(("target", TargetEncoder(cv=cv)))
    else:  # onehot, and the fallback of native for families without native categories
        steps.append(("one_hot", OneHotEncoder(
            handle_unknown="infrequent_if_exist", min_frequency=options.min_frequency,
            max_categories=options.max_levels, sparse_output=False, dtype=np.float32,
        )))
    return steps


def build_preprocessor(
    numeric: list[str],
    categorical: list[str],
    *,
    scale: bool,
    datetime: list[str] | None = None,
    options: PreprocessOptions | None = None,
    native: bool = False,
) -> ColumnGroups:
    """Transformers over named column groups, so column order in new data does not matter.

    `native`: the family takes pandas category columns itself (LightGBM and XGBoost when the config asks
    for it, CatBoost always: FamilySpec.takes_categories); the output is then a DataFrame, else a float array.
    """
    options = options or PreprocessOptions()
    numeric_steps: list[tuple[str, Any]] = [
        ("finite", FunctionTransformer(inf_to_nan, feature_names_out="one-to-one")),
        ("impute", _imputer(options, options.missing_indicators)),
    ]
    if scale:
        numeric_steps.append(("scale", ColumnwiseScaler(copy=False)))  # on the imputer's output, in place
    transformers = []
    if numeric:
        transformers.append(("numeric", Pipeline(numeric_steps), numeric))
    if datetime:
        expand = DatetimeFeatures(reserved=tuple(map(str, [*numeric, *categorical])))
        date_steps: list[tuple[str, Any]] = [("expand", expand), ("impute", _imputer(options, False))]
        if scale:
            date_steps.append(("scale", StandardScaler()))
        transformers.append(("datetime", Pipeline(date_steps), datetime))
    if categorical:
        steps = _category_encoder(options, native)
        if scale and options.encoding in ("ordinal", "target"):
            steps.append(("scale", StandardScaler()))
        transformers.append(("categorical", Pipeline(steps), categorical))
    transformer = ColumnGroups(transformers)
    if native:
        transformer.set_output(transform="pandas")
    return transformer


# The names models registered before MedianImputer and ColumnGroups were pickled with: those models
# still load and predict (only their fit-time memory savings are gone, and they are never refitted).
class ColumnwiseImputer(SimpleImputer):
    """Unpickling name of imputers in models registered before MedianImputer."""


class Columns(ColumnTransformer):
    """Unpickling name of column transformers in models registered before ColumnGroups."""
