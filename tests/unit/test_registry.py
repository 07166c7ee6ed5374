import json
import os

import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from config.errors import RegistryError
from tasks import registry


@pytest.fixture()
def fitted(breast_cancer):
    X = breast_cancer.drop(columns="diagnosis")
    y = (breast_cancer["diagnosis"] == "malignant").astype(int)
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y), X


def meta(X):
    return {"classes": ["benign", "malignant"], "features": list(X.columns), "family": "lr"}


def test_register_load_and_predict_original_labels(tmp_path, fitted):
    pipeline, X = fitted
    v1 = registry.register_model(tmp_path, "m", pipeline, meta(X), model_card="# v{version}")
    assert v1 == 1 and registry.get_alias(tmp_path, "m") == 1
    model = registry.load_model(tmp_path, "m")
    assert set(model.predict(X.head(20))) <= {"benign", "malignant"}
    assert list(model.predict_proba(X.head(3)).columns) == ["benign", "malignant"]
    md = json.loads((tmp_path / "m" / "1" / "metadata.json").read_text())
    assert md["version"] == 1 and len(md["model_sha256"]) == 64
    assert (tmp_path / "m" / "1" / "MODEL_CARD.md").read_text() == "# v1"
    # Column order of new data does not matter; a missing column is named.
    assert (model.predict(X[X.columns[::-1]].head(5)) == model.predict(X.head(5))).all()
    with pytest.raises(RegistryError, match="lacks 1 feature column"):
        model.predict(X.drop(columns=["mean radius"]))


def test_versions_increase_and_alias_moves_only_when_asked(tmp_path, fitted):
    pipeline, X = fitted
    registry.register_model(tmp_path, "m", pipeline, meta(X))
    v2 = registry.register_model(tmp_path, "m", pipeline, meta(X), alias=None)
    assert v2 == 2 and registry.get_alias(tmp_path, "m") == 1
    registry.set_alias(tmp_path, "m", "champion", 2)
    assert registry.get_alias(tmp_path, "m") == 2
    with pytest.raises(RegistryError, match="missing version 9"):
        registry.set_alias(tmp_path, "m", "champion", 9)


def test_an_identical_model_adds_no_version_when_refused(tmp_path, fitted):
    pipeline, X = fitted
    registry.register_model(tmp_path, "m", pipeline, {**meta(X), "run_id": "r1"})
    with pytest.raises(registry.IdenticalModel, match="identical to m version 1") as same:
        registry.register_model(tmp_path, "m", pipeline, meta(X), refuse_identical=True)
    assert same.value.version == 1 and registry.list_versions(tmp_path, "m") == [1]
    assert registry.find_versions(tmp_path, "m", run_id="r1") == [1]
    assert registry.find_versions(tmp_path, "m", run_id="r2") == []


def test_with_several_models_the_latest_champion_move_picks_one(tmp_path, fitted):
    pipeline, X = fitted
    registry.register_model(tmp_path, "a", pipeline, meta(X))
    registry.register_model(tmp_path, "b", pipeline, meta(X))
    history = tmp_path / "a" / "alias_history.jsonl"
    history.write_text(history.read_text().replace('"time": "20', '"time": "21'))  # a moved last
    assert registry.resolve_model_name(tmp_path, None, latest=True) == "a"
    with pytest.raises(RegistryError, match="holds 2 models"):
        registry.resolve_model_name(tmp_path, None)


def test_a_tampered_model_file_is_refused_before_unpickling(tmp_path, fitted):
    pipeline, X = fitted
    registry.register_model(tmp_path, "m", pipeline, meta(X))
    with open(tmp_path / "m" / "1" / "model.pkl", "ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(RegistryError, match="fails its checksum"):
        registry.load_model(tmp_path, "m")


def test_a_half_written_version_is_invisible(tmp_path, fitted):
    """A crash while staging leaves a hidden folder that is neither a version nor an alias target."""
    pipeline, X = fitted
    registry.register_model(tmp_path, "m", pipeline, meta(X))
    staging = tmp_path / "m" / ".staging-crashed"
    staging.mkdir()
    (staging / "model.pkl").write_bytes(b"partial")
    assert registry.list_versions(tmp_path, "m") == [1]
    assert registry.register_model(tmp_path, "m", pipeline, meta(X)) == 2
    assert registry.load_model(tmp_path, "m").metadata["version"] == 2


def test_a_failure_during_registration_leaves_the_alias_and_versions_alone(tmp_path, fitted, monkeypatch):
    pipeline, X = fitted
    registry.register_model(tmp_path, "m", pipeline, meta(X))

    def broken_dump(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("tasks.modeling.pickle.dump", broken_dump)
    with pytest.raises(OSError, match="No space left"):
        registry.register_model(tmp_path, "m", pipeline, meta(X))
    assert registry.list_versions(tmp_path, "m") == [1]
    assert registry.get_alias(tmp_path, "m") == 1
    assert not [p for p in os.listdir(tmp_path / "m") if p.startswith(".staging")]


def test_no_champion_yet_is_a_clear_error(tmp_path):
    with pytest.raises(RegistryError, match="has no 'champion' alias"):
        registry.load_model(tmp_path, "m")
