"""Greedy ensemble selection (Caruana et al. 2004) over validation predictions, and its weighted ensemble."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from tasks.ml.ensemble import WeightedEnsemble, WeightedSoftVote, greedy_selection
from tasks.ml.metrics import compute_metrics


def _score(y):
    def score(proba):
        return (compute_metrics(y, proba, n_classes=2, only="roc_auc")["roc_auc"],
                -compute_metrics(y, proba, n_classes=2, only="log_loss")["log_loss"])
    return score


def _proba(p):
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.column_stack([1 - p, p])


def test_two_models_with_independent_errors_are_blended_and_beat_each():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    signal = y * 2.0 - 1.0
    a = 1 / (1 + np.exp(-(signal + rng.normal(0, 1.5, 2000))))  # each sees the label through its own noise
    b = 1 / (1 + np.exp(-(signal + rng.normal(0, 1.5, 2000))))
    selection = greedy_selection({"a": _proba(a), "b": _proba(b)}, _score(y))
    assert set(selection.weights) == {"a", "b"}
    assert sum(selection.weights.values()) == pytest.approx(1.0)
    assert all(0.3 < w < 0.7 for w in selection.weights.values())  # alike models: near-equal shares
    assert selection.score > selection.single


def test_noise_is_never_blended_in_and_the_best_single_model_stays_alone():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 2000)
    good = 1 / (1 + np.exp(-((y * 2.0 - 1.0) * 2 + rng.normal(0, 1.0, 2000))))
    noise = rng.random(2000)
    selection = greedy_selection({"good": _proba(good), "noise": _proba(noise)}, _score(y))
    assert selection.weights == {"good": 1.0}
    assert selection.score == pytest.approx(selection.single)


def test_the_best_prefix_of_the_rounds_is_kept():
    y = np.array([0, 1, 0, 1])
    calls = []

    def score(blend):  # better the closer the blend is to 0.25 on every row: one "a" for three "b"
        calls.append(1)
        return (-float(np.abs(blend - 0.25).sum()), 0.0)

    selection = greedy_selection({"a": np.ones(4), "b": np.zeros(4)}, score, rounds=10)
    assert selection.weights == {"b": 0.75, "a": 0.25} or selection.weights == {"a": 0.25, "b": 0.75}
    assert selection.rounds == 4 and len(calls) == 2 * 10 + 2 and y.size == 4


class Const:
    def __init__(self, p):
        self.p = p

    def predict_proba(self, X):
        return np.tile([1 - self.p, self.p], (len(X), 1))

    def predict(self, X):
        return np.full(len(X), self.p * 10)


def test_weighted_ensembles_predict_the_weighted_mean_and_pickle():
    vote = pickle.loads(pickle.dumps(WeightedSoftVote([Const(0.2), Const(0.8)], ["a", "b"], [3, 1])))
    assert np.allclose(vote.predict_proba(np.zeros((2, 1))), [[0.65, 0.35]] * 2)
    assert list(vote.predict(np.zeros((2, 1)))) == [0, 0] and vote.describe() == "a 0.75, b 0.25"
    mean = WeightedEnsemble([Const(0.2), Const(0.8)], ["a", "b"], [0.5, 0.5])
    assert np.allclose(mean.predict(np.zeros((3, 1))), 5.0) and not hasattr(mean, "predict_proba")


def test_no_candidate_is_refused():
    with pytest.raises(ValueError, match="at least one candidate"):
        greedy_selection({}, lambda blend: (0.0, 0.0))
