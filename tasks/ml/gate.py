"""The deployment gate: a pure decision on the champion's test metric and the current champion's."""

from __future__ import annotations

import math

from tasks.ml.metrics import passes_gate
from tasks.ml.results import GateDecision


def decide_gate(
    metric: str, direction: str, threshold: float, value: float,
    incumbent_version: int | None = None, incumbent_value: float | None = None, incumbent_problem: str | None = None,
    min_improvement: float = 0.0, fairness_problem: str | None = None, registered_as: int | None = None,
) -> GateDecision:
    """Pass when the test metric clears the threshold, the fairness limit holds, and the challenger
    beats the current champion, on the same test rows, by more than `min_improvement` (a tie keeps
    the champion). `registered_as`: the version this run already registered (a re-evaluation adds none)."""
    op = ">=" if direction == "maximize" else "<="
    clears = f"test {metric} {value:.4f} {op} threshold {threshold}"
    improvement = None
    if incumbent_value is not None and not math.isnan(incumbent_value) and not math.isnan(value):
        improvement = value - incumbent_value if direction == "maximize" else incumbent_value - value
    if registered_as is not None:
        passed, reason = False, f"this run is already registered as version {registered_as}; no new version"
    elif not passes_gate(value, threshold, direction):
        passed, reason = False, f"test {metric} {value:.4f} does not satisfy {op} {threshold}"
    elif fairness_problem is not None:
        passed, reason = False, f"{clears}, but {fairness_problem}"
    elif incumbent_version is None:
        passed, reason = True, f"{clears}; no current champion"
    elif incumbent_problem is not None:
        passed, reason = False, f"{clears}, but {incumbent_problem}"
    elif improvement is None or improvement <= min_improvement:
        shown = f"{improvement:+.4f}" if improvement is not None else "not comparable"
        passed, reason = False, (
            f"champion stays at v{incumbent_version}: challenger {shown} <= min_improvement {min_improvement} "
            f"({metric} {value:.4f} against the champion's {incumbent_value:.4f} on this run's test split)"
        )
    else:
        passed, reason = True, (
            f"{clears}; beats the champion v{incumbent_version} by {improvement:+.4f} > min_improvement "
            f"{min_improvement} ({incumbent_value:.4f} on this run's test split)"
        )
    return GateDecision(metric=metric, direction=direction, threshold=threshold, test_value=value,
                        passed=passed, reason=reason, incumbent_version=incumbent_version,
                        incumbent_value=incumbent_value, min_improvement=min_improvement,
                        improvement=improvement)
