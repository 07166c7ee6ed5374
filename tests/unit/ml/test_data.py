import re

import numpy as np
import pandas as pd
import pytest

from config.errors import DataError
from tasks.ml.data import load_table, split_dataset, validate_dataset


def table(n=60, **extra):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "x1": rng.normal(size=n),
        "color": rng.choice(["red", "blue", None], size=n),
        "y": np.where(np.arange(n) % 3 == 0, "yes", "no"),
    })
    for k, v in extra.items():
        frame[k] = v(frame) if callable(v) else v
    return frame


def test_valid_table_gives_task_classes_and_feature_kinds():
    info = validate_dataset(table(), "y")
    assert info.task == "binary"
    assert info.classes == ["no", "yes"]  # "yes" sorts last: the positive class
    assert info.numeric_features == ["x1"] and info.categorical_features == ["color"]


def test_zero_one_labels_make_one_positive_and_positive_class_can_be_chosen():
    frame = table()
    frame["y"] = (np.arange(60) % 3 == 0).astype(int)
    assert validate_dataset(frame, "y").classes == [0, 1]
    assert validate_dataset(table(), "y", positive_class="no").classes == ["yes", "no"]
    with pytest.raises(DataError, match="positive_class 'maybe' is not a label"):
        validate_dataset(table(), "y", positive_class="maybe")


@pytest.mark.parametrize(
    "frame, target, message",
    [
        (table(), "label", "target column 'label' not found; set data.target: columns: x1, color, y"),
        (table(), "Y", "target column 'Y' not found; set data.target: did you mean 'y'? columns: x1, color, y"),
        (table().assign(y="only"), "y", "has a single class ('only')"),
        (table().assign(y=None), "y", "is empty (all values missing)"),
        (table().assign(y=["rare"] * 2 + ["common"] * 58), "y", "have fewer than 5 rows"),
        (table(leak=lambda f: f["y"].map({"yes": "Y", "no": "N"})), "y", "feature 'leak' is a copy of the target"),
        (table().iloc[:0], "y", "the table has no rows"),
        (table()[["y"]], "y", "no feature columns left"),
    ],
)
def test_bad_tables_are_refused_with_a_named_problem(frame, target, message):
    with pytest.raises(DataError, match=re.escape(message)):
        validate_dataset(frame, target)


def test_duplicate_columns_and_bad_task_and_drop_columns():
    frame = table()
    dup = pd.concat([frame, frame[["x1"]]], axis=1)
    with pytest.raises(DataError, match="duplicate column names"):
        validate_dataset(dup, "y")
    with pytest.raises(DataError, match="data.task is binary but target 'y' has 3 classes"):
        validate_dataset(table().assign(y=np.arange(60) % 3), "y", task="binary")
    with pytest.raises(DataError, match="drop_columns names columns not in the table"):
        validate_dataset(table(), "y", drop_columns=["nope"])


def test_stratified_split_keeps_all_columns_and_class_shares():
    frame = table(n=300)
    info = validate_dataset(frame, "y")
    parts = split_dataset(frame, info, test_size=0.2, valid_size=0.2, seed=3)
    assert {k: len(v) for k, v in parts.items()} == {"train": 180, "valid": 60, "test": 60}
    for part in parts.values():
        assert list(part.columns) == list(frame.columns)
        assert part["y"].eq("yes").mean() == pytest.approx(frame["y"].eq("yes").mean(), abs=0.02)
    all_index = pd.Index(np.concatenate([p.index for p in parts.values()]))
    assert all_index.is_unique and len(all_index) == 300
    again = split_dataset(frame, info, test_size=0.2, valid_size=0.2, seed=3)
    assert again["test"].index.equals(parts["test"].index)  # the seed makes it repeatable


def test_rows_without_a_target_are_left_out_of_every_split():
    frame = table(n=100)
    frame.loc[:9, "y"] = None
    info = validate_dataset(frame, "y")
    assert info.n_rows_missing_target == 10
    assert sum(len(p) for p in split_dataset(frame, info).values()) == 90


def test_loading_csv_parquet_and_missing_files(tmp_path):
    frame = table()
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_parquet(tmp_path / "t.parquet")
    assert load_table(str(tmp_path / "t.csv")).shape == frame.shape
    assert load_table(str(tmp_path / "t.parquet")).shape == frame.shape
    with pytest.raises(DataError, match="data file not found: .*nope.csv; set data.path"):
        load_table(str(tmp_path / "nope.csv"))
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="cannot read .*bad.parquet"):
        load_table(str(tmp_path / "bad.parquet"))
    with pytest.raises(DataError, match="unknown bundled dataset 'iris'"):
        load_table("builtin:iris")


def dated_table(n=300):
    rng = np.random.default_rng(1)
    frame = table(n=n)
    frame["when"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.permutation(n), unit="D")
    frame["customer"] = rng.integers(0, 60, size=n)
    return frame


def test_time_split_orders_train_before_valid_before_test():
    frame = dated_table()
    info = validate_dataset(frame, "y", time_column="when")
    parts = split_dataset(frame, info, strategy="time", time_column="when", test_size=0.2, valid_size=0.2)
    assert {k: len(v) for k, v in parts.items()} == {"train": 180, "valid": 60, "test": 60}
    assert parts["train"]["when"].max() < parts["valid"]["when"].min()
    assert parts["valid"]["when"].max() < parts["test"]["when"].min()
    assert parts["test"]["when"].is_monotonic_increasing  # no shuffling
    assert "when" in parts["test"].columns and "when" not in info.features  # kept in the files, not a feature


def test_group_split_keeps_every_group_in_one_split():
    frame = dated_table()
    info = validate_dataset(frame, "y", group_column="customer")
    assert "customer" not in info.features and "customer" in info.dropped_columns
    parts = split_dataset(frame, info, strategy="group", group_column="customer", seed=3)
    groups = {name: set(part["customer"]) for name, part in parts.items()}
    assert not groups["train"] & groups["valid"] and not groups["train"] & groups["test"]
    assert not groups["valid"] & groups["test"]
    assert sum(len(p) for p in parts.values()) == len(frame)


def test_split_columns_are_checked():
    frame = dated_table()
    with pytest.raises(DataError, match="split.time_column 'date' is not a column"):
        validate_dataset(frame, "y", time_column="date")
    frame.loc[3, "when"] = pd.NaT
    with pytest.raises(DataError, match="split.time_column 'when' has 1 missing values"):
        validate_dataset(frame, "y", time_column="when")


def test_a_split_that_loses_a_class_is_refused():
    frame = dated_table(n=100)
    frame["y"] = np.where(frame["when"] >= frame["when"].quantile(0.8), "late", "early")  # only the last 20%
    info = validate_dataset(frame, "y", time_column="when")  # enough rows per class overall
    with pytest.raises(DataError, match=r"the time split leaves class\(es\) \['late'\] out of train"):
        split_dataset(frame, info, strategy="time", time_column="when")


def test_time_split_never_puts_one_timestamp_on_both_sides():
    frame = dated_table(n=300)
    frame["when"] = frame["when"].dt.to_period("M").dt.to_timestamp()  # many rows share each month
    info = validate_dataset(frame, "y", time_column="when")
    parts = split_dataset(frame, info, strategy="time", time_column="when")
    assert parts["train"]["when"].max() < parts["valid"]["when"].min() <= parts["valid"]["when"].max()
    assert parts["valid"]["when"].max() < parts["test"]["when"].min()
    assert sum(len(p) for p in parts.values()) == 300


# ------------------------------------------------------------------ odd columns and leakage


def test_infinite_values_become_missing_with_a_warning_or_are_refused():
    frame = table(x2=[np.inf, -np.inf] + list(np.linspace(0, 1, 58)))
    info = validate_dataset(frame, "y")
    assert "x2" in info.numeric_features
    assert any("'x2' holds 2 infinite values; they are treated as missing" in w for w in info.warnings)
    with pytest.raises(DataError, match="column 'x2' holds 2 infinite values; replace them, or set preprocessing.inf_values"):
        validate_dataset(frame, "y", inf_values="error")


def test_constant_id_like_and_empty_columns_are_left_out_with_warnings():
    frame = table(
        const=7, row_id=lambda f: np.arange(100, 160), code=lambda f: [f"C{i:04d}" for i in range(60)],
        empty=np.nan, measured=lambda f: np.random.default_rng(1).normal(size=60),
    )
    info = validate_dataset(frame, "y")
    assert info.features == ["x1", "color", "measured"]  # unique floats are measurements, not ids
    assert set(info.dropped_columns) == {"const", "row_id", "code", "empty"}
    text = " | ".join(info.warnings)
    assert "'const' is constant (7 in every row)" in text
    assert "'row_id' is unique per row, like an identifier" in text and "'code' is unique per row" in text
    assert "'empty' is entirely missing" in text
    kept = validate_dataset(frame, "y", drop_constant=False, drop_id_like=False)
    assert {"const", "row_id", "code"} <= set(kept.features)


def test_integer_coded_categoricals_are_declared_in_config():
    frame = table(region=lambda f: np.arange(60) % 4, zone=lambda f: (np.arange(60) % 5).astype(float))
    info = validate_dataset(frame, "y", categorical_columns=["region", "zone"])
    assert info.categorical_features == ["color", "region", "zone"]
    assert validate_dataset(frame, "y").numeric_features == ["x1", "region", "zone"]  # undeclared: numbers
    with pytest.raises(DataError, match=r"categorical.columns names columns not in the table: \['nope'\]"):
        validate_dataset(frame, "y", categorical_columns=["nope"])
    with pytest.raises(DataError, match="'x1' is listed in preprocessing.categorical.columns but holds non-integer"):
        validate_dataset(frame, "y", categorical_columns=["x1"])


def test_datetime_columns_are_expanded_or_dropped():
    frame = table(day=lambda f: pd.date_range("2024-01-01", periods=60, freq="D"))
    assert validate_dataset(frame, "y").datetime_features == ["day"]
    dropped = validate_dataset(frame, "y", datetime="drop")
    assert "day" in dropped.dropped_columns and not dropped.datetime_features
    assert any("'day' is a date/time and preprocessing.datetime is drop" in w for w in dropped.warnings)


@pytest.mark.parametrize(
    "values, message",
    [
        (lambda f: [complex(i, 1) for i in range(60)], "column 'odd' holds complex numbers"),
        (lambda f: pd.to_timedelta(np.arange(60), unit="s"), "column 'odd' holds durations (timedelta)"),
        (lambda f: [[i] for i in range(60)], "column 'odd' holds values of type list, which is not supported"),
        (lambda f: [b"x"] * 60, "column 'odd' holds values of type bytes"),
        (lambda f: pd.period_range("2024-01", periods=60, freq="M"), "column 'odd' has dtype period"),
    ],
)
def test_unsupported_dtypes_are_refused_naming_the_column(values, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_dataset(table(odd=values), "y")


@pytest.mark.parametrize(
    "leak, message",
    [
        (lambda f: f["y"].map({"yes": 1, "no": 0}), "feature 'leak' is a copy of the target 'y'"),
        # many-to-one: each of 6 codes always comes with the same class
        (lambda f: np.where(f["y"] == "yes", (np.arange(60) // 3) % 3, 3 + (np.arange(60) // 3) % 3),
         "the target 'y' is a function of feature 'leak' (each of its 6 values"),
        # a threshold of a continuous number: every "yes" above every "no"
        (lambda f: np.where(f["y"] == "yes", 10.0, 0.0) + np.random.default_rng(2).random(60),
         "the target 'y' is a threshold of feature 'leak'"),
    ],
)
def test_features_the_target_follows_from_are_refused(leak, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(")):
        validate_dataset(table(leak=leak), "y")


def test_honest_features_pass_the_leak_check():
    rng = np.random.default_rng(5)
    frame = table(n=400, noisy=lambda f: np.where(f["y"] == "yes", 1.0, 0.0) + rng.normal(0, 0.7, 400),
                  level=lambda f: rng.choice(list("abcd"), 400))
    assert {"noisy", "level"} <= set(validate_dataset(frame, "y").features)


def test_imbalance_is_detected_and_the_message_names_the_method():
    from tasks.ml.data import imbalance_message

    frame = table(n=200).assign(y=lambda f: np.where(np.arange(200) < 10, "fraud", "ok"))
    info = validate_dataset(frame, "y")
    assert info.minority_class == "fraud" and info.minority_share == pytest.approx(0.05)
    message = imbalance_message(info, "smote", 0.2)
    assert "class 'fraud' is 5.0% of the rows" in message and "SMOTE oversampling of the training rows" in message
    assert imbalance_message(info, "auto", 0.04) is None


def test_rows_repeated_across_splits_are_counted():
    from tasks.ml.data import cross_split_duplicates, split_positions

    frame = table(n=300)
    frame = pd.concat([frame, frame.iloc[:30]], ignore_index=True)  # 30 exact copies
    info = validate_dataset(frame, "y")
    parts = split_positions(frame, info, seed=1)
    counts = cross_split_duplicates(frame, parts, [*info.features, "y"])
    assert set(counts) == {"valid", "test"} and 0 < sum(counts.values()) <= 30
    train = set(frame.iloc[parts["train"]].itertuples(index=False))  # the same count, row by row
    assert counts["test"] == sum(row in train for row in frame.iloc[parts["test"]].itertuples(index=False))
    clean = table(n=300)
    assert cross_split_duplicates(clean, split_positions(clean, validate_dataset(clean, "y"), seed=1),
                                  [*info.features, "y"]) == {"valid": 0, "test": 0}


def test_parts_written_in_chunks_read_back_as_the_rows_taken(tmp_path):
    from tasks.ml.data import read_parquet, split_positions, write_part

    frame = dated_table(n=300)
    frame["note"] = None
    frame.loc[[5, 150, 290], "note"] = "late"  # most chunks have only missing values there, a few text
    info = validate_dataset(frame, "y", drop_columns=["note"])
    dtypes = []
    for name, rows in split_positions(frame, info, seed=2).items():
        write_part(frame, rows, tmp_path / f"{name}.parquet", chunk_rows=25)
        back = read_parquet(tmp_path / f"{name}.parquet")
        taken = frame.take(rows).reset_index(drop=True)
        pd.testing.assert_frame_equal(back.drop(columns="note"), taken.drop(columns="note"))
        assert back["note"].fillna("-").tolist() == taken["note"].fillna("-").tolist()
        dtypes.append(back.dtypes.to_dict())
    # The table's types in every part (a part without any note written alone would say "null").
    assert dtypes[0] == dtypes[1] == dtypes[2] and dtypes[0]["note"] == "str"


def test_memory_is_handed_back_only_after_large_tables(monkeypatch):
    """A full collection holds the GIL for 0.2-0.5 s: not worth it for a few MB."""
    import gc

    from tasks.ml import data

    calls = []
    monkeypatch.setattr(gc, "collect", lambda *a: calls.append(a) or 0)
    data.release_memory(data.RELEASE_ABOVE_BYTES - 1)
    assert calls == []
    data.release_memory(data.RELEASE_ABOVE_BYTES)
    data.release_memory()
    assert len(calls) == 2


def test_a_row_sample_is_seeded_stratified_and_keeps_the_order():
    from tasks.ml.data import sample_rows

    frame = pd.DataFrame({"x": np.arange(1000), "y": ["a"] * 900 + ["b"] * 100})
    sample = sample_rows(frame, "y", 200, seed=3)
    assert len(sample) == 200 and sample["y"].value_counts().to_dict() == {"a": 180, "b": 20}
    assert sample["x"].is_monotonic_increasing and sample.equals(sample_rows(frame, "y", 200, seed=3))
    assert not sample.equals(sample_rows(frame, "y", 200, seed=4))
    assert sample_rows(frame, "y", 5000, seed=3) is frame  # fewer rows than asked: all of them
    plain = sample_rows(frame, "y", 200, seed=3, stratify=False)
    assert len(plain) == 200 and plain["x"].is_monotonic_increasing


def test_a_misspelt_column_gets_the_closest_names_and_the_list_never_hides_them():
    from tasks.ml.data import suggest

    columns = [f"feature_{i:02d}" for i in range(40)] + ["income"]
    message = suggest(["Income"], columns)
    assert message.startswith("did you mean 'income'? columns: feature_00") and "(11 more)" in message
    assert suggest(["incme"], columns).startswith("did you mean 'income'?")
    assert "did you mean" not in suggest(["zzz"], ["a", "b"])


@pytest.mark.parametrize("values, continuous", [
    (np.random.default_rng(0).normal(size=200), True),  # fractional: a quantity
    (np.arange(200) % 150, True),  # 150 whole numbers, 75% of the rows
    (np.arange(200) % 7, False),  # 7 codes: classes
    (np.arange(2000) % 30, False),  # 30 codes, 1.5% of the rows: classes
    (np.where(np.arange(200) % 2, 1.0, 0.0), False),  # 0.0 / 1.0 stored as floats
    (np.array(["a", "b"] * 100), False),
])
def test_a_numeric_target_with_many_values_is_told_apart_from_classes(values, continuous):
    from tasks.ml.data import looks_continuous

    assert looks_continuous(pd.Series(values))[0] is continuous


def test_a_quantity_as_target_gets_one_line_instead_of_a_list_of_classes():
    frame = table(n=300).assign(price=np.random.default_rng(1).lognormal(size=300))
    with pytest.raises(DataError) as caught:
        validate_dataset(frame, "price", task="binary")
    message = str(caught.value)
    assert "\n" not in message and len(message) < 300
    assert message.startswith("data.task is binary, but target 'price' looks like a quantity, not classes: ")
    assert "regression" in message
