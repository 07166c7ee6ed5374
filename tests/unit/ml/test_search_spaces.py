import os
import socket
from dataclasses import replace

import numpy as np
import optuna
import pandas as pd
import pytest

from tasks.ml.data import split_dataset, validate_dataset
from tasks.ml.estimators import FAMILIES, get_family
from tasks.ml.search import (
    MedianOfLikeTrials,
    SearchSettings,
    best_pipeline,
    fit_estimator,
    prepare_data,
    run_study,
)
from tasks.ml.search_spaces import SEARCH_SPACES

FIXED = {
    "logistic_regression": {"C": 0.5, "class_weight": "balanced"},
    "random_forest": {"n_estimators": 50, "max_depth": 4, "min_samples_leaf": 2, "max_features": "sqrt",
                      "max_samples": 0.5, "class_weight": None},
    "lightgbm": {"learning_rate": 0.1, "num_leaves": 15, "min_child_samples": 10, "subsample": 0.8,
                 "colsample_bytree": 0.8, "reg_lambda": 1.0, "class_weight": None},
    "xgboost": {"learning_rate": 0.1, "max_depth": 3, "min_child_weight": 1.0, "subsample": 0.8,
                "colsample_bytree": 0.8, "reg_lambda": 1.0, "class_weight": "balanced"},
    "catboost": {"learning_rate": 0.1, "depth": 4, "l2_leaf_reg": 3.0, "random_strength": 1.0,
                 "bagging_temperature": 0.5, "class_weight": "balanced"},
}


@pytest.fixture(scope="module")
def prepared_parts(breast_cancer):
    info = validate_dataset(breast_cancer, "diagnosis")
    return info, split_dataset(breast_cancer, info, seed=0)


REGRESSION_FIXED = {
    "linear": {"penalty": "elasticnet", "alpha_en": 0.01, "l1_ratio": 0.5},
    "random_forest": {"n_estimators": 50, "max_depth": 6, "min_samples_leaf": 2, "max_features": 0.5,
                      "max_samples": 0.8},
    "lightgbm": {"learning_rate": 0.1, "num_leaves": 15, "min_child_samples": 10, "subsample": 0.8,
                 "colsample_bytree": 0.8, "reg_lambda": 1.0},
    "xgboost": {"learning_rate": 0.1, "max_depth": 3, "min_child_weight": 1.0, "subsample": 0.8,
                "colsample_bytree": 0.8, "reg_lambda": 1.0},
    "catboost": {"learning_rate": 0.1, "depth": 4, "l2_leaf_reg": 3.0, "random_strength": 1.0,
                 "bagging_temperature": 0.5},
}


def test_every_family_has_a_space_and_a_fixed_example():
    classifiers = {name for name, spec in FAMILIES.items() if "binary" in spec.tasks}
    regressors = {name for name, spec in FAMILIES.items() if "regression" in spec.tasks}
    assert set(SEARCH_SPACES) == set(FAMILIES) == set(FIXED) | set(REGRESSION_FIXED)
    assert classifiers == set(FIXED) and regressors == set(REGRESSION_FIXED)


@pytest.mark.parametrize("family", list(REGRESSION_FIXED))
def test_regression_members_fit_and_learn(family, diabetes_parts):
    """Each family's regressor (unweighted space) fits, early-stops and beats predicting the mean."""
    from tasks.ml.metrics import compute_regression_metrics

    info, parts = diabetes_parts
    spec = get_family(family)
    params = spec.space(optuna.trial.FixedTrial(REGRESSION_FIXED[family]), False)
    assert params == REGRESSION_FIXED[family]
    data = prepare_data(spec, info, parts["train"], parts["valid"])
    settings = SearchSettings(metric="r2", direction="maximize", n_trials=1, early_stopping_rounds=10)
    estimator, fit_info = fit_estimator(spec, data, params, settings)
    assert "Regressor" in type(estimator).__name__ or family == "linear"
    assert compute_regression_metrics(data.y_valid, estimator.predict(data.X_valid))["r2"] > 0.3
    if family in ("lightgbm", "xgboost", "catboost"):
        assert 0 < fit_info["best_iteration"] < 2000


@pytest.fixture(scope="module")
def diabetes_parts():
    from tasks.ml.data import load_builtin

    frame = load_builtin("diabetes")
    info = validate_dataset(frame, "target")
    return info, split_dataset(frame, info, seed=0)


@pytest.mark.parametrize("family", list(FIXED))
def test_fixed_trial_builds_and_fits(family, prepared_parts):
    info, parts = prepared_parts
    spec = get_family(family)
    params = spec.space(optuna.trial.FixedTrial(FIXED[family]))
    assert params == FIXED[family]
    data = prepare_data(spec, info, parts["train"], parts["valid"])
    settings = SearchSettings(metric="fbeta", direction="maximize", n_trials=1, early_stopping_rounds=10)
    estimator, fit_info = fit_estimator(spec, data, params, settings)
    proba = estimator.predict_proba(data.X_valid)
    assert proba.shape == (len(data.y_valid), 2)
    assert np.allclose(proba.sum(axis=1), 1.0)
    # The models learn something on this easy table: far better than the majority class.
    assert ((proba[:, 1] >= 0.5) == data.y_valid).mean() > 0.85
    if family in ("lightgbm", "xgboost", "catboost"):
        assert 0 < fit_info["best_iteration"] < 2000  # early stopping on the validation split worked


@pytest.mark.parametrize("family", list(SEARCH_SPACES))
def test_space_values_stay_in_declared_ranges(family):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        trial = study.ask()
        params = SEARCH_SPACES[family](trial)
        study.tell(trial, 0.0)
        for name, dist in trial.distributions.items():
            assert dist._contains(dist.to_internal_repr(params[name])), (name, params[name])


def test_unknown_family_is_named():
    with pytest.raises(KeyError, match="unknown model family 'tabnet'"):
        get_family("tabnet")


def test_study_resumes_from_a_journal_file(tmp_path, prepared_parts):
    """A rerun with the same study name only runs the trials still owed."""
    info, parts = prepared_parts
    spec = get_family("logistic_regression")
    data = prepare_data(spec, info, parts["train"], parts["valid"])
    storage = f"journal:{tmp_path / 'optuna.log'}"
    settings = SearchSettings(metric="fbeta", direction="maximize", n_trials=2, storage=storage, study_name="s")
    study, kept = run_study(spec, data, settings)
    assert len(study.trials) == 2 and kept.trial == study.best_trial.number
    more = SearchSettings(metric="fbeta", direction="maximize", n_trials=3, storage=storage, study_name="s")
    study, kept = run_study(spec, data, more)
    assert len(study.trials) == 3
    assert kept.trial == 2  # only the owed trial ran in this process
    pipeline, _, _, refitted, _ = best_pipeline(spec, data, study, kept, more)
    assert refitted == (study.best_trial.number != 2)  # a best trial from the first process is refitted
    assert set(pipeline.predict(parts["test"][info.features])) <= {0, 1}
    _, kept = run_study(spec, data, more)  # nothing owed: nothing runs, the best model is refitted
    assert kept is None


def test_the_best_trials_model_is_kept_not_refitted(prepared_parts):
    info, parts = prepared_parts
    spec = get_family("xgboost")
    data = prepare_data(spec, info, parts["train"], parts["valid"])
    settings = SearchSettings(metric="log_loss", direction="minimize", n_trials=3, early_stopping_rounds=10)
    study, kept = run_study(spec, data, settings)
    pipeline, fit_info, _, refitted, valid_metrics = best_pipeline(spec, data, study, kept, settings)
    assert not refitted and pipeline.named_steps["model"] is kept.estimator
    assert fit_info["best_iteration"] == study.best_trial.user_attrs["best_iteration"]
    proba = pipeline.predict_proba(parts["valid"][info.features])
    from tasks.ml.metrics import compute_metrics

    assert compute_metrics(data.y_valid, proba, n_classes=2)["log_loss"] == pytest.approx(study.best_value, rel=1e-6)


def test_on_large_training_sets_the_best_model_waits_on_disk_not_in_memory(prepared_parts, monkeypatch):
    import gc

    from tasks.ml import search

    info, parts = prepared_parts
    spec = get_family("random_forest")
    data = prepare_data(spec, info, parts["train"], parts["valid"])
    monkeypatch.setattr(search, "SPILL_ABOVE_BYTES", 0)  # every training set counts as large
    settings = SearchSettings(metric="fbeta", direction="maximize", n_trials=3)
    study, kept = run_study(spec, data, settings)
    assert kept.estimator is None and kept.path.is_file()  # the best trial's forest is on disk
    path = kept.path
    pipeline, _, _, refitted, _ = best_pipeline(spec, data, study, kept, settings)
    assert not refitted and not path.exists()  # loaded back, file gone
    proba = pipeline.predict_proba(parts["valid"][info.features])
    from tasks.ml.metrics import compute_metrics

    score = compute_metrics(data.y_valid, proba, n_classes=2)["fbeta"]
    assert score == pytest.approx(study.best_value, rel=1e-9)  # the very model of the best trial
    dropped = search.BestModel(0, pipeline, {}, 0.0, spill=True)
    leftover = dropped.path
    assert leftover.is_file()
    del dropped
    gc.collect()
    assert not leftover.exists()  # a search that fails or ends without loading it leaves nothing


def test_a_family_whose_every_trial_raises_fails_fast(prepared_parts):
    import dataclasses

    info, parts = prepared_parts

    def boom(*args, **kwargs):
        raise RuntimeError("injected fit failure")

    spec = dataclasses.replace(get_family("random_forest"), fit=boom)
    data = prepare_data(spec, info, parts["train"], parts["valid"])
    settings = SearchSettings(metric="fbeta", direction="maximize", n_trials=50)
    with pytest.raises(RuntimeError, match="injected fit failure") as err:
        run_study(spec, data, settings)
    assert "(3 failed)" in str(err.value)  # stopped after 3 failures, not 50


def test_storage_urls_read_environment_variables_at_connect_time(tmp_path, monkeypatch):
    from tasks.ml.search import make_storage

    monkeypatch.setenv("GAUNTLET_TEST_DIR", str(tmp_path))
    storage = make_storage("journal:${GAUNTLET_TEST_DIR}/studies/optuna.log")
    assert type(storage).__name__ == "JournalStorage" and (tmp_path / "studies").is_dir()
    monkeypatch.delenv("GAUNTLET_TEST_DIR")
    with pytest.raises(ValueError, match="names an environment variable that is not set"):
        make_storage("postgresql://gauntlet:${GAUNTLET_TEST_DIR}@db/optuna")
    assert make_storage(None) is None


def test_a_journal_folder_holds_one_file_per_study_and_pruners_are_configurable(tmp_path):
    import optuna

    from tasks.ml.search import make_pruner, make_storage

    for name in ("a", "b"):
        optuna.create_study(study_name=name, storage=make_storage(f"journal:{tmp_path}/studies/", name))
    assert sorted(p.name for p in (tmp_path / "studies").iterdir()) == ["a.journal", "b.journal"]
    assert isinstance(make_pruner("successive_halving"), optuna.pruners.SuccessiveHalvingPruner)
    assert isinstance(make_pruner("hyperband"), optuna.pruners.HyperbandPruner)
    assert isinstance(make_pruner("median"), MedianOfLikeTrials)
    assert isinstance(make_pruner("none"), optuna.pruners.NopPruner)


def test_a_sole_writers_journal_gets_each_trial_once_it_ends_and_refuses_a_second_writer(tmp_path):
    """One search's study file: its trials reach the file whole, as they end (what a killed run leaves is
    finished trials only), it reads the same as Optuna's own backend, and a second writer is refused."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from tasks.ml.search import StudyInUse, make_storage

    path = tmp_path / "s.journal"

    def on_disk() -> list:
        return optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path)))).trials

    storage = make_storage(f"journal:{path}", sole_writer=True)
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    storage.flush()
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3, callbacks=[storage.flush])
    running = study.ask()
    running.suggest_float("x", 0, 1)
    running.set_user_attr("note", "unfinished")
    assert [t.state for t in on_disk()] == [optuna.trial.TrialState.COMPLETE] * 3  # the running one is not there
    with pytest.raises(StudyInUse, match="being searched by another process.*search.trial_workers"):
        make_storage(f"journal:{path}", sole_writer=True)
    study.tell(running, 0.5)
    storage.close()
    assert [(t.number, t.value, t.params, t.user_attrs) for t in on_disk()] == [
        (t.number, t.value, t.params, t.user_attrs) for t in study.trials]
    again = make_storage(f"journal:{path}", sole_writer=True)  # the lock went with close()
    assert len(optuna.load_study(study_name="s", storage=again).trials) == 4
    again.close()


def test_a_dead_workers_running_trial_is_failed_and_retried_and_the_budget_counts_running_trials(tmp_path):
    """A RUNNING trial whose process is gone is failed and its parameters enqueued; one owned by a live
    process of another worker counts against the budget (it will finish there)."""
    import optuna

    from tasks.ml.search import make_storage, optimize_within_budget, retry_dead_workers_trials

    storage = make_storage(f"journal:{tmp_path}/s.journal")
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    dead = study.ask({"C": optuna.distributions.FloatDistribution(0.1, 1.0)})
    dead.set_user_attr("worker", f"{socket.gethostname()}:999999999")  # no such pid
    alive = study.ask({"C": optuna.distributions.FloatDistribution(0.1, 1.0)})
    alive.set_user_attr("worker", f"{socket.gethostname()}:{os.getppid()}")  # a live process
    assert retry_dead_workers_trials(study, storage) == [dead.number]
    trials = {t.number: t for t in study.get_trials()}
    assert trials[dead.number].state == optuna.trial.TrialState.FAIL
    assert trials[dead.number].user_attrs["error"] == "its worker died"
    assert trials[alive.number].state == optuna.trial.TrialState.RUNNING
    assert retry_dead_workers_trials(study, storage) == []  # failed once, retried once

    ran = []

    def objective(trial):
        ran.append(trial.suggest_float("C", 0.1, 1.0))
        return 0.5

    settings = SearchSettings(metric="fbeta", direction="maximize", n_trials=4)
    assert optimize_within_budget(study, objective, settings) == 3  # 4 owed, 1 running elsewhere
    assert ran[0] == dead.params["C"]  # the dead worker's parameters were tried first


def test_random_forest_trees_grow_on_a_capped_bootstrap_sample_on_large_tables(monkeypatch):
    from tasks.ml import estimators

    X, y = np.random.default_rng(0).normal(size=(400, 3)), np.arange(400) % 2
    spec = get_family("random_forest")
    monkeypatch.setattr(estimators, "RF_ROWS_PER_TREE", 100)
    model = spec.make({"n_estimators": 5}, 0, 1, 2)
    spec.fit(model, X, y, estimators.FitContext(None, None, 2))
    assert model.max_samples == 0.25  # 100 of 400 rows per tree
    monkeypatch.setattr(estimators, "RF_ROWS_PER_TREE", 1000)
    model = spec.make({"n_estimators": 5}, 0, 1, 2)
    spec.fit(model, X, y, estimators.FitContext(None, None, 2))
    assert model.max_samples is None  # small tables: every tree sees a full bootstrap sample
    monkeypatch.setattr(estimators, "RF_ROWS_PER_TREE", 100)
    model = spec.make({"n_estimators": 5, "max_samples": 0.5}, 0, 1, 2)
    spec.fit(model, X, y, estimators.FitContext(None, None, 2))
    assert model.max_samples == 0.125  # the searched half, of the 100 rows a tree may hold


def test_random_forest_trees_are_fewer_on_large_tables_and_the_search_is_told_the_rows():
    from tasks.ml.search_spaces import rf_max_trees

    assert rf_max_trees(None) == rf_max_trees(10_000) == 300
    assert rf_max_trees(10_001) == rf_max_trees(112_500) == 150 and rf_max_trees(1_000_000) == 100
    sampler = optuna.samplers.RandomSampler(seed=0)
    study = optuna.create_study(sampler=sampler)
    for _ in range(30):
        trial = study.ask()
        assert get_family("random_forest").space(trial, True, n_rows=1_000_000)["n_estimators"] <= 100
        study.tell(trial, 0.0)


def test_random_forest_fits_its_memory_budget_on_large_tables(monkeypatch):
    import pickle

    from tasks.ml import estimators

    X, y = np.random.default_rng(0).normal(size=(4000, 5)), np.random.default_rng(1).integers(0, 2, 4000)
    spec = get_family("random_forest")
    params = {"n_estimators": 10, "max_depth": 20, "min_samples_leaf": 1}
    monkeypatch.setattr(estimators, "RF_MAX_ROWS_PER_TREE", 1000)
    grown = spec.make(params, 0, 1, 2)
    spec.fit(grown, X, y, estimators.FitContext(None, None, 2))  # noise: trees grow a leaf per few rows
    budget = len(pickle.dumps(grown)) // 8
    monkeypatch.setattr(estimators, "RF_MAX_MODEL_BYTES", budget)
    capped = spec.make(params, 0, 1, 2)
    spec.fit(capped, X, y, estimators.FitContext(None, None, 2))
    cap = estimators.rf_leaf_cap(10, 2, budget)
    assert capped.max_leaf_nodes == cap
    assert max(t.get_n_leaves() for t in capped.estimators_) <= cap < max(t.get_n_leaves() for t in grown.estimators_)
    assert len(pickle.dumps(capped)) <= budget * 1.2  # pickle framing on top of the node arrays
    monkeypatch.setattr(estimators, "RF_MAX_ROWS_PER_TREE", 10_000)
    small = spec.make(params, 0, 1, 2)
    spec.fit(small, X, y, estimators.FitContext(None, None, 2))
    assert small.max_leaf_nodes is None  # tables under the large-table threshold are untouched


def test_xgboost_bounds_its_histogram_cache_on_large_tables(monkeypatch):
    """XGBoost's own memory bound (max_cached_hist_node) past the large-table line, and the booster
    trained with it; small tables keep XGBoost's default."""
    import json

    from tasks.ml import estimators

    X, y = np.random.default_rng(0).normal(size=(400, 3)).astype(np.float32), np.arange(400) % 2
    spec = get_family("xgboost")
    monkeypatch.setattr(estimators, "RF_MAX_ROWS_PER_TREE", 100)
    model = spec.make({"max_depth": 3}, 0, 1, 2)
    spec.fit(model, X, y, estimators.FitContext(None, None, 2, rounds=5))
    assert model.get_params()["max_cached_hist_node"] == estimators.XGB_MAX_CACHED_HIST_NODES
    updaters = json.loads(model.get_booster().save_config())["learner"]["gradient_booster"]["updater"]
    assert updaters[0]["hist_train_param"]["max_cached_hist_node"] == "256"  # what XGBoost trained with
    monkeypatch.setattr(estimators, "RF_MAX_ROWS_PER_TREE", 1000)
    small = spec.make({"max_depth": 3}, 0, 1, 2)
    spec.fit(small, X, y, estimators.FitContext(None, None, 2, rounds=5))
    assert "max_cached_hist_node" not in small.get_params()


def test_timeout_s_ends_a_search_before_its_trial_budget(tmp_path):
    import time

    import optuna

    from tasks.ml.search import optimize_within_budget

    study = optuna.create_study(direction="maximize")

    def slow(trial):
        time.sleep(0.3)
        return trial.suggest_float("x", 0, 1)

    settings = SearchSettings(metric="fbeta", direction="maximize", n_trials=100, timeout_s=1.0)
    ran = optimize_within_budget(study, slow, settings)
    assert 1 <= ran <= 5 and len(study.trials) == ran  # stopped by time, far short of 100
    settings = SearchSettings(metric="fbeta", direction="maximize", n_trials=ran + 2, timeout_s=None)
    assert optimize_within_budget(study, slow, settings) == 2  # the budget counts earlier trials


def test_xgboost_trials_reuse_the_binned_matrices_of_the_same_arrays(monkeypatch):
    """Fits sharing a search's cache build XGBoost's QuantileDMatrix once for the same arrays (train,
    and valid binned with its cuts); other arrays build anew, and clear() drops the pair."""
    import pickle

    import xgboost

    from tasks.ml import estimators

    built = []
    original = xgboost.QuantileDMatrix

    def counting(data, *args, **kwargs):
        built.append((data.shape[0], kwargs.get("ref") is not None))
        return original(data, *args, **kwargs)

    monkeypatch.setattr(xgboost, "QuantileDMatrix", counting)
    rng = np.random.default_rng(0)
    X, Xv = rng.normal(size=(300, 4)).astype(np.float32), rng.normal(size=(100, 4)).astype(np.float32)
    y, yv = (X[:, 0] > 0).astype(int), (Xv[:, 0] > 0).astype(int)
    spec = get_family("xgboost")
    params = {"max_depth": 3, "learning_rate": 0.3}
    cache = estimators.MatrixCache()
    models = []
    for _ in range(3):
        model = spec.make(params, 0, 1, 2)
        spec.fit(model, X, y, estimators.FitContext(Xv, yv, 2, early_stopping_rounds=5, cache=cache))
        models.append(model)
    assert built == [(300, False), (100, True)] and cache.builds == 1  # one pair for three fits
    restored = pickle.loads(pickle.dumps(models[0]))
    np.testing.assert_array_equal(restored.predict_proba(Xv), models[2].predict_proba(Xv))
    X2 = X.copy()
    spec.fit(spec.make(params, 0, 1, 2), X2, y, estimators.FitContext(Xv, yv, 2, early_stopping_rounds=5, cache=cache))
    assert cache.builds == 2 and len(built) == 4  # other arrays (equal values, another object): built again
    cache.clear()
    spec.fit(spec.make(params, 0, 1, 2), X2, y, estimators.FitContext(Xv, yv, 2, early_stopping_rounds=5, cache=cache))
    assert cache.builds == 3 and len(built) == 6
    spec.fit(spec.make(params, 0, 1, 2), X2, y, estimators.FitContext(Xv, yv, 2, early_stopping_rounds=5))
    assert cache.builds == 3 and len(built) == 8  # no cache: this fit's own pair


@pytest.mark.parametrize("case", ["binary", "multiclass_weighted", "native_categories"])
def test_early_stopped_xgboost_is_the_model_xgboosts_own_fit_gives(case):
    """xgb.train on the search's matrices, then the scikit-learn wrapper: the same parameters, booster
    configuration, best iteration and probabilities as XGBClassifier.fit with early stopping."""
    import json
    import pickle

    from sklearn.utils.class_weight import compute_sample_weight
    from xgboost import XGBClassifier

    from tasks.ml import estimators

    rng = np.random.default_rng(1)
    n_classes = 3 if case == "multiclass_weighted" else 2
    X = pd.DataFrame(rng.normal(size=(600, 4)).astype(np.float32), columns=list("abcd"))
    if case == "native_categories":
        X["c"] = pd.Categorical(rng.choice(["u", "v", "w"], size=600), categories=["u", "v", "w", "z"])
    y = np.minimum((X["a"].to_numpy() > 0).astype(int) + (X["b"].to_numpy() > 0.5), n_classes - 1)
    if case == "native_categories":
        y = ((X["c"] == "u").to_numpy() ^ (X["a"].to_numpy() > 1)).astype(int)
    else:
        X = X.to_numpy()
    X_train, y_train, X_valid, y_valid = X[:400], y[:400], X[400:], y[400:]
    spec = get_family("xgboost")
    weight = "balanced" if case == "multiclass_weighted" else None
    ours = spec.make({"max_depth": 3, "learning_rate": 0.3, "subsample": 0.8}, 0, 1, n_classes)
    info = spec.fit(ours, X_train, y_train, estimators.FitContext(
        X_valid, y_valid, n_classes, early_stopping_rounds=5, class_weight=weight, cache=estimators.MatrixCache()))
    assert len(np.unique(y_train)) == n_classes
    reference = XGBClassifier(**ours.get_params())
    reference.fit(X_train, y_train, eval_set=[(X_valid, y_valid)], verbose=False,
                  sample_weight=compute_sample_weight("balanced", y_train) if weight else None)
    assert ours.best_iteration == reference.best_iteration
    assert info["best_iteration"] == ours.best_iteration + 1  # rounds, as the refits count them
    assert ours.best_iteration < 1999  # it did stop early
    assert repr(ours.get_params()) == repr(reference.get_params())
    assert json.loads(ours.get_booster().save_config()) == json.loads(reference.get_booster().save_config())
    restored = pickle.loads(pickle.dumps(ours))
    np.testing.assert_array_equal(restored.predict_proba(X_valid), reference.predict_proba(X_valid))
    assert restored.n_classes_ == n_classes and restored.n_features_in_ == reference.n_features_in_


@pytest.mark.parametrize("family", list(SEARCH_SPACES))
def test_the_first_trial_is_the_librarys_defaults_within_the_space(family):
    """Issue 20: every search starts from the untuned model, so it can only end better on validation."""
    import warnings

    spec = get_family(family)
    for task in sorted(spec.tasks):
        defaults = spec.defaults(task)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # FixedTrial warns about a value outside its distribution
            params = spec.space(optuna.trial.FixedTrial(defaults), task != "regression")
        assert params == defaults, (task, params)


class _PruneAll(optuna.pruners.BasePruner):
    def prune(self, study, trial):
        return True


@pytest.mark.parametrize("prune", [False, True])
def test_a_forest_is_scored_as_it_grows_and_a_pruned_one_stops_at_50_trees(prepared_parts, prune):
    from tasks.ml.estimators import FitContext

    info, parts = prepared_parts
    spec = get_family("random_forest")
    data = prepare_data(spec, info, parts["train"], parts["valid"])
    params = {"n_estimators": 200, "max_depth": 6, "min_samples_leaf": 1, "max_features": "sqrt", "max_samples": 0.8,
              "class_weight": "balanced_subsample"}
    study = optuna.create_study(direction="maximize", pruner=_PruneAll() if prune else optuna.pruners.NopPruner())
    trial = study.ask()
    scored = []
    estimator = spec.make(params, 42, 1, data.n_classes)
    ctx = FitContext(X_valid=data.X_valid, y_valid=data.y_valid, n_classes=data.n_classes, trial=trial,
                     score=lambda forest: scored.append(len(forest.estimators_)) or 0.5)
    if prune:
        with pytest.raises(optuna.TrialPruned, match="50 trees"):
            spec.fit_model(estimator, data.X_train, data.y_train, ctx)
        assert scored == [50] and len(estimator.estimators_) == 50
        return
    spec.fit_model(estimator, data.X_train, data.y_train, ctx)
    assert scored == [50, 100] and study.trials[0].intermediate_values == {50: 0.5, 100: 0.5}
    whole = spec.make(params, 42, 1, data.n_classes).fit(data.X_train, data.y_train)  # the same trees, grown at once
    np.testing.assert_array_equal(estimator.predict_proba(data.X_valid), whole.predict_proba(data.X_valid))


def test_a_booster_searching_alone_runs_parallel_trials_on_every_core(prepared_parts):
    """Issue 20: two cores and no other family searching: each trial records 1 thread beside a second trial
    (2 threads for the last one owed), so the family holds both cores to its last trial."""
    info, parts = prepared_parts
    spec = get_family("lightgbm")
    data = prepare_data(spec, info, parts["train"], parts["valid"])
    settings = SearchSettings(metric="log_loss", direction="minimize", n_trials=5, early_stopping_rounds=10,
                              parallel_trials=True)
    study, _ = run_study(spec, data, settings, threads=lambda: (2, 1))
    table = pd.DataFrame([t.user_attrs for t in study.trials])
    assert len(table) == 5 and (table["threads"] * table["parallel_trials"] == 2).all(), table
    assert (table["parallel_trials"] == 2).sum() >= 3 and (table["families_searching"] == 1).all(), table
    # search.parallel_trials false (the default, reproducible): one trial at a time on both cores.
    study, _ = run_study(spec, data, replace(settings, parallel_trials=False, study_name="one-at-a-time"),
                         threads=lambda: (2, 1))
    table = pd.DataFrame([t.user_attrs for t in study.trials])
    assert len(table) == 5 and (table["threads"] == 2).all() and (table["parallel_trials"] == 1).all(), table


@pytest.mark.parametrize("family", ["lightgbm", "xgboost", "random_forest"])
def test_a_running_fit_takes_the_cores_that_come_free(prepared_parts, family, monkeypatch):
    """Issue 20: a trial started on 1 thread beside another goes on with 2 once that one ended."""
    import xgboost

    from tasks.ml.estimators import FitContext

    told = []  # XGBoost's booster is reloaded after training (with the wrapper's count): what it was told
    set_param = xgboost.Booster.set_param
    monkeypatch.setattr(xgboost.Booster, "set_param",
                        lambda self, params, value=None: told.append(params) or set_param(self, params, value))

    info, parts = prepared_parts
    spec = get_family(family)
    data = prepare_data(spec, info, parts["train"], parts["valid"])
    params = {**spec.defaults("binary"), **({"n_estimators": 150} if family == "random_forest" else {})}
    trial = optuna.create_study(direction="maximize").ask()
    asked = []
    ctx = FitContext(X_valid=data.X_valid, y_valid=data.y_valid, n_classes=data.n_classes, trial=trial,
                     score=lambda model: 0.5, threads_now=lambda: asked.append(1) or 2)
    estimator = spec.make({k: v for k, v in params.items() if k != "class_weight"}, 42, 1, data.n_classes)
    spec.fit_model(estimator, data.X_train, data.y_train, ctx)
    assert asked
    if family == "lightgbm":
        assert estimator.booster_.params["num_threads"] == 2
    elif family == "xgboost":
        assert {"nthread": 2} in told
    else:
        assert estimator.n_jobs == 2


def _finished(study, weight, losses):
    """A completed trial with this class weight that reported `losses` ({step: loss}) to the pruner."""
    study.enqueue_trial({"class_weight": weight})
    trial = study.ask({"class_weight": optuna.distributions.CategoricalDistribution([None, "balanced"])})
    for step, loss in losses.items():
        trial.report(loss, step)
    study.tell(trial, 0.5)


def test_the_median_pruner_compares_like_weighted_trials_and_counts_early_stopped_ones_at_their_best():
    """Issue 20: on bank_marketing the class-weighted trials' larger losses set the median, and a slow
    trial was only ever compared with slow ones: the costly low-learning-rate trials were never pruned."""
    study = optuna.create_study(direction="minimize", pruner=MedianOfLikeTrials(n_startup_trials=4))
    # Two fast unweighted trials stopped by round 40 at losses 0.20 / 0.22; two weighted ones, much worse.
    plan = [(None, {10: 0.30, 20: 0.25, 40: 0.20}), (None, {10: 0.31, 20: 0.26, 40: 0.22}),
            ("balanced", {10: 0.60, 20: 0.55, 40: 0.50, 80: 0.48}), ("balanced", {10: 0.62, 20: 0.57, 40: 0.52})]
    for weight, losses in plan:
        _finished(study, weight, losses)
    study.enqueue_trial({"class_weight": None})
    slow = study.ask({"class_weight": optuna.distributions.CategoricalDistribution([None, "balanced"])})
    assert slow.params["class_weight"] is None
    slow.report(0.35, 80)  # unweighted, still at 0.35 at round 80: the fast ones were done at 0.20 / 0.22
    assert study.pruner.prune(study, study.get_trials(deepcopy=False)[-1])
    # Optuna's own median rule leaves the early-stopped trials out at round 80, and the weighted one sets it.
    assert not optuna.pruners.MedianPruner(n_startup_trials=4).prune(study, study.get_trials(deepcopy=False)[-1])
    # A weighted trial at 0.49 is measured against the weighted ones (0.48 at 80, 0.52 ended at 40): kept.
    assert not MedianOfLikeTrials(n_startup_trials=4, weights_apart=True).prune(study, _as_weighted(study, 0.49))
    # Without weights apart (metrics, not losses) the same trial would trail the median of all four.
    assert MedianOfLikeTrials(n_startup_trials=4, weights_apart=False).prune(study, _as_weighted(study, 0.49))


def _as_weighted(study, loss):
    """A running weighted trial at round 80 (the pruner reads only its params and intermediate values)."""
    return optuna.trial.create_trial(
        params={"class_weight": "balanced"},
        distributions={"class_weight": optuna.distributions.CategoricalDistribution([None, "balanced"])},
        intermediate_values={80: loss}, state=optuna.trial.TrialState.RUNNING)


def test_a_five_trial_search_prunes_once_two_trials_completed():
    """Issue 20: Optuna's 5 startup trials meant a 5-trial search (the 200k-row benchmark) never pruned; the
    median rule now starts after a quarter of the trials, 2 to 5."""
    from tasks.ml.search import make_pruner

    assert [make_pruner("median", n_trials=n).n_startup_trials for n in (3, 5, 12, 20, 100)] == [2, 2, 3, 5, 5]
    study = optuna.create_study(direction="minimize", pruner=make_pruner("median", min_resource=20, n_trials=5))
    for losses in ({20: 0.30, 40: 0.25}, {20: 0.32, 40: 0.27}):
        _finished(study, None, losses)
    study.enqueue_trial({"class_weight": None})
    behind = study.ask({"class_weight": optuna.distributions.CategoricalDistribution([None, "balanced"])})
    behind.report(0.45, 20)
    assert study.pruner.prune(study, study.get_trials(deepcopy=False)[-1])
    assert not make_pruner("median", min_resource=20, n_trials=20).prune(study, study.get_trials(deepcopy=False)[-1])



@pytest.fixture(scope="module")
def noisy_regression():
    """2,000 rows of a smooth signal under noise: a 0.3 learning rate overfits it within 50 rounds."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 5))
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(5)])
    frame["y"] = np.sin(2 * X[:, 0]) + X[:, 1] * X[:, 2] + rng.normal(scale=0.5, size=2000)
    info = validate_dataset(frame, "y")
    return info, split_dataset(frame, info, seed=0)


def test_a_lower_learning_rate_is_kept_only_when_better_on_valid(noisy_regression):
    from tasks.ml.search import _score, refine_learning_rate

    info, parts = noisy_regression
    spec = get_family("lightgbm")
    data = prepare_data(spec, info, parts["train"], parts["valid"])
    settings = SearchSettings(metric="rmse", direction="minimize", n_trials=1, early_stopping_rounds=20)
    params = {**REGRESSION_FIXED["lightgbm"], "learning_rate": 0.3}
    estimator, fit_info = fit_estimator(spec, data, params, settings)
    before = _score(estimator, data.X_valid, data.y_valid, 0, settings)
    refined = refine_learning_rate(spec, data, params, fit_info, before, settings)
    assert refined is not None
    model, info_after, after = refined
    record = info_after["refined"]
    assert record["learning_rate"] == pytest.approx(0.075) and record["from_learning_rate"] == 0.3
    assert after["rmse"] < before["rmse"] and record["valid"] == [before["rmse"], after["rmse"]]
    assert model.learning_rate == pytest.approx(0.075) and record["rounds"] == info_after["best_iteration"] > 0
    assert record["rounds"] > fit_info["best_iteration"]
    # Not kept when it is not better, nor tried where the factor would be under 1.5.
    assert refine_learning_rate(spec, data, params, fit_info, {"rmse": 0.0}, settings) is None
    assert refine_learning_rate(spec, data, params, fit_info, before, settings, max_factor=1.2) is None
    assert refine_learning_rate(spec, data, params, {"best_iteration": 1900}, before, settings) is None
    assert refine_learning_rate(get_family("random_forest"), data, REGRESSION_FIXED["random_forest"], {}, before,
                                settings) is None


@pytest.mark.parametrize("n_trials", [4, 8])
def test_best_pipeline_refines_a_booster_after_enough_trials(noisy_regression, n_trials):
    """Under 5 trials the refinement (about factor trials' worth of fitting) is not tried; from 5 it is."""
    info, parts = noisy_regression
    spec = get_family("xgboost")
    data = prepare_data(spec, info, parts["train"], parts["valid"])
    settings = SearchSettings(metric="rmse", direction="minimize", n_trials=n_trials, early_stopping_rounds=20)
    study, kept = run_study(spec, data, settings)
    pipeline, fit_info, _, refitted, valid_metrics = best_pipeline(spec, data, study, kept, settings, refine=True)
    record = fit_info.get("refined")
    if n_trials < 5:
        assert record is None and not refitted and valid_metrics["rmse"] == pytest.approx(study.best_value)
    else:
        assert refitted and valid_metrics["rmse"] < study.best_value == record["valid"][0]
        assert pipeline.named_steps["model"].learning_rate == pytest.approx(record["learning_rate"])
        assert record["from_learning_rate"] == study.best_params["learning_rate"] > record["learning_rate"]


def test_a_family_whose_trials_fit_a_sample_is_refitted_on_every_train_row(noisy_regression):
    """FamilySpec.trial_rows (CatBoost's on large tables): each trial fits that many sampled train rows, the best
    parameters are then fitted once on all of them, early-stopped on valid, and scored there."""
    info, parts = noisy_regression
    base = get_family("lightgbm")
    rows_fitted: list[int] = []

    def recording_fit(estimator, X, y, ctx):
        rows_fitted.append(len(y))
        return base.fit(estimator, X, y, ctx)

    spec = replace(base, fit=recording_fit, trial_rows=300)
    data = prepare_data(spec, info, parts["train"], parts["valid"])
    n_train = len(data.y_train)
    assert n_train > 300
    settings = SearchSettings(metric="rmse", direction="minimize", n_trials=3, early_stopping_rounds=20)
    study, kept = run_study(spec, data, settings)
    assert rows_fitted == [300, 300, 300] and kept is None  # no trial's model is the family's
    pipeline, fit_info, _, refitted, valid_metrics = best_pipeline(spec, data, study, kept, settings)
    assert rows_fitted[-1] == n_train and refitted and fit_info["trial_rows"] == 300
    model = pipeline.named_steps["model"]
    assert 0 < fit_info["best_iteration"] == model.best_iteration_ < 2000  # early-stopped on valid
    from tasks.ml.search import _score
    assert valid_metrics == _score(model, data.X_valid, data.y_valid, 0, settings)
    # Scoring folds (cv modes), or a train set within the bound, fit every row in every trial.
    from tasks.ml.search import sampled_trial_rows
    assert sampled_trial_rows(spec, replace(data, mode="cv")) is None
    assert sampled_trial_rows(replace(spec, trial_rows=n_train), data) is None
