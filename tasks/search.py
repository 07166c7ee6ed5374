"""One family's hyperparameter search, and running every family's search as a Prefect task.

A search's storage or network failing is retried (a persistent study resumes); a model failing
is final for its family only. A family whose identical search finished in an earlier run is reused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff
from threadpoolctl import threadpool_limits

from config.errors import GauntletError
from config.schema import TrainConfig
from tasks import monitoring, stopping
from tasks.ml.budget import SearchBudget, TimeLimits, raise_hint, stop_note
from tasks.ml.data import DatasetInfo, read_parquet, release_memory
from tasks.ml.estimators import FamilySpec, get_family
from tasks.ml.planning import CoreShare, SearchPlan, encoding_group
from tasks.ml.preprocessing import PreprocessOptions
from tasks.ml.results import Candidate
from tasks.ml.search import (
    FINISHED,
    TRIAL_FACTS,
    DataSettings,
    PreparedData,
    SearchSettings,
    best_pipeline,
    out_of_fold,
    prepare_data,
    run_study,
    trials_table,
    worker_id,
)
from tasks.modeling import file_sha256, save_pipeline
from tasks.progress import BOARD
from tasks.runs import RunPaths, dataset_info, read_manifest, write_candidate
from tasks.tracking import Tracker, start_tracker

optuna.logging.set_verbosity(optuna.logging.WARNING)

# Failures worth another try: a database or network that blinked, not a model that cannot fit.
API_UNREACHABLE = ("ConnectError", "ConnectTimeout", "ReadError", "WriteError", "RemoteProtocolError", "PoolTimeout")
TRANSIENT_ERRORS = ("OperationalError", "InterfaceError", "DisconnectionError", "ConnectionError",
                    "ConnectionResetError", "ConnectionRefusedError", "TimeoutError", "ReadTimeout", *API_UNREACHABLE)
SEARCH_RETRIES = 2
API_RETRY_PAUSES_S = (5, 15)
PROGRESS_EVERY_S = 1.0
TRIAL_WORKER_DEPLOYMENT = "contribute_trials/worker"


class TransientSearchFailure(Exception):
    """A family's search failed on its storage or network: the search_family task retries it."""


class FamilySearchFailed(Exception):
    """A family's search failed for good (the model, not the infrastructure): it does not compete."""


def study_name(config: TrainConfig, family: str, data_sha256: str) -> str:
    """Deterministic from what defines the search (not from trial counts), so a rerun resumes it."""
    key = {
        "family": family,
        "split": config.split.model_dump(mode="json"),
        "search": {"seed": config.search.seed, "early_stopping_rounds": config.search.early_stopping_rounds},
        "metric": [config.evaluation.comparison_metric, config.evaluation.beta, config.evaluation.average],
        "features": [config.data.target, sorted(config.data.drop_columns)],
        "preprocessing": config.preprocessing.model_dump(mode="json"),
        "cv": [config.search.cv_folds, config.search.small_data_rows, config.search.cv_repeats],
        **({"sample_rows": config.data.sample_rows} if config.data.sample_rows else {}),  # other rows, other study
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
    return f"{config.model_name}-{family}-{data_sha256[:12]}-{digest}"


def search_settings(config: TrainConfig, family: str, manifest: dict, n_jobs: int) -> tuple[SearchSettings,
                                                                                            DataSettings]:
    """What a family's search and its data preparation take from the run's config."""
    dataset = manifest.get("dataset", {})
    task = dataset.get("task", "binary")
    model_cfg, evaluation = config.models.get(family), config.evaluation.for_task(task)
    # A regression has no classes to weigh or resample.
    imbalance = "none" if task == "regression" else config.preprocessing.imbalance.method
    settings = SearchSettings(
        metric=evaluation.comparison_metric, direction=evaluation.resolved_direction, n_trials=model_cfg.n_trials,
        timeout_s=model_cfg.timeout_s, seed=config.search.seed, beta=evaluation.beta, average=evaluation.average,
        early_stopping_rounds=config.search.early_stopping_rounds, n_jobs=n_jobs, pruner=config.search.pruner,
        storage=config.study_storage, study_name=study_name(config, family, manifest["data"]["sha256"]),
        imbalance=imbalance, parallel_trials=config.search.parallel_trials,
        sole_writer=config.search.trial_workers == 1,
    )
    data_settings = DataSettings(
        options=PreprocessOptions.from_config(config.preprocessing, seed=config.search.seed),
        imbalance=imbalance, seed=config.search.seed, cv_folds=config.search.cv_folds,
        small_data_rows=config.search.small_data_rows, cv_repeats=config.search.cv_repeats,
        split_strategy=config.split.strategy, group_column=config.split.group_column,
        target_transform=dataset.get("target_transform", "none"),
    )
    return settings, data_settings


# One family at a time reads and encodes its splits: two at once set the search's memory peak.
PREPARE_LOCK = threading.Lock()
# Families that encode alike share one read-only encoded copy while any of them searches.
_SHARED: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
# run_dir -> the whole-search time budget its families share (search.time_budget_s), while they search.
_BUDGETS: dict[str, SearchBudget] = {}


def shared_family_data(spec: FamilySpec, info: DatasetInfo, paths: RunPaths, data_settings: DataSettings
                       ) -> PreparedData:
    """The family's encoded train/valid arrays, shared (read-only) with the families that encode alike."""
    key = (str(paths.root), *encoding_group(spec, data_settings.options.encoding), repr(data_settings))
    with PREPARE_LOCK:
        data = _SHARED.get(key)
        if data is None:
            data = prepare_data(spec, info, read_parquet(paths.split("train")),
                                read_parquet(paths.split("valid")), data_settings)
            for array in (data.X_train, data.y_train, data.X_valid, data.y_valid):
                if isinstance(array, np.ndarray):
                    array.flags.writeable = False
            _SHARED[key] = data
            release_memory(paths.search_splits_bytes())
    return data


@dataclass(frozen=True)
class FamilySearch:
    """One family's search of one run: what it searches, on what, with which settings."""

    family: str
    paths: RunPaths
    config: TrainConfig
    manifest: dict[str, Any]
    info: DatasetInfo
    settings: SearchSettings
    data_settings: DataSettings
    usage: monitoring.Usage  # the family's wall/CPU time and peak memory, preparation included
    started: float
    cores: CoreShare | None = None  # the run's cores, handed on as families end (None: n_jobs throughout)

    @property
    def spec(self) -> FamilySpec:
        return get_family(self.family)


@task(name="describe_family_search", cache_policy=NO_CACHE)
def describe_family_search(family: str, run_dir: str, config: TrainConfig, n_jobs: int,
                           shared_study: bool = False) -> FamilySearch:
    """The family's search settings from the run's manifest and config."""
    if shared_study and config.study_storage is None:
        raise GauntletError("trial workers need a shared study: set search.storage to a journal file or "
                            "postgresql://...")
    paths = RunPaths(run_dir)
    manifest = read_manifest(paths)
    get_family(family)
    settings, data_settings = search_settings(config, family, manifest, n_jobs)
    return FamilySearch(family, paths, config, manifest, dataset_info(manifest), settings, data_settings,
                        monitoring.start(f"search {family}"), time.perf_counter(),
                        None if shared_study else core_share(config, paths))


def search_plan(config: TrainConfig, train_rows: int = 0) -> SearchPlan:
    """The order, concurrency and threads of the run's family searches on this machine's cores."""
    import os

    from tasks.ml.planning import plan_search

    families = config.families()
    return plan_search(families, {f: config.models.get(f).n_trials for f in families}, os.cpu_count() or 1,
                       config.search.parallelism, config.preprocessing.categorical.encoding, train_rows)


def core_share(config: TrainConfig, paths: RunPaths) -> CoreShare:
    """The run's cores as its search plan shares them."""
    import os

    return CoreShare(paths.searches_ended, config.families(), os.cpu_count() or 1, search_plan(config).parallel)


@task(name="prepare_family_data", cache_policy=NO_CACHE)
def prepare_family_data(job: FamilySearch) -> PreparedData:
    """The encoded arrays the trials fit on (shared with families that encode alike)."""
    try:
        data = shared_family_data(job.spec, job.info, job.paths, job.data_settings)
    except BaseException:
        monitoring.stop(job.usage)
        BOARD.family_ended(job.family, "failed")
        raise
    logger = get_run_logger()
    if data.mode == "repeated_cv":
        logger.warning("[%s] small data: trials are scored by %s instead of the small valid split",
                       job.family, data.description)
    resampled = (f", resampled by {job.settings.imbalance} from {data.n_train_rows} rows"
                 if len(data.y_train) != data.n_train_rows else "")
    logger.info("[%s] %d trials on %d rows x %d encoded features%s, scored on %s (study %s)", job.family,
                job.settings.n_trials, *data.X_train.shape, resampled, data.description, job.settings.study_name)
    return data


@task(name="search_hyperparameters", cache_policy=NO_CACHE)
def search_hyperparameters(job: FamilySearch, data: PreparedData) -> Candidate:
    """The family's Optuna study, its best pipeline saved, one tracker experiment; the candidate."""
    logger, family, settings, paths = get_run_logger(), job.family, job.settings, job.paths
    tracker = start_tracker(job.config.tracking, job.config.comet_dir / paths.run_id, name=f"{paths.run_id}-{family}",
                            tags=["gauntlet", "search", family])
    try:
        tracker.log_params(
            {"family": family, "run_id": paths.run_id, "metric": settings.metric, "direction": settings.direction,
             "n_trials": settings.n_trials, "seed": settings.seed, "study_name": settings.study_name,
             "data_sha256": job.manifest["data"]["sha256"], "config_hash": job.manifest["config_hash"],
             "encoding": job.config.preprocessing.categorical.encoding, "imbalance": settings.imbalance,
             "cv_folds": job.config.search.cv_folds})
        progress = TrialProgress(family, settings.metric, settings.n_trials, tracker, logger)
        limits = TimeLimits(family, settings.timeout_s, _budget_for(job))
        try:
            with stopping.in_child():  # search.executor processes: inside Prefect's engines, which take SIGTERM
                study, kept = run_study(job.spec, data, settings, callbacks=[progress], limits=limits,
                                        threads=_thread_count(job, logger))
        finally:
            progress.close()
            limits.close()
            if job.cores is not None:
                job.cores.end(family)  # no more trials here: the others' next trials take these cores
        candidate = _save_best(job, data, study, kept, tracker, _stopped(job, study, limits))
        refined, sample = candidate.candidate.refined, candidate.candidate.trial_rows
        fitted = (f"refitted on all {len(data.y_train):,} train rows (its trials fit {sample:,})" if sample
                  else "refitted" if candidate.refitted else "model kept from the trial")
        logger.info("[%s] best %s=%.4f (trial %d%s, %s in %.2fs)", family, settings.metric,
                    candidate.candidate.valid_metrics.get(settings.metric, study.best_value), study.best_trial.number,
                    f" at learning rate {refined['learning_rate']:.4g}" if refined else "", fitted,
                    candidate.fit_seconds)
        resources = monitoring.stop(job.usage)
        tracker.log_metrics({f"stage_{k}": v for k, v in resources.items() if isinstance(v, int | float)})
        tracker.end()
        result = candidate.candidate.model_copy(update={
            "tracking": tracker.describe(), "resources": resources,
            "tracking_archive": str(tracker.archive) if tracker.archive else None})
        write_candidate(paths, result)
        BOARD.family_ended(family, result.stopped or "done")
        return result
    except Exception as exc:
        BOARD.family_ended(family, "failed")
        tracker.log_other("status", "failed")
        tracker.log_other("error", f"{type(exc).__name__}: {exc}")
        raise
    finally:
        monitoring.stop(job.usage)
        tracker.end()
        logger.info("[%s] %s", family, tracker.describe())


@dataclass(frozen=True)
class _Best:
    candidate: Candidate
    refitted: bool
    fit_seconds: float


def _thread_count(job: FamilySearch, logger: Any) -> Any:
    """The family's share of the cores now (more once other families ended), and the families searching."""
    if job.cores is None:
        return None
    last = [job.settings.n_jobs]

    def threads() -> tuple[int, int]:
        searching = job.cores.searching()
        n = job.cores.threads(searching)
        if n != last[0]:
            parallel = job.spec.parallel_trials and job.config.search.parallel_trials
            how = "parallel trials" if parallel else "threads per trial"
            logger.info("[%s] %d famil%s still searching: its trials now use %d cores (%s)", job.family,
                        searching, "y" if searching == 1 else "ies", n, how)
            last[0] = n
        return n, searching

    return threads


def _budget_for(job: FamilySearch) -> SearchBudget | None:
    """The run's shared budget; in another process (search.executor processes) this family's own
    share of it, without the time other families leave over."""
    total = job.config.search.time_budget_s
    if total is None:
        return None
    budget = _BUDGETS.get(str(job.paths.root))
    if budget is None:
        budget = SearchBudget(total, {job.family: 1.0})
    return budget


def _stopped(job: FamilySearch, study: optuna.Study, limits: TimeLimits) -> str | None:
    """The leaderboard's note when a time limit ended the search short of n_trials, with a warning."""
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    if limits.stopped_by is None or done >= job.settings.n_trials:
        return None
    get_run_logger().warning("[%s] %s ran %d of its %d trials: raise %s (or remove it) to run them all",
                             job.family, limits.stopped_by, done, job.settings.n_trials,
                             raise_hint(limits.stopped_by, job.family))
    return stop_note(limits.stopped_by, done, job.settings.n_trials)


def _save_best(job: FamilySearch, data: PreparedData, study: optuna.Study, kept: Any, tracker: Tracker,
               stopped: str | None = None) -> _Best:
    """The best trial's pipeline and the trials table saved in the run, and logged to the tracker."""
    family, settings, paths = job.family, job.settings, job.paths
    best = study.best_trial
    refine = job.config.search.refine_learning_rate and stopped is None  # a time limit leaves no time for it
    pipeline, fit_info, fit_seconds, refitted, valid_metrics = best_pipeline(job.spec, data, study, kept, settings,
                                                                             refine=refine)
    refined, trial_rows = fit_info.pop("refined", None), fit_info.pop("trial_rows", None)
    params = {**best.params, "learning_rate": refined["learning_rate"]} if refined else best.params
    model_path = paths.candidates / f"{family}.pkl"
    sha = save_pipeline(pipeline, model_path)
    oof_path = None if stopped else _save_out_of_fold(job, data, params, fit_info.get("best_iteration"), settings)
    table = trials_table(study)
    table.to_csv(paths.candidates / f"{family}_trials.csv", index=False)
    states = [t.state for t in study.trials]
    candidate = Candidate(
        family=family, metric=settings.metric, best_params=params, valid_metrics=valid_metrics, refined=refined,
        n_trials=len(states), n_complete=states.count(optuna.trial.TrialState.COMPLETE),
        n_pruned=states.count(optuna.trial.TrialState.PRUNED), best_trial=best.number,
        best_iteration=fit_info.get("best_iteration"), fit_seconds=round(fit_seconds, 3),
        search_seconds=round(time.perf_counter() - job.started, 3), pipeline_path=str(model_path),
        pipeline_sha256=sha, study_name=settings.study_name, tracking_key=tracker.key, selection=data.description,
        train_rows=data.n_train_rows, train_rows_fitted=int(len(data.y_train)), stopped=stopped,
        oof_path=str(oof_path) if oof_path else None,
        oof_rows=("train+valid" if data.mode == "repeated_cv" else "train") if oof_path else None,
        trial_rows=trial_rows,
    )
    tracker.log_params({f"best_{k}": v for k, v in params.items()})
    tracker.log_metrics({f"best_valid_{k}": v for k, v in valid_metrics.items()})
    tracker.log_other("best_trial", best.number)
    tracker.log_table("trials.csv", table)
    tracker.log_model(family, model_path)
    tracker.log_other("status", "ok")
    return _Best(candidate, refitted, fit_seconds)


def _save_out_of_fold(job: FamilySearch, data: PreparedData, params: dict[str, Any], rounds: int | None,
                      settings: SearchSettings) -> Path | None:
    """CV modes, with the greedy ensemble on: the final parameters' out-of-fold predictions, saved for the
    ensemble's weights (a holdout run chooses them on the valid split's predictions instead). A failure
    here costs the out-of-fold weights only (the ensemble then weighs on valid, or is skipped), with a warning."""
    ensemble = job.config.evaluation.ensemble
    if not data.folds or not (ensemble.enabled and ensemble.method == "greedy"):
        return None
    if rounds and data.mode == "cv":  # the final model's rounds on train, for folds of (k - 1) / k of it
        rounds = max(1, round(rounds * (len(data.folds) - 1) / len(data.folds)))
    try:
        rows, predictions = out_of_fold(job.spec, data, params, settings, rounds)
    except (stopping.Stopped, KeyboardInterrupt):
        raise
    except Exception as exc:  # the one step's failure, recorded in the log; the candidate stands
        get_run_logger().warning("[%s] out-of-fold predictions failed (%s: %s): the ensemble will not weigh "
                                 "this family out of fold", job.family, type(exc).__name__, exc)
        return None
    path = job.paths.candidates / f"{job.family}_oof.npz"
    np.savez(path, rows=rows, predictions=predictions)
    return path


@task(name="contribute_to_study", cache_policy=NO_CACHE)
def contribute_to_study(job: FamilySearch, data: PreparedData) -> dict:
    """Run trials of the family's shared study until its budget is met, counting every worker's trials."""
    logger, family, settings = get_run_logger(), job.family, job.settings

    def log(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        value = f"{trial.value:.4f}" if trial.value is not None else trial.state.name.lower()
        logger.info("[%s] trial %d: %s=%s", family, trial.number, settings.metric, value)

    try:
        study, _ = run_study(job.spec, data, settings, callbacks=[log])
    finally:
        monitoring.stop(job.usage)
    mine = [t for t in study.trials if t.user_attrs.get("worker") == worker_id()]
    logger.info("[%s] this worker ran %d of the study's %d trials in %.1fs", family, len(mine), len(study.trials),
                time.perf_counter() - job.started)
    return {"family": family, "study_name": settings.study_name, "trials_run": len(mine),
            "trials_total": len(study.trials)}


class TrialProgress:
    """Optuna callback: a log line, a tracker step and the Prefect progress artifact, per finished trial."""

    def __init__(self, family: str, metric: str, n_trials: int, tracker: Tracker, logger: Any) -> None:
        from prefect.artifacts import create_progress_artifact

        self.family, self.metric, self.n_trials = family, metric, n_trials
        self.tracker, self.logger = tracker, logger
        self.done = 0
        BOARD.family_started(family, n_trials, metric)
        self.artifact = create_progress_artifact(
            0.0, key=f"search-progress-{family.replace('_', '-')}", description=f"{family}: 0/{n_trials} trials"
        )
        # The artifact waits on the server's database: a helper thread sends it, so trials never wait.
        self._latest: tuple[float, str] | None = None
        self._pushed: tuple[float, str] | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pusher = threading.Thread(target=self._push_every_second, name=f"progress-{family}", daemon=True)
        self._pusher.start()

    def _push(self) -> None:
        from prefect.artifacts import update_progress_artifact

        latest = self._latest  # replaced whole by the callback: no torn read
        if latest is not None and latest != self._pushed:
            self._pushed = latest
            try:
                update_progress_artifact(self.artifact, latest[0], description=latest[1])
            except Exception as exc:  # progress display only: never a reason to fail a search
                self.logger.debug("[%s] progress artifact not updated: %s", self.family, exc)

    def _push_every_second(self) -> None:
        while not self._stop.wait(PROGRESS_EVERY_S):
            self._push()

    def close(self) -> None:
        """Stop the helper thread and send the last progress."""
        self._stop.set()
        self._pusher.join()
        self._push()

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        with self._lock:  # parallel trials end in their own threads
            self._record(study, trial)

    def _record(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.done += 1
        try:
            best_value = study.best_value
            best = f"{best_value:.4f}"
        except ValueError:  # no trial completed yet
            best_value, best = None, "-"
        BOARD.trial_done(self.family, self.done, best_value)
        self._latest = (min(100.0, 100.0 * self.done / self.n_trials),
                        f"{self.family}: {self.done}/{self.n_trials} trials, best {self.metric} {best}")
        state = trial.state.name.lower()
        seconds = trial.duration.total_seconds() if trial.duration else 0.0
        metrics = {k if k in TRIAL_FACTS else f"valid_{k}": v for k, v in trial.user_attrs.items()
                   if isinstance(v, int | float)}
        self.tracker.log_params(trial.params, step=trial.number)
        self.tracker.log_metrics(
            {**metrics, "trial_seconds": seconds,
             "trial_pruned": float(state == "pruned")},
            step=trial.number,
        )
        if trial.state == optuna.trial.TrialState.PRUNED:  # its value is the pruner's, not the metric
            value = f"pruned at step {trial.last_step}" if trial.last_step is not None else "pruned"
        else:
            value = f"{trial.value:.4f}" if trial.value is not None else state
        # Optuna's trial number, as in trials.csv and the best-trial line; then how many of the budget ran.
        self.logger.info("[%s] trial %d (%d/%d): %s=%s (best %s), %.2fs", self.family, trial.number, self.done,
                         self.n_trials, self.metric, value, best, seconds)


# ---------------------------------------------------------------------------------------------
# Every family's search, as Prefect tasks run `parallel` at a time


def _retry_only_transient(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect's retry hook
    try:
        state.result()
    except TransientSearchFailure:
        return True
    except Exception:
        return False
    return False


def _search_cache_key(context: Any, parameters: dict) -> str | None:
    """Same data, search definition, budget and persistent study: a finished search is not run again."""
    config: TrainConfig = parameters["config"]
    family = parameters["family"]
    if config.study_storage is None:
        return None  # an in-memory study cannot be resumed: nothing to reuse either
    manifest = read_manifest(RunPaths(parameters["run_dir"]))
    model_cfg = config.models.get(family)
    key = [study_name(config, family, manifest["data"]["sha256"]), model_cfg.n_trials, model_cfg.timeout_s,
           config.search.time_budget_s, config.study_storage, config.tracking.backend,
           # what the candidate holds besides the study's best trial: a refined rate, out-of-fold predictions
           config.search.refine_learning_rate, config.evaluation.ensemble.enabled, config.evaluation.ensemble.method]
    return "search-" + hashlib.sha256(json.dumps(key, default=str).encode()).hexdigest()[:24]


@task(name="search_family", task_run_name="search-{family}", cache_key_fn=_search_cache_key,
      persist_result=True, retries=SEARCH_RETRIES, retry_delay_seconds=exponential_backoff(backoff_factor=5),
      retry_condition_fn=_retry_only_transient)
def search_family(family: str, run_dir: str, config: TrainConfig, n_jobs: int, subflow: Any) -> Candidate:
    """Run the family's search subflow (`tune_model`) and return its candidate; storage or network
    failures are retried with backoff, any other failure fails the task (never cached)."""
    if isinstance(subflow, str):  # search.executor processes: the flow by name, imported with its module's types
        import importlib

        if stopping.install_in_child():
            from tasks.progress import quiet_stop_logs

            quiet_stop_logs()  # this process's Prefect console: no traceback per task the stop ends

        module, _, name = subflow.partition(":")
        subflow = getattr(importlib.import_module(module), name)
    from tasks.stages import without_heartbeats

    try:
        with without_heartbeats():  # the train flow's process (or its child): the parent's heartbeat covers it
            state = subflow(family=family, run_dir=run_dir, config=config, n_jobs=n_jobs, return_state=True)
    except Exception as exc:  # the subflow could not even start: the Prefect API is unreachable
        if type(exc).__name__ in TRANSIENT_ERRORS:
            get_run_logger().warning("[%s] transient failure, will retry: %s: %s", family, type(exc).__name__, exc)
            raise TransientSearchFailure(f"{type(exc).__name__}: {exc}") from exc
        raise
    if state.is_completed():
        return state.result()
    stopping.check()  # stopped, not failed: no error line, no failed candidate
    exc = state.result(raise_on_failure=False)
    message = f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else (state.message or "failed")
    if isinstance(exc, BaseException) and type(exc).__name__ in TRANSIENT_ERRORS:
        get_run_logger().warning("[%s] transient failure, will retry: %s", family, message)
        raise TransientSearchFailure(message)
    get_run_logger().error("[%s] search failed: %s", family, message)
    raise FamilySearchFailed(message)


def _api_unreachable(outcome: object) -> bool:
    """A search that failed because the Prefect API could not be reached, not because of the model."""
    if isinstance(outcome, Candidate) or not isinstance(outcome, BaseException):
        return False
    text = f"{type(outcome).__name__}: {outcome}"
    return type(outcome).__name__ in API_UNREACHABLE or "All connection attempts failed" in text


def _submit(runner: Any, task_: Any, parameters: dict) -> Any:
    """runner.submit, tried again while the Prefect API is unreachable (it creates the task run there)."""
    for pause in (*API_RETRY_PAUSES_S, None):
        try:
            return runner.submit(task_, parameters)
        except Exception as exc:
            if pause is None or not _api_unreachable(exc):
                raise
            get_run_logger().warning("the Prefect API was unreachable (%s: %s); submitting %s again in %ds",
                                     type(exc).__name__, exc, parameters["family"], pause)
            time.sleep(pause)
    raise AssertionError("unreachable")


def _adopt(candidate: Candidate, paths: RunPaths) -> Candidate | None:
    """A candidate cached from an earlier run, copied into this run; None when its files are gone."""
    source = Path(candidate.pipeline_path)
    if source.parent.resolve() == paths.candidates.resolve():
        return candidate
    if not source.is_file() or file_sha256(source) != candidate.pipeline_sha256:
        return None
    paths.candidates.mkdir(parents=True, exist_ok=True)
    target = paths.candidates / source.name
    shutil.copy2(source, target)
    trials = source.with_name(f"{candidate.family}_trials.csv")
    if trials.is_file():
        shutil.copy2(trials, paths.candidates / trials.name)
    update = {"pipeline_path": str(target), "reused_from": str(source.parents[1])}
    if getattr(candidate, "oof_path", None):  # a candidate cached before out-of-fold predictions has none
        oof = Path(candidate.oof_path)
        update["oof_path"] = str(paths.candidates / oof.name) if oof.is_file() else None
        if oof.is_file():
            shutil.copy2(oof, paths.candidates / oof.name)
    adopted = candidate.model_copy(update=update)
    write_candidate(paths, adopted)
    return adopted


def run_family_searches(config: TrainConfig, paths: RunPaths, plan: SearchPlan, subflow: Any) -> list[Candidate]:
    """Every family's `search_family` task, `plan.parallel` at a time in plan order; failures become
    failed candidates. Cached searches whose files are gone, and families lost to an unreachable
    Prefect API, are searched again."""
    from prefect.futures import as_completed
    from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

    logger = get_run_logger()
    runner_type = ThreadPoolTaskRunner if config.search.executor == "threads" else ProcessPoolTaskRunner
    logger.info("searching %s, %d at a time in %s, %d thread(s) each", ", ".join(plan.order), plan.parallel,
                config.search.executor, plan.threads)
    helpers = start_trial_workers(config, paths, plan.order)
    if config.search.time_budget_s:
        weights = {f: get_family(f).cost * config.models.get(f).n_trials for f in plan.order}
        _BUDGETS[str(paths.root)] = budget = SearchBudget(config.search.time_budget_s, weights, plan.parallel)
        logger.info("time budget %.0f s, shared by expected cost: %s", config.search.time_budget_s,
                    ", ".join(f"{f} {s:.0f} s" for f, s in budget.allotted.items()))

    # Another process gets the subflow by name: pickled by value, its type hints would not resolve there.
    by_name = subflow if config.search.executor == "threads" else f"{subflow.fn.__module__}:{subflow.fn.__name__}"

    def inputs(family: str) -> dict:
        return {"family": family, "run_dir": str(paths.root), "config": config, "n_jobs": plan.threads,
                "subflow": by_name}

    cores = core_share(config, paths)

    def run_all(families: list[str], refresh: bool) -> dict[str, object]:
        task_ = search_family.with_options(refresh_cache=True) if refresh else search_family
        for family in families:
            cores.begin(family)
        futures = {f: _submit(runner, task_, inputs(f)) for f in families}
        family_of = {future.task_run_id: f for f, future in futures.items()}
        for future in as_completed(list(futures.values())):  # each family's cores go on as soon as it ends
            cores.end(family_of[future.task_run_id])
        return {f: future.result(raise_on_failure=False) for f, future in futures.items()}

    relay = stopping.relaying() if config.search.executor == "processes" else contextlib.nullcontext()
    with threadpool_limits(limits=plan.threads), runner_type(max_workers=plan.parallel) as runner, relay:
        outcomes = run_all(plan.order, refresh=False)
        if stopping.requested():  # search processes counted their own trials
            stopping.trial_finished(sum(o.trials for o in outcomes.values() if isinstance(o, stopping.Stopped)))
        stopping.check()  # nothing is retried or evaluated after a stop
        adopted = {f: _adopt(o, paths) for f, o in outcomes.items() if isinstance(o, Candidate)}
        gone = [f for f, candidate in adopted.items() if candidate is None]
        # A cached search that a time limit cut short resumes its study instead of being reused.
        unfinished = [f for f, c in adopted.items() if c is not None and c.reused_from and c.stopped]
        outcomes.update(adopted)
        if gone:
            logger.warning("[%s] the cached search's model file is gone or changed; searching again", ", ".join(gone))
        if unfinished:
            logger.info("[%s] the earlier search was %s; resuming its study", ", ".join(unfinished),
                        "; ".join(str(outcomes[f].stopped) for f in unfinished))
        if gone or unfinished:
            outcomes.update(run_all(gone + unfinished, refresh=True))
        # Prefect's client retries a connection it has used, not a fresh one's first request.
        for pause in API_RETRY_PAUSES_S:
            lost = [f for f, outcome in outcomes.items() if _api_unreachable(outcome)]
            if not lost:
                break
            logger.warning("the Prefect API was unreachable for %s (%s); searching again in %ds", ", ".join(lost),
                           outcomes[lost[0]], pause)
            time.sleep(pause)
            outcomes.update(run_all(lost, refresh=True))
    _BUDGETS.pop(str(paths.root), None)
    if helpers:
        logger.info("trial workers: %s", "; ".join(f"{name} {state}" for name, state in _run_states(helpers)))
    return [_as_candidate(family, outcomes[family], config, paths) for family in config.families()]


def _as_candidate(family: str, outcome: object, config: TrainConfig, paths: RunPaths) -> Candidate:
    if isinstance(outcome, Candidate):
        if outcome.reused_from:
            get_run_logger().info("[%s] finished in an earlier run with the same data, search and budget: reused "
                                  "from %s", family, outcome.reused_from)
        return outcome
    message = str(outcome) if isinstance(outcome, FamilySearchFailed) else f"{outcome} (after {SEARCH_RETRIES} retries)"
    candidate = Candidate.failed(family, message, metric=config.evaluation.comparison_metric)
    write_candidate(paths, candidate)
    return candidate


def start_trial_workers(config: TrainConfig, paths: RunPaths, families: list[str]) -> list:
    """search.trial_workers N > 1: N - 1 extra flow runs per family, each running trials of the family's
    shared study, executed by whichever workers poll the work pool. Prefect schedules, the study shares."""
    extra = config.search.trial_workers - 1
    if extra < 1:
        return []
    from prefect.deployments import run_deployment

    if config.study_storage is None:
        raise GauntletError("search.trial_workers > 1 needs a shared study: set search.storage to auto, "
                            "journal:PATH (one machine) or postgresql://... (many machines)")
    config = config.model_copy(update={"artifacts_dir": str(Path(config.artifacts_dir).resolve())})
    runs = []
    for family in families:
        for _ in range(extra):
            try:
                runs.append(run_deployment(
                    TRIAL_WORKER_DEPLOYMENT, timeout=0, as_subflow=False, tags=["gauntlet", "trial-worker"],
                    parameters={"family": family, "run_dir": str(paths.root.resolve()),
                                "config": config.model_dump(mode="json"), "n_jobs": 1},
                ))
            except Exception as exc:  # no server, or the deployment was never registered
                raise GauntletError(
                    f"search.trial_workers {config.search.trial_workers}: cannot start a trial worker run "
                    f"({type(exc).__name__}: {exc}); run `make server`, `make deploy` and `make worker`, "
                    "and point PREFECT_API_URL at that server"
                ) from exc
    get_run_logger().info("started %d trial worker run(s) (%s) for %d families", len(runs),
                          TRIAL_WORKER_DEPLOYMENT, len(families))
    return runs


def _run_states(runs: list) -> list[tuple[str, str]]:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return [(run.name, client.read_flow_run(run.id).state_name or "?") for run in runs]


def search_all_families(config: TrainConfig, paths: RunPaths, stages: dict[str, dict], subflow: Any
                        ) -> list[Candidate]:
    """The planned searches as the run's `search` stage; fails only when every family failed."""

    from tasks.stages import AllFamiliesFailed, record_stages

    plan = search_plan(config, read_manifest(paths)["splits"]["train"]["rows"])
    BOARD.set_stage("search")
    with monitoring.measure("search") as usage:  # measured here: stage() would re-word the errors below
        candidates = run_family_searches(config, paths, plan, subflow)
    stages["search"] = usage.record
    stages.update({f"search {c.family}": {**c.resources, **({"reused_from": c.reused_from} if c.reused_from else {})}
                   for c in candidates if c.resources})
    record_stages(paths, stages)  # the evaluation logs them to its experiment
    release_memory(paths.search_splits_bytes())
    failed = [c for c in candidates if c.status != "ok"]
    if len(failed) == len(candidates):
        raise AllFamiliesFailed(
            "search: every model family failed: " + "; ".join(f"{c.family}: {c.error}" for c in failed))
    if failed:
        get_run_logger().warning("%d famil%s failed and will not compete: %s", len(failed),
                                 "y" if len(failed) == 1 else "ies", ", ".join(c.family for c in failed))
    return candidates
