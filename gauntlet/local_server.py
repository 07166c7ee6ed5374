"""The local Prefect server of a command-line run, started before anything heavy is imported.

With no Prefect API configured, `start_early()` starts the temporary server Prefect would start at the
first flow run, so that it boots while the libraries are imported, and points PREFECT_API_URL at it.
Unlike Prefect's, its 503s ("database is locked") carry `Retry-After`, since a locked SQLite write
succeeds when retried at once, and it dies with the run, even on SIGKILL. Stdlib only: Prefect reads
its settings once, at import.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from config.errors import GauntletError

RETRY_AFTER_SECONDS = "0.25"
_server: list[tuple[subprocess.Popen, str, Path]] = []


class LocalServerError(GauntletError):
    """The local Prefect server did not start."""


def create_app():  # noqa: ANN201 - uvicorn's --factory target
    """Prefect's server app, with a retry hint on its 503 answers."""
    import gc

    # No garbage collection while Prefect's server is imported and built (0.4 s of its 2 s): what they
    # make lives as long as the server, so it is frozen out of later collections too.
    gc.disable()
    try:
        from prefect.server.api.server import create_app as prefect_app

        return RetryAfterOn503(prefect_app())
    finally:
        gc.freeze()
        gc.enable()


class RetryAfterOn503:
    """ASGI middleware: adds `Retry-After` to 503 responses that lack one."""

    def __init__(self, app, retry_after: str = RETRY_AFTER_SECONDS) -> None:  # noqa: ANN001
        self.app = app
        self.retry_after = retry_after.encode()

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_hint(message: dict) -> None:
            if message["type"] == "http.response.start" and message["status"] == 503:
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"retry-after" for name, _ in headers):
                    message = {**message, "headers": [*headers, (b"retry-after", self.retry_after)]}
            await send(message)

        await self.app(scope, receive, send_with_hint)


def configured_api_url(cwd: Path | None = None) -> str | None:
    """The Prefect API URL the user configured, read without importing Prefect (None: none)."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    cwd = cwd or Path.cwd()
    home = Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect")).expanduser()
    profiles = Path(os.environ.get("PREFECT_PROFILES_PATH", home / "profiles.toml")).expanduser()
    try:
        data = tomllib.loads(profiles.read_text())
        active = os.environ.get("PREFECT_PROFILE") or data.get("active", "ephemeral")
        url = data.get("profiles", {}).get(active, {}).get("PREFECT_API_URL")
        if url:
            return str(url)
    except (OSError, tomllib.TOMLDecodeError, AttributeError):
        pass
    try:
        url = tomllib.loads((cwd / "prefect.toml").read_text()).get("api", {}).get("url")
        if url:
            return str(url)
    except (OSError, tomllib.TOMLDecodeError, AttributeError):
        pass
    try:
        for line in (cwd / ".env").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip().removeprefix("export ").strip() == "PREFECT_API_URL" and value.strip():
                return value.strip().strip("'\"")
    except OSError:
        pass
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def start_early() -> str | None:
    """Start the local server in the background; returns its API URL (None: an API is configured)."""
    if _server or configured_api_url():
        return None
    port = _free_port()
    home = Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect")).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "local-server.log"
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
           "PREFECT__SERVER_FINAL": "1"}
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(__file__).resolve().parents[1]),
             "--factory", "gauntlet.local_server:create_app", "--host", "127.0.0.1", "--port", str(port),
             "--log-level", "error", "--lifespan", "on"],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509 - no threads yet
            start_new_session=True,  # a Ctrl-C at the terminal stops the run, which still reports to its server
        )
    url = f"http://127.0.0.1:{port}/api"
    os.environ["PREFECT_API_URL"] = url  # before Prefect is imported: every client here, and child processes
    os.environ.setdefault("PREFECT_UI_URL", "")  # its UI is off: no "View at" links to a page that isn't there
    _server.append((process, url, log_path))
    atexit.register(stop)
    return url


def wait_until_ready(timeout_s: float | None = None) -> None:
    """Block until the server started by `start_early` answers /health (no-op if none was started)."""
    if not _server:
        return
    import urllib.error
    import urllib.request

    process, url, log_path = _server[0]
    timeout_s = timeout_s or float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", 90))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.02)  # a refused connection costs nothing; the run waits on this
    tail = " | ".join(log_path.read_text().strip().splitlines()[-3:]) if log_path.is_file() else ""
    exited = process.poll() is not None
    state = f"exited with code {process.returncode}" if exited else f"was not up after {timeout_s:.0f} s"
    raise LocalServerError(
        f"the local Prefect server {state} ({tail or 'no output'}; log: {log_path}); run again, or start "
        "one with `make server` and set PREFECT_API_URL=http://127.0.0.1:4200/api"
    )


def stop(wait_s: float = 0.0) -> None:
    """Stop the server: SIGTERM, then at most `wait_s` for it to be gone.

    At exit nothing waits: the run's results and states are saved, and the server closes on its own.
    """
    while _server:
        process, _, _ = _server.pop()
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                pass
