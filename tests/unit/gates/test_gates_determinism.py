"""The determinism judge, fed recorded JUnit pairs: identical -> GO, a flip -> NO-GO, a skip
for a missing system package -> INVALID naming it; and one real pytest run end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from gate_runs import GREEN, Case
from gate_runs import determinism as recorded

from sonia.errors import GateError
from sonia.gates.common.evidence import Verdict
from sonia.gates.determinism import EVIDENCE, judge, missing_package, outcomes


def failed(verdict: Verdict) -> dict[str, str]:
    return {c.name: c.detail for c in verdict.failures}


def test_identical_green_runs_are_go(tmp_path: Path) -> None:
    verdict = judge(recorded(tmp_path, GREEN, GREEN))
    assert verdict.status == "GO", failed(verdict)


def test_one_flipped_test_is_no_go_and_named(tmp_path: Path) -> None:
    flipped = [*GREEN[:2], ("test_c", "failed", "assert 1 == 2")]
    verdict = judge(recorded(tmp_path, GREEN, flipped))
    assert verdict.status == "NO-GO"
    assert "tests.integration.t::test_c: passed vs failed" in failed(verdict)["outcomes_identical"]


def test_a_stated_go_in_the_evidence_is_not_believed(tmp_path: Path) -> None:
    flipped = [*GREEN[:2], ("test_c", "error", "fixture broke")]
    run_dir = recorded(tmp_path, GREEN, flipped, verdict={"status": "GO", "checks": []})
    assert judge(run_dir).status == "NO-GO"


def test_the_same_failure_in_both_runs_is_no_go(tmp_path: Path) -> None:
    broken = [*GREEN[:2], ("test_c", "failed", "assert 0")]
    verdict = judge(recorded(tmp_path, broken, broken))
    assert verdict.status == "NO-GO"
    assert set(failed(verdict)) == {"failed_or_errored", "pytest_exit_codes"}


def test_a_missing_system_package_is_invalid_naming_the_package(tmp_path: Path) -> None:
    skipped = [*GREEN[:2], ("test_c", "skipped", "missing system package: espeak-ng")]
    verdict = judge(recorded(tmp_path, skipped, skipped))
    assert verdict.status == "INVALID", "not NO-GO: the suite was not measured on this machine"
    check = next(c for c in verdict.checks if c.name == "missing_system_packages")
    assert check.observed == ["espeak-ng"] and "espeak-ng" in check.detail


def test_a_missing_package_wins_over_a_flip_elsewhere(tmp_path: Path) -> None:
    one = [("test_a", "skipped", "missing system package: bwrap (the sandbox)"),
           ("test_b", "passed", "")]
    two = [("test_a", "skipped", "missing system package: bwrap (the sandbox)"),
           ("test_b", "failed", "flaky")]
    verdict = judge(recorded(tmp_path, one, two))
    assert verdict.status == "INVALID"
    assert "bwrap" in failed(verdict)["missing_system_packages"]


def test_another_skip_identical_in_both_runs_is_go_and_listed(tmp_path: Path) -> None:
    skipped = [*GREEN[:2], ("test_c", "skipped", "needs root")]
    verdict = judge(recorded(tmp_path, skipped, skipped))
    assert verdict.status == "GO", failed(verdict)
    assert verdict.thresholds["skipped_identically"] == ["tests.integration.t::test_c (needs root)"]


@pytest.mark.parametrize("second", [
    [*GREEN[:2], ("test_c", "skipped", "needs root")],
    [*GREEN[:2], ("test_c", "skipped", "the corpus is not present")],
    GREEN[:2],  # the test vanished from the second run
])
def test_a_skip_that_differs_between_runs_is_no_go(tmp_path: Path, second: list[Case]) -> None:
    first = [*GREEN[:2], ("test_c", "skipped", "the corpus is not present at x")]
    verdict = judge(recorded(tmp_path, first, second))
    assert verdict.status == "NO-GO"
    assert "outcomes_identical" in failed(verdict)


@pytest.mark.parametrize("runs, codes", [
    ([[], []], [5, 5]),  # nothing collected
    ([GREEN, GREEN], [0, 2]),  # the second run was interrupted
    ([GREEN], [0]),  # one run proves nothing about flakiness
])
def test_runs_that_cannot_support_a_verdict_are_invalid(
        tmp_path: Path, runs: list[list[Case]], codes: list[int]) -> None:
    assert judge(recorded(tmp_path, *runs, exit_codes=codes)).status == "INVALID"


def test_a_run_that_left_no_junit_report_is_invalid(tmp_path: Path) -> None:
    recorded(tmp_path, GREEN, GREEN)
    (tmp_path / "junit-run2.xml").unlink()
    verdict = judge(tmp_path)
    assert verdict.status == "INVALID" and "runs_completed" in failed(verdict)


def test_missing_or_malformed_evidence_raises_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(GateError, match=EVIDENCE):
        judge(tmp_path)
    recorded(tmp_path, GREEN, GREEN)
    (tmp_path / "junit-run1.xml").write_text("<testsuites><testcase")
    with pytest.raises(GateError, match="junit-run1.xml"):
        judge(tmp_path)
    (tmp_path / EVIDENCE).write_text('{"runs": [{"run": "1"}]}')
    with pytest.raises(GateError, match="runs"):
        judge(tmp_path)


@pytest.mark.parametrize("reason, package", [
    ("missing system package: espeak-ng", "espeak-ng"),
    ("missing system package: bwrap (the tool sandbox)", "bwrap"),
    ("espeak-ng is not installed", None),
    ("needs root", None),
])
def test_the_skip_convention(reason: str, package: str | None) -> None:
    assert missing_package(reason) == package


def test_a_real_pytest_run_round_trips_the_convention(tmp_path: Path) -> None:
    """Two real pytest processes over a suite whose one test skips for a missing package."""
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_voice.py").write_text(
        "import pytest\n\n"
        "def test_ok():\n    pass\n\n"
        "@pytest.mark.skipif(True, reason='missing system package: espeak-ng')\n"
        "def test_speaks():\n    pass\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    runs = []
    for n in (1, 2):
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
             f"--junitxml={run_dir / f'junit-run{n}.xml'}", "-o", "addopts=", str(suite)],
            cwd=suite, capture_output=True, text=True, timeout=120)
        runs.append({"run": n, "exit_code": proc.returncode})
    (run_dir / EVIDENCE).write_text(json.dumps({"runs": runs}))
    found = outcomes(run_dir / "junit-run1.xml")
    assert [str(o) for o in found.values()] == [
        "passed", "skipped (missing system package: espeak-ng)"]
    verdict = judge(run_dir)
    assert verdict.status == "INVALID"
    assert failed(verdict) == {"missing_system_packages": "tests skipped because espeak-ng is "
                                                          "not installed: install and run again"}
