"""The cores a run's family searches share as they end."""

from __future__ import annotations

import itertools

from tasks.ml.planning import CoreShare


def test_the_last_family_searching_gets_every_core(tmp_path):
    families = ["random_forest", "lightgbm", "xgboost", "logistic_regression"]
    share = CoreShare(tmp_path / "ended", families, cores=16, parallel=4)
    assert share.threads() == 4 and share.searching() == 4
    share.end("lightgbm")
    share.end("xgboost")
    assert share.threads() == 8
    share.end("logistic_regression")
    assert (share.searching(), share.threads()) == (1, 16)
    share.begin("xgboost")  # searched again (a cached search whose files were gone)
    assert share.threads() == 8
    two = CoreShare(tmp_path / "other", families, cores=2, parallel=2)
    assert [two.threads(n) for n in (4, 3, 2, 1)] == [1, 1, 1, 2]


def test_families_searching_at_once_never_use_more_than_the_cores(tmp_path):
    for cores, parallel, searching in itertools.product(range(1, 17), range(1, 6), range(0, 6)):
        share = CoreShare(tmp_path, ["a"], cores=cores, parallel=parallel)
        running = min(parallel, searching)
        assert share.threads(searching) >= 1
        assert running * share.threads(searching) <= max(cores, running)  # one thread each at the least
