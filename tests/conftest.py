"""Environment, hooks and shared fixtures. Environment first: Prefect reads its settings when it is
imported. Helper functions live in tests/helpers.py."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("COMET_API_KEY", None)  # tests are offline: Comet must never go online here
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="gauntlet-prefect-home-"))

from gauntlet.runtime import configure_environment  # noqa: E402

configure_environment()

import pytest  # noqa: E402

from tests.helpers import postgres_cluster, smoke_params  # noqa: E402

TESTS = Path(__file__).parent
TIERS = ("unit", "integration", "system")


def pytest_collection_modifyitems(config, items):
    """Mark each test with its folder's tier: `-m unit`, `-m "not system"`."""
    for item in items:
        try:
            tier = item.path.relative_to(TESTS).parts[0]
        except ValueError:
            continue
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))


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


@pytest.fixture(scope="session")
def trained_smoke(prefect_harness, tmp_path_factory):
    """A real smoke training whose registry holds a champion: (report, artifacts dir). Shared by the
    prediction and serving tests, which copy the registry before changing anything in it."""
    from flows.train import train

    artifacts = tmp_path_factory.mktemp("trained-smoke")
    report = train(params=smoke_params(artifacts))
    assert report.registered
    return report, artifacts


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL cluster on 127.0.0.1 for the session, skipped with a reason where the
    server binaries are absent. A function: create(name) makes a database and returns
    'postgres@127.0.0.1:PORT/NAME' (user, no password); each test module uses names of its own."""
    yield from postgres_cluster()
