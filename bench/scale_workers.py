"""Trials per minute with 1 and with 2 worker processes on one PostgreSQL-backed study (run by hand).

    .venv/bin/python bench/scale_workers.py [--family random_forest] [--trials 40] [--data builtin:breast_cancer]

Starts a throwaway PostgreSQL cluster on 127.0.0.1 (PostgreSQL 15's binaries, as the `postgres`
user when run as root), prepares one run folder (a 1-trial smoke run), then runs the README's
worker command, `python flows/tune.py --run RUN --family F --worker`, once alone on one database
and twice at the same time on another, each worker with one model thread. Trials per minute are
counted from the trials' own start and end times (Prefect's start-up is not a trial); the wall
time of the processes is printed too.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="random_forest")
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--data", default="builtin:breast_cancer")
    parser.add_argument("--target", default="diagnosis")
    args = parser.parse_args()
    import optuna
    import pytest

    from tests.helpers import postgres_cluster

    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "COMET_API_KEY")}
    with tempfile.TemporaryDirectory(prefix="gauntlet-workers-") as tmp:
        cmd = [sys.executable, "flows/train.py", "--config", "config/smoke.yaml", "--set", f"artifacts_dir={tmp}",
               "--set", f"data.path={args.data}", "--set", f"data.target={args.target}",
               "--set", "tracking.backend=none", "--set", "models.logistic_regression.n_trials=1"]
        for family in ("random_forest", "lightgbm", "xgboost"):
            cmd += ["--set", f"models.{family}.enabled=false"]
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
        (run,) = (Path(tmp) / "runs").iterdir()
        try:
            cluster = postgres_cluster()
            create = next(cluster)
        except pytest.skip.Exception as exc:
            print(f"skipped: {exc}")
            return 1
        try:
            print(f"{args.family}, {args.trials} trials on {args.data}, {os.cpu_count()} cores, PostgreSQL")
            rates = {}
            for n in (1, 2):
                url = f"postgresql://{create(f'workers_{n}')}"
                worker = [sys.executable, "flows/tune.py", "--run", str(run), "--family", args.family, "--worker",
                          "--set", f"search.storage={url}", "--set", f"models.{args.family}.n_trials={args.trials}"]
                start = time.perf_counter()
                procs = [subprocess.Popen(worker, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, text=True) for _ in range(n)]
                for proc in procs:
                    _, err = proc.communicate()
                    if proc.returncode != 0:
                        print(err[-3000:])
                        return 1
                wall = time.perf_counter() - start
                (summary,) = optuna.get_all_study_summaries(storage=url)
                trials = optuna.load_study(study_name=summary.study_name, storage=url).get_trials()
                done = [t for t in trials if t.state in finished]
                span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
                numbers = [t.number for t in trials]
                rates[n] = 60 * len(done) / span
                print(f"{n} worker(s): {len(done)} finished trials ({len(set(numbers))} numbers, "
                      f"{len(numbers) - len(set(numbers))} duplicated) in {span:.1f} s of trials, "
                      f"{wall:.1f} s of process wall time: {rates[n]:.0f} trials per minute")
            print(f"speed-up with 2 workers: {rates[2] / rates[1]:.2f}x")
        finally:
            next(cluster, None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
