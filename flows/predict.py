"""predict: score a table with a registered model, a chunk at a time.

    gauntlet predict --input new_rows.parquet --output predictions.parquet [--version N] [--keep id]

The input is checked against the model's training schema before any row is scored; the output
holds `prediction`, `proba_<class>` per class and `model_version` (a regression model: `prediction`,
`prediction_lower`, `prediction_upper`, `model_version`), row for row, written atomically.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # python flows/predict.py: the command line sets the process up first
    from gauntlet.cli import run

    run(["predict", *sys.argv[1:]])

import time

from prefect import flow, get_run_logger

from config.errors import DataError
from tasks.prediction import DEFAULT_CHUNK_ROWS, DEFAULT_REGISTRY, PredictionSummary, check_input, score_file
from tasks.runs import predict_run_name


@flow(name="predict", flow_run_name=predict_run_name, log_prints=False)
def predict(input_path: str, output_path: str, model_name: str | None = None, alias: str = "champion",
            version: int | None = None, registry_dir: str = DEFAULT_REGISTRY, keep_columns: list[str] | None = None,
            chunk_rows: int = DEFAULT_CHUNK_ROWS) -> PredictionSummary:
    """Score `input_path` (CSV or Parquet) with a registered model; write `output_path`.

    The model is the version `alias` points to (default `champion`), or `version` when given; the
    registry's only model when `model_name` is not given.
    """
    if chunk_rows < 1:
        raise DataError(f"chunk_rows must be at least 1, not {chunk_rows}")
    keep = list(keep_columns or [])
    start = time.perf_counter()
    model = check_input(input_path, output_path, registry_dir, model_name, alias, version, keep)
    rows = score_file(input_path, output_path, registry_dir, model.model_name, model.version, keep, chunk_rows)
    seconds = time.perf_counter() - start
    get_run_logger().info("wrote %s predictions of %s version %d to %s in %.1f s", f"{rows:,}", model.model_name,
                          model.version, output_path, seconds)
    return PredictionSummary(output_path=str(output_path), rows=rows, model_name=model.model_name,
                             model_version=model.version, ignored_columns=model.ignored_columns,
                             seconds=round(seconds, 2))
