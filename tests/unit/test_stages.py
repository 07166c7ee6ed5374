"""Stage helpers of the flows."""

from __future__ import annotations


def test_flow_runs_started_inside_send_no_heartbeats_and_the_setting_comes_back():
    from prefect.settings import get_current_settings, temporary_settings

    from tasks.stages import without_heartbeats

    with temporary_settings(updates={"flows.heartbeat_frequency": 30}):
        with without_heartbeats():
            assert get_current_settings().flows.heartbeat_frequency is None
            with without_heartbeats():  # nested (the command line's, then a family's): still off
                assert get_current_settings().flows.heartbeat_frequency is None
            assert get_current_settings().flows.heartbeat_frequency is None
        assert get_current_settings().flows.heartbeat_frequency == 30


def test_the_command_line_imports_without_garbage_collection_and_trains_with_it(tmp_path):
    """`gauntlet train` turns the collector off while the libraries load (full collections of the growing
    heap were a fifth of the start-up) and on again before the run begins."""
    import subprocess
    import sys

    from config.paths import PROJECT_ROOT

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
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, env=env,
                         timeout=120)
    assert "collector on while importing: False" in out.stdout, out.stdout + out.stderr
    assert "collector on during the run: True" in out.stdout, out.stdout + out.stderr
