"""The run directory contract: artifacts/runs/<run_id>/{splits,candidates,reports}, manifest.json."""

from __future__ import annotations

import json
import os
import platform
import secrets
import subprocess
from dataclasses import asdict
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from config.errors import RunFileError, first_problem
from config.paths import PROJECT_ROOT
from config.schema import TrainConfig
from tasks.ml.data import DatasetInfo
from tasks.ml.results import Candidate, EvalReport

PACKAGES = (
    "gauntlet", "prefect", "scikit-learn", "lightgbm", "xgboost", "xgboost-cpu", "optuna",
    "comet-ml", "pandas", "pyarrow", "numpy", "pydantic",
)


def new_run_id(label: str = "") -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{secrets.token_hex(3)}" + (f"-{label}" if label else "")


class RunPaths:
    """`evaluation`: a later evaluation of the run, whose report.json and reports/ go under
    evaluations/<evaluation>/ so that the run's first evaluation (what it registered) stays as it was."""

    def __init__(self, root: str | Path, evaluation: str | None = None) -> None:
        self.root = Path(root)
        self.evaluation = evaluation

    @property
    def run_id(self) -> str:
        return self.root.name

    @property
    def evaluation_root(self) -> Path:
        return self.root / "evaluations" / self.evaluation if self.evaluation else self.root

    splits = property(lambda self: self.root / "splits")
    candidates = property(lambda self: self.root / "candidates")
    reports = property(lambda self: self.evaluation_root / "reports")
    manifest = property(lambda self: self.root / "manifest.json")
    config = property(lambda self: self.root / "config.json")
    report = property(lambda self: self.evaluation_root / "report.json")
    searches_ended = property(lambda self: self.root / "search" / "ended")  # tasks.ml.planning.CoreShare

    def for_new_evaluation(self) -> RunPaths:
        """These paths, or a new evaluation record's when the run was evaluated already."""
        if not (self.root / "report.json").is_file():
            return self
        return RunPaths(self.root, evaluation=datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2))

    def split(self, name: str) -> Path:
        return self.splits / f"{name}.parquet"

    def search_splits_bytes(self) -> int:
        """Size on disk of the splits the searches read (train and valid)."""
        return sum(self.split(name).stat().st_size for name in ("train", "valid"))

    def candidate_file(self, family: str) -> Path:
        return self.candidates / f"{family}.json"


def write_json(path: Path, payload: Any, durable: bool = False) -> None:
    """Write JSON through a temporary file and a rename, so a reader never sees half a file.
    `durable`: the file's bytes reach the disk before the rename (the registry's records: after a
    power cut the old file or the complete new one, never an empty one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as fh:
            fh.write(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Data(_Record):
    path: str
    sha256: str


class _Dataset(_Record):
    target: str
    task: str
    classes: list[Any]
    features: list[str]
    numeric_features: list[str]
    categorical_features: list[str]


class Manifest(_Record):
    """What the readers of a run's manifest.json rely on; the rest is free."""

    data: _Data
    dataset: _Dataset
    splits: dict[str, Any]
    config_hash: str
    packages: dict[str, str]


def _fix(path: Path) -> str:
    run = path.parent.parent if path.parent.name == "candidates" else path.parent
    return f"restore it from a backup, or train again (the run {run.name} cannot be evaluated as it is)"


def read_json(path: Path, schema: type[BaseModel] | None = None) -> Any:
    """A run file's JSON; RunFileError (one line naming the file and the fix) when it is missing, is not
    JSON or lacks what `schema` requires."""
    path = Path(path)
    try:
        payload = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise RunFileError(f"the run file {path} is missing; {_fix(path)}") from None
    except OSError as exc:
        raise RunFileError(f"the run file {path} cannot be read ({exc.strerror}); {_fix(path)}") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RunFileError(f"the run file {path} is damaged (not JSON: {first}); {_fix(path)}") from None
    if schema is not None:
        try:
            schema.model_validate(payload)
        except ValidationError as exc:
            raise RunFileError(f"the run file {path} is damaged ({first_problem(exc)}); {_fix(path)}") from None
    return payload


def read_manifest(paths: RunPaths) -> dict[str, Any]:
    return read_json(paths.manifest, Manifest)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def save_config(paths: RunPaths, config: TrainConfig) -> None:
    write_json(paths.config, config.model_dump(mode="json"))


def load_run_config(paths: RunPaths, overrides: list[str] | dict[str, Any] | None = None) -> TrainConfig:
    """The configuration a run was made with (its config.json), with optional overrides."""
    from config.errors import ConfigError
    from config.schema import config_from_dict

    if not paths.config.is_file():
        raise ConfigError(
            f"{paths.root} is not a gauntlet run (no config.json); pass --run artifacts/runs/<run_id>"
        )
    return config_from_dict(read_json(paths.config), overrides, source=f" of run {paths.run_id}")


def dataset_info(manifest: dict[str, Any]) -> DatasetInfo:
    return DatasetInfo(**manifest["dataset"])


def dataset_info_dict(info: DatasetInfo) -> dict[str, Any]:
    return asdict(info)


def write_candidate(paths: RunPaths, candidate: Candidate) -> None:
    write_json(paths.candidate_file(candidate.family), candidate.model_dump(mode="json"))


def read_candidates(paths: RunPaths) -> list[Candidate]:
    """The run's candidates in the configured family order (the last tie-break of selection)."""
    from tasks.ml.estimators import FAMILIES

    files = list(paths.candidates.glob("*.json")) if paths.candidates.is_dir() else []
    order = {name: i for i, name in enumerate(FAMILIES)}
    files.sort(key=lambda f: (order.get(f.stem, len(order)), f.stem))
    return [Candidate.model_validate(read_json(f, Candidate)) for f in files]


def dataset_name(config: TrainConfig) -> str:
    return Path(config.data.path.removeprefix("builtin:")).name.split(".")[0]


def train_run_name() -> str:
    """train-<dataset>-<UTC timestamp>, readable in the Prefect UI's run list."""
    from prefect.runtime import flow_run

    from config.schema import TrainParameters

    params = flow_run.parameters.get("params")
    try:
        params = params if isinstance(params, TrainParameters) else TrainParameters.model_validate(params or {})
        name = dataset_name(params.to_config())
    except Exception:  # a bad parameter fails the run itself, with its message; the name is cosmetic
        name = "invalid-config"
    return f"train-{name}-{datetime.now(UTC):%Y%m%d-%H%M%S}"


def evaluate_run_name() -> str:
    from prefect.runtime import flow_run

    return f"evaluate-{Path(flow_run.parameters['run_dir']).name}"


def predict_run_name() -> str:
    from prefect.runtime import flow_run

    return f"predict-{Path(str(flow_run.parameters.get('input_path', 'input'))).name}"


def finish_run(paths: RunPaths, report: EvalReport, stages: dict[str, dict]) -> EvalReport:
    """The evaluation's own stages merged in, the manifest and report.json written, the outcome logged."""
    from prefect import get_run_logger

    from tasks import reporting as rep
    from tasks.stages import record_stages

    stages.update(report.stages)  # registration, measured inside the evaluation
    report = report.model_copy(update={"stages": stages})
    record_stages(paths, stages)
    rep.write_report_json(paths, report)
    # The tables are printed by the command (once) and shown on this run's page.
    rep.leaderboard_artifact(report)
    rep.gate_artifact(report)
    get_run_logger().info(rep.format_gate(report))
    return report
