"""A run killed with SIGKILL in the middle of a family's search, then the same command again:
the interrupted study resumes (no trial repeated, the budget met exactly) and the family that had
finished is not searched again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna

from config.paths import PROJECT_ROOT
from tests.helpers import comet_archives

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
RF_TRIALS = 16


def _command(artifacts: Path) -> list[str]:
    sets = {
        "artifacts_dir": artifacts, "search.storage": "auto", "tracking.backend": "comet",
        "models.lightgbm.enabled": "false", "models.xgboost.enabled": "false", "models.catboost.enabled": "false",
        "models.logistic_regression.n_trials": 3, "models.random_forest.n_trials": RF_TRIALS,
        "search.parallelism": 2, "search.pruner": "none", "evaluation.bootstrap_resamples": 20,
    }
    cmd = [sys.executable, "flows/train.py", "--config", "config/smoke.yaml"]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={value}"]
    return cmd


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "COMET_API_KEY")}


def _study(artifacts: Path, family: str) -> optuna.Study | None:
    files = list((artifacts / "optuna").glob(f"*-{family}-*.journal"))
    if not files:
        return None
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(files[0])))
    return optuna.load_study(study_name=files[0].stem, storage=storage)


def _search_cached(artifacts: Path, family: str) -> bool:
    """Whether the family's finished search is in Prefect's result cache (its task completed)."""
    from prefect.settings import get_current_settings

    from tasks.runs import RunPaths, dataset_info, load_run_config, read_json
    from tasks.search import _search_cache_key

    for run in artifacts.glob("runs/*"):
        if (run / "manifest.json").is_file() and (run / "config.json").is_file():
            paths = RunPaths(run)  # the searches get the config resolved for the run's task, as train passes it
            config = load_run_config(paths).for_task(dataset_info(read_json(paths.manifest)).task)
            key = _search_cache_key(None, {"config": config, "family": family, "run_dir": str(run)})
            return (Path(get_current_settings().results.local_storage_path) / key).is_file()
    return False


def test_a_killed_run_resumes_its_study_and_reuses_finished_families(tmp_path):
    artifacts = tmp_path / "artifacts"
    proc = subprocess.Popen(_command(artifacts), cwd=PROJECT_ROOT, env=_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    before = 0
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            lr_done = _search_cached(artifacts, "logistic_regression")
            study = _study(artifacts, "random_forest")
            before = len(study.get_trials(states=FINISHED)) if study else 0
            if lr_done and before >= 3:
                break
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the flow process and Prefect's temporary server
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert 3 <= before < RF_TRIALS
    # The family that finished before the kill left its tracking data on disk, named for the run.
    (killed_run,) = (artifacts / "runs").iterdir()
    kept = list((artifacts / "comet" / killed_run.name).glob(f"{killed_run.name}-logistic_regression-*.zip"))
    assert len(kept) == 1 and comet_archives(artifacts / "comet" / killed_run.name)[
        f"{killed_run.name}-logistic_regression"]["metrics"]["best_valid_fbeta"]
    first_numbers = {t.number for t in _study(artifacts, "random_forest").get_trials()}

    out = subprocess.run(_command(artifacts), cwd=PROJECT_ROOT, env=_env(), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = sorted((artifacts / "runs").iterdir())
    assert len(runs) == 2
    report = json.loads((runs[-1] / "report.json").read_text())
    by_family = {c["family"]: c for c in report["candidates"]}

    # The finished family was not searched again: its candidate comes from the killed run.
    assert by_family["logistic_regression"]["reused_from"] == str(runs[0])
    assert (runs[-1] / "candidates" / "logistic_regression.pkl").is_file()
    assert len(_study(artifacts, "logistic_regression").get_trials()) == 3

    # The interrupted study went on where it stopped: the budget met exactly, no number reused.
    trials = _study(artifacts, "random_forest").get_trials()
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == RF_TRIALS, out.stderr[-6000:]
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    resumed = [t for t in trials if t.number not in first_numbers]
    assert len(resumed) >= RF_TRIALS - before and min(t.number for t in resumed) > max(first_numbers)
    # A trial that was running when the process died is failed and its parameters tried again.
    for dead in (t for t in trials if t.state == optuna.trial.TrialState.FAIL):
        assert dead.user_attrs["error"] == "its worker died"
        if dead.params:  # killed after it drew its parameters: they are tried again
            assert any(t.user_attrs.get("retry_of") == dead.number for t in trials)
    assert "resumed with" in out.stderr or "resumed with" in out.stdout
    assert by_family["random_forest"]["status"] == "ok" and not by_family["random_forest"]["reused_from"]

    # The earlier run's model file is gone: the cached search cannot be reused, so it runs again.
    (runs[0] / "candidates" / "logistic_regression.pkl").unlink()
    out = subprocess.run(_command(artifacts), cwd=PROJECT_ROOT, env=_env(), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "model file is gone or changed; searching again" in out.stderr
    third = json.loads((sorted((artifacts / "runs").iterdir())[-1] / "report.json").read_text())
    again = {c["family"]: c for c in third["candidates"]}["logistic_regression"]
    assert again["status"] == "ok" and again["reused_from"] is None
    assert Path(again["pipeline_path"]).is_file()
