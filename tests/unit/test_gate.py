"""The deployment gate: threshold, then the registered champion on the new test split."""

from __future__ import annotations


def test_gate_compares_with_the_current_champion():
    from tasks.ml.gate import decide_gate

    first = decide_gate("fbeta", "maximize", 0.7, 0.9)
    assert first.passed and "no current champion" in first.reason
    weaker = decide_gate("fbeta", "maximize", 0.7, 0.85, incumbent_version=3, incumbent_value=0.9)
    assert not weaker.passed and "current champion (version 3) scores 0.9000" in weaker.reason
    equal = decide_gate("fbeta", "maximize", 0.7, 0.9, incumbent_version=3, incumbent_value=0.9)
    assert equal.passed and "not worse than the current champion" in equal.reason
    lower_is_better = decide_gate("log_loss", "minimize", 0.5, 0.2, incumbent_version=1, incumbent_value=0.25)
    assert lower_is_better.passed
    incompatible = decide_gate("fbeta", "maximize", 0.7, 0.9, incumbent_version=1,
                               incumbent_problem="the current champion (version 1) predicts 'y'")
    assert not incompatible.passed and "predicts 'y'" in incompatible.reason
    below = decide_gate("fbeta", "maximize", 0.7, 0.6, incumbent_version=1, incumbent_value=0.5)
    assert not below.passed and "does not satisfy >= 0.7" in below.reason


def test_gate_margin_and_fairness_limit():
    from tasks.ml.gate import decide_gate

    close = decide_gate("fbeta", "maximize", 0.7, 0.88, incumbent_version=2, incumbent_value=0.9, margin=0.05)
    assert close.passed and "margin 0.05" in close.reason and close.margin == 0.05
    far = decide_gate("fbeta", "maximize", 0.7, 0.80, incumbent_version=2, incumbent_value=0.9, margin=0.05)
    assert not far.passed and "better than this challenger's 0.8000" in far.reason
    loss = decide_gate("log_loss", "minimize", 1.0, 0.32, incumbent_version=1, incumbent_value=0.30, margin=0.05)
    assert loss.passed
    unfair = decide_gate("fbeta", "maximize", 0.7, 0.9, fairness_problem="demographic parity difference on 'sex' is 0.2")
    assert not unfair.passed and "demographic parity difference on 'sex'" in unfair.reason
