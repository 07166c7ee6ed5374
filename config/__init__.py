"""gauntlet configuration: pydantic schema and YAML loading."""

from config.errors import ConfigError, DataError, GauntletError, RegistryError
from config.schema import FAMILIES, METRIC_DIRECTIONS, TrainConfig, load_config

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
