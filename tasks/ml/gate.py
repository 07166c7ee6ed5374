"""The deployment gate: a pure decision on the champion's test metric and the current champion's."""

from __future__ import annotations

from tasks.ml.metrics import is_better, passes_gate
from tasks.ml.results import GateDecision


def decide_gate(
    metric: str, direction: str, threshold: float, value: float,
    incumbent_version: int | None = None, incumbent_value: float | None = None, incumbent_problem: str | None = None,
    margin: float = 0.0, fairness_problem: str | None = None,
) -> GateDecision:
    """Pass when the test metric clears the threshold, the fairness limit holds, and the challenger
    is not worse than the current champion by more than `margin`."""
    op = ">=" if direction == "maximize" else "<="
    clears = f"test {metric} {value:.4f} {op} threshold {threshold}"
    allowance = incumbent_value if incumbent_value is None else (
        incumbent_value - margin if direction == "maximize" else incumbent_value + margin)
    worse_than = f"{incumbent_value:.4f}" if incumbent_value is not None else "-"
    if margin and incumbent_value is not None:
        worse_than += f" (margin {margin})"
    if not passes_gate(value, threshold, direction):
        passed, reason = False, f"test {metric} {value:.4f} does not satisfy {op} {threshold}"
    elif fairness_problem is not None:
        passed, reason = False, f"{clears}, but {fairness_problem}"
    elif incumbent_version is None:
        passed, reason = True, f"{clears}; no current champion"
    elif incumbent_problem is not None:
        passed, reason = False, f"{clears}, but {incumbent_problem}"
    elif is_better(allowance, value, direction):
        passed, reason = False, (
            f"{clears}, but the current champion (version {incumbent_version}) scores {worse_than} "
            f"on this run's test split, better than this challenger's {value:.4f}"
        )
    else:
        passed, reason = True, (
            f"{clears} and not worse than the current champion (version {incumbent_version}: "
            f"{worse_than} on this run's test split)"
        )
    return GateDecision(metric=metric, direction=direction, threshold=threshold, test_value=value,
                        passed=passed, reason=reason, incumbent_version=incumbent_version,
                        incumbent_value=incumbent_value, margin=margin)
