"""The Makefile's targets, read with `make -n` (nothing runs)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from config.paths import PROJECT_ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def dry_run(*args: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    out = subprocess.run(["make", "-n", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60,
                         env={**clean, **env})
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_deploy_and_worker_use_the_prefect_api_url_that_is_set():
    for target in ("deploy", "worker"):
        assert "PREFECT_API_URL=http://10.1.2.3:4444/api" in dry_run(target, PREFECT_API_URL="http://10.1.2.3:4444/api")
        assert "PREFECT_API_URL=http://127.0.0.1:4200/api" in dry_run(target)  # else `make server`'s


def test_predict_and_serve_take_a_model_name():
    assert "--model wine-cultivar" in dry_run("predict", "INPUT=a.csv", "OUTPUT=b.csv", "MODEL=wine-cultivar")
    assert "--model wine-cultivar" in dry_run("serve", "MODEL=wine-cultivar")
    assert "--model" not in dry_run("serve")


def test_training_installs_the_package_alone_and_the_tests_add_the_dev_extra():
    train, test = dry_run("-B", "train"), dry_run("-B", "test")
    assert "install --quiet --compile-bytecode --python .venv/bin/python -e ." in train and "[dev]" not in train
    assert "-e '.[dev]'" in test
    # uv first (from PATH, else fetched), pip wherever uv is unavailable or fails; INSTALLER=pip: pip only.
    assert "with uv" in train and "uv failed; installing with pip" in train
    assert '[ "pip" = uv ]' in dry_run("-B", "train", "INSTALLER=pip")
