"""Gate determinism: the integration suite, twice, with one seed; outcomes must match.

Each run is a fresh pytest process with the same pytest-randomly seed (so the
same shuffled order), reruns off, its own temporary base directory, and JUnit
XML output; the fixtures give every stack a fresh home and free ports. The gate
passes only if both runs are fully green and every test has the same outcome.
Evidence: `integration-tests.json`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sonia
from sonia.errors import GateError
from sonia.gates.evidence import VALIDITY, Check, Verdict, capture_environment, write_json
from sonia.gates.progress import GateProgress


@dataclass(frozen=True)
class DeterminismProfile:
    runs: int = 2
    seed: int = 20261128
    marker: str = "integration"
    timeout_s: float = 1800.0


PROFILES = {
    "quick": DeterminismProfile(marker="integration and not slow"),
    "release": DeterminismProfile(),
}


def source_tests() -> Path:
    """The repository's tests folder (the gate runs from a source checkout)."""
    root = Path(sonia.__file__).resolve().parents[2]
    tests = root / "tests"
    if not (tests / "integration").is_dir():
        raise GateError(f"no integration tests next to the package at {root}; run the "
                        "determinism gate from a source checkout")
    return tests


def outcomes(junit: Path) -> dict[str, str]:
    """test id -> passed | failed | error | skipped, from a JUnit XML report."""
    result: dict[str, str] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
        result[test_id] = outcome
    return result


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
    found = outcomes(junit) if junit.exists() else {}
    counts: dict[str, int] = {}
    for outcome in found.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    return {"run": n, "exit_code": proc.returncode, "seconds": round(time.monotonic() - start, 1),
            "counts": counts, "tests": found}


def run(run_dir: Path, profile: DeterminismProfile, progress: GateProgress) -> Verdict:
    task = progress.task("integration suite runs", profile.runs)
    runs = []
    for n in range(1, profile.runs + 1):
        runs.append(_run_once(run_dir, n, profile))
        progress.advance(task)
    verdict, ids, differing, not_passed = _verdict(runs, profile.runs, profile.seed,
                                                   profile.marker)
    write_json(run_dir / "integration-tests.json", {
        "gate": "determinism", "verdict": verdict.to_dict(), "seed": profile.seed,
        "marker": profile.marker, "tests": len(ids), "runs": runs, "differing": differing,
        "not_passed": not_passed, "environment": capture_environment(),
    })
    return judge(run_dir)


def _verdict(runs: list[dict[str, Any]], expected_runs: int, seed: int, marker: str,
             ) -> tuple[Verdict, list[str], list[dict[str, Any]], list[str]]:
    """The verdict from the per-run outcomes: shared by run and judge."""
    ids = sorted(set().union(*(r["tests"] for r in runs)))
    differing = [
        {"test": t, "outcomes": [r["tests"].get(t, "missing") for r in runs]}
        for t in ids if len({r["tests"].get(t, "missing") for r in runs}) > 1
    ]
    not_passed = sorted({t for r in runs for t, o in r["tests"].items() if o != "passed"})
    checks = [
        Check("tests_collected", ">0", len(ids), len(ids) > 0, kind=VALIDITY),
        Check("runs_completed", f"{expected_runs} (at least 2)",
              sum(1 for r in runs if r["tests"]),
              len(runs) == expected_runs >= 2 and all(r["tests"] for r in runs),
              kind=VALIDITY),
        Check("outcomes_identical", 0, len(differing), not differing),
        Check("all_passed", 0, len(not_passed), not not_passed,
              detail=", ".join(not_passed[:10])),
        Check("pytest_exit_codes", [0] * expected_runs, [r["exit_code"] for r in runs],
              all(r["exit_code"] == 0 for r in runs)),
    ]
    verdict = Verdict.of("determinism", checks, {"runs": expected_runs, "seed": seed,
                                                 "marker": marker})
    return verdict, ids, differing, not_passed


def judge(run_dir: Path) -> Verdict:
    """Re-derive the verdict from the two runs' test outcomes in integration-tests.json."""
    data = json.loads((run_dir / "integration-tests.json").read_text(encoding="utf-8"))
    runs = data["runs"]
    return _verdict(runs, len(runs), int(data["seed"]), str(data["marker"]))[0]
