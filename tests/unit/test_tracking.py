"""Comet offline, for real: archives written by concurrent searches are complete and readable."""

from __future__ import annotations

import threading

import pandas as pd

from config.schema import TrackingConfig
from tasks.tracking import NullTracker, start_tracker
from tests.helpers import comet_archives, comet_cloud_stand_in


def test_concurrent_trackers_each_write_a_complete_archive(tmp_path):
    """Comet allows one live experiment per process; four threads at once must not corrupt each other."""
    trackers = {}

    def search(family: str) -> None:
        tracker = start_tracker(TrackingConfig(), tmp_path, name=family, tags=["test"])
        trackers[family] = tracker
        tracker.log_params({"family": family})
        for step in range(5):
            tracker.log_params({"C": step * 0.1}, step=step)
            tracker.log_metrics({"valid_fbeta": 0.5 + step / 10}, step=step)
        tracker.log_table("trials.csv", pd.DataFrame({"number": range(5)}))
        tracker.log_other("status", "ok")
        tracker.end()

    threads = [threading.Thread(target=search, args=(f"family{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    archives = comet_archives(tmp_path)
    assert sorted(archives) == [f"family{i}" for i in range(4)]
    for name, exp in archives.items():
        assert exp["file"] == trackers[name].archive and exp["file"].stem == f"{name}-{trackers[name].key[:8]}"
        assert [s for s, _ in exp["metrics"]["valid_fbeta"]] == [0, 1, 2, 3, 4]
        assert exp["params"]["family"] == name and exp["others"]["status"] == "ok"
        assert ("dataframe", "trials.csv") in exp["uploads"]


def test_tracking_failure_never_fails_the_run(tmp_path, caplog):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the offline folder should be")
    tracker = start_tracker(TrackingConfig(), blocker, name="x")
    tracker.log_metrics({"a": 1.0})
    tracker.end()  # must not raise
    assert tracker.archive is None
    assert "could not be written" in caplog.text


def test_backend_none_is_a_no_op(tmp_path):
    tracker = start_tracker(TrackingConfig(backend="none"), tmp_path, name="x")
    assert isinstance(tracker, NullTracker)
    tracker.log_metrics({"a": 1.0})
    tracker.end()
    assert list(tmp_path.iterdir()) == []


def test_with_a_key_experiments_go_online(tmp_path, monkeypatch):
    import comet_ml

    cloud, made = comet_cloud_stand_in(tmp_path / "cloud")
    monkeypatch.setenv("COMET_API_KEY", "test-key-not-real")
    monkeypatch.setattr(comet_ml, "Experiment", cloud)
    tracker = start_tracker(TrackingConfig(project="p"), tmp_path / "offline", name="run-x")
    tracker.log_metrics({"valid_fbeta": 0.9}, step=0)
    tracker.log_params({"family": "lr"})
    tracker.end()
    (exp,) = made
    assert exp.api_key_given == "test-key-not-real" and exp.get_key() == tracker.key
    assert ("log_metrics", ({"valid_fbeta": 0.9},), {"step": 0}) in exp.calls
    sent = comet_archives(tmp_path / "cloud")["run-x"]  # what reached the (stand-in) cloud
    assert sent["metrics"]["valid_fbeta"] == [(0, 0.9)] and sent["params"]["family"] == "lr"
    assert tracker.mode == "online" and not (tmp_path / "offline").exists()


def test_unreachable_comet_falls_back_to_an_offline_archive(tmp_path, monkeypatch, caplog):
    import comet_ml

    monkeypatch.setenv("COMET_API_KEY", "test-key-not-real")
    monkeypatch.setattr(comet_ml, "Experiment", comet_cloud_stand_in(tmp_path / "cloud", alive=False)[0])
    tracker = start_tracker(TrackingConfig(), tmp_path / "offline", name="run-y")
    tracker.log_metrics({"valid_fbeta": 0.8}, step=3)
    tracker.end()
    assert tracker.mode == "offline" and tracker.archive is not None
    archive = comet_archives(tmp_path / "offline")["run-y"]
    assert archive["metrics"]["valid_fbeta"] == [(3, 0.8)]
    assert "writing run-y offline" in caplog.text


def test_online_start_is_retried_with_backoff_before_going_offline(tmp_path, monkeypatch):
    import comet_ml

    from tasks import tracking

    attempts = []

    def flaky(**kwargs):
        attempts.append(kwargs)
        if len(attempts) < 3:
            raise ConnectionError("network is unreachable")
        return comet_cloud_stand_in(tmp_path / "cloud")[0](**kwargs)

    monkeypatch.setenv("COMET_API_KEY", "test-key-not-real")
    monkeypatch.setattr(comet_ml, "Experiment", flaky)
    monkeypatch.setattr(tracking, "ONLINE_RETRY_PAUSES_S", (0.01, 0.02))
    tracker = start_tracker(TrackingConfig(), tmp_path / "offline", name="run-z")
    tracker.end()
    assert len(attempts) == 3 and tracker.mode == "online"  # the third attempt got through

    attempts.clear()
    monkeypatch.setattr(comet_ml, "Experiment", lambda **kw: (_ for _ in ()).throw(ConnectionError("down")))
    tracker = start_tracker(TrackingConfig(), tmp_path / "offline", name="run-w")
    tracker.log_metrics({"a": 1.0}, step=0)
    tracker.end()
    assert tracker.mode == "offline" and comet_archives(tmp_path / "offline")["run-w"]["metrics"]["a"] == [(0, 1.0)]


def test_online_champions_go_to_comets_model_registry_offline_ones_stay_local(tmp_path, monkeypatch):
    import comet_ml

    cloud, made = comet_cloud_stand_in(tmp_path / "cloud")
    monkeypatch.setenv("COMET_API_KEY", "test-key-not-real")
    monkeypatch.setattr(comet_ml, "Experiment", cloud)
    model = tmp_path / "model.pkl"
    model.write_bytes(b"pickled model")
    tracker = start_tracker(TrackingConfig(), tmp_path / "offline", name="run-eval")
    tracker.log_model("adult-income", model)
    tracker.register_model("adult-income", 3, tags=["xgboost", "champion"], description="gate passed")
    tracker.end()
    (exp,) = made
    assert ("log_model", ("adult-income", str(model)), {}) in exp.calls
    assert ("register_model", ("adult-income",),
            {"version": "3.0.0", "tags": ["xgboost", "champion"], "description": "gate passed"}) in exp.calls
    assert ("model-element", "model.pkl") in comet_archives(tmp_path / "cloud")["run-eval"]["uploads"]

    monkeypatch.delenv("COMET_API_KEY")
    offline = start_tracker(TrackingConfig(), tmp_path / "offline", name="run-eval-offline")
    offline.log_model("adult-income", model)
    offline.register_model("adult-income", 4, tags=["champion"])
    offline.end()  # an offline archive cannot register: the call is skipped, the archive is written
    archive = comet_archives(tmp_path / "offline")["run-eval-offline"]
    assert ("model-element", "model.pkl") in archive["uploads"]


def test_large_model_files_are_logged_by_reference(tmp_path, monkeypatch):
    """A model file over the limit goes into the experiment as a remote model (URI, size, sha256),
    not as a copy; smaller ones are uploaded as before."""
    import json
    import zipfile

    from tasks import tracking
    from tasks.modeling import file_sha256

    monkeypatch.setattr(tracking, "MODEL_FILE_LIMIT_BYTES", 1000)
    small, large = tmp_path / "small.pkl", tmp_path / "large.pkl"
    small.write_bytes(b"s" * 1000)
    large.write_bytes(b"l" * 1001)
    tracker = start_tracker(TrackingConfig(), tmp_path / "offline", name="run-big")
    tracker.log_model("lr", small)
    tracker.log_model("forest", large)
    tracker.end()
    assert ("model-element", "small.pkl") in comet_archives(tmp_path / "offline")["run-big"]["uploads"]
    with zipfile.ZipFile(tracker.archive) as zf:
        names = zf.namelist()
        messages = [json.loads(line) for line in zf.read("messages.json").decode().splitlines() if line]
    assert not any("large" in n for n in names)  # no copy of the large file in the archive
    (remote,) = [m["payload"] for m in messages if m["type"] == "remote_model"]
    (asset,) = remote["remote_assets"]
    assert remote["model_name"] == "forest" and asset["remoteUrl"] == large.resolve().as_uri()
    assert json.loads(asset["metadata"]) == {"bytes": 1001, "sha256": file_sha256(large),
                                             "logged_as": "reference (large file)"}


def test_old_runs_archives_are_pruned_when_asked(tmp_path):
    import os

    from tasks.tracking import offline_archives, prune_offline_archives

    for i, run in enumerate(["20260101-000000-aaaaaa", "20260102-000000-bbbbbb", "20260103-000000-cccccc"]):
        tracker = start_tracker(TrackingConfig(), tmp_path / run, name=f"{run}-lr")
        tracker.log_metrics({"a": 1.0})
        tracker.end()
        os.utime(tmp_path / run, (1_000_000 + i, 1_000_000 + i))
    assert len(offline_archives(tmp_path)) == 3 and prune_offline_archives(tmp_path, None) == []
    removed = prune_offline_archives(tmp_path, 2)
    assert [p.name for p in removed] == ["20260101-000000-aaaaaa"]
    assert [p.parent.name for p in offline_archives(tmp_path)] == ["20260102-000000-bbbbbb", "20260103-000000-cccccc"]
    assert offline_archives(tmp_path, "20260103-000000-cccccc")[0].name.startswith("20260103-000000-cccccc-lr-")


def test_gauntlet_tracking_lists_the_archives_and_upload_needs_a_key(tmp_path, monkeypatch, capsys):
    from gauntlet.cli import main

    tracker = start_tracker(TrackingConfig(), tmp_path / "20260101-000000-aaaaaa", name="20260101-000000-aaaaaa-lr")
    tracker.log_metrics({"a": 1.0})
    tracker.end()
    assert main(["tracking", "list", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert str(tracker.archive) in out and "not uploaded" in out and "1 offline archive(s)" in out
    monkeypatch.delenv("COMET_API_KEY", raising=False)
    assert main(["tracking", "upload", "--dir", str(tmp_path)]) == 2
    assert "uploading needs COMET_API_KEY" in capsys.readouterr().err
