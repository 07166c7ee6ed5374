"""gauntlet: a tabular training workflow on Prefect 3 and Optuna.

    import gauntlet
    report = gauntlet.train("table.csv", target="churned")
    model = gauntlet.load_model()

`train` and `load_model` are imported on first use, so `import gauntlet` (and the command line's
`--help`) stays fast and the process is set up before Prefect is imported.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TrainReport", "load_model", "train"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from gauntlet import api

        return getattr(api, name)
    raise AttributeError(f"module 'gauntlet' has no attribute {name!r}")
