"""Soak: N back-to-back smoke trainings against one Prefect server and one registry (run by hand).

    .venv/bin/python bench/soak.py [--runs 50] [--mode inprocess|process] [--keep DIR]

A real `prefect server start` (SQLite, its own PREFECT_HOME) runs for the whole soak. Each run is
config/smoke.yaml (four families, 2 trials each, Comet offline) writing to one artifacts folder, so
every run meets the registry the earlier ones left. Modes:
- inprocess (default): every run in this one process, as `python flows/train.py --serve` runs its
  scheduled runs: memory this process keeps from run to run is what a long-lived deployment leaks.
- process: a fresh `python flows/train.py` per run, as a process work pool runs them.

Printed: failures (expected 0) with their last line, wall time per run, the registry's versions and
its verification (every version's files against their sha256, every alias on a complete version),
this process's RSS after each run (inprocess) and the server's RSS, first run vs last.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path) -> tuple[subprocess.Popen, str]:
    import urllib.request

    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    server = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start", "--host",
                               "127.0.0.1", "--port", str(port)], env=env, stdout=open(home / "server.log", "w"),
                              stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2):
                return server, api
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit(f"the Prefect server did not come up: see {home / 'server.log'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--mode", choices=["inprocess", "process"], default="inprocess")
    parser.add_argument("--keep", help="artifacts folder to use and keep (default: a temporary one)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="gauntlet-soak-"))
    artifacts = Path(args.keep) if args.keep else work / "artifacts"
    server, api = start_server(work)
    os.environ.update(PREFECT_API_URL=api, PREFECT_HOME=str(work), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    os.environ.pop("COMET_API_KEY", None)
    print(f"soak: {args.runs} smoke runs ({args.mode}) against {api}, artifacts in {artifacts}", flush=True)
    from gauntlet.runtime import configure_environment

    configure_environment()
    from gauntlet.cli import main as gauntlet_main
    from tasks import registry

    config = str(ROOT / "config" / "smoke.yaml")
    argv = ["train", "--config", config, "--set", f"artifacts_dir={artifacts}"]
    failures, walls, own_rss, server_rss = [], [], [], [rss_mb(server.pid)]
    try:
        for i in range(1, args.runs + 1):
            started = time.perf_counter()
            if args.mode == "inprocess":
                import contextlib
                import io

                err = io.StringIO()
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                    try:
                        code = gauntlet_main(argv)
                    except BaseException as exc:  # counted, then the soak goes on
                        code, err = 1, io.StringIO(f"{type(exc).__name__}: {exc}")
                last = (err.getvalue().strip().splitlines() or [""])[-1]
            else:
                out = subprocess.run([sys.executable, "-m", "gauntlet.cli", *argv], cwd=ROOT, capture_output=True,
                                     text=True, timeout=900)
                code, last = out.returncode, (out.stderr.strip().splitlines() or [""])[-1]
            walls.append(time.perf_counter() - started)
            own_rss.append(rss_mb())
            server_rss.append(rss_mb(server.pid))
            if code != 0:
                failures.append((i, code, last))
            print(f"run {i:3d}: exit {code}, {walls[-1]:5.1f} s, soak process RSS {own_rss[-1]:6.0f} MB, "
                  f"server RSS {server_rss[-1]:5.0f} MB", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)

    models = registry.list_models(artifacts / "registry")
    problems = registry.verify(artifacts / "registry")
    versions = {name: registry.list_versions(artifacts / "registry", name) for name in models}
    aliases = {name: registry.get_aliases(artifacts / "registry", name) for name in models}
    runs_written = len(list((artifacts / "runs").glob("*/report.json")))
    print()
    print(f"runs: {args.runs}, failures: {len(failures)}")
    for i, code, last in failures:
        print(f"  run {i}: exit {code}: {last}")
    print(f"wall per run: median {statistics.median(walls):.1f} s, first {walls[0]:.1f} s, last {walls[-1]:.1f} s")
    print(f"reports written: {runs_written}")
    print(f"registry: {', '.join(f'{n}: {len(v)} versions, aliases {aliases[n]}' for n, v in versions.items())}; "
          f"verify: {'sound' if not problems else problems}")
    if args.mode == "inprocess":
        tail = statistics.mean(own_rss[-5:]) - statistics.mean(own_rss[:5])
        print(f"soak process RSS: after run 1 {own_rss[0]:.0f} MB, after run {args.runs} {own_rss[-1]:.0f} MB "
              f"(mean of the last 5 minus the first 5: {tail:+.0f} MB, {tail / max(args.runs - 5, 1):+.2f} MB/run)")
    print(f"server RSS: before {server_rss[0]:.0f} MB, after {server_rss[-1]:.0f} MB")
    return 1 if failures or problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
