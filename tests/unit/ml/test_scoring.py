"""The input checks shared by batch and REST prediction (pure: no Prefect)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.ml.data import validate_dataset
from tasks.ml.scoring import InputSchema, PredictionWriter, SchemaError, read_chunks, schema_metadata


@pytest.fixture
def table():
    n = 40
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "size": rng.normal(size=n).astype(np.float32),
        "count": rng.integers(0, 9, n),
        "colour": rng.choice(["red", "blue"], n),
        "when": pd.date_range("2024-01-01", periods=n, freq="D"),
        "label": np.tile(["a", "b"], n // 2),
    })


def schema_of(table):
    info = validate_dataset(table, "label")
    return InputSchema.from_metadata({"input_schema": schema_metadata(table, info)})


def test_schema_records_kind_and_training_dtype(table):
    schema = schema_of(table)
    assert [(c.name, c.kind, c.dtype) for c in schema.columns] == [
        ("size", "numeric", "float32"), ("count", "numeric", "int64"),
        ("colour", "categorical", str(table["colour"].dtype)), ("when", "datetime", str(table["when"].dtype))]


def test_text_converted_to_the_training_dtypes(table):
    schema = schema_of(table)
    rows = pd.DataFrame({"size": ["1.5", " 2 ", "", None], "count": ["3", "4", "5", "6"], "colour": [1, "x", None, "red"],
                         "when": ["2024-05-31", "2024-06-01T10:00", None, ""], "extra": [0, 0, 0, 0]})
    out = schema.prepare(rows)
    assert list(out.columns) == ["size", "count", "colour", "when"]  # training order, extra dropped
    assert out["size"].dtype == np.float32 and out["size"].iloc[0] == np.float32(1.5) and out["size"].isna().sum() == 2
    assert out["count"].dtype == np.int64 and out["count"].tolist() == [3, 4, 5, 6]
    assert out["colour"].tolist()[:2] == [1, "x"]  # categories are compared as text by the pipeline
    assert out["when"].iloc[0] == pd.Timestamp("2024-05-31") and out["when"].isna().sum() == 2
    with_gap = schema.prepare(rows.assign(count=[1.0, None, 2.0, 3.0]))
    assert with_gap["count"].dtype == np.float64  # an integer column with a gap cannot stay int64


def test_values_that_do_not_fit_are_refused_naming_column_and_row(table):
    schema = schema_of(table)
    good = {"size": [1.0, 2.0], "count": [1, 2], "colour": ["red", "red"], "when": ["2024-01-01", "2024-01-02"]}
    with pytest.raises(SchemaError, match=r"column 'size' must hold numbers, but row 11 holds 'abc' \(1 such value"):
        schema.prepare(pd.DataFrame({**good, "size": ["1", "abc"]}), first_row=10)
    with pytest.raises(SchemaError, match="column 'when' must hold dates, but row 0 holds 'soon'") as info:
        schema.prepare(pd.DataFrame({**good, "when": ["soon", "2024-01-01"]}))
    assert info.value.column == "when" and info.value.row == 0
    with pytest.raises(SchemaError, match="input lacks the feature columns 'count', 'colour'"):
        schema.prepare(pd.DataFrame({"size": [1.0], "when": ["2024-01-01"]}))


def test_a_version_without_a_recorded_schema_checks_names_only():
    schema = InputSchema.from_metadata({"features": ["a", "b"]})
    rows = pd.DataFrame({"b": ["x"], "a": ["1"], "c": [0]})
    assert schema.check_columns(list(rows.columns)) == ["c"]
    assert schema.prepare(rows)["a"].tolist() == ["1"]


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".csv.gz"])
def test_chunks_round_trip_in_order(tmp_path, suffix):
    frame = pd.DataFrame({"x": np.arange(23, dtype=float), "y": [f"r{i}" for i in range(23)]})
    source = tmp_path / f"in{suffix}"
    writer = PredictionWriter(source)
    for start in range(0, 23, 10):
        writer.write(frame.iloc[start:start + 10])
    assert not source.exists()  # only the temporary file until commit
    writer.commit()
    chunks = list(read_chunks(source, ["y", "x"], 5))
    assert [len(c) for c, _ in chunks] == [5, 5, 5, 5, 3] and chunks[-1][1] == pytest.approx(1.0)
    assert pd.concat([c for c, _ in chunks])["y"].tolist() == frame["y"].tolist()
