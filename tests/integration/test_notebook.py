"""notebooks/explore_runs.ipynb runs top to bottom (nbclient, a real Jupyter kernel) on a smoke run's
artifacts, and shows what it promises."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from config.paths import PROJECT_ROOT

NOTEBOOK = PROJECT_ROOT / "notebooks" / "explore_runs.ipynb"


def test_the_notebook_runs_on_a_smoke_runs_outputs(trained_smoke, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="the dev extra's nbformat is not installed")
    nbclient = pytest.importorskip("nbclient", reason="the dev extra's nbclient is not installed")
    report, artifacts = trained_smoke
    monkeypatch.setenv("GAUNTLET_ARTIFACTS", str(artifacts))
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    text, images = [], 0
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            assert output.get("output_type") != "error", output
            text.append(output.get("text", ""))
            data = output.get("data", {})
            text.append(data.get("text/plain", "") + data.get("text/markdown", ""))
            images += "image/png" in data
    shown = "\n".join(text)
    assert Path(report.run_dir).name in shown and report.champion in shown
    assert "search lightgbm" in shown and "peak MB" in shown  # the stages table
    assert f"version {report.registry_version}" in shown and "problems: none" in shown
    assert "proba_" in shown  # rows scored by the registered champion
    plots = len(list(Path(report.run_dir, "reports").glob("*.png")))
    assert plots >= 4 and images == 4 + plots  # one trials history per family, the evaluation's plots


def test_with_two_models_predict_and_the_notebook_use_the_latest_run_s(tmp_path, monkeypatch):
    """The README's order: the demo, then another table. Predicting that table's rows needs no
    --model, and says which model it used; the notebook explores the second run with its own model."""
    nbformat = pytest.importorskip("nbformat", reason="the dev extra's nbformat is not installed")
    nbclient = pytest.importorskip("nbclient", reason="the dev extra's nbclient is not installed")
    from flows.train import train
    from tests.helpers import run_cli, smoke_params

    quick = {"tracking.backend": "none", "models.random_forest.enabled": False, "models.xgboost.enabled": False, "models.catboost.enabled": False}
    assert train(params=smoke_params(tmp_path, **quick)).registered
    wine = train(params=smoke_params(tmp_path, **quick, **{"data.path": "builtin:wine", "data.target": "cultivar",
                                                           "evaluation.deployment_threshold": 0.5}))
    assert wine.registered
    out = run_cli("--input", str(Path(wine.run_dir) / "splits" / "test.parquet"), "--output",
                  str(tmp_path / "x.parquet"), "--registry", str(tmp_path / "registry"), script="flows/predict.py")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "model wine-cultivar: its 'champion' moved most recently" in out.stderr
    assert (tmp_path / "x.parquet").is_file()

    monkeypatch.setenv("GAUNTLET_ARTIFACTS", str(tmp_path))
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    shown = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
                      for cell in notebook.cells for o in cell.get("outputs", []))
    assert Path(wine.run_dir).name in shown and "wine-cultivar version 1" in shown
