"""docs/configuration.md is generated from config/schema.py: a schema change must regenerate it."""

from __future__ import annotations

import subprocess
import sys

from config import reference
from config.reference import DOC_PATH, render


def test_configuration_page_matches_the_schema():
    current = DOC_PATH.read_text(encoding="utf-8") if DOC_PATH.is_file() else ""
    assert current == render(), "docs/configuration.md is out of date: run make docs"


def test_every_section_and_key_is_rendered():
    text = render()
    for key in ("`artifacts_dir`", "`data.path`", "`preprocessing.categorical.encoding`",
                "`evaluation.ensemble.top_k`", "`registry.export_onnx`"):
        assert key in text
    # Families come from the schema as it stands, whatever the family registry holds.
    from config.schema import ModelsConfig

    for family in ModelsConfig.model_fields:
        assert f"`models.{family}.n_trials`" in text


def test_check_reports_a_stale_page_in_one_line(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "configuration.md"
    stale.write_text("# old\n")
    monkeypatch.setattr(reference, "DOC_PATH", stale)
    assert reference.main(["--check"]) == 1
    assert capsys.readouterr().err == "docs/configuration.md is out of date: run make docs\n"
    assert reference.main([]) == 0
    assert reference.main(["--check"]) == 0


def test_module_runs_as_a_command():
    done = subprocess.run([sys.executable, "-m", "config.reference", "--check"], capture_output=True, text=True,
                          cwd=DOC_PATH.parents[1])
    assert done.returncode == 0, done.stderr
