"""tune_model: one family's Optuna search on a prepared run, tracked in one Comet experiment.

    python flows/tune.py --run artifacts/runs/<run_id> --family lightgbm
"""

from config import local_server
from config.runtime import configure_environment
from flows import _cli

configure_environment()
if __name__ == "__main__":
    _cli.skip_teardown_at_exit()
    local_server.start_early()  # Prefect's local server boots while the imports below run

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import weakref  # noqa: E402

import numpy as np  # noqa: E402
import optuna  # noqa: E402
from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.tasks import exponential_backoff  # noqa: E402

from config.schema import TrainConfig  # noqa: E402
from tasks import monitoring  # noqa: E402
from tasks.ml.data import read_parquet, release_memory  # noqa: E402
from tasks.ml.estimators import get_family  # noqa: E402
from tasks.ml.preprocessing import PreprocessOptions  # noqa: E402
from tasks.ml.results import Candidate  # noqa: E402
from tasks.ml.search import (  # noqa: E402
    DataSettings,
    PreparedData,
    SearchSettings,
    best_pipeline,
    prepare_data,
    run_study,
    trials_table,
    worker_id,
)
from tasks.modeling import save_pipeline  # noqa: E402
from tasks.progress import BOARD  # noqa: E402
from tasks.runs import RunPaths, dataset_info, load_run_config, read_json, write_candidate  # noqa: E402
from tasks.tracking import Tracker, start_tracker  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)


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


PROGRESS_EVERY_S = 1.0
# One family at a time reads and encodes its splits (threads executor): encoding holds the raw split,
# a float copy and the encoded array at once, and two families doing it together set the search's
# memory peak on large tables. The wait is the other family's encoding (about 50 ms on the demo).
PREPARE_LOCK = threading.Lock()
# Families whose preprocessing is the same (random forest, LightGBM and XGBoost on numeric columns:
# no scaling) share one encoded copy of the data while any of them searches: on 1M x 40 float32 rows,
# 128 MB instead of 3 x 128 MB, and one encoding instead of three. Entries go with their last user.
_SHARED: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def encoding_group(spec, encoding: str) -> tuple[bool, bool]:  # noqa: ANN001
    """Families in the same group encode the data alike (and share the arrays): scaled or not, native
    categories or not."""
    return spec.scale, spec.native_categorical and encoding == "native"


def _prepare(spec, info, paths: RunPaths, data_settings) -> PreparedData:  # noqa: ANN001
    """The family's encoded train/valid arrays, shared with the families that encode them the same
    way. The raw splits are dropped once encoded, and their memory handed back: only the arrays the
    trials fit on stay in memory. Shared arrays are read-only, so no family can change another's."""
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


class TrialProgress:
    """Optuna callback: a log line, a Comet step and the Prefect progress artifact, per finished trial."""

    def __init__(self, family: str, metric: str, n_trials: int, tracker: Tracker, logger) -> None:
        from prefect.artifacts import create_progress_artifact

        self.family, self.metric, self.n_trials = family, metric, n_trials
        self.tracker, self.logger = tracker, logger
        self.done = 0
        BOARD.family_started(family, n_trials, metric)  # the command's progress display
        self.artifact = create_progress_artifact(
            0.0, key=f"search-progress-{family.replace('_', '-')}", description=f"{family}: 0/{n_trials} trials"
        )
        # The artifact is an API call that waits on the server's database (about 0.1 s on a busy
        # machine): a helper thread sends the latest progress once a second, so trials never wait
        # for it, and `close()` sends the final state.
        self._latest: tuple[float, str] | None = None
        self._pushed: tuple[float, str] | None = None
        self._stop = threading.Event()
        self._pusher = threading.Thread(target=self._push_every_second, name=f"progress-{family}", daemon=True)
        self._pusher.start()

    def _push(self) -> None:
        from prefect.artifacts import update_progress_artifact

        latest = self._latest  # (the callback replaces the tuple whole: no torn read)
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
        metrics = {k: v for k, v in trial.user_attrs.items() if isinstance(v, int | float)}
        self.tracker.log_params(trial.params, step=trial.number)
        self.tracker.log_metrics(
            {**{f"valid_{k}": v for k, v in metrics.items()}, "trial_seconds": seconds,
             "trial_pruned": float(state == "pruned")},
            step=trial.number,
        )
        if trial.state == optuna.trial.TrialState.PRUNED:  # its value is the pruner's, not the metric
            value = f"pruned at step {trial.last_step}" if trial.last_step is not None else "pruned"
        else:
            value = f"{trial.value:.4f}" if trial.value is not None else state
        self.logger.info(
            "[%s] trial %d/%d: %s=%s (best %s), %.2fs", self.family, trial.number + 1, self.n_trials,
            self.metric, value, best, seconds,
        )


def search_settings(
    config: TrainConfig, family: str, manifest: dict, n_jobs: int
) -> tuple[SearchSettings, DataSettings]:
    """What a family's search and its data preparation take from the run's config."""
    model_cfg = config.models.get(family)
    evaluation = config.evaluation
    settings = SearchSettings(
        metric=evaluation.comparison_metric,
        direction=evaluation.resolved_direction,
        n_trials=model_cfg.n_trials,
        timeout_s=model_cfg.timeout_s,
        seed=config.search.seed,
        beta=evaluation.beta,
        average=evaluation.average,
        early_stopping_rounds=config.search.early_stopping_rounds,
        n_jobs=n_jobs,
        pruner=config.search.pruner,
        storage=config.study_storage,
        study_name=study_name(config, family, manifest["data"]["sha256"]),
        imbalance=config.preprocessing.imbalance.method,
    )
    data_settings = DataSettings(
        options=PreprocessOptions.from_config(config.preprocessing, seed=config.search.seed),
        imbalance=config.preprocessing.imbalance.method,
        seed=config.search.seed,
        cv_folds=config.search.cv_folds,
        small_data_rows=config.search.small_data_rows,
        cv_repeats=config.search.cv_repeats,
        split_strategy=config.split.strategy,
        group_column=config.split.group_column,
    )
    return settings, data_settings


@flow(name="contribute_trials", flow_run_name="trials-{family}", log_prints=True)
def contribute_trials(family: str, run_dir: str, config: TrainConfig, n_jobs: int = 1) -> dict:
    """A worker's share of a family's search: run trials of the shared study (a PostgreSQL or journal
    storage) until its budget is met, counting every worker's trials. The run's own tune_model
    builds the model from the best trial, whichever worker ran it."""
    logger = get_run_logger()
    paths = RunPaths(run_dir)
    manifest = read_json(paths.manifest)
    if config.study_storage is None:
        raise ValueError("trial workers need a shared study: set search.storage to a journal file or postgresql://...")
    settings, data_settings = search_settings(config, family, manifest, n_jobs)
    spec = get_family(family)
    data = _prepare(spec, dataset_info(manifest), paths, data_settings)
    before = time.perf_counter()
    study, _ = run_study(spec, data, settings, callbacks=[_log_trial(family, settings, logger)])
    mine = [t for t in study.trials if t.user_attrs.get("worker") == worker_id()]
    logger.info("[%s] this worker ran %d of the study's %d trials in %.1fs", family, len(mine), len(study.trials),
                time.perf_counter() - before)
    return {"family": family, "study_name": settings.study_name, "trials_run": len(mine),
            "trials_total": len(study.trials)}


def _log_trial(family: str, settings: SearchSettings, logger):
    def log(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        value = f"{trial.value:.4f}" if trial.value is not None else trial.state.name.lower()
        logger.info("[%s] trial %d: %s=%s", family, trial.number, settings.metric, value)
    return log


@flow(name="tune_model", flow_run_name="tune-{family}", log_prints=True)
def tune_model(family: str, run_dir: str, config: TrainConfig, n_jobs: int = 1) -> Candidate:
    """Search `family`'s hyperparameters on the run's train/valid splits; save the best pipeline."""
    logger = get_run_logger()
    started = time.perf_counter()
    usage = monitoring.start(f"search {family}")
    paths = RunPaths(run_dir)
    manifest = read_json(paths.manifest)
    info = dataset_info(manifest)
    spec = get_family(family)
    settings, data_settings = search_settings(config, family, manifest, n_jobs)
    tracker = start_tracker(
        config.tracking, config.comet_dir, name=f"{paths.run_id}-{family}",
        tags=["gauntlet", "search", family],
    )
    try:
        tracker.log_params(
            {"family": family, "run_id": paths.run_id, "metric": settings.metric,
             "direction": settings.direction, "n_trials": settings.n_trials, "seed": settings.seed,
             "study_name": settings.study_name, "data_sha256": manifest["data"]["sha256"],
             "config_hash": manifest["config_hash"], "encoding": config.preprocessing.categorical.encoding,
             "imbalance": settings.imbalance, "cv_folds": config.search.cv_folds}
        )
        data = _prepare(spec, info, paths, data_settings)
        if data.mode == "repeated_cv":
            logger.warning("[%s] small data: trials are scored by %s instead of the small valid split",
                           family, data.description)
        resampled = (f", resampled by {settings.imbalance} from {data.n_train_rows} rows"
                     if len(data.y_train) != data.n_train_rows else "")
        logger.info("[%s] %d trials on %d rows x %d encoded features%s, scored on %s (study %s)", family,
                    settings.n_trials, *data.X_train.shape, resampled, data.description, settings.study_name)
        progress = TrialProgress(family, settings.metric, settings.n_trials, tracker, logger)
        try:
            study, kept = run_study(spec, data, settings, callbacks=[progress])
        finally:
            progress.close()

        best = study.best_trial
        pipeline, fit_info, fit_seconds, refitted, valid_metrics = best_pipeline(spec, data, study, kept, settings)
        model_path = paths.candidates / f"{family}.pkl"
        sha = save_pipeline(pipeline, model_path)
        table = trials_table(study)
        table.to_csv(paths.candidates / f"{family}_trials.csv", index=False)
        states = [t.state for t in study.trials]
        candidate = Candidate(
            family=family,
            metric=settings.metric,
            best_params=best.params,
            valid_metrics=valid_metrics,
            n_trials=len(states),
            n_complete=states.count(optuna.trial.TrialState.COMPLETE),
            n_pruned=states.count(optuna.trial.TrialState.PRUNED),
            best_trial=best.number,
            best_iteration=fit_info.get("best_iteration"),
            fit_seconds=round(fit_seconds, 3),
            search_seconds=round(time.perf_counter() - started, 3),
            pipeline_path=str(model_path),
            pipeline_sha256=sha,
            study_name=settings.study_name,
            tracking_key=tracker.key,
            selection=data.description,
            train_rows=data.n_train_rows,
            train_rows_fitted=int(len(data.y_train)),
        )
        tracker.log_params({f"best_{k}": v for k, v in best.params.items()})
        tracker.log_metrics({f"best_valid_{k}": v for k, v in valid_metrics.items()})
        tracker.log_other("best_trial", best.number)
        tracker.log_table("trials.csv", table)
        tracker.log_model(family, model_path)
        tracker.log_other("status", "ok")
        logger.info("[%s] best %s=%.4f (trial %d, %s in %.2fs)", family, settings.metric, best.value,
                    best.number, "refitted" if refitted else "model kept from the trial", fit_seconds)
        resources = monitoring.stop(usage)
        tracker.log_metrics({f"stage_{k}": v for k, v in resources.items() if isinstance(v, int | float)})
        tracker.end()
        candidate = candidate.model_copy(update={"tracking": tracker.describe(), "resources": resources})
        write_candidate(paths, candidate)
        BOARD.family_ended(family, "done")
        return candidate
    except Exception as exc:
        BOARD.family_ended(family, "failed")
        tracker.log_other("status", "failed")
        tracker.log_other("error", f"{type(exc).__name__}: {exc}")
        raise
    finally:
        monitoring.stop(usage)
        tracker.end()
        logger.info("[%s] %s", family, tracker.describe())


# Failures worth another try: a database or network that blinked, not a model that cannot fit.
# httpx's, from the Prefect API when it cannot be reached (a server restarting).
API_UNREACHABLE = ("ConnectError", "ConnectTimeout", "ReadError", "WriteError", "RemoteProtocolError", "PoolTimeout")
TRANSIENT_ERRORS = ("OperationalError", "InterfaceError", "DisconnectionError", "ConnectionError",
                    "ConnectionResetError", "ConnectionRefusedError", "TimeoutError", "ReadTimeout", *API_UNREACHABLE)
SEARCH_RETRIES = 2


class TransientSearchFailure(Exception):
    """A family's search failed on its storage or network: the search_family task retries it."""


class FamilySearchFailed(Exception):
    """A family's search failed for good (the model, not the infrastructure): it does not compete."""


def _retry_only_transient(task, task_run, state) -> bool:
    try:
        state.result()
    except TransientSearchFailure:
        return True
    except Exception:
        return False
    return False


def _search_cache_key(context, parameters: dict) -> str | None:
    """Same data, same search definition, same budget, persistent study: a finished family's search
    is not run again (a rerun after a crash resumes only the families that had not finished)."""
    config: TrainConfig = parameters["config"]
    family = parameters["family"]
    if config.study_storage is None:
        return None  # an in-memory study cannot be resumed: nothing to reuse either
    manifest = read_json(RunPaths(parameters["run_dir"]).manifest)
    model_cfg = config.models.get(family)
    key = [study_name(config, family, manifest["data"]["sha256"]), model_cfg.n_trials, model_cfg.timeout_s,
           config.study_storage, config.tracking.backend]
    return "search-" + hashlib.sha256(json.dumps(key, default=str).encode()).hexdigest()[:24]


@task(name="search_family", task_run_name="search-{family}", cache_key_fn=_search_cache_key,
      persist_result=True, retries=SEARCH_RETRIES, retry_delay_seconds=exponential_backoff(backoff_factor=5),
      retry_condition_fn=_retry_only_transient)
def search_family(family: str, run_dir: str, config: TrainConfig, n_jobs: int) -> Candidate:
    """Run the family's tune_model subflow and return its candidate.

    A failure of the study's storage or of the network (not of the model) is retried with backoff:
    a persistent study resumes where it stopped. Any other failure fails the task (never cached),
    and the train flow records the family as failed.
    """
    try:
        state = tune_model(family=family, run_dir=run_dir, config=config, n_jobs=n_jobs, return_state=True)
    except Exception as exc:  # the subflow could not even start: the Prefect API is unreachable
        if type(exc).__name__ in TRANSIENT_ERRORS:
            get_run_logger().warning("[%s] transient failure, will retry: %s: %s", family, type(exc).__name__, exc)
            raise TransientSearchFailure(f"{type(exc).__name__}: {exc}") from exc
        raise
    if state.is_completed():
        return state.result()
    exc = state.result(raise_on_failure=False)
    message = f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else (state.message or "failed")
    if isinstance(exc, BaseException) and type(exc).__name__ in TRANSIENT_ERRORS:
        get_run_logger().warning("[%s] transient failure, will retry: %s", family, message)
        raise TransientSearchFailure(message)
    get_run_logger().error("[%s] search failed: %s", family, message)
    raise FamilySearchFailed(message)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one family's search on a prepared run.")
    parser.add_argument("--run", required=True, help="artifacts/runs/<run_id>")
    parser.add_argument("--family", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--worker", action="store_true",
                        help="only contribute trials to the family's shared study (search.storage)")
    parser.add_argument("--threads", type=int, default=1, help="threads for the models (default 1)")
    args = parser.parse_args(argv)
    from config.errors import GauntletError
    from flows._cli import fail, stop_local_server

    try:
        paths = RunPaths(args.run)
        config = load_run_config(paths, args.set)
        get_family(args.family)
        local_server.wait_until_ready()
        if args.worker:
            result = contribute_trials(family=args.family, run_dir=str(paths.root), config=config, n_jobs=args.threads)
        else:
            result = tune_model(family=args.family, run_dir=str(paths.root), config=config,
                                n_jobs=args.threads).model_dump(mode="json")
    except (GauntletError, KeyError, ValueError) as exc:
        return fail(exc.args[0] if exc.args else exc)
    stop_local_server()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    _cli.exit(main())
