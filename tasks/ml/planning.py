"""Search planning: which families start first, how many search at once, threads for each."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from tasks.ml.estimators import FamilySpec, get_family


@dataclass(frozen=True)
class SearchPlan:
    order: list[str]  # families in start order
    parallel: int  # families searched at once
    threads: int  # threads for each family's models


def encoding_group(spec: FamilySpec, encoding: str) -> tuple[bool, bool]:
    """Families in one group encode the data alike (and share the arrays): scaled or not, native
    categories or not."""
    return spec.scale, spec.native_categorical and encoding == "native"


def plan_search(families: list[str], n_trials: dict[str, int], cores: int, parallelism: int | str,
                encoding: str) -> SearchPlan:
    """concurrency x threads never exceeds the cores; a family that ends hands its core on.

    Start order: longest searches first (trial cost x trials), except that a family whose encoding no
    other family shares starts first, so that its arrays are made and dropped while memory is low.
    """
    wanted = cores if parallelism == "auto" else int(parallelism)
    parallel = max(1, min(len(families), wanted))
    groups = Counter(encoding_group(get_family(f), encoding) for f in families)
    order = sorted(families, key=lambda f: (groups[encoding_group(get_family(f), encoding)] > 1,
                                            -get_family(f).cost * n_trials[f]))
    return SearchPlan(order, parallel, max(1, cores // parallel))
