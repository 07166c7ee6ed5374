"""Process-wide defaults set before Prefect or Comet is imported.

The entry points (the `gauntlet` command, the Python API, the tests) call `configure_environment()`
first. Values already in the environment win, so a user can point at a Prefect server or another
PREFECT_HOME.
"""

from __future__ import annotations

import os

from config.paths import PROJECT_ROOT


def configure_environment() -> None:
    defaults = {
        # A fresh PREFECT_HOME's migrations, with the analytics write, can outlast the 20 s default.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        # tasks/ml logs through the standard "gauntlet" logger: show it with the flow run's logs.
        "PREFECT_LOGGING_EXTRA_LOGGERS": "gauntlet",
        # ...and outside a flow run (a notebook, a unit test) just log locally, without a warning.
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
        # Comet: no error reports to Sentry, no patching of sklearn/lightgbm/xgboost on import.
        "COMET_ERROR_TRACKING_ENABLE": "false",
        "COMET_DISABLE_AUTO_LOGGING": "1",
        # gauntlet logs where each experiment went; Comet's own INFO chatter is left out.
        "COMET_LOGGING_CONSOLE": "WARNING",
        # pyarrow's default pool (mimalloc) keeps what it freed; the system one gives it back (release_memory).
        "ARROW_DEFAULT_MEMORY_POOL": "system",
    }
    if (PROJECT_ROOT / "pyproject.toml").is_file():  # a source checkout: keep Prefect's state here
        defaults["PREFECT_HOME"] = str(PROJECT_ROOT / ".prefect")
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    import logging

    logging.getLogger("gauntlet").setLevel(logging.INFO)  # what tasks/ml says is part of the story
