"""The family registry: one `FamilySpec` per model family (factory, search space, fit hook, cost).

Adding a family is one `register_family(FamilySpec(...))`: the config's `models` section, the
deployment form and the search planner read this registry. Gradient-boosted families early-stop
on the validation split and report boosting rounds to Optuna's pruner.
"""

from __future__ import annotations

import tempfile
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna

from tasks import stopping
from tasks.ml.search_spaces import SEARCH_SPACES


@dataclass(frozen=True)
class FitContext:
    """What a fit hook may use beyond the training arrays."""

    X_valid: Any  # rows to early-stop on; None: fit exactly `rounds` boosting rounds
    y_valid: np.ndarray | None
    n_classes: int  # 0: a regression
    early_stopping_rounds: int = 50
    trial: optuna.Trial | None = None  # set to report boosting rounds to the pruner
    class_weight: str | None = None  # "balanced": XGBoost translates it (it has no class_weight)
    rounds: int | None = None  # boosting rounds when there is no early-stopping set
    cache: MatrixCache | None = None  # the search's reusable XGBoost matrices; None: built for this fit
    score: Callable[[Any], float] | None = None  # the trial's metric on the valid rows, of a partly grown model
    threads_now: Callable[[], int] | None = None  # threads the fit may use from now on (more as others end)


@dataclass(frozen=True)
class FamilySpec:
    name: str
    scale: bool  # needs standardised numeric inputs
    native_categorical: bool  # takes pandas category columns itself (preprocessing encoding native)
    space: Callable[..., dict[str, Any]]  # (trial, weighted[, n_rows]) -> params
    make: Callable[[dict[str, Any], int, int, int], Any]  # (params, seed, n_jobs, n_classes; 0: regression)
    fit: Callable[[Any, np.ndarray, np.ndarray, FitContext], dict[str, Any]] | None = None  # -> fit info
    cost: float = 1.0  # relative cost of one trial: the planner starts the costliest searches first
    tasks: frozenset[str] = frozenset({"binary", "multiclass"})  # the tasks the family can learn (+ "regression")
    enabled_by_default: bool = True  # when the config does not mention the family
    # The library's own defaults, as the space's parameters: every search's first trial, so that a search
    # never ends worse on validation than the untuned model. A callable of the task (binary, multiclass,
    # regression); None: the first trial is sampled like the others.
    defaults: Callable[[str], dict[str, Any]] | None = None
    # More cores than one for the family: parallel trials (True) or more threads per fit (False: a forest's
    # trees are independent, so its fits scale with threads while the search keeps learning one trial at a time).
    parallel_trials: bool = True
    reports_loss: bool = False  # its fit reports a validation loss to the pruner (boosters), not the metric
    # Encodes categories itself whatever preprocessing.categorical.encoding says (CatBoost's ordered target
    # statistics are the reason to search it); SMOTE, which interpolates numbers, still gets onehot.
    own_categories: bool = False
    max_rounds: int | None = None  # a booster's round cap (early stopping ends most fits well before it)
    # On larger training sets (holdout scoring) its trials fit a stratified sample of this many rows and the
    # best parameters are fitted once on all of them, early-stopped on valid: a cheaper fidelity first, as
    # FLAML's sample sizes. None: every trial fits every row.
    trial_rows: int | None = None

    def takes_categories(self, encoding: str, imbalance: str = "none") -> bool:
        """Whether its preprocessing hands it pandas category columns (native) rather than numbers."""
        if self.own_categories:
            return imbalance != "smote"
        return self.native_categorical and encoding == "native"

    def fit_model(self, estimator: Any, X: np.ndarray, y: np.ndarray, ctx: FitContext) -> dict[str, Any]:
        return (self.fit or _plain_fit)(estimator, X, y, ctx)


MAX_ROUNDS = 2000  # boosters' round cap: early stopping on valid ends the fits

# Boosting rounds at which the pruner is asked: 10, 20, 40, 80, 160... Each report is a storage
# write and a read of the other trials (about 15 ms on a journal file, 50 ms on PostgreSQL): every
# 10 rounds, that was 20% of a 0.1 s XGBoost trial on the demo table. Doubling steps cost a handful
# of reports per trial, are the same for every trial, which the median pruner needs (it compares
# trials at equal steps), and reach each successive-halving rung.
FIRST_REPORT = 10


def is_report_step(step: int) -> bool:
    """10 x a power of two."""
    quotient, remainder = divmod(step, FIRST_REPORT)
    return step >= FIRST_REPORT and not remainder and quotient & (quotient - 1) == 0


class ThreadsNow:
    """A fit's thread count, raised while it runs when cores come free (`ctx.threads_now`), checked every
    round: a booster's last trial ends on every core instead of one. `apply(model, n)` tells the library."""

    def __init__(self, ctx: FitContext, current: int | None, apply: Callable[[Any, int], None]) -> None:
        self.ask, self.current, self.apply = ctx.threads_now, current, apply

    def check(self, model: Any) -> None:
        if self.ask is None:
            return
        wanted = self.ask()
        if wanted and wanted != self.current:  # 0: keep what it has
            self.apply(model, wanted)
            self.current = wanted


def _report(trial: optuna.Trial, step: int, loss: float) -> None:
    """Report a validation loss to the pruner in the study's own direction, prune if told to.

    Optuna's integration callbacks refuse a loss when the study maximises (F-beta, AUC...), so
    the loss is negated for maximising studies: the pruner only compares trials at equal steps.
    """
    stopping.check()  # a stop asked for interrupts the fit at this round
    if not is_report_step(step):
        return
    maximize = trial.study.direction == optuna.study.StudyDirection.MAXIMIZE
    trial.report(-loss if maximize else loss, step)
    if trial.should_prune():
        raise optuna.TrialPruned(f"pruned at boosting round {step} (valid loss {loss:.4f})")


def _plain_fit(estimator: Any, X: np.ndarray, y: np.ndarray, ctx: FitContext) -> dict[str, Any]:
    estimator.fit(X, y)
    return {}


# Rows each random-forest tree is grown on at most (its bootstrap sample). Past this, more rows per
# tree barely change the forest's accuracy but grow its time linearly: 600k training rows would
# take minutes per trial. Tables under this size are untouched.
RF_MAX_ROWS_PER_TREE = 100_000
# Rows a tree's bootstrap draws at most (times the searched max_samples share). On a 30k-row table the
# forest was the search's long pole (44 s of 45 s); a forest of 10k-row trees is about as accurate there
# (it rarely wins or weighs in the ensemble) at a fraction of the time (bench/README.md, issue 31).
RF_ROWS_PER_TREE = 10_000

# Bytes a fitted forest may take on those large tables. A tree grown on 100k rows has up to tens of
# thousands of leaves (about 80 bytes a node, two nodes a leaf): 300 such trees would hold 1.5 GB,
# ten times the 1M x 40 float32 table they learn from, and the search keeps the best forest while it
# fits the next. Each tree's leaves are capped (max_leaf_nodes, best-first growth) to fit the budget:
# 300 trees get about 2,800 leaves each, 50 trees about 16,800.
RF_MAX_MODEL_BYTES = 128 * 2**20


def rf_leaf_cap(n_estimators: int, n_classes: int, budget: int | None = None) -> int:
    """Leaves per tree that keep `n_estimators` trees within `budget` bytes (RF_MAX_MODEL_BYTES)."""
    budget = budget or RF_MAX_MODEL_BYTES
    node_bytes = 64 + 8 * max(n_classes, 2)  # sklearn's node record + its class counts (float64)
    return max(2, budget // (n_estimators * 2 * node_bytes))


# Trees after which a search's forest is scored on valid and may be pruned: a forest's score at 50 trees is
# close to its score at 300, so a trial that starts below the others' median rarely ends above it.
RF_REPORT_TREES = (50, 100)


def _fit_random_forest(estimator: Any, X: np.ndarray, y: np.ndarray, ctx: FitContext) -> dict[str, Any]:
    if len(y) > RF_MAX_ROWS_PER_TREE:
        cap = rf_leaf_cap(estimator.n_estimators, ctx.n_classes)
        if estimator.max_leaf_nodes is None or estimator.max_leaf_nodes > cap:
            estimator.set_params(max_leaf_nodes=cap)
    if len(y) > RF_ROWS_PER_TREE and estimator.bootstrap:  # the searched share, of the rows a tree may draw at most
        estimator.set_params(max_samples=(estimator.max_samples or 1.0) * RF_ROWS_PER_TREE / len(y))
    trees = estimator.n_estimators
    steps = [n for n in RF_REPORT_TREES if n < trees] if ctx.trial is not None and ctx.score is not None else []
    with warnings.catch_warnings():
        # The preset weights' warning is about warm-starting on other rows; these are the same rows.
        warnings.filterwarnings("ignore", message="class_weight presets", category=UserWarning)
        threads = ThreadsNow(ctx, estimator.n_jobs, lambda forest, n: forest.set_params(n_jobs=n))
        for step in steps:  # grown in steps (warm_start: the same trees as one fit), scored, maybe pruned
            estimator.set_params(n_estimators=step, warm_start=True)
            threads.check(estimator)
            estimator.fit(X, y)
            stopping.check()
            ctx.trial.report(ctx.score(estimator), step)
            if ctx.trial.should_prune():
                raise optuna.TrialPruned(f"pruned at {step} trees")
        estimator.set_params(n_estimators=trees)
        threads.check(estimator)
        estimator.fit(X, y)
    if steps:
        estimator.set_params(warm_start=False)  # a refit of this estimator grows a new forest
    return {}


def _make_logistic_regression(params: dict[str, Any], seed: int, n_jobs: int, n_classes: int):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=3000, random_state=seed, **params)


def _make_linear(params: dict[str, Any], seed: int, n_jobs: int, n_classes: int):
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.linear_model import ElasticNet, Ridge
    from sklearn.preprocessing import StandardScaler

    if params.get("penalty", "l2") == "l2":
        model = Ridge(alpha=params.get("alpha", 1.0), random_state=seed)
    else:
        model = ElasticNet(alpha=params["alpha_en"], l1_ratio=params["l1_ratio"], max_iter=5000, random_state=seed,
                           selection="random")
    # On a standardised target: the same alphas suit a price in dollars and a rate in [0, 1].
    return TransformedTargetRegressor(regressor=model, transformer=StandardScaler(), check_inverse=False)


def _make_random_forest(params: dict[str, Any], seed: int, n_jobs: int, n_classes: int):
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    if not n_classes:
        return RandomForestRegressor(random_state=seed, n_jobs=n_jobs, **params)
    return RandomForestClassifier(random_state=seed, n_jobs=n_jobs, **params)


def _make_lightgbm(params: dict[str, Any], seed: int, n_jobs: int, n_classes: int):
    from lightgbm import LGBMClassifier, LGBMRegressor

    # deterministic + a fixed histogram layout: the same data and seed give the same model, whatever
    # the thread count and timing (LightGBM otherwise picks row/col-wise by a timing test).
    return (LGBMClassifier if n_classes else LGBMRegressor)(
        n_estimators=MAX_ROUNDS, subsample_freq=1, random_state=seed, n_jobs=n_jobs, verbose=-1,
        deterministic=True, force_col_wise=True, **params,
    )


def _fit_lightgbm(estimator: Any, X: np.ndarray, y: np.ndarray, ctx: FitContext) -> dict[str, Any]:
    import lightgbm as lgb

    if ctx.X_valid is None:
        estimator.set_params(n_estimators=ctx.rounds or 200)
        estimator.fit(X, y)
        return {"best_iteration": int(estimator.n_estimators)}
    metric = {0: "l2", 2: "binary_logloss"}.get(ctx.n_classes, "multi_logloss")
    callbacks = [lgb.early_stopping(ctx.early_stopping_rounds, verbose=False)]
    if ctx.trial is not None:
        trial = ctx.trial
        threads = ThreadsNow(ctx, estimator.n_jobs, lambda booster, n: booster.reset_parameter({"num_threads": n}))

        def prune(env: Any) -> None:
            threads.check(env.model)
            for data_name, metric_name, value, _ in env.evaluation_result_list:
                if data_name == "valid" and metric_name == metric:
                    _report(trial, env.iteration, value)

        callbacks.append(prune)
    estimator.fit(
        X, y, eval_X=(ctx.X_valid,), eval_y=(ctx.y_valid,), eval_names=["valid"], eval_metric=metric,
        callbacks=callbacks,
    )
    return {"best_iteration": int(estimator.best_iteration_ or estimator.n_estimators)}


def _make_xgboost(params: dict[str, Any], seed: int, n_jobs: int, n_classes: int):
    from xgboost import XGBClassifier, XGBRegressor

    params = {k: v for k, v in params.items() if k != "class_weight"}  # applied by _fit_xgboost
    return (XGBClassifier if n_classes else XGBRegressor)(
        n_estimators=MAX_ROUNDS,
        tree_method="hist",
        enable_categorical=True,  # pandas category columns (encoding native); no effect on arrays
        eval_metric=_xgb_metric(n_classes),
        random_state=seed,
        n_jobs=n_jobs,
        verbosity=0,
        **params,
    )


def _xgb_metric(n_classes: int) -> str:
    return {0: "rmse", 2: "logloss"}.get(n_classes, "mlogloss")


# XGBoost keeps up to 65,536 node histograms per tree (its CPU default): 160 MB more at the peak for
# a depth-10 tree on 600k x 40 rows. On large tables 256 are kept, XGBoost's own memory bound
# (`max_cached_hist_node`): 80 MB, measured at about the same speed.
XGB_MAX_CACHED_HIST_NODES = 256


class MatrixCache:
    """A search's XGBoost training and validation matrices (QuantileDMatrix: the binned copy XGBoost
    trains on), built by its first trial and reused by the next ones while they fit the very same
    arrays: identity, not equality, and the cache holds the arrays, so they cannot become other ones.

    The search owns it and clears it when it ends; other arrays (another CV fold) replace the pair
    it holds. `builds` counts the pairs built.
    """

    def __init__(self) -> None:
        self._arrays: tuple = ()
        self._settings = ""
        self._matrices: tuple[Any, Any] | None = None
        self._lock = threading.Lock()
        self.builds = 0

    def get(self, X: Any, y: Any, X_valid: Any, y_valid: Any, settings: tuple) -> tuple[Any, Any]:
        arrays = (X, y, X_valid, y_valid)
        binning = repr(settings[:1] + settings[2:])  # not the thread count that built them: a trial's may differ
        with self._lock:
            if (self._matrices is None or binning != self._settings  # repr: NaN == NaN
                    or any(a is not b for a, b in zip(self._arrays, arrays, strict=True))):
                self._arrays, self._matrices = (), None  # the old pair goes before the new one is built
                self._matrices = build_matrices(*arrays, settings)
                self._arrays, self._settings = arrays, binning
                self.builds += 1
            return self._matrices

    def clear(self) -> None:
        with self._lock:
            self._arrays, self._matrices = (), None


def matrix_settings(estimator: Any) -> tuple:
    """What XGBoost's scikit-learn wrapper builds its QuantileDMatrix with."""
    return estimator.max_bin, estimator.n_jobs, estimator.missing, estimator.enable_categorical


def build_matrices(X: Any, y: Any, X_valid: Any, y_valid: Any, settings: tuple, weight: Any = None) -> tuple[Any, Any]:
    """The training QuantileDMatrix and the validation one, binned with the training cuts (ref=)."""
    import xgboost as xgb

    max_bin, n_jobs, missing, categorical = settings
    common = {"missing": missing, "enable_categorical": categorical, "nthread": n_jobs, "max_bin": max_bin}
    train = xgb.QuantileDMatrix(X, y, weight=weight, **common)
    return train, xgb.QuantileDMatrix(X_valid, y_valid, ref=train, **common)


def _fit_xgboost(estimator: Any, X: np.ndarray, y: np.ndarray, ctx: FitContext) -> dict[str, Any]:
    import xgboost as xgb

    if len(y) > RF_MAX_ROWS_PER_TREE:  # the same "large table" line as the random forests' cap
        estimator.set_params(max_cached_hist_node=XGB_MAX_CACHED_HIST_NODES)
    sample_weight = None
    if not ctx.n_classes:
        pass  # a regression has no classes to weigh
    elif ctx.class_weight == "balanced" and ctx.n_classes == 2:
        positives = max(int(np.sum(y == 1)), 1)
        estimator.set_params(scale_pos_weight=(len(y) - positives) / positives)
    elif ctx.class_weight == "balanced":
        from sklearn.utils.class_weight import compute_sample_weight

        sample_weight = compute_sample_weight("balanced", y)
    if ctx.X_valid is None:
        estimator.set_params(n_estimators=ctx.rounds or 200, early_stopping_rounds=None, callbacks=None)
        estimator.fit(X, y, sample_weight=sample_weight, verbose=False)
        return {"best_iteration": int(estimator.n_estimators)}
    # Early stopping: xgb.train with what the wrapper's fit would pass it, on matrices the search
    # builds once (the wrapper's fit bins the same arrays again at every trial).
    estimator.set_params(early_stopping_rounds=ctx.early_stopping_rounds)
    params = estimator.get_xgb_params()
    if ctx.n_classes > 2:
        params.update(objective="multi:softprob", num_class=ctx.n_classes)
    metric = _xgb_metric(ctx.n_classes)
    callbacks = []
    if ctx.trial is not None:
        trial = ctx.trial

        def more_threads(booster: Any, n: int) -> None:  # the booster's own count and the thread-local global one
            booster.set_param({"nthread": n})
            xgb.set_config(nthread=n)

        threads = ThreadsNow(ctx, estimator.n_jobs, more_threads)

        class Prune(xgb.callback.TrainingCallback):
            def after_iteration(self, model: Any, epoch: int, evals_log: dict) -> bool:
                threads.check(model)
                _report(trial, epoch, evals_log["validation_0"][metric][-1])
                return False

        callbacks.append(Prune())
    # nthread: XGBoost's global thread count, all cores by default, which loading a model also uses
    # (waking them on a busy machine cost more than the load); the family's own count instead.
    with xgb.config_context(verbosity=estimator.verbosity, nthread=estimator.n_jobs or 0):
        settings = matrix_settings(estimator)
        if sample_weight is None and ctx.cache is not None:
            train, valid = ctx.cache.get(X, y, ctx.X_valid, ctx.y_valid, settings)
        else:  # weights are part of the binning (weighted quantiles): this fit's own matrices
            train, valid = build_matrices(X, y, ctx.X_valid, ctx.y_valid, settings, weight=sample_weight)
        booster = xgb.train(
            params, train, estimator.get_num_boosting_rounds(), evals=[(valid, "validation_0")],
            early_stopping_rounds=ctx.early_stopping_rounds, verbose_eval=False, callbacks=callbacks,
        )
        # The wrapper takes the booster through its documented load_model, which also reads a few
        # hyperparameters back from the model: the constructor's are put back, as fit leaves them.
        # Through a file: save_raw held the model twice more (XGBoost's buffer, Python's copy) at once.
        constructed = {k: v for k, v in estimator.get_params().items()
                       if k in ("booster", "base_score", "feature_types", "enable_categorical")}
        with tempfile.NamedTemporaryFile(prefix="gauntlet-xgboost-", suffix=".ubj") as model:
            booster.save_model(model.name)
            del booster  # freed before its copy is loaded: the two are never held at once
            estimator.load_model(model.name)
        estimator.set_params(**constructed)
    if len(y) > RF_MAX_ROWS_PER_TREE:  # large models: the (de)serialising buffers' memory goes back to the OS
        from tasks.ml.data import release_memory

        release_memory()
    # The rounds it predicts with, as LightGBM and CatBoost count them (XGBoost's best_iteration counts from 0).
    return {"best_iteration": int(estimator.best_iteration) + 1}


def _catboost_loss(n_classes: int) -> str:
    return {0: "RMSE", 2: "Logloss"}.get(n_classes, "MultiClass")


def _make_catboost(params: dict[str, Any], seed: int, n_jobs: int, n_classes: int):
    from catboost import CatBoostClassifier, CatBoostRegressor

    params = dict(params)
    if params.pop("class_weight", None) == "balanced" and n_classes:
        params["auto_class_weights"] = "Balanced"
    loss = _catboost_loss(n_classes)
    # allow_writing_files=False: CatBoost otherwise writes catboost_info/ into the working directory.
    return (CatBoostClassifier if n_classes else CatBoostRegressor)(
        iterations=MAX_ROUNDS, loss_function=loss, eval_metric=loss, random_seed=seed, thread_count=n_jobs or -1,
        verbose=False, allow_writing_files=False, **params,
    )


def category_columns(X: Any) -> list[int]:
    """Positions of the pandas category columns of a native encoding (none in an array)."""
    import pandas as pd

    dtypes = getattr(X, "dtypes", None)
    return [] if dtypes is None else [i for i, d in enumerate(dtypes) if isinstance(d, pd.CategoricalDtype)]


class CatBoostRounds:
    """CatBoost's per-iteration callback: reports the valid loss to the pruner and checks for a stop.

    A CatBoost callback ends the fit by returning False; what it would raise (pruned, stopped) is kept
    and raised once fit has returned (`raise_if_ended`)."""

    def __init__(self, trial: optuna.Trial | None, metric: str) -> None:
        self.trial, self.metric, self.ended = trial, metric, None

    def after_iteration(self, info: Any) -> bool:
        try:
            if self.trial is None:
                stopping.check()
            else:
                _report(self.trial, info.iteration, info.metrics["validation"][self.metric][-1])
        except (stopping.Stopped, optuna.TrialPruned) as exc:
            self.ended = exc
            return False
        return True

    def raise_if_ended(self) -> None:
        if self.ended is not None:
            raise self.ended


def _fit_catboost(estimator: Any, X: Any, y: np.ndarray, ctx: FitContext) -> dict[str, Any]:
    cats = category_columns(X) or None
    rounds = CatBoostRounds(ctx.trial, _catboost_loss(ctx.n_classes))
    if ctx.X_valid is None:
        estimator.set_params(iterations=ctx.rounds or 1000)
        estimator.fit(X, y, cat_features=cats, callbacks=[rounds])
    else:  # early-stopped on valid, and cut back to its best iteration (use_best_model)
        estimator.fit(X, y, cat_features=cats, eval_set=(ctx.X_valid, ctx.y_valid), use_best_model=True,
                      early_stopping_rounds=ctx.early_stopping_rounds, callbacks=[rounds])
    rounds.raise_if_ended()
    return {"best_iteration": int(estimator.tree_count_)}


FAMILIES: dict[str, FamilySpec] = {}


def register_family(spec: FamilySpec) -> FamilySpec:
    """Add (or replace) a model family; every part of gauntlet that lists families reads FAMILIES."""
    FAMILIES[spec.name] = spec
    return spec


def unregister_family(name: str) -> None:
    FAMILIES.pop(name, None)


ALL_TASKS = frozenset({"binary", "multiclass", "regression"})


def _defaults(classification: dict[str, Any], regression: dict[str, Any] | None = None) -> Callable[[str], dict]:
    """The library defaults of a family (as its space names them); class_weight None for classifiers."""
    def for_task(task: str) -> dict[str, Any]:
        if task == "regression":
            return dict(regression if regression is not None else classification)
        return {**classification, "class_weight": None}
    return for_task


# Each library's defaults, clipped to the space where it does not reach them (random forest's unlimited
# depth: 20; LightGBM's reg_lambda 0: 0.001). The boosters still early-stop on valid.
DEFAULTS = {
    "logistic_regression": _defaults({"C": 1.0}),
    "linear": _defaults({"penalty": "l2", "alpha": 1.0}),
    "random_forest": _defaults({"n_estimators": 100, "max_depth": 20, "min_samples_leaf": 1, "max_features": "sqrt",
                                "max_samples": 1.0},
                               {"n_estimators": 100, "max_depth": 20, "min_samples_leaf": 1, "max_features": 0.5,
                                "max_samples": 1.0}),
    "lightgbm": _defaults({"learning_rate": 0.1, "num_leaves": 31, "min_child_samples": 20, "subsample": 1.0,
                           "colsample_bytree": 1.0, "reg_lambda": 0.001}),
    "xgboost": _defaults({"learning_rate": 0.3, "max_depth": 6, "min_child_weight": 1.0, "subsample": 1.0,
                          "colsample_bytree": 1.0, "reg_lambda": 1.0}),
    # CatBoost picks its learning rate from the rows and iterations when none is given: 0.03-0.05 at 2,000
    # iterations on 4k-30k rows (measured); 0.05 with early stopping stands for it.
    "catboost": _defaults({"learning_rate": 0.05, "depth": 6, "l2_leaf_reg": 3.0, "random_strength": 1.0,
                           "bagging_temperature": 1.0}),
}
register_family(FamilySpec("logistic_regression", True, False, SEARCH_SPACES["logistic_regression"],
                           _make_logistic_regression, _plain_fit, cost=1.0,
                           defaults=DEFAULTS["logistic_regression"]))
register_family(FamilySpec("linear", True, False, SEARCH_SPACES["linear"], _make_linear, _plain_fit, cost=1.0,
                           tasks=frozenset({"regression"}), defaults=DEFAULTS["linear"]))  # for numbers
register_family(FamilySpec("random_forest", False, False, SEARCH_SPACES["random_forest"], _make_random_forest,
                           _fit_random_forest, cost=4.0, tasks=ALL_TASKS, defaults=DEFAULTS["random_forest"],
                           parallel_trials=False))
register_family(FamilySpec("lightgbm", False, True, SEARCH_SPACES["lightgbm"], _make_lightgbm, _fit_lightgbm,
                           cost=1.5, tasks=ALL_TASKS, defaults=DEFAULTS["lightgbm"], reports_loss=True,
                           max_rounds=MAX_ROUNDS))
register_family(FamilySpec("xgboost", False, True, SEARCH_SPACES["xgboost"], _make_xgboost, _fit_xgboost, cost=2.0,
                           tasks=ALL_TASKS, defaults=DEFAULTS["xgboost"], reports_loss=True,
                           max_rounds=MAX_ROUNDS))
# A CatBoost round costs 10-50x a LightGBM one on categorical tables (ordered target statistics per level).
# CatBoost's trials on more rows fit a sample: on hotel_bookings (71,634 train rows, a 178-level column)
# one round took 134 ms on one thread, its trials ran to the 2,000-round cap (4-5 min each), and its 15
# trials took most of an hour while the other families had ended (bench/README.md, issue 31). On adult
# (29k train rows) a 20k sample cost the ensemble its CatBoost member (test AUC 0.9291 -> 0.9284), so
# tables of up to 40k train rows keep every row.
CATBOOST_TRIAL_ROWS = 40_000
register_family(FamilySpec("catboost", False, True, SEARCH_SPACES["catboost"], _make_catboost, _fit_catboost,
                           cost=6.0, tasks=ALL_TASKS, defaults=DEFAULTS["catboost"], reports_loss=True,
                           own_categories=True, max_rounds=MAX_ROUNDS, trial_rows=CATBOOST_TRIAL_ROWS))


def get_family(name: str) -> FamilySpec:
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}") from None
