"""Evidence: run folders, atomic JSON, the environment, and the verdict vocabulary."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sonia.gates.common import provenance
from sonia.gates.common.evidence import (
    VALIDITY,
    Check,
    Verdict,
    capture_environment,
    new_run_dir,
    write_json,
)


def test_run_dirs_are_fresh_and_name_their_gate(tmp_path: Path) -> None:
    first = new_run_dir(tmp_path / "artifacts", "soak")
    second = new_run_dir(tmp_path / "artifacts", "soak")
    assert first != second and first.is_dir() and second.is_dir()
    assert re.fullmatch(r"\d{8}T\d{6}Z-soak-[0-9a-f]{6}", first.name)


def test_write_json_is_sorted_pretty_and_refuses_nan(tmp_path: Path) -> None:
    path = write_json(tmp_path / "x.json", {"b": 1, "a": [Path("p")]})
    assert path.read_text() == '{\n  "a": [\n    "p"\n  ],\n  "b": 1\n}\n'
    with pytest.raises(ValueError):
        write_json(tmp_path / "y.json", {"x": math.nan})
    assert not (tmp_path / "y.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temp file left


def test_environment_names_interpreter_sqlite_and_packages() -> None:
    env = capture_environment(packages=("numpy", "surely-not-installed-pkg"))
    assert env["python"] and env["sqlite"]
    assert env["packages"]["numpy"] and env["packages"]["surely-not-installed-pkg"] is None
    json.dumps(env)


def test_verdict_status_comes_from_checks() -> None:
    good = Check("errors", 0, 0, True)
    bad = Check("errors", 0, 3, False)
    invalid = Check("enough data", 30, 2, False, kind=VALIDITY)
    assert Verdict.of("g", [good]).status == "GO"
    assert Verdict.of("g", [good, bad]).status == "NO-GO"
    assert Verdict.of("g", [bad, invalid]).status == "INVALID"
    assert Verdict.of("g", []).status == "INVALID"


def test_verdict_round_trips_and_refuses_a_contradicting_status() -> None:
    verdict = Verdict.of("g", [Check("x", 1, 2, False)], {"x": 1})
    data = json.loads(json.dumps(verdict.to_dict()))
    assert Verdict.from_dict(data) == verdict
    data["status"] = "GO"
    with pytest.raises(ValueError):
        Verdict.from_dict(data)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=t@example.invalid", "-c", "user.name=T",
                           *args], cwd=repo, capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip()


def test_evidence_names_the_code_that_ran_not_the_current_directory(tmp_path: Path) -> None:
    """Run from inside another git repository, the evidence still names sonia's checkout."""
    other = tmp_path / "other"
    other.mkdir()
    _git(other, "init", "-q")
    _git(other, "commit", "-q", "--allow-empty", "-m", "someone else's repository")
    script = ("import json; from sonia.gates.common.evidence import capture_environment; "
              "e = capture_environment(); print(json.dumps([e['git'], e['source_sha256']]))")
    proc = subprocess.run([sys.executable, "-c", script], cwd=other, capture_output=True,
                          text=True, timeout=120, check=True)
    git, source = json.loads(proc.stdout)
    assert source == provenance.source_digest()
    repo = provenance.package_repo()
    if repo is None:  # an installed package: no checkout to name, and certainly not `other`
        assert git is None
    else:
        assert git["commit"] == _git(repo, "rev-parse", "HEAD")
        assert git["commit"] != _git(other, "rev-parse", "HEAD")


def test_provenance_sees_a_source_edit_and_a_new_commit(tmp_path: Path) -> None:
    package = tmp_path / "repo" / "src" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("VALUE = 1\n")
    _git(tmp_path / "repo", "init", "-q")
    _git(tmp_path / "repo", "add", "-A")
    _git(tmp_path / "repo", "commit", "-q", "-m", "one")
    start = provenance.capture(package)
    assert start["git"]["dirty"] is False and start["git"]["repo"] == "repo"
    assert any(p.startswith("numpy==") for p in start["packages"])
    (package / "__init__.py").write_text("VALUE = 2\n")
    edited = provenance.capture(package)
    assert edited["git"]["dirty"] is True
    assert "the sonia source files changed during the run" in provenance.changes(start, edited)
    _git(tmp_path / "repo", "commit", "-q", "-am", "two")
    committed = provenance.capture(package)
    assert any("git state changed" in c for c in provenance.changes(start, committed))
    assert provenance.changes(committed, provenance.capture(package)) == []


def test_an_untracked_package_has_no_git_provenance(tmp_path: Path) -> None:
    package = tmp_path / "repo" / "venv" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    _git(tmp_path / "repo", "init", "-q")
    assert provenance.capture(package)["git"] is None
