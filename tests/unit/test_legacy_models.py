"""A model registered before the preprocessing classes changed still loads and predicts the same."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

LEGACY = Path(__file__).resolve().parents[1] / "data" / "legacy_registry"


def test_a_model_registered_by_an_earlier_gauntlet_loads_and_predicts_the_same(tmp_path):
    from tasks import registry

    root = tmp_path / "registry"
    shutil.copytree(LEGACY / "breast_cancer-diagnosis", root / "breast_cancer-diagnosis")
    assert registry.verify(root) == []
    model = registry.load_model(root, "breast_cancer-diagnosis")
    test = pd.read_parquet(LEGACY / "test.parquet")
    seen = pd.read_csv(LEGACY / "test_predictions.csv")
    assert list(map(str, model.predict(test))) == list(map(str, seen["predicted"]))
    proba = model.predict_proba(test)
    assert abs(proba.to_numpy()[:, 1] - seen["proba_malignant"].to_numpy()).max() < 1e-6
