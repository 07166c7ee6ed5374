"""Faults on purpose: a registration killed with SIGKILL at each of its steps, two processes
registering at once, Comet failing in the middle of a run. Each leaves nothing lost: the registry
verifies, the alias points at a complete version, tracking data lands in an offline archive.
(A family raising mid-search and an Optuna storage outage: tests/integration/test_flows.py; the Prefect server
restarting under a worker's run: tests/system/test_server.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from config.paths import PROJECT_ROOT
from tasks import registry
from tests.helpers import comet_archives, comet_cloud_stand_in, smoke_params

KILLED_REGISTRATION = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from tasks import registry, runs

    root, step, flag = sys.argv[1], sys.argv[2], Path(sys.argv[3])

    def stop_here():
        flag.write_text(step)
        time.sleep(600)  # killed with SIGKILL here

    if step == "model file":  # half of the model file written
        def save(pipeline, path):
            Path(path).write_bytes(b"half a model")
            stop_here()
        registry.save_pipeline = save
    else:
        real_write = runs.write_json
        def write(path, payload, durable=False):
            if (step == "metadata" and path.name == "metadata.json") or (step == "alias" and path.name == "aliases.json"):
                path.with_name(f".{path.name}.partial.tmp").write_text('{"half": ')
                stop_here()
            real_write(path, payload, durable)
        registry.write_json = write
    registry.register_model(root, "m", {"weights": [2.0]}, {"note": "second", "features": ["x"], "classes": [0, 1]})
""")


@pytest.mark.parametrize("step", ["model file", "metadata", "alias"])
def test_a_registration_killed_at_any_step_leaves_a_complete_champion(step, tmp_path, monkeypatch):
    root = tmp_path / "registry"
    assert registry.register_model(root, "m", {"weights": [1.0]}, meta(note="first")) == 1
    flag = tmp_path / "reached"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_REGISTRATION, str(root), step, str(flag)],
                            cwd=PROJECT_ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not flag.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert flag.exists(), proc.stderr.read() if proc.poll() is not None else "the step was never reached"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    assert registry.verify(root) == []
    assert registry.get_alias(root, "m") == 1  # the alias never moved to a version that is not complete
    assert registry.load_model(root, "m").pipeline == {"weights": [1.0]}
    # Killed before the version's folder was renamed into place, the version does not exist at all;
    # killed after it, the version is complete (only the alias move was lost).
    assert registry.list_versions(root, "m") == ([1, 2] if step == "alias" else [1])
    leftovers = list((root / "m").glob(".staging-*"))
    assert bool(leftovers) == (step != "alias")
    # The next registration works, and clears what the killed one left once it is old enough.
    monkeypatch.setattr(registry, "STALE_STAGING_S", -1)
    version = registry.register_model(root, "m", {"weights": [3.0]}, meta(note="third"))
    assert registry.get_alias(root, "m") == version and registry.load_model(root, "m").pipeline == {"weights": [3.0]}
    assert not list((root / "m").glob(".staging-*")) and registry.verify(root) == []


CONCURRENT_REGISTRATIONS = textwrap.dedent("""
    import sys
    from tasks import registry
    root, who = sys.argv[1], sys.argv[2]
    for i in range(6):
        registry.register_model(root, "m", {"who": who, "i": i}, {"who": who, "i": i, "features": ["x"], "classes": [0, 1]})
""")


def meta(**fields):
    """The metadata every registry reader relies on (features, classes), plus the test's own fields."""
    return {"features": ["x"], "classes": [0, 1], **fields}


def test_two_processes_registering_at_once_get_distinct_complete_versions(tmp_path):
    root = tmp_path / "registry"
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT_REGISTRATIONS, str(root), who], cwd=PROJECT_ROOT,
                              stderr=subprocess.PIPE, text=True) for who in ("a", "b")]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
    assert registry.list_versions(root, "m") == list(range(1, 13))
    assert registry.verify(root) == []
    seen = {(registry.read_metadata(root, "m", v)["who"], registry.read_metadata(root, "m", v)["i"]) for v in range(1, 13)}
    assert seen == {(who, i) for who in "ab" for i in range(6)}  # every registration is one whole version
    for who in "ab":  # each process's own versions come in its order
        mine = [registry.read_metadata(root, "m", v)["i"] for v in range(1, 13)
                if registry.read_metadata(root, "m", v)["who"] == who]
        assert mine == sorted(mine)
    champion = registry.load_model(root, "m")
    assert champion.version == 12 and champion.pipeline == {k: champion.metadata[k] for k in ("who", "i")}


@pytest.mark.usefixtures("prefect_harness")
def test_comet_failing_mid_run_keeps_every_experiment_offline_and_says_so(tmp_path, monkeypatch, capsys):
    import comet_ml

    from flows.train import train
    from gauntlet import cli
    from tasks import reporting

    monkeypatch.setenv("COMET_API_KEY", "test-key-not-real")
    # Comet's cloud accepting a few calls, then failing as a dropped connection does.
    cloud, made = comet_cloud_stand_in(tmp_path / "cloud", fail_after=4)
    monkeypatch.setattr(comet_ml, "Experiment", cloud)
    report = train(params=smoke_params(tmp_path, **{"models.random_forest.enabled": False,
                                                    "models.xgboost.enabled": False, "models.catboost.enabled": False}))
    assert report.registered and len(made) == 3  # tracking failing did not fail the run
    archives = comet_archives(tmp_path / "comet")
    assert len(archives) == 3  # two family searches and the evaluation
    for family in ("logistic_regression", "lightgbm"):
        kept = next(a for a in archives.values() if a["params"].get("family") == family)
        assert kept["metrics"]["best_valid_fbeta"] and kept["others"]["status"] == "ok"  # logged last: all kept
        assert "Comet online failed (ConnectionError: Connection reset by peer" in next(
            c.tracking for c in report.candidates if c.family == family)
    evaluation = next(a for name, a in archives.items() if name.endswith("-evaluation"))
    assert evaluation["metrics"]["test_fbeta"] and "Comet online failed" in report.tracking
    cli.print_summary(report)
    out = capsys.readouterr().out
    assert "Tracking: Comet online failed for 3 of 3 experiments; nothing was lost" in out
    assert reporting.format_tracking(report).count("comet upload") == 3
    assert "test-key-not-real" not in out + Path(report.run_dir, "report.json").read_text()


def test_without_failures_the_summary_says_nothing_about_tracking(tmp_path):
    from tasks import reporting
    from tasks.ml.results import Candidate, EvalReport, GateDecision

    gate = GateDecision(metric="fbeta", direction="maximize", threshold=0.5, test_value=0.9, passed=True, reason="ok")
    report = EvalReport(run_id="r", run_dir=str(tmp_path), champion="lr", metric="fbeta", champion_valid=0.9,
                        test_metrics={}, confusion=[], gate=gate, registered=True,
                        candidates=[Candidate(family="lr", tracking="Comet offline experiment lr: a.zip")],
                        tracking="Comet offline experiment evaluate: b.zip")
    assert reporting.format_tracking(report) is None


def test_a_stale_staging_folder_is_left_alone_while_young(tmp_path):
    root = tmp_path / "registry"
    young = root / "m" / ".staging-someone-else-writing"
    young.mkdir(parents=True)
    registry.register_model(root, "m", {"w": 1}, meta())
    assert young.exists()  # another process may be writing it right now
    old = time.time() - registry.STALE_STAGING_S - 60
    os.utime(young, (old, old))
    registry.register_model(root, "m", {"w": 2}, meta())
    assert not young.exists()
