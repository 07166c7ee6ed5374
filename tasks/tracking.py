"""Experiment tracking behind a small `Tracker` protocol: Comet (online or offline) or nothing.

A tracker is created and ended inside one flow run; it never crosses a task boundary. Without
COMET_API_KEY (mode auto) Comet runs offline and writes `<offline_dir>/<experiment key>.zip`,
with no network attempt. An online experiment that cannot reach Comet falls back to offline, so
a run is never lost to the network.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from config.schema import TrackingConfig

log = logging.getLogger("gauntlet.tracking")


class Tracker(Protocol):
    key: str | None
    mode: str  # "online" | "offline" | "none"
    archive: Path | None  # offline: the zip written by end()

    def log_params(self, params: dict[str, Any], step: int | None = None) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_other(self, key: str, value: Any) -> None: ...
    def log_artifact(self, path: str | Path, name: str | None = None) -> None: ...
    def log_model(self, name: str, path: str | Path) -> None: ...
    def log_figure(self, name: str, figure: Any) -> None: ...
    def log_table(self, name: str, frame: pd.DataFrame) -> None: ...
    def log_confusion_matrix(self, y_true: Any, y_pred: Any, labels: list[str]) -> None: ...
    def end(self) -> None: ...


class NullTracker:
    """Tracking switched off (tracking.backend: none)."""

    key = None
    mode = "none"
    archive = None

    def log_params(self, params: dict[str, Any], step: int | None = None) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_other(self, key: str, value: Any) -> None: ...
    def log_artifact(self, path: str | Path, name: str | None = None) -> None: ...
    def log_model(self, name: str, path: str | Path) -> None: ...
    def log_figure(self, name: str, figure: Any) -> None: ...
    def log_table(self, name: str, frame: pd.DataFrame) -> None: ...
    def log_confusion_matrix(self, y_true: Any, y_pred: Any, labels: list[str]) -> None: ...
    def end(self) -> None: ...


_QUIET = dict(
    log_code=False,
    log_graph=False,
    parse_args=False,
    auto_param_logging=False,
    auto_metric_logging=False,
    auto_output_logging=None,
    log_env_details=False,
    log_env_gpu=False,
    log_env_host=False,
    log_env_cpu=False,
    log_env_network=False,
    log_env_disk=False,
    log_git_metadata=False,
    log_git_patch=False,
    display_summary_level=0,
)


class CometTracker:
    def __init__(self, experiment: Any, mode: str, offline_dir: Path | None) -> None:
        self._exp = experiment
        self.mode = mode
        self.key = experiment.get_key()
        self._offline_dir = offline_dir
        self.archive: Path | None = None

    def log_params(self, params: dict[str, Any], step: int | None = None) -> None:
        self._exp.log_parameters({k: _plain(v) for k, v in params.items()}, step=step)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._exp.log_metrics({k: float(v) for k, v in metrics.items() if v is not None}, step=step)

    def log_other(self, key: str, value: Any) -> None:
        self._exp.log_other(key, _plain(value))

    def log_artifact(self, path: str | Path, name: str | None = None) -> None:
        self._exp.log_asset(str(path), file_name=name or Path(path).name)

    def log_model(self, name: str, path: str | Path) -> None:
        self._exp.log_model(name, str(path))

    def log_figure(self, name: str, figure: Any) -> None:
        self._exp.log_figure(figure_name=name, figure=figure)

    def log_table(self, name: str, frame: pd.DataFrame) -> None:
        self._exp.log_table(name, tabular_data=frame)

    def log_confusion_matrix(self, y_true: Any, y_pred: Any, labels: list[str]) -> None:
        self._exp.log_confusion_matrix(y_true=list(y_true), y_predicted=list(y_pred), labels=labels)

    def end(self) -> None:
        self._exp.end()
        if self.mode == "offline" and self._offline_dir is not None:
            archive = self._offline_dir / f"{self.key}.zip"
            self.archive = archive if archive.is_file() else None


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return value.item() if hasattr(value, "item") else str(value)


def _offline(config: TrackingConfig, offline_dir: Path, name: str, tags: list[str]) -> CometTracker:
    import comet_ml

    offline_dir.mkdir(parents=True, exist_ok=True)
    exp = comet_ml.OfflineExperiment(
        project_name=config.project, workspace=config.workspace,
        offline_directory=str(offline_dir), **_QUIET,
    )
    exp.set_name(name)
    exp.add_tags(tags)
    return CometTracker(exp, "offline", offline_dir)


def start_tracker(
    config: TrackingConfig, offline_dir: Path, name: str, tags: list[str] | None = None
) -> Tracker:
    """Open one experiment. auto: online with COMET_API_KEY, offline without (no network, no wait)."""
    if config.backend == "none":
        return NullTracker()
    tags = list(tags or [])
    api_key = os.environ.get("COMET_API_KEY")
    online = config.mode == "online" or (config.mode == "auto" and bool(api_key))
    if not online:
        return _offline(config, Path(offline_dir), name, tags)
    import comet_ml

    try:
        exp = comet_ml.Experiment(
            api_key=api_key, project_name=config.project, workspace=config.workspace, **_QUIET
        )
        if getattr(exp, "alive", True):
            exp.set_name(name)
            exp.add_tags(tags)
            return CometTracker(exp, "online", None)
        exp.end()
        reason = "the experiment did not come alive (no network, or a wrong key)"
    except Exception as exc:  # Comet's client raises many types for network and auth problems
        reason = f"{type(exc).__name__}: {exc}"
    log.warning("Comet online is unavailable (%s); logging offline to %s instead", reason, offline_dir)
    return _offline(config, Path(offline_dir), name, tags)


def figure_to_png(figure: Any, path: Path) -> Path:
    """Save a matplotlib figure (used by reports and by log_figure callers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    return path


def scratch_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="gauntlet-"))
