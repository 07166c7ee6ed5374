"""The local model registry (the embedded default); its layout is in docs/artifacts.md.

A version is written whole into a hidden folder and renamed into place; `aliases.json` is replaced by
an atomic rename under a file lock, and every move is appended to `alias_history.jsonl`, which
`rollback` reads. A crash leaves the old state or the new one, never a half-written champion.
Loading checks the sha256 before unpickling. `main` is the command line.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import json
import logging
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pandas as pd
from filelock import FileLock
from pydantic import BaseModel, ConfigDict, RootModel, StrictInt, ValidationError

from config.errors import GauntletError, RegistryError, first_problem
from tasks.modeling import load_pipeline, save_pipeline
from tasks.runs import write_json

log = logging.getLogger("gauntlet.registry")

ALIASES = "aliases.json"
HISTORY = "alias_history.jsonl"
CHAMPION = "champion"
DEFAULT_ROOT = "artifacts/registry"


def _model_dir(root: str | Path, model_name: str) -> Path:
    return Path(root) / model_name


def _lock(model_dir: Path) -> FileLock:
    model_dir.mkdir(parents=True, exist_ok=True)
    return FileLock(str(model_dir / ".lock"), timeout=120)


def list_versions(root: str | Path, model_name: str) -> list[int]:
    model_dir = _model_dir(root, model_name)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def list_models(root: str | Path) -> list[str]:
    """The registry's model names (folders holding at least one version)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and list_versions(root, p.name))


def resolve_model_name(root: str | Path, model_name: str | None, latest: bool = False) -> str:
    """`model_name`, checked; or, when none is named, the registry's only model. `latest`: with several
    models, the one whose 'champion' moved most recently (logged), instead of an error."""
    names = list_models(root)
    if model_name:
        if model_name not in names:
            known = f"it holds {', '.join(names)}" if names else "it is empty: run `make train` first"
            raise RegistryError(f"no model named {model_name!r} in the registry {root}; {known}")
        return model_name
    if not names:
        raise RegistryError(f"the registry {root} holds no model; run `make train` first, or point to "
                            "another registry")
    if len(names) == 1:
        return names[0]
    if not latest:
        raise RegistryError(f"the registry {root} holds {len(names)} models ({', '.join(names)}); "
                            "name one with --model")
    moved = {name: _champion_moved_at(root, name) for name in names}
    chosen = max(names, key=lambda name: moved[name])
    others = ", ".join(n for n in names if n != chosen)
    log.info("model %s: its 'champion' moved most recently (%s) of the registry's %d models (also %s); "
             "name another with --model / MODEL=", chosen, moved[chosen] or "unknown", len(names), others)
    return chosen


def _champion_moved_at(root: str | Path, model_name: str) -> str:
    """When the model's 'champion' alias last moved (ISO time; '' when it never did)."""
    moves = alias_history(root, model_name, CHAMPION)
    if moves:
        return max(m.time for m in moves)
    path = _model_dir(root, model_name) / ALIASES  # a registry older than the alias history
    if path.is_file():
        return datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="seconds")
    return ""


class _Aliases(RootModel[dict[str, StrictInt]]):
    pass


class _Metadata(BaseModel):
    """What every reader of a version's metadata.json relies on; the rest is free."""

    model_config = ConfigDict(extra="allow")
    model_name: str
    version: StrictInt
    model_file: str = "model.pkl"
    model_sha256: str
    features: list[str | int]
    classes: list[Any]  # empty for a regression


def _validated(path: Path, schema: type[BaseModel], fix: str) -> Any:
    """A registry JSON file read and checked; a damaged one is one line naming the file and the fix."""
    try:
        return schema.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        raise RegistryError(f"the registry file {path} is damaged ({first_problem(exc)}); {fix}") from None
    except OSError as exc:
        raise RegistryError(f"the registry file {path} cannot be read ({exc.strerror}); {fix}") from None


def get_aliases(root: str | Path, model_name: str) -> dict[str, int]:
    path = _model_dir(root, model_name) / ALIASES
    if not path.is_file():
        return {}
    fix = ("run `gauntlet registry verify`, then restore it from a backup, or delete it and point the alias "
           f"again with `gauntlet registry promote {model_name} VERSION`")
    return dict(_validated(path, _Aliases, fix).root)


def get_alias(root: str | Path, model_name: str, alias: str = "champion") -> int | None:
    return get_aliases(root, model_name).get(alias)


def read_metadata(root: str | Path, model_name: str, version: int) -> dict[str, Any]:
    path = _model_dir(root, model_name) / str(version) / "metadata.json"
    if not path.is_file():
        raise RegistryError(f"model {model_name!r} has no version {version} in {root}")
    fix = (f"run `gauntlet registry verify`, then restore the version from a backup, or remove its folder "
           f"{path.parent} and point 'champion' elsewhere with `gauntlet registry promote {model_name} VERSION`")
    return _validated(path, _Metadata, fix).model_dump()


class IdenticalModel(RegistryError):
    """The model to register is byte for byte a version the registry holds already."""

    def __init__(self, model_name: str, version: int) -> None:
        super().__init__(f"the model is identical to {model_name} version {version}; no new version")
        self.version = version


class AliasMoved(RegistryError):
    """The alias moved while the model was being gated, and against the version it points at now the
    model does not pass: nothing is registered."""


def find_versions(root: str | Path, model_name: str, **fields: Any) -> list[int]:
    """The versions whose metadata holds all of `fields` (e.g. run_id=..., model_sha256=...)."""
    found = []
    for version in list_versions(root, model_name):
        try:
            meta = read_metadata(root, model_name, version)
        except (RegistryError, OSError, ValueError):
            continue  # verify reports a broken version; it matches nothing here
        if all(meta.get(k) == v for k, v in fields.items()):
            found.append(version)
    return found


def set_alias(root: str | Path, model_name: str, alias: str, version: int) -> None:
    model_dir = _model_dir(root, model_name)
    with _lock(model_dir):
        if not (model_dir / str(version) / "metadata.json").is_file():
            raise RegistryError(f"cannot point {alias!r} at missing version {version} of {model_name!r}")
        aliases = get_aliases(root, model_name)
        previous = aliases.get(alias)
        aliases[alias] = version
        write_json(model_dir / ALIASES, aliases, durable=True)
        if previous != version:
            _append_history(model_dir, alias, "set", version, previous, "set through set_alias")


def register_model(
    root: str | Path,
    model_name: str,
    pipeline: Any,
    metadata: dict[str, Any],
    model_card: str = "",
    alias: str | None = "champion",
    extra_files: dict[str, bytes] | None = None,
    refuse_identical: bool = False,
    recheck: Callable[[int | None], dict[str, Any] | None] | None = None,
) -> int:
    """Add a version, complete before it becomes visible, and move `alias` to it; returns the version.
    `refuse_identical`: raise IdenticalModel, adding nothing, when a version holds the same model bytes.
    `recheck`: called under the model's lock with the version `alias` points at now, so that the gate's
    comparison and the alias move are one step; it raises (AliasMoved) to add nothing, or returns
    metadata to update (the gate decided again against a champion registered meanwhile).

    `extra_files` (e.g. model.onnx) go into the version, their sha256 recorded. The alias history gets
    the gate's reason (`metadata["gate"]["reason"]`) when there is one.
    """
    model_dir = _model_dir(root, model_name)
    remove_stale_staging(model_dir)
    staging = model_dir / f".staging-{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    try:
        sha = save_pipeline(pipeline, staging / "model.pkl")
        files = {}
        for file_name, data in (extra_files or {}).items():
            with open(staging / file_name, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            files[file_name] = hashlib.sha256(data).hexdigest()
        with _lock(model_dir):
            same = find_versions(root, model_name, model_sha256=sha) if refuse_identical else []
            if same:
                raise IdenticalModel(model_name, same[-1])
            if recheck is not None:
                metadata = {**metadata, **(recheck(get_aliases(root, model_name).get(alias or CHAMPION)) or {})}
            versions = list_versions(root, model_name)
            version = (versions[-1] if versions else 0) + 1
            full = {
                **metadata,
                "model_name": model_name,
                "version": version,
                "registered_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "model_file": "model.pkl",
                "model_sha256": sha,
                **({"files_sha256": files} if files else {}),
            }
            _Metadata.model_validate(full)  # what readers rely on is there before anything is written
            write_json(staging / "metadata.json", full, durable=True)
            (staging / "MODEL_CARD.md").write_text(model_card.replace("{version}", str(version)))
            _fsync_dir(staging)
            os.rename(staging, model_dir / str(version))
            _fsync_dir(model_dir)
            if alias:
                aliases = get_aliases(root, model_name)
                previous = aliases.get(alias)
                aliases[alias] = version
                write_json(model_dir / ALIASES, aliases, durable=True)
                run_id = metadata.get("run_id")
                gate = metadata.get("gate")
                reason = gate.get("reason") if isinstance(gate, dict) else None
                if not reason:
                    reason = f"registered by run {run_id}" if run_id else "registered (no run id)"
                _append_history(model_dir, alias, "register", version, previous, str(reason),
                                run_id=str(run_id) if run_id else None)
        return version
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


STALE_STAGING_S = 3600  # a staging folder this old belongs to a registration that was killed


def remove_stale_staging(model_dir: Path, older_than_s: float | None = None) -> None:
    """Remove what registrations killed mid-way left behind (never visible as versions: hidden names)."""
    if not model_dir.is_dir():
        return
    older_than_s = STALE_STAGING_S if older_than_s is None else older_than_s
    now = time.time()
    for path in model_dir.glob(".staging-*"):
        try:
            if now - path.stat().st_mtime > older_than_s:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:  # removed by another process meanwhile
            pass


# --- Alias history -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AliasMove:
    """One line of `alias_history.jsonl`: `alias` went from version `previous` (None: nowhere) to `version`.

    Lines are appended oldest first, fsynced under the model's lock after the alias file is replaced.
    A crash leaves at most a torn last line without a newline: readers skip it, the next append cuts it.
    `action`: register, promote, rollback or set; `time`: UTC, ISO 8601; `undoes`: the seq a rollback undid.
    """

    seq: int
    time: str
    alias: str
    action: str
    version: int
    previous: int | None
    reason: str
    user: str
    undoes: int | None = None
    run_id: str | None = None

    @classmethod
    def from_json(cls, record: Any) -> AliasMove:
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")

        def optional_int(key: str) -> int | None:
            return None if record.get(key) is None else int(record[key])

        return cls(
            seq=int(record["seq"]), time=str(record["time"]), alias=str(record["alias"]),
            action=str(record["action"]), version=int(record["version"]), previous=optional_int("previous"),
            reason=str(record.get("reason", "")), user=str(record.get("user", "")),
            undoes=optional_int("undoes"), run_id=None if record.get("run_id") is None else str(record["run_id"]),
        )

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None or k == "previous"}

    def describe(self) -> str:
        before = "nowhere" if self.previous is None else f"v{self.previous}"
        return (f"#{self.seq} {self.time} {self.action} {self.alias}: {before} -> v{self.version} "
                f"by {self.user}: {self.reason}")


def _parse_history(data: bytes) -> tuple[list[AliasMove], list[str]]:
    """(the moves, a problem per unreadable line). The piece after the last newline is a line torn
    by a crash mid-append, never a record: skipped."""
    moves: list[AliasMove] = []
    problems: list[str] = []
    for number, line in enumerate(data.split(b"\n")[:-1], 1):
        if not line.strip():
            continue
        try:
            moves.append(AliasMove.from_json(json.loads(line)))
        except Exception as exc:
            problems.append(f"{HISTORY} line {number} unreadable ({type(exc).__name__}: {exc})")
    return moves, problems


def _read_history(model_dir: Path) -> tuple[list[AliasMove], list[str]]:
    path = model_dir / HISTORY
    return _parse_history(path.read_bytes()) if path.is_file() else ([], [])


def _current_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (some containers): the move is still recorded
        return "unknown"


def _append_history(model_dir: Path, alias: str, action: str, version: int, previous: int | None,
                    reason: str, undoes: int | None = None, run_id: str | None = None) -> AliasMove:
    """Append one move to the model's alias history; the caller holds the model's lock. The line is
    on the disk (fsync) when this returns."""
    path = model_dir / HISTORY
    data = path.read_bytes() if path.is_file() else b""
    if data and not data.endswith(b"\n"):  # a line torn by a crash: cut it off, it was never a record
        os.truncate(path, data.rfind(b"\n") + 1)
    moves, _ = _parse_history(data)
    move = AliasMove(
        seq=max((m.seq for m in moves), default=0) + 1,
        time=datetime.now(UTC).isoformat(timespec="seconds"), alias=alias, action=action, version=int(version),
        previous=None if previous is None else int(previous), reason=reason, user=_current_user(),
        undoes=undoes, run_id=run_id,
    )
    line = memoryview((json.dumps(move.to_json()) + "\n").encode())
    created = not data
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        while line:
            line = line[os.write(fd, line):]
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        _fsync_dir(model_dir)
    return move


def alias_history(root: str | Path, model_name: str, alias: str | None = None) -> list[AliasMove]:
    """The model's alias moves, oldest first (only those of `alias` when given); unreadable lines,
    which `verify` reports, are skipped."""
    moves = _read_history(_model_dir(root, model_name))[0]
    return [m for m in moves if alias is None or m.alias == alias]


# --- Operating the registry: list, show, promote, rollback -----------------------------------------


@dataclass(frozen=True)
class ModelSummary:
    """One model of the registry: its versions, its aliases and the last alias move."""

    name: str
    versions: tuple[int, ...]
    aliases: dict[str, int]
    last_move: AliasMove | None

    @property
    def champion(self) -> int | None:
        return self.aliases.get(CHAMPION)


@dataclass(frozen=True)
class VersionDescription:
    """One version's record in readable fields; `problem` is None when every file of the version is
    present and matches its recorded sha256."""

    name: str
    version: int
    family: str | None
    run_id: str | None
    registered_at: str | None
    metric: str | None
    direction: str | None
    test_metrics: dict[str, Any]
    valid_metrics: dict[str, Any]
    gate_passed: bool | None
    gate_reason: str | None
    model_file: str
    model_sha256: str
    files_sha256: dict[str, str]
    aliases: tuple[str, ...]
    problem: str | None
    history: tuple[AliasMove, ...]  # the alias moves to or from this version
    metadata: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def intact(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class AliasChange:
    """What `promote` or `rollback` did: `alias` now points at `version`, and pointed at `previous`."""

    name: str
    alias: str
    version: int
    previous: int | None
    changed: bool
    move: AliasMove | None  # the history record of the move (None when nothing changed)


def _span(versions: list[int] | tuple[int, ...]) -> str:
    """[1, 2, 3, 5] -> "1-3, 5"."""
    parts: list[str] = []
    for v in sorted(versions):
        if parts and parts[-1].split("-")[-1] == str(v - 1):
            parts[-1] = f"{parts[-1].split('-')[0]}-{v}"
        else:
            parts.append(str(v))
    return ", ".join(parts) or "none"


def describe_models(root: str | Path) -> list[ModelSummary]:
    """Every model of the registry with its versions, aliases and last alias move (`list_models` gives
    the names alone)."""
    summaries = []
    for name in list_models(root):
        moves = alias_history(root, name)
        summaries.append(ModelSummary(name, tuple(list_versions(root, name)), get_aliases(root, name),
                                      moves[-1] if moves else None))
    return summaries


def describe_version(root: str | Path, model_name: str, version: int | None = None) -> VersionDescription:
    """One version's metadata in readable fields (the champion's version when `version` is None), with
    the aliases pointing at it, its alias history and its integrity (every file's sha256 checked)."""
    name = resolve_model_name(root, model_name)
    version = resolve_version(root, name, CHAMPION, version)
    metadata = read_metadata(root, name, version)
    gate = metadata.get("gate") if isinstance(metadata.get("gate"), dict) else {}

    def optional_str(value: Any) -> str | None:
        return None if value is None else str(value)

    return VersionDescription(
        name=name, version=version, family=optional_str(metadata.get("family")),
        run_id=optional_str(metadata.get("run_id")), registered_at=optional_str(metadata.get("registered_at")),
        metric=optional_str(metadata.get("metric") or gate.get("metric")),
        direction=optional_str(metadata.get("direction") or gate.get("direction")),
        test_metrics=dict(metadata.get("test_metrics") or {}), valid_metrics=dict(metadata.get("valid_metrics") or {}),
        gate_passed=gate.get("passed"), gate_reason=optional_str(gate.get("reason")),
        model_file=str(metadata.get("model_file", "model.pkl")), model_sha256=str(metadata.get("model_sha256", "")),
        files_sha256=dict(metadata.get("files_sha256") or {}),
        aliases=tuple(sorted(a for a, v in get_aliases(root, name).items() if v == version)),
        problem=_version_problem(root, name, version),
        history=tuple(m for m in alias_history(root, name) if version in (m.version, m.previous)),
        metadata=metadata,
    )


def _move(root: str | Path, name: str, alias: str, version: int, action: str, reason: str,
          undoes: int | None = None) -> AliasChange:
    """Point `alias` at `version` and record the move; the caller holds the model's lock and checked
    that `version` is complete."""
    model_dir = _model_dir(root, name)
    aliases = get_aliases(root, name)
    previous = aliases.get(alias)
    if previous == version:
        return AliasChange(name, alias, version, previous, changed=False, move=None)
    aliases[alias] = version
    write_json(model_dir / ALIASES, aliases, durable=True)
    move = _append_history(model_dir, alias, action, version, previous, reason, undoes=undoes)
    return AliasChange(name, alias, version, previous, changed=True, move=move)


def promote(root: str | Path, model_name: str, version: int, reason: str | None = None,
            alias: str = CHAMPION) -> AliasChange:
    """Point `alias` at `version` atomically and record the move (reason, previous version, time, user).

    Raises RegistryError, changing nothing, for a version that is missing or fails its checksum.
    Promoting the version the alias already points at records nothing.
    """
    name = resolve_model_name(root, model_name)
    version = int(version)
    versions = list_versions(root, name)
    if version not in versions:
        raise RegistryError(f"model {name!r} has no version {version} in {root}; promote one of its versions "
                            f"({_span(versions)})")
    problem = _version_problem(root, name, version)  # versions never change once in place: no lock needed
    if problem:
        raise RegistryError(f"cannot promote {name!r} version {version}: {problem}; promote another version, "
                            "or register this model again")
    with _lock(_model_dir(root, name)):
        return _move(root, name, alias, version, "promote", reason or "promoted by hand")


def rollback(root: str | Path, model_name: str, reason: str | None = None, alias: str = CHAMPION) -> AliasChange:
    """Move `alias` back to where it pointed before its last move; a second rollback goes further back.

    Without an earlier version in the history, the alias goes to the highest complete version below
    the current one. Raises RegistryError, changing nothing, when there is nowhere to go.
    """
    name = resolve_model_name(root, model_name)
    model_dir = _model_dir(root, name)
    with _lock(model_dir):
        current = get_aliases(root, name).get(alias)
        if current is None:
            raise RegistryError(f"model {name!r} has no {alias!r} alias in {root}: nothing to roll back; "
                                f"promote a version first")
        moves = [m for m in _read_history(model_dir)[0] if m.alias == alias]
        undone = {m.undoes for m in moves if m.action == "rollback"}
        standing = [m for m in moves if m.action != "rollback" and m.seq not in undone]
        last = standing[-1] if standing else None
        if last is not None and last.version == current and last.previous is not None:
            target, undoes = last.previous, last.seq
            problem = _version_problem(root, name, target)
            if problem:
                raise RegistryError(f"cannot roll back {name!r} {alias!r} to version {target}, where it pointed "
                                    f"before: that version {problem}; promote a sound version instead")
        else:
            undoes = None
            target = next((v for v in reversed(list_versions(root, name))
                           if v < current and _version_problem(root, name, v) is None), None)
            if target is None:
                raise RegistryError(f"nothing to roll back to: {alias!r} of {name!r} points at version {current}, "
                                    "its alias history holds no earlier version and no complete version lies "
                                    "below it")
        return _move(root, name, alias, target, "rollback", reason or "rolled back by hand", undoes=undoes)


def _version_problem(root: str | Path, model_name: str, version: int) -> str | None:
    """Why version `version` is not complete (its metadata unreadable, a file missing or failing its
    recorded sha256), or None when it is. Reads every file of the version once; loads none."""
    from tasks.modeling import file_sha256

    folder = _model_dir(root, model_name) / str(version)
    if not folder.is_dir():
        return "does not exist"
    try:
        metadata = _Metadata.model_validate_json((folder / "metadata.json").read_bytes()).model_dump()
        expected = {metadata["model_file"]: metadata["model_sha256"], **metadata.get("files_sha256", {})}
        if int(metadata["version"]) != version:
            raise ValueError(f"metadata says version {metadata['version']}")
    except ValidationError as exc:
        return f"metadata.json damaged ({first_problem(exc)})"
    except Exception as exc:
        return f"metadata unreadable ({type(exc).__name__}: {exc})"
    bad = [f for f, sha in expected.items() if not (folder / f).is_file() or file_sha256(folder / f) != sha]
    return f"{', '.join(bad)} missing or failing its sha256" if bad else None


def verify(root: str | Path) -> list[str]:
    """Every problem in the registry at `root`, empty when sound; reads every model file once, loads none.

    Checks that each version is complete, each alias points at a complete version and each history line reads.
    """
    problems: list[str] = []
    for name in list_models(root):
        complete = set()
        for version in list_versions(root, name):
            problem = _version_problem(root, name, version)
            if problem:
                problems.append(f"{name} v{version}: {problem}")
            else:
                complete.add(version)
        try:
            aliases = get_aliases(root, name)
        except Exception as exc:
            problems.append(f"{name}: {ALIASES} unreadable ({type(exc).__name__}: {exc})")
        else:
            problems += [f"{name}: alias {alias!r} points at version {v}, which is not complete"
                         for alias, v in aliases.items() if v not in complete]
        problems += [f"{name}: {problem}" for problem in _read_history(_model_dir(root, name))[1]]
    return problems


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class RegisteredModel:
    """A registry version loaded for use: predictions come back as the original labels."""

    pipeline: Any
    metadata: dict[str, Any]

    @property
    def version(self) -> int:
        return int(self.metadata["version"])

    @property
    def name(self) -> str:
        return str(self.metadata["model_name"])

    @property
    def classes(self) -> list[Any]:
        return list(self.metadata["classes"])

    @property
    def features(self) -> list[str]:
        return list(self.metadata["features"])

    def _inputs(self, frame: pd.DataFrame, read: bool = True) -> pd.DataFrame:
        """The feature columns, read as batch and REST read rows; `read=False`: already read that way."""
        if not all(isinstance(c, str) for c in frame.columns):  # integer names: trained as text (Parquet's)
            frame = frame.rename(columns=str)
        missing = [c for c in self.features if c not in frame.columns]
        if missing:
            raise RegistryError(
                f"input lacks {len(missing)} feature column(s) the model was trained on: {missing[:10]}"
            )
        if not read:
            return frame[self.features]
        from tasks.ml.scoring import InputSchema

        return InputSchema.from_metadata(self.metadata).prepare(frame)

    @property
    def is_regression(self) -> bool:
        return self.metadata.get("task") == "regression"

    def predict_proba(self, frame: pd.DataFrame) -> pd.DataFrame:
        if self.is_regression:
            raise RegistryError(f"{self.name} version {self.version} is a regression model: it has no class "
                                "probabilities; use predict or predict_interval")
        proba = self.pipeline.predict_proba(self._inputs(frame))
        return pd.DataFrame(proba, columns=[str(c) for c in self.classes], index=frame.index)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Original labels, or a regression's numbers on the target's own scale."""
        if self.is_regression:
            return np.asarray(self.pipeline.predict(self._inputs(frame)), dtype=np.float64)
        encoded = self.pipeline.predict(self._inputs(frame))
        return np.asarray(self.classes, dtype=object)[np.asarray(encoded, dtype=int)]

    def predict_interval(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Regression: `prediction`, `prediction_lower`, `prediction_upper` (the split-conformal interval at the
        version's coverage, `metadata["prediction_interval"]`)."""
        if not self.is_regression:
            raise RegistryError(f"{self.name} version {self.version} is a {self.metadata.get('task')} model: "
                                "prediction intervals are for regression; use predict_proba")
        return self.pipeline.predict_interval(self._inputs(frame))

    def predict_both(self, frame: pd.DataFrame, read: bool = True) -> tuple[np.ndarray, pd.DataFrame]:
        """(labels, probabilities) with the rows read once. A registered DecisionModel's labels are its
        probabilities through its own threshold: exactly what its `predict` computes. `read=False`: the
        rows were read already (`InputSchema.prepare`, as batch and REST do)."""
        from tasks.ml.evaluation import DecisionModel
        from tasks.ml.metrics import predict_labels

        X = self._inputs(frame, read)
        if self.is_regression:
            interval = self.pipeline.predict_interval(X)
            return interval["prediction"].to_numpy(), interval
        proba = pd.DataFrame(self.pipeline.predict_proba(X), columns=[str(c) for c in self.classes],
                             index=frame.index)
        if isinstance(self.pipeline, DecisionModel):
            encoded = predict_labels(proba.to_numpy(), self.pipeline.threshold)
        else:
            encoded = self.pipeline.predict(X)
        return np.asarray(self.classes, dtype=object)[np.asarray(encoded, dtype=int)], proba


def resolve_version(root: str | Path, model_name: str, alias: str | None = "champion",
                    version: int | None = None) -> int:
    """`version` when given (checked), else the version `alias` points to."""
    if version is not None:
        read_metadata(root, model_name, version)  # RegistryError when there is no such version
        return int(version)
    found = get_alias(root, model_name, alias or "champion")
    if found is None:
        aliases = ", ".join(sorted(get_aliases(root, model_name))) or "none"
        raise RegistryError(f"model {model_name!r} has no {alias!r} alias in {root} (aliases: {aliases}); "
                            "pass --version N, or train until a model clears the gate")
    return found


def load_model(
    root: str | Path, model_name: str, alias: str | None = "champion", version: int | None = None,
    gated: bool = False,
) -> RegisteredModel:
    """Load a version (by number, or the one `alias` points to) after checking its sha256.

    `gated`: for a version refitted on all its data, the model that was gated instead of the refit.
    """
    version = resolve_version(root, model_name, alias, version)
    metadata = read_metadata(root, model_name, version)
    file_name, sha = metadata["model_file"], metadata["model_sha256"]
    refit = metadata.get("refit") or {}
    if gated and refit.get("refitted"):
        file_name = refit["gated_model_file"]
        sha = metadata["files_sha256"][file_name]
    path = _model_dir(root, model_name) / str(version) / file_name
    return RegisteredModel(load_pipeline(path, sha), metadata)


# --- Command line: `python -m tasks.registry ...` (and `gauntlet registry ...` through `main`) ------


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not argparse's usage block
        raise _UsageError(f"{message} (see {self.prog} --help)")


def _version_arg(text: str) -> int:
    """A version number: 3 or v3."""
    try:
        value = int(text[1:] if text[:1] in "vV" else text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a version is a number such as 3, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"versions start at 1, not {value}")
    return value


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in [headers, *rows])


def _existing_root(root: str) -> Path:
    path = Path(root)
    if not path.is_dir():
        raise RegistryError(f"no registry at {path}: pass --registry DIR (default {DEFAULT_ROOT}, relative to "
                            "the working directory), or run `make train` first")
    return path


def _cmd_list(args: argparse.Namespace) -> int:
    summaries = describe_models(_existing_root(args.registry))
    if not summaries:
        print(f"registry {args.registry}: no model yet")
        return 0
    rows = []
    for m in summaries:
        others = ", ".join(f"{a}=v{v}" for a, v in sorted(m.aliases.items()) if a != CHAMPION) or "-"
        last = m.last_move
        rows.append([m.name, _span(m.versions), "-" if m.champion is None else f"v{m.champion}", others,
                     "-" if last is None else last.describe().split(" ", 1)[1]])
    print(_table(["MODEL", "VERSIONS", CHAMPION.upper(), "OTHER ALIASES", "LAST ALIAS MOVE"], rows))
    if args.history:
        for m in summaries:
            print(f"\n{m.name} alias history:")
            print("\n".join(f"  {move.describe()}" for move in alias_history(args.registry, m.name)) or "  (empty)")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    d = describe_version(_existing_root(args.registry), args.name, args.version)

    def metrics(values: dict[str, Any]) -> str:
        return "  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()) or "-"

    gate = ("-" if d.gate_passed is None and d.gate_reason is None
            else f"{'passed' if d.gate_passed else 'not passed'}: {d.gate_reason or '-'}")
    lines = [
        ("model", d.name),
        ("version", f"v{d.version}"),
        ("aliases", ", ".join(d.aliases) or "-"),
        ("family", d.family or "-"),
        ("run id", d.run_id or "-"),
        ("registered", d.registered_at or "-"),
        ("metric", f"{d.metric} ({d.direction})" if d.metric and d.direction else d.metric or "-"),
        ("test", metrics(d.test_metrics)),
        ("valid", metrics(d.valid_metrics)),
        ("gate", gate),
        ("sha256", f"{d.model_sha256} ({d.model_file})"),
        *[("", f"{sha} ({f})") for f, sha in d.files_sha256.items()],
        ("integrity", "ok: every file matches its sha256" if d.intact else f"FAILS: {d.problem}"),
    ]
    print("\n".join(f"{key:<11} {value}".rstrip() for key, value in lines))
    print("alias moves to or from this version:")
    print("\n".join(f"  {move.describe()}" for move in d.history) or "  (none)")
    return 0


def _cmd_history(args: argparse.Namespace) -> int:
    name = resolve_model_name(_existing_root(args.registry), args.name)
    moves = alias_history(args.registry, name)
    moves = moves[-args.limit:] if args.limit else moves
    print("\n".join(move.describe() for move in moves) or f"{name}: no alias move recorded")
    return 0


def _report_change(change: AliasChange) -> int:
    if not change.changed:
        print(f"{change.name}: {change.alias!r} already points at v{change.version}; nothing changed")
    else:
        before = "nowhere" if change.previous is None else f"v{change.previous}"
        print(f"{change.name}: {change.alias!r} moved from {before} to v{change.version} "
              f"(recorded as #{change.move.seq if change.move else '?'} in {HISTORY})")
    return 0


def _cmd_promote(args: argparse.Namespace) -> int:
    return _report_change(promote(_existing_root(args.registry), args.name, args.version, args.reason))


def _cmd_rollback(args: argparse.Namespace) -> int:
    return _report_change(rollback(_existing_root(args.registry), args.name, args.reason))


def _cmd_verify(args: argparse.Namespace) -> int:
    root = args.root or args.registry
    problems = verify(root)
    for problem in problems:
        print(f"problem: {problem}")
    versions = sum(len(list_versions(root, n)) for n in list_models(root))
    print(f"registry {root}: {len(list_models(root))} model(s), {versions} version(s), "
          f"{'sound' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


def build_parser(prog: str = "python -m tasks.registry") -> argparse.ArgumentParser:
    parser = _Parser(prog=prog, description="Operate the local model registry: list its models, show a "
                     "version, promote or roll back the champion, verify every checksum.")
    common = _Parser(add_help=False)
    common.add_argument("--registry", metavar="DIR", default=DEFAULT_ROOT,
                        help=f"the registry's folder (default: {DEFAULT_ROOT})")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, run: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=help, description=help)
        sub.set_defaults(run=run)
        return sub

    sub = command("list", _cmd_list, "every model: its versions, where each alias points, the last alias move")
    sub.add_argument("--history", action="store_true", help="print every model's alias history too")
    sub = command("show", _cmd_show, "one version's metadata, aliases, alias moves and integrity")
    sub.add_argument("name", metavar="NAME")
    sub.add_argument("--version", type=_version_arg, metavar="N", help="default: the champion's version")
    sub = command("history", _cmd_history, "a model's alias moves, oldest first")
    sub.add_argument("name", metavar="NAME")
    sub.add_argument("--limit", type=int, metavar="N", help="only the last N moves")
    sub = command("promote", _cmd_promote, "point 'champion' at a version (complete and checksummed)")
    sub.add_argument("name", metavar="NAME")
    sub.add_argument("version", type=_version_arg, metavar="VERSION")
    sub.add_argument("--reason", metavar="TEXT", help="why, recorded in the alias history")
    sub = command("rollback", _cmd_rollback, "move 'champion' back to where it pointed before its last move")
    sub.add_argument("name", metavar="NAME")
    sub.add_argument("--reason", metavar="TEXT", help="why, recorded in the alias history")
    sub = command("verify", _cmd_verify, "check every version's files and sha256, every alias and the alias "
                  "history; exit 1 on a problem")
    sub.add_argument("root", nargs="?", metavar="DIR", help="the registry's folder (same as --registry)")
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m tasks.registry") -> int:
    """The registry's command line; returns 0 when done, 1 when `verify` found a problem, 2 on an error.

    `prog` names the command in help and messages (`gauntlet registry` from the gauntlet CLI).
    """
    try:
        args = build_parser(prog).parse_args(argv)
    except _UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    try:
        return args.run(args)
    except (GauntletError, OSError) as exc:  # OSError: an unreadable folder, a lock not acquired in time
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
