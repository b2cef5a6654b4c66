"""`sonia release` re-judges every gate from its raw evidence and refuses what it must.

A real git repository in a temporary folder stands in for the checkout; each gate's
run is built from raw evidence in the gate's own format (release_evidence.py), and
the verdicts come from the gates' judges. Each attack from the issue is made here
and must be refused with a reason naming it, leaving no bundle and no tag.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from release_evidence import (
    RELEASE_WAIVERS,
    build_all,
    build_run,
    origin_for,
    release_parameters,
    zombie_claimed_ok,
)

from sonia.cli.release import make_release
from sonia.errors import ConfigError, ReleaseError
from sonia.gates import catalog, registry
from sonia.gates.waivers import parse_waiver, waivers_of
from sonia.home import Home
from sonia.release.manifest import CHECKLIST_NAME, read_manifest


@dataclass
class Setup:
    repo: Path
    home: Home
    head: str


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                          check=True, timeout=30).stdout.strip()


@pytest.fixture()
def setup(tmp_path: Path) -> Setup:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "release@example.invalid")
    git(repo, "config", "user.name", "Release Test")
    (repo / "README.md").write_text("sonia\n")
    git(repo, "add", "README.md")
    git(repo, "commit", "-q", "-m", "initial")
    home = Home.at(tmp_path / "home")
    home.init()
    return Setup(repo, home, git(repo, "rev-parse", "HEAD"))


def refused(setup: Setup, runs: dict[str, Path], tag: str = "rc-x",
            waivers: tuple[str, ...] = RELEASE_WAIVERS) -> str:
    with pytest.raises(ReleaseError) as caught:
        make_release(setup.home, setup.repo, tag, runs, waivers_of(list(waivers)))
    assert not (setup.home.artifacts / "release" / tag).exists()
    assert git(setup.repo, "tag", "-l") == ""
    return str(caught.value)


def test_good_evidence_with_waivers_makes_a_draft_bundle_without_a_tag(setup: Setup) -> None:
    runs = build_all(setup.home.artifacts, origin_for(setup.head))
    out = make_release(setup.home, setup.repo, "rc-1", runs, waivers_of(list(RELEASE_WAIVERS)))
    manifest = read_manifest(out)
    assert [g["gate"] for g in manifest["gates"]] == list(catalog.GATES)
    assert all(g["status"] == "GO" for g in manifest["gates"])
    assert {f"{w['gate']}.{w['parameter']}" for w in manifest["waivers"]} == {
        "go-no-go.cycles", "go-no-go.health_minutes", "soak.duration_s"}
    checklist = (out / CHECKLIST_NAME).read_text()
    assert checklist.index("WAIVERS (3)") < checklist.index("## Gates")
    assert "go-no-go/go-no-go-summary.json" in {f["path"] for f in manifest["files"]}
    assert git(setup.repo, "tag", "-l") == ""  # DRAFT: finalize makes the tag


def test_a_hand_written_go_over_a_no_go_summary_is_refused(setup: Setup) -> None:
    origin = origin_for(setup.head)
    runs = build_all(setup.home.artifacts, origin)
    runs["go-no-go"] = build_run(setup.home.artifacts, "go-no-go", origin,
                                 change=zombie_claimed_ok, stated_status="GO")
    stated = json.loads((runs["go-no-go"] / "verdict.json").read_text())["verdict"]["status"]
    assert stated == "GO"  # the forged claim
    reason = refused(setup, runs)
    assert "the evidence says NO-GO" in reason
    assert "verdict.json says GO but the evidence re-judged says NO-GO" in reason


def test_six_forged_verdicts_of_a_quick_run_are_refused(setup: Setup) -> None:
    """The issue's first attack: quick profile, cycles 0, every verdict.json saying GO."""
    origin = origin_for(setup.head)
    runs = {gate: build_run(setup.home.artifacts, gate, origin, profile="quick",
                            params=release_parameters(gate), stated_status="GO")
            for gate in catalog.GATES}
    zero = release_parameters("go-no-go", cycles=0)
    runs["go-no-go"] = build_run(setup.home.artifacts, "go-no-go", origin, profile="quick",
                                 params=zero, stated_status="GO")
    reason = refused(setup, runs)
    assert "profile 'quick'" in reason
    assert "go-no-go" in reason and "INVALID" in reason  # 0 cycles proves nothing


def test_parameters_below_the_release_minimums_need_a_waiver(setup: Setup) -> None:
    runs = build_all(setup.home.artifacts, origin_for(setup.head))
    reason = refused(setup, runs, waivers=())
    assert "go-no-go.cycles=2 is below the release minimum: at least 10" in reason
    assert "soak.duration_s=60.0 is below the release minimum" in reason
    reason = refused(setup, runs, waivers=("go-no-go.cycles=5: too few", *RELEASE_WAIVERS[1:]))
    assert "go-no-go.cycles=2" in reason and "the waiver allows 5.0" in reason


def test_parameters_in_verdict_json_must_match_the_ones_the_evidence_recorded(
        setup: Setup) -> None:
    origin = origin_for(setup.head)
    runs = build_all(setup.home.artifacts, origin)
    stated = runs["go-no-go"] / "verdict.json"
    data = json.loads(stated.read_text())
    data["parameters"]["cycles"] = 10  # claim release cycles over a 2-cycle summary
    stated.write_text(json.dumps(data))
    drill = runs["durability"] / "restore-drill.json"
    recorded = json.loads(drill.read_text())
    assert recorded["seed"] == 7 and recorded["profile"]["seed"] is None  # drawn: not a claim
    recorded["profile"]["seed"] = 7  # a seed the profile did not ask for is
    drill.write_text(json.dumps(recorded))
    reason = refused(setup, runs)
    assert "differ from those go-no-go-summary.json recorded" in reason
    assert "differ from those restore-drill.json recorded" in reason


def test_a_quick_determinism_run_stated_as_release_is_refused(setup: Setup) -> None:
    origin = origin_for(setup.head)
    runs = build_all(setup.home.artifacts, origin)
    evidence = runs["determinism"] / "integration-tests.json"
    data = json.loads(evidence.read_text())
    data["marker"] = "integration and not slow"  # what the quick profile runs
    evidence.write_text(json.dumps(data))
    reason = refused(setup, runs)
    assert "differ from those integration-tests.json (marker) recorded" in reason


def test_missing_or_malformed_evidence_is_refused_naming_the_file(setup: Setup) -> None:
    runs = build_all(setup.home.artifacts, origin_for(setup.head))
    (runs["soak"] / "soak-metrics.csv").unlink()
    (runs["chaos"] / "chaos-report.json").write_text("{not json")
    reason = refused(setup, runs)
    assert "soak-metrics.csv is missing" in reason
    chaos = next(line for line in reason.splitlines() if "gate chaos" in line)
    chaos = chaos.replace(str(runs["chaos"]), "<run>")  # the test's own path names "malformed"
    assert "malformed" in chaos and "chaos-report.json" in chaos


def test_evidence_of_another_commit_or_a_dirty_tree_is_refused(setup: Setup) -> None:
    runs = build_all(setup.home.artifacts, origin_for(setup.head))
    runs["security"] = build_run(setup.home.artifacts, "security",
                                 origin_for(setup.head, dirty=True))
    (setup.repo / "README.md").write_text("sonia, changed\n")
    git(setup.repo, "commit", "-q", "-am", "a later commit")
    reason = refused(setup, runs)
    assert "evidence is from commit" in reason
    assert "uncommitted changes" in reason


def test_a_run_whose_code_changed_midway_is_invalid(setup: Setup) -> None:
    start = origin_for(setup.head)
    end = dict(start, source_sha256="0" * 64)
    runs = build_all(setup.home.artifacts, start)
    runs["durability"] = build_run(setup.home.artifacts, "durability", start, end_origin=end)
    assert registry.judge("durability", runs["durability"]).status == "INVALID"
    assert "sonia source files changed during the run" in refused(setup, runs)


def test_a_dirty_checkout_or_a_missing_gate_is_refused(setup: Setup) -> None:
    runs = build_all(setup.home.artifacts, origin_for(setup.head))
    del runs["chaos"]
    (setup.repo / "stray.txt").write_text("uncommitted\n")
    reason = refused(setup, runs)
    assert "working tree is not clean" in reason
    assert "gate chaos has no run" in reason


@pytest.mark.parametrize("text", [
    "security.fuzz_examples=1: in a hurry",     # a security check is never waivable
    "durability.rto_target_s=600: slow disk",   # nor a correctness threshold
    "soak.verdict=none: whatever",
    "go-no-go.cycles=3",                        # no reason
    "go-no-go.cycles: 3",                       # no value
    "nosuchgate.cycles=1: x",
])
def test_waivers_lower_only_durations_and_counts(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_waiver(text)


def test_a_waiver_is_parsed_in_the_parameters_unit() -> None:
    assert parse_waiver("soak.duration=1h: no 48 h machine").value == 3600.0
    assert parse_waiver("go-no-go.health_minutes=90s: short").value == 1.5
    assert parse_waiver("go-no-go.cycles=3: short").parameter == "cycles"
