"""The issue's command on a real public table (../shared/datasets/adult.parquet): categoricals and
missing values end to end, through the command line. Skipped when ../shared is absent."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from config.runtime import PROJECT_ROOT
from tests.conftest import SHARED_DATASETS

ADULT = SHARED_DATASETS / "adult.parquet"


@pytest.mark.integration
@pytest.mark.skipif(not ADULT.is_file(), reason=f"{ADULT} is absent (../shared/datasets is not checked out)")
def test_adult_through_the_command_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "COMET_API_KEY")}
    out = subprocess.run(
        [sys.executable, "flows/train.py", "--config", "config/smoke.yaml",
         "--set", f"data.path={os.path.relpath(ADULT, PROJECT_ROOT)}", "--set", "data.target=income",
         "--set", f"artifacts_dir={tmp_path}"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900, env=env,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Gate PASSED" in out.stdout or "Gate NOT PASSED" in out.stdout
    assert "valid_fbeta" in out.stdout  # the leaderboard was printed
    (run,) = (tmp_path / "runs").iterdir()
    manifest = json.loads((run / "manifest.json").read_text())
    dataset = manifest["dataset"]
    assert {"workclass", "occupation", "native_country"} <= set(dataset["categorical_features"])
    assert manifest["data"]["rows"] == 48827
    report = json.loads((run / "report.json").read_text())
    assert all(c["status"] == "ok" for c in report["candidates"]), report["candidates"]
    assert 0.5 < report["test_metrics"]["roc_auc"] <= 1.0
