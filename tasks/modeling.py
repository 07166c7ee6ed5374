"""Saving and loading fitted pipelines, each with the sha256 of its file."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Any

from config.errors import RegistryError


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_pipeline(pipeline: Any, path: str | Path) -> str:
    """Pickle `pipeline` to `path` atomically (temporary file, fsync, rename); return its sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            pickle.dump(pipeline, fh, protocol=pickle.HIGHEST_PROTOCOL)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk, an interrupt: no half-written file is left behind
        tmp.unlink(missing_ok=True)
        raise
    return file_sha256(path)


def load_pipeline(path: str | Path, sha256: str | None = None) -> Any:
    """Unpickle a pipeline, refusing a file whose sha256 differs from the recorded one."""
    path = Path(path)
    if not path.is_file():
        raise RegistryError(f"model file not found: {path}")
    if sha256 is not None:
        actual = file_sha256(path)
        if actual != sha256:
            raise RegistryError(
                f"model file {path} fails its checksum (expected sha256 {sha256[:12]}..., got "
                f"{actual[:12]}...); it was changed or damaged: re-register the model"
            )
    with open(path, "rb") as fh:
        return pickle.load(fh)  # noqa: S301 - only after the checksum matched the registry's record
