"""Reports a person can open: CSVs, PNG plots, report.json, Prefect artifacts, a printed leaderboard."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.ml.results import Candidate, EvalReport
from tasks.runs import RunPaths, write_json

METRIC_COLUMNS = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "fbeta", "roc_auc", "log_loss")


def performance_table(candidates: list[Candidate], champion: str, test_metrics: dict[str, float]) -> pd.DataFrame:
    """Every candidate's validation metrics, then the champion's test metrics."""
    rows: list[dict[str, Any]] = []
    for cand in candidates:
        rows.append(
            {
                "family": cand.family,
                "split": "valid",
                "status": cand.status,
                "champion": cand.family == champion,
                **{m: cand.valid_metrics.get(m) for m in METRIC_COLUMNS},
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
            **{m: test_metrics.get(m) for m in METRIC_COLUMNS},
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
) -> dict[str, str]:
    paths.reports.mkdir(parents=True, exist_ok=True)
    perf = paths.reports / "performance_metrics.csv"
    performance_table(candidates, champion, test_metrics).to_csv(perf, index=False)
    conf = paths.reports / "confusion_matrix_summary.csv"
    pd.DataFrame(confusion, columns=["class", "TP", "TN", "FP", "FN"]).to_csv(conf, index=False)
    return {"performance_metrics": str(perf), "confusion_matrix_summary": str(conf)}


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


def plot_roc_curve(y_true: np.ndarray, proba: np.ndarray, positive: Any, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import RocCurveDisplay

    fig, ax = plt.subplots(figsize=(5, 5))
    RocCurveDisplay.from_predictions(y_true, proba[:, 1], ax=ax, name=f"champion (positive: {positive})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    ax.set_title("ROC on the test split")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


def write_report_json(paths: RunPaths, report: EvalReport) -> None:
    write_json(paths.report, report.model_dump(mode="json"))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4f}"
    if value is None:
        return "-"
    return str(value)


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
        if row["status"] != "ok" and row["error"]:
            row["status"] = f"failed: {row['error'][:70]}"
    cols = ["family", f"valid_{report.metric}", "trials", "pruned", "seconds", "champion", "status"]
    return format_table(rows, cols)


def format_gate(report: EvalReport) -> str:
    g = report.gate
    verdict = "PASSED" if g.passed else "NOT PASSED"
    line = f"Gate {verdict}: champion {report.champion}: {g.reason}"
    if report.registered:
        line += f" -> registered as version {report.registry_version}, alias 'champion' moved"
    else:
        prev = report.previous_champion_version
        line += " -> not registered; 'champion' " + (
            f"stays at version {prev}" if prev is not None else "is still unset"
        )
    return line


def publish_prefect_artifacts(report: EvalReport, model_card_markdown: str = "") -> None:
    """A leaderboard table, and the gate decision with the champion's model card, on the run's page."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    rows = [{k: _fmt(v) for k, v in row.items()} for row in report.leaderboard()]
    create_table_artifact(key="leaderboard", table=rows, description=f"Run {report.run_id}: validation {report.metric}")
    metrics = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in report.test_metrics.items())
    markdown = (
        f"# Gate decision\n\n{format_gate(report)}\n\n"
        f"## Champion: {report.champion} (test split)\n\n| metric | value |\n|---|---|\n{metrics}\n\n"
        f"Run directory: `{report.run_dir}`\n\n---\n\n{model_card_markdown}"
    )
    create_markdown_artifact(key="gate-decision", markdown=markdown, description=f"Run {report.run_id}")


def model_card(report_fields: dict[str, Any]) -> str:
    f = report_fields
    metrics = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in f["test_metrics"].items())
    params = "\n".join(f"| {k} | {v} |" for k, v in f["params"].items()) or "| (defaults) | |"
    return f"""# {f['model_name']} version {{version}}

- Family: **{f['family']}**, chosen on validation {f['metric']} = {_fmt(f['valid_value'])}
- Task: {f['task']}; target `{f['target']}`; classes {f['classes']}
- Trained on run `{f['run_id']}` (data sha256 `{f['data_sha256'][:16]}...`), {f['n_features']} input columns
- Gate: {f['gate']}

## Test metrics (untouched test split)

| metric | value |
|---|---|
{metrics}

## Hyperparameters

| name | value |
|---|---|
{params}

## Use

```python
from tasks.registry import load_model
model = load_model("{f['registry_root']}", "{f['model_name']}", version={{version}})
model.predict(frame)          # original labels
model.predict_proba(frame)    # one column per class
```
"""
