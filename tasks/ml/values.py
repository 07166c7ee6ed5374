"""One reading of a cell for training, batch prediction and REST (docs/failure-behaviour.md: what input is accepted).

A value reaches a model from a CSV cell, a Parquet column or a JSON field. Whatever its way in, it is
read here, driven by the column's training kind and dtype: missing-value tokens (`data.na_values`,
compared after stripping spaces), numbers sent as text, booleans sent as text, and date-times with UTC
offsets, which become UTC (a naive date-time stays as written).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

# pandas' default missing-value tokens, fixed here so that what a model was trained with does not
# change with the pandas version (documented in docs/configuration.md: data.na_values).
DEFAULT_NA_VALUES: tuple[str, ...] = (
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A",
    "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
)
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def is_text(series: pd.Series) -> bool:
    return pd.api.types.is_object_dtype(series.dtype) or pd.api.types.is_string_dtype(series.dtype)


def tokens_of(na_values: Iterable[str] | None) -> frozenset[str]:
    """The missing-value tokens, stripped as cells are ("" always counts: an empty cell)."""
    return frozenset({"", *(str(t).strip() for t in (DEFAULT_NA_VALUES if na_values is None else na_values))})


def missing_text(series: pd.Series, tokens: frozenset[str]) -> np.ndarray:
    """Where a text column holds a missing-value token (after stripping spaces); missing cells excluded."""
    try:
        stripped = series.str.strip()
    except AttributeError:  # no text in it
        return np.zeros(len(series), dtype=bool)
    return stripped.isin(tokens).to_numpy(dtype=bool, na_value=False) & series.notna().to_numpy()


def tokens_found(series: pd.Series, tokens: frozenset[str]) -> dict[str, int]:
    """How often each non-empty token occurs in a text column, as written (for the training warning)."""
    if not is_text(series):
        return {}
    return {str(k): int(v) for k, v in series[missing_text(series, tokens - {""})].value_counts().items()}


def as_categories(series: pd.Series, tokens: frozenset[str], dtype: str = "") -> pd.Series:
    """A categorical column: tokens -> missing; text in a column trained as numbers or booleans is read as
    those, so "3" is the level 3 and "true" the level True. Text that is neither stays as it is (a level
    the model has not seen)."""
    if not is_text(series):
        return series
    trained = _dtype(dtype)
    if trained is not None and trained.kind in "biuf":
        values, bad = as_booleans(series, tokens) if trained.kind == "b" else as_numbers(series, tokens)
        if not bad.any():
            return values
        if trained.kind != "b":  # numbers as the pipeline names their levels: 3.0 -> "3"
            values = values.map(lambda v: v if pd.isna(v) else (str(int(v)) if float(v).is_integer() else str(v)))
        return values.astype(object).where(~bad, series.astype(object))
    missing = missing_text(series, tokens)
    if not missing.any():
        return series
    return series.astype(object).where(~missing, None)


def read_text_column(series: pd.Series, tokens: frozenset[str]) -> pd.Series:
    """A text column as training reads it: tokens -> missing; a column left holding only numbers is numeric,
    as the CSV reader makes it when its tokens are written exactly (" NA " is a token too)."""
    missing = missing_text(series, tokens)
    if not missing.any():
        return series
    numbers, bad = as_numbers(series, tokens)
    if not bad.any() and numbers.notna().any():
        return numbers
    return series.astype(object).where(~missing, None)


def as_numbers(series: pd.Series, tokens: frozenset[str]) -> tuple[pd.Series, np.ndarray]:
    """Numbers, text included ("3.5", " 7 "); tokens -> NaN. Returns (values, cells that are not numbers)."""
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        return series, np.zeros(len(series), dtype=bool)
    text, given = _given(series, tokens)
    converted = pd.to_numeric(text, errors="coerce")
    return converted, given & converted.isna().to_numpy()


def as_booleans(series: pd.Series, tokens: frozenset[str]) -> tuple[pd.Series, np.ndarray]:
    """Booleans, text included (true/false, 1/0, yes/no in any case); tokens -> missing."""
    if pd.api.types.is_bool_dtype(series.dtype):
        return series, np.zeros(len(series), dtype=bool)
    values = series.to_numpy(dtype=object)
    out = np.empty(len(values), dtype=object)
    bad = np.zeros(len(values), dtype=bool)
    for i, value in enumerate(values):
        if isinstance(value, bool | np.bool_):
            out[i] = bool(value)
        elif isinstance(value, str):
            word = value.strip()
            if word in tokens:
                out[i] = None
            elif word.lower() in _TRUE:
                out[i] = True
            elif word.lower() in _FALSE:
                out[i] = False
            else:
                bad[i] = True
        elif value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
            out[i] = None
        elif isinstance(value, int | float | np.number) and value in (0, 1):
            out[i] = bool(value)
        else:
            bad[i] = True
    result = pd.Series(out, index=series.index, name=series.name, dtype=object)
    return (result.astype(bool) if not bad.any() and result.notna().all() else result), bad


def as_datetimes(series: pd.Series, tokens: frozenset[str] = frozenset({""})) -> tuple[pd.Series, np.ndarray]:
    """Date-times without a time zone: values with a UTC offset or zone become UTC, naive ones stay as
    written; offsets may differ from row to row (a DST change). Returns (values, cells that are not dates)."""
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        values = series
        bad = np.zeros(len(series), dtype=bool)
    else:
        text, given = _given(series, tokens)
        values = pd.to_datetime(text, errors="coerce", format="mixed", utc=True)
        bad = given & values.isna().to_numpy()
    if getattr(values.dt, "tz", None) is not None:
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    return values, bad


def _given(series: pd.Series, tokens: frozenset[str]) -> tuple[pd.Series, np.ndarray]:
    """(values with text stripped and tokens made missing, where a value was given)."""
    text = series.astype(object).map(lambda v: v.strip() if isinstance(v, str) else v)
    given = text.notna().to_numpy() & ~missing_text(text, tokens)
    return text.where(given, None), given


def _dtype(dtype: str) -> np.dtype | None:
    try:
        return np.dtype(dtype) if dtype else None
    except TypeError:  # pandas extension dtypes: "boolean", "Int64", "Float32", "str"...
        lowered = dtype.lower()
        if lowered == "boolean":
            return np.dtype(bool)
        if lowered.startswith(("int", "uint")):
            return np.dtype("int64")
        if lowered.startswith("float"):
            return np.dtype("float64")
        return None
