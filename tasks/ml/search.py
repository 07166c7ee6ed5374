"""One family's hyperparameter search with Optuna, generic over the estimator registry.

Preprocessing is fitted once per family on the training split (it has no hyperparameters), so
each trial fits only the estimator on ready arrays. The returned best model is a scikit-learn
Pipeline (fitted preprocessor + fitted estimator) that takes the raw feature columns.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from sklearn.pipeline import Pipeline

from tasks.ml.data import DatasetInfo, features_and_target
from tasks.ml.estimators import FamilySpec, FitContext
from tasks.ml.metrics import compute_metrics, is_better
from tasks.ml.preprocessing import build_preprocessor

log = logging.getLogger("gauntlet.search")


@dataclass
class PreparedData:
    """Arrays for one family: the preprocessor is fitted on train only."""

    preprocessor: Any
    X_train: np.ndarray
    y_train: np.ndarray
    X_valid: np.ndarray
    y_valid: np.ndarray
    n_classes: int


def prepare_data(
    spec: FamilySpec, info: DatasetInfo, train: pd.DataFrame, valid: pd.DataFrame
) -> PreparedData:
    X_train, y_train = features_and_target(train, info)
    X_valid, y_valid = features_and_target(valid, info)
    pre = build_preprocessor(info.numeric_features, info.categorical_features, scale=spec.scale)
    Xt = np.asarray(pre.fit_transform(X_train), dtype=np.float32)
    Xv = np.asarray(pre.transform(X_valid), dtype=np.float32)
    return PreparedData(pre, Xt, y_train, Xv, y_valid, len(info.classes))


def make_storage(url: str | None) -> Any:
    """None -> in memory; journal:PATH -> a local journal file; anything else -> a database URL.

    `${VAR}` in the URL is read from the environment here, at connect time, so that a password
    never lands in a saved config, a manifest or a Prefect parameter.
    """
    if url is None:
        return None
    url = os.path.expandvars(url)
    if "${" in url or "$" in url.split("@")[0].split("://")[-1]:
        raise ValueError("search.storage names an environment variable that is not set; export it or use .env")
    if url.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = Path(url.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    return url


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=10)
    return optuna.pruners.NopPruner()


@dataclass(frozen=True)
class SearchSettings:
    metric: str
    direction: str
    n_trials: int
    timeout_s: float | None = None
    seed: int = 42
    beta: float = 0.5
    average: str = "macro"
    early_stopping_rounds: int = 50
    n_jobs: int = 1
    pruner: str = "median"
    storage: str | None = None
    study_name: str = "gauntlet"
    max_failures_before_stop: int = 3


class _StopWhenNothingWorks:
    """Stop a study whose first trials all raise: a broken family should fail fast."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        states = [t.state for t in study.get_trials(deepcopy=False)]
        if optuna.trial.TrialState.COMPLETE in states:
            return
        if states.count(optuna.trial.TrialState.FAIL) >= self.limit:
            study.stop()


def fit_estimator(
    spec: FamilySpec, data: PreparedData, params: dict[str, Any], settings: SearchSettings,
    trial: optuna.Trial | None = None,
) -> tuple[Any, dict[str, Any]]:
    estimator = spec.make(params, settings.seed, settings.n_jobs, data.n_classes)
    ctx = FitContext(
        X_valid=data.X_valid, y_valid=data.y_valid, n_classes=data.n_classes,
        early_stopping_rounds=settings.early_stopping_rounds, trial=trial,
    )
    info = spec.fit(estimator, data.X_train, data.y_train, ctx)
    return estimator, info


@dataclass
class BestModel:
    """The fitted estimator of the best trial so far, kept so that it need not be refitted."""

    trial: int
    estimator: Any
    info: dict[str, Any]
    fit_seconds: float


def run_study(
    spec: FamilySpec,
    data: PreparedData,
    settings: SearchSettings,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
) -> tuple[optuna.Study, BestModel | None]:
    """Create (or resume) the family's study and run the trials it still owes.

    Returns the study and the best fitted estimator of this process's trials (None when no trial
    ran here, e.g. a resumed study that owed none).
    """
    study = optuna.create_study(
        study_name=settings.study_name,
        storage=make_storage(settings.storage),
        direction=settings.direction,
        sampler=optuna.samplers.TPESampler(seed=settings.seed),
        pruner=make_pruner(settings.pruner),
        load_if_exists=True,
    )
    kept: list[BestModel] = []

    def objective(trial: optuna.Trial) -> float:
        params = spec.space(trial)
        start = time.perf_counter()
        try:
            estimator, info = fit_estimator(spec, data, params, settings, trial)
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            raise
        scores = compute_metrics(
            data.y_valid, estimator.predict_proba(data.X_valid), n_classes=data.n_classes,
            beta=settings.beta, average=settings.average,
        )
        seconds = time.perf_counter() - start
        trial.set_user_attr("fit_seconds", round(seconds, 4))
        for key, value in {**scores, **info}.items():
            trial.set_user_attr(key, value)
        value = scores[settings.metric]
        if not kept or is_better(value, kept[0].info["_value"], settings.direction):
            kept[:] = [BestModel(trial.number, estimator, {**info, "_value": value}, seconds)]
        return value

    done = sum(
        t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        for t in study.get_trials(deepcopy=False)
    )
    remaining = settings.n_trials - done
    if done:
        log.info("study %s resumed with %d finished trials; %d to go", settings.study_name, done, max(remaining, 0))
    if remaining > 0:
        study.optimize(
            objective,
            n_trials=remaining,
            timeout=settings.timeout_s,
            catch=(Exception,),
            callbacks=[_StopWhenNothingWorks(settings.max_failures_before_stop), *callbacks],
            gc_after_trial=False,
        )
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        failed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
        reason = failed[0].user_attrs.get("error", "unknown error") if failed else "no trial completed"
        raise RuntimeError(f"{spec.name}: no trial completed ({len(failed)} failed): {reason}")
    return study, (kept[0] if kept else None)


def best_pipeline(
    spec: FamilySpec, data: PreparedData, study: optuna.Study, kept: BestModel | None,
    settings: SearchSettings,
) -> tuple[Pipeline, dict[str, Any], float, bool]:
    """The study's best model as a Pipeline on raw columns: (pipeline, fit info, fit seconds, refitted).

    The estimator fitted during the best trial is reused; it is refitted on train (early-stopped on
    valid, same seed) only when the best trial ran in an earlier process.
    """
    best = study.best_trial
    if kept is not None and kept.trial == best.number:
        estimator, info, seconds, refitted = kept.estimator, kept.info, kept.fit_seconds, False
    else:
        start = time.perf_counter()
        estimator, info = fit_estimator(spec, data, best.params, settings, trial=None)
        seconds, refitted = time.perf_counter() - start, True
    info = {k: v for k, v in info.items() if not k.startswith("_")}
    return Pipeline([("preprocess", data.preprocessor), ("model", estimator)]), info, seconds, refitted


def trials_table(study: optuna.Study) -> pd.DataFrame:
    frame = study.trials_dataframe(attrs=("number", "value", "state", "params", "duration", "user_attrs"))
    if "duration" in frame:
        frame["duration"] = frame["duration"].dt.total_seconds()
    return frame
