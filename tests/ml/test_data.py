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
        (table(), "label", "target column 'label' not found; set data.target to one of: x1, color, y"),
        (table().assign(y="only"), "y", "has a single class ('only')"),
        (table().assign(y=None), "y", "is empty (all values missing)"),
        (table().assign(y=["rare"] * 2 + ["common"] * 58), "y", "have fewer than 5 rows"),
        (table(leak=lambda f: f["y"].map({"yes": "Y", "no": "N"})), "y", "feature 'leak' is a copy of the target"),
        (table(x2=[np.inf] + [0.0] * 59), "y", "column 'x2' holds infinite values"),
        (table().iloc[:0], "y", "the table has no rows"),
        (table()[["y"]], "y", "no feature columns left"),
    ],
)
def test_bad_tables_are_refused_with_a_named_problem(frame, target, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
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
