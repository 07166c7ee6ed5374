"""Typed results that cross task and flow boundaries (plain values and paths only)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Candidate(BaseModel):
    """The outcome of one family's search: its best model and how it scored on validation."""

    model_config = ConfigDict(frozen=True)

    family: str
    status: Literal["ok", "failed"] = "ok"
    error: str | None = None
    metric: str = "fbeta"
    best_params: dict[str, Any] = Field(default_factory=dict)
    valid_metrics: dict[str, float] = Field(default_factory=dict)
    n_trials: int = 0  # trials run in this search (complete + pruned + failed)
    n_complete: int = 0
    n_pruned: int = 0
    best_trial: int | None = None
    best_iteration: int | None = None
    fit_seconds: float = 0.0  # final refit of the best parameters
    search_seconds: float = 0.0  # the whole search, refit included
    pipeline_path: str | None = None
    pipeline_sha256: str | None = None
    study_name: str | None = None
    tracking_key: str | None = None
    tracking: str | None = None  # where the family's experiment went (online, or an archive and why)
    tracking_archive: str | None = None  # its offline archive, when it went offline
    resources: dict[str, Any] = Field(default_factory=dict)  # the search's wall/CPU seconds, peak RSS (monitoring)
    selection: str = "the valid split"  # what valid_metrics were measured on
    train_rows: int | None = None  # training rows of the final model, before resampling
    reused_from: str | None = None  # the earlier run whose identical finished search this reuses
    train_rows_fitted: int | None = None  # after resampling (more with smote/random_over, fewer with random_under)
    stopped: str | None = None  # a time limit ended the search early: "stopped: time budget, 10/50 trials"
    # The best trial fitted again at a lower learning rate, kept as better on valid: both rates, both rounds,
    # both validation scores (search.refine_learning_rate).
    refined: dict[str, Any] | None = None
    # CV modes: the best parameters' out-of-fold predictions (an .npz of rows and predictions), on which
    # the greedy ensemble's weights are chosen; oof_rows: the rows the folds split (train, or train+valid).
    oof_path: str | None = None
    oof_rows: str | None = None
    trial_rows: int | None = None  # its trials fitted this many sampled train rows (FamilySpec.trial_rows)

    @classmethod
    def failed(cls, family: str, error: str, **extra: Any) -> Candidate:
        return cls(family=family, status="failed", error=error, **extra)


class GateDecision(BaseModel):
    model_config = ConfigDict(frozen=True)

    metric: str
    direction: Literal["maximize", "minimize"]
    threshold: float
    test_value: float
    passed: bool
    reason: str
    incumbent_version: int | None = None  # the registered champion it was compared with
    incumbent_value: float | None = None  # that champion's metric on this run's test split
    min_improvement: float = 0.0  # how much better than the incumbent the challenger must be
    improvement: float | None = None  # the challenger's lead over the incumbent (positive: better)


class EvalReport(BaseModel):
    """What the evaluation decided: the champion, its test metrics, the gate and the registry."""

    run_id: str
    run_dir: str
    evaluation: str | None = None  # a re-evaluation's record under run_dir/evaluations/ (None: the run's own)
    champion: str
    metric: str
    champion_valid: float
    test_metrics: dict[str, float]
    confusion: list[dict[str, Any]]
    gate: GateDecision
    registered: bool
    registry_version: int | None = None
    previous_champion_version: int | None = None
    registry_note: str | None = None  # why a champion that passed added no version
    candidates: list[Candidate]
    tracking_key: str | None = None
    tracking: str | None = None  # where the evaluation's experiment went (online, or an archive and why)
    tracking_archives: list[str] = Field(default_factory=list)  # every offline archive of the run
    stages: dict[str, dict[str, Any]] = Field(default_factory=dict)  # per stage: wall/CPU seconds, peak RSS
    reports: dict[str, str] = Field(default_factory=dict)
    intervals: dict[str, tuple[float, float]] = Field(default_factory=dict)  # bootstrap 95% on test
    calibration: str = "none"
    decision_threshold: float | None = None  # binary: tuned on validation; None: argmax
    fairness: dict[str, dict[str, float]] = Field(default_factory=dict)  # column -> the two differences
    task: str = "binary"  # binary | multiclass | regression
    prediction_interval: dict[str, float] | None = None  # regression: coverage asked, half_width, test_coverage

    def leaderboard(self) -> list[dict[str, Any]]:
        """One row per family, the best validation score first, failed families last."""
        direction = self.gate.direction
        ok = [c for c in self.candidates if c.status == "ok"]
        ok.sort(key=lambda c: c.valid_metrics.get(self.metric, float("nan")), reverse=direction == "maximize")
        ok.sort(key=lambda c: c.family != self.champion)  # stable: the champion first, even on a tie
        ensemble = next((c for c in ok if c.family == "ensemble"), None)
        weights = ensemble.best_params.get("weights", {}) if ensemble is not None else {}
        rows = []
        for cand in ok + [c for c in self.candidates if c.status != "ok"]:
            rows.append(
                {
                    "family": cand.family,
                    "status": cand.status,
                    "state": cand.stopped or ("done" if cand.status == "ok" else "failed"),
                    f"valid_{self.metric}": cand.valid_metrics.get(self.metric),
                    "trials": cand.n_trials,
                    "pruned": cand.n_pruned,
                    "seconds": round(cand.search_seconds, 1),
                    "cpu_s": cand.resources.get("cpu_s"),
                    "peak_mb": cand.resources.get("peak_rss_mb"),
                    "champion": cand.family == self.champion,
                    # its share of the greedy ensemble (None: no such ensemble, or the ensemble's own row)
                    "ensemble_weight": weights.get(cand.family, 0.0 if weights else None) if cand is not ensemble
                    else None,
                    "error": cand.error,
                }
            )
        return rows
