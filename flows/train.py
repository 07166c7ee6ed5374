"""train: a table in, a registered champion out.

    python flows/train.py --config config/train.yaml [--set models.xgboost.n_trials=5 ...]

load -> validate -> split (parquet + manifest) -> one tune_model subflow per enabled family, run
concurrently as Prefect tasks -> evaluate (champion on validation, test once, gate, registry).
"""

from __future__ import annotations

from config import local_server
from config.runtime import configure_environment
from flows import _cli

configure_environment()
if __name__ == "__main__":
    _cli.skip_teardown_at_exit()
    local_server.start_early()  # Prefect's local server boots while the imports below run

import argparse  # noqa: E402
import errno  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402

from prefect import flow, get_run_logger, tags  # noqa: E402
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from config.errors import GauntletError  # noqa: E402
from config.schema import DEFAULT_CONFIG_PATH, TrainConfig, TrainParameters  # noqa: E402
from flows._cli import fail, print_summary  # noqa: E402
from flows.evaluate import evaluate  # noqa: E402
from flows.tune import (  # noqa: E402
    API_UNREACHABLE,
    SEARCH_RETRIES,
    FamilySearchFailed,
    encoding_group,
    search_family,
)
from tasks import data as data_tasks  # noqa: E402
from tasks import monitoring  # noqa: E402
from tasks import reporting as rep  # noqa: E402
from tasks.ml.data import release_memory  # noqa: E402
from tasks.ml.estimators import get_family  # noqa: E402
from tasks.ml.results import Candidate, EvalReport  # noqa: E402
from tasks.modeling import file_sha256  # noqa: E402
from tasks.progress import BOARD, Display  # noqa: E402
from tasks.runs import RunPaths, new_run_id, read_json, write_candidate, write_json  # noqa: E402


class AllFamiliesFailed(GauntletError):
    """No model family produced a candidate."""


class StageFailed(GauntletError):
    """A stage could not write or read what it needs (disk full, permissions...)."""


@contextmanager
def stage(name: str, stages: dict[str, dict] | None = None) -> Iterator[None]:
    """Name the stage in what a failure says: the run's final state message and the CLI's last line.
    With `stages`, its wall time, CPU time and peak memory go in there under `name` (monitoring)."""
    BOARD.set_stage(name)
    try:
        with monitoring.measure(name) as usage:
            yield
        if stages is not None:
            stages[name] = usage.record
    except GauntletError as exc:
        raise type(exc)(f"{name}: {exc}") from exc
    except OSError as exc:
        raise StageFailed(f"{name}: {disk_problem(exc)}") from exc


def disk_problem(exc: OSError) -> str:
    """An OSError as one line that names the file, the problem and the fix."""
    where = f" writing {exc.filename}" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"no space left on the disk{where}; free space, or set artifacts_dir (and registry.path) to a "
                "folder on a larger disk")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"{exc.strerror}{where}; choose folders you can write to with --set artifacts_dir=PATH "
                "(and registry.path)")
    return f"{type(exc).__name__}: {exc}"


# Relative cost of one trial, to start the longest searches first (longest-processing-time order):
# with fewer workers than families, a short search then fills a core that a long one left idle.
TRIAL_COST = {"random_forest": 4.0, "xgboost": 2.0, "lightgbm": 1.5, "logistic_regression": 1.0}


def search_plan(config: TrainConfig, families: list[str]) -> tuple[list[str], int, int]:
    """(families in start order, families searched at once, threads per family's models).

    concurrency x threads never exceeds the cores: on 2 cores, two families at a time with one
    thread each; a family that ends hands its core to the next one waiting.

    Start order: the longest searches first (longest-processing-time), except that a family whose
    encoding no other family shares (logistic regression's scaled one, by default) starts before
    the others. Its arrays are then made, used and dropped while memory is low; on 1M rows, its
    encoding started last peaked at 1,154 MB while another family's arrays were held.
    """
    cores = os.cpu_count() or 1
    wanted = cores if config.search.parallelism == "auto" else config.search.parallelism
    parallel = max(1, min(len(families), wanted))
    threads = max(1, cores // parallel)
    encoding = config.preprocessing.categorical.encoding
    groups = Counter(encoding_group(get_family(f), encoding) for f in families)
    order = sorted(families, key=lambda f: (groups[encoding_group(get_family(f), encoding)] > 1,
                                            -TRIAL_COST.get(f, 1.0) * getattr(config.models, f).n_trials))
    return order, parallel, threads


def _failed(family: str, run_dir: str, config: TrainConfig, message: str) -> Candidate:
    candidate = Candidate.failed(family, message, metric=config.evaluation.comparison_metric)
    write_candidate(RunPaths(run_dir), candidate)
    return candidate


def _adopt(candidate: Candidate, paths: RunPaths) -> Candidate | None:
    """A candidate cached from an earlier run: copy its pipeline and trials into this run.
    None when the earlier run's files are gone or changed (the family is searched again)."""
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
    adopted = candidate.model_copy(update={"pipeline_path": str(target), "reused_from": str(source.parents[1])})
    write_candidate(paths, adopted)
    return adopted


def _dataset_name(config: TrainConfig) -> str:
    return Path(config.data.path.removeprefix("builtin:")).name.split(".")[0]


def _run_name() -> str:
    """train-<dataset>-<UTC timestamp>, readable in the Prefect UI's run list."""
    from datetime import UTC, datetime

    from prefect.runtime import flow_run

    params = flow_run.parameters.get("params")
    try:
        params = params if isinstance(params, TrainParameters) else TrainParameters.model_validate(params or {})
        name = _dataset_name(params.to_config())
    except Exception:  # a bad parameter fails the run itself, with its message; the name is cosmetic
        name = "invalid-config"
    return f"train-{name}-{datetime.now(UTC):%Y%m%d-%H%M%S}"


@flow(name="train", flow_run_name=_run_name, log_prints=True)
def train(params: TrainParameters = TrainParameters()) -> EvalReport:  # noqa: B008 - an immutable default
    """Split the table, search every enabled family concurrently, evaluate, gate and register."""
    with stage("parameters"):
        config = params.to_config()  # a bad parameter fails here, before any work
        data_tasks.preflight(config)
    with tags(*params.tags):
        return _train(config)


def _train(config: TrainConfig) -> EvalReport:
    logger = get_run_logger()
    paths = RunPaths(config.runs_dir / new_run_id(_dataset_name(config)))
    logger.info("run directory: %s; registry model %s", paths.root, config.model_name)

    stages: dict[str, dict] = {}
    with stage("load_dataset", stages):
        frame = data_tasks.load_dataset(config.data.path, config)
    with stage("validate_dataset", stages):
        info = data_tasks.validate_dataset(frame, config)
    with stage("split_dataset", stages):
        data_tasks.split_dataset(frame, info, config, str(paths.root))
    table_bytes = int(frame.memory_usage(index=False).sum())
    del frame
    release_memory(table_bytes)  # the searches read the splits back; the whole table's memory goes back to the OS

    BOARD.set_stage("search")
    with monitoring.measure("search") as usage:
        candidates = search_families(config, paths)
    stages["search"] = usage.record
    # A family reused from an earlier run keeps that run's figures, marked as such.
    stages.update({f"search {c.family}": {**c.resources, **({"reused_from": c.reused_from} if c.reused_from else {})}
                   for c in candidates if c.resources})
    record_stages(paths, stages)  # the evaluation logs them to its experiment
    # The searches' arrays and models are gone: their memory goes back before evaluation.
    release_memory(paths.search_splits_bytes())
    failed = [c for c in candidates if c.status != "ok"]
    if len(failed) == len(candidates):
        raise AllFamiliesFailed(
            "search: every model family failed: " + "; ".join(f"{c.family}: {c.error}" for c in failed)
        )
    if failed:
        logger.warning("%d famil%s failed and will not compete: %s", len(failed),
                       "y" if len(failed) == 1 else "ies", ", ".join(c.family for c in failed))

    with stage("evaluate", stages):
        report = evaluate(run_dir=str(paths.root), config=config)
    stages.update(report.stages)  # registration, measured inside the evaluation
    report = report.model_copy(update={"stages": stages})
    record_stages(paths, stages)
    rep.write_report_json(paths, report)
    logger.info("leaderboard\n%s", rep.format_leaderboard(report))
    logger.info("stages\n%s", monitoring.format_stages(stages))
    logger.info(rep.format_gate(report))
    return report


def record_stages(paths: RunPaths, stages: dict[str, dict]) -> None:
    """The stages' wall time, CPU time and peak RSS into the run's manifest.json (`stages`)."""
    manifest = read_json(paths.manifest)
    manifest["stages"] = stages
    write_json(paths.manifest, manifest)


API_RETRY_PAUSES_S = (5, 15)


def _api_unreachable(outcome: object) -> bool:
    """A search that failed because the Prefect API could not be reached, not because of the model."""
    if isinstance(outcome, Candidate) or not isinstance(outcome, BaseException):
        return False
    text = f"{type(outcome).__name__}: {outcome}"
    return type(outcome).__name__ in API_UNREACHABLE or "All connection attempts failed" in text


def _submit(runner, task, parameters: dict):  # noqa: ANN001, ANN202 - Prefect's runner and future
    """runner.submit, tried again while the Prefect API is unreachable (it creates the task run there)."""
    for pause in (*API_RETRY_PAUSES_S, None):
        try:
            return runner.submit(task, parameters)
        except Exception as exc:
            if pause is None or not _api_unreachable(exc):
                raise
            get_run_logger().warning("the Prefect API was unreachable (%s: %s); submitting %s again in %ds",
                                     type(exc).__name__, exc, parameters["family"], pause)
            time.sleep(pause)
    raise AssertionError("unreachable")


def search_families(config: TrainConfig, paths: RunPaths) -> list[Candidate]:
    """Every enabled family's search, `parallelism` at a time, longest first; failures become
    failed candidates. A family whose identical search finished in an earlier run is reused."""
    logger = get_run_logger()
    families = config.models.enabled()
    order, parallel, threads = search_plan(config, families)
    runner_type = ThreadPoolTaskRunner if config.search.executor == "threads" else ProcessPoolTaskRunner
    logger.info("searching %s, %d at a time in %s, %d thread(s) each (%d cores)", ", ".join(order), parallel,
                config.search.executor, threads, os.cpu_count() or 1)
    helpers = start_trial_workers(config, paths, order)
    outcomes: dict[str, object] = {}
    def inputs(family: str) -> dict:
        return {"family": family, "run_dir": str(paths.root), "config": config, "n_jobs": threads}

    with threadpool_limits(limits=threads), runner_type(max_workers=parallel) as runner:
        futures = {f: _submit(runner, search_family, inputs(f)) for f in order}
        for family, future in futures.items():
            outcomes[family] = future.result(raise_on_failure=False)
        again = {}  # cached searches whose files are gone: searched again, `parallel` at a time as well
        for family, outcome in list(outcomes.items()):
            if not isinstance(outcome, Candidate):
                continue
            outcomes[family] = _adopt(outcome, paths)
            if outcomes[family] is None:
                logger.warning("[%s] the cached search's model file is gone or changed; searching again", family)
                again[family] = _submit(runner, search_family.with_options(refresh_cache=True), inputs(family))
        for family, future in again.items():
            outcomes[family] = future.result(raise_on_failure=False)
        # A family lost because the Prefect API was unreachable (a server restarting): Prefect's client
        # retries a connection it has used, not a fresh one's first request, so a search can fail
        # before it starts. Searched again once the server answers; a persistent study resumes.
        for pause in API_RETRY_PAUSES_S:
            lost = [f for f, outcome in outcomes.items() if _api_unreachable(outcome)]
            if not lost:
                break
            logger.warning("the Prefect API was unreachable for %s (%s); searching again in %ds", ", ".join(lost),
                           outcomes[lost[0]], pause)
            time.sleep(pause)
            retried = {f: _submit(runner, search_family.with_options(refresh_cache=True), inputs(f)) for f in lost}
            for family, future in retried.items():
                outcomes[family] = future.result(raise_on_failure=False)
    if helpers:
        logger.info("trial workers: %s", "; ".join(f"{name} {state}" for name, state in helpers_states(helpers)))
    candidates = []
    for family in families:
        outcome = outcomes[family]
        if isinstance(outcome, Candidate):
            if outcome.reused_from:
                logger.info("[%s] finished in an earlier run with the same data, search and budget: reused "
                            "from %s", family, outcome.reused_from)
        elif isinstance(outcome, FamilySearchFailed):
            outcome = _failed(family, str(paths.root), config, str(outcome))
        else:  # a storage or network failure that outlived its retries
            outcome = _failed(family, str(paths.root), config, f"{outcome} (after {SEARCH_RETRIES} retries)")
        candidates.append(outcome)
    return candidates


TRIAL_WORKER_DEPLOYMENT = "contribute_trials/worker"


def start_trial_workers(config: TrainConfig, paths: RunPaths, families: list[str]) -> list:
    """search.trial_workers N > 1: N - 1 extra flow runs per family, each running trials of the
    family's shared study, executed by whichever `make worker` processes are polling the work pool.
    Prefect schedules them and the study's storage shares the budget: gauntlet adds no scheduler."""
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


def helpers_states(runs: list) -> list[tuple[str, str]]:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return [(run.name, client.read_flow_run(run.id).state_name or "?") for run in runs]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python flows/train.py",
        description="Train every enabled model family, pick a champion, gate and register it.",
    )
    parser.add_argument("--config", default=DEFAULT_CONFIG_PATH, help=f"YAML config (default {DEFAULT_CONFIG_PATH})")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY.PATH=VALUE", dest="overrides",
        help="override a config value, e.g. --set models.xgboost.n_trials=5 (repeatable)",
    )
    parser.add_argument("--serve", action="store_true",
                        help="serve the flow from this process (runs triggered from the UI, and --cron)")
    parser.add_argument("--cron", default=None, help='with --serve: a schedule, e.g. "0 3 * * *"')
    parser.add_argument("--quiet", action="store_true",
                        help="no progress display and no log lines below warnings: only the final summary")
    return parser.parse_args(argv)


def preload(config: TrainConfig) -> None:
    """Import what the run needs later (Comet 1.1 s, matplotlib 0.5 s) while the command waits for its
    local Prefect server (1.1-1.4 s on 2 cores). Imported later instead, they held the GIL in the middle
    of the searches: the first family's Comet experiment took 1.2 s to open."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    if config.tracking.backend == "comet":
        import comet_ml  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        params = TrainParameters.from_cli(args.config, args.overrides)
        data_tasks.preflight(params.to_config())  # fails in a second, before Prefect and training start
        preload(params.to_config())  # while the local server boots: its wait costs nothing then
        local_server.wait_until_ready()  # if started above: the first Prefect call below finds it up
        if args.serve:  # the simplest deployment: this process runs what the server schedules
            train.serve(name="served", cron=args.cron, parameters={"params": params.model_dump(mode="json")},
                        tags=["gauntlet", "served"])
            return 0
        with Display("off" if args.quiet else "auto"):
            report = train(params=params)
    except GauntletError as exc:
        return fail(exc)
    print_summary(report)
    return 0


if __name__ == "__main__":
    _cli.exit(main())
