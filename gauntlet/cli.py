"""The `gauntlet` command: train | evaluate | predict | serve | worker | registry | tracking (| tune).

The process is set up here, once: Prefect's settings, the local Prefect server started before the
heavy imports (it boots while they run), one readable line and exit code 2 for any bad input.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import os
import sys
import warnings
from typing import Any

SERVER_COMMANDS = ("train", "evaluate", "predict", "tune")  # those that run flows
_OWN_PROCESS = False  # set by `run`: the process ends with the command (not a test or a notebook calling main)
DEFAULT_REGISTRY = "artifacts/registry"


def parser() -> argparse.ArgumentParser:
    from config.schema import DEFAULT_CONFIG_PATH

    top = argparse.ArgumentParser(prog="gauntlet", description="Tabular training on Prefect and Optuna: split, "
                                  "search every model family, gate the champion, register it, serve it.")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def overrides(command: argparse.ArgumentParser, example: str) -> None:
        command.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", dest="overrides",
                             help=f"override a config value, e.g. --set {example} (repeatable)")

    train = commands.add_parser("train", help="train every enabled family, pick a champion, gate and register it",
                                description="Train every enabled model family, pick a champion, gate and register it.")
    train.add_argument("--config", default=DEFAULT_CONFIG_PATH, help=f"YAML config (default {DEFAULT_CONFIG_PATH})")
    overrides(train, "models.xgboost.n_trials=5")
    train.add_argument("--serve", action="store_true",
                       help="serve the flow from this process (runs triggered from the UI, and --cron)")
    train.add_argument("--cron", default=None, help='with --serve: a schedule, e.g. "0 3 * * *"')
    train.add_argument("--quiet", action="store_true",
                       help="no progress display and no log lines below warnings: only the final summary")

    evaluate = commands.add_parser("evaluate", help="evaluate a finished run again (e.g. another threshold)",
                                   description="Evaluate a finished gauntlet run again.")
    evaluate.add_argument("--run", required=True, help="a run directory: artifacts/runs/<run_id>")
    overrides(evaluate, "evaluation.deployment_threshold=0.9")

    predict = commands.add_parser("predict", help="score a CSV or Parquet table with a registered model",
                                  description="Score a CSV or Parquet table with a registered gauntlet model.")
    predict.add_argument("--input", required=True, help="the rows to score: .parquet, .csv, .csv.gz or .tsv")
    predict.add_argument("--output", required=True, help="where predictions go: .parquet or .csv")
    which = predict.add_mutually_exclusive_group()
    which.add_argument("--alias", default="champion", help="the registry alias to use (default: champion)")
    which.add_argument("--version", type=int, default=None, help="a registry version number instead of an alias")
    predict.add_argument("--model", default=None, help="the model name (default: the registry's only model)")
    predict.add_argument("--registry", default=DEFAULT_REGISTRY, help=f"registry folder (default: {DEFAULT_REGISTRY})")
    predict.add_argument("--keep", action="append", default=[], metavar="COLUMN",
                         help="an input column to copy to the output, e.g. an id (repeatable)")
    predict.add_argument("--chunk-rows", type=int, default=100_000,
                         help="rows scored at a time (default 100,000); bounds memory")

    commands.add_parser("serve", help="REST predictions of the champion (POST /predict, /docs); --help for options",
                        add_help=False)
    worker = commands.add_parser("worker", help="a Prefect process worker that runs the deployments' flow runs",
                                 description="Run the deployments' flow runs (Prefect process worker).")
    worker.add_argument("--pool", default="gauntlet-process", help="work pool (default gauntlet-process)")
    commands.add_parser("registry", help="list | show | promote | rollback | verify the model registry",
                        add_help=False)

    tracking = commands.add_parser("tracking", help="list | upload the Comet offline archives",
                                   description="The Comet offline archives: list them, or upload them to Comet.")
    tracking.add_argument("action", choices=["list", "upload"])
    tracking.add_argument("--dir", default=None, help="the archives' folder (default: the config's, artifacts/comet)")
    tracking.add_argument("--run", default=None, metavar="RUN_ID", help="only this run's archives")
    tracking.add_argument("--config", default=DEFAULT_CONFIG_PATH, help="config whose tracking.offline_dir to use")

    tune = commands.add_parser("tune", help="one family's search on a prepared run (or a trial worker's share)",
                               description="Run one family's search on a prepared run.")
    tune.add_argument("--run", required=True, help="artifacts/runs/<run_id>")
    tune.add_argument("--family", required=True)
    overrides(tune, "models.xgboost.n_trials=50")
    tune.add_argument("--worker", action="store_true",
                      help="only contribute trials to the family's shared study (search.storage)")
    tune.add_argument("--threads", type=int, default=1, help="threads for the models (default 1)")
    return top


def run(argv: list[str] | None = None) -> None:
    """The console script: set the process up, then `main`."""
    argv = sys.argv[1:] if argv is None else argv
    global _OWN_PROCESS
    _OWN_PROCESS = True
    if argv and argv[0] == "train":
        # No garbage collection while the libraries are imported: 6 full collections walked the growing heap
        # (0.5 s of the 2.5 s of imports before a run starts); _train turns it on once they are in.
        gc.disable()
    atexit.register(_skip_final_collections)  # registered first: runs after every other exit handler
    from gauntlet.runtime import configure_environment

    configure_environment()
    # Libraries' unclosed sockets and files, reported when collected: noise on a user's terminal.
    warnings.filterwarnings("ignore", category=ResourceWarning)
    if argv and argv[0] == "train":
        from tasks import stopping

        stopping.install()  # from the first second: Ctrl-C during the imports stops the run as cleanly
    if argv and argv[0] in SERVER_COMMANDS and not {"-h", "--help"} & set(argv):
        from gauntlet import local_server

        local_server.start_early()  # boots while the imports below run
    sys.exit(main(argv))


def _skip_final_collections() -> None:
    """The interpreter's last garbage collections walk every object the run made (about 1 s after a
    demo run) only to free memory the ending process gives back anyway: freeze them instead."""
    gc.disable()
    gc.freeze()


def main(argv: list[str] | None = None) -> int:
    """Run one command in this process; returns the exit code (2: bad input, said in one line)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "serve":
        from tasks.serving import main as serve

        return serve(argv[1:])
    if argv and argv[0] == "registry":
        from tasks.registry import main as registry

        return registry(argv[1:], prog="gauntlet registry")
    args = parser().parse_args(argv)
    from config.errors import GauntletError
    from tasks.stopping import Stopped

    try:
        return COMMANDS[args.command](args)
    except Stopped as exc:  # asked to stop: its own line and exit code (130 SIGINT, 143 SIGTERM)
        print(str(exc), file=sys.stderr, flush=True)
        return exc.exit_code
    except GauntletError as exc:
        return fail(exc)


def _train(args: argparse.Namespace) -> int:
    from config.schema import TrainParameters
    from gauntlet import local_server
    from tasks import stopping
    from tasks.data import preflight
    from tasks.progress import Display, quiet_exit_drain
    from tasks.stages import without_heartbeats

    params = TrainParameters.from_cli(args.config, args.overrides)
    preflight(params.to_config())  # fails in a second, before Prefect and training start
    stopping.install()  # Ctrl-C / SIGTERM: searches stop at their next trial, nothing is registered
    _preload(params.to_config())  # while the local server boots
    from flows.train import train  # Prefect and the libraries, also while it boots

    local_server.wait_until_ready()

    if _OWN_PROCESS:  # the imported libraries' objects live as long as the process: no collection walks them
        gc.freeze()
        gc.enable()
    if args.serve:  # the simplest deployment: this process runs what the server schedules
        train.serve(name="served", cron=args.cron, parameters={"params": params.model_dump(mode="json")},
                    tags=["gauntlet", "served"])
        return 0
    stopping.check()  # asked to stop while setting up: no run begins
    # No heartbeat thread to join at the end (up to 1 s): this process is the run, its events are sent at exit.
    quiet_exit_drain()
    with Display("off" if args.quiet else "auto"), without_heartbeats():
        report = train(params=params)
    print_summary(report)
    return 0


def _preload(config: Any) -> None:
    """Import what the run needs later while the local server boots: imported mid-search, they hold the GIL."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    if config.tracking.backend == "comet":
        import comet_ml  # noqa: F401


def _evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from config.schema import reevaluation_overrides
    from gauntlet import local_server
    from tasks.runs import RunPaths, load_run_config

    paths = RunPaths(Path(args.run))
    changes = reevaluation_overrides(overrides=args.overrides)
    load_run_config(paths, changes)  # a missing run or a bad value fails here, before the server is awaited
    local_server.wait_until_ready()
    from flows.evaluate import evaluate

    print_summary(evaluate(run_dir=str(paths.root), overrides=changes))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from gauntlet import local_server
    from tasks.prediction import preflight

    # The model is chosen (and the choice logged) once, here; the flow is told which.
    name, *_ = preflight(args.input, args.output, args.registry, args.model, args.alias, args.version, args.keep)
    local_server.wait_until_ready()
    from flows.predict import predict

    summary = predict(input_path=args.input, output_path=args.output, model_name=name, alias=args.alias,
                      version=args.version, registry_dir=args.registry, keep_columns=args.keep,
                      chunk_rows=args.chunk_rows)
    print(f"{summary.rows:,} predictions of {summary.model_name} version {summary.model_version} "
          f"-> {summary.output_path} ({summary.seconds:.1f} s)")
    return 0


def _worker(args: argparse.Namespace) -> int:
    """`prefect worker start` on the process pool; PREFECT_API_URL names the server."""
    import signal

    # Started in the background (`cmd &` in a script, nohup) SIGINT is ignored, and stays so across exec; Prefect's
    # worker stops on SIGTERM by sending itself SIGINT, so it would never stop.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    prefect = os.path.join(os.path.dirname(sys.executable), "prefect")
    os.execv(prefect, [prefect, "worker", "start", "--pool", args.pool, "--type", "process"])
    return 0  # not reached: the worker replaces this process


def _tune(args: argparse.Namespace) -> int:
    import json

    from config.errors import GauntletError
    from gauntlet import local_server
    from tasks.ml.estimators import get_family
    from tasks.runs import RunPaths, load_run_config

    try:
        paths = RunPaths(args.run)
        config = load_run_config(paths, args.overrides)
        get_family(args.family)
    except KeyError as exc:
        raise GauntletError(exc.args[0]) from None
    local_server.wait_until_ready()
    from flows.tune import contribute_trials, tune_model

    if args.worker:
        result = contribute_trials(family=args.family, run_dir=str(paths.root), config=config, n_jobs=args.threads)
    else:
        result = tune_model(family=args.family, run_dir=str(paths.root), config=config,
                            n_jobs=args.threads).model_dump(mode="json")
    print(json.dumps(result, indent=2))
    return 0


def _tracking(args: argparse.Namespace) -> int:
    from pathlib import Path

    from config.schema import load_config
    from tasks.tracking import UPLOADED_SUFFIX, offline_archives, upload_offline_archives

    root = Path(args.dir) if args.dir else load_config(args.config).comet_dir
    if args.action == "list":
        archives = offline_archives(root, args.run)
        for archive in archives:
            sent = "uploaded" if archive.with_suffix(UPLOADED_SUFFIX).exists() else "not uploaded"
            print(f"{archive}  {archive.stat().st_size / 1024:,.0f} KB  {sent}")
        print(f"{len(archives)} offline archive(s) under {root}")
        return 0
    uploaded, failed = upload_offline_archives(root, args.run)
    print(f"{len(uploaded)} uploaded, {len(failed)} failed (under {root})")
    return 1 if failed else 0


COMMANDS = {"train": _train, "evaluate": _evaluate, "predict": _predict, "worker": _worker, "tune": _tune,
            "tracking": _tracking}


def fail(message: object) -> int:
    """End a command with one readable line on stderr and exit code 2."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def print_summary(report: Any) -> None:
    """The end of a command: the run, the leaderboard, the stages and the gate decision."""
    from tasks import reporting
    from tasks.monitoring import format_stages

    print()
    print(f"Run {report.run_id}: {report.run_dir}")
    if getattr(report, "evaluation", None):
        print(f"Re-evaluation {report.evaluation}: {report.run_dir}/evaluations/{report.evaluation}/report.json "
              "(the run's own report.json is unchanged)")
    print(reporting.format_leaderboard(report))
    if report.stages:
        print()
        print(format_stages(report.stages))
    print()
    print(reporting.format_gate(report))
    tracking = reporting.format_tracking(report)
    if tracking:
        print(tracking)


if __name__ == "__main__":
    run()
