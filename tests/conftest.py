"""Shared fixtures. Environment first: Prefect reads its settings when it is imported."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("COMET_API_KEY", None)  # tests are offline: Comet must never go online here
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="gauntlet-prefect-home-"))

from config.runtime import PROJECT_ROOT, configure_environment  # noqa: E402

configure_environment()

import pytest  # noqa: E402

SHARED_DATASETS = PROJECT_ROOT.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def prefect_harness():
    """A real Prefect API (temporary SQLite database) for the flow tests of this session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def breast_cancer():
    from tasks.ml.data import load_table

    return load_table("builtin:breast_cancer")


def smoke_config(artifacts_dir: Path, **overrides):
    """config/smoke.yaml with every output under `artifacts_dir`."""
    from config.schema import load_config

    return load_config(
        PROJECT_ROOT / "config" / "smoke.yaml", {"artifacts_dir": str(artifacts_dir), **overrides}
    )


def smoke_params(artifacts_dir: Path, **overrides):
    """The `train` flow's parameters for config/smoke.yaml with outputs under `artifacts_dir`."""
    from config.schema import TrainParameters

    return TrainParameters(
        config_path=str(PROJECT_ROOT / "config" / "smoke.yaml"),
        overrides={"artifacts_dir": str(artifacts_dir), **overrides},
    )
