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


@pytest.fixture(scope="session")
def trained_smoke(prefect_harness, tmp_path_factory):
    """A real smoke training whose registry holds a champion: (report, artifacts dir). Shared by the
    prediction and serving tests, which copy the registry before changing anything in it."""
    from flows.train import train

    artifacts = tmp_path_factory.mktemp("trained-smoke")
    report = train(params=smoke_params(artifacts))
    assert report.registered
    return report, artifacts


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_cluster():
    """A throwaway PostgreSQL cluster on 127.0.0.1 (5432 when free), skipped where the server binaries
    are absent. Yields a function that creates a database and returns 'postgres@127.0.0.1:PORT/NAME'."""
    import glob
    import shutil
    import socket
    import subprocess
    import tempfile

    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins and not shutil.which("initdb"):
        pytest.skip("PostgreSQL server binaries are absent (no initdb); install postgresql to run this test")
    bindir = Path(bins[-1]).parent if bins else Path(shutil.which("initdb")).parent
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data = Path(tempfile.mkdtemp(prefix="gauntlet-pg-", dir="/tmp"))
    if as_postgres:
        shutil.chown(data, "postgres", "postgres")
    with socket.socket() as s:
        port = 5432 if s.connect_ex(("127.0.0.1", 5432)) != 0 else free_port()
    run = dict(check=True, capture_output=True, text=True, timeout=120)
    subprocess.run([*as_postgres, str(bindir / "initdb"), "-D", str(data / "db"), "--auth=trust", "-U", "postgres"], **run)
    subprocess.run([*as_postgres, str(bindir / "pg_ctl"), "-D", str(data / "db"), "-l", str(data / "log"), "-w",
                    "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1", "start"], **run)

    def create(name: str) -> str:
        subprocess.run([*as_postgres, str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                        name], **run)
        return f"postgres@127.0.0.1:{port}/{name}"

    try:
        yield create
    finally:
        subprocess.run([*as_postgres, str(bindir / "pg_ctl"), "-D", str(data / "db"), "-m", "fast", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(data, ignore_errors=True)
