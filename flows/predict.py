"""predict: score a table with a registered model, a chunk at a time.

    python flows/predict.py --input new_rows.parquet --output predictions.parquet \
        [--alias champion | --version N] [--model NAME] [--registry artifacts/registry] [--keep id]

The input (CSV or Parquet) is checked against the training schema stored with the model before any
row is scored: a missing feature column stops the run naming it; extra columns are ignored (say
which in the log), or copied to the output with --keep. The output (Parquet, or CSV by its name)
holds, row for row in input order, `prediction` (the original label), `proba_<class>` for every
class and `model_version`. It is written to a temporary file and renamed when complete: a failed run
leaves no half-written output. Memory stays bounded by the chunk size (`--chunk-rows`).
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
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from prefect import flow, get_run_logger, task  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402

from config.errors import DataError, GauntletError  # noqa: E402
from flows._cli import fail, stop_local_server  # noqa: E402
from tasks import registry  # noqa: E402
from tasks.ml.scoring import (  # noqa: E402
    InputSchema,
    PredictionWriter,
    input_columns,
    read_chunks,
    score_frame,
    table_format,
)

DEFAULT_REGISTRY = "artifacts/registry"
DEFAULT_CHUNK_ROWS = 100_000


class PredictionSummary(BaseModel):
    """What a `predict` run did."""

    output_path: str
    rows: int
    model_name: str
    model_version: int
    ignored_columns: list[str] = Field(default_factory=list)
    seconds: float = 0.0


def preflight(input_path: str, output_path: str, registry_dir: str, model_name: str | None, alias: str,
              version: int | None, keep_columns: list[str]) -> tuple[str, int, list[str], int | None]:
    """Everything that can be checked before scoring, in a second and without Prefect: the files,
    the model, the columns. Returns (model name, version, input columns ignored, input rows or None)."""
    table_format(output_path)  # a wrong output suffix fails now, not after the scoring
    if Path(output_path).resolve() == Path(input_path).resolve():
        raise DataError(f"--output {output_path} is the input file; choose another output path")
    name = registry.resolve_model_name(registry_dir, model_name)
    found = registry.resolve_version(registry_dir, name, alias, version)
    schema = InputSchema.from_metadata(registry.read_metadata(registry_dir, name, found))
    columns, rows = input_columns(input_path)
    extra = schema.check_columns(columns)
    unknown = [c for c in keep_columns if c not in columns]
    if unknown:
        raise DataError(f"--keep names column(s) not in the input: {unknown}; choose among {columns[:12]}")
    clash = [c for c in keep_columns if c in ("prediction", "model_version") or c.startswith("proba_")]
    if clash:
        raise DataError(f"--keep column(s) {clash} would collide with the output's own columns; rename them")
    return name, found, [c for c in extra if c not in keep_columns], rows


@task(name="check_input")
def check_input(input_path: str, output_path: str, registry_dir: str, model_name: str | None, alias: str,
                version: int | None, keep_columns: list[str]) -> tuple[str, int, list[str]]:
    """`preflight` inside the flow (a deployment run has no command line that checked it)."""
    logger = get_run_logger()
    name, found, ignored, rows = preflight(input_path, output_path, registry_dir, model_name, alias, version,
                                           keep_columns)
    if ignored:
        logger.info("ignoring %d input column(s) the model does not use: %s%s", len(ignored),
                    ", ".join(ignored[:10]), " ..." if len(ignored) > 10 else "")
    logger.info("model %s version %d (%s); input %s: %s rows", name, found,
                f"alias {alias!r}" if version is None else "by number", input_path,
                f"{rows:,}" if rows is not None else "an unknown number of")
    return name, found, ignored


@task(name="score_file")
def score_file(input_path: str, output_path: str, registry_dir: str, model_name: str, version: int,
               keep_columns: list[str], chunk_rows: int) -> int:
    """Load the model (its sha256 checked first), score the input chunk by chunk, write the output."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    logger = get_run_logger()
    model = registry.load_model(registry_dir, model_name, version=version)
    schema = InputSchema.from_metadata(model.metadata)
    progress = create_progress_artifact(0.0, key="predict-progress", description=f"scoring {input_path}")
    writer = PredictionWriter(output_path)
    start, last_report, done = time.perf_counter(), 0.0, 0
    try:
        for chunk, fraction in read_chunks(input_path, [*schema.names, *keep_columns], chunk_rows):
            scored = score_frame(model, schema, chunk, version, first_row=done)
            for column in reversed(keep_columns):
                scored.insert(0, column, chunk[column].to_numpy())
            writer.write(scored)
            done += len(chunk)
            now = time.perf_counter()
            if now - last_report >= 1.0 or fraction >= 1.0:
                last_report = now
                logger.info("scored %s rows (%.0f%%), %.0f rows/s", f"{done:,}", 100 * fraction,
                            done / max(now - start, 1e-9))
                update_progress_artifact(progress, round(100 * fraction, 1), description=f"{done:,} rows scored")
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return done


def _run_name() -> str:
    from prefect.runtime import flow_run

    parameters = flow_run.parameters
    return f"predict-{Path(str(parameters.get('input_path', 'input'))).name}"


@flow(name="predict", flow_run_name=_run_name, log_prints=False)
def predict(input_path: str, output_path: str, model_name: str | None = None, alias: str = "champion",
            version: int | None = None, registry_dir: str = DEFAULT_REGISTRY, keep_columns: list[str] | None = None,
            chunk_rows: int = DEFAULT_CHUNK_ROWS) -> PredictionSummary:
    """Score `input_path` (CSV or Parquet) with a registered model; write `output_path`.

    The model is the version `alias` points to (default `champion`), or `version` when given; the
    registry's only model when `model_name` is not given.
    """
    logger = get_run_logger()
    if chunk_rows < 1:
        raise DataError(f"chunk_rows must be at least 1, not {chunk_rows}")
    keep = list(keep_columns or [])
    start = time.perf_counter()
    name, found, ignored = check_input(input_path, output_path, registry_dir, model_name, alias, version, keep)
    rows = score_file(input_path, output_path, registry_dir, name, found, keep, chunk_rows)
    seconds = time.perf_counter() - start
    logger.info("wrote %s predictions of %s version %d to %s in %.1f s", f"{rows:,}", name, found, output_path,
                seconds)
    return PredictionSummary(output_path=str(output_path), rows=rows, model_name=name, model_version=found,
                             ignored_columns=ignored, seconds=round(seconds, 2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Score a CSV or Parquet table with a registered gauntlet model.")
    parser.add_argument("--input", required=True, help="the rows to score: .parquet, .csv, .csv.gz or .tsv")
    parser.add_argument("--output", required=True, help="where predictions go: .parquet or .csv")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--alias", default="champion", help="the registry alias to use (default: champion)")
    which.add_argument("--version", type=int, default=None, help="a registry version number instead of an alias")
    parser.add_argument("--model", default=None, help="the model name (default: the registry's only model)")
    parser.add_argument("--registry", default=DEFAULT_REGISTRY, help=f"registry folder (default: {DEFAULT_REGISTRY})")
    parser.add_argument("--keep", action="append", default=[], metavar="COLUMN",
                        help="an input column to copy to the output, e.g. an id (repeatable)")
    parser.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS,
                        help=f"rows scored at a time (default {DEFAULT_CHUNK_ROWS:,}); bounds memory")
    args = parser.parse_args(argv)
    try:
        preflight(args.input, args.output, args.registry, args.model, args.alias, args.version, args.keep)
        local_server.wait_until_ready()
        summary = predict(input_path=args.input, output_path=args.output, model_name=args.model, alias=args.alias,
                          version=args.version, registry_dir=args.registry, keep_columns=args.keep,
                          chunk_rows=args.chunk_rows)
    except GauntletError as exc:
        return fail(exc)
    stop_local_server()
    print(f"{summary.rows:,} predictions of {summary.model_name} version {summary.model_version} "
          f"-> {summary.output_path} ({summary.seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    _cli.exit(main())
