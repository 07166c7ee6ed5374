"""The cores a run's family searches share as they end."""

from __future__ import annotations

import itertools

from tasks.ml.planning import CoreShare


def test_the_last_family_searching_gets_every_core(tmp_path):
    families = ["random_forest", "lightgbm", "xgboost", "logistic_regression"]
    share = CoreShare(tmp_path / "ended", families, cores=16, parallel=4)
    assert share.threads() == 4 and share.searching() == 4
    share.end("lightgbm")
    share.end("xgboost")
    assert share.threads() == 8
    share.end("logistic_regression")
    assert (share.searching(), share.threads()) == (1, 16)
    share.begin("xgboost")  # searched again (a cached search whose files were gone)
    assert share.threads() == 8
    two = CoreShare(tmp_path / "other", families, cores=2, parallel=2)
    assert [two.threads(n) for n in (4, 3, 2, 1)] == [1, 1, 1, 2]


def test_families_searching_at_once_never_use_more_than_the_cores(tmp_path):
    for cores, parallel, searching in itertools.product(range(1, 17), range(1, 6), range(0, 6)):
        share = CoreShare(tmp_path, ["a"], cores=cores, parallel=parallel)
        running = min(parallel, searching)
        assert share.threads(searching) >= 1
        assert running * share.threads(searching) <= max(cores, running)  # one thread each at the least


def test_a_share_of_cores_goes_to_parallel_trials_or_to_threads_by_family():
    from tasks.ml.estimators import get_family
    from tasks.ml.search import MAX_PARALLEL_TRIALS, TrialSlots, trial_slots

    booster, forest = get_family("lightgbm"), get_family("random_forest")
    assert trial_slots(booster, 1, 2) == TrialSlots(1, 1, 2)
    assert trial_slots(booster, 2, 1, owed=5) == TrialSlots(1, 2, 1)
    assert trial_slots(booster, 2, 1, owed=1) == TrialSlots(2, 1, 1)  # the last trial owed: every core on it
    assert trial_slots(booster, 16, 1, owed=20) == TrialSlots(16 // MAX_PARALLEL_TRIALS, MAX_PARALLEL_TRIALS, 1)
    assert trial_slots(forest, 2, 1, owed=5) == TrialSlots(2, 1, 1)  # a forest's trees take the threads


def test_parallel_trials_run_at_once_and_never_overshoot_the_budget():
    """Each trial waits at a barrier for a second one: the search only completes when two run at once."""
    import threading

    import optuna

    from tasks.ml.search import SearchSettings, TrialSlots, optimize_within_budget

    barrier = threading.Barrier(2, timeout=30)
    seen = []

    def objective(trial, slot):
        seen.append(slot)
        barrier.wait()
        return trial.suggest_float("x", 0, 1)

    study = optuna.create_study(direction="maximize")
    settings = SearchSettings(metric="fbeta", direction="maximize", n_trials=6)
    ran = optimize_within_budget(study, objective, settings, slots=lambda owed: TrialSlots(1, 2, 1))
    states = [t.state for t in study.trials]
    assert ran == 6 and states == [optuna.trial.TrialState.COMPLETE] * 6, states
    assert seen == [TrialSlots(1, 2, 1)] * 6


def test_a_running_trial_is_offered_the_cores_another_family_freed():
    """One trial at a time (the default): while it runs, the family's share grows from 1 core to 2 (another
    family ended); the running fit is offered both. While a trial may still start, it is offered nothing new."""
    import time

    import optuna

    from tasks.ml.search import SearchSettings, TrialSlots, optimize_within_budget

    share = [1]
    offered = []

    def objective(trial, slot):
        share[0] = 2  # the other family ends now
        deadline = time.monotonic() + 10
        while slot.threads_now() != 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        offered.append(slot.threads_now())
        return trial.suggest_float("x", 0, 1)

    study = optuna.create_study(direction="maximize")
    settings = SearchSettings(metric="fbeta", direction="maximize", n_trials=2)
    optimize_within_budget(study, objective, settings, slots=lambda owed: TrialSlots(share[0], 1, 1))
    assert offered == [2, 2] and len(study.trials) == 2


def test_a_family_ended_in_another_process_is_seen_at_the_next_read(tmp_path, monkeypatch):
    """Markers are read at most every ENDED_READ_S (each read is a system call that lets go of the GIL);
    ends in this process are seen at once, another process's marker at the next read."""
    from tasks.ml import planning

    families = ["lightgbm", "xgboost"]
    share = CoreShare(tmp_path, families, cores=2, parallel=2)
    assert share.searching() == 2
    (tmp_path / "xgboost").touch()  # another process's search ended
    monkeypatch.setattr(planning, "ENDED_READ_S", 0.0)
    assert (share.searching(), share.threads()) == (1, 2)
    monkeypatch.setattr(planning, "ENDED_READ_S", 3600.0)
    CoreShare(tmp_path, families, cores=2, parallel=2).begin("xgboost")  # this process: seen at once
    assert share.searching() == 2
