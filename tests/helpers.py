"""Helpers shared by test modules: `from tests.helpers import ...`.

Plain functions and constants only; fixtures and hooks live in tests/conftest.py, which also sets the
environment (Prefect reads its settings when it is imported: nothing here imports Prefect at import
time).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

from config.paths import PROJECT_ROOT

SHARED_DATASETS = PROJECT_ROOT.parent / "shared" / "datasets"
SMOKE_YAML = PROJECT_ROOT / "config" / "smoke.yaml"

# docker-compose.yml runs these same commands in its services: tests/system/test_server.py runs them
# natively, tests/unit/test_compose.py checks the compose file against them.
SERVER_COMMAND = ["prefect", "server", "start"]
WORKER_COMMAND = ["prefect", "worker", "start", "--pool", "gauntlet-process", "--type", "process"]


def smoke_config(artifacts_dir: Path, **overrides):
    """config/smoke.yaml with every output under `artifacts_dir`."""
    from config.schema import load_config

    return load_config(SMOKE_YAML, {"artifacts_dir": str(artifacts_dir), **overrides})


def smoke_params(artifacts_dir: Path, **overrides):
    """The `train` flow's parameters for config/smoke.yaml with outputs under `artifacts_dir`."""
    from config.schema import TrainParameters

    return TrainParameters(config_path=str(SMOKE_YAML), overrides={"artifacts_dir": str(artifacts_dir), **overrides})


def shared_dataset(name: str) -> Path:
    """../shared/datasets/<name>.parquet; the test is skipped, with the reason, when it is absent."""
    import pytest

    path = SHARED_DATASETS / f"{name}.parquet"
    if not path.is_file():
        pytest.skip(f"{path} is absent (../shared/datasets is not checked out)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(*args: str, script: str = "flows/train.py", timeout: int = 300) -> subprocess.CompletedProcess:
    """One of the project's commands in a subprocess, offline and with no Prefect API configured."""
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "COMET_API_KEY")}
    return subprocess.run(
        [sys.executable, script, *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
        timeout=timeout, env=env,
    )


def last_line(text: str) -> str:
    return [line for line in text.strip().splitlines() if line.strip()][-1]


def comet_archives(directory: Path) -> dict[str, dict]:
    """Open every offline archive: experiment name -> params, metrics (name -> [(step, value)]), others."""
    found = {}
    for archive in sorted(directory.rglob("*.zip")):
        with zipfile.ZipFile(archive) as zf:
            messages = [json.loads(line) for line in zf.read("messages.json").decode().splitlines() if line]
        params, metrics, others, uploads = {}, defaultdict(list), {}, []
        for msg in messages:
            payload = msg.get("payload", {})
            if msg["type"] == "parameter_msg":
                params[payload["param"]["paramName"]] = payload["param"]["paramValue"]
            elif msg["type"] == "metric_msg":
                m = payload["metric"]
                metrics[m["metricName"]].append((m["step"], m["metricValue"]))
            elif msg["type"] == "log_other":
                others[payload["key"]] = payload["value"]
            elif msg["type"] == "file_upload":
                extra = payload["additional_params"]
                uploads.append((payload.get("upload_type"), extra.get("fileName") or extra.get("figName")))
                if payload.get("upload_type") == "confusion-matrix":
                    with zipfile.ZipFile(archive) as zf:
                        others["_confusion_matrix"] = json.loads(zf.read(payload["file_path"]))
        name = others.get("Name") or params.get("family")
        found[name] = {"params": params, "metrics": metrics, "others": others, "uploads": uploads,
                       "file": archive}
    return found


def comet_cloud_stand_in(directory: Path, alive: bool = True, fail_after: int | None = None):
    """comet_ml.Experiment as far as this machine can have one (Comet's cloud cannot exist here): the
    real OfflineExperiment, which shares the online class's logging methods and signatures, so a wrong
    method name or argument fails the test. It writes to `directory`, records each call's name, and
    with `fail_after` raises ConnectionError after that many calls, as a dropped connection would.
    Returns (a class to put in place of comet_ml.Experiment, the list of experiments it made)."""
    import comet_ml

    made: list = []

    class CloudStandIn(comet_ml.OfflineExperiment):
        def __init__(self, api_key: str | None = None, **kwargs) -> None:
            super().__init__(api_key=api_key, offline_directory=str(directory), **kwargs)
            self.alive, self.api_key_given, self.calls = alive, api_key, []
            made.append(self)

        def __getattribute__(self, name: str):
            attr = super().__getattribute__(name)
            calls = object.__getattribute__(self, "__dict__").get("calls")
            if calls is None or not callable(attr) or not name.startswith(("log_", "register_", "set_", "add_")):
                return attr

            def recorded(*args, **kwargs):
                calls.append((name, args, kwargs))
                if fail_after is not None and len(calls) > fail_after:
                    raise ConnectionError("Connection reset by peer (comet.com)")
                return attr(*args, **kwargs)

            return recorded

    return CloudStandIn, made


POSTGRES_MISSING = "PostgreSQL server binaries are absent (no initdb); install postgresql to run this test"


def postgres_bindir() -> Path | None:
    """The PostgreSQL server binaries' folder (the newest version installed), or None."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: (len(p.parts[-3]), p.parts[-3]))
    if bins:
        return bins[-1].parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def postgres_cluster() -> Iterator[Callable[[str], str]]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (5432 when free). Yields a function that creates a
    database and returns 'postgres@127.0.0.1:PORT/NAME'; the cluster stops when the generator closes.
    Skips (pytest.skip) where the server binaries are absent. Tests use the `postgres` fixture."""
    import pytest

    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip(POSTGRES_MISSING)
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
