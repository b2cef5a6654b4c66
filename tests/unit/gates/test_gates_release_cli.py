"""`sonia gate`: release minimums at the gate itself, and `gate all` never releases.

`gate all` runs whole here over one real, tiny gate (tiny_gate.py) registered in
place of the six slow ones; what is checked is its effect on disk and in git: a
verdict table, evidence with provenance, and no bundle, no key, no tag.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sonia.cli import app
from sonia.gates import catalog
from sonia.gates.common import provenance
from sonia.home import Home


def sonia(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sonia", *args], capture_output=True,
                          text=True, timeout=120)


def test_release_profile_overrides_below_the_minimum_exit_2_before_anything_runs(
        tmp_path: Path) -> None:
    home = tmp_path / "home"
    proc = sonia("gate", "go-no-go", "--profile", "release", "--cycles", "0",
                 "--home", str(home))
    assert proc.returncode == 2, proc.stderr
    assert "go-no-go.cycles=0 is below the release minimum: at least 10" in proc.stderr
    assert not list((home / "artifacts").glob("*go-no-go*"))  # nothing ran

    proc = sonia("gate", "go-no-go", "--profile", "release", "--health-minutes", "29",
                 "--home", str(home))
    assert proc.returncode == 2, proc.stderr
    assert "go-no-go.health_minutes=29" in proc.stderr and "at least 30" in proc.stderr

    proc = sonia("gate", "go-no-go", "--profile", "release", "--health-interval", "60",
                 "--home", str(home))
    assert proc.returncode == 2 and "it cannot be waived" in proc.stderr

    proc = sonia("gate", "go-no-go", "--profile", "release", "--cycles", "2",
                 "--waive", "go-no-go.health_interval=60: slow", "--home", str(home))
    assert proc.returncode == 2 and "cannot be waived" in proc.stderr


@pytest.fixture()
def tiny(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    sys.path.insert(0, str(Path(__file__).parent))
    monkeypatch.setattr(catalog, "GATES", {"tiny": "tiny_gate"})
    yield
    sys.path.remove(str(Path(__file__).parent))


def tags() -> str:
    repo = provenance.package_repo()
    if repo is None:
        return ""
    return subprocess.run(["git", "tag", "-l"], cwd=repo, capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.usefixtures("tiny")
@pytest.mark.parametrize("profile", ["quick", "release"])
def test_gate_all_prints_the_table_and_makes_no_bundle_and_no_tag(
        tmp_path: Path, profile: str) -> None:
    home = Home.at(tmp_path / "home")
    before = tags()
    result = CliRunner().invoke(app, ["gate", "all", "--profile", profile,
                                      "--home", str(home.root)])
    assert result.exit_code == 0, result.output
    assert "Gate verdicts" in result.output and "no release made" in result.output
    runs = list(home.artifacts.glob("*-tiny-*"))
    assert len(runs) == 1
    stated = json.loads((runs[0] / "verdict.json").read_text())
    assert stated["profile"] == profile and stated["verdict"]["status"] == "GO"
    assert {c["name"] for c in stated["verdict"]["checks"]} >= {"provenance unchanged"}
    assert json.loads((runs[0] / "provenance.json").read_text())["start"]["source_sha256"] \
        == provenance.source_digest()
    assert not (home.artifacts / "release").exists()
    assert not list(home.root.rglob("MANIFEST.json"))
    assert not (home.secrets / "release_key.pem").exists()
    assert tags() == before


@pytest.mark.usefixtures("tiny")
def test_gate_all_exits_1_when_a_gate_is_not_go(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINY_GATE_FAILS", "1")
    result = CliRunner().invoke(app, ["gate", "all", "--home", str(tmp_path / "home")])
    assert result.exit_code == 1
    assert "NO-GO" in result.output
    assert not (tmp_path / "home" / "artifacts" / "release").exists()
