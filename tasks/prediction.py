"""Batch prediction's steps: check the input against the model's training schema, then score it
a chunk at a time into an output written atomically."""

from __future__ import annotations

import time
from pathlib import Path

from prefect import get_run_logger, task
from pydantic import BaseModel, Field

from config.errors import DataError
from tasks import registry
from tasks.ml.data import suggest
from tasks.ml.scoring import (
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


class CheckedInput(BaseModel):
    """The model an input will be scored with, and the input columns it ignores."""

    model_name: str
    version: int
    ignored_columns: list[str] = Field(default_factory=list)


def preflight(input_path: str, output_path: str, registry_dir: str, model_name: str | None, alias: str,
              version: int | None, keep_columns: list[str]) -> tuple[str, int, list[str], int | None]:
    """Everything that can be checked before scoring, in a second and without Prefect: the files,
    the model, the columns. Returns (model name, version, input columns ignored, input rows or None)."""
    table_format(output_path)  # a wrong output suffix fails now, not after the scoring
    if Path(output_path).resolve() == Path(input_path).resolve():
        raise DataError(f"--output {output_path} is the input file; choose another output path")
    from tasks.data import check_writable

    # Before scoring every row: a folder that takes no file (read-only, /proc, a file in the path) fails now.
    check_writable(Path(output_path).parent, "--output", "choose an output path in a folder you can write to")
    name = registry.resolve_model_name(registry_dir, model_name, latest=True)
    found = registry.resolve_version(registry_dir, name, alias, version)
    schema = InputSchema.from_metadata(registry.read_metadata(registry_dir, name, found))
    columns, rows = input_columns(input_path)
    if rows == 0:
        raise DataError(f"input file {input_path} holds no rows (a header only); pass a file with rows to score")
    extra = schema.check_columns(columns)
    unknown = [c for c in keep_columns if c not in columns]
    if unknown:
        raise DataError(f"--keep names column(s) not in the input: {unknown}; {suggest(unknown, columns)}")
    clash = [c for c in keep_columns if c in ("prediction", "model_version") or c.startswith("proba_")]
    if clash:
        raise DataError(f"--keep column(s) {clash} would collide with the output's own columns; rename them")
    return name, found, [c for c in extra if c not in keep_columns], rows


@task(name="check_input")
def check_input(input_path: str, output_path: str, registry_dir: str, model_name: str | None, alias: str,
                version: int | None, keep_columns: list[str]) -> CheckedInput:
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
    return CheckedInput(model_name=name, version=found, ignored_columns=ignored)


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
        for chunk, fraction in read_chunks(input_path, [*schema.names, *keep_columns], chunk_rows,
                                              schema.na_values):
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
