"""Gate determinism: the integration suite, twice, with one seed; outcomes must match.

Each run is a fresh pytest process with the same pytest-randomly seed (so the
same shuffled order), reruns off, its own temporary base directory, and JUnit
XML output; the fixtures give every stack a fresh home and free ports.

`judge(run_dir)` re-derives the verdict from the raw evidence alone: the JUnit
file of each run (`junit-run<n>.xml`) and the run list in
`integration-tests.json` (exit codes, the seed and marker), never a stated
verdict. It says:

- INVALID when the measurement cannot support a verdict: no test collected, a
  run that left no JUnit report or ended with a pytest exit code other than 0
  (all passed) or 1 (some failed), or a test skipped because an optional system
  package is missing. Such a skip says nothing about flakiness, so the verdict
  names the package ("install espeak-ng and run again") instead of NO-GO.
- NO-GO when a test failed or errored in any run, or a test's outcome (for a
  skip: its reason too) differs between runs.
- GO otherwise. A skip for any other reason is allowed only if it is identical in
  every run, and it is listed.

The convention for tests: a test that needs an optional system package skips with
a reason starting `MISSING_PACKAGE_PREFIX` followed by the package name, e.g.
`pytest.skip("missing system package: espeak-ng")`.
"""

from __future__ import annotations

import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sonia
from sonia.errors import GateError
from sonia.gates.common.evidence import (
    VALIDITY,
    Check,
    Verdict,
    capture_environment,
    read_evidence,
    write_json,
)
from sonia.gates.common.progress import GateProgress

__all__ = [
    "EVIDENCE_FILES",
    "EVIDENCE",
    "MISSING_PACKAGE_PREFIX",
    "PROFILES",
    "DeterminismProfile",
    "Outcome",
    "judge",
    "missing_package",
    "outcomes",
    "run",
]

EVIDENCE = "integration-tests.json"
EVIDENCE_FILES: tuple[str, ...] = (EVIDENCE, "junit-run1.xml", "junit-run2.xml")
"""What a run leaves in its run directory (the registry checks for each)."""
MISSING_PACKAGE_PREFIX = "missing system package: "
"""A skip reason starting with this names a missing optional system package."""
COMPLETED_EXIT_CODES = (0, 1)
"""pytest's exit codes for a run that went to the end (all passed / some failed)."""
_SEVERITY = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}


@dataclass(frozen=True)
class DeterminismProfile:
    runs: int = 2
    seed: int = 20261128
    # Whole-gate runs (marker `gate`) are left out: `gate all` runs every gate itself.
    marker: str = "integration and not gate"
    timeout_s: float = 1800.0


PROFILES = {
    "quick": DeterminismProfile(marker="integration and not slow and not gate"),
    "release": DeterminismProfile(),
}


@dataclass(frozen=True)
class Outcome:
    """How one test ended in one run; `reason` is the skip message (empty otherwise)."""

    outcome: str
    reason: str = ""

    def __str__(self) -> str:
        return f"skipped ({self.reason})" if self.outcome == "skipped" else self.outcome


def source_tests() -> Path:
    """The repository's tests folder (the gate runs from a source checkout)."""
    root = Path(sonia.__file__).resolve().parents[2]
    tests = root / "tests"
    if not (tests / "integration").is_dir():
        raise GateError(f"no integration tests next to the package at {root}; run the "
                        "determinism gate from a source checkout")
    return tests


def outcomes(junit: Path) -> dict[str, Outcome]:
    """test id -> its outcome (passed | failed | error | skipped, with the skip reason),
    from a JUnit XML report; a test with several results (a failure, then an error in
    teardown) keeps the worst. GateError when the file is not JUnit XML."""
    try:
        root = ET.parse(junit).getroot()
    except (ET.ParseError, OSError) as exc:
        raise GateError(f"{junit.name} is not a readable JUnit XML report: {exc}") from exc
    result: dict[str, Outcome] = {}
    for case in root.iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        found = Outcome("passed")
        for child in case:
            tag = {"failure": "failed"}.get(child.tag, child.tag)
            if tag in _SEVERITY and _SEVERITY[tag] > _SEVERITY[found.outcome]:
                reason = child.get("message", "") if tag == "skipped" else ""
                found = Outcome(tag, reason)
        result[test_id] = found
    return result


def missing_package(reason: str) -> str | None:
    """The package a skip reason says is missing (the first word after the prefix)."""
    if not reason.startswith(MISSING_PACKAGE_PREFIX):
        return None
    words = reason[len(MISSING_PACKAGE_PREFIX):].split()
    return words[0].strip(",;.()") if words else "?"


def _summary(run_dir: Path) -> dict[str, Any]:
    data = read_evidence(run_dir, EVIDENCE)
    runs = data.get("runs")
    if not isinstance(runs, list) or not all(
            isinstance(r, dict) and isinstance(r.get("run"), int)
            and isinstance(r.get("exit_code"), int) for r in runs):
        raise GateError(f"{EVIDENCE} must list its runs as {{run, exit_code}}")
    summary: dict[str, Any] = data
    return summary


def judge(run_dir: Path) -> Verdict:
    """The verdict, from the JUnit files and the run list alone (see the module doc)."""
    summary = _summary(run_dir)
    runs: list[dict[str, Any]] = summary["runs"]
    results: list[dict[str, Outcome]] = []
    for r in runs:
        junit = run_dir / f"junit-run{r['run']}.xml"
        results.append(outcomes(junit) if junit.exists() else {})
    ids = sorted(set().union(*results)) if results else []
    differing = {t: [str(res.get(t, "missing")) for res in results] for t in ids
                 if len({res.get(t) for res in results}) > 1}
    broken = sorted({t for res in results for t, o in res.items()
                     if o.outcome in ("failed", "error")})
    skips = {(t, o.reason) for res in results for t, o in res.items() if o.outcome == "skipped"}
    packages = sorted({p for _, reason in skips if (p := missing_package(reason))})
    other_skips = sorted(f"{t} ({reason})" for t, reason in skips if not missing_package(reason))
    exit_codes = [r["exit_code"] for r in runs]
    checks = [
        Check("runs", ">= 2", len(runs), len(runs) >= 2, kind=VALIDITY),
        Check("tests_collected", ">0", len(ids), len(ids) > 0, kind=VALIDITY),
        Check("runs_completed", f"exit code in {list(COMPLETED_EXIT_CODES)} and a JUnit "
              "report, every run", exit_codes,
              all(res for res in results) and all(c in COMPLETED_EXIT_CODES
                                                   for c in exit_codes), kind=VALIDITY),
        Check("missing_system_packages", [], packages, not packages, kind=VALIDITY,
              detail=(f"tests skipped because {', '.join(packages)} "
                      f"{'is' if len(packages) == 1 else 'are'} not installed: install "
                      "and run again" if packages else "")),
        Check("outcomes_identical", 0, len(differing), not differing,
              detail="; ".join(f"{t}: {' vs '.join(o)}" for t, o in list(differing.items())[:10])),
        Check("failed_or_errored", 0, len(broken), not broken, detail=", ".join(broken[:10])),
        Check("pytest_exit_codes", [0] * len(runs), exit_codes,
              all(c == 0 for c in exit_codes)),
    ]
    return Verdict.of("determinism", checks, {
        "runs": len(runs), "seed": summary.get("seed"), "marker": summary.get("marker"),
        "skipped_identically": other_skips[:50]})


def _run_once(run_dir: Path, n: int, profile: DeterminismProfile) -> dict[str, Any]:
    tests = source_tests()
    junit = run_dir / f"junit-run{n}.xml"
    cmd = [
        sys.executable, "-m", "pytest", str(tests / "integration"),
        "-m", profile.marker, "-p", "randomly",
        f"--randomly-seed={profile.seed}", f"--junitxml={junit}",
        f"--basetemp={run_dir / f'tmp-run{n}'}", "-q", "--no-header",
    ]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=tests.parent, capture_output=True, text=True,
                          timeout=profile.timeout_s)
    (run_dir / f"pytest-run{n}.log").write_text(proc.stdout + proc.stderr)
    return {"run": n, "exit_code": proc.returncode, "seconds": round(time.monotonic() - start, 1),
            "junit": junit.name if junit.exists() else None}


def run(run_dir: Path, profile: DeterminismProfile, progress: GateProgress) -> Verdict:
    """Run the suite `profile.runs` times, write the raw evidence, return `judge`'s verdict."""
    task = progress.task("integration suite runs", profile.runs)
    runs = []
    for n in range(1, profile.runs + 1):
        runs.append(_run_once(run_dir, n, profile))
        progress.advance(task)
    evidence = {"gate": "determinism", "seed": profile.seed, "marker": profile.marker,
                "runs": runs, "environment": capture_environment()}
    write_json(run_dir / EVIDENCE, evidence)
    verdict = judge(run_dir)
    # For readers only: `judge` never reads this back.
    write_json(run_dir / EVIDENCE, evidence | {"verdict": verdict.to_dict()})
    return verdict
