"""evaluate: pick the champion on validation, score it once on test, gate it, register it.

Runs inside `train`, or alone on a finished run (for example with another threshold):

    python flows/evaluate.py --run artifacts/runs/<run_id> [--set evaluation.deployment_threshold=0.9]
"""

from __future__ import annotations

from config.runtime import configure_environment

configure_environment()

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402
from prefect import flow, get_run_logger  # noqa: E402

from config.errors import GauntletError  # noqa: E402
from config.schema import TrainConfig  # noqa: E402
from flows._cli import fail, print_summary  # noqa: E402
from tasks import registry  # noqa: E402
from tasks import reporting as rep  # noqa: E402
from tasks.ml.data import encode_target, features_and_target  # noqa: E402
from tasks.ml.metrics import (  # noqa: E402
    compute_metrics,
    confusion_summary,
    is_better,
    passes_gate,
    predict_labels,
    select_champion,
)
from tasks.ml.results import EvalReport, GateDecision  # noqa: E402
from tasks.modeling import load_pipeline  # noqa: E402
from tasks.runs import RunPaths, dataset_info, load_run_config, read_candidates, read_json  # noqa: E402
from tasks.tracking import start_tracker  # noqa: E402


def decide_gate(
    metric: str, direction: str, threshold: float, value: float,
    incumbent_version: int | None = None, incumbent_value: float | None = None, incumbent_problem: str | None = None,
) -> GateDecision:
    """Pass when the test metric clears the threshold and is not worse than the current champion."""
    op = ">=" if direction == "maximize" else "<="
    clears = f"test {metric} {value:.4f} {op} threshold {threshold}"
    if not passes_gate(value, threshold, direction):
        passed, reason = False, f"test {metric} {value:.4f} does not satisfy {op} {threshold}"
    elif incumbent_version is None:
        passed, reason = True, f"{clears}; no current champion"
    elif incumbent_problem is not None:
        passed, reason = False, f"{clears}, but {incumbent_problem}"
    elif is_better(incumbent_value, value, direction):
        passed, reason = False, (
            f"{clears}, but the current champion (version {incumbent_version}) scores {incumbent_value:.4f} "
            f"on this run's test split, better than this challenger"
        )
    else:
        passed, reason = True, (
            f"{clears} and not worse than the current champion (version {incumbent_version}: "
            f"{incumbent_value:.4f} on this run's test split)"
        )
    return GateDecision(metric=metric, direction=direction, threshold=threshold, test_value=value,
                        passed=passed, reason=reason, incumbent_version=incumbent_version,
                        incumbent_value=incumbent_value)


def score_incumbent(
    root: Path, name: str, version: int, test: pd.DataFrame, info, config: TrainConfig
) -> tuple[float | None, str | None]:
    """The registered champion's metric on this run's test split, or (None, why it cannot be compared)."""
    try:
        model = registry.load_model(root, name, version=version)
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
                             beta=config.evaluation.beta, average=config.evaluation.average)
    return scores[config.evaluation.comparison_metric], None


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

    candidates = read_candidates(paths)
    try:
        champion = select_champion(candidates, metric, direction)
    except ValueError as exc:
        raise GauntletError(f"run {paths.run_id}: {exc}; rerun the training") from None
    logger.info("champion on validation %s: %s (%.4f)", metric, champion.family, champion.valid_metrics[metric])

    pipeline = load_pipeline(champion.pipeline_path, champion.pipeline_sha256)
    test = pd.read_parquet(paths.split("test"))
    X_test, y_test = features_and_target(test, info)
    proba = pipeline.predict_proba(X_test)
    y_pred = predict_labels(proba)
    test_metrics = compute_metrics(
        y_test, proba, n_classes=len(info.classes), beta=config.evaluation.beta,
        average=config.evaluation.average,
    )
    confusion = confusion_summary(y_test, y_pred, info.classes)

    root, name = config.registry_dir, config.model_name
    previous = registry.get_alias(root, name)
    incumbent_value = incumbent_problem = None
    if previous is not None and config.evaluation.compare_with_champion:
        incumbent_value, incumbent_problem = score_incumbent(root, name, previous, test, info, config)
    gate = decide_gate(
        metric, direction, config.evaluation.deployment_threshold, test_metrics[metric],
        incumbent_version=previous if config.evaluation.compare_with_champion else None,
        incumbent_value=incumbent_value, incumbent_problem=incumbent_problem,
    )
    logger.info("gate: %s", gate.reason)
    version = None
    card_fields = {
        "model_name": name, "family": champion.family, "metric": metric,
        "valid_value": champion.valid_metrics[metric], "task": info.task, "target": info.target,
        "classes": info.classes, "run_id": paths.run_id, "data_sha256": manifest["data"]["sha256"],
        "n_features": len(info.features), "gate": gate.reason, "test_metrics": test_metrics,
        "params": champion.best_params, "registry_root": str(root),
    }
    card = rep.model_card(card_fields)  # {version} is filled in by the registry
    if gate.passed:
        version = registry.register_model(
            root, name, pipeline,
            metadata={
                "family": champion.family, "run_id": paths.run_id, "run_dir": str(paths.root),
                "metric": metric, "direction": direction, "valid_metrics": champion.valid_metrics,
                "test_metrics": test_metrics, "params": champion.best_params,
                "data_sha256": manifest["data"]["sha256"], "config_hash": manifest["config_hash"],
                "task": info.task, "target": info.target, "classes": info.classes,
                "features": info.features, "gate": gate.model_dump(mode="json"),
                "packages": manifest["packages"], "tracking_key": champion.tracking_key,
            },
            model_card=card,
        )
        logger.info("registered %s version %d; 'champion' moved from %s", name, version,
                    f"version {previous}" if previous else "nowhere (first champion)")
    else:
        logger.warning("not registered: %s; 'champion' stays at %s", gate.reason, previous)

    reports = rep.write_reports(paths, candidates, champion.family, test_metrics, confusion)
    cm_fig = rep.plot_confusion_matrix(y_test, y_pred, info.classes, paths.reports / "confusion_matrix.png")
    reports["confusion_matrix_png"] = str(paths.reports / "confusion_matrix.png")
    roc_fig = None
    if info.task == "binary":
        roc_fig = rep.plot_roc_curve(y_test, proba, info.positive_class, paths.reports / "roc_curve.png")
        reports["roc_curve_png"] = str(paths.reports / "roc_curve.png")

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
        tracker.log_figure("confusion_matrix", cm_fig)
        if roc_fig is not None:
            tracker.log_figure("roc_curve", roc_fig)
        tracker.log_artifact(reports["performance_metrics"])
        tracker.log_artifact(reports["confusion_matrix_summary"])
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
        reports=reports,
    )
    rep.write_report_json(paths, report)
    rep.publish_prefect_artifacts(report, card.replace("{version}", str(version) if version else "(not registered)"))
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
        report = evaluate(run_dir=str(paths.root), config=config)
    except GauntletError as exc:
        return fail(exc)
    print_summary(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
