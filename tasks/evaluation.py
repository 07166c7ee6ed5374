"""The evaluation's steps, each a Prefect task with its own state and duration on the run's page.

Validation chooses and tunes; the test split is read once, for the champion only, and only
predicted on. Results pass between the steps as typed in-memory values (NO_CACHE: never hashed).
"""

from __future__ import annotations

import copy
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from config.errors import GauntletError
from config.schema import TrainConfig
from tasks import monitoring, registry, stopping
from tasks import reporting as rep
from tasks.ml import evaluation as ev_ml
from tasks.ml.data import DatasetInfo, encode_target, features_and_target, read_parquet
from tasks.ml.estimators import get_family
from tasks.ml.evaluation import DecisionModel
from tasks.ml.gate import decide_gate
from tasks.ml.metrics import (
    compute_metrics,
    compute_regression_metrics,
    confusion_summary,
    predict_labels,
    select_champion,
)
from tasks.ml.regression import (
    AveragingEnsemble,
    RegressionModel,
    bootstrap_regression_intervals,
    coverage_of,
    group_errors,
    residual_summary,
)
from tasks.ml.results import Candidate, EvalReport, GateDecision
from tasks.ml.scoring import schema_metadata
from tasks.ml.search import refit_on_rows
from tasks.modeling import load_pipeline, save_pipeline
from tasks.runs import RunPaths, dataset_info, load_run_config, read_candidates, read_manifest
from tasks.tracking import prune_offline_archives, start_tracker


@dataclass(frozen=True)
class EvaluationInputs:
    paths: RunPaths
    config: TrainConfig
    manifest: dict[str, Any]
    info: DatasetInfo
    candidates: list[Candidate]
    X_valid: pd.DataFrame
    y_valid: Any

    @property
    def metric(self) -> str:
        return self.config.evaluation.comparison_metric

    @property
    def direction(self) -> str:
        return self.config.evaluation.resolved_direction


@dataclass(frozen=True)
class Champion:
    candidate: Candidate
    model: Any  # its fitted pipeline (or the soft-voting ensemble)
    candidates: list[Candidate]  # every competitor, the ensemble included when built
    train_valid: dict[str, Any] | None = None  # the train+valid refit's record, when `model` is that refit


@dataclass(frozen=True)
class TestScores:
    test: pd.DataFrame
    X_test: pd.DataFrame
    y_test: Any
    proba: Any
    y_pred: Any  # labels (encoded), or a regression's predictions
    metrics: dict[str, float]
    confusion: list[dict[str, Any]]
    scoring: dict[str, Any]  # compute_metrics' settings, the decision threshold included (n_classes 0: regression)
    lower: Any = None  # regression: the prediction interval's bounds per test row
    upper: Any = None


@dataclass(frozen=True)
class Fairness:
    summaries: dict[str, dict[str, float]] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    problem: str | None = None


@dataclass(frozen=True)
class GateResult:
    decision: GateDecision
    previous: int | None  # the version 'champion' pointed to before this evaluation


@dataclass(frozen=True)
class Explanations:
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    top_features: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ReportFiles:
    reports: dict[str, str]  # name -> path
    tables: dict[str, pd.DataFrame]
    figures: list[str]
    card: str  # the model card; "{version}" is filled in once registered


@dataclass(frozen=True)
class Production:
    model: DecisionModel | RegressionModel  # what the registry stores as model.pkl
    refit: dict[str, Any] | None  # the refit's record, None when no refit was asked for
    stages: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Registration:
    version: int | None
    stages: dict[str, dict[str, Any]]
    card_text: str
    card_path: str
    note: str | None = None  # why a passing champion added no version (identical to one registered)


@task(name="read_run", cache_policy=NO_CACHE)
def read_run(run_dir: str, overrides: dict[str, Any] | None = None) -> EvaluationInputs:
    """The run's config, dataset description, candidates and validation split; fails before any work
    when nothing can win or a split or sensitive column is missing."""
    paths = RunPaths(run_dir).for_new_evaluation()
    config = load_run_config(paths, overrides)
    manifest = read_manifest(paths)
    info = dataset_info(manifest)
    config = config.for_task(info.task)  # evaluation's auto metric resolved for the run's task
    candidates = read_candidates(paths)
    try:
        select_champion(candidates, config.evaluation.comparison_metric, config.evaluation.resolved_direction)
    except ValueError as exc:
        raise GauntletError(f"run {paths.run_id}: {exc}; rerun the training") from None
    for split in ("valid", "test"):
        if not paths.split(split).is_file():
            raise GauntletError(f"run {paths.run_id} lacks {paths.split(split)}; rerun the training")
    columns = pq.read_schema(paths.split("test")).names
    missing = [c for c in config.evaluation.sensitive_columns if c not in columns]
    if missing:
        raise GauntletError(f"evaluation.sensitive_columns names columns not in the table: {missing}; "
                            f"choose among {', '.join(columns[:12])}")
    X_valid, y_valid = features_and_target(read_parquet(paths.split("valid")), info)
    return EvaluationInputs(paths, config, manifest, info, candidates, X_valid, y_valid)


@task(name="choose_champion", cache_policy=NO_CACHE)
def choose_champion(run: EvaluationInputs) -> Champion:
    """The best candidate on the validation metric (an ensemble of the top ones competes when enabled)."""
    logger = get_run_logger()
    candidates, ensemble = run.candidates, None
    if run.config.evaluation.ensemble.enabled:
        ens_candidate, ensemble = _build_ensemble(run, logger)
        if ens_candidate is not None:
            candidates = [*candidates, ens_candidate]
    try:
        champion = select_champion(candidates, run.metric, run.direction)
    except ValueError as exc:
        raise GauntletError(f"run {run.paths.run_id}: {exc}; rerun the training") from None
    logger.info("champion on validation %s: %s (%.4f)", run.metric, champion.family,
                champion.valid_metrics[run.metric])
    model = ensemble if champion.family == "ensemble" else load_pipeline(champion.pipeline_path,
                                                                         champion.pipeline_sha256)
    return Champion(champion, model, candidates)


def _build_ensemble(run: EvaluationInputs, logger: Any) -> tuple[Candidate | None, Any]:
    """The ensemble of the candidates (greedy selection, or soft voting over the top k), scored on valid."""
    ev = run.config.evaluation
    ok = [c for c in run.candidates if c.status == "ok"]
    oof = _out_of_fold_outputs(run, ok) if ev.ensemble.method == "greedy" else None
    if oof is None and any("train+valid" in c.selection for c in ok):
        logger.warning("ensemble skipped: the candidates were fitted on train+valid (small data), so the "
                       "valid split cannot score their ensemble (method greedy weighs them out of fold)")
        return None, None
    ok.sort(key=lambda c: c.valid_metrics[ev.comparison_metric], reverse=ev.resolved_direction == "maximize")
    members = ok if ev.ensemble.method == "greedy" else ok[: ev.ensemble.top_k]
    if len(members) < 2:
        logger.warning("ensemble skipped: %d candidate(s) succeeded, it needs 2", len(members))
        return None, None
    pipelines = {c.family: load_pipeline(c.pipeline_path, c.pipeline_sha256) for c in members}
    if ev.ensemble.method == "greedy":
        built = _greedy_ensemble(run, pipelines, logger, oof)
        if built is None:
            return None, None
        ensemble, params, valid_metrics = built
    elif run.info.is_regression:  # the mean of the members' predictions
        ensemble = AveragingEnsemble(list(pipelines.values()), list(pipelines))
        params = {"members": ensemble.names, "voting": "mean"}
    else:
        ensemble = ev_ml.SoftVoteEnsemble(list(pipelines.values()), list(pipelines))
        params = {"members": ensemble.names, "voting": "soft"}
    if ev.ensemble.method != "greedy":
        valid_metrics = _valid_metrics(run, ensemble)
    path = run.paths.candidates / "ensemble.pkl"
    sha = save_pipeline(ensemble, path)
    chosen = [c for c in members if c.family in ensemble.names]
    candidate = Candidate(
        family="ensemble", metric=ev.comparison_metric, best_params=params, valid_metrics=valid_metrics,
        pipeline_path=str(path), pipeline_sha256=sha,
        selection=_ensemble_selection(oof[2] if oof else None),
        search_seconds=round(sum(c.search_seconds for c in chosen), 3),
    )
    logger.info("ensemble of %s: valid %s %.4f", ensemble.describe() if hasattr(ensemble, "describe")
                else ensemble.names, ev.comparison_metric, valid_metrics[ev.comparison_metric])
    return candidate, ensemble


def _ensemble_selection(oof_rows: str | None) -> str:
    """What the ensemble's validation metrics were measured on (Candidate.selection)."""
    if oof_rows == "train":
        return "the valid split; weights from out-of-fold predictions on train"
    return f"out-of-fold predictions on {oof_rows}" if oof_rows else "the valid split"


def _out_of_fold_outputs(run: EvaluationInputs, candidates: list[Candidate]
                         ) -> tuple[dict[str, np.ndarray], np.ndarray, str] | None:
    """CV runs: every candidate's out-of-fold predictions on the rows all of them share, those rows' target,
    and which rows they are (train, or train+valid); None when a candidate has none (a holdout run)."""
    kinds = {c.oof_rows for c in candidates}
    if not candidates or len(kinds) != 1 or None in kinds or not all(Path(c.oof_path or "").is_file()
                                                                    for c in candidates):
        return None
    (kind,) = kinds
    parts = [read_parquet(run.paths.split("train"))] + ([read_parquet(run.paths.split("valid"))]
                                                        if kind == "train+valid" else [])
    _, y = features_and_target(pd.concat(parts, ignore_index=True), run.info)
    loaded = {}
    for c in candidates:
        with np.load(c.oof_path) as saved:
            loaded[c.family] = {"rows": saved["rows"], "predictions": saved["predictions"]}
    common = loaded[candidates[0].family]["rows"]
    for data in loaded.values():
        common = np.intersect1d(common, data["rows"])
    outputs = {name: data["predictions"][np.searchsorted(data["rows"], common)] for name, data in loaded.items()}
    return outputs, np.asarray(y)[common], kind


def _valid_output(run: EvaluationInputs, model: Any) -> np.ndarray:
    """A model's validation predictions: a regression's values, else class probabilities."""
    return model.predict(run.X_valid) if run.info.is_regression else model.predict_proba(run.X_valid)


def _valid_metrics(run: EvaluationInputs, model: Any) -> dict[str, float]:
    return _metrics_of(run, _valid_output(run, model))


SMALL_VALID_ROWS = 1000  # fewer validation rows than this: the log suggests out-of-fold weights


def _greedy_ensemble(run: EvaluationInputs, pipelines: dict[str, Any], logger: Any,
                     oof: tuple[dict[str, np.ndarray], np.ndarray, str] | None = None,
                     ) -> tuple[Any, dict[str, Any], dict[str, float]] | None:
    """Greedy selection over the candidates' validation predictions (`oof`: their out-of-fold predictions,
    target and rows instead): (ensemble, its record, its cross-fitted metrics on those rows), or None when it
    has one member or does not beat the best single candidate."""
    from sklearn.model_selection import KFold, StratifiedKFold

    from tasks.ml.ensemble import WeightedEnsemble, WeightedSoftVote, cross_fitted_blend, greedy_selection

    ev, info = run.config.evaluation, run.info
    metric, sign = ev.comparison_metric, 1.0 if ev.resolved_direction == "maximize" else -1.0
    tie = "rmse" if info.is_regression else "log_loss"  # breaks ties of a step metric (F-beta) on the same rows
    y = np.asarray(run.y_valid if oof is None else oof[1])

    def score_on(blend: np.ndarray, rows: Any = slice(None)) -> tuple[float, float]:
        if info.is_regression:
            values = compute_regression_metrics(y[rows], blend, with_mape=True if metric == "mape" else None)
            return sign * values[metric], -values[tie]
        first = compute_metrics(y[rows], blend, n_classes=len(info.classes), beta=ev.beta, average=ev.average,
                                only=metric)[metric]
        return sign * first, -compute_metrics(y[rows], blend, n_classes=len(info.classes), only=tie)[tie]

    if oof is not None:
        outputs = {name: oof[0][name] for name in pipelines}
    else:
        outputs = {}
        for name, pipeline in pipelines.items():
            with ev_ml.on_every_core(pipeline):
                outputs[name] = _valid_output(run, pipeline)
    if oof is None and len(y) < SMALL_VALID_ROWS:
        logger.info("ensemble weights chosen on %d validation rows; search.cv_folds: 5 would choose them on "
                    "out-of-fold predictions of every train row", len(y))
    selection = greedy_selection(outputs, score_on, rounds=ev.ensemble.rounds)
    best = next(iter(outputs))
    if len(selection.weights) < 2:
        logger.info("ensemble not built: greedy selection over %s kept %s alone", ", ".join(outputs), best)
        return None
    splitter = (KFold(2, shuffle=True, random_state=ev.seed) if info.is_regression
                else StratifiedKFold(2, shuffle=True, random_state=ev.seed))
    folds = [held for _, held in splitter.split(np.zeros(len(y)), y)]
    crossed = cross_fitted_blend(outputs, score_on, folds, rounds=ev.ensemble.rounds)
    honest = score_on(crossed)
    if not honest > selection.single:
        logger.info("ensemble not built: its cross-fitted valid %s %.4f does not beat %s alone (%.4f)", metric,
                    sign * honest[0], best, sign * selection.single[0])
        return None
    names = list(selection.weights)
    kind = WeightedEnsemble if info.is_regression else WeightedSoftVote
    ensemble = kind([pipelines[n] for n in names], names, [selection.weights[n] for n in names])
    crossed_on = "cross-fitted: each half of {} blended with the weights chosen on the other"
    if oof is None:
        chosen_on, scored, metrics = "validation", crossed_on.format("valid"), _metrics_of(run, crossed)
    elif oof[2] == "train":  # search.cv_folds: valid is held out from the weights, so the blend is scored there
        chosen_on, scored = f"out-of-fold predictions on {oof[2]}", "the valid split, which the weights did not see"
        metrics = _valid_metrics(run, ensemble)
    else:
        chosen_on = f"out-of-fold predictions on {oof[2]}"
        scored, metrics = crossed_on.format(f"the {chosen_on}"), _metrics_of(run, crossed, y)
    params = {"members": names, "method": "greedy", "rounds": selection.rounds,
              "weights": {n: round(w, 4) for n, w in selection.weights.items()},
              "chosen_on": chosen_on, "valid_scores": scored}
    return ensemble, params, metrics


def _metrics_of(run: EvaluationInputs, output: np.ndarray, y: np.ndarray | None = None) -> dict[str, float]:
    """Every metric of a model's output (probabilities, or a regression's predictions) against `y`
    (default: the valid split's target)."""
    ev, y = run.config.evaluation, run.y_valid if y is None else y
    if run.info.is_regression:
        return compute_regression_metrics(y, output, with_mape=True if ev.comparison_metric == "mape" else None)
    return compute_metrics(y, output, n_classes=len(run.info.classes), beta=ev.beta, average=ev.average)


@task(name="calibrate_and_set_threshold", cache_policy=NO_CACHE)
def calibrate_and_set_threshold(run: EvaluationInputs, champion: Champion) -> DecisionModel:
    """Calibration and the binary decision threshold, both fitted on the validation split only."""
    logger = get_run_logger()
    ev = run.config.evaluation
    decision = ev_ml.DecisionModel(champion.model, name=champion.candidate.family)
    wanted = ev.calibration != "none" or ev.tune_threshold
    if wanted and "train+valid" in champion.candidate.selection:
        logger.warning("calibration and threshold tuning skipped: the champion was fitted on train+valid "
                       "(small data), so the valid split is not held out from it")
        return decision
    with ev_ml.on_every_core(decision):
        return _calibrate_and_set_threshold(run, decision, logger)


def _calibrate_and_set_threshold(run: EvaluationInputs, decision: ev_ml.DecisionModel, logger: Any
                                 ) -> ev_ml.DecisionModel:
    ev, info = run.config.evaluation, run.info
    if ev.calibration != "none":
        decision.calibrator = ev_ml.fit_calibrator(decision.model, run.X_valid, run.y_valid, ev.calibration,
                                                   len(info.classes))
        logger.info("calibrated the champion's probabilities (%s) on %d validation rows", ev.calibration,
                    len(run.y_valid))
    if ev.tune_threshold and info.task == "binary":
        decision.threshold = ev_ml.tune_threshold(
            run.y_valid, decision.predict_proba(run.X_valid), ev.comparison_metric, ev.beta, ev.resolved_direction)
        logger.info("decision threshold tuned on validation %s: %.4f", ev.comparison_metric, decision.threshold)
    elif ev.tune_threshold:
        logger.warning("evaluation.tune_threshold applies to binary tasks; this %s task keeps argmax", info.task)
    return decision


@task(name="fit_prediction_interval", cache_policy=NO_CACHE)
def fit_prediction_interval(run: EvaluationInputs, champion: Champion) -> RegressionModel:
    """Regression: the split-conformal interval of the champion, fitted on its validation residuals."""
    ev = run.config.evaluation
    model = RegressionModel(champion.model, coverage=ev.interval_coverage, name=champion.candidate.family)
    with ev_ml.on_every_core(model):
        model.fit_interval(run.X_valid, run.y_valid)
    get_run_logger().info("prediction interval: prediction +/- %.4g for %.0f%% coverage (split-conformal on %d "
                          "validation rows)", model.half_width, 100 * ev.interval_coverage, model.calibration_rows)
    return model


@task(name="refit_on_train_valid", cache_policy=NO_CACHE)
def refit_on_train_valid(run: EvaluationInputs, champion: Champion, gated: DecisionModel | RegressionModel
                         ) -> tuple[Champion, DecisionModel | RegressionModel]:
    """evaluation.refit_on_train_valid: the champion (each member of an ensemble) fitted again on train+valid
    with its hyperparameters, keeping the threshold or interval chosen on valid; the test split then measures
    this model. Returns the champion and decision model as they were when the refit does not apply."""
    logger, cand = get_run_logger(), champion.candidate
    if not run.config.evaluation.refit_on_train_valid:
        return champion, gated
    reason = _train_valid_refit_problem(champion, gated)
    if reason:
        logger.info("no train+valid refit: %s", reason)
        return champion, gated
    stopping.check()
    with monitoring.measure("refit_on_train_valid"):
        rows = pd.concat([read_parquet(run.paths.split("train")), read_parquet(run.paths.split("valid"))],
                         ignore_index=True)
        model, record = _refit_model(run, champion, rows)
    logger.info("refitted %s on train+valid (%d rows, %.1fs)%s; the test split measures this refit", cand.family,
                len(rows), record["fit_seconds"], _rounds_note(record))
    if isinstance(gated, RegressionModel):  # the interval stays the one fitted on the train-split fit's residuals
        decision = RegressionModel(model, gated.coverage, gated.half_width, gated.calibration_rows, gated.name)
    else:
        decision = DecisionModel(model=model, calibrator=None, threshold=gated.threshold, name=gated.name)
    return Champion(cand, model, champion.candidates, train_valid=record), decision


def _train_valid_refit_problem(champion: Champion, gated: DecisionModel | RegressionModel) -> str | None:
    if "train+valid" in champion.candidate.selection:
        return "the champion was already fitted on train+valid (small data)"
    if getattr(gated, "calibrator", None) is not None:
        return ("its calibration was fitted on valid, which a train+valid refit would have seen: set "
                "evaluation.calibration: none to refit")
    return None


def _refit_model(run: EvaluationInputs, champion: Champion, rows: pd.DataFrame) -> tuple[Any, dict[str, Any]]:
    """The champion's model fitted again on `rows` with the same hyperparameters: a family's pipeline, or
    an ensemble with each member refitted and the same weights. Returns (model, record)."""
    cand = champion.candidate
    if cand.family != "ensemble":
        return _refit_candidate(run, cand, rows)
    by_family = {c.family: c for c in champion.candidates if c.status == "ok" and c.family != "ensemble"}
    members, records = [], {}
    for name in champion.model.names:
        stopping.check()  # a stop between two members' fits leaves nothing half-made
        pipeline, records[name] = _refit_candidate(run, by_family[name], rows)
        members.append(pipeline)
    model = copy.copy(champion.model)  # same class, names and weights; new members
    model.members = members
    return model, {"rows": int(len(rows)), "fit_seconds": round(sum(r["fit_seconds"] for r in records.values()), 3),
                   "members": records}


def _refit_candidate(run: EvaluationInputs, cand: Candidate, rows: pd.DataFrame) -> tuple[Any, dict[str, Any]]:
    from tasks.search import search_settings

    settings, data_settings = search_settings(run.config, cand.family, run.manifest, os.cpu_count() or 1)
    train_rows = cand.train_rows or int(run.manifest["splits"]["train"]["rows"])
    pipeline, record = refit_on_rows(get_family(cand.family), run.info, rows, cand.best_params, settings,
                                     data_settings, cand.best_iteration, train_rows)
    return pipeline, record


def _rounds_note(record: dict[str, Any]) -> str:
    parts = [(name, r["boosting_rounds"]) for name, r in record.get("members", {"": record}).items()
             if r.get("boosting_rounds")]
    return "".join(f", {name + ' ' if name else ''}{b['refit']} boosting rounds ({b['gated']} x {b['scale']})"
                   for name, b in parts)


@task(name="score_test_split", cache_policy=NO_CACHE)
def score_test_split(run: EvaluationInputs, decision: DecisionModel | RegressionModel) -> TestScores:
    """The one read of the test split: predicted on, never fitted on."""
    ev = run.config.evaluation
    test = read_parquet(run.paths.split("test"))
    X_test, y_test = features_and_target(test, run.info)
    if isinstance(decision, RegressionModel):
        with ev_ml.on_every_core(decision):
            pred = decision.predict(X_test)
        lower, upper = decision.interval(pred)
        metrics = compute_regression_metrics(y_test, pred, with_mape=True if run.metric == "mape" else None)
        metrics["interval_coverage"] = coverage_of(y_test, lower, upper)
        get_run_logger().info("test coverage of the %.0f%% prediction interval: %.3f on %d rows",
                              100 * decision.coverage, metrics["interval_coverage"], len(y_test))
        scoring = {"n_classes": 0, "beta": ev.beta, "average": ev.average, "threshold": None}
        return TestScores(test, X_test, y_test, None, pred, metrics, [], scoring, lower, upper)
    with ev_ml.on_every_core(decision):
        proba = decision.predict_proba(X_test)
    y_pred = predict_labels(proba, decision.threshold)  # what decision.predict gives, without predicting again
    scoring = {"n_classes": len(run.info.classes), "beta": ev.beta, "average": ev.average,
               "threshold": decision.threshold}
    metrics = compute_metrics(y_test, proba, **scoring)
    return TestScores(test, X_test, y_test, proba, y_pred, metrics,
                      confusion_summary(y_test, y_pred, run.info.classes), scoring)


@task(name="bootstrap_intervals", cache_policy=NO_CACHE)
def bootstrap_test_intervals(run: EvaluationInputs, scores: TestScores) -> dict[str, tuple[float, float]]:
    """95% bootstrap intervals of every test metric (empty when evaluation.bootstrap_resamples is 0)."""
    ev = run.config.evaluation
    if not ev.bootstrap_resamples:
        return {}
    if run.info.is_regression:
        intervals = bootstrap_regression_intervals(scores.y_test, scores.y_pred, n_resamples=ev.bootstrap_resamples,
                                                   seed=ev.seed)
    else:
        intervals = ev_ml.bootstrap_intervals(scores.y_test, scores.proba, n_resamples=ev.bootstrap_resamples,
                                              seed=ev.seed, **scores.scoring)
    low, high = intervals.get(run.metric, (float("nan"), float("nan")))
    get_run_logger().info("test %s %.4f, bootstrap 95%% interval [%.4f, %.4f] (%d resamples)", run.metric,
                          scores.metrics[run.metric], low, high, ev.bootstrap_resamples)
    return intervals


@task(name="check_fairness", cache_policy=NO_CACHE)
def check_fairness(run: EvaluationInputs, scores: TestScores) -> Fairness:
    """Per-group tables and the two differences for each sensitive column; a gate problem, if any."""
    ev, logger = run.config.evaluation, get_run_logger()
    positive = 1 if run.info.task == "binary" else 0
    summaries, tables, problems = {}, {}, []
    if run.info.is_regression:
        for column in ev.sensitive_columns:
            tables[column], summaries[column] = group_errors(scores.y_test, scores.y_pred, scores.test[column])
            logger.info("errors by %r: largest MAE gap between groups %.4g", column, summaries[column]["mae_gap"])
        if ev.sensitive_columns and ev.fairness_max_difference is not None:
            logger.warning("evaluation.fairness_max_difference gates classification rates; this regression "
                           "reports the error by group only")
        return Fairness(summaries, tables, None)
    for column in ev.sensitive_columns:
        table, summary = ev_ml.fairness_report(scores.y_test, scores.y_pred, scores.test[column], positive=positive)
        tables[column], summaries[column] = table, summary
        logger.info("fairness on %r: demographic parity difference %.3f, equalized odds difference %.3f",
                    column, summary["demographic_parity_difference"], summary["equalized_odds_difference"])
        if ev.fairness_max_difference is not None:
            for key, value in summary.items():
                if value > ev.fairness_max_difference:
                    problems.append(f"{key.replace('_', ' ')} on {column!r} is {value:.3f} > "
                                    f"evaluation.fairness_max_difference {ev.fairness_max_difference}")
    return Fairness(summaries, tables, "; ".join(problems) or None)


@task(name="apply_gate", cache_policy=NO_CACHE)
def apply_gate(run: EvaluationInputs, scores: TestScores, fairness: Fairness) -> GateResult:
    """The threshold, the fairness limit and the current champion scored on this run's test split."""
    ev, root, name = run.config.evaluation, run.config.registry_dir, run.config.model_name
    previous = registry.get_alias(root, name)
    incumbent_value = incumbent_problem = None
    if previous is not None and ev.compare_with_champion:
        incumbent_value, incumbent_problem = _score_incumbent(run, previous, scores.test)
    registered_as = registry.find_versions(root, name, run_id=run.paths.run_id)
    gate = decide_gate(
        run.metric, run.direction, ev.deployment_threshold, scores.metrics[run.metric],
        incumbent_version=previous if ev.compare_with_champion else None,
        incumbent_value=incumbent_value, incumbent_problem=incumbent_problem,
        min_improvement=ev.min_improvement, fairness_problem=fairness.problem,
        registered_as=registered_as[-1] if registered_as else None,
    )
    get_run_logger().info("gate: %s", gate.reason)
    return GateResult(gate, previous)


def _gate_again(run: EvaluationInputs, scores: TestScores, fairness: Fairness, gate: GateResult,
                current: int | None) -> dict[str, Any] | None:
    """Under the registry lock: when another run moved 'champion' since this run's gate read it, the gate
    is decided again against that champion, so that a weaker model never replaces a stronger one."""
    ev = run.config.evaluation
    if current == gate.previous or not ev.compare_with_champion:
        return None
    incumbent_value, incumbent_problem = _score_incumbent(run, current, scores.test) if current else (None, None)
    decision = decide_gate(
        run.metric, run.direction, ev.deployment_threshold, scores.metrics[run.metric], incumbent_version=current,
        incumbent_value=incumbent_value, incumbent_problem=incumbent_problem, min_improvement=ev.min_improvement,
        fairness_problem=fairness.problem)
    get_run_logger().info("gate, again: 'champion' moved to %s meanwhile: %s", current, decision.reason)
    if not decision.passed:
        raise registry.AliasMoved(decision.reason)
    return {"gate": decision.model_dump(mode="json")}


def _score_incumbent(run: EvaluationInputs, version: int, test: pd.DataFrame) -> tuple[float | None, str | None]:
    """The registered champion's metric on this run's test split, or (None, why it cannot be compared)."""
    info, ev = run.info, run.config.evaluation
    try:
        # A refitted champion may have trained on these test rows: compare the model it was gated as.
        model = registry.load_model(run.config.registry_dir, run.config.model_name, version=version, gated=True)
    except GauntletError as exc:
        return None, f"the current champion (version {version}) cannot be loaded: {exc}"
    meta = model.metadata
    if meta.get("task", info.task) != info.task and info.is_regression != (meta.get("task") == "regression"):
        return None, (f"the current champion (version {version}) is a {meta.get('task')} model and this run a "
                      f"{info.task} one: set another registry.model_name")
    if meta.get("target") != info.target or list(map(str, meta.get("classes", []))) != list(map(str, info.classes)):
        return None, (
            f"the current champion (version {version}) predicts {meta.get('target')!r} with classes "
            f"{meta.get('classes')}, not {info.target!r} with {info.classes}: set another registry.model_name"
        )
    missing = [c for c in model.features if c not in test.columns]
    if missing:
        return None, f"the current champion (version {version}) needs columns this table lacks: {missing[:5]}"
    if info.is_regression:
        pred = model.pipeline.predict(test[model.features])
        y = test[info.target].to_numpy(dtype="float64")
        return compute_regression_metrics(y, pred, with_mape=True if run.metric == "mape" else None)[run.metric], None
    proba = model.pipeline.predict_proba(test[model.features])
    scores = compute_metrics(encode_target(test[info.target], info.classes), proba, n_classes=len(info.classes),
                             beta=ev.beta, average=ev.average, threshold=getattr(model.pipeline, "threshold", None))
    return scores[ev.comparison_metric], None


EXPLAIN_CELLS = 20_000  # permutation importance: rows x columns predicted per repeat, at most
EXPLAIN_MIN_ROWS = 500
SHAP_ROWS = 200


@task(name="explain_champion", cache_policy=NO_CACHE)
def explain_champion(run: EvaluationInputs, champion: Champion, decision: DecisionModel | RegressionModel,
                     scores: TestScores) -> Explanations:
    """Permutation importance on validation and, for tree boosters, SHAP values; never fails the run."""
    ev, logger, reports_dir = run.config.evaluation, get_run_logger(), run.paths.reports
    if not ev.explain:
        return Explanations()
    tables, figures = {}, {}
    try:
        # Seeded validation rows: 2,000 at most (importances settle well before that), fewer for wide tables,
        # as each column is predicted 5 times over: 40 columns, 500 rows (100,000 predicted in all).
        n_rows = min(len(run.X_valid), max(EXPLAIN_MIN_ROWS, min(2000, EXPLAIN_CELLS // run.X_valid.shape[1])))
        sample = run.X_valid.sample(n_rows, random_state=ev.seed).index
        rows = run.X_valid.index.get_indexer(sample)
        with ev_ml.on_every_core(decision):
            importance = ev_ml.permutation_importances(decision, run.X_valid.iloc[rows], run.y_valid[rows],
                                                       metric=run.metric, seed=ev.seed, **scores.scoring)
        tables["permutation_importance"] = importance
        reports_dir.mkdir(parents=True, exist_ok=True)
        figures["permutation_importance"] = rep.plot_bars(
            importance, "feature", "importance_mean", f"Permutation importance (validation {run.metric} drop)",
            reports_dir / "permutation_importance.png")
        # TreeSHAP costs more per row (4 s for 500 rows of a 2,000-tree LightGBM): 200 show the spread.
        shap = ev_ml.tree_shap_values(champion.model, run.X_valid.iloc[rows[:SHAP_ROWS]])
        if shap is not None:
            values, names, encoded = shap
            tables["shap_importance"] = pd.DataFrame({"feature": names, "mean_abs_shap": abs(values).mean(axis=0)}
                                                     ).sort_values("mean_abs_shap", ascending=False, ignore_index=True)
            figures["shap_summary"] = rep.plot_shap_summary(values, names, encoded, reports_dir / "shap_summary.png")
        else:
            logger.info("SHAP values: %s has no native TreeSHAP (LightGBM, XGBoost and CatBoost do); permutation "
                        "importance covers it", champion.candidate.family)
        return Explanations(tables, figures, importance["feature"].head(5).tolist())
    except Exception as exc:  # explanations inform; they never sink an evaluation
        logger.warning("explanations failed and were skipped: %s: %s", type(exc).__name__, exc)
        return Explanations()


@task(name="write_reports", cache_policy=NO_CACHE)
def write_reports(run: EvaluationInputs, champion: Champion, decision: DecisionModel, scores: TestScores,
                  intervals: dict, fairness: Fairness, gate: GateResult, explanations: Explanations) -> ReportFiles:
    """performance_metrics.csv, the confusion summary, plots, tables, test predictions, the model card."""
    paths, info, cand = run.paths, run.info, champion.candidate
    if info.is_regression:
        return _write_regression_reports(run, champion, decision, scores, intervals, fairness, gate, explanations)
    reports = rep.write_reports(paths, champion.candidates, cand.family, scores.metrics, scores.confusion, intervals)
    y_test, y_pred, proba = scores.y_test, scores.y_pred, scores.proba
    for key, plot in {"confusion_matrix": rep.plot_confusion_matrix, "roc_curve": rep.plot_roc_curve,
                      "pr_curve": rep.plot_pr_curve, "calibration_curve": rep.plot_calibration_curve}.items():
        plot(y_test, y_pred if key == "confusion_matrix" else proba, info.classes, paths.reports / f"{key}.png")
    figures = ["confusion_matrix", "roc_curve", "pr_curve", "calibration_curve", *explanations.figures]
    tables = {"classification_report": rep.classification_report_table(y_test, y_pred, info.classes),
              **explanations.tables, **{f"fairness_{rep.file_safe(c)}": t for c, t in fairness.tables.items()}}
    predictions = pd.DataFrame(proba, columns=[f"proba_{c}" for c in info.classes])
    predictions.insert(0, "predicted", [info.classes[k] for k in y_pred])
    predictions.insert(0, "actual", scores.test[info.target].to_numpy())
    predictions.to_csv(paths.reports / "test_predictions.csv", index=False)  # what the gate saw, row by row
    reports["test_predictions"] = str(paths.reports / "test_predictions.csv")
    for key, table in tables.items():
        table.to_csv(paths.reports / f"{key}.csv", index=False)
        reports[key] = str(paths.reports / f"{key}.csv")
    reports.update({f"{key}_png": str(paths.reports / f"{key}.png") for key in figures})
    decided = (f"P({info.positive_class}) >= {decision.threshold:.4f} (tuned on validation)"
               if decision.threshold is not None else "the most probable class")
    card = rep.model_card(_card_fields(run, champion, scores, intervals, fairness, gate, explanations, decided))
    return ReportFiles(reports, tables, figures, card)


def _card_fields(run: EvaluationInputs, champion: Champion, scores: TestScores, intervals: dict, fairness: Fairness,
                 gate: GateResult, explanations: Explanations, decision: str) -> dict[str, Any]:
    paths, info, cand, ev, manifest = run.paths, run.info, champion.candidate, run.config.evaluation, run.manifest
    return {
        "model_name": run.config.model_name, "family": cand.family, "metric": run.metric,
        "valid_value": cand.valid_metrics[run.metric], "task": info.task, "target": info.target,
        "classes": info.classes, "run_id": paths.run_id, "data_sha256": manifest["data"]["sha256"],
        "config_hash": manifest["config_hash"], "data_path": manifest["data"]["path"],
        "n_features": len(info.features), "gate": gate.decision.reason, "test_metrics": scores.metrics,
        "intervals": intervals, "splits": manifest["splits"], "test_rows": len(scores.test),
        "params": cand.best_params, "registry_root": str(run.config.registry_dir), "calibration": ev.calibration,
        "decision": decision, "target_transform": info.target_transform,
        "fairness": fairness.summaries, "top_features": explanations.top_features,
        "train_valid_rows": champion.train_valid["rows"] if champion.train_valid else None,
    }


def _write_regression_reports(run: EvaluationInputs, champion: Champion, decision: RegressionModel,
                              scores: TestScores, intervals: dict, fairness: Fairness, gate: GateResult,
                              explanations: Explanations) -> ReportFiles:
    """performance_metrics.csv, residual_summary.csv, the three residual plots, test predictions, the card."""
    paths, cand = run.paths, champion.candidate
    y, pred = scores.y_test, scores.y_pred
    reports = rep.write_reports(paths, champion.candidates, cand.family, scores.metrics, [], intervals,
                                residuals=residual_summary(y, pred))
    rep.plot_predicted_vs_actual(y, pred, paths.reports / "predicted_vs_actual.png", scores.lower, scores.upper)
    rep.plot_residuals(y, pred, paths.reports / "residuals_vs_predicted.png")
    rep.plot_residual_histogram(y, pred, paths.reports / "residual_histogram.png")
    figures = ["predicted_vs_actual", "residuals_vs_predicted", "residual_histogram", *explanations.figures]
    tables = {"residual_summary": pd.read_csv(reports["residual_summary"]), **explanations.tables,
              **{f"errors_by_{c}": t for c, t in fairness.tables.items()}}
    predictions = pd.DataFrame({"actual": y, "predicted": pred, "prediction_lower": scores.lower,
                                "prediction_upper": scores.upper})
    predictions.to_csv(paths.reports / "test_predictions.csv", index=False)  # what the gate saw, row by row
    reports["test_predictions"] = str(paths.reports / "test_predictions.csv")
    for key, table in tables.items():
        if key != "residual_summary":
            table.to_csv(paths.reports / f"{key}.csv", index=False)
            reports[key] = str(paths.reports / f"{key}.csv")
    reports.update({f"{key}_png": str(paths.reports / f"{key}.png") for key in figures})
    decided = (f"the model's number; interval prediction +/- {decision.half_width:.4g} for "
               f"{decision.coverage:.0%} coverage (split-conformal on {decision.calibration_rows} validation rows; "
               f"test coverage {scores.metrics['interval_coverage']:.3f})")
    card = rep.model_card(_card_fields(run, champion, scores, intervals, fairness, gate, explanations, decided))
    return ReportFiles(reports, tables, figures, card)


@task(name="export_onnx", cache_policy=NO_CACHE)
def export_onnx(decision: DecisionModel, scores: TestScores) -> tuple[bytes | None, dict[str, Any]]:
    """The champion as ONNX, kept only when its probabilities match the original's on the test split."""
    from tasks.ml.onnx_export import export

    logger = get_run_logger()
    onnx_bytes, record = export(decision, scores.X_test)
    if onnx_bytes is not None:
        what = "probability" if "max_abs_probability_diff" in record else "prediction"
        logger.info("ONNX export kept: %d KB, largest %s difference %.1e on %d test rows", len(onnx_bytes) // 1024,
                    what, record.get(f"max_abs_{what}_diff"), len(scores.X_test))
    else:
        logger.warning("ONNX export not kept: %s", record["reason"])
    return onnx_bytes, record


@task(name="refit_champion", cache_policy=NO_CACHE)
def refit_champion(run: EvaluationInputs, champion: Champion, decision: DecisionModel) -> Production:
    """registry.refit_on_full_data: the gated pipeline (each member of an ensemble) and hyperparameters
    fitted again on every labelled row (train+valid+test), with the gated threshold; or the gated model
    with the reason a refit does not apply."""
    cand, paths = champion.candidate, run.paths
    kept = {"refitted": False, "model_file": "model.pkl (the gated model)"}
    if decision.calibrator is not None:
        record = {**kept, "reason": "the calibration is fitted on held-out rows, and a refit on every row leaves "
                                    "none: registered as gated (or set evaluation.calibration: none)"}
        return Production(decision, record, {})
    with monitoring.measure("refit") as usage:
        rows = pd.concat([read_parquet(paths.split(name)) for name in ("train", "valid", "test")], ignore_index=True)
        pipeline, record = _refit_model(run, champion, rows)
    record.update(
        refitted=True, model_file="model.pkl (the refit: the version's production model)",
        gated_model_file="gated_model.pkl",
        metrics_from="the held-out evaluation of gated_model.pkl"
                     + (", fitted on train+valid" if champion.train_valid else ", fitted on the train split")
                     + " before the refit: the refitted model has no held-out rows left to be measured on",
    )
    get_run_logger().info("refitted %s on all %d rows%s (%.1fs); the version's metrics are the gated model's",
                          cand.family, record["rows"], _rounds_note(record), record["fit_seconds"])
    if isinstance(decision, RegressionModel):  # the interval stays the gated model's (no held-out rows are left)
        production = RegressionModel(pipeline, decision.coverage, decision.half_width, decision.calibration_rows,
                                     decision.name)
        record["interval_from"] = "the gated model's validation residuals"
    else:
        production = DecisionModel(model=pipeline, calibrator=None, threshold=decision.threshold, name=decision.name)
    return Production(production, record, {"refit": usage.record})


@task(name="register_champion", cache_policy=NO_CACHE)
def register_champion(run: EvaluationInputs, champion: Champion, decision: DecisionModel, scores: TestScores,
                      intervals: dict, fairness: Fairness, gate: GateResult, files: ReportFiles,
                      production: Production | None, onnx: tuple[bytes | None, dict] | None) -> Registration:
    """A new registry version when the gate passed ('champion' moves to it), and the model card."""
    stopping.check()  # a run asked to stop registers nothing
    logger, paths, info, manifest = get_run_logger(), run.paths, run.info, run.manifest
    root, name, cand, ev = run.config.registry_dir, run.config.model_name, champion.candidate, run.config.evaluation
    version, stages, note = None, dict(production.stages) if production else {}, None
    if gate.decision.passed:
        extra_files = {"model.onnx": onnx[0]} if onnx and onnx[0] is not None else {}
        refit = production.refit if production else None
        if refit and refit.get("refitted"):
            extra_files["gated_model.pkl"] = pickle.dumps(decision, protocol=pickle.HIGHEST_PROTOCOL)
        with monitoring.measure("register") as usage:
            try:
                version = registry.register_model(
                    root, name, production.model if production else decision, model_card=files.card,
                    extra_files=extra_files, refuse_identical=True,
                    recheck=lambda current: _gate_again(run, scores, fairness, gate, current), metadata={
                        "family": cand.family, "run_id": paths.run_id, "run_dir": str(paths.root),
                        "metric": run.metric, "direction": run.direction, "valid_metrics": cand.valid_metrics,
                        "test_metrics": scores.metrics, "test_intervals": intervals, "params": cand.best_params,
                        "calibration": ev.calibration, "decision_threshold": decision.threshold,
                        "data_sha256": manifest["data"]["sha256"], "config_hash": manifest["config_hash"],
                        "task": info.task, "target": info.target, "classes": info.classes,
                        "features": info.features, "gate": gate.decision.model_dump(mode="json"),
                        **({"target_transform": info.target_transform, "prediction_interval": {
                            "coverage": decision.coverage, "half_width": decision.half_width,
                            "calibration_rows": decision.calibration_rows, "method": "split-conformal",
                            "test_coverage": scores.metrics["interval_coverage"]}}
                           if isinstance(decision, RegressionModel) else {}),
                        "fairness": fairness.summaries,
                        "input_schema": schema_metadata(scores.X_test, info, run.config.data.na_values),
                        "packages": manifest["packages"], "tracking_key": cand.tracking_key,
                        **({"onnx": onnx[1]} if onnx is not None else {}), **({"refit": refit} if refit else {}),
                        **({"train_valid_refit": champion.train_valid} if champion.train_valid else {}),
                    })
            except (registry.IdenticalModel, registry.AliasMoved) as same:  # adds nothing; the champion stays
                note = str(same)
        stages["register"] = usage.record
        if note:
            logger.warning("not registered: %s; 'champion' stays at %s", note, registry.get_alias(root, name))
        else:
            logger.info("registered %s version %d; 'champion' moved from %s", name, version,
                        f"version {gate.previous}" if gate.previous else "nowhere (first champion)")
    else:
        logger.warning("not registered: %s; 'champion' stays at %s", gate.decision.reason, gate.previous)
    card_text = files.card.replace("{version}", str(version) if version else "(not registered)")
    (paths.reports / "model_card.md").write_text(card_text)
    return Registration(version, stages, card_text, str(paths.reports / "model_card.md"), note)


@task(name="log_to_tracker", cache_policy=NO_CACHE)
def log_to_tracker(run: EvaluationInputs, champion: Champion, decision: DecisionModel, scores: TestScores,
                   intervals: dict, fairness: Fairness, gate: GateResult, files: ReportFiles,
                   registration: Registration) -> tuple[str | None, str, str | None]:
    """The evaluation's experiment (Comet, or its offline archive): metrics, plots, tables, the registry
    version. Returns (experiment key, where it went, its offline archive)."""
    paths, config, cand, version = run.paths, run.config, champion.candidate, registration.version
    tracker = start_tracker(config.tracking, config.comet_dir / paths.run_id, name=f"{paths.run_id}-evaluation",
                            tags=["gauntlet", "evaluation", cand.family])
    try:
        tracker.log_params({"run_id": paths.run_id, "champion_family": cand.family, "metric": run.metric,
                            "direction": run.direction, "deployment_threshold": gate.decision.threshold,
                            "data_sha256": run.manifest["data"]["sha256"], "config_hash": run.manifest["config_hash"]})
        tracker.log_metrics({f"test_{k}": v for k, v in scores.metrics.items()})
        tracker.log_metrics({f"valid_{k}": v for k, v in cand.valid_metrics.items()})
        if not run.info.is_regression:
            tracker.log_confusion_matrix(scores.y_test, scores.y_pred, [str(c) for c in run.info.classes])
        tracker.log_other("champion_family", cand.family)
        tracker.log_other("gate_passed", gate.decision.passed)
        tracker.log_other("gate_decision", gate.decision.reason)
        tracker.log_other("registry_version", version if version is not None else "not registered")
        if version is not None:  # the champion in Comet's model registry too (online)
            tracker.log_model(config.model_name, Path(config.registry_dir) / config.model_name / str(version)
                              / "model.pkl")
            tracker.register_model(config.model_name, version, tags=[cand.family, "champion", run.info.task],
                                   description=gate.decision.reason)
        for key in files.figures:
            tracker.log_image(key, paths.reports / f"{key}.png")
        for key, table in files.tables.items():
            tracker.log_table(f"{key}.csv", table)
        for key, (low, high) in intervals.items():
            tracker.log_metrics({f"test_{key}_lower": low, f"test_{key}_upper": high})
        for column, summary in fairness.summaries.items():
            tracker.log_metrics({f"fairness_{column}_{k}": v for k, v in summary.items()})
        tracker.log_other("decision_threshold", decision.threshold if decision.threshold is not None else "argmax")
        for stage_name, figures in {**run.manifest.get("stages", {}), **registration.stages}.items():
            tracker.log_metrics({f"stage_{stage_name.replace(' ', '_')}_{k}": v for k, v in figures.items()
                                 if isinstance(v, int | float)})
        summary = files.reports.get("confusion_matrix_summary") or files.reports["residual_summary"]
        for path in (files.reports["performance_metrics"], summary, registration.card_path):
            tracker.log_artifact(path)
    finally:
        tracker.end()
        get_run_logger().info(tracker.describe())
        import matplotlib.pyplot as plt

        plt.close("all")
    prune_offline_archives(config.comet_dir, config.tracking.keep_offline_archives)
    return tracker.key, tracker.describe(), str(tracker.archive) if tracker.archive else None


@task(name="publish_report", cache_policy=NO_CACHE)
def publish_report(run: EvaluationInputs, champion: Champion, decision: DecisionModel, scores: TestScores,
                   intervals: dict, fairness: Fairness, gate: GateResult, files: ReportFiles,
                   registration: Registration, tracking: tuple[str | None, str, str | None]) -> EvalReport:
    """report.json and the Prefect artifacts (leaderboard, gate decision with the model card, tables)."""
    cand, ev = champion.candidate, run.config.evaluation
    report = EvalReport(
        run_id=run.paths.run_id, run_dir=str(run.paths.root), evaluation=run.paths.evaluation,
        champion=cand.family, metric=run.metric,
        champion_valid=cand.valid_metrics[run.metric], test_metrics=scores.metrics, confusion=scores.confusion,
        gate=gate.decision, registered=registration.version is not None, registry_version=registration.version,
        previous_champion_version=gate.previous, candidates=champion.candidates, tracking_key=tracking[0],
        tracking=tracking[1], stages=registration.stages, intervals=intervals, registry_note=registration.note,
        reports={**files.reports, "model_card": registration.card_path},
        tracking_archives=[c.tracking_archive for c in champion.candidates if c.tracking_archive]
        + ([tracking[2]] if tracking[2] else []),
        calibration=ev.calibration, decision_threshold=decision.threshold, fairness=fairness.summaries,
        task=run.info.task, prediction_interval={
            "coverage": decision.coverage, "half_width": decision.half_width,
            "test_coverage": scores.metrics["interval_coverage"]} if isinstance(decision, RegressionModel) else None,
    )
    rep.write_report_json(run.paths, report)
    rep.publish_prefect_artifacts(report, registration.card_text, files.tables)
    return report
