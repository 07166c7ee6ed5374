import pytest

from config.errors import ConfigError
from config.paths import PROJECT_ROOT
from config.schema import TrainConfig, load_config, parse_override

TRAIN = PROJECT_ROOT / "config" / "train.yaml"
SMOKE = PROJECT_ROOT / "config" / "smoke.yaml"


def test_shipped_configs_load():
    train, smoke = load_config(TRAIN), load_config(SMOKE)
    assert train.data.path == "builtin:breast_cancer"
    assert train.evaluation.comparison_metric == "auto" and train.evaluation.beta == 0.5
    assert train.evaluation.metric_for("binary") == "fbeta"
    assert train.evaluation.deployment_threshold == 0.7
    assert smoke.models.enabled() == ["logistic_regression", "linear", "random_forest", "lightgbm", "xgboost"]
    assert train.models.enabled()[-1] == "catboost" and not smoke.models.get("catboost").enabled
    assert {getattr(smoke.models, f).n_trials for f in smoke.models.enabled()} == {2}


def test_overrides_are_typed_and_nested():
    cfg = load_config(SMOKE, ["models.xgboost.n_trials=5", "data.path=x.parquet", "data.target=y",
                              "models.lightgbm.enabled=false", "data.drop_columns=[id, ts]"])
    assert cfg.models.xgboost.n_trials == 5
    assert (cfg.data.path, cfg.data.target) == ("x.parquet", "y")
    assert "lightgbm" not in cfg.models.enabled()
    assert cfg.data.drop_columns == ["id", "ts"]
    assert parse_override("a.b=0.5") == (["a", "b"], 0.5)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.trget=x"], "data.trget: unknown key; allowed keys here: path, target, task, drop_columns, positive_class"),
        (["colour=red"], "colour: unknown key; allowed keys here: artifacts_dir, data, split"),
        (["models.tabnet.n_trials=3"], "models.tabnet: unknown key; allowed keys here: logistic_regression, linear, random_forest, lightgbm, xgboost, catboost"),
        (["models.xgboost.n_trials=-3"], "models.xgboost.n_trials: Input should be greater than or equal to 1 (got -3)"),
        (["split.test_size=0.7"], "split.test_size: Input should be less than 0.5 (got 0.7)"),
        (["evaluation.deployment_threshold=1.5"], "deployment_threshold 1.5 is outside [0, 1]"),
        (["evaluation.comparison_metric=mse"], "unknown metric 'mse'; choose auto or one of fbeta"),
        (["data.task=ranking"], "data.task: Input should be 'auto', 'binary', 'multiclass' or 'regression' (got 'ranking')"),
        (["data.task=regression", "evaluation.comparison_metric=fbeta"],
         "evaluation.comparison_metric fbeta is a classification metric, but this is a regression task; set it to "
         "auto (r2) or one of r2, rmse, mae, medae, mape"),
        (["data.task=binary", "evaluation.comparison_metric=rmse"], "rmse is a regression metric"),
        (["search.storage=redis-ish"], "storage 'redis-ish' is not understood"),
        (["search.storage=none", "search.trial_workers=2"], "trial_workers > 1 needs a shared study"),
        (["tracking.backend=wandb"], "tracking.backend: Input should be 'comet' or 'none'"),
    ],
)
def test_bad_config_values_name_the_key_and_what_is_allowed(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(SMOKE, overrides)
    text = str(err.value)
    assert message in text
    assert "\n" not in text  # one line


def test_disabling_every_family_and_bad_set_syntax():
    off = [f"models.{f}.enabled=false" for f in ("logistic_regression", "linear", "random_forest", "lightgbm",
                                                "xgboost", "catboost")]
    with pytest.raises(ConfigError, match="every family is disabled"):
        load_config(SMOKE, off)
    with pytest.raises(ConfigError, match="expected KEY.PATH=VALUE"):
        load_config(SMOKE, ["models.xgboost.n_trials"])
    with pytest.raises(ConfigError, match="config file not found: nope.yaml"):
        load_config("nope.yaml")


def test_lower_is_better_metric_resolves_its_direction():
    cfg = load_config(SMOKE, ["evaluation.comparison_metric=log_loss", "evaluation.deployment_threshold=2.5"])
    assert cfg.evaluation.resolved_direction == "minimize"
    auto = TrainConfig().evaluation
    assert auto.comparison_metric == "auto"
    assert (auto.metric_for("binary"), auto.direction_for("binary")) == ("fbeta", "maximize")
    assert (auto.metric_for("regression"), auto.direction_for("regression")) == ("r2", "maximize")
    rmse = load_config(SMOKE, ["evaluation.comparison_metric=rmse", "evaluation.deployment_threshold=40"])
    assert rmse.for_task("regression").evaluation.resolved_direction == "minimize"
    with pytest.raises(ConfigError, match="rmse is a regression metric, but this is a binary classification task"):
        rmse.for_task("binary")
    resolved = load_config(SMOKE).for_task("regression")
    assert resolved.evaluation.comparison_metric == "r2" and "logistic_regression" not in resolved.families()
    assert resolved.families() == ["linear", "random_forest", "lightgbm", "xgboost"]
    assert load_config(SMOKE, ["models.catboost.enabled=true"]).for_task("binary").families() == [
        "logistic_regression", "random_forest", "lightgbm", "xgboost", "catboost"]


def test_config_hash_changes_with_content():
    assert load_config(SMOKE).config_hash() == load_config(SMOKE).config_hash()
    assert load_config(SMOKE).config_hash() != load_config(SMOKE, ["split.seed=1"]).config_hash()
    # Where the outputs go is not part of the experiment.
    elsewhere = load_config(SMOKE, ["artifacts_dir=/elsewhere", "registry.path=/elsewhere/reg",
                                    "tracking.offline_dir=/elsewhere/comet"])
    assert elsewhere.config_hash() == load_config(SMOKE).config_hash()


def test_registry_name_defaults_to_data_and_target():
    assert load_config(SMOKE).model_name == "breast_cancer-diagnosis"
    cfg = load_config(SMOKE, ["data.path=../shared/datasets/adult.parquet", "data.target=income"])
    assert cfg.model_name == "adult-income"
    assert load_config(SMOKE, ["registry.model_name=churn"]).model_name == "churn"
    with pytest.raises(ConfigError, match="registry.model_name: String should match pattern"):
        load_config(SMOKE, ["registry.model_name=../escape"])


def test_train_parameters_map_onto_the_config(tmp_path, monkeypatch):
    from typing import get_args

    from config.schema import FAMILIES, TrainParameters

    params = TrainParameters(config_path="config/smoke.yaml", models=["lightgbm", "xgboost"], n_trials=3,
                             deployment_threshold=0.8, data_path="builtin:wine", target="cultivar",
                             overrides={"split.seed": 7})
    monkeypatch.chdir(tmp_path)  # a relative config path also resolves against the project root
    cfg = params.to_config()
    assert cfg.models.enabled() == ["lightgbm", "xgboost"]
    assert cfg.models.lightgbm.n_trials == 3 and cfg.models.logistic_regression.n_trials == 3
    assert cfg.evaluation.deployment_threshold == 0.8
    assert (cfg.data.path, cfg.data.target, cfg.split.seed) == ("builtin:wine", "cultivar", 7)
    assert TrainParameters().to_config() == load_config(TRAIN)  # no parameters: the config file as it is
    family_field = TrainParameters.model_fields["models"].annotation
    assert set(get_args(get_args(family_field)[0])[0].__args__) == set(FAMILIES)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"n_trials": 0}, "n_trials\n  Input should be greater than or equal to 1"),
        ({"models": ["tabnet"]}, "Input should be 'logistic_regression', 'linear', 'random_forest', 'lightgbm', "
                                 "'xgboost' or 'catboost'"),
        ({"deployment_threshold": -2}, "deployment_threshold\n  Input should be greater than or equal to 0"),
        ({"colour": "red"}, "colour\n  Extra inputs are not permitted"),
    ],
)
def test_train_parameters_reject_bad_values(fields, message):
    from pydantic import ValidationError

    from config.schema import TrainParameters

    with pytest.raises(ValidationError) as err:
        TrainParameters(**fields)
    assert message in str(err.value)


def test_train_parameters_bad_override_is_a_config_error():
    from config.schema import TrainParameters

    with pytest.raises(ConfigError, match="models.xgboost.n_trials: Input should be greater than or equal to 1"):
        TrainParameters(config_path=str(SMOKE), overrides={"models.xgboost.n_trials": -1}).to_config()


def test_time_and_group_strategies_need_their_column():
    with pytest.raises(ConfigError, match="split: strategy time needs split.time_column"):
        load_config(SMOKE, ["split.strategy=time"])
    with pytest.raises(ConfigError, match="split: strategy group needs split.group_column"):
        load_config(SMOKE, ["split.strategy=group"])
    cfg = load_config(SMOKE, ["split.strategy=time", "split.time_column=arrival_date"])
    assert cfg.split.time_column == "arrival_date"
