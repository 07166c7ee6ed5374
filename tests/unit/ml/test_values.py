"""tasks/ml/values.py: the one reading of a cell that training, batch and REST share."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.ml import values as cells

TOKENS = cells.tokens_of(None)


def test_default_tokens_are_pandas_and_an_empty_cell_is_always_missing():
    assert {"", "NA", "None", "null", "NaN", "N/A"} <= TOKENS
    assert cells.tokens_of(["?"]) == {"", "?"}
    assert cells.tokens_of([" NA "]) == {"", "NA"}


def test_tokens_are_missing_after_stripping_spaces_in_text_only():
    series = pd.Series(["a", " NA", "None ", None, "", "none"], dtype=object)
    assert cells.missing_text(series, TOKENS).tolist() == [False, True, True, False, True, False]
    assert not cells.missing_text(pd.Series([1.0, np.nan]), TOKENS).any()
    assert cells.tokens_found(series, TOKENS) == {" NA": 1, "None ": 1}


def test_numbers_as_text_parse_and_tokens_are_missing_but_garbage_is_named():
    values, bad = cells.as_numbers(pd.Series(["3.5", " 7 ", "NA", "x", None, ""], dtype=object), TOKENS)
    assert values.iloc[:2].tolist() == [3.5, 7.0] and values.iloc[2:].isna().all()
    assert bad.tolist() == [False, False, False, True, False, False]


def test_a_category_trained_as_numbers_or_booleans_reads_text_as_those():
    as_int = cells.as_categories(pd.Series(["3", " 4 ", "NA", "new"], dtype=object), TOKENS, "int64")
    assert as_int.iloc[[0, 1, 3]].tolist() == ["3", "4", "new"] and pd.isna(as_int.iloc[2])
    as_bool = cells.as_categories(pd.Series(["true", "FALSE", "None", True], dtype=object), TOKENS, "bool")
    assert as_bool.tolist() == [True, False, None, True]
    text = cells.as_categories(pd.Series(["None", "web"], dtype=object), frozenset({""}), "object")
    assert text.tolist() == ["None", "web"]  # "None" is a category when it is not a token


def test_datetimes_with_offsets_across_a_dst_change_become_utc_and_naive_ones_stay():
    series = pd.Series(["2024-10-27T02:30:00+02:00", "2024-10-27T02:30:00+01:00", "2024-05-01", "NA", "junk"])
    values, bad = cells.as_datetimes(series, TOKENS)
    assert values.dt.tz is None
    assert values.iloc[:3].tolist() == [pd.Timestamp("2024-10-27 00:30"), pd.Timestamp("2024-10-27 01:30"),
                                        pd.Timestamp("2024-05-01")]
    assert bad.tolist() == [False, False, False, False, True]
    aware = pd.Series(pd.date_range("2024-03-31", periods=3, freq="h", tz="Europe/Paris"))
    assert cells.as_datetimes(aware)[0].tolist() == list(pd.date_range("2024-03-30 23:00", periods=3, freq="h"))


def test_a_text_column_left_holding_only_numbers_is_numeric():
    assert cells.read_text_column(pd.Series(["1.5", " NA ", "2"], dtype=object), TOKENS).dtype == "float64"
    kept = cells.read_text_column(pd.Series(["a", " NA ", "2"], dtype=object), TOKENS)
    assert kept.tolist() == ["a", None, "2"]
