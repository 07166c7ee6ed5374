"""Scale-out on a real PostgreSQL: worker processes share one Optuna study and one trial budget.

A throwaway PostgreSQL 15 cluster is started on 127.0.0.1 (skipped where its binaries are absent).
Each worker is the command the README gives: `python flows/tune.py --run RUN --family F --worker`.
The test checks behaviour only (one study, one budget, both workers contributing); how much faster two
workers are is measured by bench/scale_workers.py, not asserted here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from config.paths import PROJECT_ROOT

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
BUDGET = 12


@pytest.fixture(scope="module")
def optuna_database(postgres):
    """A function that creates a database in the session's PostgreSQL cluster and returns its URL."""
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install -e '.[postgres]')")
    return lambda name: f"postgresql://{postgres(name)}"


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "COMET_API_KEY")}


@pytest.fixture(scope="module")
def prepared_run(tmp_path_factory) -> Path:
    """A run directory with its splits (a 1-trial smoke run of one family)."""
    artifacts = tmp_path_factory.mktemp("workers")
    cmd = [sys.executable, "flows/train.py", "--config", "config/smoke.yaml", "--set", f"artifacts_dir={artifacts}",
           "--set", "tracking.backend=none", "--set", "models.random_forest.enabled=false",
           "--set", "models.lightgbm.enabled=false", "--set", "models.xgboost.enabled=false", "--set", "models.catboost.enabled=false",
           "--set", "models.logistic_regression.n_trials=1"]
    out = subprocess.run(cmd, cwd=PROJECT_ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    (run,) = (artifacts / "runs").iterdir()
    return run


def _workers(run: Path, url: str, n: int) -> list[subprocess.CompletedProcess]:
    cmd = [sys.executable, "flows/tune.py", "--run", str(run), "--family", "random_forest", "--worker",
           "--set", f"search.storage={url}", "--set", f"models.random_forest.n_trials={BUDGET}",
           "--set", "search.pruner=none"]
    procs = [subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(n)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=400)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def _trials(url: str) -> list[optuna.trial.FrozenTrial]:
    (summary,) = optuna.get_all_study_summaries(storage=url)
    return optuna.load_study(study_name=summary.study_name, storage=url).get_trials()


def test_two_workers_share_one_postgresql_study_and_its_budget(optuna_database, prepared_run):
    url = optuna_database("two_workers")
    for out in _workers(prepared_run, url, 2):
        assert out.returncode == 0, out.stderr[-3000:]

    trials = _trials(url)
    finished = [t for t in trials if t.state in FINISHED]
    # The budget is shared: workers count each other's running trials before starting one
    # (two may start the last one at the same instant: at most one trial over).
    assert BUDGET <= len(finished) <= BUDGET + 1
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)) == len(trials)
    workers = {t.user_attrs["worker"] for t in finished}
    assert len(workers) == 2  # both processes ran trials of the one study
