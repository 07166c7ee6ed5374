"""A training asked to stop: Ctrl-C (SIGINT to the process group) and SIGTERM end a long search at the
next trial boundary, with one line, exit code 130 / 143, no process left, nothing registered; the
same command again resumes the studies."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from config.paths import PROJECT_ROOT

FAMILIES = ("logistic_regression", "lightgbm")  # LightGBM: a stop also reaches into its fits


def _start(artifacts: Path, home: Path, quiet: bool, *extra: str, trials: int = 300) -> subprocess.Popen:
    cmd = [sys.executable, "flows/train.py", "--config", "config/smoke.yaml", "--set", f"artifacts_dir={artifacts}",
           "--set", "search.storage=auto", "--set", "tracking.backend=none", *(["--quiet"] if quiet else []), *extra]
    for family in FAMILIES:
        cmd += ["--set", f"models.{family}.n_trials={trials}"]
    cmd += ["--set", "models.random_forest.enabled=false", "--set", "models.xgboost.enabled=false"]
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "COMET_API_KEY")}
    return subprocess.Popen(cmd, cwd=PROJECT_ROOT, env={**env, "PREFECT_HOME": str(home)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # its own group: a terminal's


def _sizes(artifacts: Path) -> dict[Path, int]:
    folder = artifacts / "optuna"
    return {p: p.stat().st_size for p in folder.glob("*.journal")} if folder.is_dir() else {}


def _wait_for_trials(artifacts: Path, process: subprocess.Popen, timeout_s: float = 120) -> None:
    """Until every family's study holds trials, and one has grown by a few in this process (a family whose
    300 trials ended before an earlier stop is reused, not searched)."""
    before, deadline = _sizes(artifacts), time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        now = _sizes(artifacts)
        if len(now) == len(FAMILIES) and any(size > before.get(p, 0) + 2000 for p, size in now.items()):
            return
        time.sleep(0.5)
    raise AssertionError(f"no trials within {timeout_s} s: {process.communicate()[1][-3000:]}")


def _processes_with(home: Path) -> list[int]:
    """Processes whose environment names this test's PREFECT_HOME (the run and its local server)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if f"PREFECT_HOME={home}".encode() in Path(f"/proc/{pid}/environ").read_bytes():
                found.append(int(pid))
        except OSError:
            continue
    return found


def test_ctrl_c_then_sigterm_stop_the_run_and_a_rerun_resumes(tmp_path):
    artifacts, home = tmp_path / "artifacts", tmp_path / "prefect"
    run = _start(artifacts, home, quiet=True)
    _wait_for_trials(artifacts, run)
    os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C at a terminal sends
    out, err = run.communicate(timeout=60)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert run.returncode == 130, err[-3000:]
    assert len(lines) == 1 and lines[0].startswith("stopped by SIGINT after ") and "rerun to resume" in lines[0], err
    assert "Traceback" not in out + err and "Logging error" not in out + err
    time.sleep(1)
    assert _processes_with(home) == []  # the local Prefect server went with the run
    assert not (artifacts / "registry").exists()  # nothing registered

    # The searches in child processes this time: the run passes a SIGTERM sent to it alone on to them.
    again = _start(artifacts, home, False, "--set", "search.executor=processes", trials=3000)  # no GIL: faster
    _wait_for_trials(artifacts, again)
    asked = time.monotonic()
    again.send_signal(signal.SIGTERM)  # a process manager's stop: to the process only
    out, err = again.communicate(timeout=60)
    print(f"SIGTERM to exit: {time.monotonic() - asked:.1f} s")
    assert again.returncode == 143, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("stopped by SIGTERM after ")
    numbers = [int(n) for n in re.findall(r"\] trial (\d+) \(", out + err)]
    assert numbers and min(numbers) > 0, numbers[:5]  # each study went on from its finished trials
    assert "Traceback" not in out + err and "Logging error" not in out + err
    time.sleep(1)
    assert _processes_with(home) == [] and not (artifacts / "registry").exists()
