"""Scoring new rows with a registered model (pure: no Prefect, no HTTP).

Batch prediction (`flows/predict.py`) and the REST service (`tasks/serving.py`) share
`InputSchema.prepare` and `score_frame`, so a row gets the prediction the evaluation gave it.
Input is checked against the training schema recorded with each version (`input_schema` in metadata.json).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from config.errors import DataError
from tasks.ml import values as cells
from tasks.ml.data import not_utf8, table_columns

KINDS = ("numeric", "categorical", "datetime")


class SchemaError(DataError):
    """Input rows that do not fit the model's training schema (the message names the column)."""

    def __init__(self, message: str, column: str | None = None, row: int | None = None) -> None:
        super().__init__(message)
        self.column = column
        self.row = row


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # numeric | categorical | datetime | unknown (a version registered before schemas)
    dtype: str  # the pandas dtype in training, e.g. float32, int64, object, datetime64[ns]


def schema_metadata(frame: pd.DataFrame, info: Any, na_values: list[str] | None = None) -> dict[str, Any]:
    """The `input_schema` entry of a registry version: the features as the model was trained on them, and
    the missing-value tokens they were read with."""
    kinds = {**{c: "numeric" for c in info.numeric_features}, **{c: "categorical" for c in info.categorical_features},
             **{c: "datetime" for c in info.datetime_features}}
    return {"columns": [{"name": c, "kind": kinds.get(c, "unknown"), "dtype": _dtype_name(frame[c])}
                        for c in info.features],
            "na_values": sorted(cells.tokens_of(na_values))}


def _dtype_name(series: pd.Series) -> str:
    """The column's dtype; "bool" for booleans with missing values too (pandas holds those as object)."""
    if pd.api.types.is_object_dtype(series.dtype):
        present = series.dropna()
        if len(present) and all(isinstance(v, bool | np.bool_) for v in present):
            return "bool"
    return str(series.dtype)


def _example(values: pd.Series) -> str:
    text = repr(values.iloc[0])
    return text if len(text) <= 40 else text[:37] + "..."


class InputSchema:
    """The features a registry version expects, and how input is checked and converted for it."""

    def __init__(self, columns: list[Column], na_values: list[str] | None = None) -> None:
        self.columns = columns
        self.names = [c.name for c in columns]
        self.tokens = cells.tokens_of(na_values)  # a version without them was read with the defaults
        self.na_values = sorted(self.tokens)

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> InputSchema:
        recorded = metadata.get("input_schema")
        if recorded:
            return cls([Column(c["name"], c["kind"], c["dtype"]) for c in recorded["columns"]],
                       recorded.get("na_values"))
        return cls([Column(name, "unknown", "") for name in metadata["features"]])

    def check_columns(self, names: list[str]) -> list[str]:
        """The extra columns (ignored); SchemaError naming the missing ones."""
        present = set(map(str, names))
        missing = [c for c in self.names if c not in present]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise SchemaError(
                f"input lacks the feature column{'s' if len(missing) > 1 else ''} "
                f"{', '.join(repr(c) for c in missing[:5])}{more} that the model was trained on; "
                "add it (missing values are allowed: leave the cells empty)", column=missing[0])
        wanted = set(self.names)
        return [str(c) for c in names if str(c) not in wanted]

    def prepare(self, frame: pd.DataFrame, first_row: int = 0) -> pd.DataFrame:
        """The feature columns in training order, read as training read them (tasks/ml/values.py).

        Raises SchemaError for a missing column, a numeric value that does not parse or a date that is
        not one. Numbers keep their training dtype where nothing is lost (so predictions match training).
        `first_row`: the frame's first row in the whole input, for messages.
        """
        self.check_columns(list(frame.columns))
        out = {}
        for column in self.columns:
            out[column.name] = self._convert(frame[column.name], column, first_row)
        return pd.DataFrame(out, index=frame.index, copy=False)

    def _convert(self, series: pd.Series, column: Column, first_row: int) -> pd.Series:
        if column.kind == "numeric":
            converted, bad = cells.as_numbers(series, self.tokens)
            _refuse(series, bad, column, first_row, "numbers", "fix or blank them")
            return _as_training_dtype(converted, column.dtype)
        if column.kind == "datetime":
            converted, bad = cells.as_datetimes(series, self.tokens)
            _refuse(series, bad, column, first_row, "dates",
                    "use ISO 8601 such as 2024-05-31 or 2024-05-31T14:00:00+02:00, or blank the cell")
            return converted
        if column.kind == "categorical":  # compared as text by the pipeline
            return cells.as_categories(series, self.tokens, column.dtype)
        return series  # unknown (a version registered before schemas): as it is


def _refuse(series: pd.Series, bad: np.ndarray, column: Column, first_row: int, expected: str, fix: str) -> None:
    """SchemaError naming the column, the first offending row and its value, when any value is `bad`."""
    if not bad.any():
        return
    position = first_row + int(np.argmax(bad))
    raise SchemaError(f"column {column.name!r} must hold {expected}, but row {position} holds "
                      f"{_example(series[np.asarray(bad)])} ({int(bad.sum())} such value(s)); {fix}",
                      column=column.name, row=position)


def _as_training_dtype(series: pd.Series, dtype: str) -> pd.Series:
    """Numbers in the training dtype where nothing is lost; float64 otherwise."""
    if not dtype or series.dtype == dtype:
        return series
    try:
        target = np.dtype(dtype)
    except TypeError:  # pandas extension dtypes (Int64, Float32...)
        return series.astype("float64")
    if target.kind == "f":
        return series.astype(target)
    values = series.to_numpy(dtype="float64", na_value=np.nan)
    whole = bool(np.all(values == np.round(values)))  # a missing value (NaN) fails this too
    return series.astype(target if target.kind in "iub" and whole else "float64")


def prediction_frame(model: Any, features: pd.DataFrame, version: int | None) -> pd.DataFrame:
    """`prediction` (the original label), `proba_<class>` for each class, `model_version`; a regression's:
    `prediction` (a number), `prediction_lower`, `prediction_upper`, `model_version`."""
    try:
        labels, proba = model.predict_both(features, read=False)  # score_frame read them
    except ValueError as exc:  # e.g. a number so large that scaling it overflows to infinity
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SchemaError(f"the model cannot score these rows ({first}); look for extreme values, far outside "
                          "what the model was trained on") from None
    if "prediction_lower" in proba.columns:  # a regression: the prediction and its interval
        out = proba.set_axis(features.index)
        out["model_version"] = version
        return out
    out = pd.DataFrame(proba.to_numpy(), columns=[f"proba_{c}" for c in proba.columns], index=features.index)
    out.insert(0, "prediction", labels)
    out["model_version"] = version
    return out


def score_frame(model: Any, schema: InputSchema, frame: pd.DataFrame, version: int | None,
                first_row: int = 0) -> pd.DataFrame:
    """Check and convert `frame`, then predict: the one scoring path of batch and REST prediction."""
    return prediction_frame(model, schema.prepare(frame, first_row), version)


# --- files, a chunk at a time -------------------------------------------------------------------

CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".pq")


def table_format(path: str | Path) -> str:
    name = Path(path).name.lower()
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    raise DataError(f"unsupported file type for {path}: use .parquet, .csv, .csv.gz or .tsv")


def input_columns(path: str | Path) -> tuple[list[str], int | None]:
    """The file's column names and, for Parquet, its row count (read from the footer only)."""
    table_format(path)
    return table_columns(path, what="input file", fix="pass an existing CSV or Parquet file with --input")


def _sep(path: str | Path) -> str:
    return "\t" if Path(path).name.lower().endswith(".tsv") else ","


def read_chunks(path: str | Path, columns: list[str], chunk_rows: int,
                na_values: list[str] | None = None) -> Iterator[tuple[pd.DataFrame, float]]:
    """(chunk, fraction of the file read) for the given columns, `chunk_rows` rows at a time. A CSV's
    cells equal to a token of `na_values` (the model's) are missing; `InputSchema.prepare` reads the rest."""
    path = Path(path)
    if table_format(path) == "parquet":
        import pyarrow.parquet as pq

        file = pq.ParquetFile(path, memory_map=False, pre_buffer=False, buffer_size=1 << 20)
        total = max(file.metadata.num_rows, 1)
        done = 0
        for batch in file.iter_batches(batch_size=chunk_rows, columns=columns):
            frame = batch.to_pandas(split_blocks=True, self_destruct=True)
            done += len(frame)
            yield frame, done / total
        return
    size = max(path.stat().st_size, 1)
    compressed = path.name.lower().endswith(".gz")
    with open(path, "rb") as raw:
        reader = pd.read_csv(raw, sep=_sep(path), usecols=columns, chunksize=chunk_rows,
                             compression="gzip" if compressed else None, low_memory=False,
                             keep_default_na=False, na_values=sorted(cells.tokens_of(na_values)))
        try:
            for frame in reader:
                yield frame, min(raw.tell() / size, 1.0)
        except UnicodeDecodeError as exc:
            raise SchemaError(not_utf8(path, "input file", exc.object[exc.start])) from None


class PredictionWriter:
    """Writes prediction chunks to a temporary file beside `path`, renamed into place by `commit`:
    a failed run leaves no half-written output."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.format = table_format(self.path)
        if self.path.is_dir():
            raise DataError(f"output {self.path} is a folder; pass a file name such as predictions.parquet")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.partial")
        self._writer = None
        self.rows = 0

    def write(self, frame: pd.DataFrame) -> None:
        if self.format == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self._writer is None:
                self._writer = pq.ParquetWriter(self.tmp, table.schema)
            self._writer.write_table(table.cast(self._writer.schema))
        else:
            frame.to_csv(self.tmp, mode="a" if self.rows else "w", header=not self.rows, index=False,
                         sep=_sep(self.path), compression="gzip" if self.path.name.endswith(".gz") else None)
        self.rows += len(frame)

    def commit(self) -> Path:
        if self._writer is not None:
            self._writer.close()
        elif self.rows == 0 and self.format == "parquet":
            raise DataError(f"nothing to write to {self.path}: the input has no rows")
        self.tmp.replace(self.path)
        return self.path

    def abort(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - the partial file goes anyway
                pass
        self.tmp.unlink(missing_ok=True)
