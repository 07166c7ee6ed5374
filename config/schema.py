"""Typed configuration of a gauntlet run.

Every section forbids unknown keys, so a typo fails at once with the key's name and the keys that
are allowed. `load_config(path, overrides)` reads a YAML file, applies `key.path=value` overrides
and validates the result; any problem is raised as a one-line `ConfigError`.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator
from pydantic_core import PydanticCustomError

from config.errors import ConfigError
from tasks.ml.estimators import FAMILIES as FAMILY_REGISTRY

FAMILIES = tuple(FAMILY_REGISTRY)  # the families registered when the config was imported
TASKS = ("binary", "multiclass", "regression")
DEFAULT_CONFIG_PATH = "config/train.yaml"

# Metrics the evaluation can rank on; the value says whether higher or lower is better.
METRIC_DIRECTIONS: dict[str, Literal["maximize", "minimize"]] = {
    "fbeta": "maximize",
    "f1": "maximize",
    "accuracy": "maximize",
    "balanced_accuracy": "maximize",
    "precision": "maximize",
    "recall": "maximize",
    "roc_auc": "maximize",
    "pr_auc": "maximize",
    "mcc": "maximize",
    "log_loss": "minimize",
    "brier": "minimize",
}
REGRESSION_METRIC_DIRECTIONS: dict[str, Literal["maximize", "minimize"]] = {
    "r2": "maximize",
    "rmse": "minimize",
    "mae": "minimize",
    "medae": "minimize",
    "mape": "minimize",
}
CLASSIFICATION_METRICS = tuple(METRIC_DIRECTIONS)
METRIC_DIRECTIONS.update(REGRESSION_METRIC_DIRECTIONS)
# auto: the metric each task is ranked and gated on when the config does not name one. R2 ranks
# like RMSE on one split and reads the same across target scales.
AUTO_METRIC = {"binary": "fbeta", "multiclass": "fbeta", "regression": "r2"}
BOUNDED_METRICS = {name for name in METRIC_DIRECTIONS if name not in ("log_loss", "rmse", "mae", "medae", "mape")}


def metric_task_problem(metric: str, task: str) -> str | None:
    """Why `metric` cannot rank a `task` run (one line naming the fix), or None when it can."""
    if metric == "auto":
        return None
    if task == "regression" and metric not in REGRESSION_METRIC_DIRECTIONS:
        return (f"evaluation.comparison_metric {metric} is a classification metric, but this is a regression "
                f"task; set it to auto (r2) or one of {', '.join(REGRESSION_METRIC_DIRECTIONS)}")
    if task in ("binary", "multiclass") and metric in REGRESSION_METRIC_DIRECTIONS:
        return (f"evaluation.comparison_metric {metric} is a regression metric, but this is a {task} "
                f"classification task; set it to auto (fbeta) or one of {', '.join(CLASSIFICATION_METRICS)}")
    return None


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Where the table comes from and what to predict."""

    path: str = Field(
        "builtin:breast_cancer",
        description="CSV or Parquet file, or a bundled demo table: builtin:breast_cancer, "
        "builtin:wine.",
    )
    target: str = Field("diagnosis", min_length=1, description="Column to predict.")
    task: Literal["auto", "binary", "multiclass", "regression"] = Field(
        "auto", description="auto: regression for a numeric target that looks like a quantity (fractional "
        "numbers, or more than 20 distinct whole numbers that are more than 5% of the rows), otherwise binary "
        "for 2 classes and multiclass for more. The log says which was chosen and how to force the other."
    )
    drop_columns: list[str] = Field(
        default_factory=list, description="Columns never used as features (ids, leaks)."
    )
    positive_class: str | int | bool | None = Field(
        None,
        description="Binary tasks: the class scored as positive. Default: 1/True when the labels "
        "are 0/1 or booleans, otherwise the last label in sorted order.",
    )
    normalize_labels: bool = Field(
        False,
        description="Classification: merge target labels that differ only by case or surrounding spaces "
        "(`yes`, `Yes`, ` yes`) into their most frequent spelling. Default: they stay apart, with a warning "
        "naming each group.",
    )
    na_values: list[str] | None = Field(
        None,
        description="Cell values read as missing, the same way in training, batch prediction and REST (compared "
        "after stripping spaces; an empty cell is always missing). Default: pandas' tokens `#N/A`, `#N/A N/A`, "
        "`#NA`, `-1.#IND`, `-1.#QNAN`, `-NaN`, `-nan`, `1.#IND`, `1.#QNAN`, `<NA>`, `N/A`, `NA`, `NULL`, `NaN`, "
        "`None`, `n/a`, `nan`, `null`. Training warns when a text column holds one of them; set e.g. `['']` to "
        "keep `None` or `NA` as real categories. Recorded with the model.",
    )
    sample_rows: int | None = Field(
        None, ge=100,
        description="Train on a seeded sample (split.seed) of this many rows, stratified by the target "
        "(time and group splits: a plain random sample, in the file's order), for a first look at a large "
        "table or when memory is short. Default: every row.",
    )


class SplitConfig(_Section):
    """How rows are divided into train, valid and test."""

    strategy: Literal["stratified", "random", "time", "group"] = Field(
        "stratified",
        description="stratified | random | time (train < valid < test along split.time_column, no "
        "shuffling) | group (no value of split.group_column in two splits)",
    )
    time_column: str | None = Field(None, description="strategy time: the column that orders the rows.")
    group_column: str | None = Field(
        None, description="strategy group: rows sharing a value stay in one split; not used as a feature."
    )
    test_size: float = Field(0.2, gt=0.0, lt=0.5, description="Fraction of rows held out for test.")
    valid_size: float = Field(
        0.2, gt=0.0, lt=0.5, description="Fraction of all rows used for validation."
    )
    seed: int = Field(42, ge=0, description="Seed of the split (and of data.sample_rows).")

    @model_validator(mode="after")
    def _strategy_has_its_column(self) -> SplitConfig:
        for strategy, key in (("time", "time_column"), ("group", "group_column")):
            if self.strategy == strategy and not getattr(self, key):
                raise ValueError(f"strategy {strategy} needs split.{key}: the column to split on")
        return self

    @model_validator(mode="after")
    def _leave_rows_for_training(self) -> SplitConfig:
        if self.test_size + self.valid_size > 0.8:
            raise ValueError(
                f"test_size + valid_size = {self.test_size + self.valid_size:.2f} leaves under "
                "20% of rows for training; lower one of them"
            )
        return self


class CategoricalConfig(_Section):
    """Text, category and boolean columns, and integer codes listed in `columns`."""

    encoding: Literal["onehot", "ordinal", "target", "native"] = Field(
        "onehot",
        description="onehot | ordinal | target (scikit-learn's cross-fitted TargetEncoder) | native "
        "(LightGBM and XGBoost split on the categories themselves; the other families use onehot). CatBoost "
        "always takes the categories itself (its ordered target statistics), whatever this says.",
    )
    max_levels: int = Field(
        50, ge=2, le=10_000,
        description="onehot, ordinal, native: most frequent levels kept per column; the rest are "
        "grouped as one infrequent level.",
    )
    min_frequency: int = Field(
        5, ge=1, description="onehot, ordinal, native: levels seen in fewer training rows are grouped as infrequent."
    )
    columns: list[str] = Field(
        default_factory=list,
        description="Integer-coded columns to treat as categories (codes, not quantities).",
    )


class NumericConfig(_Section):
    """Number columns."""

    imputation: Literal["median", "mean", "most_frequent", "zero"] = Field(
        "median", description="How missing numbers are filled (learned on training rows only)."
    )
    missing_indicators: bool = Field(
        False, description="Add a 0/1 column per numeric feature that had missing training values."
    )


class ImbalanceConfig(_Section):
    """Classes of very different sizes."""

    method: Literal["auto", "none", "class_weight", "smote", "random_over", "random_under"] = Field(
        "auto",
        description="auto: the search tries balanced class weights as a hyperparameter; none; "
        "class_weight (scale_pos_weight for binary XGBoost); smote, random_over, random_under "
        "(imbalanced-learn, training rows only).",
    )
    warn_below: float = Field(
        0.2, gt=0, lt=0.5, description="Warn when the smallest class is under this share of the rows."
    )


class PreprocessingConfig(_Section):
    """Column handling, fitted on training rows only, once per family (once per fold in CV)."""

    categorical: CategoricalConfig = Field(default_factory=CategoricalConfig)
    numeric: NumericConfig = Field(default_factory=NumericConfig)
    imbalance: ImbalanceConfig = Field(default_factory=ImbalanceConfig)
    datetime: Literal["expand", "drop"] = Field(
        "expand", description="Date/time columns: expand to year, month, day, weekday, day of year "
        "(and hour when times vary), or drop."
    )
    inf_values: Literal["missing", "error"] = Field(
        "missing", description="missing: infinite numbers are treated as missing, with a warning; error: refuse."
    )
    drop_constant: bool = Field(True, description="Drop columns with a single value, with a warning.")
    drop_id_like: bool = Field(
        True, description="Drop columns unique per row (text ids, consecutive integers), with a warning."
    )
    target_transform: Literal["none", "log1p", "auto"] = Field(
        "auto", description="Regression: fit on log1p(target) (skewed positive targets such as prices); "
        "auto: log1p only for a skewed target of non-negative values where a quick probe scores better on "
        "the validation split. Predictions always come back on the target's own scale."
    )

    @model_validator(mode="after")
    def _smote_needs_numbers(self) -> PreprocessingConfig:
        if self.imbalance.method == "smote" and self.categorical.encoding == "native":
            raise ValueError(
                "imbalance.method smote interpolates numbers and cannot follow categorical.encoding "
                "native; use onehot, ordinal or target, or imbalance.method random_over"
            )
        return self


class ModelConfig(_Section):
    enabled: bool = Field(True, description="Search this family (false: leave it out of the run).")
    n_trials: int = Field(20, ge=1, le=100_000, description="Optuna trials for this family.")
    timeout_s: float | None = Field(
        None, gt=0, description="Optional cap: this family starts no trial after this many seconds "
        "(the leaderboard then says `stopped: timeout_s, k/n trials`). Default: none, all n_trials run.",
    )


class _ModelsBase(BaseModel):
    """One `ModelConfig` per registered family. Families registered after this module was imported
    (a plugin, a test) are accepted as extra keys; any other key is refused."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)
    __pydantic_extra__: dict[str, ModelConfig] = Field(init=False)

    @model_validator(mode="after")
    def _known_families(self) -> _ModelsBase:
        unknown = [name for name in self.model_extra or {} if name not in FAMILY_REGISTRY]
        if unknown:
            raise PydanticCustomError("unknown_family", "unknown key; allowed keys here: {allowed}",
                                      {"name": unknown[0], "allowed": ", ".join(FAMILY_REGISTRY)})
        return self

    def get(self, family: str) -> ModelConfig:
        """The family's settings; its defaults when the config does not mention it."""
        found = getattr(self, family, None) if family in type(self).model_fields else (self.model_extra or {}).get(
            family)
        return found if found is not None else ModelConfig(enabled=FAMILY_REGISTRY[family].enabled_by_default)

    def enabled(self) -> list[str]:
        return [name for name in FAMILY_REGISTRY if self.get(name).enabled]


ModelsConfig = create_model(
    "ModelsConfig", __base__=_ModelsBase, __doc__="Model families to search, from the family registry.",
    **{name: (ModelConfig, Field(default_factory=lambda on=spec.enabled_by_default: ModelConfig(enabled=on),
                                 description=f"The {name.replace('_', ' ')} family's search (learns "
                                             f"{', '.join(t for t in TASKS if t in spec.tasks)}; left out of runs "
                                             "of another task)."))
       for name, spec in FAMILY_REGISTRY.items()},
)


class SearchConfig(_Section):
    """The Optuna search run for each family."""

    seed: int = Field(42, ge=0, description="Seed of the Optuna sampler and of the models.")
    pruner: Literal["median", "successive_halving", "hyperband", "none"] = Field(
        "median",
        description="Stops hopeless trials early, from the valid loss every few boosting rounds, a forest's "
        "score at 50 and 100 trees (or the score after each CV fold): median (against the trials with the same "
        "class weights; an early-stopped trial counts at its best), successive_halving, hyperband or none.",
    )
    storage: str | None = Field(
        "auto",
        description="Optuna storage: auto (a journal file per study under <artifacts_dir>/optuna: a "
        "rerun resumes), none (in memory), journal:PATH (a file; a folder ending in / holds one "
        "file per study), or a database URL (postgresql://... for many workers). With one trial worker a "
        "journal gets each trial when it ends, and a second run searching the same study at once is refused.",
    )
    parallelism: int | Literal["auto"] = Field(
        "auto",
        description="Families searched at once. auto: as many as there are cores (at most the number "
        "of families). A trial fits on cores // (families searching at once) threads: when a family ends, "
        "its cores go to those still searching, and the last one fits on every core.",
    )
    parallel_trials: bool = Field(
        False,
        description="true: a family's spare cores (once others ended) run parallel trials of its study, 1 "
        "thread each, for LightGBM, XGBoost and logistic regression, which is faster than more threads per "
        "fit, but which trials have ended when the next is sampled then depends on timing, so a rerun may "
        "find other best parameters. false (default): one trial at a time on more threads; the same data, "
        "config and seed give the same best parameters.",
    )
    executor: Literal["threads", "processes"] = Field(
        "threads",
        description="How concurrent family searches run: threads (default; the model libraries "
        "release the GIL) or processes (one Python process per family).",
    )
    time_budget_s: float | None = Field(
        None, gt=0,
        description="Optional wall-clock budget of the whole search, shared among the families by their "
        "expected cost (trial cost x n_trials), then, once families have timed trials, by the seconds "
        "per trial each measured x the trials it still owes; a family that ends early hands its unused "
        "time to the others. A family it stops is marked `stopped: time budget` (each runs at least one trial). "
        "Default: none, every family runs its n_trials.",
    )
    trial_workers: int = Field(
        1, ge=1, le=64,
        description="Prefect flow runs contributing trials to each family's study (1: only this run). "
        "More need a shared storage (PostgreSQL) and `make worker` processes to run them.",
    )
    early_stopping_rounds: int = Field(
        50, ge=1, description="Boosting rounds without validation improvement before stopping."
    )
    refine_learning_rate: bool = Field(
        True, description="After a booster's search, fit its best trial again with the learning rate up to 4x "
        "lower (and up to 4x the rounds, under the 2,000-round cap), early-stopped on valid; kept only when "
        "better on valid. Skipped when a time limit ended the search.",
    )
    cv_folds: int = Field(
        0, ge=0, le=20,
        description="0: each trial is scored on the valid split. 2 or more: on K folds of the train "
        "split (stratified; time-ordered for split.strategy time; by group for group); the valid "
        "split still picks the champion.",
    )
    small_data_rows: int = Field(
        30, ge=0,
        description="When a class has fewer rows than this in train+valid, the search uses repeated "
        "stratified CV on train+valid instead of the small valid split (0: never).",
    )
    cv_repeats: int = Field(3, ge=1, le=10, description="Repeats of the small-data stratified CV.")

    @field_validator("cv_folds")
    @classmethod
    def _one_fold_is_no_cv(cls, value: int) -> int:
        if value == 1:
            raise ValueError("cv_folds 1 is not cross-validation; use 0 (the valid split) or 2 and more")
        return value

    @model_validator(mode="after")
    def _workers_need_a_shared_study(self) -> SearchConfig:
        if self.trial_workers > 1 and self.storage is None:
            raise ValueError("trial_workers > 1 needs a shared study: set search.storage to auto, journal:PATH "
                             "(one machine) or postgresql://... (many machines)")
        return self

    @field_validator("parallelism")
    @classmethod
    def _positive_parallelism(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("parallelism must be auto or a whole number >= 1")
        return value

    @field_validator("storage")
    @classmethod
    def _known_storage(cls, value: str | None) -> str | None:
        if value is None or value.lower() in ("none", "memory", ""):
            return None
        if value == "auto" or value.startswith("journal:"):
            return value
        if "://" in value:
            password = urlsplit(value).password
            if password and not password.startswith("${"):
                raise ValueError(
                    "storage holds a password in plain text, which would be saved with the run and sent "
                    "as a Prefect parameter; write postgresql://user:${GAUNTLET_DB_PASSWORD}@host/db and "
                    "export GAUNTLET_DB_PASSWORD (or use PGPASSWORD / ~/.pgpass)"
                )
            return value
        raise ValueError(
            f"storage {value!r} is not understood; use auto, none, journal:PATH or a database URL "
            "such as sqlite:///optuna.db or postgresql://user@host/db"
        )


class TrackingConfig(_Section):
    """Experiment tracking: one Comet experiment per family search and one for the evaluation."""

    backend: Literal["comet", "none"] = Field(
        "comet", description="comet: log to Comet ML (online or offline archives); none: no tracking."
    )
    mode: Literal["auto", "online", "offline"] = Field(
        "auto", description="auto: online when COMET_API_KEY is set, offline otherwise."
    )
    project: str = Field("gauntlet", min_length=1, description="Comet project.")
    workspace: str | None = Field(None, description="Comet workspace. Default: the API key's default workspace.")
    offline_dir: str | None = Field(
        None, description="Where offline archives go, one folder per run. Default: <artifacts_dir>/comet."
    )
    keep_offline_archives: int | None = Field(
        None, ge=1,
        description="Keep the offline archives of the newest N runs and remove older ones (none: keep all). "
        "`gauntlet tracking upload` sends them to Comet.",
    )


class EnsembleConfig(_Section):
    """An ensemble of the family bests, competing as one more candidate: it wins only when it is better on
    valid than every single family."""

    enabled: bool = Field(True, description="Build an ensemble of the candidates and let it compete.")
    method: Literal["greedy", "vote"] = Field(
        "greedy", description="greedy: greedy ensemble selection with replacement over every candidate's "
        "validation predictions (Caruana et al. 2004, as AutoGluon's WeightedEnsemble), weights from the picks; "
        "it competes only when it has 2+ members and beats the best single candidate on valid. With "
        "search.cv_folds (or in small-data runs) the weights are chosen on out-of-fold predictions instead. "
        "vote: the plain mean of the top_k candidates (soft voting).",
    )
    rounds: int = Field(25, ge=1, le=1000, description="greedy: picks (with replacement) that set the weights.")
    top_k: int = Field(3, ge=2, le=5, description="vote: candidates (best validation metric first) in the ensemble.")


class EvaluationConfig(_Section):
    """Champion selection on valid, the single test scoring, and the gate before registration."""

    comparison_metric: str = Field(
        "auto", description="Validation metric that picks and gates the champion. auto: fbeta for "
        "classification, r2 for regression. Classification: " + ", ".join(CLASSIFICATION_METRICS)
        + "; regression: " + ", ".join(REGRESSION_METRIC_DIRECTIONS) + "."
    )
    beta: float = Field(0.5, gt=0, description="Beta of the F-beta score (0.5 favours precision).")
    deployment_threshold: float = Field(
        0.7,
        ge=0,
        description="The champion's test metric must reach this (at most this for lower-is-better "
        "metrics) to be registered.",
    )
    direction: Literal["auto", "maximize", "minimize"] = Field(
        "auto", description="auto: the metric's natural direction (lower is better for log_loss, brier, "
        "rmse, mae, medae and mape)."
    )
    average: Literal["macro", "weighted", "micro"] = Field(
        "macro", description="How multiclass precision/recall/F scores are averaged."
    )
    compare_with_champion: bool = Field(
        True,
        description="Register only a challenger that beats the registered champion, both scored on this "
        "run's test split (by more than min_improvement; a tie keeps the champion).",
    )
    min_improvement: float = Field(
        0.001, ge=0,
        description="How much better than the registered champion a challenger must score to replace it.",
    )
    calibration: Literal["none", "sigmoid", "isotonic"] = Field(
        "none", description="Probability calibration of the champion, fitted on the validation split."
    )
    interval_coverage: float = Field(
        0.9, gt=0.5, lt=1.0, description="Regression: the share of rows a prediction interval should cover "
        "(split-conformal, fitted on the validation residuals)."
    )
    tune_threshold: bool = Field(
        False, description="Binary tasks: pick the decision threshold that maximises the metric on validation."
    )
    refit_on_train_valid: bool = Field(
        True, description="Before the test split is read, fit the champion again (each member of an ensemble) "
        "with its hyperparameters on train+valid, boosting rounds scaled by the rows; that model is the one "
        "measured on test, gated and registered. Selection, weights, threshold and intervals stay those of the "
        "train-split fits on valid. Not for calibrated champions or small-data (already train+valid) runs.",
    )
    bootstrap_resamples: int = Field(
        200, ge=0, le=10_000, description="Bootstrap resamples of the test split for 95% intervals (0: none)."
    )
    seed: int = Field(0, ge=0, description="Seed of the bootstrap and of permutation importance.")
    explain: bool = Field(True, description="Permutation importance (and tree SHAP values) for the champion.")
    ensemble: EnsembleConfig = Field(default_factory=EnsembleConfig)
    sensitive_columns: list[str] = Field(
        default_factory=list, description="Columns to report fairness metrics on (they may be features or not)."
    )
    fairness_max_difference: float | None = Field(
        None, ge=0, le=1,
        description="Gate limit on the demographic parity and equalized odds differences (none: report only).",
    )

    @field_validator("comparison_metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value != "auto" and value not in METRIC_DIRECTIONS:
            raise ValueError(f"unknown metric {value!r}; choose auto or one of {', '.join(METRIC_DIRECTIONS)}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _renamed_margin(cls, data: Any) -> Any:
        if isinstance(data, dict) and "champion_margin" in data:
            raise ValueError("champion_margin was replaced by min_improvement: a challenger must now beat the "
                             "champion by more than it; rename the key")
        return data

    @model_validator(mode="after")
    def _threshold_in_range(self) -> EvaluationConfig:
        # auto ranks by fbeta or r2, both at most 1
        if (self.comparison_metric in BOUNDED_METRICS or self.comparison_metric == "auto") and \
                self.deployment_threshold > 1:
            raise ValueError(
                f"deployment_threshold {self.deployment_threshold} is outside [0, 1], the range "
                f"of {self.comparison_metric}"
            )
        return self

    def metric_for(self, task: str) -> str:
        """The comparison metric of a `task` run: the configured one, or auto's choice."""
        return AUTO_METRIC.get(task, "fbeta") if self.comparison_metric == "auto" else self.comparison_metric

    def direction_for(self, task: str) -> Literal["maximize", "minimize"]:
        return METRIC_DIRECTIONS[self.metric_for(task)] if self.direction == "auto" else self.direction

    def for_task(self, task: str) -> EvaluationConfig:
        """This section with `auto` resolved for the task (ConfigError when the metric cannot rank it)."""
        problem = metric_task_problem(self.comparison_metric, task)
        if problem:
            raise ConfigError(problem)
        metric = self.metric_for(task)
        if metric in BOUNDED_METRICS and self.deployment_threshold > 1:
            raise ConfigError(f"evaluation.deployment_threshold {self.deployment_threshold} is outside [0, 1], the "
                              f"range of {metric}; lower it")
        return self.model_copy(update={"comparison_metric": metric})

    @property
    def resolved_direction(self) -> Literal["maximize", "minimize"]:
        if self.comparison_metric == "auto":
            raise ValueError("comparison_metric auto is resolved with the task: use direction_for(task)")
        if self.direction == "auto":
            return METRIC_DIRECTIONS[self.comparison_metric]
        return self.direction


class RegistryConfig(_Section):
    """Where a champion that passes the gate is registered."""

    backend: Literal["local"] = Field("local", description="local: the file registry under registry.path.")
    model_name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        max_length=100,
        description="Registry name. Default: <data file stem>-<target>, e.g. adult-income, so that "
        "models of different tables never replace each other's champion.",
    )
    path: str | None = Field(None, description="Local registry root. Default: <artifacts_dir>/registry.")
    refit_on_full_data: bool = Field(
        False,
        description="Once the gate passes, refit the champion with the same hyperparameters on "
        "train+valid+test and register that as model.pkl; the gated model stays as gated_model.pkl and its "
        "metrics are the version's. An ensemble's members are each refitted; not for calibrated champions.",
    )
    export_onnx: bool = Field(
        False,
        description="Also store the champion as model.onnx (skl2onnx/onnxmltools), kept only when its "
        "predictions match the original's on the test split; needs the extra gauntlet[onnx].",
    )


class TrainConfig(_Section):
    artifacts_dir: str = Field("artifacts", description="Root of runs/, registry/ and comet/.")
    data: DataConfig = Field(default_factory=DataConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    preprocessing: PreprocessingConfig = Field(default_factory=PreprocessingConfig)
    models: ModelsConfig = Field(
        default_factory=ModelsConfig,
        description="One entry per model family, each searched by its own Optuna study; at least one "
        "must be enabled. Each family runs exactly n_trials unless timeout_s caps it "
        "(search.time_budget_s caps them all).",
    )
    search: SearchConfig = Field(default_factory=SearchConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)

    @model_validator(mode="after")
    def _metric_fits_task(self) -> TrainConfig:
        if self.data.task != "auto":
            problem = metric_task_problem(self.evaluation.comparison_metric, self.data.task)
            if problem:
                raise ValueError(problem)
        return self

    def for_task(self, task: str) -> TrainConfig:
        """This config for a run whose table turned out a `task` one: data.task set to it and evaluation's
        `auto` resolved (ConfigError when the metric cannot rank it or no enabled family learns it)."""
        resolved = self.model_copy(update={"evaluation": self.evaluation.for_task(task),
                                           "data": self.data.model_copy(update={"task": task})})
        if not resolved.families():
            able = [name for name, spec in FAMILY_REGISTRY.items() if task in spec.tasks]
            raise ConfigError(f"no enabled model family learns a {task} task; enable one of {', '.join(able)} "
                              "under models")
        return resolved

    def families(self) -> list[str]:
        """The enabled families that learn this run's task (every enabled one while the task is auto)."""
        task = self.data.task
        return [f for f in self.models.enabled() if task == "auto" or task in FAMILY_REGISTRY[f].tasks]

    @model_validator(mode="after")
    def _something_to_train(self) -> TrainConfig:
        if not self.models.enabled():
            raise ValueError(
                "models: every family is disabled; enable at least one of " + ", ".join(FAMILY_REGISTRY)
            )
        return self

    # Paths derived from artifacts_dir unless set explicitly.
    @property
    def runs_dir(self) -> Path:
        return Path(self.artifacts_dir) / "runs"

    @property
    def registry_dir(self) -> Path:
        return Path(self.registry.path) if self.registry.path else Path(self.artifacts_dir) / "registry"

    @property
    def study_storage(self) -> str | None:
        """search.storage with auto resolved: one journal file per study under <artifacts_dir>/optuna/."""
        if self.search.storage == "auto":
            return f"journal:{Path(self.artifacts_dir) / 'optuna'}/"
        return self.search.storage

    @property
    def comet_dir(self) -> Path:
        if self.tracking.offline_dir:
            return Path(self.tracking.offline_dir)
        return Path(self.artifacts_dir) / "comet"

    @property
    def model_name(self) -> str:
        if self.registry.model_name:
            return self.registry.model_name
        stem = Path(self.data.path.removeprefix("builtin:")).name.split(".")[0]
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{stem}-{self.data.target}").strip("_.-")
        return slug[:100] or "gauntlet-model"

    def config_hash(self) -> str:
        """What defines the experiment, not where its outputs go: the same experiment in another
        folder hashes the same."""
        defining = self.model_dump(mode="json", exclude={"artifacts_dir": True, "registry": {"path"},
                                                         "tracking": {"offline_dir"}})
        payload = json.dumps(defining, sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()


# --------------------------------------------------------------------------------------------
# Loading


def _format_validation_error(exc: ValidationError, model: type[BaseModel]) -> str:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "unknown_family":  # a models.<name> that no registered family has
            problems.append(f"{loc}.{err['ctx']['name']}: {err['msg']}")
        elif err["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, err["loc"][:-1])
            problems.append(f"{loc}: unknown key; allowed keys here: {', '.join(allowed)}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            shown = f" (got {hide_password(err['input'])!r})" if "input" in err and not isinstance(
                err["input"], dict
            ) else ""
            problems.append(f"{loc or 'config'}: {msg}{shown}")
    return "; ".join(problems)


def hide_password(value: Any) -> Any:
    """A URL's password never goes into a message: postgresql://u:secret@h -> postgresql://u:***@h
    (a `${VAR}` standing for it stays: it names the variable, not the secret). Strings only; anything
    else is returned as it is."""
    return re.sub(r"(://[^:/@\s]+:)(?!\$\{)[^@\s]*@", r"\1***@", value) if isinstance(value, str) else value


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    current: Any = model
    for part in loc:
        field = current.model_fields.get(part) if hasattr(current, "model_fields") else None
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        current = field.annotation
    return list(current.model_fields)


def parse_override(item: str) -> tuple[list[str], Any]:
    """`models.xgboost.n_trials=5` -> (["models", "xgboost", "n_trials"], 5)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE, for example models.xgboost.n_trials=5")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str] | dict[str, Any] | None) -> dict[str, Any]:
    items = overrides.items() if isinstance(overrides, dict) else [parse_override(o) for o in overrides or []]
    for key, value in items:
        parts = key.split(".") if isinstance(key, str) else list(key)
        node = raw
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {'.'.join(parts)}: {'.'.join(parts[: i + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    return raw


def load_config(
    path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None
) -> TrainConfig:
    """Read `path` (YAML), apply overrides, validate. Raises ConfigError with one readable line."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}; pass --config with an existing YAML file")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                              f"{exc.start}); save it as UTF-8") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections, not {type(raw).__name__}")
    return config_from_dict(raw, overrides, source=f" in {path}" if path else "")


def config_from_dict(
    raw: dict[str, Any], overrides: list[str] | dict[str, Any] | None = None, source: str = ""
) -> TrainConfig:
    """Validate a nested mapping (after overrides) as a TrainConfig; ConfigError on any problem."""
    raw = apply_overrides(raw, overrides)
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"invalid config{source}: {_format_validation_error(exc, TrainConfig)}") from None


# --------------------------------------------------------------------------------------------
# Flow parameters: what a person sets in the Prefect UI form or a deployment

MetricName = Literal[("auto", *METRIC_DIRECTIONS)]  # type: ignore[valid-type]
# What a re-evaluation may change: how the run is judged, never what was trained or where it registers.
REEVALUATION_KEYS = ("evaluation.", "tracking.", "registry.export_onnx", "registry.refit_on_full_data")


def reevaluation_overrides(
    deployment_threshold: float | None = None, comparison_metric: str | None = None,
    min_improvement: float | None = None, explain: bool | None = None, fairness_column: str | None = None,
    overrides: dict[str, Any] | list[str] | None = None,
) -> dict[str, Any]:
    """Dotted overrides of a finished run's recorded config, for its re-evaluation; ConfigError for a
    key that would change what the run trained on or which model it registers as."""
    if isinstance(overrides, list):
        overrides = {".".join(key): value for key, value in map(parse_override, overrides)}
    values: dict[str, Any] = dict(overrides or {})
    bad = [key for key in values if not key.startswith(REEVALUATION_KEYS)]
    if bad:
        raise ConfigError(f"a re-evaluation cannot change {bad[0]} (it would no longer judge the same run); "
                          f"it changes only {', '.join(k.rstrip('.') for k in REEVALUATION_KEYS)}")
    typed = {"evaluation.deployment_threshold": deployment_threshold, "evaluation.comparison_metric": comparison_metric,
             "evaluation.min_improvement": min_improvement, "evaluation.explain": explain,
             "evaluation.sensitive_columns": [fairness_column] if fairness_column else None}
    values.update({key: value for key, value in typed.items() if value is not None})
    return values


class TrainParameters(BaseModel):
    """The `train` flow's parameters: a config file plus the values people change most.

    Prefect renders this model as the run form and validates it on the server. Every field left
    empty keeps the config file's value; `overrides` reaches any other key (`--set` on the CLI).
    """

    model_config = ConfigDict(extra="forbid")

    config_path: str = Field(DEFAULT_CONFIG_PATH, description="YAML config, relative to the project root.")
    models: list[Literal[FAMILIES]] | None = Field(  # type: ignore[valid-type] - the registry's names
        None, min_length=1, description="Model families to search; empty: those enabled in the config."
    )
    n_trials: int | None = Field(None, ge=1, le=10_000, description="Optuna trials per family.")
    deployment_threshold: float | None = Field(
        None, ge=0, description="Test metric the champion must reach to be registered (at most this for "
        "lower-is-better metrics such as rmse)."
    )
    data_path: str | None = Field(None, description="CSV/Parquet file (or builtin:NAME) to train on.")
    target: str | None = Field(None, description="Column to predict.")
    task: Literal["auto", "binary", "multiclass", "regression"] | None = Field(
        None, description="auto: regression for a numeric target with many values, else classification.")
    tags: list[str] = Field(default_factory=list, description="Tags for this run's tasks and subflows.")
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description='Any other config value by dotted key, e.g. {"split.seed": 7}.',
    )

    def config_overrides(self) -> dict[str, Any]:
        values: dict[str, Any] = dict(self.overrides)
        if self.models is not None:
            values.update({f"models.{f}.enabled": f in self.models for f in FAMILY_REGISTRY})
        if self.n_trials is not None:
            values.update({f"models.{f}.n_trials": self.n_trials for f in FAMILY_REGISTRY})
        if self.deployment_threshold is not None:
            values["evaluation.deployment_threshold"] = self.deployment_threshold
        if self.data_path is not None:
            values["data.path"] = self.data_path
        if self.target is not None:
            values["data.target"] = self.target
        if self.task is not None:
            values["data.task"] = self.task
        return values

    def to_config(self) -> TrainConfig:
        """The validated TrainConfig (ConfigError naming the problem otherwise)."""
        from config.paths import PROJECT_ROOT

        path = Path(self.config_path)
        if not path.is_absolute() and not path.is_file() and (PROJECT_ROOT / path).is_file():
            path = PROJECT_ROOT / path
        return load_config(path, self.config_overrides())

    @classmethod
    def from_cli(cls, config_path: str, overrides: list[str]) -> TrainParameters:
        pairs = (parse_override(item) for item in overrides)
        return cls(config_path=config_path, overrides={".".join(key): value for key, value in pairs})
