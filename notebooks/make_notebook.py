"""Writes explore_runs.ipynb (edit the cells here, then: .venv/bin/python notebooks/make_notebook.py)."""

from pathlib import Path

import nbformat as nbf

cells = []


def md(text: str) -> None:
    cells.append(nbf.v4.new_markdown_cell(text.strip()))


def code(text: str) -> None:
    cells.append(nbf.v4.new_code_cell(text.strip()))


md("""
# Explore gauntlet runs

Opens the latest run under `artifacts/runs/` and the registry: the leaderboard, what each stage
cost, each family's trial history, the evaluation's plots, the champion's metadata, and a few rows
scored with the registered champion (classification: labels and probabilities; regression: numbers
and their prediction intervals).

Run `make train` first. Point `GAUNTLET_ARTIFACTS` at another artifacts folder, or set `RUN` below to
a run folder, to look elsewhere. Open it in any Jupyter whose kernel is `.venv`'s Python (for
example `.venv/bin/pip install jupyterlab && .venv/bin/jupyter lab`), or run it headless with
`.venv/bin/jupyter-execute notebooks/explore_runs.ipynb` (the `dev` extra).
""")
code("""
import json
import os
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import optuna
import pandas as pd
from IPython.display import Image, Markdown, display

ROOT = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
sys.path.insert(0, str(ROOT))  # the project's own modules: tasks.registry, tasks.monitoring

from tasks import registry  # noqa: E402
from tasks.monitoring import format_stages  # noqa: E402

ARTIFACTS = Path(os.environ.get("GAUNTLET_ARTIFACTS", ROOT / "artifacts"))
RUN = None  # or Path("artifacts/runs/<run_id>")
runs = sorted(p.parent for p in (ARTIFACTS / "runs").glob("*/report.json"))
if not runs and RUN is None:
    raise SystemExit(f"no finished run under {ARTIFACTS / 'runs'}: run `make train` first")
run = Path(RUN) if RUN else runs[-1]
report = json.loads((run / "report.json").read_text())
manifest = json.loads((run / "manifest.json").read_text())
display(Markdown(f"**Run** `{run.name}`: {len(runs)} finished run(s) under `{ARTIFACTS}`; "
                 f"champion **{report['champion']}**, gate {'passed' if report['gate']['passed'] else 'not passed'}"))
""")
md("## Leaderboard (validation) and the champion's test metrics")
code("""
metric = report["metric"]
board = pd.DataFrame([
    {"family": c["family"], "status": c["status"], f"valid_{metric}": c["valid_metrics"].get(metric),
     "trials": c["n_trials"], "pruned": c["n_pruned"], "search_s": c["search_seconds"],
     "peak_mb": (c.get("resources") or {}).get("peak_rss_mb"), "champion": c["family"] == report["champion"]}
    for c in report["candidates"]
]).sort_values(f"valid_{metric}", ascending=report["gate"]["direction"] == "minimize")
display(board)
display(pd.Series(report["test_metrics"], name="test").to_frame())
print(report["gate"]["reason"])
""")
md("## What each stage cost")
code("""
stages = manifest.get("stages", {})
print(format_stages(stages) if stages else "this run predates stage monitoring")
""")
md("## Trials history per family (Optuna's plot, from the saved trials tables)")
code("""
import warnings

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
optuna.logging.set_verbosity(optuna.logging.WARNING)
direction = report["gate"]["direction"]
for table_file in sorted((run / "candidates").glob("*_trials.csv")):
    family = table_file.stem.removesuffix("_trials")
    trials = pd.read_csv(table_file)
    done = trials[trials["state"] == "COMPLETE"]
    study = optuna.create_study(direction=direction, study_name=family)  # rebuilt in memory from the table
    study.add_trials([optuna.trial.create_trial(value=float(v)) for v in done["value"]])
    ax = optuna.visualization.matplotlib.plot_optimization_history(study, target_name=f"valid {metric}")
    ax.set_title(f"{family}: {len(done)} complete of {len(trials)} trials")
    ax.figure.set_size_inches(6, 3)
    plt.show()
""")
md("## The evaluation's plots")
code("""
for png in sorted((run / "reports").glob("*.png")):
    display(Markdown(f"**{png.stem}**"))
    display(Image(filename=str(png), width=420))
""")
md("## The registered champion")
code("""
root = ARTIFACTS / "registry"
names = registry.list_models(root)
print("registry:", root, "models:", names, "problems:", registry.verify(root) or "none")
if names:
    name = manifest.get("model_name") or names[0]
    name = name if name in names else names[0]
    champion = registry.load_model(root, name)  # checks the sha256 before unpickling
    meta = champion.metadata
    print(f"{name} version {champion.version} (aliases {registry.get_aliases(root, name)})")
    display(pd.Series({k: meta.get(k) for k in ("family", "run_id", "metric", "registered_at", "decision_threshold",
                                                 "calibration", "data_sha256", "config_hash")}).to_frame("value"))
    display(pd.DataFrame({"valid": meta["valid_metrics"], "test": meta["test_metrics"]}))
    if meta.get("refit"):
        display(pd.Series(meta["refit"]).to_frame("refit"))
""")
md("## Score a few rows with the champion")
code("""
if names:
    rows = pd.read_parquet(run / "splits" / "test.parquet").head(5)
    if meta.get("task") == "regression":  # the number and its prediction interval
        scored = champion.predict_interval(rows)
        print("interval:", meta["prediction_interval"])
    else:
        labels, proba = champion.predict_both(rows)
        scored = proba.add_prefix("proba_")
        scored.insert(0, "prediction", labels)
    scored.insert(0, "actual", rows[meta["target"]].to_numpy())
    display(scored)
""")

nb = nbf.v4.new_notebook(cells=cells, metadata={
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
})
nbf.write(nb, Path(__file__).with_name("explore_runs.ipynb"))
