"""The bad-input catalogue: every case ends the command `python flows/train.py` with one line that
names the problem and the fix (exit code 2), before any training, and leaves the registry and the
earlier runs of the same artifacts folder exactly as they were. Issue 21's numbered cases each have a
test here (1: stopping, 2-3: one reading of a row, 4: the atomic gate, 5: damaged files, 6: labels,
7: column names, 8: the small ones; REST's deep JSON and /health are in tests/system/test_serving.py).

The command runs in this process (`flows.train.main`, on the session's Prefect test server): a
subprocess per case would spend 3-5 s importing for nothing. `tests/integration/test_cli.py` runs the real
command line for a few of the same cases.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from config.paths import PROJECT_ROOT
from tasks import registry

pytestmark = pytest.mark.usefixtures("prefect_harness")

MODEL = "breast_cancer-diagnosis"


@pytest.fixture(scope="module")
def workspace(trained_smoke, tmp_path_factory):
    """An artifacts folder holding an earlier run and a registered champion (a copy: cases may add
    an empty failed run beside it, nothing else)."""
    _, source = trained_smoke
    root = tmp_path_factory.mktemp("catalogue") / "artifacts"
    shutil.copytree(source, root)
    return root


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and "comet" not in p.parts}


def run_command(monkeypatch, capsys, *overrides: str) -> tuple[int, str]:
    from gauntlet.cli import main

    argv = ["train", "--config", str(PROJECT_ROOT / "config" / "smoke.yaml")]
    for item in overrides:
        argv += ["--set", item]
    code = main(argv)
    return code, capsys.readouterr().err


def table(n: int = 60, **columns) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x1": rng.normal(size=n), "x2": rng.normal(size=n), "y": ["a", "b"] * (n // 2)})
    for name, values in columns.items():
        frame[name] = values
    return frame


def write(path: Path, frame: pd.DataFrame | None = None, text: str | bytes | None = None) -> Path:
    if frame is not None:
        (frame.to_parquet if path.suffix == ".parquet" else lambda p: frame.to_csv(p, index=False))(path)
    elif isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text)
    return path


def garbage_in_numbers(n: int = 60) -> pd.DataFrame:
    frame = table(n)
    frame["x3"] = [f"{v:.3f}" for v in np.linspace(0, 1, n)]
    frame.loc[17, "x3"] = "n/a!"
    return frame


# (id, how to make the data file in `folder` (None: the bundled table), extra overrides, expected text)
CASES = [
    ("missing file", lambda d: d / "absent.csv", [], "data file not found: {d}/absent.csv; set data.path to an existing"),
    ("empty file", lambda d: write(d / "empty.csv", text=""), [], "is empty (0 bytes: no header, no rows)"),
    ("header only", lambda d: write(d / "header.csv", text="x1,x2,y\n"), [],
     "the table has no rows; point data.path at a file with data"),
    ("corrupt parquet", lambda d: write(d / "bad.parquet", text=b"PAR1" + bytes(range(256)) * 4), [],
     "check that the file is a valid CSV or Parquet table"),
    ("ragged csv row", lambda d: write(d / "ragged.csv", text="x1,x2,y\n1,2,a\n3,4,5,b\n"), [],
     "Expected 3 columns, got 4: 3,4,5,b; every row needs the header's 3 fields"),
    ("target missing", lambda d: write(d / "t.csv", table()), ["data.target=label"],
     "target column 'label' not found in {d}/t.csv; set data.target: columns: x1, x2, y"),
    ("one class", lambda d: write(d / "t.parquet", table(y=["same"] * 60)), [],
     "target 'y' has a single class ('same'); a classifier needs at least 2 classes"),
    ("target all missing", lambda d: write(d / "t.parquet", table(y=[None] * 60)), [],
     "target column 'y' is empty (all values missing); choose another data.target"),
    ("too few rows in a class", lambda d: write(d / "t.parquet", table(y=["a"] * 58 + ["b"] * 2)), [],
     "class(es) {{'b': 2}} of 'y' have fewer than 5 rows, too few to appear in train, valid and test; add rows, merge rare classes"),
    ("a quantity as target of a binary task", lambda d: write(d / "t.parquet", table(y=np.linspace(0.5, 99.5, 60))),
     ["data.task=binary"], "data.task is binary, but target 'y' looks like a quantity, not classes: it holds "
     "fractional numbers (60 distinct values); set data.task: regression (or auto)"),
    ("a classification metric for a regression", lambda d: write(d / "t.parquet", table(y=np.linspace(0.5, 99.5, 60))),
     ["evaluation.comparison_metric=fbeta"], "evaluation.comparison_metric fbeta is a classification metric, but this "
     "is a regression task; set it to auto (r2)"),
    ("garbage in a numeric column", lambda d: write(d / "t.csv", garbage_in_numbers()), [],
     "column 'x3' holds numbers but 1 of its cells are not (row 17: 'n/a!' counting rows from 0); fix or blank"),
    ("inf values refused", lambda d: write(d / "t.parquet", table(x2=[np.inf] * 3 + [0.5] * 57)),
     ["preprocessing.inf_values=error"], "column 'x2' holds 3 infinite values; replace them, or set preprocessing.inf_values"),
    ("values beyond float32", lambda d: write(d / "t.parquet", table(x2=[1e300] * 3 + [0.5] * 57)), [],
     "column 'x2' holds values up to 1e+300, beyond what the models compute with (float32"),
    ("duplicate column names", lambda d: write(d / "dup.csv", text="x1,x1,y\n" + "1,2,a\n3,4,b\n" * 30), [],
     "duplicate column names ['x1'] in {d}/dup.csv; rename them so every column is unique"),
    ("latin-1 csv", lambda d: write(d / "latin1.csv", text=b"x1,x2,city,y\n" + b"".join(
        b"%d,%d,M\xfcnchen,%s\n" % (i, i * 2, b"ab"[i % 2:i % 2 + 1]) for i in range(60))), [],
     "latin1.csv is not UTF-8 text: byte 0xfc is not UTF-8, as in a latin-1 or Windows-1252 file; save it as UTF-8"),
    ("unknown config key", None, ["search.n_trails=3"], "search.n_trails: unknown key; allowed keys here:"),
    ("wrong type in config", None, ["models.lightgbm.n_trials=many"],
     "models.lightgbm.n_trials: Input should be a valid integer, unable to parse string as an integer (got 'many')"),
    ("unknown model family", None, ["models.tabnet.n_trials=3"], "models.tabnet: unknown key; allowed keys here: "
     "logistic_regression, linear, random_forest, lightgbm, xgboost, catboost"),
    ("threshold outside [0, 1]", None, ["evaluation.deployment_threshold=1.5"], "deployment_threshold 1.5 is outside [0, 1]"),
    ("negative trial count", None, ["models.xgboost.n_trials=-3"],
     "models.xgboost.n_trials: Input should be greater than or equal to 1 (got -3)"),
    ("storage unreachable", None, ["search.storage=postgresql://gauntlet@127.0.0.1:9/optuna"],
     "search.storage postgresql://gauntlet@127.0.0.1:9/optuna cannot be reached (connection failed"),
    ("storage password in plain text", None, ["search.storage=postgresql://gauntlet:hunter2@127.0.0.1:9/optuna"],
     "storage holds a password in plain text"),
    ("output folder not writable", None, ["artifacts_dir={d}/a-file/artifacts"],
     "artifacts_dir {d}/a-file/artifacts is not writable ({d}/a-file is a file, not a folder); choose a folder"),
]


@pytest.mark.parametrize("make, overrides, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_ends_with_one_line_before_training_and_touches_nothing(
    make, overrides, expected, workspace, tmp_path, monkeypatch, capsys
):
    (tmp_path / "a-file").write_text("not a folder")
    before = snapshot(workspace)
    runs_before = set((workspace / "runs").iterdir())
    data = [f"data.path={make(tmp_path)}", "data.target=y"] if make else []
    code, err = run_command(monkeypatch, capsys, f"artifacts_dir={workspace}", *data,
                            *[o.format(d=tmp_path) for o in overrides])
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, err[-3000:]
    assert lines[-1].startswith("error: ") and expected.format(d=tmp_path) in lines[-1], lines[-1]
    assert "Traceback" not in err and "hunter2" not in err
    # Nothing trained, nothing touched: the earlier run and the registry are byte for byte as they were,
    # and a run that began (validation happens inside the flow) holds no split, candidate or model.
    assert snapshot(workspace).items() >= before.items()
    for run in set((workspace / "runs").iterdir()) - runs_before:
        assert not [p for p in run.rglob("*") if p.suffix in (".parquet", ".pkl", ".joblib")], list(run.rglob("*"))
    assert registry.list_versions(workspace / "registry", MODEL) == [1]
    assert registry.get_alias(workspace / "registry", MODEL) == 1


def test_inf_values_by_default_become_missing_with_a_warning_naming_the_column():
    from tasks.ml.data import validate_dataset

    info = validate_dataset(table(x2=[np.inf] * 3 + [0.5] * 57), "y")
    assert "x2" in info.numeric_features
    assert "column 'x2' holds 3 infinite values; they are treated as missing (preprocessing.inf_values)" in info.warnings


def test_a_full_disk_while_registering_keeps_the_old_champion(workspace, monkeypatch, capsys):
    """The model file cannot be written (ENOSPC after a partial write): one line naming the disk, and
    the registry as it was: no new version, no staging left, the alias on the old champion."""
    from tasks import registry as reg

    def full_disk(pipeline, path):
        Path(path).write_bytes(b"half a model")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(reg, "save_pipeline", full_disk)
    before = snapshot(workspace / "registry")
    code, err = run_command(monkeypatch, capsys, f"artifacts_dir={workspace}", "tracking.backend=none",
                            "models.random_forest.enabled=false", "models.xgboost.enabled=false", "models.catboost.enabled=false",
                            "models.lightgbm.enabled=false", "evaluation.deployment_threshold=0.5",
                            "evaluation.compare_with_champion=false")  # a tie with the champion registers nothing
    last = err.strip().splitlines()[-1]
    assert code == 2, err[-3000:]
    assert last.startswith("error: evaluate: no space left on the disk writing ") and "model.pkl" in last, last
    assert "free space, or set artifacts_dir (and registry.path) to a folder on a larger disk" in last
    assert snapshot(workspace / "registry") == before
    assert not list((workspace / "registry" / MODEL).glob(".staging-*"))
    assert reg.verify(workspace / "registry") == []


def _damage_metadata(key):
    def damage(model_dir: Path) -> Path:
        path = model_dir / "1" / "metadata.json"
        meta = json.loads(path.read_text())
        del meta[key]
        path.write_text(json.dumps(meta))
        return path
    return damage


def _write_aliases(text):
    def damage(model_dir: Path) -> Path:
        (model_dir / "aliases.json").write_text(text(model_dir / "aliases.json"))
        return model_dir / "aliases.json"
    return damage


DAMAGES = {
    "truncated aliases.json": _write_aliases(lambda p: p.read_text()[: len(p.read_text()) // 2]),
    "an alias that is not a number": _write_aliases(lambda p: '{"champion": "one"}'),
    "a list in place of the aliases": _write_aliases(lambda p: '["champion", 1]'),
    "metadata without model_sha256": _damage_metadata("model_sha256"),
    "metadata without features": _damage_metadata("features"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_registry_file_is_one_line_from_train_predict_and_serve(
    damage, workspace, tmp_path, monkeypatch, capsys
):
    """Each command names the damaged file and the fix, exit code 2, no traceback; train before any search."""
    from gauntlet.cli import main
    from tasks.ml.data import load_table

    artifacts = tmp_path / "artifacts"
    shutil.copytree(workspace / "registry", artifacts / "registry")
    damaged = DAMAGES[damage](artifacts / "registry" / MODEL)
    rows = tmp_path / "rows.csv"
    load_table("builtin:breast_cancer").drop(columns=["diagnosis"]).head(5).to_csv(rows, index=False)
    commands = {
        "train": lambda: run_command(monkeypatch, capsys, f"artifacts_dir={artifacts}"),
        "predict": lambda: (main(["predict", "--input", str(rows), "--output", str(tmp_path / "p.csv"),
                                  "--registry", str(artifacts / "registry")]), capsys.readouterr().err),
        "serve": lambda: (main(["serve", "--registry", str(artifacts / "registry"), "--port", "9"]),
                          capsys.readouterr().err),
    }
    for command, run in commands.items():
        code, err = run()
        last = [line for line in err.strip().splitlines() if line.strip()][-1]
        assert code == 2, f"{command}: {err[-2000:]}"
        assert last.startswith("error: ") and str(damaged) in last and "gauntlet registry verify" in last, last
        assert "Traceback" not in err, f"{command}: {err[-2000:]}"
    assert not (artifacts / "runs").exists()  # train stopped before its run began
    assert any(str(damaged.parent.name) in p or "aliases" in p for p in registry.verify(artifacts / "registry"))


RUN_DAMAGES = {
    "truncated manifest": lambda run: _cut(run / "manifest.json"),
    "manifest without the data hash": lambda run: _edit(run / "manifest.json", lambda m: m["data"].pop("sha256")),
    "candidate without its family": lambda run: _edit(next((run / "candidates").glob("*.json")),
                                                      lambda c: c.pop("family")),
    "missing manifest": lambda run: (run / "manifest.json").unlink() or run / "manifest.json",
}


def _cut(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[:40])
    return path


def _edit(path: Path, change) -> Path:
    payload = json.loads(path.read_text())
    change(payload)
    path.write_text(json.dumps(payload))
    return path


@pytest.mark.parametrize("damage", list(RUN_DAMAGES))
def test_a_damaged_run_file_is_one_line_from_evaluate(damage, workspace, tmp_path, capsys):
    """Issue 21, case 5: a run's manifest or candidate file read by `gauntlet evaluate` is validated."""
    from gauntlet.cli import main

    source = next(p for p in sorted((workspace / "runs").iterdir()) if list(p.glob("candidates/*.json")))
    run = tmp_path / source.name
    shutil.copytree(source, run)
    damaged = RUN_DAMAGES[damage](run)
    code = main(["evaluate", "--run", str(run)])
    err = capsys.readouterr().err
    last = [line for line in err.strip().splitlines() if line.strip()][-1]
    assert code == 2, err[-2000:]
    assert last.startswith("error: the run file ") and str(damaged) in last and "train again" in last, last
    assert "Traceback" not in err, err[-2000:]


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path, capsys):
    from gauntlet.cli import main

    config = tmp_path / "latin1.yaml"
    config.write_bytes("data:\n  path: builtin:breast_cancer\n  target: diagnosis  # r\u00e9sultat\n".encode("latin-1"))
    code = main(["train", "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert err.strip() == (f"error: config file {config} is not UTF-8 text (byte 0xe9 at offset 60); save it as UTF-8")


@pytest.mark.parametrize("case", ["output folder takes no file", "header only", "latin-1"])
def test_prediction_input_and_output_problems_are_named_before_scoring(case, workspace, tmp_path, capsys):
    from gauntlet.cli import main
    from tasks.ml.data import load_table

    rows = load_table("builtin:breast_cancer").drop(columns=["diagnosis"]).head(5)
    source, output = tmp_path / "rows.csv", tmp_path / "out.csv"
    rows.to_csv(source, index=False)
    if case == "output folder takes no file":
        (tmp_path / "a-file").write_text("not a folder")
        output, expected = tmp_path / "a-file" / "out.csv", "--output " + str(tmp_path / "a-file")
    elif case == "header only":
        source.write_text(",".join(rows.columns) + "\n")
        expected = "holds no rows (a header only)"
    else:
        text = source.read_text().splitlines()
        source.write_bytes(("\n".join(text[:3]) + "\n").encode() + text[3].replace(text[3][:1], "\u00fc", 1).encode(
            "latin-1") + b"\n")
        expected = "is not UTF-8 text"
    code = main(["predict", "--input", str(source), "--output", str(output), "--registry", str(workspace / "registry")])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert code == 2 and "Traceback" not in err, err[-2000:]
    assert last.startswith("error: ") and expected in last, last
    assert not output.exists()


def test_a_sensitive_column_named_like_a_path_gets_a_safe_report_file(tmp_path):
    """Issue 21, case 7: a column named `region/zone` became a folder in the report's file name."""
    from flows.train import train
    from tasks.ml.data import load_table
    from tests.helpers import smoke_params

    frame = load_table("builtin:breast_cancer")
    frame["region/zone"] = np.where(np.arange(len(frame)) % 2, "north/east", "south")
    frame.to_parquet(tmp_path / "cancer.parquet")
    report = train(params=smoke_params(tmp_path, **{
        "data.path": str(tmp_path / "cancer.parquet"), "evaluation.sensitive_columns": ["region/zone"],
        "models.random_forest.enabled": False, "models.lightgbm.enabled": False, "models.xgboost.enabled": False, "models.catboost.enabled": False,
        "tracking.backend": "none"}))
    files = [p.name for p in (Path(report.run_dir) / "reports").glob("fairness_*.csv")]
    assert len(files) == 1 and files[0].startswith("fairness_region_zone-"), files
    assert set(pd.read_csv(Path(report.run_dir) / "reports" / files[0])["group"]) == {"north/east", "south"}


def test_an_unused_level_of_a_category_target_is_ignored_with_a_warning():
    """Issue 21, case 8: a category target with a level no row holds was refused as a class with 0 rows."""
    from tasks.ml.data import validate_dataset

    frame = table()
    frame["y"] = pd.Categorical(frame["y"], categories=["a", "b", "never"])
    info = validate_dataset(frame, "y")
    assert info.classes == ["a", "b"] and info.task == "binary"
    assert "target 'y' is a category with level(s) no row holds, ignored: ['never']" in info.warnings


def test_labels_that_differ_only_by_case_or_spaces_warn_and_merge_on_request():
    """Issue 21, case 6: `yes`, `Yes`, ` yes`, `YES ` trained silently as separate classes."""
    from config.schema import load_config
    from tasks import data
    from tasks.ml.data import validate_dataset

    frame = table(y=["yes", "Yes", " yes", "YES ", "no", "No"] * 10)
    info = validate_dataset(frame, "y")
    assert len(info.classes) == 6
    assert any("['yes', 'Yes', ' yes', 'YES ']" in w or "differ only by case" in w and "' yes'" in w
               for w in info.warnings), info.warnings
    assert any("['no', 'No']" in w and "data.normalize_labels: true" in w for w in info.warnings), info.warnings
    config = load_config(PROJECT_ROOT / "config" / "smoke.yaml", {"data.target": "y", "data.normalize_labels": True})
    merged = data.validate_dataset(frame.copy(), config)
    assert merged.task == "binary" and len(merged.classes) == 2 and set(merged.classes) <= {"yes", "Yes", " yes",
                                                                                           "YES ", "no", "No"}
    assert not any("differ only by case" in w for w in merged.warnings)


def test_integer_column_names_train_and_predict(tmp_path):
    """Issue 21, case 7: a table whose column names are integers (a DataFrame, or Parquet written from one)."""
    import gauntlet

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(150, 3)))
    frame[3] = np.where(frame[0] + rng.normal(scale=0.5, size=150) > 0, "a", "b")
    overrides = {"artifacts_dir": str(tmp_path), "tracking.backend": "none", "search.storage": "none",
                 "models.random_forest.enabled": False, "models.xgboost.enabled": False, "models.catboost.enabled": False,
                 "models.lightgbm.enabled": False, "models.logistic_regression.n_trials": 2,
                 "evaluation.deployment_threshold": 0.0, "evaluation.explain": False}
    report = gauntlet.train(frame, target=3, config=PROJECT_ROOT / "config" / "smoke.yaml", overrides=overrides)
    assert report.registered
    model = gauntlet.load_model(registry=tmp_path / "registry")
    assert model.features == ["0", "1", "2"]
    assert set(model.predict(frame.drop(columns=[3]))) <= {"a", "b"}  # integer names, as trained


def _offset_rows(n_per_change: int = 90) -> pd.DataFrame:
    """Hourly Europe/Paris timestamps written with their UTC offsets, across both 2024 DST changes, and
    cells holding None, NA and nothing in a numeric and a categorical column."""
    rng = np.random.default_rng(1)
    times = [*pd.date_range("2024-03-30 12:00", periods=n_per_change, freq="h", tz="Europe/Paris"),
             *pd.date_range("2024-10-26 12:00", periods=n_per_change, freq="h", tz="Europe/Paris")]
    n = len(times)
    x1 = rng.normal(size=n)
    channel = rng.choice(["web", "store", "phone"], size=n).astype(object)
    x2 = rng.normal(size=n).round(3).astype(object)
    for k, i in enumerate(range(0, n, 7)):
        token = ["None", "NA", "", " NA "][k % 4]
        channel[i] = token
        x2[i + 3] = token
    y = np.where(x1 + (channel == "web") + rng.normal(scale=0.7, size=n) > 0.5, "yes", "no")
    return pd.DataFrame({"at": [t.isoformat() for t in times], "x1": x1, "x2": x2, "channel": channel, "y": y})


def test_offset_datetimes_across_dst_train_batch_score_and_rest_agree(tmp_path):
    """Issue 21, case 2 and 3: a CSV with Europe/Paris offsets across a DST change trains, batch-scores
    itself and is accepted by REST; rows holding None, NA and empty cells get identical probabilities."""
    from fastapi.testclient import TestClient

    import gauntlet
    from flows.predict import predict
    from tasks.serving import ModelHolder, create_app

    rows = _offset_rows()
    assert {"+01:00", "+02:00"} <= {t[-6:] for t in rows["at"]}
    (tmp_path / "rows.csv").write_text(rows.to_csv(index=False))
    overrides = {"artifacts_dir": str(tmp_path / "artifacts"), "tracking.backend": "none", "search.storage": "none",
                 "models.random_forest.enabled": False, "models.xgboost.enabled": False, "models.catboost.enabled": False,
                 "models.lightgbm.enabled": False, "models.logistic_regression.n_trials": 2,
                 "evaluation.deployment_threshold": 0.0, "evaluation.explain": False}
    report = gauntlet.train(tmp_path / "rows.csv", target="y", config=PROJECT_ROOT / "config" / "smoke.yaml",
                            overrides=overrides)
    assert report.registered
    registry_dir = tmp_path / "artifacts" / "registry"
    model = gauntlet.load_model(registry=registry_dir)
    at = model.metadata["input_schema"]["columns"][0]
    assert at["name"] == "at" and at["kind"] == "datetime" and at["dtype"].endswith(", UTC]"), at
    manifest = json.loads((Path(report.run_dir) / "manifest.json").read_text())
    warned = [w for w in manifest["dataset"]["warnings"] if w.startswith("column 'channel'")]
    assert warned and "'None'" in warned[0] and "data.na_values" in warned[0], manifest["dataset"]["warnings"]

    predict(input_path=str(tmp_path / "rows.csv"), output_path=str(tmp_path / "scored.csv"),
            registry_dir=str(registry_dir))
    batch = pd.read_csv(tmp_path / "scored.csv")
    assert len(batch) == len(rows)

    sent = rows.drop(columns=["y"]).astype(object).to_dict(orient="records")  # text cells as written
    for row in sent[14::28]:
        assert row["channel"] == ""
        row["channel"] = None  # JSON null, as a client sends a missing value; other empty cells stay ""
    client = TestClient(create_app(ModelHolder(registry_dir, reload_every_s=None)))
    answer = client.post("/predict", json=sent)
    assert answer.status_code == 200, answer.text
    rest = pd.DataFrame([p["probabilities"] for p in answer.json()["predictions"]])
    for label in ("no", "yes"):
        assert rest[label].tolist() == batch[f"proba_{label}"].tolist()
    assert [p["prediction"] for p in answer.json()["predictions"]] == batch["prediction"].tolist()


def test_missing_value_tokens_are_configurable_and_named_at_training(tmp_path):
    """Issue 21, case 3: a real category called "None" was silently made missing; data.na_values decides."""
    from tasks.ml.data import load_table, token_warning

    rows = _offset_rows(20)
    rows.to_csv(tmp_path / "rows.csv", index=False)
    read = load_table(str(tmp_path / "rows.csv"))
    assert read["channel"].isna().sum() == (rows["channel"].str.strip().isin(["None", "NA", ""])).sum() == 6
    assert read.attrs["na_tokens"]["channel"] == {"None": 2, "NA": 2, " NA ": 1}
    assert read["x2"].dtype == "float64" and read["x2"].isna().sum() == 6  # " NA " in numbers is missing too
    assert "'None' (2 rows)" in token_warning("channel", read.attrs["na_tokens"]["channel"])
    kept = load_table(str(tmp_path / "rows.csv"), na_values=[""])
    assert {"None", "NA", " NA "} <= set(kept["channel"].dropna()) and kept["channel"].isna().sum() == 1
    rows.astype({"x2": str}).to_parquet(tmp_path / "rows.parquet")  # Parquet text cells are read the same way
    assert load_table(str(tmp_path / "rows.parquet"))["channel"].isna().sum() == read["channel"].isna().sum()


# --- Issue 21, case 1: a training asked to stop (Ctrl-C, SIGTERM), as a terminal and a process manager do ---

FAMILIES = ("logistic_regression", "lightgbm")  # LightGBM: a stop also reaches into its fits


def _start(artifacts: Path, home: Path, quiet: bool, *extra: str, trials: int = 3000) -> subprocess.Popen:
    cmd = [sys.executable, "flows/train.py", "--config", "config/smoke.yaml", "--set", f"artifacts_dir={artifacts}",
           "--set", "search.storage=auto", "--set", "tracking.backend=none", *(["--quiet"] if quiet else []), *extra]
    for family in FAMILIES:
        cmd += ["--set", f"models.{family}.n_trials={trials}"]
    cmd += ["--set", "models.random_forest.enabled=false", "--set", "models.xgboost.enabled=false", "--set", "models.catboost.enabled=false",
            "--set", "models.catboost.enabled=false"]
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "COMET_API_KEY")}
    return subprocess.Popen(cmd, cwd=PROJECT_ROOT, env={**env, "PREFECT_HOME": str(home)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # its own group: a terminal's


def _sizes(artifacts: Path) -> dict[Path, int]:
    folder = artifacts / "optuna"
    return {p: p.stat().st_size for p in folder.glob("*.journal")} if folder.is_dir() else {}


def _wait_for_trials(artifacts: Path, process: subprocess.Popen, timeout_s: float = 120) -> None:
    """Until every family's study holds trials, and one has grown by a few in this process (a family whose
    trials all ended before an earlier stop is reused, not searched)."""
    before, deadline = _sizes(artifacts), time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        now = _sizes(artifacts)
        if len(now) == len(FAMILIES) and any(size > before.get(p, 0) + 2000 for p, size in now.items()):
            return
        time.sleep(0.5)
    raise AssertionError(f"no trials within {timeout_s} s: {process.communicate()[1][-3000:]}")


def _processes_with(home: Path) -> list[int]:
    """Processes whose environment names this test's PREFECT_HOME (the run and its local server)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if f"PREFECT_HOME={home}".encode() in Path(f"/proc/{pid}/environ").read_bytes():
                found.append(int(pid))
        except OSError:
            continue
    return found


def _left_after_exit(home: Path, wait_s: float = 15.0) -> list[str]:
    """The command lines of the run's processes still there after `wait_s` (its local server and search
    processes stop on their own once the run has exited; on a loaded machine that can take seconds)."""
    deadline = time.monotonic() + wait_s
    while _processes_with(home) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = []
    for pid in _processes_with(home):
        try:
            left.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200])
        except OSError:
            continue
    return left


def test_ctrl_c_then_sigterm_stop_the_run_and_a_rerun_resumes(tmp_path):
    """Issue 21, case 1: Ctrl-C (SIGINT to the process group) and SIGTERM end a long search at the next trial
    boundary with one line, exit code 130 / 143, no process left, nothing registered; the same command again
    resumes the studies."""
    artifacts, home = tmp_path / "artifacts", tmp_path / "prefect"
    try:
        _stop_twice(artifacts, home)
    finally:  # a failed check leaves no run, server or search process behind
        for pid in _processes_with(home):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _stop_twice(artifacts: Path, home: Path) -> None:
    run = _start(artifacts, home, quiet=True)
    _wait_for_trials(artifacts, run)
    os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C at a terminal sends
    out, err = run.communicate(timeout=60)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert run.returncode == 130, err[-3000:]
    assert len(lines) == 1 and lines[0].startswith("stopped by SIGINT after ") and "rerun to resume" in lines[0], err
    assert "Traceback" not in out + err and "Logging error" not in out + err
    assert _left_after_exit(home) == []  # the local Prefect server went with the run
    assert not (artifacts / "registry").exists()  # nothing registered

    # The searches in child processes this time: the run passes a SIGTERM sent to it alone on to them.
    again = _start(artifacts, home, False, "--set", "search.executor=processes")
    _wait_for_trials(artifacts, again)
    asked = time.monotonic()
    again.send_signal(signal.SIGTERM)  # a process manager's stop: to the process only
    out, err = again.communicate(timeout=60)
    print(f"SIGTERM to exit: {time.monotonic() - asked:.1f} s")
    assert again.returncode == 143, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("stopped by SIGTERM after ")
    numbers = [int(n) for n in re.findall(r"\] trial (\d+) \(", out + err)]
    assert numbers and min(numbers) > 0, numbers[:5]  # each study went on from its finished trials
    assert "Traceback" not in out + err and "Logging error" not in out + err
    assert _left_after_exit(home) == [] and not (artifacts / "registry").exists()


# --- Issue 21, case 4: the champion comparison and the alias move under one lock ---


@pytest.mark.parametrize("first", ["weak", "strong"])
def test_two_concurrent_trainings_leave_the_alias_on_the_better_model(tmp_path, monkeypatch, first):
    """Both gates are decided (no champion yet) before either registers; `first` registers first. The
    comparison is made again under the registry lock, so the alias ends on the stronger model either way."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from flows.train import train
    from tasks.ml.data import load_table
    from tests.helpers import smoke_params

    mean_and_worst = [c for c in load_table("builtin:breast_cancer").columns if c.startswith(("mean ", "worst "))]
    weak = {"data.drop_columns": mean_and_worst, "evaluation.deployment_threshold": 0.3,
            "models.random_forest.enabled": False, "models.xgboost.enabled": False, "models.catboost.enabled": False,
            "models.lightgbm.enabled": False, "tracking.backend": "none", "evaluation.explain": False}
    strong = {**weak, "data.drop_columns": []}
    real, both_gated, first_done = registry.register_model, threading.Barrier(2), threading.Event()

    def in_order(root, name, pipeline, metadata, **options):
        both_gated.wait(timeout=300)
        kind = "weak" if len(metadata["features"]) < 20 else "strong"
        if kind != first:
            first_done.wait(timeout=300)
        try:
            return real(root, name, pipeline, metadata, **options)
        finally:
            first_done.set()

    monkeypatch.setattr(registry, "register_model", in_order)
    with ThreadPoolExecutor(2) as pool:
        reports = dict(zip(("weak", "strong"), pool.map(lambda o: train(params=smoke_params(tmp_path, **o)),
                                                        (weak, strong)), strict=True))
    root, name = tmp_path / "registry", "breast_cancer-diagnosis"
    assert reports["weak"].gate.passed and reports["strong"].gate.passed  # each gate saw no champion
    champion = registry.read_metadata(root, name, registry.get_alias(root, name))
    assert champion["run_id"] == reports["strong"].run_id
    if first == "weak":  # the stronger one beat the weak champion registered meanwhile
        assert registry.list_versions(root, name) == [1, 2] and "beats the champion v1" in champion["gate"]["reason"]
    else:  # the weaker one, gated again against the strong champion, adds nothing
        assert registry.list_versions(root, name) == [1] and not reports["weak"].registered
        assert "champion stays at v1" in reports["weak"].registry_note
