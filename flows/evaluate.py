"""evaluate: pick the champion on validation, score it once on test, gate it, register it.

Runs inside `train`, or alone on a finished run (for example with another threshold):

    python flows/evaluate.py --run artifacts/runs/<run_id> [--set evaluation.deployment_threshold=0.9]
"""

from __future__ import annotations

from config import local_server
from config.runtime import configure_environment
from flows import _cli

configure_environment()
if __name__ == "__main__":
    _cli.skip_teardown_at_exit()
    local_server.start_early()  # Prefect's local server boots while the imports below run

import argparse  # noqa: E402
import os  # noqa: E402
import pickle  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pandas as pd  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from prefect import flow, get_run_logger  # noqa: E402

from config.errors import GauntletError  # noqa: E402
from config.schema import TrainConfig  # noqa: E402
from flows._cli import fail, print_summary  # noqa: E402
from tasks import monitoring, registry  # noqa: E402
from tasks import reporting as rep  # noqa: E402
from tasks.ml import evaluation as ev_ml  # noqa: E402
from tasks.ml.data import encode_target, features_and_target, read_parquet  # noqa: E402
from tasks.ml.estimators import get_family  # noqa: E402
from tasks.ml.evaluation import DecisionModel  # noqa: E402
from tasks.ml.metrics import (  # noqa: E402
    compute_metrics,
    confusion_summary,
    is_better,
    passes_gate,
    select_champion,
)
from tasks.ml.results import Candidate, EvalReport, GateDecision  # noqa: E402
from tasks.ml.scoring import schema_metadata  # noqa: E402
from tasks.ml.search import refit_on_rows  # noqa: E402
from tasks.modeling import load_pipeline, save_pipeline  # noqa: E402
from tasks.runs import RunPaths, dataset_info, load_run_config, read_candidates, read_json  # noqa: E402
from tasks.tracking import start_tracker  # noqa: E402


def decide_gate(
    metric: str, direction: str, threshold: float, value: float,
    incumbent_version: int | None = None, incumbent_value: float | None = None, incumbent_problem: str | None = None,
    margin: float = 0.0, fairness_problem: str | None = None,
) -> GateDecision:
    """Pass when the test metric clears the threshold, the fairness limit holds, and the challenger
    is not worse than the current champion by more than `margin`."""
    op = ">=" if direction == "maximize" else "<="
    clears = f"test {metric} {value:.4f} {op} threshold {threshold}"
    allowance = incumbent_value if incumbent_value is None else (
        incumbent_value - margin if direction == "maximize" else incumbent_value + margin)
    worse_than = f"{incumbent_value:.4f}" if incumbent_value is not None else "-"
    if margin and incumbent_value is not None:
        worse_than += f" (margin {margin})"
    if not passes_gate(value, threshold, direction):
        passed, reason = False, f"test {metric} {value:.4f} does not satisfy {op} {threshold}"
    elif fairness_problem is not None:
        passed, reason = False, f"{clears}, but {fairness_problem}"
    elif incumbent_version is None:
        passed, reason = True, f"{clears}; no current champion"
    elif incumbent_problem is not None:
        passed, reason = False, f"{clears}, but {incumbent_problem}"
    elif is_better(allowance, value, direction):
        passed, reason = False, (
            f"{clears}, but the current champion (version {incumbent_version}) scores {worse_than} "
            f"on this run's test split, better than this challenger's {value:.4f}"
        )
    else:
        passed, reason = True, (
            f"{clears} and not worse than the current champion (version {incumbent_version}: "
            f"{worse_than} on this run's test split)"
        )
    return GateDecision(metric=metric, direction=direction, threshold=threshold, test_value=value,
                        passed=passed, reason=reason, incumbent_version=incumbent_version,
                        incumbent_value=incumbent_value, margin=margin)


def score_incumbent(
    root: Path, name: str, version: int, test: pd.DataFrame, info, config: TrainConfig
) -> tuple[float | None, str | None]:
    """The registered champion's metric on this run's test split, or (None, why it cannot be compared)."""
    try:
        # A champion refitted on every row of its data may have trained on this run's test rows: it is
        # compared through the model it was gated as (fitted on its train split only).
        model = registry.load_model(root, name, version=version, gated=True)
    except GauntletError as exc:
        return None, f"the current champion (version {version}) cannot be loaded: {exc}"
    meta = model.metadata
    if meta.get("target") != info.target or list(map(str, meta.get("classes", []))) != list(map(str, info.classes)):
        return None, (
            f"the current champion (version {version}) predicts {meta.get('target')!r} with classes "
            f"{meta.get('classes')}, not {info.target!r} with {info.classes}: set another registry.model_name"
        )
    missing = [c for c in model.features if c not in test.columns]
    if missing:
        return None, f"the current champion (version {version}) needs columns this table lacks: {missing[:5]}"
    proba = model.pipeline.predict_proba(test[model.features])
    scores = compute_metrics(encode_target(test[info.target], info.classes), proba, n_classes=len(info.classes),
                             beta=config.evaluation.beta, average=config.evaluation.average,
                             threshold=getattr(model.pipeline, "threshold", None))
    return scores[config.evaluation.comparison_metric], None


def refit_champion(
    decision: DecisionModel, champion: Candidate, paths: RunPaths, config: TrainConfig, manifest: dict, info,
    valid: pd.DataFrame, test: pd.DataFrame, logger,
) -> tuple[DecisionModel, dict[str, Any]]:
    """registry.refit_on_full_data: the gated champion's pipeline and hyperparameters fitted again on
    every labelled row (train+valid+test), with the gated decision threshold; or the gated model itself
    with the reason a refit does not apply. The record goes into the version's metadata."""
    kept = {"refitted": False, "model_file": "model.pkl (the gated model)"}
    if champion.family == "ensemble":
        return decision, {**kept, "reason": "an ensemble's members are not refitted one by one: registered as gated"}
    if decision.calibrator is not None:
        return decision, {**kept, "reason": "the calibration is fitted on held-out rows, and a refit on every row "
                                            "leaves none: registered as gated (or set evaluation.calibration: none)"}
    from flows.tune import search_settings

    settings, data_settings = search_settings(config, champion.family, manifest, os.cpu_count() or 1)
    train = read_parquet(paths.split("train"))
    rows = pd.concat([train, valid, test], ignore_index=True)
    pipeline, record = refit_on_rows(get_family(champion.family), info, rows, champion.best_params, settings,
                                     data_settings, champion.best_iteration, champion.train_rows or len(train))
    record.update(
        refitted=True, model_file="model.pkl (the refit: the version's production model)",
        gated_model_file="gated_model.pkl",
        metrics_from="the held-out evaluation of gated_model.pkl, fitted on the train split before the refit: "
                     "the refitted model has no held-out rows left to be measured on",
    )
    rounds = record.get("boosting_rounds")
    logger.info("refitted %s on all %d rows%s (%.1fs); the version's metrics are the gated model's",
                champion.family, record["rows"],
                f", {rounds['refit']} boosting rounds ({rounds['gated']} x {rounds['scale']})" if rounds else "",
                record["fit_seconds"])
    return DecisionModel(model=pipeline, calibrator=None, threshold=decision.threshold, name=decision.name), record


def build_ensemble(
    paths: RunPaths, candidates: list[Candidate], X_valid: pd.DataFrame, y_valid, n_classes: int,
    config: TrainConfig, logger,
) -> tuple[Candidate | None, Any]:
    """Soft voting over the top-k candidates by validation metric, scored on the valid split."""
    ev = config.evaluation
    ok = [c for c in candidates if c.status == "ok"]
    if any("train+valid" in c.selection for c in ok):
        logger.warning("ensemble skipped: the candidates were fitted on train+valid (small data), so the "
                       "valid split cannot score their ensemble")
        return None, None
    ok.sort(key=lambda c: c.valid_metrics[ev.comparison_metric], reverse=ev.resolved_direction == "maximize")
    members = ok[: ev.ensemble.top_k]
    if len(members) < 2:
        logger.warning("ensemble skipped: %d candidate(s) succeeded, it needs 2", len(members))
        return None, None
    ensemble = ev_ml.SoftVoteEnsemble(
        [load_pipeline(c.pipeline_path, c.pipeline_sha256) for c in members], [c.family for c in members]
    )
    valid_metrics = compute_metrics(y_valid, ensemble.predict_proba(X_valid), n_classes=n_classes,
                                    beta=ev.beta, average=ev.average)
    path = paths.candidates / "ensemble.pkl"
    sha = save_pipeline(ensemble, path)
    candidate = Candidate(
        family="ensemble", metric=ev.comparison_metric, best_params={"members": ensemble.names, "voting": "soft"},
        valid_metrics=valid_metrics, pipeline_path=str(path), pipeline_sha256=sha, selection="the valid split",
        search_seconds=round(sum(c.search_seconds for c in members), 3),
    )
    logger.info("ensemble of %s: valid %s %.4f", ensemble.names, ev.comparison_metric,
                valid_metrics[ev.comparison_metric])
    return candidate, ensemble


def fit_decision(
    model: Any, champion: Candidate, X_valid: pd.DataFrame, y_valid, info, config: TrainConfig, logger,
) -> ev_ml.DecisionModel:
    """Calibration and the binary decision threshold, both fitted on the validation split only."""
    ev = config.evaluation
    decision = ev_ml.DecisionModel(model, name=champion.family)
    wanted = ev.calibration != "none" or ev.tune_threshold
    if wanted and "train+valid" in champion.selection:
        logger.warning("calibration and threshold tuning skipped: the champion was fitted on train+valid "
                       "(small data), so the valid split is not held out from it")
        return decision
    if ev.calibration != "none":
        decision.calibrator = ev_ml.fit_calibrator(model, X_valid, y_valid, ev.calibration, len(info.classes))
        logger.info("calibrated the champion's probabilities (%s) on %d validation rows", ev.calibration, len(y_valid))
    if ev.tune_threshold and info.task == "binary":
        decision.threshold = ev_ml.tune_threshold(
            y_valid, decision.predict_proba(X_valid), ev.comparison_metric, ev.beta, ev.resolved_direction)
        logger.info("decision threshold tuned on validation %s: %.4f", ev.comparison_metric, decision.threshold)
    elif ev.tune_threshold:
        logger.warning("evaluation.tune_threshold applies to binary tasks; this %s task keeps argmax", info.task)
    return decision


def fairness_checks(
    test: pd.DataFrame, y_test, y_pred, info, config: TrainConfig,
) -> tuple[dict[str, dict[str, float]], dict[str, pd.DataFrame], str | None]:
    """Per-group tables and the two differences for each sensitive column; a gate problem, if any."""
    ev = config.evaluation
    positive = 1 if info.task == "binary" else 0
    summaries, tables, problems = {}, {}, []
    for column in ev.sensitive_columns:
        table, summary = ev_ml.fairness_report(y_test, y_pred, test[column], positive=positive)
        tables[column], summaries[column] = table, summary
        if ev.fairness_max_difference is not None:
            for key, value in summary.items():
                if value > ev.fairness_max_difference:
                    problems.append(f"{key.replace('_', ' ')} on {column!r} is {value:.3f} > "
                                    f"evaluation.fairness_max_difference {ev.fairness_max_difference}")
    return summaries, tables, "; ".join(problems) or None


def _run_name() -> str:
    from prefect.runtime import flow_run

    return f"evaluate-{Path(flow_run.parameters['run_dir']).name}"


@flow(name="evaluate", flow_run_name=_run_name, log_prints=True)
def evaluate(run_dir: str, config: TrainConfig | None = None) -> EvalReport:
    """Select on validation only; touch the test split once, for the champion only."""
    logger = get_run_logger()
    paths = RunPaths(run_dir)
    config = config or load_run_config(paths)
    manifest = read_json(paths.manifest)
    info = dataset_info(manifest)
    metric = config.evaluation.comparison_metric
    direction = config.evaluation.resolved_direction

    ev = config.evaluation
    candidates = read_candidates(paths)
    try:
        select_champion(candidates, metric, direction)  # fail before any work when nothing can win
    except ValueError as exc:
        raise GauntletError(f"run {paths.run_id}: {exc}; rerun the training") from None
    for split in ("valid", "test"):
        if not paths.split(split).is_file():
            raise GauntletError(f"run {paths.run_id} lacks {paths.split(split)}; rerun the training")
    columns = pq.read_schema(paths.split("test")).names
    missing = [c for c in ev.sensitive_columns if c not in columns]
    if missing:
        raise GauntletError(f"evaluation.sensitive_columns names columns not in the table: {missing}; "
                            f"choose among {', '.join(columns[:12])}")
    valid = read_parquet(paths.split("valid"))
    X_valid, y_valid = features_and_target(valid, info)
    n_classes = len(info.classes)
    ensemble = None
    if ev.ensemble.enabled:
        ens_candidate, ensemble = build_ensemble(paths, candidates, X_valid, y_valid, n_classes, config, logger)
        if ens_candidate is not None:
            candidates = [*candidates, ens_candidate]
    try:
        champion = select_champion(candidates, metric, direction)
    except ValueError as exc:
        raise GauntletError(f"run {paths.run_id}: {exc}; rerun the training") from None
    logger.info("champion on validation %s: %s (%.4f)", metric, champion.family, champion.valid_metrics[metric])

    model = ensemble if champion.family == "ensemble" else load_pipeline(
        champion.pipeline_path, champion.pipeline_sha256)
    decision = fit_decision(model, champion, X_valid, y_valid, info, config, logger)

    # The test split is read here and only predicted on: nothing below fits on it.
    test = read_parquet(paths.split("test"))
    X_test, y_test = features_and_target(test, info)
    proba = decision.predict_proba(X_test)
    y_pred = decision.predict(X_test)
    scoring = {"n_classes": n_classes, "beta": ev.beta, "average": ev.average, "threshold": decision.threshold}
    test_metrics = compute_metrics(y_test, proba, **scoring)
    intervals = {}
    if ev.bootstrap_resamples:
        intervals = ev_ml.bootstrap_intervals(y_test, proba, n_resamples=ev.bootstrap_resamples, seed=ev.seed,
                                              **scoring)
        low, high = intervals.get(metric, (float("nan"), float("nan")))
        logger.info("test %s %.4f, bootstrap 95%% interval [%.4f, %.4f] (%d resamples)", metric,
                    test_metrics[metric], low, high, ev.bootstrap_resamples)
    confusion = confusion_summary(y_test, y_pred, info.classes)
    fairness, fairness_tables, fairness_problem = fairness_checks(test, y_test, y_pred, info, config)

    root, name = config.registry_dir, config.model_name
    previous = registry.get_alias(root, name)
    incumbent_value = incumbent_problem = None
    if previous is not None and ev.compare_with_champion:
        incumbent_value, incumbent_problem = score_incumbent(root, name, previous, test, info, config)
    gate = decide_gate(
        metric, direction, ev.deployment_threshold, test_metrics[metric],
        incumbent_version=previous if ev.compare_with_champion else None,
        incumbent_value=incumbent_value, incumbent_problem=incumbent_problem,
        margin=ev.champion_margin, fairness_problem=fairness_problem,
    )
    logger.info("gate: %s", gate.reason)

    reports = rep.write_reports(paths, candidates, champion.family, test_metrics, confusion, intervals)
    figures = {
        "confusion_matrix": rep.plot_confusion_matrix(y_test, y_pred, info.classes,
                                                      paths.reports / "confusion_matrix.png"),
        "roc_curve": rep.plot_roc_curve(y_test, proba, info.classes, paths.reports / "roc_curve.png"),
        "pr_curve": rep.plot_pr_curve(y_test, proba, info.classes, paths.reports / "pr_curve.png"),
        "calibration_curve": rep.plot_calibration_curve(y_test, proba, info.classes,
                                                        paths.reports / "calibration_curve.png"),
    }
    tables = {"classification_report": rep.classification_report_table(y_test, y_pred, info.classes)}
    predictions = pd.DataFrame(proba, columns=[f"proba_{c}" for c in info.classes])
    predictions.insert(0, "predicted", [info.classes[k] for k in y_pred])
    predictions.insert(0, "actual", test[info.target].to_numpy())
    predictions.to_csv(paths.reports / "test_predictions.csv", index=False)  # what the gate saw, row by row
    reports["test_predictions"] = str(paths.reports / "test_predictions.csv")
    top_features: list[str] = []
    if ev.explain:
        try:
            # At most 2,000 validation rows (seeded): importances settle well before that, and each
            # column costs n_repeats predictions of the whole sample.
            sample = X_valid.sample(min(len(X_valid), 2000), random_state=ev.seed).index
            rows = X_valid.index.get_indexer(sample)
            importance = ev_ml.permutation_importances(
                decision, X_valid.iloc[rows], y_valid[rows], metric=metric, seed=ev.seed, **scoring)
            tables["permutation_importance"] = importance
            top_features = importance["feature"].head(5).tolist()
            figures["permutation_importance"] = rep.plot_bars(
                importance, "feature", "importance_mean", f"Permutation importance (validation {metric} drop)",
                paths.reports / "permutation_importance.png")
            shap = ev_ml.tree_shap_values(model, X_valid.iloc[rows[:500]])  # TreeSHAP is costlier per row
            if shap is not None:
                values, names, encoded = shap
                shap_table = pd.DataFrame({"feature": names, "mean_abs_shap": abs(values).mean(axis=0)}).sort_values(
                    "mean_abs_shap", ascending=False, ignore_index=True)
                tables["shap_importance"] = shap_table
                figures["shap_summary"] = rep.plot_shap_summary(values, names, encoded,
                                                                paths.reports / "shap_summary.png")
            else:
                logger.info("SHAP values: %s has no native TreeSHAP (LightGBM and XGBoost do); permutation "
                            "importance covers it", champion.family)
        except Exception as exc:  # explanations inform; they never sink an evaluation
            logger.warning("explanations failed and were skipped: %s: %s", type(exc).__name__, exc)
    for column, table in fairness_tables.items():
        tables[f"fairness_{column}"] = table
        logger.info("fairness on %r: demographic parity difference %.3f, equalized odds difference %.3f",
                    column, fairness[column]["demographic_parity_difference"],
                    fairness[column]["equalized_odds_difference"])
    for key, table in tables.items():
        table.to_csv(paths.reports / f"{key}.csv", index=False)
        reports[key] = str(paths.reports / f"{key}.csv")
    for key in figures:
        reports[f"{key}_png"] = str(paths.reports / f"{key}.png")

    card_fields = {
        "model_name": name, "family": champion.family, "metric": metric,
        "valid_value": champion.valid_metrics[metric], "task": info.task, "target": info.target,
        "classes": info.classes, "run_id": paths.run_id, "data_sha256": manifest["data"]["sha256"],
        "config_hash": manifest["config_hash"], "data_path": manifest["data"]["path"],
        "n_features": len(info.features), "gate": gate.reason, "test_metrics": test_metrics,
        "intervals": intervals, "splits": manifest["splits"], "test_rows": len(test),
        "params": champion.best_params, "registry_root": str(root), "calibration": ev.calibration,
        "decision": f"P({info.positive_class}) >= {decision.threshold:.4f} (tuned on validation)"
        if decision.threshold is not None else "the most probable class",
        "fairness": fairness, "top_features": top_features,
    }
    card = rep.model_card(card_fields)  # {version} is filled in by the registry
    version = None
    extra_files, onnx_record = {}, None
    if gate.passed and config.registry.export_onnx:
        from tasks.ml.onnx_export import export

        onnx_bytes, onnx_record = export(decision, X_test)
        if onnx_bytes is not None:
            extra_files["model.onnx"] = onnx_bytes
            logger.info("ONNX export kept: %d KB, largest probability difference %.1e on %d test rows",
                        len(onnx_bytes) // 1024, onnx_record["max_abs_probability_diff"], len(X_test))
        else:
            logger.warning("ONNX export not kept: %s", onnx_record["reason"])
    stages: dict[str, dict] = {}  # registration's cost, for the run's manifest
    production, refit_record = decision, None
    if gate.passed and config.registry.refit_on_full_data:
        with monitoring.measure("refit") as usage:
            production, refit_record = refit_champion(decision, champion, paths, config, manifest, info, valid, test,
                                                      logger)
        stages["refit"] = usage.record
        if refit_record["refitted"]:
            extra_files["gated_model.pkl"] = pickle.dumps(decision, protocol=pickle.HIGHEST_PROTOCOL)
    if gate.passed:
        with monitoring.measure("register") as usage:
            version = registry.register_model(
                root, name, production,  # the gated object (model, calibrator, threshold), or its refit
                metadata={
                    "family": champion.family, "run_id": paths.run_id, "run_dir": str(paths.root),
                    "metric": metric, "direction": direction, "valid_metrics": champion.valid_metrics,
                    "test_metrics": test_metrics, "test_intervals": intervals, "params": champion.best_params,
                    "calibration": ev.calibration, "decision_threshold": decision.threshold,
                    "data_sha256": manifest["data"]["sha256"], "config_hash": manifest["config_hash"],
                    "task": info.task, "target": info.target, "classes": info.classes,
                    "features": info.features, "gate": gate.model_dump(mode="json"), "fairness": fairness,
                    "input_schema": schema_metadata(X_test, info),
                    "packages": manifest["packages"], "tracking_key": champion.tracking_key,
                    **({"onnx": onnx_record} if onnx_record is not None else {}),
                    **({"refit": refit_record} if refit_record is not None else {}),
                },
                model_card=card, extra_files=extra_files,
            )
        stages["register"] = usage.record
        logger.info("registered %s version %d; 'champion' moved from %s", name, version,
                    f"version {previous}" if previous else "nowhere (first champion)")
    else:
        logger.warning("not registered: %s; 'champion' stays at %s", gate.reason, previous)
    card_text = card.replace("{version}", str(version) if version else "(not registered)")
    (paths.reports / "model_card.md").write_text(card_text)
    reports["model_card"] = str(paths.reports / "model_card.md")

    tracker = start_tracker(config.tracking, config.comet_dir, name=f"{paths.run_id}-evaluation",
                            tags=["gauntlet", "evaluation", champion.family])
    try:
        tracker.log_params({"run_id": paths.run_id, "champion_family": champion.family, "metric": metric,
                            "direction": direction, "deployment_threshold": gate.threshold,
                            "data_sha256": manifest["data"]["sha256"], "config_hash": manifest["config_hash"]})
        tracker.log_metrics({f"test_{k}": v for k, v in test_metrics.items()})
        tracker.log_metrics({f"valid_{k}": v for k, v in champion.valid_metrics.items()})
        tracker.log_confusion_matrix(y_test, y_pred, [str(c) for c in info.classes])
        tracker.log_other("champion_family", champion.family)
        tracker.log_other("gate_passed", gate.passed)
        tracker.log_other("gate_decision", gate.reason)
        tracker.log_other("registry_version", version if version is not None else "not registered")
        if version is not None:  # the champion in Comet's model registry too (online)
            tracker.log_model(name, Path(root) / name / str(version) / "model.pkl")
            tracker.register_model(name, version, tags=[champion.family, "champion", info.task],
                                   description=gate.reason)
        for key in figures:
            tracker.log_image(key, paths.reports / f"{key}.png")
        for key, table in tables.items():
            tracker.log_table(f"{key}.csv", table)
        for key, low_high in intervals.items():
            tracker.log_metrics({f"test_{key}_lower": low_high[0], f"test_{key}_upper": low_high[1]})
        for column, summary in fairness.items():
            tracker.log_metrics({f"fairness_{column}_{k}": v for k, v in summary.items()})
        tracker.log_other("decision_threshold", decision.threshold if decision.threshold is not None else "argmax")
        for stage_name, figures in {**manifest.get("stages", {}), **stages}.items():  # what each stage cost
            tracker.log_metrics({f"stage_{stage_name.replace(' ', '_')}_{k}": v for k, v in figures.items()
                                 if isinstance(v, int | float)})
        tracker.log_artifact(reports["performance_metrics"])
        tracker.log_artifact(reports["confusion_matrix_summary"])
        tracker.log_artifact(reports["model_card"])
    finally:
        tracker.end()
        logger.info(tracker.describe())
        import matplotlib.pyplot as plt

        plt.close("all")

    report = EvalReport(
        run_id=paths.run_id, run_dir=str(paths.root), champion=champion.family, metric=metric,
        champion_valid=champion.valid_metrics[metric], test_metrics=test_metrics, confusion=confusion,
        gate=gate, registered=version is not None, registry_version=version,
        previous_champion_version=previous, candidates=candidates, tracking_key=tracker.key,
        tracking=tracker.describe(), stages=stages,
        reports=reports, intervals=intervals, calibration=ev.calibration, decision_threshold=decision.threshold,
        fairness=fairness,
    )
    rep.write_report_json(paths, report)
    rep.publish_prefect_artifacts(report, card_text, tables)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate a finished gauntlet run again.")
    parser.add_argument("--run", required=True, help="a run directory: artifacts/runs/<run_id>")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override the run's config, e.g. evaluation.deployment_threshold=0.9")
    args = parser.parse_args(argv)
    try:
        paths = RunPaths(Path(args.run))
        config = load_run_config(paths, args.set)
        local_server.wait_until_ready()
        report = evaluate(run_dir=str(paths.root), config=config)
    except GauntletError as exc:
        return fail(exc)
    print_summary(report)
    return 0


if __name__ == "__main__":
    _cli.exit(main())
