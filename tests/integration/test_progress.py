"""The command's progress display: redrawn in place on a terminal (run under a pseudo-terminal here),
plain lines when the output is a pipe or a CI log, nothing but warnings and the summary with --quiet."""

from __future__ import annotations

import io
import logging
import os
import pty
import re
import select
import subprocess
import sys
import time

from config.paths import PROJECT_ROOT
from tasks.progress import BOARD, Display

FAMILIES = ["logistic_regression", "random_forest", "lightgbm", "xgboost"]
# Logistic regression's trials take ~0.05 s: with 5 of them a busy machine may finish the family between
# two redraws, so it gets enough trials to be seen moving.
BUDGET = {"logistic_regression": 40, "random_forest": 5, "lightgbm": 5, "xgboost": 5}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def command(artifacts) -> list[str]:
    args = [sys.executable, "flows/train.py", "--config", "config/smoke.yaml", "--set", f"artifacts_dir={artifacts}",
            "--set", "tracking.backend=none"]
    for family in FAMILIES:
        args += ["--set", f"models.{family}.n_trials={BUDGET[family]}"]
    return args


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "COMET_API_KEY")}


def test_on_a_terminal_each_familys_line_moves_as_trials_finish(tmp_path):
    main, child = pty.openpty()
    proc = subprocess.Popen(command(tmp_path), cwd=PROJECT_ROOT, stdin=child, stdout=child, stderr=child,
                            env={**clean_env(), "TERM": "xterm-256color", "COLUMNS": "100"}, close_fds=True)
    os.close(child)
    chunks, deadline = [], time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 1)
        if ready:
            try:
                data = os.read(main, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    proc.wait(timeout=60)
    os.close(main)
    screen = ANSI.sub("", b"".join(chunks).decode("utf-8", "replace")).replace("\r", "\n")
    assert proc.returncode == 0, screen[-3000:]
    assert "gauntlet: search" in screen and "gauntlet: evaluate" in screen  # the stage in progress
    for family in FAMILIES:
        budget = BUDGET[family]
        counts = {int(m) for m in re.findall(rf"{family}\s.*?(\d+)/{budget}", screen)}
        assert len(counts) >= 2 and budget in counts, (family, counts)  # at least two updates, the last complete
    assert "] trial 0 (" not in screen  # Prefect's per-trial log lines make way for the table
    assert "Gate PASSED" in screen and "peak MB" in screen  # the summary: leaderboard, stages, gate


def test_in_a_pipe_progress_is_plain_lines(tmp_path):
    out = subprocess.run(command(tmp_path), cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
                         env=clean_env())
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line for line in out.stderr.splitlines() if line.startswith("[progress]")]
    assert "[progress] stage: search" in lines and "[progress] stage: evaluate" in lines
    for family in FAMILIES:
        assert any(re.match(rf"\[progress\] {family}: {BUDGET[family]}/{BUDGET[family]} trials, best fbeta 0\.\d{{4}}, [\d.]+ s, done$", line)
                   for line in lines), (family, [line for line in lines if family in line], out.stderr[-2000:])
    assert not ANSI.search(out.stderr + out.stdout)  # no terminal codes in a log
    assert "trial 0 (1/5)" in out.stderr  # the log lines stay


def test_quiet_holds_back_everything_below_warnings():
    from prefect.logging.handlers import PrefectConsoleHandler

    handler = PrefectConsoleHandler(stream=io.StringIO())
    handler.setLevel(logging.INFO)
    logger = logging.getLogger("gauntlet.test-progress")
    logger.addHandler(handler)
    try:
        stream = io.StringIO()
        with Display("off", stream=stream):
            assert handler.level == logging.WARNING
            BOARD.family_started("lightgbm", 3, "fbeta")
            BOARD.trial_done("lightgbm", 1, 0.9)
        assert handler.level == logging.INFO and stream.getvalue() == ""
    finally:
        logger.removeHandler(handler)


def test_quiet_shows_a_failed_trial_as_one_line_without_its_traceback():
    """Issue 21, case 8: `--quiet` printed Optuna's traceback for every failed trial."""
    import optuna

    seen = io.StringIO()
    handler = logging.StreamHandler(seen)
    optuna.logging.get_logger("optuna").addHandler(handler)

    def objective(trial):
        raise ValueError("this family cannot fit")

    try:
        for mode, traceback in (("off", False), ("plain", True)):
            seen.truncate(0)
            with Display(mode, stream=io.StringIO()):
                study = optuna.create_study()
                study.optimize(objective, n_trials=1, catch=(ValueError,))
            assert "Trial 0 failed" in seen.getvalue() and "this family cannot fit" in seen.getvalue()
            assert ("Traceback" in seen.getvalue()) is traceback, (mode, seen.getvalue())
    finally:
        optuna.logging.get_logger("optuna").removeHandler(handler)


def test_plain_lines_are_rate_limited_but_never_miss_the_end():
    stream = io.StringIO()
    with Display("plain", stream=stream, plain_every_s=60):
        BOARD.set_stage("search")
        BOARD.family_started("xgboost", 4, "fbeta")
        for done in range(1, 5):
            BOARD.trial_done("xgboost", done, 0.5 + done / 10)
            time.sleep(0.6)
        BOARD.family_ended("xgboost", "done")
        time.sleep(0.6)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "[progress] stage: search"
    family_lines = [line for line in lines[1:] if line.startswith("[progress] xgboost")]
    assert 1 <= len(family_lines) <= 2  # one per minute at most, plus the end
    assert family_lines[-1].startswith("[progress] xgboost: 4/4 trials, best fbeta 0.9000") and "done" in family_lines[-1]
