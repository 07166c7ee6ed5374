"""Loading, validating and splitting a table. Pure pandas/sklearn: no Prefect, no Comet."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from config.errors import DataError
from tasks.ml import values as cells

log = logging.getLogger("gauntlet.data")

BUILTIN_PREFIX = "builtin:"
BUILTINS = ("breast_cancer", "wine", "diabetes")


@dataclass(frozen=True)
class DatasetInfo:
    """What validation learned about a table: the task, the classes and the feature columns."""

    target: str
    task: str  # "binary" | "multiclass" | "regression"
    classes: list[Any]  # original labels; index = encoded label. Binary: [negative, positive]. Regression: []
    features: list[str]
    numeric_features: list[str]
    categorical_features: list[str]
    dropped_columns: list[str] = field(default_factory=list)
    n_rows: int = 0
    n_rows_missing_target: int = 0
    datetime_features: list[str] = field(default_factory=list)  # expanded to calendar numbers
    class_counts: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # what validation changed, in plain words
    target_summary: dict[str, float] = field(default_factory=dict)  # regression: min, median, mean, max, skew
    target_transform: str = "none"  # regression: none | log1p, what the models fit (predictions: original scale)

    @property
    def is_regression(self) -> bool:
        return self.task == "regression"

    @property
    def minority_share(self) -> float:
        total = sum(self.class_counts.values())
        return min(self.class_counts.values()) / total if total else 1.0

    @property
    def minority_class(self) -> str | None:
        return min(self.class_counts, key=self.class_counts.get) if self.class_counts else None

    @property
    def positive_class(self) -> Any:
        return self.classes[1] if self.task == "binary" else None


# ---------------------------------------------------------------------------------- loading


def load_builtin(name: str) -> pd.DataFrame:
    from sklearn import datasets

    if name == "breast_cancer":
        bunch = datasets.load_breast_cancer(as_frame=True)
        frame = bunch.frame.rename(columns={"target": "diagnosis"})
        frame["diagnosis"] = np.where(bunch.target == 0, "malignant", "benign")
        return frame
    if name == "wine":
        bunch = datasets.load_wine(as_frame=True)
        frame = bunch.frame.rename(columns={"target": "cultivar"})
        frame["cultivar"] = "class_" + bunch.target.astype(str)
        return frame
    if name == "diabetes":  # regression: disease progression a year after baseline (target), 442 rows
        return datasets.load_diabetes(as_frame=True, scaled=False).frame
    raise DataError(
        f"unknown bundled dataset {name!r}; data.path accepts "
        + ", ".join(BUILTIN_PREFIX + b for b in BUILTINS)
        + " or a CSV/Parquet path"
    )


def read_parquet(path: str | Path) -> pd.DataFrame:
    """A Parquet file as a DataFrame, read a column at a time so that the peak is the frame plus one column.

    A stored pandas index is not restored: rows are numbered 0..n-1.
    """
    import pyarrow.parquet as pq

    file = pq.ParquetFile(path, memory_map=False, pre_buffer=False, buffer_size=1 << 20)
    schema = file.schema_arrow
    index = {c for c in (schema.pandas_metadata or {}).get("index_columns", []) if isinstance(c, str)}
    names = [name for name in schema.names if name not in index]
    if len(set(names)) != len(names):  # repeated names: read whole, for validation to name them
        return file.read().to_pandas().reset_index(drop=True)
    return pd.DataFrame(
        {name: file.read(columns=[name]).to_pandas(self_destruct=True, split_blocks=True)[name] for name in names},
        copy=False,
    )


# Below this, freeing is not worth a full GC, which holds the GIL while every family's thread waits.
RELEASE_ABOVE_BYTES = 16 * 2**20


def release_memory(freed_bytes: int | None = None) -> None:
    """Return freed memory to the OS: pyarrow's pool, and malloc's with the system pool (gauntlet/runtime.py).

    `freed_bytes`: the size of what was dropped; below RELEASE_ABOVE_BYTES nothing is done.
    """
    if freed_bytes is not None and freed_bytes < RELEASE_ABOVE_BYTES:
        return
    import gc

    import pyarrow as pa

    gc.collect()
    pa.default_memory_pool().release_unused()


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def table_columns(path: str | Path, *, what: str = "data file",
                  fix: str = "set data.path to an existing CSV or Parquet file") -> tuple[list[str], int | None]:
    """A table file's column names and, for Parquet, its row count (from the footer), without reading rows.

    Raises DataError naming the file, the problem and `fix` for a missing, empty, unreadable or
    unsupported file, or repeated column names (CSV headers are read raw: pandas would rename them).
    """
    file = Path(path)
    if not file.is_file():
        raise DataError(f"{what} not found: {path}; {fix}")
    if file.stat().st_size == 0:
        raise DataError(f"{what} {path} is empty (0 bytes: no header, no rows); write the table again, or {fix}")
    name = file.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            import pyarrow.parquet as pq

            parquet = pq.ParquetFile(file)
            schema = parquet.schema_arrow
            index = {c for c in (schema.pandas_metadata or {}).get("index_columns", []) if isinstance(c, str)}
            columns, rows = [str(n) for n in schema.names if n not in index], parquet.metadata.num_rows
        elif name.endswith((".csv", ".csv.gz", ".csv.zip", ".tsv")):
            header = pd.read_csv(file, sep="\t" if ".tsv" in name else ",", header=None, nrows=2, dtype=str,
                                 keep_default_na=False)
            columns, rows = [str(c) for c in header.iloc[0]], (0 if len(header) < 2 else None)
        else:
            raise DataError(f"unsupported file type {file.suffix!r} for {path}; use .csv, .csv.gz, .tsv or .parquet")
    except DataError:
        raise
    except pd.errors.EmptyDataError:
        raise DataError(f"{what} {path} has no header row (empty); {fix}") from None
    except UnicodeDecodeError as exc:
        raise DataError(not_utf8(path, what, exc.object[exc.start])) from None
    except Exception as exc:  # pyarrow/pandas raise many types for unreadable files
        raise DataError(f"cannot read {what} {path}: {_first_line(exc)}; check that the file is a valid "
                        "CSV or Parquet table") from None
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise DataError(f"duplicate column names {repeated} in {path}; rename them so every column is unique")
    return columns, rows


def load_table(path: str, na_values: list[str] | None = None) -> pd.DataFrame:
    """Read a CSV or Parquet file (pyarrow engine), or a bundled demo table `builtin:NAME`.

    Cells equal to a token of `na_values` (default values.DEFAULT_NA_VALUES; compared after stripping
    spaces) are missing, in text columns of either format: prediction reads them the same way. The tokens
    found in text columns, as written, are in `frame.attrs["na_tokens"]` ({column: {token: count}}).
    """
    if path.startswith(BUILTIN_PREFIX):
        return load_builtin(path[len(BUILTIN_PREFIX) :])
    tokens = cells.tokens_of(na_values)
    file = Path(path)
    columns, _ = table_columns(file)
    name = file.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            frame = read_parquet(file)
        else:
            frame = pd.read_csv(file, sep="\t" if ".tsv" in name else ",", engine="pyarrow",
                                keep_default_na=False, na_values=sorted(tokens))
    except Exception as exc:  # pyarrow/pandas raise many types for unreadable files
        message = _first_line(exc)
        if "Expected" in message and "columns" in message:  # a ragged row
            raise DataError(f"cannot read {path}: {message}; every row needs the header's {len(columns)} "
                            "fields: fix that row (a stray separator, or quote fields that hold one)") from None
        raise DataError(f"cannot read {path}: {message}; check that the file is a valid table") from None
    for column in [c for c in frame.columns if frame[c].dtype == object]:
        head = frame[column].dropna().head(100)  # pyarrow reads a column holding text that is not UTF-8 as bytes
        if any(isinstance(v, bytes) for v in head):
            bad = next((b for v in frame[column] if isinstance(v, bytes) for b in v if b >= 0x80), 0x80)
            raise DataError(not_utf8(path, "data file", bad, column))
    found = _tokens_as_written(file, frame, tokens, name.endswith((".parquet", ".pq")))
    for column in frame.columns:  # tokens with spaces around them, and Parquet text cells
        if cells.is_text(frame[column]):
            frame[column] = cells.read_text_column(frame[column], tokens)
    frame.attrs["na_tokens"] = {c: n for c, n in found.items() if cells.is_text(frame[c])}  # categories only
    return frame


def _tokens_as_written(file: Path, frame: pd.DataFrame, tokens: frozenset[str],
                       parquet: bool) -> dict[str, dict[str, int]]:
    """{text column: {token: count}}: the non-empty missing-value tokens its cells held before reading."""
    text = [c for c in frame.columns if cells.is_text(frame[c])]
    if parquet:
        found = {c: cells.tokens_found(frame[c], tokens) for c in text}
    else:  # the reader already made them missing: read the text columns that have missing cells as written
        suspects = [c for c in text if frame[c].isna().any()]
        if not suspects:
            return {}
        raw = pd.read_csv(file, sep="\t" if ".tsv" in file.name.lower() else ",", engine="pyarrow", dtype=str,
                          keep_default_na=False, na_values=[], usecols=suspects)
        found = {c: cells.tokens_found(raw[c], tokens) for c in suspects}
    return {str(c): counts for c, counts in found.items() if counts}


def token_warning(column: str, counts: dict[str, int]) -> str:
    """The training warning for a text column whose cells held missing-value tokens."""
    shown = ", ".join(f"{token!r} ({n} rows)" for token, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return (f"column {column!r}: {shown} read as missing (data.na_values); if that is a real category, set "
            f"data.na_values without it, e.g. --set 'data.na_values=[\"\"]'")


def not_utf8(path: str | Path, what: str, byte: int, column: str | None = None) -> str:
    where = f" (column {column!r})" if column is not None else ""
    return (f"{what} {path} is not UTF-8 text{where}: byte {byte:#04x} is not UTF-8, as in a latin-1 or "
            f"Windows-1252 file; save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)")


def data_sha256(path: str, frame: pd.DataFrame) -> str:
    """sha256 of the input file's bytes; for bundled tables, of the table's contents."""
    digest = hashlib.sha256()
    if path.startswith(BUILTIN_PREFIX):
        digest.update(pd.util.hash_pandas_object(frame, index=False).values.tobytes())
        digest.update(",".join(map(str, frame.columns)).encode())
    else:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------------------- validation


def _default_positive(labels: list[Any]) -> Any:
    as_set = {str(v).lower() for v in labels}
    for pos in (1, True, "1", "true", "yes"):
        if str(pos).lower() in as_set and len(as_set) == 2:
            return next(v for v in labels if str(v).lower() == str(pos).lower())
    return sorted(labels, key=str)[-1]


def _is_categorical(series: pd.Series, forced: bool = False) -> bool:
    return forced or not (pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series))


def min_rows_per_class(test_size: float, valid_size: float) -> int:
    """Rows a class needs so that a stratified split puts at least one in every part."""
    return max(3, math.ceil(1 / min(test_size, valid_size, 1 - test_size - valid_size)))


def suggest(names: list[str], columns: list[str], shown: int = 30) -> str:
    """What to choose instead of the unknown `names`: the closest columns first ("did you mean
    'income'?"), then the columns (all of them up to `shown`)."""
    import difflib

    lowered = {c.lower(): c for c in columns}
    close = []
    for name in names:
        exact = lowered.get(str(name).lower())
        matches = difflib.get_close_matches(str(name).lower(), lowered, 3, 0.6)
        found = [exact] if exact else [lowered[m] for m in matches]
        close += [c for c in found if c not in close]
    listed = ", ".join(columns[:shown]) + (f", ... ({len(columns) - shown} more)" if len(columns) > shown else "")
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    return f"{hint}columns: {listed}"


# A numeric target looks continuous (a quantity to regress) when it is float-valued, or an integer
# with more than this many distinct values that are more than this share of the rows.
REGRESSION_MIN_DISTINCT = 20
REGRESSION_MIN_DISTINCT_SHARE = 0.05


def looks_continuous(y: pd.Series) -> tuple[bool, str]:
    """Whether a target (missing values dropped) looks like a quantity rather than classes, and why."""
    if pd.api.types.is_bool_dtype(y) or not pd.api.types.is_numeric_dtype(y):
        return False, "its values are not numbers"
    distinct = int(y.nunique())
    values = y.to_numpy(dtype="float64")
    integral = bool(np.all(np.isfinite(values)) and np.all(values == np.round(values)))
    if not integral and distinct > 2:
        return True, f"it holds fractional numbers ({distinct:,} distinct values)"
    many = distinct > REGRESSION_MIN_DISTINCT and distinct > REGRESSION_MIN_DISTINCT_SHARE * len(y)
    if many:
        return True, f"it holds {distinct:,} distinct whole numbers ({distinct / len(y):.0%} of the rows)"
    return False, f"it holds {distinct} distinct whole numbers"


def is_number_target(info: DatasetInfo) -> bool:
    """A classification whose labels are all numbers (e.g. ratings 1-5): it could be regressed instead."""
    return bool(info.classes) and all(isinstance(c, int | float) and not isinstance(c, bool) for c in info.classes)


def check_columns(columns: list[str], target: str, drop_columns: list[str], where: str = "") -> None:
    """The target and every column to drop exist; the target is not among the dropped columns."""
    if target not in columns:
        raise DataError(f"target column {target!r} not found{where}; set data.target: {suggest([target], columns)}")
    missing = [c for c in drop_columns if c not in columns]
    if missing:
        raise DataError(f"data.drop_columns names columns not in the table{where}: {missing}; "
                        f"{suggest(missing, columns)}")
    if target in drop_columns:
        raise DataError(f"data.drop_columns contains the target {target!r}; remove it from that list")


def validate_dataset(
    frame: pd.DataFrame,
    target: str,
    *,
    task: str = "auto",
    drop_columns: list[str] | None = None,
    positive_class: Any = None,
    test_size: float = 0.2,
    valid_size: float = 0.2,
    time_column: str | None = None,
    group_column: str | None = None,
    categorical_columns: list[str] | None = None,
    datetime: str = "expand",
    inf_values: str = "missing",
    drop_constant: bool = True,
    drop_id_like: bool = True,
) -> DatasetInfo:
    """Check that the table can be trained on; raise DataError naming the problem and the fix.

    Columns that cannot help (constant, unique per row, entirely missing) are left out with a
    warning; the warnings are logged and kept in `DatasetInfo.warnings`.
    """
    drop_columns = list(drop_columns or [])
    categorical_columns = list(categorical_columns or [])
    columns = list(map(str, frame.columns))
    if len(set(columns)) != len(columns):
        dupes = sorted({c for c in columns if columns.count(c) > 1})
        raise DataError(f"duplicate column names {dupes}; rename them so every column is unique")
    check_columns(columns, target, drop_columns)
    for key, col in (("split.time_column", time_column), ("split.group_column", group_column)):
        if col is not None and col not in frame.columns:
            raise DataError(f"{key} {col!r} is not a column of the table; {suggest([col], columns)}")
        if col is not None and frame[col].isna().any():
            raise DataError(f"{key} {col!r} has {int(frame[col].isna().sum())} missing values; fill or drop those rows")
    unknown = [c for c in categorical_columns if c not in frame.columns]
    if unknown:
        raise DataError(f"preprocessing.categorical.columns names columns not in the table: {unknown}; "
                        f"{suggest(unknown, columns)}")
    if target in categorical_columns:
        raise DataError(f"preprocessing.categorical.columns contains the target {target!r}; remove it")
    # Split keys decide where rows go; as features they would not generalise (group ids, future times).
    for key_column in (group_column, time_column):
        if key_column is not None and key_column not in drop_columns:
            drop_columns = [*drop_columns, key_column]
    if len(frame) == 0:
        raise DataError("the table has no rows; point data.path at a file with data")

    y = frame[target]
    n_missing_target = int(y.isna().sum())
    if n_missing_target == len(frame):
        raise DataError(f"target column {target!r} is empty (all values missing); choose another data.target")
    y = y.dropna()
    continuous, why = looks_continuous(y)
    if continuous and task in ("binary", "multiclass"):
        raise DataError(
            f"data.task is {task}, but target {target!r} looks like a quantity, not classes: {why}; set "
            "data.task: regression (or auto), or bin the target into classes first"
        )
    if task == "regression" or continuous:
        return _regression_info(frame, target, y, drop_columns, n_missing_target,
                                categorical_columns=categorical_columns, datetime=datetime, inf_values=inf_values,
                                drop_constant=drop_constant, drop_id_like=drop_id_like)
    unused = []
    if isinstance(y.dtype, pd.CategoricalDtype):  # a category level no row holds is not a class
        unused = [_plain(c) for c in y.cat.categories if not (y == c).any()]
        y = y.cat.remove_unused_categories()
    counts = y.value_counts()
    if len(counts) < 2:
        raise DataError(
            f"target {target!r} has a single class ({_plain(counts.index[0])!r}); a classifier needs at "
            "least 2 classes: check data.target and the rows of the file"
        )
    resolved_task = "binary" if len(counts) == 2 else "multiclass"
    if task == "binary" and resolved_task != "binary":
        raise DataError(
            f"data.task is binary but target {target!r} has {len(counts)} classes; "
            "set data.task to multiclass or auto"
        )
    if task == "multiclass" and resolved_task == "binary":
        resolved_task = "multiclass"
    need = min_rows_per_class(test_size, valid_size)
    rare = counts[counts < need]
    if len(rare):
        raise DataError(
            f"class(es) { {_plain(k): int(v) for k, v in rare.items()} } of {target!r} have fewer than {need} rows, "
            "too few to appear in train, valid and test; add rows, merge rare classes or drop them"
        )

    labels = list(counts.index)
    if resolved_task == "binary":
        if positive_class is None:
            positive = _default_positive(labels)
        else:
            matches = [v for v in labels if v == positive_class or str(v) == str(positive_class)]
            if not matches:
                raise DataError(
                    f"data.positive_class {positive_class!r} is not a label of {target!r}; "
                    f"labels are {sorted(map(str, labels))}"
                )
            positive = matches[0]
        negative = next(v for v in labels if v is not positive and v != positive)
        classes = [negative, positive]
    else:
        classes = sorted(labels, key=str)

    warnings: list[str] = []
    for group in label_groups(y):
        warnings.append(f"target labels {group} differ only by case or surrounding spaces and are "
                        "separate classes; set data.normalize_labels: true to merge them")
    if unused:
        warnings.append(f"target {target!r} is a category with level(s) no row holds, ignored: {unused[:10]}")
    features, numeric, categorical, datetimes, dropped = _feature_columns(
        frame, target, drop_columns, categorical_columns, datetime, inf_values, drop_constant, drop_id_like, warnings)
    check_leakage(frame, target, features, numeric, len(counts))
    for message in warnings:
        log.warning(message)

    return DatasetInfo(
        target=target,
        task=resolved_task,
        classes=[_plain(c) for c in classes],
        features=features,
        numeric_features=numeric,
        categorical_features=categorical,
        dropped_columns=dropped,
        n_rows=int(len(frame)),
        n_rows_missing_target=n_missing_target,
        datetime_features=datetimes,
        class_counts={str(_plain(k)): int(v) for k, v in counts.items()},
        warnings=warnings,
    )


def _feature_columns(
    frame: pd.DataFrame, target: str, drop_columns: list[str], categorical_columns: list[str], datetime: str,
    inf_values: str, drop_constant: bool, drop_id_like: bool, warnings: list[str],
) -> tuple[list[str], list[str], list[str], list[str], list[str]]:
    """(features, numeric, categorical, datetime, dropped): the columns a model learns from, and those
    left out with a warning appended to `warnings`."""
    def leave_out(col: str, why: str) -> None:
        warnings.append(f"column {col!r} {why}; it is not used as a feature")
        dropped.append(col)

    candidates = [c for c in frame.columns if c != target and c not in drop_columns]
    dropped = list(drop_columns)
    features: list[str] = []
    datetimes: list[str] = []
    n_rows = len(frame)
    for col in candidates:
        series = frame[col]
        kind = column_kind(series, col, forced_categorical=col in categorical_columns)
        if kind == "categorical" and col not in categorical_columns:
            check_numbers_as_text(series, col)
        if series.isna().all():
            leave_out(col, "is entirely missing")
        elif drop_constant and series.nunique(dropna=False) <= 1:
            leave_out(col, f"is constant ({_plain(series.iloc[0])!r} in every row) (preprocessing.drop_constant)")
        elif kind == "datetime" and datetime == "drop":
            leave_out(col, "is a date/time and preprocessing.datetime is drop")
        elif drop_id_like and col not in categorical_columns and _is_id_like(series, kind, n_rows):
            leave_out(col, "is unique per row, like an identifier (preprocessing.drop_id_like)")
        else:
            features.append(col)
            if kind == "datetime":
                datetimes.append(col)
    if not features:
        raise DataError(f"no feature columns left besides the target {target!r}; the table needs inputs")

    numeric = [c for c in features if c not in datetimes and not _is_categorical(frame[c], c in categorical_columns)]
    categorical = [c for c in features if c not in datetimes and _is_categorical(frame[c], c in categorical_columns)]
    for col in numeric:
        values = frame[col].to_numpy(dtype="float64", na_value=np.nan)
        n_inf = int(np.isinf(values).sum())
        if n_inf and inf_values == "error":
            raise DataError(
                f"column {col!r} holds {n_inf} infinite values; replace them, or set "
                "preprocessing.inf_values to missing"
            )
        if n_inf:
            warnings.append(f"column {col!r} holds {n_inf} infinite values; they are treated as missing "
                            "(preprocessing.inf_values)")
        finite = values[np.isfinite(values)]
        largest = float(np.abs(finite).max()) if finite.size else 0.0
        if largest > MAX_FEATURE_MAGNITUDE:
            raise DataError(
                f"column {col!r} holds values up to {largest:.3g}, beyond what the models compute with (float32, "
                f"squares and sums overflow past about {MAX_FEATURE_MAGNITUDE:.0e}); rescale it (a log, or a "
                "division by a power of ten), or list it in data.drop_columns")
    return features, numeric, categorical, datetimes, dropped


# Features are float32 in every family (3.4e38 at most): past this, sums and products overflow to inf.
MAX_FEATURE_MAGNITUDE = 1e30


# Rows with a target value a regression needs: enough for train, valid and test to each hold a few.
MIN_REGRESSION_ROWS = 30


def _regression_info(
    frame: pd.DataFrame, target: str, y: pd.Series, drop_columns: list[str], n_missing_target: int, **columns: Any,
) -> DatasetInfo:
    """DatasetInfo of a regression table (data.task regression, or auto and a target that looks continuous)."""
    if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
        raise DataError(f"data.task is regression, but target {target!r} holds {y.dtype} values, not numbers; "
                        "choose a numeric target, or set data.task: auto to classify it")
    values = y.to_numpy(dtype="float64")
    if not np.all(np.isfinite(values)):
        raise DataError(f"target {target!r} holds {int((~np.isfinite(values)).sum())} infinite values; "
                        "replace or drop those rows")
    if len(values) < MIN_REGRESSION_ROWS:
        raise DataError(f"only {len(values)} rows of {target!r} have a value; a regression needs at least "
                        f"{MIN_REGRESSION_ROWS} (train, valid and test each need a few): add rows")
    if np.unique(values).size < 2:
        raise DataError(f"target {target!r} is constant ({values[0]:g}); there is nothing to predict: "
                        "check data.target")
    warnings: list[str] = []
    features, numeric, categorical, datetimes, dropped = _feature_columns(frame, target, drop_columns, **columns,
                                                                          warnings=warnings)
    labelled = y.index
    for col in numeric:
        if frame[col].loc[labelled].to_numpy(dtype="float64", na_value=np.nan).tolist() == values.tolist():
            raise DataError(f"feature {col!r} is a copy of the target {target!r}, which leaks the answer; add it to "
                            "data.drop_columns")
    for message in warnings:
        log.warning(message)
    summary = {"min": float(values.min()), "median": float(np.median(values)), "mean": float(values.mean()),
               "max": float(values.max()), "std": float(values.std()), "skew": float(pd.Series(values).skew()),
               "distinct": int(np.unique(values).size), "min_abs": float(np.abs(values).min()),
               "median_abs": float(np.median(np.abs(values)))}
    return DatasetInfo(
        target=target, task="regression", classes=[], features=features, numeric_features=numeric,
        categorical_features=categorical, dropped_columns=dropped, n_rows=int(len(frame)),
        n_rows_missing_target=n_missing_target, datetime_features=datetimes, warnings=warnings,
        target_summary=summary,
    )


_SCALAR_TYPES = (str, bool, int, float, np.number, np.bool_)


def column_kind(series: pd.Series, name: str, forced_categorical: bool = False) -> str:
    """"numeric", "categorical" or "datetime"; DataError naming the column for what cannot be used."""
    dtype = series.dtype
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    if pd.api.types.is_complex_dtype(dtype):
        raise DataError(f"column {name!r} holds complex numbers, which no model here takes; split it into "
                        "real and imaginary columns or add it to data.drop_columns")
    if pd.api.types.is_timedelta64_dtype(dtype):
        raise DataError(f"column {name!r} holds durations (timedelta); convert it to a number, e.g. "
                        "seconds, or add it to data.drop_columns")
    if isinstance(dtype, pd.PeriodDtype | pd.IntervalDtype):
        raise DataError(f"column {name!r} has dtype {dtype}, which is not supported; convert it to a "
                        "datetime or a number, or add it to data.drop_columns")
    if pd.api.types.is_object_dtype(dtype):
        types = set(series.dropna().map(type).unique())
        if types and all(issubclass(t, dt.date) for t in types):
            return "datetime"
        odd = sorted(t.__name__ for t in types if not issubclass(t, _SCALAR_TYPES))
        if odd:
            raise DataError(f"column {name!r} holds values of type {', '.join(odd)}, which is not "
                            "supported; convert them to text or numbers, or add it to data.drop_columns")
    if forced_categorical and pd.api.types.is_float_dtype(dtype):
        values = series.dropna().to_numpy(dtype="float64")
        if not np.all(np.isfinite(values) & (values == np.round(values))):
            raise DataError(f"column {name!r} is listed in preprocessing.categorical.columns but holds "
                            "non-integer numbers; list only integer-coded columns")
    return "categorical" if _is_categorical(series, forced_categorical) else "numeric"


def sample_rows(frame: pd.DataFrame, target: str, n: int, seed: int, stratify: bool = True) -> pd.DataFrame:
    """`n` rows drawn with `seed` (all when there are fewer), in their original order.

    `stratify`: keep the target's class shares, rows without a target counting as one more class.
    """
    if len(frame) <= n:
        return frame
    labels = None
    if stratify:
        labels = frame[target].astype(object).where(frame[target].notna(), "__missing__").astype(str).to_numpy()
    return frame.iloc[sample_positions(len(frame), n, seed, labels)].reset_index(drop=True)


def sample_positions(total: int, n: int, seed: int, labels: np.ndarray | None = None) -> np.ndarray:
    """`n` of `total` row positions drawn with `seed`, in order; keeping `labels`' class shares when every
    class has 2 rows or more."""
    if labels is not None and (np.unique(labels, return_counts=True)[1] >= 2).all():
        rows, _ = train_test_split(np.arange(total), train_size=n, stratify=labels, random_state=seed)
        return np.sort(rows)
    return np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))


def check_numbers_as_text(series: pd.Series, name: str, sample: int = 1000) -> None:
    """Refuse a text column of numbers with a few non-numbers in it, naming those cells.

    Such a column is useless as categories. A sample is parsed first, so real categories return early.
    """
    if not (pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series)):
        return
    values = series.dropna()
    if values.empty or not all(isinstance(v, str) for v in values.head(sample)):
        return
    head = pd.to_numeric(values.head(sample), errors="coerce")
    if head.notna().mean() < 0.9:
        return
    parsed = pd.to_numeric(values, errors="coerce")
    bad = parsed.isna()
    if parsed.notna().mean() < 0.9 or not bad.any():
        return
    shown = ", ".join(f"row {i}: {v!r}" for i, v in values[bad].head(3).items()) + " counting rows from 0"
    raise DataError(
        f"column {name!r} holds numbers but {int(bad.sum())} of its cells are not ({shown}); fix or blank "
        f"those cells, or list {name!r} in preprocessing.categorical.columns to treat it as categories"
    )


def _is_id_like(series: pd.Series, kind: str, n_rows: int) -> bool:
    """Unique per row: text ids, or integers forming one consecutive run (row numbers)."""
    if n_rows < 20 or kind == "datetime" or series.isna().any() or series.nunique() != n_rows:
        return False
    if kind == "categorical":
        return True
    values = series.to_numpy(dtype="float64")
    if not np.all(values == np.round(values)):
        return False
    return values.max() - values.min() + 1 == n_rows


def check_leakage(
    frame: pd.DataFrame, target: str, features: list[str], numeric: list[str], n_classes: int
) -> None:
    """Raise DataError for a feature the target follows from exactly: a copy, a many-to-one map, a threshold.

    Rows without a target are left out column by column, not by copying the table.
    """
    labelled = frame[target].notna().to_numpy()
    rows = None if labelled.all() else np.flatnonzero(labelled)

    def column(name: str) -> pd.Series:
        return frame[name] if rows is None else frame[name].take(rows)

    y = pd.factorize(column(target))[0]
    n = len(y)
    for col in features:
        codes = pd.factorize(column(col), use_na_sentinel=False)[0]
        per_value = pd.Series(y).groupby(codes).nunique()
        if per_value.max() != 1:
            continue  # some value is seen with two classes: not a function of this column
        n_values = len(per_value)
        if n_values == n_classes:
            raise DataError(
                f"feature {col!r} is a copy of the target {target!r} (one value per class), which "
                f"leaks the answer; add it to data.drop_columns"
            )
        if n / n_values >= 5:
            raise DataError(
                f"the target {target!r} is a function of feature {col!r} (each of its {n_values} values "
                "always comes with the same class), which leaks the answer; add it to data.drop_columns"
            )
        if col in numeric and n >= 50:
            order = np.argsort(column(col).to_numpy(dtype="float64", na_value=np.nan), kind="stable")
            runs = 1 + int(np.count_nonzero(np.diff(y[order])))
            if runs == n_classes:
                raise DataError(
                    f"the target {target!r} is a threshold of feature {col!r} (each class is one range "
                    "of its values), which leaks the answer; add it to data.drop_columns"
                )


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars, so labels serialise to JSON."""
    return value.item() if hasattr(value, "item") else value


# ---------------------------------------------------------------------------------- splitting


def label_groups(y: pd.Series) -> list[list[Any]]:
    """Text labels that differ only by case or surrounding spaces: each group, most frequent first."""
    counts = y.dropna().value_counts()
    groups: dict[str, list[Any]] = {}
    for label in counts.index:
        if isinstance(label, str):
            groups.setdefault(label.strip().casefold(), []).append(label)
    return [labels for labels in groups.values() if len(labels) > 1]


def normalize_labels(y: pd.Series) -> tuple[pd.Series, list[list[Any]]]:
    """`y` with each group of `label_groups` merged into its most frequent spelling; the groups merged."""
    groups = label_groups(y)
    mapping = {label: group[0] for group in groups for label in group[1:]}
    return (y.astype(object).replace(mapping) if mapping else y), groups


def encode_target(y: pd.Series, classes: list[Any]) -> np.ndarray:
    """Original labels -> 0..K-1 in the order of `classes` (binary: positive = 1); a regression's
    values (no classes) as float64."""
    if not classes:
        return y.to_numpy(dtype=np.float64)
    lookup = {str(c): i for i, c in enumerate(classes)}
    return y.map(lambda v: lookup[str(v)]).to_numpy(dtype=np.int64)


def split_positions(
    frame: pd.DataFrame,
    info: DatasetInfo,
    *,
    strategy: str = "stratified",
    test_size: float = 0.2,
    valid_size: float = 0.2,
    seed: int = 42,
    time_column: str | None = None,
    group_column: str | None = None,
) -> dict[str, np.ndarray]:
    """Train/valid/test as row positions of `frame`; rows with a missing target go nowhere.

    stratified/random: shuffled with `seed`. time: ordered by `time_column` (stable), earliest in train,
    latest in test. group: no value of `group_column` in two parts. Raises DataError when a part
    lacks a class.
    """
    target = frame[info.target]
    kept = np.flatnonzero(target.notna().to_numpy()) if target.isna().any() else np.arange(len(frame))
    valid_of_rest = valid_size / (1 - test_size)
    if strategy == "time":
        times = frame[time_column].take(kept).to_numpy()
        order = np.argsort(times, kind="stable")
        ordered, times = kept[order], times[order]

        def cut_at(k: int) -> int:  # move a cut forward past its timestamp: equal times stay in one split
            return k if not 0 < k < len(times) else int(np.searchsorted(times, times[k - 1], side="right"))

        first = cut_at(len(ordered) - round(len(ordered) * test_size) - round(len(ordered) * valid_size))
        second = cut_at(max(first, len(ordered) - round(len(ordered) * test_size)))
        parts = {"train": ordered[:first], "valid": ordered[first:second], "test": ordered[second:]}
    elif strategy == "group":
        from sklearn.model_selection import GroupShuffleSplit

        groups = frame[group_column].to_numpy()

        def cut(rows: np.ndarray, size: float) -> tuple[np.ndarray, np.ndarray]:
            splitter = GroupShuffleSplit(n_splits=1, test_size=size, random_state=seed)
            keep, hold = next(splitter.split(rows, groups=groups[rows]))
            return rows[keep], rows[hold]

        rest, test = cut(kept, test_size)
        train, valid = cut(rest, valid_of_rest)
        parts = {"train": train, "valid": valid, "test": test}
    else:
        if strategy != "stratified":
            strata = None
        elif info.is_regression:  # stratified by quantile bins of the target: up to 10, no more than a part has rows
            bins = min(10, int(len(kept) * min(test_size, valid_size)))
            strata = pd.Series(pd.qcut(target.rank(method="first"), bins, labels=False), index=target.index) \
                if bins >= 2 else None
        else:
            strata = target.astype(str)
        labels = None if strata is None else strata.take(kept).to_numpy()
        rest, test = train_test_split(kept, test_size=test_size, random_state=seed, stratify=labels)
        rest_labels = None if labels is None else strata.take(rest).to_numpy()
        train, valid = train_test_split(rest, test_size=valid_of_rest, random_state=seed, stratify=rest_labels)
        parts = {"train": train, "valid": valid, "test": test}
    expected = set(map(str, info.classes))
    for name, rows in parts.items():
        if info.is_regression and not len(rows):
            raise DataError(f"the {strategy} split leaves {name} empty; use more rows or change split sizes")
        missing = sorted(expected - set(target.take(rows).astype(str).unique()))
        if missing:
            raise DataError(
                f"the {strategy} split leaves class(es) {missing} out of {name}; use more data, another "
                "split.strategy, or merge rare classes"
            )
    return parts


def split_dataset(frame: pd.DataFrame, info: DatasetInfo, **options: Any) -> dict[str, pd.DataFrame]:
    """The parts of `split_positions` as DataFrames (every original column)."""
    return {name: frame.take(rows) for name, rows in split_positions(frame, info, **options).items()}


WRITE_CHUNK_ROWS = 200_000


def write_part(frame: pd.DataFrame, rows: np.ndarray, path: str | Path, chunk_rows: int = WRITE_CHUNK_ROWS) -> None:
    """Write `frame`'s rows at `rows` as one Parquet file (no index), a chunk at a time to bound memory.

    The whole table's schema keeps a chunk's types when one of its text columns is all missing.
    Dictionary pages are capped at 64 KB so that high-cardinality columns switch to plain encoding early.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.Schema.from_pandas(frame, preserve_index=False)
    with pq.ParquetWriter(path, schema, dictionary_pagesize_limit=1 << 16) as writer:
        for start in range(0, max(len(rows), 1), chunk_rows):
            chunk = frame.take(rows[start : start + chunk_rows])
            writer.write_table(pa.Table.from_pandas(chunk, schema=schema, preserve_index=False))


def class_balance(labels: pd.Series) -> dict[str, int]:
    counts = labels.value_counts()
    return {str(k): int(v) for k, v in counts.sort_index(key=lambda s: s.astype(str)).items()}


def target_stats(values: pd.Series) -> dict[str, float]:
    """A regression split's target in four numbers (its class balance, in effect)."""
    return {"min": float(values.min()), "median": float(values.median()), "mean": float(values.mean()),
            "max": float(values.max())}


def features_and_target(frame: pd.DataFrame, info: DatasetInfo) -> tuple[pd.DataFrame, np.ndarray]:
    return frame[info.features], encode_target(frame[info.target], info.classes)


def cross_split_duplicates(frame: pd.DataFrame, parts: dict[str, np.ndarray], columns: list[str]) -> dict[str, int]:
    """Rows of valid and test (positions in `parts`) whose columns (features and target) equal some
    training row. One hash per row of the table, computed once."""
    hashes = pd.util.hash_pandas_object(frame[columns], index=False).to_numpy()
    seen = hashes[parts["train"]]
    return {name: int(np.isin(hashes[rows], seen).sum()) for name, rows in parts.items() if name != "train"}


def duplicates_message(duplicates: dict[str, int]) -> str:
    shown = ", ".join(f"{n} in {name}" for name, n in duplicates.items())
    return (f"rows identical to a training row (features and target): {shown}; their scores flatter the "
            "model a little: drop duplicate rows first if they are copies rather than real repeats")


IMBALANCE_HANDLING = {
    "auto": "the search tries balanced class weights as a hyperparameter",
    "none": "none (preprocessing.imbalance.method none)",
    "class_weight": "balanced class weights (scale_pos_weight for binary XGBoost)",
    "smote": "SMOTE oversampling of the training rows",
    "random_over": "random oversampling of the training rows",
    "random_under": "random undersampling of the training rows",
}


def imbalance_message(info: DatasetInfo, method: str, warn_below: float) -> str | None:
    """A warning naming the handling applied when the smallest class is under `warn_below` of the rows."""
    if info.minority_share >= warn_below:
        return None
    return (f"imbalanced target: class {info.minority_class!r} is {100 * info.minority_share:.1f}% of the rows "
            f"(under preprocessing.imbalance.warn_below={warn_below}); handling: {IMBALANCE_HANDLING[method]}")
