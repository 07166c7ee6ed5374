"""evaluate: pick the champion on validation, score it once on test, gate it, register it.

Runs inside `train`, or alone on a finished run: `gauntlet evaluate --run artifacts/runs/<run_id>`.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # python flows/evaluate.py: the command line sets the process up first
    from gauntlet.cli import run

    run(["evaluate", *sys.argv[1:]])

from prefect import flow

from config.schema import TrainConfig
from tasks.evaluation import (
    apply_gate,
    bootstrap_test_intervals,
    calibrate_and_set_threshold,
    check_fairness,
    choose_champion,
    explain_champion,
    export_onnx,
    log_to_tracker,
    publish_report,
    read_run,
    refit_champion,
    register_champion,
    score_test_split,
    write_reports,
)
from tasks.ml.results import EvalReport
from tasks.runs import evaluate_run_name


@flow(name="evaluate", flow_run_name=evaluate_run_name, log_prints=True)
def evaluate(run_dir: str, config: TrainConfig | None = None) -> EvalReport:
    """Select on validation only; touch the test split once, for the champion only."""
    run = read_run(run_dir, config)
    champion = choose_champion(run)
    decision = calibrate_and_set_threshold(run, champion)
    scores = score_test_split(run, decision)
    intervals = bootstrap_test_intervals(run, scores)
    fairness = check_fairness(run, scores)
    gate = apply_gate(run, scores, fairness)
    explanations = explain_champion(run, champion, decision, scores)
    files = write_reports(run, champion, decision, scores, intervals, fairness, gate, explanations)

    passed, registry = gate.decision.passed, run.config.registry
    onnx = export_onnx(decision, scores) if passed and registry.export_onnx else None
    production = refit_champion(run, champion, decision) if passed and registry.refit_on_full_data else None
    registration = register_champion(run, champion, decision, scores, intervals, fairness, gate, files,
                                     production, onnx)
    tracking = log_to_tracker(run, champion, decision, scores, intervals, fairness, gate, files, registration)
    return publish_report(run, champion, decision, scores, intervals, fairness, gate, files, registration, tracking)
