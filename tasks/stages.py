"""Stages of a run: what a failure names, and each stage's time and memory in the run's manifest."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager

from config.errors import GauntletError
from tasks import monitoring
from tasks.progress import BOARD
from tasks.runs import RunPaths, read_manifest, write_json


class AllFamiliesFailed(GauntletError):
    """No model family produced a candidate."""


class StageFailed(GauntletError):
    """A stage could not write or read what it needs (disk full, permissions...)."""


@contextmanager
def stage(name: str, stages: dict[str, dict] | None = None) -> Iterator[None]:
    """Name the stage in what a failure says; with `stages`, record its wall time, CPU time and peak RSS."""
    BOARD.set_stage(name)
    try:
        with monitoring.measure(name) as usage:
            yield
        if stages is not None:
            stages[name] = usage.record
    except GauntletError as exc:
        raise type(exc)(f"{name}: {exc}") from exc
    except OSError as exc:
        raise StageFailed(f"{name}: {disk_problem(exc)}") from exc


@contextmanager
def without_heartbeats() -> Iterator[None]:
    """Flow runs started inside send no heartbeats: a subflow's process is its parent's, whose own heartbeat
    says it is alive, and a flow run ends by joining its heartbeat thread, which sleeps in 1 s steps (0.5 s on
    average at the end of every subflow)."""
    from prefect.settings import get_current_settings, temporary_settings

    # Already off (the command line's, around the whole run): new settings cost 20 ms, more beside a search.
    if get_current_settings().flows.heartbeat_frequency is None:
        yield
        return
    with temporary_settings(updates={"flows.heartbeat_frequency": None}):
        yield


def disk_problem(exc: OSError) -> str:
    """An OSError as one line that names the file, the problem and the fix."""
    where = f" writing {exc.filename}" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"no space left on the disk{where}; free space, or set artifacts_dir (and registry.path) to a "
                "folder on a larger disk")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"{exc.strerror}{where}; choose folders you can write to with --set artifacts_dir=PATH "
                "(and registry.path)")
    return f"{type(exc).__name__}: {exc}"


def record_stages(paths: RunPaths, stages: dict[str, dict]) -> None:
    """The stages' figures into the run's manifest.json (`stages`)."""
    manifest = read_manifest(paths)
    manifest["stages"] = stages
    write_json(paths.manifest, manifest)
