"""evaluate: pick the champion on validation, score it once on test, gate it, register it.

Runs inside `train`, or alone on a finished run: `gauntlet evaluate --run artifacts/runs/<run_id>`.
A re-evaluation judges the run with its recorded config, amended by the settings given here; its
record goes to <run_dir>/evaluations/<id>/, leaving the run's own report as it was.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # python flows/evaluate.py: the command line sets the process up first
    from gauntlet.cli import run

    run(["evaluate", *sys.argv[1:]])

from typing import Annotated, Any

from prefect import flow
from pydantic import Field

from config.schema import MetricName, reevaluation_overrides
from tasks.evaluation import (
    apply_gate,
    bootstrap_test_intervals,
    calibrate_and_set_threshold,
    check_fairness,
    choose_champion,
    explain_champion,
    export_onnx,
    fit_prediction_interval,
    log_to_tracker,
    publish_report,
    read_run,
    refit_champion,
    refit_on_train_valid,
    register_champion,
    score_test_split,
    write_reports,
)
from tasks.ml.results import EvalReport
from tasks.runs import evaluate_run_name

# The re-evaluation form (evaluate/manual): each field left empty keeps the run's recorded value.
Threshold = Annotated[float | None, Field(ge=0)]
Improvement = Annotated[float | None, Field(ge=0)]


@flow(name="evaluate", flow_run_name=evaluate_run_name, log_prints=True)
def evaluate(
    run_dir: str,
    deployment_threshold: Threshold = None,
    comparison_metric: MetricName | None = None,
    min_improvement: Improvement = None,
    explain: bool | None = None,
    fairness_column: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> EvalReport:
    """Select on validation only; touch the test split once, for the champion only.

    Args:
        run_dir: The finished run, e.g. artifacts/runs/<run_id>.
        deployment_threshold: Test metric the champion must reach (empty: the run's).
        comparison_metric: Metric that picks and gates the champion (empty: the run's).
        min_improvement: Lead over the registered champion a challenger needs (empty: the run's).
        explain: Permutation importance and SHAP values for the champion (empty: the run's).
        fairness_column: A column to report fairness metrics on.
        overrides: Other evaluation.*, tracking.* or registry.export_onnx keys, e.g. {"evaluation.beta": 1.0}.
    """
    changes = reevaluation_overrides(deployment_threshold, comparison_metric, min_improvement, explain,
                                     fairness_column, overrides)
    run = read_run(run_dir, changes)
    champion = choose_champion(run)
    if run.info.is_regression:
        gated = fit_prediction_interval(run, champion)  # split-conformal, on the validation residuals
    else:
        gated = calibrate_and_set_threshold(run, champion)
    measured, decision = refit_on_train_valid(run, champion, gated)  # the model that test measures
    scores = score_test_split(run, decision)
    intervals = bootstrap_test_intervals(run, scores)
    fairness = check_fairness(run, scores)
    gate = apply_gate(run, scores, fairness)
    explanations = explain_champion(run, champion, gated, scores)  # the train-split fit: valid is held out from it
    champion = measured
    files = write_reports(run, champion, decision, scores, intervals, fairness, gate, explanations)

    passed, registry = gate.decision.passed, run.config.registry
    production = refit_champion(run, champion, decision) if passed and registry.refit_on_full_data else None
    registered = production.model if production else decision  # ONNX is the model that gets registered
    onnx = export_onnx(registered, scores) if passed and registry.export_onnx else None
    registration = register_champion(run, champion, decision, scores, intervals, fairness, gate, files,
                                     production, onnx)
    tracking = log_to_tracker(run, champion, decision, scores, intervals, fairness, gate, files, registration)
    return publish_report(run, champion, decision, scores, intervals, fairness, gate, files, registration, tracking)
