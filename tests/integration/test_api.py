"""The public face: `gauntlet.train` / `gauntlet.load_model`, the `gauntlet` command, and a model
family added in a test alone, trained end to end through the flow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from config.paths import PROJECT_ROOT

SMOKE = str(PROJECT_ROOT / "config" / "smoke.yaml")


@pytest.fixture(scope="module")
def api_run(prefect_harness, breast_cancer, tmp_path_factory):
    import gauntlet

    artifacts = tmp_path_factory.mktemp("api")
    report = gauntlet.train(breast_cancer, target="diagnosis", config=SMOKE,
                            overrides={"artifacts_dir": str(artifacts), "models.random_forest.enabled": False})
    return report, artifacts


def test_train_on_a_dataframe_returns_a_leaderboard_frame(api_run):
    report, artifacts = api_run
    board = report.leaderboard
    assert isinstance(board, pd.DataFrame)
    assert sorted(board["family"]) == ["lightgbm", "logistic_regression", "xgboost"]
    assert board.iloc[0]["family"] == report.champion and bool(board.iloc[0]["champion"])
    assert report.registered and report.registry_version == 1
    assert 0 < report.test_metrics["fbeta"] <= 1
    manifest = json.loads((report.run_dir / "manifest.json").read_text())
    assert Path(manifest["data"]["path"]).parent.parent == artifacts / "inputs"  # the frame, saved as Parquet
    assert json.loads((report.run_dir / "report.json").read_text())["registry_version"] == 1


def test_load_model_predicts_the_test_split_as_the_evaluation_did(api_run):
    import gauntlet

    report, artifacts = api_run
    model = gauntlet.load_model(registry=artifacts / "registry")
    test = pd.read_parquet(report.run_dir / "splits" / "test.parquet")
    seen = pd.read_csv(report.run_dir / "reports" / "test_predictions.csv")
    assert list(map(str, model.predict(test))) == list(map(str, seen["predicted"]))
    assert model.predict_proba(test).shape == (len(test), 2)
    assert model.metadata["family"] == report.champion


def test_bad_input_fails_in_one_line_before_training(prefect_harness, breast_cancer, tmp_path):
    import gauntlet
    from config.errors import GauntletError

    with pytest.raises(GauntletError, match="diagnosys") as caught:
        gauntlet.train(breast_cancer, target="diagnosys", config=SMOKE, overrides={"artifacts_dir": str(tmp_path)})
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_registry_promote_and_rollback_through_the_gauntlet_command(api_run, capsys):
    from gauntlet.cli import main
    from tasks import registry

    report, artifacts = api_run
    root = artifacts / "registry"
    (name,) = registry.list_models(root)
    assert name == "dataframe-diagnosis"
    base = ["--registry", str(root)]
    assert main(["train", "--config", SMOKE, "--quiet", "--set", f"artifacts_dir={artifacts}",
                 "--set", f"registry.model_name={name}", "--set", "evaluation.compare_with_champion=false",
                 "--set", "search.seed=7"]) == 0  # another seed: another model (an identical one adds no version)
    assert registry.get_alias(root, name) == 2
    assert main(["registry", "promote", name, "1", "--reason", "back to the API's model", *base]) == 0
    assert registry.get_alias(root, name) == 1
    assert main(["registry", "rollback", name, "--reason", "undo", *base]) == 0
    assert registry.get_alias(root, name) == 2
    assert main(["registry", "verify", *base]) == 0
    assert main(["registry", "promote", name, "9", *base]) == 2
    assert registry.get_alias(root, name) == 2
    assert "version 9" in capsys.readouterr().err


def test_gauntlet_help_lists_every_command():
    out = subprocess.run([str(Path(sys.executable).parent / "gauntlet"), "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    for command in ("train", "evaluate", "predict", "serve", "worker", "registry"):
        assert f"    {command}" in out.stdout
    script = subprocess.run([sys.executable, "flows/train.py", "--help"], cwd=PROJECT_ROOT, capture_output=True,
                            text=True, timeout=60)
    assert script.returncode == 0 and "--config" in script.stdout, script.stderr


def test_a_family_registered_in_a_test_trains_end_to_end(prefect_harness, tmp_path):
    """ExtraTrees is not a gauntlet family: one register_family call makes it one, config included."""
    import optuna
    from sklearn.ensemble import ExtraTreesClassifier

    from flows.train import train
    from tasks.ml.estimators import FamilySpec, register_family, unregister_family
    from tests.helpers import smoke_params

    def space(trial: optuna.Trial, weighted: bool = True) -> dict:
        return {"n_estimators": trial.suggest_int("n_estimators", 20, 60, step=20),
                "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 5)}

    def make(params: dict, seed: int, n_jobs: int, n_classes: int) -> ExtraTreesClassifier:
        return ExtraTreesClassifier(random_state=seed, n_jobs=n_jobs, **params)

    register_family(FamilySpec("extra_trees", scale=False, native_categorical=False, space=space, make=make,
                               cost=2.0, enabled_by_default=False))
    try:
        off = {f"models.{f}.enabled": False for f in ("random_forest", "lightgbm", "xgboost", "catboost")}
        report = train(params=smoke_params(tmp_path, **off, **{"models.extra_trees.enabled": True,
                                                               "models.extra_trees.n_trials": 3}))
    finally:
        unregister_family("extra_trees")
    by_family = {c.family: c for c in report.candidates}
    assert set(by_family) == {"logistic_regression", "extra_trees"}
    extra = by_family["extra_trees"]
    assert extra.status == "ok" and extra.n_trials == 3 and set(extra.best_params) == {"n_estimators",
                                                                                       "min_samples_leaf"}
    assert (Path(report.run_dir) / "candidates" / "extra_trees.pkl").is_file()
    assert report.registered
