"""Per-stage wall time, CPU time and peak memory (tasks/monitoring.py)."""

from __future__ import annotations

import logging
import time

import numpy as np

from tasks import monitoring


def test_a_stage_records_its_wall_cpu_and_peak_memory():
    with monitoring.measure("allocate") as usage:
        block = np.ones(40_000_000)  # 305 MB, touched
        time.sleep(0.15)  # the sampler sees it
        del block
        busy = time.process_time()
        while time.process_time() - busy < 0.1:
            pass
    record = usage.record
    assert record["wall_s"] >= 0.25 and record["cpu_s"] >= 0.1
    assert record["peak_rss_mb"] >= record["rss_start_mb"] + 250  # the block, gone by the end
    assert record["rss_end_mb"] < record["peak_rss_mb"] - 200
    assert "memory_warning" not in record


def test_a_stage_near_the_machines_memory_is_warned_about_with_advice(monkeypatch, caplog):
    monkeypatch.setattr(monitoring, "available_bytes", lambda: 10 * 2**20)  # a machine with 10 MB left
    with caplog.at_level(logging.WARNING, logger="gauntlet.monitoring"):
        with monitoring.measure("search xgboost") as usage:
            block = np.ones(5_000_000)  # 38 MB: more than the machine had for it
            time.sleep(0.1)
            del block
        with monitoring.measure("evaluate") as other:
            pass
    assert usage.record["memory_warning"].startswith("stage search xgboost peaked at ")
    assert "to use less: fewer families at once (search.parallelism: 1)" in usage.record["memory_warning"]
    assert "a sample of the rows (data.sample_rows)" in usage.record["memory_warning"]
    assert "set evaluation.explain: false" in other.record["memory_warning"]
    assert "stage search xgboost peaked at" in caplog.text


def test_stop_twice_and_a_stage_ended_by_an_error_still_record():
    usage = monitoring.start("x")
    first = monitoring.stop(usage)
    assert monitoring.stop(usage) is first and first["wall_s"] >= 0
    try:
        with monitoring.measure("failing") as failing:
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert failing.record["peak_rss_mb"] > 0


def test_stages_format_as_an_aligned_table():
    text = monitoring.format_stages({"load_dataset": {"wall_s": 0.21, "cpu_s": 0.2, "peak_rss_mb": 310.4},
                                     "search lightgbm": {"wall_s": 12.0, "cpu_s": 20.5, "peak_rss_mb": 1520.0}})
    lines = text.splitlines()
    assert lines[0].split() == ["stage", "wall", "s", "cpu", "s", "peak", "MB"]
    assert lines[2].split() == ["load_dataset", "0.2", "0.2", "310"]
    assert lines[3].split() == ["search", "lightgbm", "12.0", "20.5", "1,520"]
    assert len({len(line) for line in lines}) == 1


def test_a_family_reused_from_an_earlier_run_is_marked():
    text = monitoring.format_stages({"search xgboost": {"wall_s": 4.2, "cpu_s": 5.0, "peak_rss_mb": 404.0,
                                                        "reused_from": "20261123-130034-5a7f66-breast_cancer"}})
    assert text.splitlines()[2].startswith("search xgboost (reused: earlier run)")
