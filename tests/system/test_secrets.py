"""No secret leaks: a real run with COMET_API_KEY set (Comet's cloud failing with the key in its
error, as some clients do) and, where PostgreSQL is installed, an Optuna study in PostgreSQL whose
password comes from an environment variable. Every file the run wrote (inside the Comet archives
too), every log line, every Prefect parameter, log and artifact is searched for both values."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from tests.helpers import POSTGRES_MISSING, postgres_bindir, smoke_params

COMET_KEY = "gauntlet-secret-comet-key-7f3a9c51"
DB_PASSWORD = "gauntlet-secret-db-password-91c2e0"

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(scope="module")
def database(request):
    """A PostgreSQL database URL without its password (None where PostgreSQL is not installed: the
    Comet key test runs without it)."""
    if postgres_bindir() is None:
        return None
    return request.getfixturevalue("postgres")("secrets")


class LeakyCloud:
    """Comet's cloud refusing the key and quoting it back (the one part that cannot exist here)."""

    def __init__(self, **kwargs):
        raise ConnectionError(f"401 Unauthorized: POST https://www.comet.com/api/rest/v2/write?apiKey={kwargs['api_key']}")


def every_text(root: Path) -> dict[str, str]:
    """Every file under root as text; a zip archive's members too (Comet's offline archives)."""
    texts = {}
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        texts[str(path)] = data.decode("utf-8", "replace")
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                for member in zf.namelist():
                    texts[f"{path}!{member}"] = zf.read(member).decode("utf-8", "replace")
    return texts


def prefect_texts() -> dict[str, str]:
    from prefect import get_client
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
        return {
            "flow run parameters": json.dumps([r.parameters for r in runs], default=str),
            "flow run states": json.dumps([r.state.message if r.state else "" for r in runs]),
            "artifacts": json.dumps([a.data for a in client.read_artifacts()], default=str),
            "logs": "\n".join(log.message for log in client.read_logs()),
        }


@pytest.fixture(scope="module")
def secret_run(database, tmp_path_factory):
    import comet_ml

    from flows.train import train
    from tasks import tracking

    artifacts = tmp_path_factory.mktemp("secrets")
    mp = pytest.MonkeyPatch()
    mp.setenv("COMET_API_KEY", COMET_KEY)
    mp.setenv("GAUNTLET_TEST_DB_PASSWORD", DB_PASSWORD)
    mp.setattr(comet_ml, "Experiment", LeakyCloud)
    mp.setattr(tracking, "ONLINE_RETRY_PAUSES_S", (0.01,))
    overrides = {"models.random_forest.enabled": False, "models.xgboost.enabled": False, "models.catboost.enabled": False}
    if database:
        user_host_db = database.split("@", 1)
        overrides["search.storage"] = f"postgresql://{user_host_db[0]}:${{GAUNTLET_TEST_DB_PASSWORD}}@{user_host_db[1]}"
    try:
        report = train(params=smoke_params(artifacts, **overrides))
    finally:
        mp.undo()
    return report, artifacts


def test_the_comet_key_appears_in_no_output_log_parameter_or_artifact(secret_run, capsys, caplog):
    report, artifacts = secret_run
    assert report.registered and list((artifacts / "comet").rglob("*.zip"))  # the run went on, offline
    texts = {**every_text(artifacts), **prefect_texts(), "console": "".join(capsys.readouterr()),
             "log records": caplog.text}
    assert any("401 Unauthorized" in text for text in texts.values())  # the leaky error was logged...
    leaks = [where for where, text in texts.items() if COMET_KEY in text]
    assert leaks == []  # ...without the key


def test_the_database_password_appears_nowhere(secret_run, database, capsys, caplog):
    if database is None:
        pytest.skip(POSTGRES_MISSING)
    report, artifacts = secret_run
    config = json.loads((Path(report.run_dir) / "config.json").read_text())
    assert config["search"]["storage"].endswith("${GAUNTLET_TEST_DB_PASSWORD}@" + database.split("@", 1)[1])
    assert all(c.n_trials == 2 for c in report.candidates)  # the study really ran in PostgreSQL
    texts = {**every_text(artifacts), **prefect_texts(), "console": "".join(capsys.readouterr()),
             "log records": caplog.text}
    assert [where for where, text in texts.items() if DB_PASSWORD in text] == []
