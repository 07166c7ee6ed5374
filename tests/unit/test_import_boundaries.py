import subprocess
import sys

from config.paths import PROJECT_ROOT


def _fresh_python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`code` in a new interpreter at the project root: only what it imports is loaded."""
    return subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, env=env,
                          timeout=120)


def test_tasks_ml_imports_neither_prefect_nor_comet():
    code = (
        "import importlib, pkgutil, sys, tasks.ml as ml\n"
        "mods = [m.name for m in pkgutil.iter_modules(ml.__path__, 'tasks.ml.')]\n"
        "assert len(mods) >= 7, mods\n"
        "[importlib.import_module(m) for m in mods]\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'comet_ml'))\n"
        "print(len(mods), 'modules;', 'leaked:', bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    out = _fresh_python(code)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "leaked: []" in out.stdout


def test_the_local_server_starts_without_importing_the_libraries():
    # Its process and the command line's first step import it: the schema's optuna and numpy (0.25 s)
    # would delay the server on a critical path.
    code = (
        "import sys, gauntlet.local_server, gauntlet.runtime, tasks.stopping, config\n"
        "heavy = sorted(m for m in ('config.schema', 'optuna', 'numpy', 'pydantic', 'prefect') if m in sys.modules)\n"
        "print('heavy:', heavy); sys.exit(1 if heavy else 0)\n"
    )
    out = _fresh_python(code)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "heavy: []" in out.stdout


def test_the_config_package_still_exposes_the_schema():
    import config
    from config.schema import TrainConfig

    assert config.TrainConfig is TrainConfig
    assert "lightgbm" in config.FAMILIES


def test_the_command_line_imports_without_garbage_collection_and_trains_with_it(tmp_path):
    """`gauntlet train` turns the collector off while the libraries load (full collections of the growing
    heap were a fifth of the start-up) and on again before the run begins."""
    code = (
        "import gc, sys, flows.train\n"
        "def fake_train(params):\n"
        "    print('collector on during the run:', gc.isenabled()); sys.exit(0)\n"
        "import gauntlet.cli as cli\n"
        "flows.train.train = fake_train\n"
        "orig = cli._preload\n"
        "cli._preload = lambda config: (print('collector on while importing:', gc.isenabled()), orig(config))\n"
        f"cli.run(['train', '--set', 'artifacts_dir={tmp_path}', '--set', 'data.path=builtin:breast_cancer',\n"
        "         '--set', 'data.target=diagnosis'])\n"
    )
    # A configured API: no local server is started, nothing to wait for.
    env = {"PREFECT_API_URL": "http://127.0.0.1:9/api", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = _fresh_python(code, env)
    assert "collector on while importing: False" in out.stdout, out.stdout + out.stderr
    assert "collector on during the run: True" in out.stdout, out.stdout + out.stderr
