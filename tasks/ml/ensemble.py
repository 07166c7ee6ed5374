"""Greedy ensemble selection with replacement (Caruana et al. 2004; AutoGluon's WeightedEnsemble) over the
candidates' validation predictions, and the weighted ensemble it yields (pure: no Prefect, no Comet).

Each round adds the candidate, possibly one already in, whose addition gives the ensemble (the mean of the
picks' predictions) the best validation score; the weights are the picks' counts over the rounds kept, the
best prefix of the rounds (ties: the shorter one). The first pick is the best single candidate, so the
ensemble is never worse than it on the rows it was chosen on: that score flatters it. Its honest score is
cross-fitted (`cross_fitted_blend`): each fold of the validation rows blended with the weights chosen on
the other folds. It competes only when that beats the best single candidate on the same rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

Score = tuple[float, float]  # (the comparison metric, a tie-breaker), both signed so that higher is better


@dataclass(frozen=True)
class Selection:
    weights: dict[str, float]  # candidate -> weight (> 0, summing to 1), in the order first picked
    score: Score  # the ensemble's signed score on the selection rows
    single: Score  # the best single candidate's
    rounds: int  # rounds kept (picks, counting repeats)

    def blend(self, predictions: dict[str, np.ndarray], rows: Any = slice(None)) -> np.ndarray:
        """The weighted mean of the members' predictions on `rows`."""
        return sum(w * np.asarray(predictions[n], dtype=np.float64)[rows] for n, w in self.weights.items())


def greedy_selection(predictions: dict[str, np.ndarray], score: Callable[[np.ndarray], Score],
                     rounds: int = 25) -> Selection:
    """`predictions`: each candidate's validation predictions (probabilities rows x classes, or values),
    best single candidate first on ties; `score(blend)`: the signed score of a blended prediction."""
    names = list(predictions)
    if not names:
        raise ValueError("greedy ensemble selection needs at least one candidate")
    stacked = np.stack([np.asarray(predictions[n], dtype=np.float64) for n in names])
    singles = [score(p) for p in stacked]
    total = np.zeros_like(stacked[0])
    picks: list[int] = []
    trajectory: list[Score] = []
    for k in range(max(1, rounds)):
        scores = [score((total + stacked[j]) / (k + 1)) for j in range(len(names))]
        best = max(range(len(names)), key=lambda j: (scores[j], -j))  # ties: the earlier (better) candidate
        picks.append(best)
        total += stacked[best]
        trajectory.append(scores[best])
    kept = max(range(len(trajectory)), key=lambda i: (trajectory[i], -i)) + 1  # best prefix, the shortest on ties
    counts: dict[str, int] = {}
    for j in picks[:kept]:
        counts[names[j]] = counts.get(names[j], 0) + 1
    weights = {name: count / kept for name, count in counts.items()}
    return Selection(weights, trajectory[kept - 1], max(singles), kept)


def cross_fitted_blend(predictions: dict[str, np.ndarray], score_on: Callable[[np.ndarray, np.ndarray], Score],
                       folds: list[np.ndarray], rounds: int = 25) -> np.ndarray:
    """Each fold's rows blended with the weights that greedy selection chose on the other folds' rows
    (`score_on(blend, rows)`: the signed score of a blend of those rows): an out-of-fold prediction."""
    first = np.asarray(next(iter(predictions.values())), dtype=np.float64)
    out = np.zeros_like(first)
    for k, held in enumerate(folds):
        rows = np.concatenate([f for j, f in enumerate(folds) if j != k])
        chosen = greedy_selection({n: np.asarray(p)[rows] for n, p in predictions.items()},
                                  lambda blend, rows=rows: score_on(blend, rows), rounds)
        out[held] = chosen.blend(predictions, held)
    return out


class WeightedEnsemble:
    """The registered regression ensemble: a weighted mean of its members' predictions. Members take the raw
    feature columns. (WeightedSoftVote: the classifiers'.)"""

    def __init__(self, members: list[Any], names: list[str], weights: list[float]) -> None:
        self.members = members
        self.names = names
        self.weights = np.asarray(weights, dtype=np.float64) / np.sum(weights)

    def _blend(self, outputs: list[np.ndarray]) -> np.ndarray:
        return np.tensordot(self.weights, np.stack(outputs), axes=1)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self._blend([np.asarray(m.predict(X), dtype=np.float64) for m in self.members])

    def describe(self) -> str:
        """"lightgbm 0.48, catboost 0.36, ...": the members by weight."""
        order = np.argsort(-self.weights, kind="stable")
        return ", ".join(f"{self.names[i]} {self.weights[i]:.2f}" for i in order)


class WeightedSoftVote(WeightedEnsemble):
    """The classification ensemble: a weighted mean of the members' class probabilities."""

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return self._blend([np.asarray(m.predict_proba(X), dtype=np.float64) for m in self.members])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)
