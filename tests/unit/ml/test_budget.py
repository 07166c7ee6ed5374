"""Time limits of a search: a family's cap and its share of the whole-search budget."""

from __future__ import annotations

import optuna
import pytest

from tasks.ml.budget import SearchBudget, TimeLimits, raise_hint, stop_note
from tasks.ml.search import SearchSettings, optimize_within_budget


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_budget_is_shared_by_expected_cost_and_unused_time_is_handed_on():
    clock = Clock()
    budget = SearchBudget(100, {"rf": 3.0, "lr": 1.0}, parallel=1, clock=clock)
    assert budget.allotted == pytest.approx({"rf": 75.0, "lr": 25.0})
    budget.begin("lr")
    clock.now = 5.0
    budget.end("lr")  # 20 s of its 25 s unused: rf gets them
    budget.begin("rf")
    assert budget.allotted["rf"] == pytest.approx(95.0)
    assert budget.share_left("rf") == pytest.approx(95.0)
    clock.now = 99.0
    assert budget.share_left("rf") == pytest.approx(1.0)  # its share and the budget's end agree here
    clock.now = 100.0
    assert budget.share_left("rf") <= 0


def test_no_family_searches_past_the_budget_s_end_even_with_its_share_left():
    clock = Clock()
    budget = SearchBudget(60, {"a": 1.0, "b": 1.0}, parallel=2, clock=clock)  # 120 family-seconds
    assert budget.allotted == pytest.approx({"a": 60.0, "b": 60.0})  # capped at the budget
    clock.now = 50.0
    budget.begin("b")  # starts late: its share outlasts the budget
    assert budget.share_left("b") == pytest.approx(10.0)


def test_the_budget_follows_the_seconds_per_trial_each_family_measures():
    clock = Clock()
    # The prior says rf costs 3x lr; the trials say lr is the slow one here.
    budget = SearchBudget(100, {"rf": 3.0, "lr": 1.0}, parallel=2, clock=clock)
    assert budget.allotted == pytest.approx({"rf": 100.0, "lr": 50.0})
    rf, lr = TimeLimits("rf", budget=budget, clock=clock), TimeLimits("lr", budget=budget, clock=clock)
    clock.now = 10.0
    rf.trial_ended(1.0, trials_left=10)  # needs 10 s more
    lr.trial_ended(10.0, trials_left=9)  # needs 90 s more
    assert budget.need == pytest.approx({"rf": 10.0, "lr": 90.0})
    left = {f: budget.share_left(f) for f in ("rf", "lr")}
    assert left["lr"] == pytest.approx(90.0)  # of the 130 s both have left, by need: 13 and 117, capped at 90 s
    assert left["rf"] == pytest.approx(13.0)
    assert left["lr"] / left["rf"] > 5  # no longer the prior's 1:3
    lr.trial_ended(4.0, trials_left=8)  # the pace is a running mean of the last trials: 7 s x 8
    assert budget.need["lr"] == pytest.approx(56.0)


def test_time_limits_name_the_limit_that_stopped_the_family():
    clock = Clock()
    limits = TimeLimits("rf", timeout_s=10, clock=clock)
    assert limits.reached() is None
    clock.now = 10.0
    assert limits.reached() == "timeout_s" and limits.stopped_by == "timeout_s"
    budget = SearchBudget(5, {"rf": 1.0}, clock=clock)
    limits = TimeLimits("rf", timeout_s=None, budget=budget, clock=clock)
    clock.now = 15.0
    assert limits.reached() == "time budget"
    assert stop_note("time budget", 10, 50) == "stopped: time budget, 10/50 trials"
    assert raise_hint("timeout_s", "rf") == "models.rf.timeout_s"
    assert raise_hint("time budget", "rf") == "search.time_budget_s"


def test_a_spent_budget_still_lets_a_family_complete_one_trial():
    clock = Clock()
    budget = SearchBudget(1, {"late": 1.0}, clock=clock)
    clock.now = 2.0  # over before the family began
    limits = TimeLimits("late", budget=budget, clock=clock)
    study = optuna.create_study(direction="maximize")
    settings = SearchSettings(metric="fbeta", direction="maximize", n_trials=20)
    ran = optimize_within_budget(study, lambda t: t.suggest_float("x", 0, 1), settings, limits=limits)
    assert ran == 1 and limits.stopped_by == "time budget"


def test_without_limits_every_trial_runs():
    study = optuna.create_study(direction="maximize")
    settings = SearchSettings(metric="fbeta", direction="maximize", n_trials=7)
    limits = TimeLimits("x")
    assert optimize_within_budget(study, lambda t: t.suggest_float("x", 0, 1), settings, limits=limits) == 7
    assert limits.stopped_by is None
