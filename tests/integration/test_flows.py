"""The real `train` flow on config/smoke.yaml: real Prefect runs, Optuna studies, model fits, Comet
offline archives and the local registry."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest

from tasks import registry
from tasks.modeling import file_sha256
from tests.helpers import comet_archives, smoke_params

MODEL = "breast_cancer-diagnosis"  # the default registry name: <data>-<target>
FAMILIES = ["logistic_regression", "random_forest", "lightgbm", "xgboost"]  # smoke.yaml leaves CatBoost out

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    from flows.train import train

    artifacts = tmp_path_factory.mktemp("artifacts")
    report = train(params=smoke_params(artifacts))
    return report, artifacts


def test_smoke_run_registers_a_champion(smoke_run, breast_cancer):
    report, artifacts = smoke_run
    assert report.registered and report.registry_version == 1
    assert report.gate.passed and report.gate.test_value >= 0.7
    assert {c.family for c in report.candidates} == set(FAMILIES)
    assert all(c.status == "ok" and c.n_trials == 2 for c in report.candidates)

    root = artifacts / "registry"
    assert registry.get_alias(root, MODEL) == 1
    version_dir = root / MODEL / "1"
    metadata = json.loads((version_dir / "metadata.json").read_text())
    assert metadata["family"] == report.champion
    assert metadata["model_sha256"] == file_sha256(version_dir / "model.pkl")
    assert metadata["run_id"] == report.run_id
    assert metadata["test_metrics"]["fbeta"] == pytest.approx(report.test_metrics["fbeta"])
    model = registry.load_model(root, MODEL)
    new_rows = breast_cancer.drop(columns="diagnosis").sample(25, random_state=1)
    predictions = model.predict(new_rows)
    assert set(predictions) <= {"benign", "malignant"}
    truth = breast_cancer.loc[new_rows.index, "diagnosis"].to_numpy()
    assert (predictions == truth).mean() > 0.8


def test_run_directory_holds_splits_manifest_and_reports(smoke_run, breast_cancer):
    report, _ = smoke_run
    run = Path(report.run_dir)
    sizes = {}
    for name in ("train", "valid", "test"):
        part = pd.read_parquet(run / "splits" / f"{name}.parquet")
        assert list(part.columns) == list(breast_cancer.columns)  # every original column kept
        sizes[name] = len(part)
    assert sum(sizes.values()) == len(breast_cancer)
    manifest = json.loads((run / "manifest.json").read_text())
    assert len(manifest["data"]["sha256"]) == 64 and len(manifest["config_hash"]) == 64
    assert {k: v["rows"] for k, v in manifest["splits"].items()} == sizes
    assert set(manifest["splits"]["test"]["class_balance"]) == {"benign", "malignant"}
    assert manifest["seeds"] == {"split": 42, "search": 42}
    assert {"prefect", "scikit-learn", "optuna", "lightgbm"} <= set(manifest["packages"])

    perf = pd.read_csv(run / "reports" / "performance_metrics.csv")
    assert sorted(perf.loc[perf["split"] == "valid", "family"]) == sorted(FAMILIES)
    test_row = perf[perf["split"] == "test"]
    assert list(test_row["family"]) == [report.champion]
    for col in ("accuracy", "precision", "recall", "f1", "fbeta", "roc_auc"):
        assert 0.5 < float(test_row[col].iloc[0]) <= 1.0
    conf = pd.read_csv(run / "reports" / "confusion_matrix_summary.csv")
    assert list(conf.columns) == ["class", "TP", "TN", "FP", "FN"]
    assert conf[["TP", "TN", "FP", "FN"]].sum(axis=1).iloc[0] == sizes["test"]
    assert conf["class"].iloc[0] == "malignant"
    assert (run / "reports" / "confusion_matrix.png").stat().st_size > 1000
    assert (run / "reports" / "roc_curve.png").stat().st_size > 1000
    assert json.loads((run / "report.json").read_text())["champion"] == report.champion
    for family in FAMILIES:
        assert (run / "candidates" / f"{family}.pkl").is_file()
        assert len(pd.read_csv(run / "candidates" / f"{family}_trials.csv")) == 2


def test_comet_offline_archives_hold_what_was_logged(smoke_run):
    report, artifacts = smoke_run
    archives = comet_archives(artifacts / "comet")
    assert len(archives) == 5  # one experiment per family search, one for the evaluation
    for cand in report.candidates:
        exp = next(a for a in archives.values() if a["params"].get("family") == cand.family)
        assert exp["file"] == Path(cand.tracking_archive) and exp["file"].stem.endswith(cand.tracking_key[:8])
        assert exp["file"].name.startswith(f"{report.run_id}-{cand.family}-")
        steps = [step for step, _ in exp["metrics"]["valid_fbeta"]]
        assert steps == [0, 1]  # one point per trial, step = trial number
        for name, value in cand.best_params.items():
            assert exp["params"][f"best_{name}"] == value
        assert exp["metrics"]["best_valid_fbeta"][0][1] == pytest.approx(cand.valid_metrics["fbeta"])
        assert exp["others"]["status"] == "ok"
        assert ("dataframe", "trials.csv") in exp["uploads"]  # the study's trials table
        assert ("model-element", f"{cand.family}.pkl") in exp["uploads"]
    evaluation = next(a for a in archives.values() if "champion_family" in a["others"])
    assert evaluation["others"]["champion_family"] == report.champion
    # report.json lists every archive of the run, in the run's own folder.
    saved = json.loads((Path(report.run_dir) / "report.json").read_text())
    assert sorted(saved["tracking_archives"]) == sorted(str(a["file"]) for a in archives.values())
    assert all(Path(p).parent.name == report.run_id for p in saved["tracking_archives"])
    assert evaluation["metrics"]["test_fbeta"][0][1] == pytest.approx(report.test_metrics["fbeta"])
    assert str(evaluation["others"]["gate_passed"]).lower() == "true"
    assert "confusion-matrix" in [kind for kind, _ in evaluation["uploads"]]
    matrix = evaluation["others"]["_confusion_matrix"]  # the test split's counts, actual x predicted
    assert sorted(matrix["labels"]) == ["benign", "malignant"]
    test_rows = json.loads((Path(report.run_dir) / "manifest.json").read_text())["splits"]["test"]["rows"]
    assert sum(map(sum, matrix["matrix"])) == test_rows and len(matrix["matrix"]) == 2
    # The data and config hashes reach the tracker (every experiment) and the registered model.
    manifest = json.loads((Path(report.run_dir) / "manifest.json").read_text())
    for experiment in archives.values():
        assert experiment["params"]["data_sha256"] == manifest["data"]["sha256"]
        assert experiment["params"]["config_hash"] == manifest["config_hash"]
    metadata = registry.load_model(artifacts / "registry", MODEL).metadata
    assert metadata["data_sha256"] == manifest["data"]["sha256"]
    assert metadata["config_hash"] == manifest["config_hash"]


def test_champion_below_threshold_is_not_registered_and_alias_stays(smoke_run):
    """Re-evaluate the same run with a gate no model can pass (log loss <= 0, lower is better)."""
    from flows.evaluate import evaluate

    report, artifacts = smoke_run
    root = artifacts / "registry"
    before = registry.list_versions(root, MODEL)
    again = evaluate(run_dir=report.run_dir, comparison_metric="log_loss", deployment_threshold=0.0)
    assert again.gate.direction == "minimize" and not again.gate.passed
    assert not again.registered and again.registry_version is None
    assert again.previous_champion_version == 1
    assert registry.get_alias(root, MODEL) == 1
    assert registry.list_versions(root, MODEL) == before
    # The champion was chosen on validation log loss: the lowest among the candidates.
    losses = {c.family: c.valid_metrics["log_loss"] for c in again.candidates}
    assert again.champion == min(losses, key=losses.get)


def test_a_family_that_raises_does_not_stop_the_others(tmp_path, monkeypatch):
    from flows.train import train
    from tasks.ml import estimators

    def broken_fit(*args, **kwargs):
        raise RuntimeError("injected: random forest cannot fit")

    spec = estimators.FAMILIES["random_forest"]
    monkeypatch.setitem(estimators.FAMILIES, "random_forest", dataclasses.replace(spec, fit=broken_fit))
    report = train(params=smoke_params(tmp_path, **{"tracking.backend": "none"}))
    by_family = {c.family: c for c in report.candidates}
    assert by_family["random_forest"].status == "failed"
    assert "injected: random forest cannot fit" in by_family["random_forest"].error
    assert all(by_family[f].status == "ok" for f in FAMILIES if f != "random_forest")
    assert report.champion != "random_forest" and report.registered
    perf = pd.read_csv(Path(report.run_dir) / "reports" / "performance_metrics.csv")
    assert perf.set_index("family").loc["random_forest", "status"] == "failed"
    assert not (tmp_path / "comet").exists()  # tracking.backend: none writes nothing


def test_multiclass_run_on_wine(tmp_path):
    from flows.train import train

    params = smoke_params(tmp_path, **{
        "data.path": "builtin:wine", "data.target": "cultivar", "tracking.backend": "none",
        "models.random_forest.enabled": False, "models.xgboost.n_trials": 1,
        "models.lightgbm.n_trials": 1, "models.logistic_regression.n_trials": 1,
    })
    report = train(params=params)
    assert report.registered
    assert [r["class"] for r in report.confusion] == ["class_0", "class_1", "class_2"]
    model = registry.load_model(tmp_path / "registry", "wine-cultivar")
    assert model.metadata["task"] == "multiclass"
    assert list(model.predict_proba(pd.read_parquet(Path(report.run_dir) / "splits" / "test.parquet")).columns) == [
        "class_0", "class_1", "class_2"]


def test_leaderboard_and_gate_are_prefect_artifacts(smoke_run):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    report, _ = smoke_run
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["leaderboard", "gate-decision"]))
        )
    # This run's artifacts (a later re-evaluation of the same run may add more).
    mine = [a for a in found if report.run_id in (a.description or "")]
    tables = [json.loads(a.data) if isinstance(a.data, str) else a.data for a in mine if a.key == "leaderboard"]
    gates = [a.data for a in mine if a.key == "gate-decision"]
    assert any({row["family"] for row in table} == set(FAMILIES) for table in tables), tables
    assert any("Gate PASSED" in text and "registered as version 1" in text for text in gates), gates
    assert any("## Test metrics (untouched test split, bootstrap 95% interval)" in text for text in gates)  # the card
    # The parent train run's page holds them too, and the leaderboard's numbers are numbers.
    with get_client(sync_client=True) as client:
        parents = {a.flow_run_id: client.read_flow_run(a.flow_run_id).name for a in mine if a.flow_run_id}
    assert {"leaderboard", "gate-decision"} <= {a.key for a in mine if parents.get(a.flow_run_id, "").startswith(
        "train-")}, parents
    for row in (row for table in tables for row in table):  # a re-evaluation may rank on another metric
        metric = next(value for key, value in row.items() if key.startswith("valid_"))
        assert (isinstance(metric, float) or row["status"] != "ok") and isinstance(row["trials"], int), row

    # One progress artifact per family search, at 100% once its trials are done.
    keys = [f"search-progress-{f.replace('_', '-')}" for f in FAMILIES]
    with get_client(sync_client=True) as client:
        progress = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
    assert {a.key for a in progress} == set(keys)
    finished = [a for a in progress if "2/2 trials" in (a.description or "")]
    assert {a.key for a in finished} == set(keys) and all(float(a.data) == 100.0 for a in finished)


def test_the_run_fails_only_when_no_family_survives(tmp_path, monkeypatch):
    from flows.train import train
    from tasks.ml import estimators
    from tasks.stages import AllFamiliesFailed

    def broken_fit(*args, **kwargs):
        raise ValueError("injected: cannot fit")

    for family in ("logistic_regression", "lightgbm"):
        spec = estimators.FAMILIES[family]
        monkeypatch.setitem(estimators.FAMILIES, family, dataclasses.replace(spec, fit=broken_fit))
    params = smoke_params(tmp_path, **{"tracking.backend": "none", "models.random_forest.enabled": False,
                                       "models.xgboost.enabled": False, "models.catboost.enabled": False})
    with pytest.raises(AllFamiliesFailed, match="search: every model family failed: logistic_regression: .*injected"):
        train(params=params)
    assert not (tmp_path / "registry").exists()  # nothing registered


def test_a_weaker_scheduled_rerun_does_not_replace_the_champion(smoke_run):
    """1 trial of one family on weak features: it clears the threshold but loses to the champion."""
    from config.schema import TrainParameters
    from flows.train import train

    report, artifacts = smoke_run
    root = artifacts / "registry"
    before = registry.get_alias(root, MODEL)
    strong = [c for c in pd.read_parquet(Path(report.run_dir) / "splits" / "test.parquet").columns
              if c.startswith(("mean ", "worst "))]
    weak = train(params=TrainParameters(
        config_path="config/smoke.yaml", models=["logistic_regression"], n_trials=1, tags=["scheduled"],
        overrides={"artifacts_dir": str(artifacts), "tracking.backend": "none", "data.drop_columns": strong},
    ))
    assert weak.gate.test_value >= weak.gate.threshold  # it would have passed the threshold alone
    assert not weak.gate.passed and not weak.registered
    assert weak.gate.incumbent_version == before
    assert weak.gate.incumbent_value > weak.gate.test_value
    assert weak.gate.reason.startswith(f"champion stays at v{before}: challenger -")
    assert registry.get_alias(root, MODEL) == before
    saved = json.loads((Path(weak.run_dir) / "report.json").read_text())
    assert "champion stays at" in saved["gate"]["reason"]  # the report says why


def test_a_time_limit_that_ends_a_search_early_is_named_in_the_summary(tmp_path, capsys):
    """No hidden limit: n_trials run unless a limit is set; one that ends a search says so."""
    from flows.train import train
    from gauntlet.cli import print_summary

    only = {"models.lightgbm.enabled": False, "models.xgboost.enabled": False, "models.catboost.enabled": False, "tracking.backend": "none"}
    report = train(params=smoke_params(tmp_path, **only, **{
        "models.random_forest.timeout_s": 1, "models.random_forest.n_trials": 50,
        "models.logistic_regression.n_trials": 6}))
    by_family = {c.family: c for c in report.candidates}
    assert by_family["logistic_regression"].n_trials == 6 and by_family["logistic_regression"].stopped is None
    forest = by_family["random_forest"]
    assert forest.status == "ok" and 1 <= forest.n_trials < 50
    assert forest.stopped == f"stopped: timeout_s, {forest.n_trials}/50 trials"
    print_summary(report)
    out = capsys.readouterr().out
    assert f"stopped: timeout_s, {forest.n_trials}/50 trials" in out and "done" in out

    # A whole-search budget: both families stop early, each with at least one trial.
    budget = train(params=smoke_params(tmp_path / "budget", **only, **{
        "search.time_budget_s": 2, "models.random_forest.n_trials": 200, "models.logistic_regression.n_trials": 2000}))
    for cand in budget.candidates:
        assert cand.status == "ok" and cand.stopped and cand.stopped.startswith("stopped: time budget, "), cand


def test_a_registry_name_reused_for_another_target_is_refused(smoke_run):
    from config.schema import TrainParameters
    from flows.train import train

    _, artifacts = smoke_run
    root = artifacts / "registry"
    before = registry.get_alias(root, MODEL)
    other = train(params=TrainParameters(
        config_path="config/smoke.yaml", data_path="builtin:wine", target="cultivar", models=["logistic_regression"],
        n_trials=1, overrides={"artifacts_dir": str(artifacts), "tracking.backend": "none",
                               "registry.model_name": MODEL},
    ))
    assert not other.registered
    assert "predicts 'diagnosis'" in other.gate.reason and "set another registry.model_name" in other.gate.reason
    assert registry.get_alias(root, MODEL) == before


def test_a_failed_run_names_the_stage_and_the_cause_in_its_final_state(tmp_path):
    from config.errors import DataError
    from flows.train import train

    pd.DataFrame({"x": range(40), "y": ["same"] * 40}).to_parquet(tmp_path / "one.parquet")
    params = smoke_params(tmp_path, **{"data.path": str(tmp_path / "one.parquet"), "data.target": "y"})
    state = train(params=params, return_state=True)
    assert state.is_failed()
    assert "DataError: validate_dataset: target 'y' has a single class ('same')" in state.message
    with pytest.raises(DataError, match="^validate_dataset: target 'y' has a single class"):
        state.result()
    assert not (tmp_path / "registry").exists()


def test_storage_outages_are_retried_with_backoff_then_reported(tmp_path, monkeypatch):
    """xgboost's storage fails once (retried, recovers); lightgbm's never comes back (fails after retries)."""
    import optuna
    from sqlalchemy.exc import OperationalError

    from flows.train import train

    real_create_study = optuna.create_study
    calls: dict[str, int] = {}

    def flaky_create_study(*args, **kwargs):
        name = kwargs["study_name"]
        family = "xgboost" if "-xgboost-" in name else "lightgbm" if "-lightgbm-" in name else None
        calls[family] = calls.get(family, 0) + 1
        if family == "lightgbm" or (family == "xgboost" and calls[family] == 1):
            raise OperationalError("SELECT 1", {}, ConnectionError("server closed the connection unexpectedly"))
        return real_create_study(*args, **kwargs)

    monkeypatch.setattr(optuna, "create_study", flaky_create_study)
    import tasks.search

    # The real task waits 5 s, then 10 s, between tries; the same retries here wait 0.2 s.
    assert tasks.search.search_family.retries == 2 and tasks.search.search_family.retry_delay_seconds == [5, 10]
    monkeypatch.setattr(tasks.search, "search_family",
                        tasks.search.search_family.with_options(retry_delay_seconds=[0.2, 0.2]))
    params = smoke_params(tmp_path, **{"tracking.backend": "none", "models.random_forest.enabled": False})
    report = train(params=params)
    by_family = {c.family: c for c in report.candidates}
    assert calls["xgboost"] == 2 and by_family["xgboost"].status == "ok"  # one retry was enough
    assert calls["lightgbm"] == 3  # the first try and 2 retries
    assert by_family["lightgbm"].status == "failed" and "OperationalError" in by_family["lightgbm"].error
    assert "after 2 retries" in by_family["lightgbm"].error
    assert report.registered  # the others went on


def test_search_plan_starts_a_family_with_an_encoding_of_its_own_first(tmp_path):
    """Logistic regression's scaled arrays are made and dropped before the tree families' shared ones
    are held; the rest go longest first, the forest last on large tables. Native categories make
    LightGBM and XGBoost a pair apart."""
    from tasks.ml.planning import plan_search

    families = ["logistic_regression", "random_forest", "lightgbm", "xgboost"]
    trials = dict.fromkeys(families, 10)
    plan = plan_search(families, trials, cores=2, parallelism="auto", encoding="onehot")
    assert plan.order == ["logistic_regression", "random_forest", "xgboost", "lightgbm"]
    assert (plan.parallel, plan.threads) == (2, 1)
    native = plan_search(families, trials, cores=2, parallelism="auto", encoding="native")
    assert native.order == ["random_forest", "logistic_regression", "xgboost", "lightgbm"]
    # From 50,000 training rows the forest, whose fits scale with threads, ends the search on every core.
    large = plan_search(families, trials, cores=2, parallelism="auto", encoding="onehot", train_rows=120_000)
    assert large.order == ["logistic_regression", "xgboost", "lightgbm", "random_forest"]


def test_families_that_encode_alike_share_one_read_only_copy(tmp_path, breast_cancer):
    """Random forest, LightGBM and XGBoost get the very same encoded arrays (written splits read back
    and encoded once), read-only; logistic regression's scaled ones are its own."""
    from tasks.ml.data import split_positions, validate_dataset, write_part
    from tasks.ml.estimators import get_family
    from tasks.ml.search import DataSettings
    from tasks.runs import RunPaths
    from tasks.search import shared_family_data as _prepare

    info = validate_dataset(breast_cancer, "diagnosis")
    paths = RunPaths(tmp_path)
    paths.splits.mkdir()
    for name, rows in split_positions(breast_cancer, info, seed=0).items():
        write_part(breast_cancer, rows, paths.split(name))
    trees = [_prepare(get_family(f), info, paths, DataSettings()) for f in ("random_forest", "lightgbm", "xgboost")]
    assert trees[0] is trees[1] is trees[2]
    assert not trees[0].X_train.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        trees[0].X_train[0, 0] = 1.0
    scaled = _prepare(get_family("logistic_regression"), info, paths, DataSettings())
    assert scaled is not trees[0] and abs(scaled.X_train.mean()) < 0.01 < abs(trees[0].X_train.mean())


def test_manifest_records_time_and_memory_of_every_stage(smoke_run):
    report, artifacts = smoke_run
    manifest = json.loads((Path(report.run_dir) / "manifest.json").read_text())
    stages = manifest["stages"]
    expected = {"load_dataset", "validate_dataset", "split_dataset", "search", "evaluate", "register",
                *(f"search {family}" for family in FAMILIES)}
    assert set(stages) == expected
    for name, figures in stages.items():
        assert figures["wall_s"] > 0 and figures["peak_rss_mb"] > 0 and figures["cpu_s"] >= 0, name
        assert figures["peak_rss_mb"] >= max(figures["rss_start_mb"], figures["rss_end_mb"]), name
    assert stages["search"]["wall_s"] >= max(stages[f"search {f}"]["wall_s"] for f in FAMILIES) - 0.5
    assert report.stages == stages  # and in report.json, and under the leaderboard
    archives = comet_archives(artifacts / "comet")  # and in the experiments
    evaluation = next(a for name, a in archives.items() if name.endswith("-evaluation"))
    assert evaluation["metrics"]["stage_search_lightgbm_peak_rss_mb"][0][1] == stages["search lightgbm"]["peak_rss_mb"]
    lightgbm = next(a for a in archives.values() if a["params"].get("family") == "lightgbm")
    assert lightgbm["metrics"]["stage_wall_s"][0][1] == stages["search lightgbm"]["wall_s"]
    board = {row["family"]: row for row in report.leaderboard()}
    assert all(board[f]["peak_mb"] == stages[f"search {f}"]["peak_rss_mb"] for f in FAMILIES)


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_the_last_family_searching_fits_on_every_core(tmp_path, executor, monkeypatch):
    """Issue 20: once the other families ended, the one still searching fits on all the cores; families
    searching at once never hold more threads than there are cores. Read from each trial's record.

    threads: the forest's first fit waits until logistic regression has ended, so that later trials are
    certain to search alone (on a loaded machine 16 quick trials could all end first). processes: the
    families share the count through files too (and the executor runs at all); a fit in another process
    cannot be held, so there the forest's trials alone, if any, are checked."""
    import dataclasses
    import os
    import time

    from flows.train import train
    from tasks.ml import estimators

    if executor == "threads":
        spec = estimators.FAMILIES["random_forest"]

        def fit_after_lr_ended(estimator, X, y, ctx):
            deadline = time.monotonic() + 120
            while not list(tmp_path.glob("runs/*/search/ended/logistic_regression")) and time.monotonic() < deadline:
                time.sleep(0.05)
            return spec.fit_model(estimator, X, y, ctx)

        monkeypatch.setitem(estimators.FAMILIES, "random_forest", dataclasses.replace(spec, fit=fit_after_lr_ended))
    report = train(params=smoke_params(tmp_path, **{
        "search.executor": executor,
        "tracking.backend": "none", "models.random_forest.n_trials": 16,
        "models.lightgbm.enabled": False,
        "models.xgboost.enabled": False, "models.catboost.enabled": False, "models.logistic_regression.n_trials": 1}))
    cores = os.cpu_count() or 1
    parallel = min(cores, 2)
    tables = {f: pd.read_csv(Path(report.run_dir) / "candidates" / f"{f}_trials.csv")
              for f in ("logistic_regression", "random_forest")}
    for family, trials in tables.items():
        for threads, at_once, searching in zip(trials["user_attrs_threads"], trials["user_attrs_parallel_trials"],
                                               trials["user_attrs_families_searching"], strict=True):
            cores_used = threads * at_once * min(parallel, searching)
            assert cores_used <= max(cores, min(parallel, searching)), (family, threads, at_once)
    forest = tables["random_forest"]
    assert len(forest) == 16
    alone = forest[forest["user_attrs_families_searching"] == 1]
    assert (alone["user_attrs_threads"] == cores).all(), forest
    if executor == "threads":
        assert len(alone) >= 15, forest  # every trial after the first, held one
