"""Reports a person can open: CSVs, PNG plots, report.json, Prefect artifacts, a printed leaderboard."""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.ml.results import Candidate, EvalReport
from tasks.runs import RunPaths, write_json

METRIC_COLUMNS = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "fbeta", "roc_auc", "pr_auc", "mcc",
                  "log_loss", "brier")
REGRESSION_COLUMNS = ("r2", "rmse", "mae", "medae", "mape")


def performance_table(
    candidates: list[Candidate], champion: str, test_metrics: dict[str, float],
    intervals: dict[str, tuple[float, float]] | None = None,
) -> pd.DataFrame:
    """Every candidate's validation metrics, then the champion's test metrics with their bootstrap
    95% interval in <metric>_lower / <metric>_upper (a regression's: r2, rmse, mae, medae, mape)."""
    regression = "r2" in test_metrics
    columns = REGRESSION_COLUMNS if regression else METRIC_COLUMNS
    rows: list[dict[str, Any]] = []
    for cand in candidates:
        rows.append(
            {
                "family": cand.family,
                "split": "valid",
                "status": cand.status,
                "champion": cand.family == champion,
                **{m: cand.valid_metrics.get(m) for m in columns},
                "trials": cand.n_trials,
                "pruned": cand.n_pruned,
                "search_seconds": round(cand.search_seconds, 2),
                "selection": cand.selection,  # what the valid metrics were measured on
                "train_rows": cand.train_rows,
                "train_rows_fitted": cand.train_rows_fitted,  # after resampling
                "error": cand.error,
            }
        )
    rows.append(
        {
            "family": champion,
            "split": "test",
            "status": "ok",
            "champion": True,
            **{m: test_metrics.get(m) for m in columns},
            **{f"{m}_{side}": (intervals or {}).get(m, (None, None))[i]
               for m in columns for i, side in enumerate(("lower", "upper"))},
            **({"interval_coverage": test_metrics.get("interval_coverage")} if regression else {}),
        }
    )
    table = pd.DataFrame(rows)
    table[["trials", "pruned"]] = table[["trials", "pruned"]].astype("Int64")  # blank on the test row
    return table


def write_reports(
    paths: RunPaths,
    candidates: list[Candidate],
    champion: str,
    test_metrics: dict[str, float],
    confusion: list[dict[str, Any]],
    intervals: dict[str, tuple[float, float]] | None = None,
    residuals: pd.DataFrame | None = None,
) -> dict[str, str]:
    paths.reports.mkdir(parents=True, exist_ok=True)
    perf = paths.reports / "performance_metrics.csv"
    performance_table(candidates, champion, test_metrics, intervals).to_csv(perf, index=False)
    if residuals is not None:  # a regression: residual quantiles and the error by prediction decile
        summary = paths.reports / "residual_summary.csv"
        residuals.to_csv(summary, index=False)
        return {"performance_metrics": str(perf), "residual_summary": str(summary)}
    conf = paths.reports / "confusion_matrix_summary.csv"
    pd.DataFrame(confusion, columns=["class", "TP", "TN", "FP", "FN"]).to_csv(conf, index=False)
    return {"performance_metrics": str(perf), "confusion_matrix_summary": str(conf)}


def _sample(n: int, at_most: int = 5000) -> np.ndarray:
    """Rows a scatter plot draws: every row up to `at_most`, else a seeded sample."""
    return np.arange(n) if n <= at_most else np.sort(np.random.default_rng(0).choice(n, at_most, replace=False))


def plot_predicted_vs_actual(y_true: np.ndarray, pred: np.ndarray, path: Path, lower: Any = None, upper: Any = None):
    fig, ax = _axes()
    rows = _sample(len(y_true))
    ax.scatter(y_true[rows], pred[rows], s=6, alpha=0.4, color="tab:blue")
    low, high = float(min(y_true.min(), pred.min())), float(max(y_true.max(), pred.max()))
    ax.plot([low, high], [low, high], color="black", lw=1, label="predicted = actual")
    if lower is not None:
        order = np.argsort(pred)
        ax.fill_between(pred[order], lower[order], upper[order], alpha=0.12, color="tab:orange", step="mid",
                        label="prediction interval (around the prediction)")
    ax.set(xlabel="actual", ylabel="predicted", title="Champion on the test split: predicted vs actual")
    ax.legend(loc="upper left", fontsize=8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


def plot_residuals(y_true: np.ndarray, pred: np.ndarray, path: Path):
    fig, ax = _axes()
    rows = _sample(len(y_true))
    ax.scatter(pred[rows], (y_true - pred)[rows], s=6, alpha=0.4, color="tab:blue")
    ax.axhline(0, color="black", lw=1)
    ax.set(xlabel="predicted", ylabel="residual (actual - predicted)", title="Residuals vs predicted (test split)")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


def plot_residual_histogram(y_true: np.ndarray, pred: np.ndarray, path: Path):
    fig, ax = _axes((5.5, 4))
    ax.hist(y_true - pred, bins=50, color="tab:blue", alpha=0.8)
    ax.axvline(0, color="black", lw=1)
    ax.set(xlabel="residual (actual - predicted)", ylabel="rows", title="Residuals on the test split")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


def plot_confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, classes: list[Any], path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 3, 1.2 * len(classes) + 2.5))
    ConfusionMatrixDisplay.from_predictions(
        y_true, y_pred, labels=list(range(len(classes))), display_labels=[str(c) for c in classes],
        ax=ax, colorbar=False, cmap="Blues",
    )
    ax.set_title("Champion on the test split")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


def _axes(size: tuple[float, float] = (5.5, 5)):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=size)


def _one_vs_rest(y_true: np.ndarray, proba: np.ndarray, classes: list[Any]):
    """(label, y as 0/1, score) per curve: the positive class for binary, each class for multiclass."""
    if len(classes) == 2:
        return [(f"positive: {classes[1]}", (y_true == 1).astype(int), proba[:, 1])]
    return [(str(c), (y_true == k).astype(int), proba[:, k]) for k, c in enumerate(classes)]


def _plot_curves(display: Any, title: str, y_true: np.ndarray, proba: np.ndarray, classes: list[Any], path: Path,
                 diagonal: bool = False, **options: Any):
    """One scikit-learn curve display per class (one-vs-rest; binary: the positive class)."""
    fig, ax = _axes()
    for label, y, score in _one_vs_rest(y_true, proba, classes):
        display.from_predictions(y, score, ax=ax, name=label, **options)
    if diagonal:
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    ax.set_title(f"{title} on the test split")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


def plot_roc_curve(y_true: np.ndarray, proba: np.ndarray, classes: list[Any], path: Path):
    from sklearn.metrics import RocCurveDisplay

    return _plot_curves(RocCurveDisplay, "ROC", y_true, proba, classes, path, diagonal=True)


def plot_pr_curve(y_true: np.ndarray, proba: np.ndarray, classes: list[Any], path: Path):
    from sklearn.metrics import PrecisionRecallDisplay

    return _plot_curves(PrecisionRecallDisplay, "Precision-recall", y_true, proba, classes, path)


def plot_calibration_curve(y_true: np.ndarray, proba: np.ndarray, classes: list[Any], path: Path):
    from sklearn.calibration import CalibrationDisplay

    return _plot_curves(CalibrationDisplay, "Calibration", y_true, proba, classes, path, n_bins=10,
                        strategy="quantile")


def plot_bars(table: pd.DataFrame, label: str, value: str, title: str, path: Path, top: int = 20):
    fig, ax = _axes((6.5, 0.3 * min(top, len(table)) + 1.5))
    shown = table.head(top).iloc[::-1]
    ax.barh(shown[label].astype(str), shown[value], xerr=shown.get(f"{value.rsplit('_', 1)[0]}_std"), color="#4878a8")
    ax.set_title(title)
    ax.set_xlabel(value)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


def plot_shap_summary(values: np.ndarray, names: list[str], features: np.ndarray, path: Path, top: int = 15):
    """A beeswarm: one dot per row and feature, x = SHAP value, colour = the feature's value (rank:
    blue low, red high)."""
    order = np.argsort(np.abs(values).mean(axis=0))[::-1][:top]
    fig, ax = _axes((7, 0.35 * len(order) + 1.5))
    rng = np.random.default_rng(0)
    for row, k in enumerate(order[::-1]):
        column = values[:, k]
        colour = pd.Series(features[:, k]).rank(pct=True).fillna(0.5).to_numpy()
        ax.scatter(column, row + rng.uniform(-0.3, 0.3, len(column)), c=colour, cmap="coolwarm", s=4, alpha=0.6)
    ax.set_yticks(range(len(order)))
    ax.set_yticklabels([names[k] for k in order[::-1]])
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("SHAP value (contribution to the log-odds; multiclass: |value| summed over classes)")
    ax.set_title("SHAP summary (validation rows)")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


def classification_report_table(y_true: np.ndarray, y_pred: np.ndarray, classes: list[Any]) -> pd.DataFrame:
    from sklearn.metrics import classification_report

    report = classification_report(y_true, y_pred, labels=list(range(len(classes))),
                                   target_names=[str(c) for c in classes], output_dict=True, zero_division=0)
    table = pd.DataFrame(report).T.reset_index(names="class")
    return table


def write_report_json(paths: RunPaths, report: EvalReport) -> None:
    write_json(paths.report, report.model_dump(mode="json"))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4f}"
    if value is None:
        return "-"
    return str(value)


def _cell(value: Any) -> Any:
    """A table artifact's cell: numbers stay numbers (sortable in the UI), floats to 4 decimals."""
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 4)
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def leaderboard_artifact(report: EvalReport) -> None:
    """The leaderboard as a table artifact of the current flow run (train's page, evaluate's page)."""
    from prefect.artifacts import create_table_artifact

    rows = [{k: _cell(v) for k, v in row.items()} for row in report.leaderboard()]
    create_table_artifact(key="leaderboard", table=rows, description=f"Run {report.run_id}: validation {report.metric}")


def gate_artifact(report: EvalReport, model_card_markdown: str = "") -> None:
    """The gate decision, the champion's test metrics (and its model card) as a markdown artifact."""
    from prefect.artifacts import create_markdown_artifact

    metrics = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in report.test_metrics.items())
    tracking = format_tracking(report)
    markdown = (
        f"# Gate decision\n\n{format_gate(report)}\n\n" + (f"{tracking}\n\n" if tracking else "")
        + f"## Champion: {report.champion} (test split)\n\n| metric | value |\n|---|---|\n{metrics}\n\n"
        f"Run directory: `{report.run_dir}`\n" + (f"\n---\n\n{model_card_markdown}" if model_card_markdown else "")
    )
    create_markdown_artifact(key="gate-decision", markdown=markdown, description=f"Run {report.run_id}")


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def format_leaderboard(report: EvalReport) -> str:
    rows = report.leaderboard()
    for row in rows:
        row["champion"] = "*" if row["champion"] else ""
        row["seconds"] = f"{row['seconds']:.1f}"
        row["cpu_s"] = f"{row['cpu_s']:.1f}" if row["cpu_s"] is not None else "-"
        row["peak_mb"] = f"{row['peak_mb']:,.0f}" if row["peak_mb"] is not None else "-"
        if row["status"] != "ok" and row["error"]:
            row["state"] = f"failed: {row['error'][:70]}"
        row["weight"] = f"{row['ensemble_weight']:.2f}" if row["ensemble_weight"] is not None else "-"
    cols = ["family", f"valid_{report.metric}", "trials", "pruned", "seconds", "cpu_s", "peak_mb", "champion", "state"]
    if any(row["ensemble_weight"] is not None for row in rows):  # a greedy ensemble: each family's share
        cols.insert(cols.index("champion"), "weight")
    return format_table(rows, cols)


def format_gate(report: EvalReport) -> str:
    g = report.gate
    verdict = "PASSED" if g.passed else "NOT PASSED"
    line = f"Gate {verdict}: champion {report.champion}: {g.reason}"
    if report.registered:
        line += f" -> registered as version {report.registry_version}, alias 'champion' moved"
    else:
        prev = report.previous_champion_version
        line += f" -> not registered{': ' + report.registry_note if report.registry_note else ''}; 'champion' " + (
            f"stays at version {prev}" if prev is not None else "is still unset"
        )
    return line


def format_tracking(report: EvalReport) -> str | None:
    """What the run's final word says about tracking when Comet failed: which experiments were kept
    as offline archives instead, and how to upload them. None when nothing went wrong."""
    notes = [c.tracking for c in report.candidates if c.tracking] + ([report.tracking] if report.tracking else [])
    kept = [note for note in notes if "Comet online failed" in note]
    if not kept:
        return None
    return (f"Tracking: Comet online failed for {len(kept)} of {len(notes)} experiments; nothing was lost, "
            "they were kept as offline archives:\n  " + "\n  ".join(kept))


def file_safe(name: object) -> str:
    """A column name as part of a file name: `region/zone` -> `region_zone-1a2b3c` (the hash keeps two
    names that differ only in unsafe characters apart)."""
    text = str(name)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "column"
    return safe if safe == text else f"{safe}-{hashlib.sha1(text.encode()).hexdigest()[:6]}"


def publish_prefect_artifacts(
    report: EvalReport, model_card_markdown: str = "", tables: dict[str, pd.DataFrame] | None = None,
) -> None:
    """A leaderboard table, the gate decision with the champion's model card, and the evaluation's
    tables (classification report, importances, fairness) on the run's page."""
    from prefect.artifacts import create_table_artifact

    leaderboard_artifact(report)
    gate_artifact(report, model_card_markdown)
    for key, table in (tables or {}).items():
        rows = [{k: _cell(v) for k, v in row.items()} for row in table.head(30).to_dict(orient="records")]
        slug = re.sub(r"[^a-z0-9-]+", "-", key.lower()).strip("-")  # Prefect keys: lowercase, digits, dashes
        create_table_artifact(key=slug, table=rows, description=f"Run {report.run_id}: {key}")


def model_card(f: dict[str, Any]) -> str:
    """The champion's model card (markdown); `{version}` is filled in by the registry."""
    intervals = f.get("intervals") or {}
    metrics = "\n".join(
        f"| {k} | {_fmt(v)} | " + (f"{_fmt(intervals[k][0])} - {_fmt(intervals[k][1])}" if k in intervals else "-")
        + " |" for k, v in f["test_metrics"].items()
    )
    params = "\n".join(f"| {k} | {v} |" for k, v in f["params"].items()) or "| (defaults) | |"
    splits = "\n".join(f"| {name} | {s['rows']} | {s.get('class_balance', s.get('target'))} |"
                       for name, s in f.get("splits", {}).items())
    regression = f["task"] == "regression"
    fairness = ""
    if f.get("fairness") and regression:
        rows = [f"| {col} | {_fmt(v['mae_gap'])} |" for col, v in f["fairness"].items()]
        fairness = ("\n## Errors by group (test split)\n\n| column | largest MAE gap between groups |\n|---|---|\n"
                    + "\n".join(rows) + "\n")
    elif f.get("fairness"):
        rows = [f"| {col} | {_fmt(v['demographic_parity_difference'])} | {_fmt(v['equalized_odds_difference'])} |"
                for col, v in f["fairness"].items()]
        fairness = ("\n## Fairness (test split)\n\n"
                    "| column | demographic parity difference | equalized odds difference |\n|---|---|---|\n"
                    + "\n".join(rows) + "\n")
    calibration = f.get("calibration", "none")
    calibration = "as the model outputs them" if calibration == "none" else f"{calibration} calibration (on validation)"
    importance = ""
    if f.get("top_features"):
        importance = "\n## Most important inputs (permutation importance on validation)\n\n" + ", ".join(
            f"`{name}`" for name in f["top_features"]) + "\n"
    if regression:
        fitted = "log1p of it" if f.get("target_transform") == "log1p" else "on its own scale"
        what = f"Task: regression; target `{f['target']}` (fitted {fitted})"
        output = f"Predictions: {f.get('decision')}"
        use = ("model.predict(frame)           # numbers on the target's scale\n"
               "model.predict_interval(frame)  # prediction, prediction_lower, prediction_upper")
    else:
        what = f"Task: {f['task']}; target `{f['target']}`; classes {f['classes']}"
        output = f"Probabilities: {calibration}; decision: {f.get('decision', 'the most probable class')}"
        use = ("model.predict(frame)          # original labels (the tuned threshold applied)\n"
               "model.predict_proba(frame)    # one column per class (calibrated when calibration is set)")
    weights = f["params"].get("weights") if f["family"] == "ensemble" else None
    chosen_on = f["params"].get("chosen_on", "validation") if weights else ""
    blend = (f"\n- Ensemble weights (greedy selection on {chosen_on}): " + ", ".join(
        f"{name} {weight:.2f}" for name, weight in sorted(weights.items(), key=lambda item: -item[1]))
        if weights else "")
    if f.get("train_valid_rows"):
        blend += (f"\n- Measured on test: the same hyperparameters{' and weights' if weights else ''} fitted "
                  f"again on train+valid ({f['train_valid_rows']} rows) before the test split was read")
    return f"""# {f['model_name']} version {{version}}

- Family: **{f['family']}**, chosen on validation {f['metric']} = {_fmt(f['valid_value'])}{blend}
- {what}
- Trained on run `{f['run_id']}` (data sha256 `{f['data_sha256'][:16]}...`, config hash
  `{f.get('config_hash', '')[:16]}...`), {f['n_features']} input columns
- {output}
- **Gate decision: {f['gate']}**

## Data and splits

| split | rows | {"target (min, median, mean, max)" if regression else "class balance"} |
|---|---|---|
{splits}

## Test metrics (untouched test split, bootstrap 95% interval)

| metric | value | 95% interval |
|---|---|---|
{metrics}
{importance}{fairness}
## Hyperparameters

| name | value |
|---|---|
{params}

## Limitations

- Scores hold for data like the training table (`{f['data_path']}`); a shift in the inputs or in
  the class balance makes them stale. Retrain on fresh data and compare before trusting it longer.
- The test split has {f.get('test_rows', '?')} rows: the 95% intervals above show how much the
  scores could move on another sample of the same size.
- A model is not a decision: check the fairness section (or set `evaluation.sensitive_columns`)
  before using it on people.

## Use

```python
from tasks.registry import load_model
model = load_model("{f['registry_root']}", "{f['model_name']}", version={{version}})
{use}
```
"""
