"""The local Prefect server a command-line run starts before its imports (gauntlet/local_server.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gauntlet import local_server

ROOT = Path(__file__).resolve().parents[2]


def _call(app, status: int, headers: list | None = None) -> dict:
    """Send one GET through the ASGI app; return its response-start message."""

    async def inner(scope, receive, send):
        await send({"type": "http.response.start", "status": status, "headers": headers or []})
        await send({"type": "http.response.body", "body": b"{}"})

    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        sent.append(message)

    asyncio.run(app(inner)({"type": "http", "method": "GET", "path": "/api/health", "headers": []}, receive, send))
    return sent[0]


def test_503_answers_tell_the_client_to_retry_soon():
    start = _call(local_server.RetryAfterOn503, 503)
    assert (b"retry-after", local_server.RETRY_AFTER_SECONDS.encode()) in start["headers"]
    assert _call(local_server.RetryAfterOn503, 200)["headers"] == []  # other answers untouched
    own = _call(local_server.RetryAfterOn503, 503, [(b"Retry-After", b"7")])
    assert own["headers"] == [(b"Retry-After", b"7")]  # a server's own hint is kept


def test_prefect_client_honours_the_hint():
    """Prefect's client reads Retry-After (else it backs off 2 s, then 4 s)."""
    from prefect.client.base import _parse_retry_after

    assert _parse_retry_after(local_server.RETRY_AFTER_SECONDS) == float(local_server.RETRY_AFTER_SECONDS)


def test_a_configured_api_is_found_without_importing_prefect(tmp_path, monkeypatch):
    for key in ("PREFECT_API_URL", "PREFECT_PROFILE", "PREFECT_PROFILES_PATH"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home"))
    assert local_server.configured_api_url(tmp_path) is None
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "profiles.toml").write_text(
        'active = "team"\n[profiles.team]\nPREFECT_API_URL = "http://prefect.internal:4200/api"\n'
        '[profiles.ephemeral]\nPREFECT_SERVER_ALLOW_EPHEMERAL_MODE = "true"\n'
    )
    assert local_server.configured_api_url(tmp_path) == "http://prefect.internal:4200/api"
    monkeypatch.setenv("PREFECT_PROFILE", "ephemeral")
    assert local_server.configured_api_url(tmp_path) is None
    (tmp_path / "prefect.toml").write_text('[api]\nurl = "http://toml:4200/api"\n')
    assert local_server.configured_api_url(tmp_path) == "http://toml:4200/api"
    (tmp_path / "prefect.toml").unlink()
    (tmp_path / ".env").write_text("OTHER=1\nPREFECT_API_URL='http://dotenv:4200/api'\n")
    assert local_server.configured_api_url(tmp_path) == "http://dotenv:4200/api"
    monkeypatch.setenv("PREFECT_API_URL", "http://env:4200/api")
    assert local_server.configured_api_url(tmp_path) == "http://env:4200/api"


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_the_server_answers_and_dies_with_a_killed_run(tmp_path):
    """A run killed with SIGKILL runs no exit handler: its server must not outlive it."""
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from gauntlet import local_server
        from gauntlet.runtime import configure_environment
        configure_environment()
        url = local_server.start_early()
        local_server.wait_until_ready()
        print(url, local_server._server[0][0].pid, flush=True)
        time.sleep(120)
    """))
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
    try:
        url, pid = proc.stdout.readline().split()
        import urllib.request

        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            assert response.status == 200
        assert url.startswith("http://127.0.0.1:") and url.endswith("/api")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(int(pid), 0)
            if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
                break  # gone, waiting to be reaped by init
        except (ProcessLookupError, FileNotFoundError):
            break
        time.sleep(0.2)
    else:
        os.kill(int(pid), signal.SIGKILL)
        pytest.fail("the local server outlived the run killed with SIGKILL")
