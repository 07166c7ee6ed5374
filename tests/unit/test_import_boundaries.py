import subprocess
import sys

from config.paths import PROJECT_ROOT


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
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "leaked: []" in out.stdout
