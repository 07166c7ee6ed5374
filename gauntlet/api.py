"""The Python API: train on a table or a DataFrame, load a registered model."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config.paths import PROJECT_ROOT
from gauntlet.runtime import configure_environment

configure_environment()  # before Prefect is imported: its settings are read once

import pandas as pd  # noqa: E402

from tasks.ml.results import EvalReport  # noqa: E402


@dataclass(frozen=True)
class TrainReport:
    """What a training run decided; `.report` is the full EvalReport (also in the run's report.json)."""

    report: EvalReport

    @property
    def leaderboard(self) -> pd.DataFrame:
        """One row per family, the champion first, failed families last."""
        return pd.DataFrame(self.report.leaderboard())

    @property
    def champion(self) -> str:
        return self.report.champion

    @property
    def test_metrics(self) -> dict[str, float]:
        return self.report.test_metrics

    @property
    def registered(self) -> bool:
        return self.report.registered

    @property
    def registry_version(self) -> int | None:
        return self.report.registry_version

    @property
    def run_dir(self) -> Path:
        return Path(self.report.run_dir)


def train(data: str | Path | pd.DataFrame, target: str | None = None, *, config: str | Path | None = None,
          overrides: dict[str, Any] | None = None) -> TrainReport:
    """Train every enabled family on `data` (a CSV/Parquet path or a DataFrame), gate and register.

    config: a YAML file (default config/train.yaml); overrides: dotted keys, e.g.
    {"models.xgboost.n_trials": 5}. A DataFrame is saved as Parquet under <artifacts_dir>/inputs/;
    its registry model is `dataframe-<target>` unless registry.model_name says otherwise.
    Raises GauntletError (one line naming the problem and the fix) on bad input, before any training.
    """
    from config.schema import DEFAULT_CONFIG_PATH, TrainParameters
    from flows.train import train as train_flow
    from tasks.data import preflight

    values = dict(overrides or {})
    if target is not None:
        values["data.target"] = str(target)  # an integer column name is "0" once saved as Parquet
    params = TrainParameters(config_path=str(config or DEFAULT_CONFIG_PATH), overrides=values)
    if isinstance(data, pd.DataFrame):
        values["data.path"] = str(_save_frame(data, params.to_config().artifacts_dir))
    else:
        values["data.path"] = str(data)
    params = params.model_copy(update={"overrides": values})
    preflight(params.to_config())  # a bad input fails here, in a second
    return TrainReport(train_flow(params=params))


def _save_frame(frame: pd.DataFrame, artifacts_dir: str) -> Path:
    """The DataFrame as Parquet in a folder named by its content: the run's manifest can point at it."""
    digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()).hexdigest()[:16]
    path = Path(artifacts_dir) / "inputs" / digest / "dataframe.parquet"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_suffix(".tmp")
        frame.rename(columns=str).to_parquet(temp, index=False)  # Parquet names are text: 0 becomes "0"
        temp.replace(path)
    return path


def load_model(name: str | None = None, *, alias: str = "champion", version: int | None = None,
               registry: str | Path | None = None) -> Any:
    """A registered model (its sha256 checked before unpickling) with `.predict(df)`,
    `.predict_proba(df)` (classification) or `.predict_interval(df)` (regression) and `.metadata`.
    name: the registry's only model when None; registry: artifacts/registry when None."""
    from tasks import registry as reg

    root = Path(registry) if registry is not None else Path("artifacts/registry")
    if registry is None and not root.is_dir():  # outside the project folder: the project's registry
        root = PROJECT_ROOT / "artifacts" / "registry"
    model_name = reg.resolve_model_name(root, name, latest=True)
    return reg.load_model(root, model_name, alias=None if version is not None else alias, version=version)
