"""docker-compose.yml against the Compose Specification's schema (there is no Docker engine here),
and its commands against the ones tests/system/test_server.py runs natively."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from config.paths import PROJECT_ROOT
from tests.helpers import SERVER_COMMAND, WORKER_COMMAND

COMPOSE = PROJECT_ROOT / "docker-compose.yml"
SCHEMA = Path(__file__).parents[1] / "data" / "compose_spec.json"


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}, as `docker compose config` applies them."""

    def one(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        value = env.get(name, "")
        if op == ":-" and not value:
            return arg
        if op == ":?" and not value:
            raise KeyError(f"{name}: {arg}")
        return value

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|:\?)([^}]*))?\}", one, text)


def load(env: dict[str, str]) -> dict:
    return yaml.safe_load(interpolate(COMPOSE.read_text(), env))


@pytest.fixture(scope="module")
def compose() -> dict:
    return load({"POSTGRES_PASSWORD": "test-only-password"})


def test_compose_file_is_valid_against_the_compose_schema(compose):
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft201909Validator(schema).validate(compose)
    assert set(compose["services"]) == {"postgres", "prefect-server", "worker", "deploy", "serve"}


def test_a_broken_compose_file_is_caught_by_the_same_check(compose):
    schema = json.loads(SCHEMA.read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"]["worker"]["deploy"]["replicas"] = "many"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft201909Validator(schema).validate(broken)


def test_services_run_the_commands_the_server_tests_run_natively(compose):
    assert compose["services"]["worker"]["command"] == WORKER_COMMAND
    server = compose["services"]["prefect-server"]["command"]
    assert server[: len(SERVER_COMMAND)] == SERVER_COMMAND


def test_serve_service_runs_the_command_the_serving_tests_run(compose):
    """tests/system/test_serving.py starts `python -m tasks.serving` natively; the service runs the same module,
    on the artifacts volume the workers write the registry to, healthchecked on /health."""
    serve = compose["services"]["serve"]
    assert serve["command"][:3] == ["python", "-m", "tasks.serving"]
    assert serve["volumes"] == compose["services"]["worker"]["volumes"]
    assert "/health" in " ".join(serve["healthcheck"]["test"])
    assert serve["ports"] == ["127.0.0.1:8000:8000"]


def test_stack_is_healthchecked_and_ordered(compose):
    services = compose["services"]
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert "/api/health" in " ".join(services["prefect-server"]["healthcheck"]["test"])
    assert services["prefect-server"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["worker"]["depends_on"]["prefect-server"]["condition"] == "service_healthy"
    assert services["postgres"]["volumes"][0].startswith("pgdata:")
    assert "postgresql+asyncpg://" in services["prefect-server"]["environment"]["PREFECT_SERVER_DATABASE_CONNECTION_URL"]
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["worker"]["build"] == "." and services["prefect-server"]["build"] == "."  # the repo's Dockerfile
    assert load({"POSTGRES_PASSWORD": "x", "WORKER_REPLICAS": "5"})["services"]["worker"]["deploy"]["replicas"] == 5


def test_ports_bind_to_loopback_by_default(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


def test_secrets_come_from_the_environment_never_the_repository():
    text = COMPOSE.read_text()
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD: set POSTGRES_PASSWORD in .env"):
        load({})  # no password, no stack
    assert "test-only-password" not in text
    assert re.findall(r"COMET_API_KEY: (.*)", text) == ["${COMET_API_KEY:-}"]
    assert ".env" in (PROJECT_ROOT / ".gitignore").read_text().splitlines()
    assert ".env" in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
    # ENV/ARG lines are what bake a value into an image (the continuation lines of ENV included).
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    baked = [line for line in dockerfile.splitlines() if line.split(" ")[0] in ("ENV", "ARG")]
    assert baked and not [line for line in baked if "COMET_API_KEY" in line or "PASSWORD" in line]


def test_the_auth_override_turns_basic_auth_on_for_server_and_workers(compose):
    """docker/auth.yml, merged over docker-compose.yml as `docker compose -f ... -f ...` merges
    mappings: the server wants the auth string the workers send, and there is no default."""
    override_file = PROJECT_ROOT / "docker" / "auth.yml"
    with pytest.raises(KeyError, match="PREFECT_AUTH_STRING: set PREFECT_AUTH_STRING=user:password in .env"):
        yaml.safe_load(interpolate(override_file.read_text(), {}))
    override = yaml.safe_load(interpolate(override_file.read_text(), {"PREFECT_AUTH_STRING": "ops:s3cret"}))
    merged = json.loads(json.dumps(compose))
    for name, service in override["services"].items():
        merged["services"][name]["environment"] = {**merged["services"][name]["environment"], **service["environment"]}
    jsonschema.Draft201909Validator(json.loads(SCHEMA.read_text())).validate(merged)
    assert merged["services"]["prefect-server"]["environment"]["PREFECT_SERVER_API_AUTH_STRING"] == "ops:s3cret"
    assert merged["services"]["worker"]["environment"]["PREFECT_API_AUTH_STRING"] == "ops:s3cret"
    assert "/api/health" in " ".join(merged["services"]["prefect-server"]["healthcheck"]["test"])  # needs no auth
    assert "PREFECT_AUTH_STRING" not in COMPOSE.read_text()  # off unless asked for


def test_the_stack_would_start_deploy_uses_the_image_s_python_and_serve_waits(compose):
    """What a first `docker compose up` needs: deployments registered with the image's interpreter
    (no .venv, no pip, no dev extras), no variable nothing reads, and a `serve` that waits for the
    first champion instead of exiting (and restarting in a loop)."""
    services = compose["services"]
    command = " ".join(services["deploy"]["command"])
    assert "prefect --no-prompt deploy --all" in command and "work-pool create gauntlet-process" in command
    assert not {"make", ".venv", "pip", "[dev]"} & set(re.split(r"[\s/]+", command))
    assert services["deploy"]["environment"]["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert services["deploy"]["depends_on"]["prefect-server"]["condition"] == "service_healthy"
    assert "--wait-for-model" in services["serve"]["command"]
    product = "\n".join(p.read_text() for folder in ("tasks", "flows", "gauntlet", "config")
                        for p in (PROJECT_ROOT / folder).rglob("*.py"))
    for name in set(re.findall(r"\b(GAUNTLET_[A-Z_]+):", COMPOSE.read_text())):
        assert name in product, f"{name} is set in docker-compose.yml but nothing reads it"
    assert "GAUNTLET_OPTUNA_STORAGE" not in COMPOSE.read_text()
