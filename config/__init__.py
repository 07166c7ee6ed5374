"""gauntlet configuration: pydantic schema and YAML loading."""

from __future__ import annotations

import importlib
from typing import Any

from config.errors import ConfigError, DataError, GauntletError, RegistryError

__all__ = [
    "FAMILIES",
    "METRIC_DIRECTIONS",
    "ConfigError",
    "DataError",
    "GauntletError",
    "RegistryError",
    "TrainConfig",
    "load_config",
]
_SCHEMA_NAMES = {"FAMILIES", "METRIC_DIRECTIONS", "TrainConfig", "load_config"}


def __getattr__(name: str) -> Any:
    # The schema imports optuna, numpy and pydantic (0.25 s): config.errors and config.paths, imported by
    # the local server's process and before it starts, must not wait for them.
    if name in _SCHEMA_NAMES:
        return getattr(importlib.import_module("config.schema"), name)
    raise AttributeError(f"module 'config' has no attribute {name!r}")
