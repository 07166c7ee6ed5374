"""Experiment tracking behind a small `Tracker` protocol: Comet (online or offline) or nothing.

Without COMET_API_KEY (mode auto) Comet runs offline, writing `<offline_dir>/<name>-<key[:8]>.zip`
(callers pass `<comet_dir>/<run_id>` and a name that starts with the run id); an online experiment
that cannot reach Comet falls back to offline, so no run is lost to the network.
Two live Comet experiments in one process corrupt each other's archives and the searches run on
threads, so a `CometTracker` records its calls and replays them at `end()`, one at a time under a lock.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
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
    def log_image(self, name: str, path: str | Path) -> None: ...
    def log_table(self, name: str, frame: pd.DataFrame) -> None: ...
    def log_confusion_matrix(self, y_true: Any, y_pred: Any, labels: list[str]) -> None: ...
    def register_model(self, name: str, version: int, tags: list[str], description: str = "") -> None: ...
    def end(self) -> None: ...
    def describe(self) -> str: ...


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
    def log_image(self, name: str, path: str | Path) -> None: ...
    def log_table(self, name: str, frame: pd.DataFrame) -> None: ...
    def log_confusion_matrix(self, y_true: Any, y_pred: Any, labels: list[str]) -> None: ...
    def register_model(self, name: str, version: int, tags: list[str], description: str = "") -> None: ...
    def end(self) -> None: ...

    def describe(self) -> str:
        return "tracking is off (tracking.backend: none)"


OFFLINE_POLL_S = 0.05
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


# Comet keeps one live experiment per process: experiments are written one at a time.
_COMET_LOCK = threading.Lock()
# Pauses between attempts to open an online experiment that raised (network), before going offline.
ONLINE_RETRY_PAUSES_S: tuple[float, ...] = (2.0, 8.0)


# Model files above this are logged to Comet by reference, not copied into the experiment.
MODEL_FILE_LIMIT_BYTES = 32 * 2**20


class CometTracker:
    """Records tracking calls; `end()` writes them as one Comet experiment (online or offline).

    The key is chosen up front, so results can name their experiment before it is written.
    """

    def __init__(self, config: TrackingConfig, offline_dir: Path, name: str, tags: list[str]) -> None:
        self.config, self.offline_dir, self.name, self.tags = config, Path(offline_dir), name, tags
        self.key = uuid.uuid4().hex  # Comet accepts a caller-chosen key of 32-50 alphanumerics
        self.mode = "online" if _wants_online(config) else "offline"
        self.archive: Path | None = None
        self._calls: list[tuple[str, tuple, dict]] = []
        self._ended = False
        self.fallback: str | None = None  # why an online experiment was written offline instead

    def _record(self, method: str, *args: Any, **kwargs: Any) -> None:
        self._calls.append((method, args, kwargs))

    def log_params(self, params: dict[str, Any], step: int | None = None) -> None:
        self._record("log_parameters", {k: _plain(v) for k, v in params.items()}, step=step)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._record("log_metrics", {k: float(v) for k, v in metrics.items() if v is not None}, step=step)

    def log_other(self, key: str, value: Any) -> None:
        self._record("log_other", key, _plain(value))

    def log_artifact(self, path: str | Path, name: str | None = None) -> None:
        self._record("log_asset", str(path), file_name=name or Path(path).name)

    def log_model(self, name: str, path: str | Path) -> None:
        """The model file; one over `MODEL_FILE_LIMIT_BYTES` as a reference (file URI, size, sha256).

        The registry and the run folder hold it already, and a copy in the experiment costs memory at the peak.
        """
        path = Path(path)
        size = path.stat().st_size if path.is_file() else 0
        if size <= MODEL_FILE_LIMIT_BYTES:
            self._record("log_model", name, str(path))
            return
        from tasks.modeling import file_sha256

        self._record("log_remote_model", name, path.resolve().as_uri(), sync_mode=False,
                     metadata={"bytes": size, "sha256": file_sha256(path), "logged_as": "reference (large file)"})

    def log_image(self, name: str, path: str | Path) -> None:
        """A plot already saved as PNG (Comet's log_figure would render the figure again)."""
        self._record("log_image", str(path), name=name)

    def log_table(self, name: str, frame: pd.DataFrame) -> None:
        self._record("log_table", name, tabular_data=frame.copy())

    def log_confusion_matrix(self, y_true: Any, y_pred: Any, labels: list[str]) -> None:
        """Logged as its counts: Comet's per-row form keeps every row in Python lists."""
        from sklearn.metrics import confusion_matrix

        matrix = confusion_matrix(y_true, y_pred, labels=list(range(len(labels))))
        self._record("log_confusion_matrix", matrix=matrix.tolist(), labels=labels)

    def register_model(self, name: str, version: int, tags: list[str], description: str = "") -> None:
        """Online: register the model logged as `name` in Comet's registry as `<version>.0.0` (semver).

        Offline archives cannot register: the local registry holds the champion.
        """
        self._record("register_model", name, version=f"{version}.0.0", tags=list(tags), description=description)

    def end(self) -> None:
        """Write the experiment. Never raises: tracking must not fail a training run."""
        if self._ended:
            return
        self._ended = True
        with _COMET_LOCK:
            try:
                self._write(self._open())
            except Exception as exc:
                if self.mode != "online":  # keep the run; say what was lost
                    log.error("Comet experiment %s (%s) could not be written: %s", self.key, self.name,
                              _redact(str(exc)))
                    return
                # Comet failed mid-experiment: write it all offline (what reached Comet is in there too).
                self.fallback = _redact(f"{type(exc).__name__}: {str(exc).strip()[:300]}")
                log.warning("Comet failed while writing %s online (%s); writing it offline to %s instead",
                            self.name, self.fallback, self.offline_dir)
                self.mode = "offline"
                try:
                    self._write(self._open())
                except Exception as again:
                    log.error("Comet experiment %s (%s) could not be written: %s", self.key, self.name,
                              _redact(str(again)))
                    return
        if self.mode == "offline":
            written = self.offline_dir / f"{self.key}.zip"
            if written.is_file():  # named for people: the run and the family (comet upload reads the key inside)
                self.archive = written.rename(self.offline_dir / f"{_slug(self.name)}-{self.key[:8]}.zip")

    def _write(self, experiment: Any) -> None:
        for method, args, kwargs in self._calls:
            if method == "register_model" and self.mode != "online":
                log.info("Comet model registry: %s version %s is registered locally only (offline)",
                         args[0], kwargs["version"])
                continue
            getattr(experiment, method)(*args, **kwargs)
        experiment.end()

    def describe(self) -> str:
        if self.archive is not None:
            why = f"Comet online failed ({self.fallback}), so it was kept offline; " if self.fallback else ""
            return f"Comet offline experiment {self.name}: {self.archive} ({why}upload: comet upload {self.archive})"
        if self.mode == "online" and self._ended:
            return f"Comet experiment {self.name}: key {self.key} in project {self.config.project}"
        return f"Comet experiment {self.name} was not written"

    def _open(self) -> Any:
        import comet_ml

        if self.mode == "online":
            reason = "unknown"
            for attempt, pause in enumerate(ONLINE_RETRY_PAUSES_S + (None,), start=1):
                try:
                    experiment = comet_ml.Experiment(
                        api_key=os.environ.get("COMET_API_KEY"), project_name=self.config.project,
                        workspace=self.config.workspace, experiment_key=self.key, **_QUIET,
                    )
                    if getattr(experiment, "alive", True):
                        return self._named(experiment)
                    experiment.end()
                    # Comet already retried for ~30 s inside; a dead experiment is not retried again.
                    reason = "the experiment did not come alive (no network, or a wrong key)"
                    break
                except Exception as exc:  # Comet's client raises many types for network and auth problems
                    reason = f"{type(exc).__name__}: {exc}"
                    if pause is not None:
                        log.warning("Comet online attempt %d failed (%s); retrying in %ss", attempt, _redact(reason),
                                    pause)
                        time.sleep(pause)
            reason = _redact(reason)
            self.fallback = reason
            log.warning("Comet online is unavailable (%s); writing %s offline to %s instead",
                        reason, self.name, self.offline_dir)
            self.mode = "offline"
        self.offline_dir.mkdir(parents=True, exist_ok=True)
        experiment = comet_ml.OfflineExperiment(
            project_name=self.config.project, workspace=self.config.workspace,
            offline_directory=str(self.offline_dir), experiment_key=self.key, **_QUIET,
        )
        # end() waits for the offline writer's next queue poll, by default a second away: poll more often.
        streamer = getattr(experiment, "streamer", None)
        if streamer is not None and hasattr(streamer, "queue_timeout"):
            streamer.queue_timeout = OFFLINE_POLL_S
        return self._named(experiment)

    def _named(self, experiment: Any) -> Any:
        experiment.set_name(self.name)
        if self.tags:  # Comet logs an error for an empty list
            experiment.add_tags(self.tags)
        return experiment


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:120] or "experiment"


def _redact(text: str) -> str:
    """Comet's errors may quote the request, key included: the key never reaches a log or report."""
    key = os.environ.get("COMET_API_KEY")
    return text.replace(key, "***") if key else text


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return value.item() if hasattr(value, "item") else str(value)


def _wants_online(config: TrackingConfig) -> bool:
    return config.mode == "online" or (config.mode == "auto" and bool(os.environ.get("COMET_API_KEY")))


def start_tracker(
    config: TrackingConfig, offline_dir: Path, name: str, tags: list[str] | None = None
) -> Tracker:
    """One experiment. auto: online with COMET_API_KEY, offline without (no network, no wait)."""
    if config.backend == "none":
        return NullTracker()
    return CometTracker(config, Path(offline_dir), name, list(tags or []))


def prune_offline_archives(comet_dir: Path, keep_runs: int | None) -> list[Path]:
    """Keep the offline archives of the newest `keep_runs` runs (one folder each under `comet_dir`,
    named by run id, so by time); remove the older folders. Returns what was removed."""
    import shutil

    if keep_runs is None or not Path(comet_dir).is_dir():
        return []
    runs = sorted((p for p in Path(comet_dir).iterdir() if p.is_dir() and any(p.glob("*.zip"))),
                  key=lambda p: (p.stat().st_mtime, p.name))
    removed = runs[: max(0, len(runs) - keep_runs)]
    for folder in removed:
        shutil.rmtree(folder, ignore_errors=True)
    if removed:
        log.info("tracking.keep_offline_archives %d: removed the offline archives of %d older run(s)", keep_runs,
                 len(removed))
    return removed


def offline_archives(comet_dir: Path, run_id: str | None = None) -> list[Path]:
    """The offline archives under `comet_dir` (of one run when `run_id` is given), oldest first."""
    root = Path(comet_dir) / run_id if run_id else Path(comet_dir)
    return sorted(root.rglob("*.zip"), key=lambda p: (p.stat().st_mtime, p.name)) if root.is_dir() else []


UPLOADED_SUFFIX = ".uploaded"  # a marker next to an archive `comet upload` accepted


def upload_offline_archives(comet_dir: Path, run_id: str | None = None,
                            log_line: Any = print) -> tuple[list[Path], list[Path]]:
    """Send the offline archives not sent yet through Comet's own `comet upload` (one call each, so
    one failure does not hide the rest); returns (uploaded, failed). Needs COMET_API_KEY."""
    import subprocess
    import sys

    from config.errors import GauntletError

    if not os.environ.get("COMET_API_KEY"):
        raise GauntletError("uploading needs COMET_API_KEY (and network): set it, or run `comet upload FILE.zip` "
                            "where both are available; the archives stay where they are")
    pending = [p for p in offline_archives(comet_dir, run_id) if not p.with_suffix(UPLOADED_SUFFIX).exists()]
    uploaded, failed = [], []
    for archive in pending:
        out = subprocess.run([sys.executable, "-m", "comet_ml.scripts.comet_upload", str(archive)],
                             capture_output=True, text=True)
        if out.returncode == 0:
            archive.with_suffix(UPLOADED_SUFFIX).touch()
            uploaded.append(archive)
            log_line(f"uploaded {archive}")
        else:
            failed.append(archive)
            said = (out.stderr or out.stdout).strip().splitlines()
            log_line(f"failed {archive}: {_redact(said[-1] if said else 'comet upload failed')}")
    return uploaded, failed
