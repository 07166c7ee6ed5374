"""Errors that end a run with one readable line (the CLI prints `error: <message>`, exit 2)."""

from typing import Any


def first_problem(exc: Any) -> str:
    """A pydantic ValidationError's first problem in a few words: `data.sha256: field required`."""
    first = exc.errors()[0]
    return f"{'.'.join(map(str, first['loc'])) or 'the file'}: {first['msg'].lower()}"


class GauntletError(Exception):
    """A problem the user can fix; the message names it and says how."""


class ConfigError(GauntletError, ValueError):
    """The configuration or a command-line value is wrong."""


class DataError(GauntletError, ValueError):
    """The input table cannot be trained on as it is."""


class RegistryError(GauntletError):
    """The model registry is missing a model, or a file in it fails its checksum."""


class RunFileError(GauntletError):
    """A run's own file (manifest.json, config.json, a candidate) is missing or damaged."""
