"""train: a table in, a registered champion out.

    gauntlet train --config config/train.yaml [--set models.xgboost.n_trials=5 ...]

load -> validate -> split (parquet + manifest) -> one tune_model subflow per enabled family, run
concurrently as Prefect tasks -> evaluate (champion on validation, test once, gate, registry).
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # python flows/train.py: the command line sets the process up first
    from gauntlet.cli import run

    run(["train", *sys.argv[1:]])

from prefect import flow, get_run_logger, tags
from prefect.runtime import deployment
from prefect.states import Cancelled

from config.schema import TrainParameters
from flows.evaluate import evaluate
from flows.tune import tune_model
from tasks import stopping
from tasks.data import make_splits, preflight
from tasks.ml.results import EvalReport
from tasks.runs import RunPaths, dataset_name, finish_run, new_run_id, train_run_name
from tasks.search import search_all_families
from tasks.stages import stage, without_heartbeats


@flow(name="train", flow_run_name=train_run_name, log_prints=True)
def train(params: TrainParameters = TrainParameters()) -> EvalReport:  # noqa: B008 - an immutable default
    """Split the table, search every enabled family concurrently, evaluate, gate and register."""
    # SIGINT/SIGTERM (Ctrl-C, a worker cancelling the run) stop the searches at their next trial instead of
    # Prefect's SIGTERM bridge, which raised in the main thread while the search threads ran on.
    with stopping.handling():
        try:
            return _train(params)
        except stopping.Stopped as exc:
            if deployment.id is None:
                raise  # a local run: the command prints the line and exits 130 / 143
            return Cancelled(message=str(exc))  # a deployment's run cancelled from the UI or the API


def _train(params: TrainParameters) -> EvalReport:
    with stage("parameters"):
        config = params.to_config()  # a bad parameter fails here, before any work
        preflight(config)
    with tags(*params.tags):
        paths = RunPaths(config.runs_dir / new_run_id(dataset_name(config)))
        get_run_logger().info("run directory: %s; registry model %s", paths.root, config.model_name)
        stages: dict[str, dict] = {}
        info = make_splits(config, paths, stages)
        config = config.for_task(info.task)  # auto settings resolved for the task the table holds
        search_all_families(config, paths, stages, subflow=tune_model)
        with stage("evaluate", stages), without_heartbeats():
            report = evaluate(run_dir=str(paths.root))  # the config the run recorded
        return finish_run(paths, report, stages)
