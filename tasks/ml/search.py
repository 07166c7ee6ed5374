"""One family's hyperparameter search with Optuna, generic over the estimator registry.

Preprocessing is fitted once per family on the training split (it has no hyperparameters), so
each trial fits only the estimator on ready arrays. The returned best model is a scikit-learn
Pipeline (fitted preprocessor + fitted estimator) that takes the raw feature columns.
"""

from __future__ import annotations

import inspect
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import optuna
import pandas as pd
from optuna.storages.journal import BaseJournalBackend
from sklearn.pipeline import Pipeline

from config.errors import ConfigError
from config.schema import hide_password
from tasks import stopping
from tasks.ml.budget import TimeLimits
from tasks.ml.data import DatasetInfo, features_and_target, sample_positions
from tasks.ml.estimators import FamilySpec, FitContext, MatrixCache
from tasks.ml.metrics import compute_metrics, compute_regression_metrics, is_better
from tasks.ml.preprocessing import PreprocessOptions, build_preprocessor
from tasks.ml.regression import TargetTransformed, forward, inverse

log = logging.getLogger("gauntlet.search")


RESAMPLERS = ("smote", "random_over", "random_under")


@dataclass
class Fold:
    """One scoring fold: preprocessed (and, for resampling methods, resampled) training rows and
    the untouched rows that score them."""

    X_train: Any
    y_train: np.ndarray
    X_valid: Any
    y_valid: np.ndarray
    rows: np.ndarray | None = None  # positions of the scoring rows among the rows the folds split


@dataclass(frozen=True)
class DataSettings:
    """How a family's data are prepared and how trials are scored (from the config)."""

    options: PreprocessOptions = PreprocessOptions()
    imbalance: str = "auto"  # auto | none | class_weight | smote | random_over | random_under
    seed: int = 42
    cv_folds: int = 0  # 0: score trials on the valid split
    small_data_rows: int = 0  # a class with fewer rows in train+valid -> repeated stratified CV
    cv_repeats: int = 3
    split_strategy: str = "stratified"
    group_column: str | None = None
    target_transform: str = "none"  # regression only: what the models fit (tasks.ml.regression.forward)


@dataclass
class PreparedData:
    """A family's data. The preprocessor is fitted on the rows the final model trains on; each fold
    has its own, fitted on that fold's training rows only, so no encoding sees its scoring rows."""

    preprocessor: Any
    X_train: Any  # the final model's training rows (resampled when the method says so)
    y_train: np.ndarray
    X_valid: Any  # the valid split (early stopping, valid metrics); None in small-data mode
    y_valid: np.ndarray | None
    n_classes: int
    mode: str = "holdout"  # holdout | cv | repeated_cv
    folds: list[Fold] = field(default_factory=list)  # cv modes: the folds that score a trial
    n_train_rows: int = 0  # before resampling
    description: str = "the valid split"
    target_transform: str = "none"  # regression: the y arrays above are forward(y); scores are on the original scale


def resample(X: Any, y: np.ndarray, method: str, seed: int) -> tuple[Any, np.ndarray]:
    """imbalanced-learn's samplers on training rows only; other methods leave the rows as they are."""
    if method not in RESAMPLERS:
        return X, y
    if method == "smote":
        from imblearn.over_sampling import SMOTE

        smallest = int(np.bincount(y).min())
        sampler = SMOTE(random_state=seed, k_neighbors=max(1, min(5, smallest - 1)))
    elif method == "random_over":
        from imblearn.over_sampling import RandomOverSampler

        sampler = RandomOverSampler(random_state=seed)
    else:
        from imblearn.under_sampling import RandomUnderSampler

        sampler = RandomUnderSampler(random_state=seed)
    X_res, y_res = sampler.fit_resample(X, y)
    return X_res, np.asarray(y_res)


def _encode(
    spec: FamilySpec, info: DatasetInfo, settings: DataSettings, X_fit: pd.DataFrame, y_fit: np.ndarray,
    X_score: pd.DataFrame | None,
) -> tuple[Any, Any, np.ndarray, Any]:
    """Fit a preprocessor on (X_fit, y_fit), encode both sides, resample the fitted side."""
    native = spec.takes_categories(settings.options.encoding, settings.imbalance)
    pre = build_preprocessor(
        info.numeric_features, info.categorical_features, scale=spec.scale, datetime=info.datetime_features,
        options=settings.options, native=native,
    )
    Xf = pre.fit_transform(X_fit, y_fit)
    Xs = pre.transform(X_score) if X_score is not None else None
    if not native:
        Xf = np.asarray(Xf, dtype=np.float32)
        Xs = np.asarray(Xs, dtype=np.float32) if Xs is not None else None
    Xf, yf = resample(Xf, y_fit, settings.imbalance, settings.seed)
    return pre, Xf, yf if settings.target_transform == "none" else forward(yf, settings.target_transform), Xs


def _splitter(settings: DataSettings, n_splits: int, repeated: bool, regression: bool = False) -> Any:
    from sklearn.model_selection import (
        GroupKFold,
        KFold,
        RepeatedStratifiedKFold,
        StratifiedGroupKFold,
        StratifiedKFold,
        TimeSeriesSplit,
    )

    if regression and settings.split_strategy != "time":  # no classes to stratify by
        if settings.split_strategy == "group":
            return GroupKFold(n_splits=n_splits)
        return KFold(n_splits=n_splits, shuffle=True, random_state=settings.seed)
    if repeated:
        return RepeatedStratifiedKFold(n_splits=n_splits, n_repeats=settings.cv_repeats, random_state=settings.seed)
    if settings.split_strategy == "time":
        return TimeSeriesSplit(n_splits=n_splits)
    if settings.split_strategy == "group":
        return StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=settings.seed)
    return StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=settings.seed)


def scoring_mode(info: DatasetInfo, train: pd.DataFrame, valid: pd.DataFrame, settings: DataSettings) -> str:
    """holdout, cv (search.cv_folds on train) or repeated_cv (small data, on train+valid)."""
    if settings.small_data_rows and settings.split_strategy in ("stratified", "random") and not info.is_regression:
        both = pd.concat([train[info.target], valid[info.target]])
        if int(both.value_counts().min()) < settings.small_data_rows:
            return "repeated_cv"
    return "cv" if settings.cv_folds >= 2 else "holdout"


def prepare_data(
    spec: FamilySpec, info: DatasetInfo, train: pd.DataFrame, valid: pd.DataFrame,
    settings: DataSettings | None = None,
) -> PreparedData:
    settings = settings or DataSettings()
    n_classes = len(info.classes)
    mode = scoring_mode(info, train, valid, settings)
    if mode == "repeated_cv":
        rows = pd.concat([train, valid])
        X_all, y_all = features_and_target(rows, info)
        smallest = int(np.bincount(y_all).min())
        n_splits = max(2, min(settings.cv_folds or 5, smallest))
        pre, Xt, yt, _ = _encode(spec, info, settings, X_all, y_all, None)
        splits = _splitter(settings, n_splits, repeated=True).split(X_all, y_all)
        X_src, y_src, groups = X_all, y_all, None
        description = (f"{settings.cv_repeats}x{n_splits}-fold repeated stratified CV on train+valid "
                       f"(smallest class: {smallest} rows, under search.small_data_rows={settings.small_data_rows})")
        X_valid = y_valid = None
    else:
        X_train, y_train = features_and_target(train, info)
        X_valid_raw, y_valid = features_and_target(valid, info)
        pre, Xt, yt, X_valid = _encode(spec, info, settings, X_train, y_train, X_valid_raw)
        description = "the valid split"
        splits = []
        if mode == "cv":
            groups = train[settings.group_column].to_numpy() if settings.split_strategy == "group" else None
            splits = _splitter(settings, settings.cv_folds, False, info.is_regression).split(X_train, y_train, groups)
            kinds = {"time": "time-ordered", "group": "grouped" if info.is_regression else "grouped stratified"}
            kind = kinds.get(settings.split_strategy, "shuffled" if info.is_regression else "stratified")
            description = f"{settings.cv_folds}-fold {kind} CV on train"
        X_src, y_src = X_train, y_train
    folds = []
    for k, (fit_idx, score_idx) in enumerate(splits):
        missing = set(range(n_classes)) - set(np.unique(y_src[fit_idx])) if n_classes else set()
        if missing:
            raise ValueError(
                f"CV fold {k + 1} has no training rows of class(es) "
                f"{sorted(str(info.classes[i]) for i in missing)}; lower search.cv_folds or set it to 0"
            )
        _, Xf, yf, Xs = _encode(spec, info, settings, X_src.iloc[fit_idx], y_src[fit_idx], X_src.iloc[score_idx])
        folds.append(Fold(Xf, yf, Xs, forward(y_src[score_idx], settings.target_transform), np.asarray(score_idx)))
    n_rows = len(train) + (len(valid) if mode == "repeated_cv" else 0)
    if y_valid is not None:
        y_valid = forward(y_valid, settings.target_transform)
    return PreparedData(pre, Xt, yt, X_valid, y_valid, n_classes, mode, folds, n_rows, description,
                        settings.target_transform)


def probe_target_transform(mode: str, info: DatasetInfo, train: pd.DataFrame, valid: pd.DataFrame,
                           options: PreprocessOptions, seed: int) -> tuple[str, str]:
    """preprocessing.target_transform resolved on this run's splits: (none | log1p, why)."""
    from tasks.ml.regression import choose_target_transform, probe_wanted

    X_train, y_train = features_and_target(train, info)
    X_valid, y_valid = features_and_target(valid, info)
    if probe_wanted(mode, np.concatenate([y_train, y_valid]), info.target_summary.get("min")):  # then encode
        pre = build_preprocessor(info.numeric_features, info.categorical_features, scale=False,
                                 datetime=info.datetime_features, options=options, native=False)
        X_train, X_valid = pre.fit_transform(X_train, y_train), pre.transform(X_valid)
    return choose_target_transform(mode, X_train, y_train, X_valid, y_valid, seed,
                                   y_min=info.target_summary.get("min"))


class StudyInUse(ConfigError):
    """Another process is writing the study file this search would write alone."""


class TrialBatchedJournal(BaseJournalBackend):
    """A journal file that one process writes alone, appended once per finished trial (`flush`).

    Optuna's file backend locks, appends and fsyncs the file once per operation: every suggested
    parameter, user attribute and reported step, ~20 a trial. Each of those system calls gives up the
    GIL, and while other families' searches run Python, taking it back waits up to the 5 ms switch
    interval: 25-30 ms a write here, ~1 s of the demo's 4 s of searches. Here reads come from memory and
    a trial's operations reach the file in one append when it ends. A killed process loses only the
    trials it was running, which the resumed study runs again. An exclusive lock on the file, held while
    the study is open, refuses a second writer (its trials would interleave with unwritten ones).
    """

    def __init__(self, path: str) -> None:
        from optuna.storages.journal import JournalFileBackend

        self._file = JournalFileBackend(path)
        self._owner = self._own(path)
        self._logs = list(self._file.read_logs(0))
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._closed = False

    @staticmethod
    def _own(path: str) -> Any:
        owner = open(path, "a")  # noqa: SIM115 - held, and locked, until close()
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; one run per study is the user's to keep
            return owner
        try:
            fcntl.flock(owner.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner.close()
            raise StudyInUse(f"the study file {path} is being searched by another process (another run on the "
                             "same artifacts_dir, data and config?); wait for it to end, or set "
                             "search.trial_workers above 1 to share one study between runs") from None
        return owner

    def read_logs(self, log_number_from: int) -> list[dict[str, Any]]:
        with self._lock:
            return self._logs[log_number_from:]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        with self._lock:
            self._logs.extend(logs)
            self._pending.extend(logs)
            if self._closed:  # written after the search (not expected): straight to the file
                self._file.append_logs(self._pending)
                self._pending = []

    def flush(self) -> None:
        """Write what is pending (called as each trial ends)."""
        with self._lock:
            pending, self._pending = self._pending, []
            if pending:
                self._file.append_logs(pending)

    def close(self) -> None:
        self.flush()
        self._closed = True
        if not self._owner.closed:
            self._owner.close()  # releases the lock


class BatchedJournalStorage(optuna.storages.JournalStorage):
    """Optuna's journal storage over a TrialBatchedJournal, which it flushes and closes."""

    def __init__(self, journal: TrialBatchedJournal) -> None:
        super().__init__(journal)
        self.journal = journal

    def flush(self, *_: Any) -> None:  # also a study callback: (study, trial)
        self.journal.flush()

    def close(self) -> None:
        self.journal.close()


def make_storage(url: str | None, study_name: str = "gauntlet", sole_writer: bool = False) -> Any:
    """None -> in memory; journal:PATH -> a local journal file (journal:DIR/ -> DIR/<study>.journal);
    anything else -> a database (heartbeats fail the RUNNING trials of a worker that died).
    `sole_writer`: no other process shares the study (a journal is then written once per trial).

    `${VAR}` in the URL is read from the environment here, at connect time, so that a password
    never lands in a saved config, a manifest or a Prefect parameter.
    """
    if url is None:
        return None
    url = expand_storage_url(url)
    if url.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        raw = url.removeprefix("journal:")
        path = Path(raw) / f"{study_name}.journal" if raw.endswith(("/", os.sep)) else Path(raw)
        path.parent.mkdir(parents=True, exist_ok=True)
        if sole_writer:
            return BatchedJournalStorage(TrialBatchedJournal(str(path)))
        return JournalStorage(JournalFileBackend(str(path)))
    import warnings

    import optuna.storages as storages

    for attempt in range(3):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: stable in use
                # Optuna 4.9 renamed the callback that retries a dead worker's trial (the old name warns).
                if hasattr(storages, "RetryHeartbeatStaleTrialCallback"):
                    retry = {"heartbeat_stale_trial_callback": storages.RetryHeartbeatStaleTrialCallback(max_retry=2)}
                else:
                    retry = {"failed_trial_callback": storages.RetryFailedTrialCallback(max_retry=2)}
                return storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True}, heartbeat_interval=HEARTBEAT_S,
                                           grace_period=4 * HEARTBEAT_S, **retry)
        except Exception as exc:
            # Workers that open a fresh database at the same moment race to create Optuna's tables
            # (PostgreSQL: "duplicate key ... pg_type_typname_nsp_index"); the loser finds them made.
            if type(exc).__name__ not in ("IntegrityError", "ProgrammingError") or attempt == 2:
                raise
            log.info("Optuna's tables were being created by another worker; opening the storage again")
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def expand_storage_url(url: str) -> str:
    """`url` with its `${VAR}` read from the environment; ConfigError (a ValueError) naming the URL,
    password hidden, when a variable is not set."""
    expanded = os.path.expandvars(url)
    if "${" in expanded or "$" in expanded.split("@")[0].split("://")[-1]:
        raise ConfigError(f"search.storage {hide_password(url)} names an environment variable that is not set; "
                          "export it (or put it in .env) before the run")
    return expanded


def check_storage(url: str | None, timeout_s: int = 5) -> None:
    """Connect to a database storage once, before any training: an unreachable or misspelt database
    ends the command in seconds with its URL (password hidden) and the fix. Journal files and
    in-memory studies need nothing here."""
    if url is None or url.startswith("journal:"):
        return
    expanded = expand_storage_url(url)
    import sqlalchemy

    try:
        connect_args = {"connect_timeout": timeout_s} if expanded.startswith("postgres") else {}
        engine = sqlalchemy.create_engine(expanded, connect_args=connect_args)
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()
    except Exception as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        reason = hide_password(reason[0] if reason else type(exc).__name__)
        if expanded != url:
            password = urlsplit(expanded).password
            reason = reason.replace(password, "***") if password else reason
        raise ConfigError(f"search.storage {hide_password(url)} cannot be reached ({reason}); start the database "
                          "or fix the URL, or set search.storage: auto for a study file on this machine") from None


HEARTBEAT_S = 15  # database studies: a worker's RUNNING trial is failed (and retried) 60 s after it died


class MedianOfLikeTrials(optuna.pruners.BasePruner):
    """Optuna's median rule, against comparable trials: a trial is pruned when its best value so far is worse
    than the median, at the same step, of the completed trials with the same `class_weight`.

    - A completed trial that early-stopped before the step counts there with its best value: it stopped
      because it would not improve. (Optuna's MedianPruner leaves it out, so past a few hundred rounds a
      slow trial was compared only with other slow ones, and was never pruned.)
    - Class weights shift every predicted probability, so a weighted trial's valid log loss is not
      comparable with an unweighted one's: on bank_marketing the weighted trials' losses set the median,
      and no unweighted trial ever fell below it.
    """

    def __init__(self, n_startup_trials: int = 5, n_warmup_steps: int = 0, n_min_trials: int = 2,
                 weights_apart: bool = True) -> None:
        self.n_startup_trials, self.n_warmup_steps, self.n_min_trials = n_startup_trials, n_warmup_steps, n_min_trials
        self.weights_apart = weights_apart  # False: the values are the metric itself (forests, CV folds)

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step < self.n_warmup_steps:
            return False
        completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if len(completed) < self.n_startup_trials:
            return False
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        best = max if maximize else min
        weight = trial.params.get("class_weight")
        values = []
        for other in completed:
            if not other.intermediate_values or (self.weights_apart and other.params.get("class_weight") != weight):
                continue
            if step in other.intermediate_values:
                values.append(other.intermediate_values[step])
            elif max(other.intermediate_values) < step:  # ended before this step: its best stands
                values.append(best(other.intermediate_values.values()))
        mine = [v for v in trial.intermediate_values.values() if not np.isnan(v)]
        if len(values) < self.n_min_trials or not mine:
            return False
        median = float(np.median(values))
        return best(mine) < median if maximize else best(mine) > median


def make_pruner(name: str, min_resource: int = 20, losses: bool = True, n_trials: int = 20
                ) -> optuna.pruners.BasePruner:
    """Steps are boosting rounds on a holdout (reported at rounds 10, 20, 40, 80...), trees of a forest
    (50, 100), or folds in CV. `losses`: the steps report a validation loss (boosters on a holdout), not
    the trial's metric. The median rule starts after a quarter of the trials (2 to 5): with 5 trials
    and Optuna's 5 it would never prune."""
    if name == "median":
        startup = min(5, max(2, n_trials // 4))
        return MedianOfLikeTrials(n_startup_trials=startup, n_warmup_steps=min_resource, weights_apart=losses)
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, min_resource), reduction_factor=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, min_resource), reduction_factor=3)
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
    imbalance: str = "auto"  # auto: class weights searched; class_weight: always balanced
    parallel_trials: bool = False  # a share of the cores may go to parallel trials (trial_slots)
    sole_writer: bool = False  # no other process runs trials of this study (search.trial_workers 1)


def fit_estimator(
    spec: FamilySpec, data: PreparedData | Fold, params: dict[str, Any], settings: SearchSettings,
    trial: optuna.Trial | None = None, n_classes: int | None = None, rounds: int | None = None,
    cache: MatrixCache | None = None, score: Callable[[Any], float] | None = None,
    threads_now: Callable[[], int] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Fit one estimator on `data`'s training rows, early-stopping on its valid rows when it has them;
    `cache`: the search's, to reuse what earlier trials built from the same arrays; `score`: the trial's
    metric of a partly grown model, for fits that report it to the pruner (forests)."""
    params = dict(params)
    if settings.imbalance == "class_weight":
        params["class_weight"] = "balanced"
    n_classes = data.n_classes if n_classes is None else n_classes
    estimator = spec.make(params, settings.seed, settings.n_jobs, n_classes)
    ctx = FitContext(
        X_valid=data.X_valid, y_valid=data.y_valid, n_classes=n_classes,
        early_stopping_rounds=settings.early_stopping_rounds, trial=trial,
        class_weight=params.get("class_weight"), rounds=rounds, cache=cache, score=score, threads_now=threads_now,
    )
    info = spec.fit_model(estimator, data.X_train, data.y_train, ctx)
    return estimator, info


def sampled_trial_rows(spec: FamilySpec, data: PreparedData) -> int | None:
    """The rows each trial of the family fits when it fits a sample of train (FamilySpec.trial_rows), else None."""
    if spec.trial_rows is None or data.mode != "holdout" or len(data.y_train) <= spec.trial_rows:
        return None
    return spec.trial_rows


def trial_sample(data: PreparedData, rows: int, seed: int) -> PreparedData:
    """`data` with a seeded sample of `rows` training rows (stratified by class, in their order)."""
    keep = sample_positions(len(data.y_train), rows, seed, data.y_train if data.n_classes else None)
    X = data.X_train.iloc[keep] if isinstance(data.X_train, pd.DataFrame) else data.X_train[keep]
    return replace(data, X_train=X, y_train=data.y_train[keep])


def _score(estimator: Any, X: Any, y: np.ndarray, n_classes: int, settings: SearchSettings,
           transform: str = "none") -> dict[str, float]:
    """Validation metrics; a regression's on the target's own scale (`y` and the fit are in `transform`'s)."""
    if not n_classes:
        pred = inverse(np.asarray(estimator.predict(X), dtype=np.float64), transform)
        return compute_regression_metrics(inverse(y, transform), pred, with_mape=True if settings.metric == "mape"
                                          else None)
    return compute_metrics(
        y, estimator.predict_proba(X), n_classes=n_classes, beta=settings.beta, average=settings.average
    )


# Training sets at least this large: the best model so far waits in a temporary file while the next
# trial fits, instead of in memory. A random forest on 600k rows weighs up to RF_MAX_MODEL_BYTES,
# and holding the best one while fitting the next doubled the search's peak on 1M rows.
SPILL_ABOVE_BYTES = 64 * 2**20


def _nbytes(X: Any) -> int:
    if isinstance(X, pd.DataFrame):
        return int(X.memory_usage(index=False).sum())
    return int(getattr(X, "nbytes", 0))


class BestModel:
    """The fitted estimator of the best trial so far, kept so that it need not be refitted:
    in memory, or pickled to a temporary file (`spill=True`) that is removed once loaded or dropped."""

    def __init__(self, trial: int, estimator: Any, info: dict[str, Any], fit_seconds: float,
                 spill: bool = False) -> None:
        self.trial, self.info, self.fit_seconds = trial, info, fit_seconds
        self.estimator, self.path = estimator, None
        if spill:
            import pickle
            import tempfile
            import weakref

            fd, path = tempfile.mkstemp(prefix=f"gauntlet-best-trial-{trial}-", suffix=".pkl")
            self.path = Path(path)
            weakref.finalize(self, self.path.unlink, missing_ok=True)  # dropped or failed: no leftover
            with os.fdopen(fd, "wb") as file:
                pickle.dump(estimator, file, protocol=pickle.HIGHEST_PROTOCOL)
            self.estimator = None

    def load(self) -> Any:
        if self.estimator is None and self.path is not None:
            import pickle

            from tasks.ml.data import release_memory

            release_memory()  # the last trial's model (as large as this one) is gone: its memory goes back first
            with self.path.open("rb") as file:
                self.estimator = pickle.load(file)  # noqa: S301 - written by this process a moment ago
            self.path.unlink(missing_ok=True)
        return self.estimator


def run_study(
    spec: FamilySpec,
    data: PreparedData,
    settings: SearchSettings,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
    limits: TimeLimits | None = None,
    threads: Callable[[], tuple[int, int]] | None = None,
) -> tuple[optuna.Study, BestModel | None]:
    """Create (or resume) the family's study and run the trials it still owes (`limits`: see
    optimize_within_budget; `threads`: the family's share of the cores and the families searching at once,
    asked whenever a trial may start; the share goes to parallel trials or to threads (trial_slots), recorded
    as each trial's `threads`, `parallel_trials` and `families_searching`; else one trial at a time on
    `settings.n_jobs`).

    Returns the study and the best fitted estimator of this process's trials (None when no trial
    ran here, e.g. a resumed study that owed none).
    """
    # The storage stays at hand: failing a dead worker's trial writes to it (retry_dead_workers_trials).
    storage = make_storage(settings.storage, settings.study_name, settings.sole_writer)
    storage = storage or optuna.storages.InMemoryStorage()
    batched = storage if isinstance(storage, BatchedJournalStorage) else None
    try:
        return _run_study(spec, data, settings, storage, callbacks, limits, threads, batched)
    finally:
        if batched is not None:
            batched.close()  # the last writes, and the study file free for the next run


def _run_study(spec: FamilySpec, data: PreparedData, settings: SearchSettings, storage: Any,
               callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]],
               limits: TimeLimits | None, threads: Callable[[], tuple[int, int]] | None,
               batched: BatchedJournalStorage | None) -> tuple[optuna.Study, BestModel | None]:
    study = optuna.create_study(
        study_name=settings.study_name,
        storage=storage,
        direction=settings.direction,
        sampler=optuna.samplers.TPESampler(seed=settings.seed),
        pruner=make_pruner(settings.pruner, min_resource=20 if not data.folds else 1,
                           losses=spec.reports_loss and not data.folds, n_trials=settings.n_trials),
        load_if_exists=True,
    )
    retry_dead_workers_trials(study, storage)
    kept: list[BestModel] = []
    kept_lock = threading.Lock()
    cache = MatrixCache()  # this search's arrays, binned once for XGBoost
    spill = _nbytes(data.X_train) >= SPILL_ABOVE_BYTES
    sample = sampled_trial_rows(spec, data)
    # A sampled search's trials fit fewer rows: none of their models is the family's (best_pipeline refits).
    trial_data = data if sample is None else trial_sample(data, sample, settings.seed)
    if sample is not None:
        log.info("%s: its trials fit %d of the %d train rows; the best parameters are then fitted on all",
                 spec.name, sample, len(data.y_train))
    weighted = settings.imbalance == "auto"
    space_args = {"n_rows": data.n_train_rows} if "n_rows" in inspect.signature(spec.space).parameters else {}

    def cross_validate(trial: optuna.Trial, params: dict[str, Any], settings: SearchSettings
                       ) -> tuple[dict[str, float], dict[str, Any]]:
        """Mean metrics over the folds; the running mean is reported to the pruner after each fold."""
        fold_scores, rounds = [], []
        for k, fold in enumerate(data.folds):
            estimator, info = fit_estimator(spec, fold, params, settings, n_classes=data.n_classes, cache=cache)
            fold_scores.append(_score(estimator, fold.X_valid, fold.y_valid, data.n_classes, settings,
                                      data.target_transform))
            rounds.append(info.get("best_iteration"))
            trial.report(float(np.mean([s[settings.metric] for s in fold_scores])), k)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after fold {k + 1} of {len(data.folds)}")
        scores = {key: float(np.mean([s[key] for s in fold_scores])) for key in fold_scores[0]}
        scores[f"{settings.metric}_std"] = float(np.std([s[settings.metric] for s in fold_scores]))
        info = {"best_iteration": int(round(np.mean(rounds)))} if rounds[0] is not None else {}
        return scores, info

    def valid_metric(estimator: Any) -> float:
        return _score(estimator, data.X_valid, data.y_valid, data.n_classes, settings,
                      data.target_transform)[settings.metric]

    def objective(trial: optuna.Trial, slot: TrialSlots | None = None) -> float:
        trial.set_user_attr("worker", worker_id())
        n_jobs = slot.threads if slot is not None else settings.n_jobs
        trial.set_user_attr("threads", n_jobs)
        if slot is not None:
            trial.set_user_attr("parallel_trials", slot.parallel)
            trial.set_user_attr("families_searching", slot.searching)
        trial_settings = settings if n_jobs == settings.n_jobs else replace(settings, n_jobs=n_jobs)
        params = spec.space(trial, weighted, **space_args)
        start = time.perf_counter()
        estimator = None
        try:
            if data.folds:
                scores, info = cross_validate(trial, params, trial_settings)
            else:
                estimator, info = fit_estimator(spec, trial_data, params, trial_settings, trial, cache=cache,
                                                score=valid_metric,
                                                threads_now=slot.threads_now if slot is not None else None)
                scores = _score(estimator, data.X_valid, data.y_valid, data.n_classes, settings, data.target_transform)
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            raise
        seconds = time.perf_counter() - start
        trial.set_user_attr("fit_seconds", round(seconds, 4))
        for key, value in {**scores, **info}.items():
            trial.set_user_attr(key, value)
        value = scores[settings.metric]
        with kept_lock:  # trials may end at once (parallel trials)
            if (estimator is not None and sample is None
                    and (not kept or is_better(value, kept[0].info["_value"], settings.direction))):
                kept[:] = []  # the previous best goes before the new one is written
                kept[:] = [BestModel(trial.number, estimator, {**info, "_value": value}, seconds, spill=spill)]
        return value

    if not study.get_trials(deepcopy=False):
        # The first trial is the library's defaults (unweighted: weights trade precision for recall, and a
        # short search should not start from the choice that hurts the default F-beta 0.5 the most).
        task = "regression" if not data.n_classes else "binary"
        first = spec.defaults(task) if spec.defaults is not None else {}
        if weighted or first:
            first = {**first, "class_weight": None} if weighted else {k: v for k, v in first.items()
                                                                      if k != "class_weight"}
            study.enqueue_trial(first, skip_if_exists=True)
    done = _count(study, FINISHED)
    if done:
        log.info("study %s resumed with %d finished trials; %d to go", settings.study_name, done,
                 max(settings.n_trials - done, 0))
    if batched is not None:
        batched.flush()  # the study, and its enqueued first trial, on disk before any trial runs
        callbacks = [batched.flush, *callbacks]  # each finished trial written as it ends
    try:
        slots = None if threads is None else (
            lambda owed: trial_slots(spec, *threads(), owed, allowed=settings.parallel_trials))
        optimize_within_budget(study, objective, settings, callbacks, limits, slots=slots)
    finally:
        cache.clear()
    if settings.storage is not None:
        wait_for_other_workers(study, storage)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        failed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
        reason = failed[0].user_attrs.get("error", "unknown error") if failed else "no trial completed"
        raise RuntimeError(f"{spec.name}: no trial completed ({len(failed)} failed): {reason}")
    return study, (kept[0] if kept else None)


FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
# Numbers a trial records that are not validation metrics.
TRIAL_FACTS = ("fit_seconds", "best_iteration", "threads", "parallel_trials", "families_searching")
# Trials of one family at once at most: more would leave TPE sampling nearly at random on a 20-trial budget.
MAX_PARALLEL_TRIALS = 4
# How often a running fit asks whether other families ended (a file per ended family, see CoreShare).
SHARE_REFRESH_S = 0.25


@dataclass(frozen=True)
class TrialSlots:
    """How a family's next trial runs: on `threads` threads, beside `parallel - 1` others of the family."""

    threads: int
    parallel: int = 1
    searching: int | None = None  # families searching at once (None: not counted)
    # Threads the trial may use now: more once the family's other trials ended and none is left to start.
    threads_now: Callable[[], int] | None = field(default=None, compare=False, repr=False)


def trial_slots(spec: FamilySpec, share: int, searching: int | None = None, owed: int | None = None,
                allowed: bool = True) -> TrialSlots:
    """A family's share of the cores as parallel trials of 1 thread each when its fits gain little from
    threads (boosters on a few hundred thousand rows: two 1-thread fits at once took 24-30% less time than
    one after another on 2 threads), else as threads for one trial (a forest's trees are independent).
    `owed` 0 (none left to start): the whole share, for the trials in flight."""
    share = max(1, share)
    if not (allowed and spec.parallel_trials) or share == 1 or owed == 0:
        return TrialSlots(share, 1, searching)
    parallel = max(1, min(share, MAX_PARALLEL_TRIALS, owed if owed is not None else share))
    return TrialSlots(share // parallel, parallel, searching)
RUNNING = (optuna.trial.TrialState.RUNNING,)


def _count(study: optuna.Study, states: tuple) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(worker: str | None, started: Any) -> bool:
    """Whether the process that runs a trial is alive, when it ran on this machine (else: assume so)."""
    if worker is None:  # killed between ask and the objective's first line: trust age alone
        return started is not None and (time.time() - started.timestamp()) < 30
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname():
        return True  # another machine's trial: a database's heartbeat fails it when its worker dies
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


def retry_dead_workers_trials(study: optuna.Study, storage: optuna.storages.BaseStorage) -> list[int]:
    """Fail the RUNNING trials left by a process of this machine that died (kill -9, power loss),
    and enqueue their parameters again so that the resumed search retries them. `storage` is the
    study's (the one it was created with).

    Database storages also do this through heartbeats, for workers on other machines.
    """
    import warnings

    from optuna.storages import fail_stale_trials

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        fail_stale_trials(study)  # database storages: heartbeats older than the grace period
    retried = []
    study_id = None
    for trial in study.get_trials(deepcopy=False, states=RUNNING):
        if _alive(trial.user_attrs.get("worker"), trial.datetime_start):
            continue
        try:
            # Optuna has no study-level call to annotate a trial held by another process: the
            # storage's own interface records why it failed, then tell() fails it.
            study_id = storage.get_study_id_from_name(study.study_name) if study_id is None else study_id
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            storage.set_trial_user_attr(trial_id, "error", "its worker died")
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
            continue  # another worker finished or failed it first (tell: "Cannot tell a ... trial")
        if trial.params:
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        retried.append(trial.number)
    if retried:
        log.warning("study %s: trial(s) %s were left RUNNING by a worker that died; failed and retried",
                    study.study_name, retried)
    return retried


def optimize_within_budget(
    study: optuna.Study, objective: Callable[..., float], settings: SearchSettings,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
    limits: TimeLimits | None = None, slots: Callable[[int], TrialSlots] | None = None,
) -> int:
    """Run trials until the study holds `n_trials` finished ones, counting the trials other workers
    are running on the same storage, so that many workers share one budget without overshooting it.
    `limits` (default: `settings.timeout_s`) stop it sooner, though never before a trial completed;
    `limits.stopped_by` then says which. `slots(owed)`: how the next trial runs, asked whenever one may
    start; `slots().parallel` trials run at once (in threads), each called as `objective(trial, slots)`.
    Returns the number of trials this worker ran."""
    limits = limits or TimeLimits("", timeout_s=settings.timeout_s)
    ran = 0
    failed_before = _count(study, (optuna.trial.TrialState.FAIL,))
    callbacks = [*callbacks, _count_finished]
    lock = threading.Lock()
    unborn = [0]  # trials handed to a thread whose Optuna trial does not exist yet: owed all the same

    def one_trial(slot: TrialSlots | None) -> float:
        """One trial (counted in `unborn` by the caller until Optuna has created it)."""
        born = [False]

        def call(trial: optuna.Trial) -> float:
            with lock:
                unborn[0] -= 1
                born[0] = True
            return objective(trial) if slot is None else objective(trial, slot)

        started = time.monotonic()
        try:
            study.optimize(call, n_trials=1, catch=(Exception,), callbacks=callbacks, gc_after_trial=False)
        finally:
            with lock:
                if not born[0]:  # Optuna never called the objective: not owed by this trial any more
                    unborn[0] -= 1
        return time.monotonic() - started

    def may_start() -> int:
        """Trials still owed, or 0 when none may start (done, a limit reached, a broken family)."""
        trials = study.get_trials(deepcopy=False)
        states = [t.state for t in trials]
        with lock:
            pending = unborn[0]
        owed = (settings.n_trials - sum(s in FINISHED for s in states)
                - states.count(optuna.trial.TrialState.RUNNING) - pending)
        if owed <= 0:
            return 0
        if optuna.trial.TrialState.COMPLETE in states and limits.reached():
            return 0
        failed = states.count(optuna.trial.TrialState.FAIL) - failed_before
        if optuna.trial.TrialState.COMPLETE not in states and failed >= settings.max_failures_before_stop:
            return 0  # a broken family fails fast
        return owed

    if slots is None:
        while True:
            stopping.check()  # a stop asked for ends the search here: finished trials stay in the study
            owed = may_start()
            if not owed:
                return ran
            with lock:
                unborn[0] += 1
            limits.trial_ended(one_trial(None), owed - 1)
            ran += 1

    import contextvars
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    running: dict[Any, tuple[int, TrialSlots]] = {}  # future -> (trials owed when it started, its slot)
    # The family's trials in flight once no other is about to start (0: one may start), and its share of the
    # cores, read again at most every SHARE_REFRESH_S (other families end while its trials run).
    cores = {"running": 0, "share": 1, "read": -SHARE_REFRESH_S}

    def threads_now() -> int:
        with lock:
            if not cores["running"]:
                return 0  # a trial may start: the fits in flight keep what they have
            if time.monotonic() - cores["read"] >= SHARE_REFRESH_S:
                cores.update(share=slots(0).threads, read=time.monotonic())
            return max(1, cores["share"] // cores["running"])

    with ThreadPoolExecutor(max_workers=MAX_PARALLEL_TRIALS, thread_name_prefix="trial") as pool:
        try:
            while True:
                stopping.check()
                owed = may_start()
                slot = slots(owed) if owed else None
                if slot is not None and len(running) < slot.parallel:
                    with lock:
                        unborn[0] += 1
                        cores["running"] = 0
                    slot = replace(slot, threads_now=threads_now)
                    # The trial's thread sees this one's context (Prefect's run, its settings).
                    running[pool.submit(contextvars.copy_context().run, one_trial, slot)] = (owed, slot)
                    continue
                if not running:
                    return ran
                with lock:  # only here, once no trial is about to start: a running fit never takes a new one's core
                    cores.update(running=len(running), read=-SHARE_REFRESH_S)
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in done:
                    owed_then, slot_then = running.pop(future)
                    # Parallel trials: the family's pace is a trial's seconds over the trials running at once.
                    limits.trial_ended(future.result() / slot_then.parallel, owed_then - 1)
                    ran += 1
        finally:
            for future in running:  # a stop or an error: trials in flight end at their next check
                future.cancel()


def _count_finished(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    if trial.state in FINISHED:
        stopping.trial_finished()


def wait_for_other_workers(
    study: optuna.Study, storage: optuna.storages.BaseStorage, timeout_s: float = 600.0, poll_s: float = 1.0,
) -> None:
    """Wait until no trial of the study is RUNNING (other workers finishing their last trial), so
    that every worker picks the same best trial."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        retry_dead_workers_trials(study, storage)
        if not _count(study, RUNNING):
            return
        time.sleep(poll_s)
    log.warning("study %s: trials still RUNNING after %.0f s; the best finished trial is used",
                study.study_name, timeout_s)


def best_pipeline(
    spec: FamilySpec, data: PreparedData, study: optuna.Study, kept: BestModel | None,
    settings: SearchSettings, refine: bool = False,
) -> tuple[Pipeline, dict[str, Any], float, bool, dict[str, float]]:
    """The study's best model as a Pipeline on raw columns:
    (pipeline, fit info, fit seconds, refitted, validation metrics that rank it against other families).

    holdout: the estimator fitted during the best trial is reused (refitted on train, early-stopped
    on valid, same seed, only when the best trial ran in an earlier process); its metrics are the
    trial's; when its trials fit a sample (FamilySpec.trial_rows), the best parameters are fitted on
    all train rows, early-stopped on valid, and scored there. cv: refitted on train, early-stopped on
    valid, and scored on the valid split.
    repeated_cv: refitted on train+valid with the folds' mean boosting rounds; its metrics are the
    cross-validated ones.
    `refine`: a booster is fitted once more at a lower learning rate (refine_learning_rate); fit info's
    `refined` says when that fit was kept.
    """
    best = study.best_trial
    sample = sampled_trial_rows(spec, data)
    if kept is not None and kept.trial == best.number and data.mode == "holdout" and sample is None:
        estimator, info, seconds, refitted = kept.load(), kept.info, kept.fit_seconds, False
    else:
        start = time.perf_counter()
        estimator, info = fit_estimator(
            spec, data, best.params, settings, trial=None, rounds=best.user_attrs.get("best_iteration"),
        )
        seconds, refitted = time.perf_counter() - start, True
    if data.mode == "cv" or sample is not None:  # the trials' scores are of other fits
        valid_metrics = _score(estimator, data.X_valid, data.y_valid, data.n_classes, settings, data.target_transform)
    else:
        valid_metrics = {k: float(v) for k, v in best.user_attrs.items()
                         if isinstance(v, int | float) and k not in TRIAL_FACTS}
    info = {k: v for k, v in info.items() if not k.startswith("_")}
    if sample is not None:
        info["trial_rows"] = sample
    if refine and data.mode != "repeated_cv":
        start = time.perf_counter()
        allowance = REFINE_COST_SHARE * len(study.get_trials(deepcopy=False, states=FINISHED))
        refined = refine_learning_rate(spec, data, best.params, info, valid_metrics, settings, allowance)
        if refined is not None:
            estimator, info, valid_metrics = refined
            seconds, refitted = time.perf_counter() - start, True
    if data.target_transform != "none":  # the pipeline predicts on the target's own scale
        estimator = TargetTransformed(estimator, data.target_transform)
    pipeline = Pipeline([("preprocess", data.preprocessor), ("model", estimator)])
    return pipeline, info, seconds, refitted, valid_metrics


# A booster's best trial is fitted again with its learning rate divided by up to this, as long as the
# rounds it should then take stay under REFINE_ROUNDS_SHARE of the round cap: the search's pruner favours
# fast, high-rate trials (it compares trials at equal rounds), and a lower rate with proportionally more
# rounds generalises better (on adult, LightGBM's test AUC went 0.9253 -> 0.9275 at a quarter of the rate).
REFINE_MAX_FACTOR = 4.0
REFINE_MIN_FACTOR = 1.5
REFINE_ROUNDS_SHARE = 0.8
# and its fit, about `factor` trials' worth, costs at most this share of the trials run (counted, not timed, so
# that a seed gives the same result on any machine): no refinement under 5 trials, the full 4x from 14.
REFINE_COST_SHARE = 0.3


def refine_learning_rate(
    spec: FamilySpec, data: PreparedData, params: dict[str, Any], info: dict[str, Any],
    valid_metrics: dict[str, float], settings: SearchSettings, max_factor: float = REFINE_MAX_FACTOR,
) -> tuple[Any, dict[str, Any], dict[str, float]] | None:
    """The best trial's parameters at a lower learning rate, early-stopped on valid: (estimator, fit info
    with `refined`, validation metrics) when that fit is better on the valid split than the trial's; else None.
    `max_factor`: the most the rate may be divided by (what the fit may cost, in best-trial fits)."""
    rounds, rate = info.get("best_iteration"), params.get("learning_rate")
    cap = spec.max_rounds
    if not spec.reports_loss or not rounds or not rate or not cap:
        return None
    factor = min(REFINE_MAX_FACTOR, max_factor, REFINE_ROUNDS_SHARE * cap / rounds)
    if factor < REFINE_MIN_FACTOR:
        return None  # near the round cap (a lower rate could not finish), or a cost out of proportion
    lower = {**params, "learning_rate": rate / factor}
    estimator, new_info = fit_estimator(spec, data, lower, settings, trial=None)
    new_metrics = _score(estimator, data.X_valid, data.y_valid, data.n_classes, settings, data.target_transform)
    sign = 1.0 if settings.direction == "maximize" else -1.0
    if not sign * new_metrics[settings.metric] > sign * valid_metrics[settings.metric]:
        log.info("%s: learning rate %.4g kept; %.4g gave valid %s %.4f against %.4f", spec.name, rate,
                 rate / factor, settings.metric, new_metrics[settings.metric], valid_metrics[settings.metric])
        return None
    new_info = {k: v for k, v in new_info.items() if not k.startswith("_")}
    new_info["refined"] = {"learning_rate": rate / factor, "from_learning_rate": rate, "from_rounds": int(rounds),
                           "rounds": int(new_info.get("best_iteration") or 0), "metric": settings.metric,
                           "valid": [valid_metrics[settings.metric], new_metrics[settings.metric]]}
    log.info("%s: learning rate %.4g -> %.4g (%d -> %d rounds): valid %s %.4f -> %.4f", spec.name, rate,
             rate / factor, rounds, new_info["refined"]["rounds"], settings.metric, valid_metrics[settings.metric],
             new_metrics[settings.metric])
    return estimator, new_info, new_metrics


def out_of_fold(spec: FamilySpec, data: PreparedData, params: dict[str, Any], settings: SearchSettings,
                rounds: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`params` fitted on each CV fold's training rows and predicted on its scoring rows: (row positions among
    the rows the folds split, predictions: class probabilities, or a regression's values on the target's own
    scale). Repeated CV: the first repeat only, each row predicted once (a mean over repeats would be a small
    ensemble of its own, flattering the family). Boosters train `rounds`."""
    size = max(int(f.rows.max()) for f in data.folds) + 1
    total, counts = None, np.zeros(size)
    for fold in data.folds:
        if counts.min() > 0:
            break  # every row predicted once: a repeat starts
        stopping.check()
        estimator, _ = fit_estimator(spec, Fold(fold.X_train, fold.y_train, None, None), params, settings,
                                     n_classes=data.n_classes, rounds=rounds)
        if data.n_classes:
            pred = np.asarray(estimator.predict_proba(fold.X_valid), dtype=np.float64)
        else:
            pred = inverse(np.asarray(estimator.predict(fold.X_valid), dtype=np.float64), data.target_transform)
        if total is None:
            total = np.zeros((size, *pred.shape[1:]))
        total[fold.rows] += pred
        counts[fold.rows] += 1
    seen = np.flatnonzero(counts)  # a time-ordered split never scores its first block
    mean = total[seen] / (counts[seen][:, None] if total.ndim > 1 else counts[seen])
    return seen, mean


def refit_on_rows(
    spec: FamilySpec, info: DatasetInfo, rows: pd.DataFrame, params: dict[str, Any], settings: SearchSettings,
    data_settings: DataSettings, best_iteration: int | None, gated_rows: int,
) -> tuple[Pipeline, dict[str, Any]]:
    """The production refit: `spec`'s pipeline with the same hyperparameters, fitted on `rows` (every
    labelled row: train+valid+test), with nothing held out. A boosting model has no rows left to
    early-stop on, so it trains a fixed number of rounds: the early-stopped count of the gated model
    times rows / `gated_rows` (more rows take more rounds at the same learning rate, roughly in
    proportion: the usual practice, and what the record says was done)."""
    X_all, y_all = features_and_target(rows, info)
    pre, Xt, yt, _ = _encode(spec, info, data_settings, X_all, y_all, None)
    rounds = max(1, round(best_iteration * len(rows) / gated_rows)) if best_iteration else None
    data = Fold(Xt, yt, None, None)
    start = time.perf_counter()
    estimator, fit_info = fit_estimator(spec, data, params, settings, n_classes=len(info.classes), rounds=rounds)
    if info.is_regression and data_settings.target_transform != "none":
        estimator = TargetTransformed(estimator, data_settings.target_transform)
    record = {"rows": int(len(rows)), "rows_fitted": int(len(yt)), "gated_rows": int(gated_rows),
              "params": dict(params), "fit_seconds": round(time.perf_counter() - start, 3)}
    if rounds is not None:
        record["boosting_rounds"] = {"gated": int(best_iteration), "refit": int(fit_info.get("best_iteration", rounds)),
                                     "scale": round(len(rows) / gated_rows, 4)}
    return Pipeline([("preprocess", pre), ("model", estimator)]), record


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial. A pruned trial has no value (Optuna stores the pruner's last intermediate
    value there, a negated loss for maximised metrics); `pruned_at_step` says where it stopped."""
    frame = study.trials_dataframe(attrs=("number", "value", "state", "params", "duration", "user_attrs"))
    if "state" in frame and "value" in frame:
        pruned = frame["state"] == "PRUNED"
        steps = {t.number: t.last_step for t in study.get_trials(deepcopy=False)}
        frame.insert(frame.columns.get_loc("state") + 1, "pruned_at_step",
                     [steps.get(n) if p else None for n, p in zip(frame["number"], pruned, strict=True)])
        frame.loc[pruned, "value"] = np.nan
    if "duration" in frame:
        frame["duration"] = frame["duration"].dt.total_seconds()
    return frame
