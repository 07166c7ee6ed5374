"""tune_model: one family's Optuna search on a prepared run, tracked in one experiment; and
contribute_trials: a trial worker's share of a family's shared study.

    gauntlet tune --run artifacts/runs/<run_id> --family lightgbm [--worker]
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # python flows/tune.py: the command line sets the process up first
    from gauntlet.cli import run

    run(["tune", *sys.argv[1:]])

from prefect import flow

from config.schema import TrainConfig
from tasks.ml.results import Candidate
from tasks.search import contribute_to_study, describe_family_search, prepare_family_data, search_hyperparameters


@flow(name="tune_model", flow_run_name="tune-{family}", log_prints=True)
def tune_model(family: str, run_dir: str, config: TrainConfig, n_jobs: int = 1) -> Candidate:
    """Search `family`'s hyperparameters on the run's train/valid splits; save the best pipeline."""
    job = describe_family_search(family, run_dir, config, n_jobs)
    data = prepare_family_data(job)
    return search_hyperparameters(job, data)


@flow(name="contribute_trials", flow_run_name="trials-{family}", log_prints=True)
def contribute_trials(family: str, run_dir: str, config: TrainConfig, n_jobs: int = 1) -> dict:
    """A worker's share of a family's search: trials of the shared study (PostgreSQL or journal) until
    its budget is met, counting every worker's; the run's own tune_model builds the best model."""
    job = describe_family_search(family, run_dir, config, n_jobs, shared_study=True)
    data = prepare_family_data(job)
    return contribute_to_study(job, data)
