"""The deployment gate: threshold, then the registered champion on the new test split."""

from __future__ import annotations

import pytest

from tasks.ml.gate import decide_gate


def test_gate_compares_with_the_current_champion():
    first = decide_gate("fbeta", "maximize", 0.7, 0.9)
    assert first.passed and "no current champion" in first.reason
    weaker = decide_gate("fbeta", "maximize", 0.7, 0.85, incumbent_version=3, incumbent_value=0.9)
    assert not weaker.passed and "champion stays at v3: challenger -0.0500" in weaker.reason
    lower_is_better = decide_gate("log_loss", "minimize", 0.5, 0.2, incumbent_version=1, incumbent_value=0.25)
    assert lower_is_better.passed and lower_is_better.improvement == pytest.approx(0.05)
    incompatible = decide_gate("fbeta", "maximize", 0.7, 0.9, incumbent_version=1,
                               incumbent_problem="the current champion (version 1) predicts 'y'")
    assert not incompatible.passed and "predicts 'y'" in incompatible.reason
    below = decide_gate("fbeta", "maximize", 0.7, 0.6, incumbent_version=1, incumbent_value=0.5)
    assert not below.passed and "does not satisfy >= 0.7" in below.reason


def test_a_tie_keeps_the_champion_and_a_win_must_clear_min_improvement():
    tie = decide_gate("fbeta", "maximize", 0.7, 0.9, incumbent_version=3, incumbent_value=0.9)
    assert not tie.passed and "challenger +0.0000 <= min_improvement 0.0" in tie.reason
    small = decide_gate("fbeta", "maximize", 0.7, 0.9004, incumbent_version=3, incumbent_value=0.9,
                        min_improvement=0.002)
    assert not small.passed
    assert small.reason.startswith("champion stays at v3: challenger +0.0004 <= min_improvement 0.002")
    win = decide_gate("fbeta", "maximize", 0.7, 0.91, incumbent_version=3, incumbent_value=0.9,
                      min_improvement=0.002)
    assert win.passed and "beats the champion v3 by +0.0100 > min_improvement 0.002" in win.reason
    loss = decide_gate("log_loss", "minimize", 1.0, 0.29, incumbent_version=1, incumbent_value=0.30,
                       min_improvement=0.02)
    assert not loss.passed and loss.min_improvement == 0.02


def test_a_registered_run_and_an_unfair_champion_are_not_registered():
    again = decide_gate("fbeta", "maximize", 0.7, 0.95, incumbent_version=1, incumbent_value=0.9, registered_as=1)
    assert not again.passed and "already registered as version 1" in again.reason
    unfair = decide_gate("fbeta", "maximize", 0.7, 0.9, fairness_problem="demographic parity difference on 'sex' is 0.2")
    assert not unfair.passed and "demographic parity difference on 'sex'" in unfair.reason


def test_the_old_margin_key_says_what_replaced_it():
    from config.schema import EvaluationConfig

    with pytest.raises(ValueError, match="champion_margin was replaced by min_improvement"):
        EvaluationConfig(champion_margin=0.1)
    assert EvaluationConfig().min_improvement > 0
