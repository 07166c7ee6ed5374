"""Prefect tasks for the data stage: load, validate, split and save with a manifest."""

from __future__ import annotations

import errno
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from config.errors import ConfigError, DataError
from config.schema import TrainConfig
from tasks.ml import data as ml_data
from tasks.ml.data import DatasetInfo
from tasks.ml.search import check_storage
from tasks.modeling import file_sha256
from tasks.runs import RunPaths, dataset_info, dataset_info_dict, git_commit, package_versions, save_config, write_json


def preflight(config: TrainConfig) -> None:
    """Cheap checks before any Prefect or training start-up: the file exists, the columns exist."""
    if config.registry.export_onnx:
        from tasks.ml.onnx_export import available

        if not available():
            raise ConfigError("registry.export_onnx needs skl2onnx, onnxmltools and onnxruntime: install them "
                              "with `.venv/bin/pip install -e '.[onnx]'`, or set registry.export_onnx: false")
    writable = {"artifacts_dir": Path(config.artifacts_dir), "registry.path": config.registry_dir}
    if config.tracking.backend == "comet":
        writable["tracking.offline_dir"] = config.comet_dir
    for key, folder in writable.items():
        check_writable(folder, key)
    check_storage(config.study_storage)
    check_table(config)
    check_registry(config)


def check_registry(config: TrainConfig) -> None:
    """The model's aliases and its champion's metadata read cleanly: a damaged file stops the run now, not
    at the gate after the whole search."""
    from tasks import registry

    root, name = config.registry_dir, config.model_name
    if (Path(root) / name).is_dir():
        current = registry.get_alias(root, name)
        if current is not None and config.evaluation.compare_with_champion:
            registry.read_metadata(root, name, current)


def check_writable(folder: Path, key: str, fix: str | None = None) -> None:
    """`folder`, or the nearest folder above it that exists (nothing is created here), takes a file:
    a read-only disk or a path through a file fails now, not when the first result is saved."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{existing} is a file, not a folder")
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".gauntlet-write-check-"):
            pass
    except OSError as exc:
        fix = fix or f"choose a folder you can write to with --set {key}=PATH"
        raise ConfigError(f"{key} {folder} is not writable ({exc.strerror or type(exc).__name__}); {fix}") from None


def check_table(config: TrainConfig) -> None:
    path = config.data.path
    if path.startswith(ml_data.BUILTIN_PREFIX):
        name = path[len(ml_data.BUILTIN_PREFIX):]
        if name not in ml_data.BUILTINS:
            ml_data.load_builtin(name)  # raises the DataError listing the bundled tables
        return
    columns, _ = ml_data.table_columns(path)
    ml_data.check_columns(columns, config.data.target, config.data.drop_columns, where=f" in {path}")
    for key, names in (("evaluation.sensitive_columns", config.evaluation.sensitive_columns),
                       ("preprocessing.categorical.columns", config.preprocessing.categorical.columns)):
        missing = [c for c in names if c not in columns]
        if missing:
            raise DataError(f"{key} names columns not in {path}: {missing}; {ml_data.suggest(missing, columns)}")


@task(name="load_dataset", cache_policy=NO_CACHE)
def load_dataset(path: str, config: TrainConfig | None = None) -> pd.DataFrame:
    frame = ml_data.load_table(path, config.data.na_values if config is not None else None)
    logger = get_run_logger()
    logger.info("loaded %s: %d rows x %d columns", path, len(frame), frame.shape[1])
    target = config.data.target if config is not None else None
    warnings = [ml_data.token_warning(column, counts) for column, counts in frame.attrs.get("na_tokens", {}).items()
                if column != target]
    for message in warnings:
        logger.warning(message)
    n = config.data.sample_rows if config is not None else None
    if n and len(frame) > n and config.data.target in frame.columns:
        total = len(frame)
        frame = ml_data.sample_rows(frame, config.data.target, n, config.split.seed,
                                    stratify=config.split.strategy in ("stratified", "random"))
        logger.info("trained on a sample: %d of %d rows (data.sample_rows, seed %d)", len(frame), total,
                    config.split.seed)
    frame.attrs = {"read_warnings": warnings}
    return frame


@task(name="validate_dataset", cache_policy=NO_CACHE)
def validate_dataset(frame: pd.DataFrame, config: TrainConfig) -> DatasetInfo:
    target = config.data.target
    if config.data.normalize_labels and target in frame.columns and config.data.task != "regression":
        frame[target], merged = ml_data.normalize_labels(frame[target])
        for group in merged:
            get_run_logger().info("data.normalize_labels: target labels %s merged into %r", group, group[0])
    info = ml_data.validate_dataset(
        frame,
        config.data.target,
        task=config.data.task,
        drop_columns=config.data.drop_columns,
        positive_class=config.data.positive_class,
        test_size=config.split.test_size,
        valid_size=config.split.valid_size,
        time_column=config.split.time_column if config.split.strategy == "time" else None,
        group_column=config.split.group_column if config.split.strategy == "group" else None,
        categorical_columns=config.preprocessing.categorical.columns,
        datetime=config.preprocessing.datetime,
        inf_values=config.preprocessing.inf_values,
        drop_constant=config.preprocessing.drop_constant,
        drop_id_like=config.preprocessing.drop_id_like,
    )
    info.warnings[:0] = frame.attrs.get("read_warnings", [])  # logged by load_dataset
    message = ml_data.imbalance_message(info, config.preprocessing.imbalance.method,
                                        config.preprocessing.imbalance.warn_below)
    logger = get_run_logger()
    resolved = config.for_task(info.task)  # a metric that cannot rank this task fails now, before the split
    t = info.target_summary
    if resolved.evaluation.comparison_metric == "mape" and t["min_abs"] <= 0.01 * t["median_abs"]:
        raise DataError(f"evaluation.comparison_metric mape divides by the target, and {info.target!r} has values "
                        f"near 0 (smallest |value| {t['min_abs']:g}); use mae, rmse or r2")
    if message:  # the column warnings were logged by tasks.ml.data already (gauntlet logger)
        info.warnings.append(message)
        logger.warning(message)
    columns = (f"{len(info.features)} features ({len(info.numeric_features)} numeric, "
               f"{len(info.categorical_features)} categorical)"
               + (f"; not used: {info.dropped_columns}" if info.dropped_columns else ""))
    if info.is_regression:
        t = info.target_summary
        how = "data.task is regression" if config.data.task == "regression" else (
            "auto: a numeric target with many distinct values; set data.task: multiclass to classify it instead")
        logger.info("regression task on %r (%s): values %g to %g, median %g; %s", info.target, how, t["min"],
                    t["max"], t["median"], columns)
    else:
        how = "" if config.data.task != "auto" or not ml_data.is_number_target(info) else (
            "; a numeric target with few values is classified (set data.task: regression to predict it as a "
            "quantity)")
        logger.info("%s task on %r: classes %s; %s%s", info.task, info.target, info.classes, columns, how)
    if info.n_rows_missing_target:
        logger.warning("%d rows have no target value and are left out", info.n_rows_missing_target)
    return info


@task(name="split_dataset", cache_policy=NO_CACHE)
def split_dataset(frame: pd.DataFrame, info: DatasetInfo, config: TrainConfig, run_dir: str) -> dict:
    """Write splits/{train,valid,test}.parquet (all original columns), config.json and manifest.json.
    The parts are written from row positions, a chunk at a time: the table is never copied whole."""
    paths = RunPaths(run_dir)
    paths.splits.mkdir(parents=True, exist_ok=True)
    parts = ml_data.split_positions(
        frame, info, strategy=config.split.strategy, test_size=config.split.test_size,
        valid_size=config.split.valid_size, seed=config.split.seed,
        time_column=config.split.time_column, group_column=config.split.group_column,
    )
    splits = {}
    for name, rows in parts.items():
        ml_data.write_part(frame, rows, paths.split(name))
        splits[name] = {
            "rows": int(len(rows)),
            **({"target": ml_data.target_stats(frame[info.target].take(rows))} if info.is_regression
               else {"class_balance": ml_data.class_balance(frame[info.target].take(rows))}),
            "path": str(paths.split(name)),
            "sha256": file_sha256(paths.split(name)),
        }
        if config.split.strategy == "time":  # the boundaries: train < valid < test in time
            column = frame[config.split.time_column].take(rows)
            splits[name]["time_range"] = [str(column.min()), str(column.max())]
        if config.split.strategy == "group":
            splits[name]["groups"] = int(frame[config.split.group_column].take(rows).nunique())
    if info.is_regression:  # what the models fit: the target, or log1p of it (predictions: the target's scale)
        info = target_transform(frame, parts, info, config)
    columns = [*info.features, info.target]
    duplicates = ml_data.cross_split_duplicates(frame, parts, columns)
    if any(duplicates.values()):
        warning = ml_data.duplicates_message(duplicates)
        info.warnings.append(warning)
        get_run_logger().warning(warning)
    save_config(paths, config)
    manifest = {
        "run_id": paths.run_id,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": {
            "path": config.data.path,
            "sha256": ml_data.data_sha256(config.data.path, frame),
            "rows": int(len(frame)),
            "columns": int(frame.shape[1]),
        },
        "dataset": dataset_info_dict(info),
        "splits": splits,
        "duplicates_of_train_rows": duplicates,
        "warnings": list(info.warnings),
        "config_hash": config.config_hash(),
        "model_name": config.model_name,  # the registry model this run registers as
        "seeds": {"split": config.split.seed, "search": config.search.seed},
        "packages": package_versions(),
        "git_commit": git_commit(),
    }
    write_json(paths.manifest, manifest)
    get_run_logger().info(
        "split %s -> %s", {k: v["rows"] for k, v in splits.items()}, paths.splits
    )
    return manifest


def target_transform(frame: pd.DataFrame, parts: dict, info: DatasetInfo, config: TrainConfig) -> DatasetInfo:
    """`info` with preprocessing.target_transform resolved on the train and valid splits (auto: a quick probe)."""
    from dataclasses import replace

    import numpy as np

    from tasks.ml.preprocessing import PreprocessOptions
    from tasks.ml.regression import PROBE_ROWS
    from tasks.ml.search import probe_target_transform

    mode, seed = config.preprocessing.target_transform, config.search.seed
    rng = np.random.default_rng(seed)
    # The probe fits at most PROBE_ROWS training rows: only those are copied out of the table.
    train, valid = (rows if len(rows) <= limit else np.sort(rng.choice(rows, limit, replace=False))
                    for rows, limit in ((parts["train"], PROBE_ROWS), (parts["valid"], 2 * PROBE_ROWS)))
    try:
        chosen, why = probe_target_transform(mode, info, frame.take(train), frame.take(valid),
                                             PreprocessOptions.from_config(config.preprocessing, seed=seed), seed)
    except ValueError as exc:  # log1p asked for a target that goes below -1
        raise ConfigError(str(exc)) from None
    get_run_logger().info("target transform: %s (%s)", chosen, why)
    return replace(info, target_transform=chosen)


def make_splits(config: TrainConfig, paths: RunPaths, stages: dict[str, dict]) -> DatasetInfo:
    """load_dataset -> validate_dataset -> split_dataset, each a task and a measured stage; the whole
    table's memory goes back to the OS afterwards (the searches read the splits back)."""
    from tasks.stages import stage

    with stage("load_dataset", stages):
        frame = load_dataset(config.data.path, config)
    with stage("validate_dataset", stages):
        info = validate_dataset(frame, config)
    with stage("split_dataset", stages):
        manifest = split_dataset(frame, info, config, str(paths.root))
    info = dataset_info(manifest)  # with what the split decided (a regression's target transform)
    table_bytes = int(frame.memory_usage(index=False).sum())
    del frame
    ml_data.release_memory(table_bytes)
    return info
