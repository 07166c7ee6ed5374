"""The REST service, started for real on 127.0.0.1 (uvicorn in its own process) on a smoke registry."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pandas as pd
import pytest
import schemathesis

from config.paths import PROJECT_ROOT
from tests.helpers import free_port

pytestmark = pytest.mark.usefixtures("prefect_harness")
MAX_BODY = 200_000  # small, so that an oversized body is cheap to send


class Service:
    def __init__(self, registry, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = registry.parent / f"service-{self.port}.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tasks.serving", "--registry", str(registry), "--port", str(self.port),
             "--max-body-bytes", str(MAX_BODY), *extra],
            cwd=PROJECT_ROOT, stdout=open(self.log, "w"), stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError(f"the service did not start: {self.log.read_text()}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def registry_copy(trained_smoke, tmp_path_factory):
    report, artifacts = trained_smoke
    copy = tmp_path_factory.mktemp("served") / "registry"
    shutil.copytree(artifacts / "registry", copy)
    return report, copy


@pytest.fixture(scope="module")
def service(registry_copy):
    _, registry = registry_copy
    running = Service(registry, "--reload-every", "0.2")
    yield running
    running.stop()


def test_rows_get_the_batch_flows_predictions(service, registry_copy, tmp_path):
    from flows.predict import predict
    from tasks.runs import RunPaths

    report, registry = registry_copy
    test = pd.read_parquet(RunPaths(report.run_dir).split("test"))
    batch = tmp_path / "batch.parquet"
    predict(input_path=str(RunPaths(report.run_dir).split("test")), output_path=str(batch), registry_dir=str(registry))
    expected = pd.read_parquet(batch)
    rows = test.to_dict(orient="records")  # Python floats: JSON round-trips them exactly; the target is ignored
    response = httpx.post(f"{service.url}/predict", json=rows, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == report.registry_version and len(body["predictions"]) == len(test)
    assert [p["prediction"] for p in body["predictions"]] == expected["prediction"].tolist()
    got = np.array([[p["probabilities"]["benign"], p["probabilities"]["malignant"]] for p in body["predictions"]])
    np.testing.assert_array_equal(got, expected[["proba_benign", "proba_malignant"]].to_numpy())
    one = httpx.post(f"{service.url}/predict", json=rows[5:6], timeout=10).json()["predictions"][0]
    assert one["prediction"] == body["predictions"][5]["prediction"]
    # Alone, a row goes through a matrix-vector product instead of a matrix product: the same to 1e-15.
    assert one["probabilities"]["malignant"] == pytest.approx(got[5, 1], abs=1e-12)


def test_bad_requests_get_the_right_4xx(service, registry_copy):
    report, _ = registry_copy
    from tasks.runs import RunPaths

    row = pd.read_parquet(RunPaths(report.run_dir).split("test")).iloc[0].to_dict()
    malformed = httpx.post(f"{service.url}/predict", content=b'[{"mean radius": 1.0,', timeout=10,
                           headers={"content-type": "application/json"})
    assert malformed.status_code == 400 and "not valid JSON" in malformed.json()["detail"]
    missing = httpx.post(f"{service.url}/predict", json=[row, {k: v for k, v in row.items() if k != "mean area"}])
    assert missing.status_code == 422
    assert missing.json()["detail"] == [{"loc": ["body", 1, "mean area"], "msg": "Field required", "type": "missing"}]
    wrong = httpx.post(f"{service.url}/predict", json=[{**row, "worst area": "large"}])
    assert wrong.status_code == 422 and wrong.json()["detail"][0]["loc"] == ["body", 0, "worst area"]
    big = httpx.post(f"{service.url}/predict", json=[row] * 400, timeout=10)  # about 400 kB > 200 kB
    assert big.status_code == 413 and "over the limit" in big.json()["detail"]
    assert httpx.post(f"{service.url}/predict", json=[]).status_code == 422
    deep = httpx.post(f"{service.url}/predict", content=b"[" * 5000 + b"]" * 5000, timeout=10,
                      headers={"content-type": "application/json"})
    assert deep.status_code == 400 and "too deeply" in deep.json()["detail"]
    assert httpx.post(f"{service.url}/predict", json={"rows": [row]}).status_code == 422
    assert httpx.get(f"{service.url}/health").json()["status"] == "ok"  # still serving after all that


def test_model_and_health_describe_the_served_version(service, registry_copy):
    from tasks import registry as reg

    report, registry = registry_copy
    info = httpx.get(f"{service.url}/model").json()
    meta = reg.read_metadata(registry, "breast_cancer-diagnosis", report.registry_version)
    assert info["model_version"] == report.registry_version and info["family"] == meta["family"]
    assert info["data_sha256"] == meta["data_sha256"] and info["test_metrics"]["fbeta"] == meta["test_metrics"]["fbeta"]
    assert [c["name"] for c in info["input_schema"]] == meta["features"]
    spec = httpx.get(f"{service.url}/openapi.json").json()
    assert set(spec["components"]["schemas"]["Row"]["required"]) == set(meta["features"])


def test_the_openapi_spec_holds_for_generated_requests(service):
    """Property test over the served OpenAPI spec (schemathesis): generated requests to every
    operation never get a server error, and every response matches its documented status, content
    type and schema. (Driven with Hypothesis directly: schemathesis' lazy pytest fixture does not
    work with pytest 9.2.)"""
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_url(f"{service.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} == {"GET /health", "GET /model", "POST /predict"}
    calls = []
    for operation in operations:

        @settings(max_examples=40 if operation.method == "post" else 3, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case):
            response = case.call_and_validate()
            calls.append((case.operation.path, response.status_code))

        check()
    statuses = {status for path, status in calls if path == "/predict"}
    assert 200 in statuses  # generated rows that fit the schema were scored, not only refused


def test_alias_move_is_followed_without_dropping_requests(registry_copy, tmp_path):
    from tasks import registry as reg
    from tasks.runs import RunPaths

    report, source = registry_copy
    registry = tmp_path / "registry"
    shutil.copytree(source, registry)
    name = "breast_cancer-diagnosis"
    first = report.registry_version
    running = Service(registry, "--reload-every", "0.1")
    try:
        rows = pd.read_parquet(RunPaths(report.run_dir).split("test")).head(20).to_dict(orient="records")
        statuses, versions, stop = [], [], threading.Event()

        def load():
            with httpx.Client(timeout=10) as client:
                while not stop.is_set():
                    response = client.post(f"{running.url}/predict", json=rows)
                    statuses.append(response.status_code)
                    versions.append(response.json().get("model_version"))

        thread = threading.Thread(target=load)
        thread.start()
        # The alias moves only once the first version has answered a few requests under load
        # (on a busy runner the thread's first request could otherwise come after the move).
        deadline = time.monotonic() + 20
        while len(versions) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        model = reg.load_model(registry, name)
        second = reg.register_model(registry, name, model.pipeline, {k: v for k, v in model.metadata.items()
                                                                     if k not in ("version", "model_sha256")})
        deadline = time.monotonic() + 20
        while httpx.get(f"{running.url}/health").json()["model_version"] != second and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)
        # A tampered version is never served: the old one stays, /health says why.
        third = reg.register_model(registry, name, model.pipeline, {k: v for k, v in model.metadata.items()
                                                                    if k not in ("version", "model_sha256")},
                                   alias=None)
        pickle_file = registry / name / str(third) / "model.pkl"
        pickle_file.write_bytes(pickle_file.read_bytes() + b"tampered")
        reg.set_alias(registry, name, "champion", third)
        while httpx.get(f"{running.url}/health").json()["status"] != "degraded" and time.monotonic() < deadline:
            time.sleep(0.1)
        health = httpx.get(f"{running.url}/health").json()
        reg.set_alias(registry, name, "champion", second)  # back to the served version: healthy again
        deadline = time.monotonic() + 20
        while httpx.get(f"{running.url}/health").json()["status"] != "ok" and time.monotonic() < deadline:
            time.sleep(0.1)
        healthy_again = httpx.get(f"{running.url}/health").json()
        stop.set()
        thread.join()
    finally:
        running.stop()
    assert set(statuses) == {200} and len(statuses) > 10  # no request failed across the swap
    assert versions[0] == first and versions[-1] == second and sorted(set(versions)) == [first, second]
    assert health["model_version"] == second and "fails its checksum" in health["reload_error"]
    assert healthy_again["status"] == "ok" and healthy_again["reload_error"] is None
    assert healthy_again["model_version"] == second
    assert "failed to load" in running.log.read_text()


def test_started_before_the_first_training_it_waits_for_a_champion(registry_copy, tmp_path):
    """docker compose starts `serve` before any model exists: it answers 503 'no model yet' instead
    of exiting, and serves the first champion once it is registered."""
    _, trained = registry_copy
    empty = tmp_path / "registry"
    port = free_port()
    log = tmp_path / "serve.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "tasks.serving", "--registry", str(empty), "--port", str(port), "--wait-for-model",
         "--reload-every", "0.2"], cwd=PROJECT_ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline, health = time.monotonic() + 60, None
        while health is None and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            try:
                health = httpx.get(f"{url}/health", timeout=1)
            except httpx.HTTPError:
                time.sleep(0.1)
        assert health is not None and health.status_code == 503 and health.json()["status"] == "no model yet"
        assert httpx.post(f"{url}/predict", json=[{"a": 1}], timeout=5).status_code == 503
        shutil.copytree(trained, empty)  # the first training registers its champion
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/health", timeout=1).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert httpx.get(f"{url}/health", timeout=1).json()["model_version"] == 1, log.read_text()
    finally:
        process.terminate()
        process.wait(timeout=10)
