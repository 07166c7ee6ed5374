"""Operating the registry: `python -m tasks.registry list|show|history|promote|rollback|verify` and
their Python functions, on a real registry of small fitted sklearn pipelines."""

from __future__ import annotations

import getpass
import json
import subprocess
import sys

import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from config.errors import RegistryError
from config.paths import PROJECT_ROOT
from tasks import registry

MODEL = "cancer"


@pytest.fixture(scope="module")
def pipelines(breast_cancer):
    """Three fitted pipelines (one per version) and the features they were trained on."""
    X = breast_cancer.drop(columns="diagnosis")
    y = (breast_cancer["diagnosis"] == "malignant").astype(int)
    fitted = [make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=500)).fit(X, y)
              for c in (0.01, 0.1, 1.0)]
    return fitted, X


def metadata(X, i: int, gate: bool = True) -> dict:
    return {
        "family": "logistic_regression", "run_id": f"run-{i}", "metric": "roc_auc", "direction": "maximize",
        "test_metrics": {"roc_auc": 0.95 + i / 100, "accuracy": 0.9}, "valid_metrics": {"roc_auc": 0.96},
        "classes": ["benign", "malignant"], "features": list(X.columns),
        **({"gate": {"passed": True, "reason": f"roc_auc {0.95 + i / 100:.2f} >= 0.9 (run {i})"}} if gate else {}),
    }


@pytest.fixture()
def root(tmp_path, pipelines):
    """A registry whose model has versions 1, 2, 3 registered in turn, the champion on 3."""
    fitted, X = pipelines
    root = tmp_path / "registry"
    for i, pipeline in enumerate(fitted, 1):
        assert registry.register_model(root, MODEL, pipeline, metadata(X, i), model_card="# v{version}") == i
    assert registry.get_alias(root, MODEL) == 3
    return root


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = registry.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def state(root) -> tuple[bytes, bytes]:
    """The alias file and the alias history, byte for byte."""
    return (root / MODEL / registry.ALIASES).read_bytes(), (root / MODEL / registry.HISTORY).read_bytes()


def test_registration_records_each_champion_move_with_the_gate_reason(root, pipelines):
    moves = registry.alias_history(root, MODEL)
    assert [(m.seq, m.action, m.alias, m.previous, m.version) for m in moves] == [
        (1, "register", "champion", None, 1), (2, "register", "champion", 1, 2), (3, "register", "champion", 2, 3)]
    assert moves[2].reason == "roc_auc 0.98 >= 0.9 (run 3)" and moves[2].run_id == "run-3"
    assert moves[2].user == getpass.getuser() and moves[2].time.endswith("+00:00")
    # Without a gate decision in the metadata, the run is named instead; without an alias, nothing moves.
    fitted, X = pipelines
    registry.register_model(root, MODEL, fitted[0], metadata(X, 4, gate=False))
    assert registry.alias_history(root, MODEL)[-1].reason == "registered by run run-4"
    registry.register_model(root, MODEL, fitted[0], metadata(X, 5), alias=None)
    assert len(registry.alias_history(root, MODEL)) == 4
    # Every line is one JSON object: the file format other tools may read.
    lines = (root / MODEL / registry.HISTORY).read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3, 4]


def test_list_prints_models_versions_and_aliases(root, pipelines, capsys):
    fitted, X = pipelines
    registry.register_model(root, "other", fitted[0], metadata(X, 1), alias="staging")
    code, out, err = run(capsys, "list", "--registry", str(root))
    assert code == 0 and err == ""
    header, cancer, other = out.splitlines()
    assert header.split()[:4] == ["MODEL", "VERSIONS", "CHAMPION", "OTHER"]
    assert cancer.split()[:4] == [MODEL, "1-3", "v3", "-"] and "register champion: v2 -> v3" in cancer
    assert other.split()[:4] == ["other", "1", "-", "staging=v1"]

    code, out, _ = run(capsys, "list", "--history", "--registry", str(root))
    assert code == 0 and f"{MODEL} alias history:" in out and "#2 " in out and "v1 -> v2" in out

    summaries = registry.describe_models(root)
    assert [(s.name, s.versions, s.champion) for s in summaries] == [(MODEL, (1, 2, 3), 3), ("other", (1,), None)]
    assert summaries[0].last_move.version == 3
    assert registry.list_models(root) == [MODEL, "other"]  # the names alone, as before


def test_show_prints_the_champion_by_default_and_any_version_on_request(root, capsys):
    code, out, err = run(capsys, "show", MODEL, "--registry", str(root))
    assert code == 0 and err == ""
    head, moves = out.split("alias moves to or from this version:\n")
    fields = {line[:11].strip(): line[12:] for line in head.splitlines()}  # "key" padded to 11, a space, value
    sha = registry.read_metadata(root, MODEL, 3)["model_sha256"]
    assert fields["version"] == "v3" and fields["aliases"] == "champion"
    assert fields["family"] == "logistic_regression" and fields["run id"] == "run-3"
    assert fields["metric"] == "roc_auc (maximize)" and "roc_auc=0.9800" in fields["test"]
    assert fields["gate"] == "passed: roc_auc 0.98 >= 0.9 (run 3)"
    assert fields["sha256"] == f"{sha} (model.pkl)" and fields["integrity"].startswith("ok")
    assert "register champion: v2 -> v3" in moves

    code, out, _ = run(capsys, "show", MODEL, "--version", "1", "--registry", str(root))
    assert code == 0 and "version     v1" in out and "aliases     -" in out and "run-1" in out

    described = registry.describe_version(root, MODEL, 2)
    assert described.version == 2 and described.intact and described.aliases == ()
    assert described.test_metrics["roc_auc"] == pytest.approx(0.97) and described.gate_passed is True
    assert [m.seq for m in described.history] == [2, 3]  # the moves to and from version 2


def test_promote_then_rollback_moves_the_champion_and_records_why(root, pipelines, capsys):
    fitted, X = pipelines
    code, out, err = run(capsys, "promote", MODEL, "1", "--reason", "v3 misbehaves in production",
                         "--registry", str(root))
    assert code == 0 and err == "" and "moved from v3 to v1" in out
    assert registry.get_alias(root, MODEL) == 1
    move = registry.alias_history(root, MODEL)[-1]
    assert (move.action, move.previous, move.version, move.reason) == ("promote", 3, 1, "v3 misbehaves in production")
    assert move.user == getpass.getuser()
    assert registry.verify(root) == []
    champion = registry.load_model(root, MODEL)  # checksummed, and the version promoted
    assert champion.version == 1
    assert (champion.pipeline.predict_proba(X) == fitted[0].predict_proba(X)).all()
    code, out, _ = run(capsys, "show", MODEL, "--registry", str(root))
    assert "version     v1" in out and "v3 misbehaves in production" in out

    code, out, err = run(capsys, "rollback", MODEL, "--reason", "false alarm", "--registry", str(root))
    assert code == 0 and err == "" and "moved from v1 to v3" in out
    assert registry.get_alias(root, MODEL) == 3
    move = registry.alias_history(root, MODEL)[-1]
    assert (move.action, move.previous, move.version, move.reason, move.undoes) == ("rollback", 1, 3, "false alarm", 4)
    code, out, _ = run(capsys, "verify", "--registry", str(root))
    assert code == 0 and out.strip().endswith("3 version(s), sound")
    code, _, _ = run(capsys, "verify", str(root))  # the older form, the folder as an argument
    assert code == 0

    # A second rollback goes one step further back (it undoes v3's registration), not forth again.
    change = registry.rollback(root, MODEL)
    assert (change.previous, change.version, change.changed) == (3, 2, True)
    assert change.move.reason == "rolled back by hand" and registry.verify(root) == []
    # Promoting where the champion already points changes and records nothing.
    before = state(root)
    assert registry.promote(root, MODEL, 2).changed is False and state(root) == before


def test_rollback_after_a_training_returns_to_the_previous_champion(root, pipelines, capsys):
    fitted, X = pipelines
    assert registry.register_model(root, MODEL, fitted[1], metadata(X, 4)) == 4
    code, out, _ = run(capsys, "rollback", MODEL, "--registry", str(root))
    assert code == 0 and registry.get_alias(root, MODEL) == 3 and registry.verify(root) == []


@pytest.mark.parametrize("damage", ["missing version", "corrupted model", "unreadable metadata"])
def test_promote_refuses_a_missing_or_damaged_version_and_changes_nothing(damage, root, capsys):
    version = "9" if damage == "missing version" else "1"
    if damage == "corrupted model":
        with open(root / MODEL / "1" / "model.pkl", "ab") as fh:
            fh.write(b"tampered")
    elif damage == "unreadable metadata":
        (root / MODEL / "1" / "metadata.json").write_text('{"half": ')
    before = state(root)
    code, out, err = run(capsys, "promote", MODEL, version, "--reason", "try", "--registry", str(root))
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    expected = {"missing version": "has no version 9 in .*; promote one of its versions \\(1-3\\)",
                "corrupted model": "model.pkl missing or failing its sha256; promote another version",
                "unreadable metadata": "metadata.json damaged .*; promote another version"}[damage]
    with pytest.raises(RegistryError, match=expected):
        registry.promote(root, MODEL, int(version))
    assert state(root) == before and registry.get_alias(root, MODEL) == 3


def test_rollback_with_nothing_to_return_to_refuses(tmp_path, pipelines, capsys):
    fitted, X = pipelines
    root = tmp_path / "registry"
    registry.register_model(root, MODEL, fitted[0], metadata(X, 1))
    before = state(root)
    code, out, err = run(capsys, "rollback", MODEL, "--registry", str(root))
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert err.startswith("error: nothing to roll back to: 'champion' of 'cancer' points at version 1")
    assert state(root) == before

    # No champion at all: named as such.
    registry.register_model(root, "nochamp", fitted[0], metadata(X, 1), alias=None)
    code, _, err = run(capsys, "rollback", "nochamp", "--registry", str(root))
    assert code == 2 and "has no 'champion' alias" in err


def test_rollback_without_history_goes_to_the_highest_complete_earlier_version(root, capsys):
    """A registry written before the alias history existed: no record of where the champion was."""
    (root / MODEL / registry.HISTORY).unlink()
    with open(root / MODEL / "2" / "model.pkl", "ab") as fh:  # version 2 is damaged: skipped
        fh.write(b"tampered")
    change = registry.rollback(root, MODEL, reason="v3 is bad")
    assert (change.previous, change.version, change.move.undoes) == (3, 1, None)
    assert registry.get_alias(root, MODEL) == 1


def test_rollback_refuses_to_return_to_a_damaged_version(root, capsys):
    with open(root / MODEL / "2" / "model.pkl", "ab") as fh:
        fh.write(b"tampered")
    before = state(root)
    code, _, err = run(capsys, "rollback", MODEL, "--registry", str(root))
    assert code == 2 and "to version 2, where it pointed before: that version model.pkl missing" in err
    assert state(root) == before


def test_a_torn_history_line_is_harmless_and_an_unreadable_one_is_reported(root):
    """A crash mid-append can leave a last line without its newline: never a record, cut off by the
    next append. Any other unreadable line is a problem `verify` names."""
    path = root / MODEL / registry.HISTORY
    with open(path, "ab") as fh:
        fh.write(b'{"seq": 4, "time": "2')
    assert registry.verify(root) == [] and len(registry.alias_history(root, MODEL)) == 3
    registry.promote(root, MODEL, 2, reason="after a crash")
    assert [json.loads(line)["seq"] for line in path.read_text().splitlines()] == [1, 2, 3, 4]

    with open(path, "ab") as fh:
        fh.write(b"not json\n")
    assert registry.verify(root) == [f"{MODEL}: {registry.HISTORY} line 5 unreadable "
                                     "(JSONDecodeError: Expecting value: line 1 column 1 (char 0))"]


def test_verify_names_an_alias_on_a_damaged_version(root, capsys):
    registry.promote(root, MODEL, 1)
    with open(root / MODEL / "1" / "model.pkl", "ab") as fh:
        fh.write(b"tampered")
    code, out, _ = run(capsys, "verify", "--registry", str(root))
    assert code == 1
    assert f"problem: {MODEL}: alias 'champion' points at version 1, which is not complete" in out


def test_usage_errors_are_one_line_and_name_the_program(tmp_path, capsys):
    for argv, expected in [
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["promote", MODEL, "three"], "a version is a number such as 3, not 'three'"),
        (["show"], "the following arguments are required: NAME"),
        (["list", "--registry", str(tmp_path / "absent")], "no registry at"),
        (["show", "nosuch", "--registry", str(tmp_path)], "no model named 'nosuch'"),
    ]:
        code = registry.main(argv, prog="gauntlet registry")
        out, err = capsys.readouterr()
        assert code == 2 and out == "" and len(err.splitlines()) == 1, (argv, err)
        assert err.startswith("error: ") and expected in err, (argv, err)
    assert "gauntlet registry promote --help" in (registry.main(["promote"], prog="gauntlet registry"),
                                                  capsys.readouterr().err)[1]
    assert registry.main(["--help"], prog="gauntlet registry") == 0
    assert capsys.readouterr().out.startswith("usage: gauntlet registry")


def test_the_module_runs_as_a_command(root):
    """`python -m tasks.registry`, a real process: promote, then verify."""
    def command(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "tasks.registry", *argv, "--registry", str(root)],
                              cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)

    done = command("promote", MODEL, "2", "--reason", "from the shell")
    assert done.returncode == 0, done.stderr
    assert "'champion' moved from v3 to v2" in done.stdout
    assert registry.get_alias(root, MODEL) == 2
    assert registry.alias_history(root, MODEL)[-1].reason == "from the shell"
    refused = command("promote", MODEL, "7")
    assert refused.returncode == 2 and refused.stderr.startswith("error: ") and len(refused.stderr.splitlines()) == 1
    assert registry.get_alias(root, MODEL) == 2
