"""`soak.judge` re-derives the verdict from the two evidence files alone.

Each test writes a run directory the way the gate does (`soak-metrics.csv` and
`soak-summary.json`), then asks the judge; a summary that carries a forged GO
verdict must not change what the judge says, and broken evidence is a GateError
naming the file, never a verdict.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from gate_runs import MIB, soak, synthetic_rows

from sonia.errors import GateError
from sonia.gates.soak.gate import METRICS, PROFILES, SUMMARY, judge
from sonia.gates.soak.load_rows import memory_field, restarts_field, uptime_field
from sonia.gates.soak.verdict import SoakProfile

VERDICT = SoakProfile(warmup_windows=5, min_windows=60, memory_slope_bytes_per_hour=4 * MIB,
                      memory_growth_bytes_per_hour=4 * MIB)
PROFILE = dataclasses.replace(PROFILES["release"], verdict=VERDICT)


def write_run(run_dir: Path, rows: list[dict[str, Any]], **changes: Any) -> Path:
    """A soak run (`gate_runs.soak`) of `rows` at PROFILE, with summary fields replaced."""
    return soak(run_dir, PROFILE, rows, change=lambda summary: summary.update(changes))


def failed(run_dir: Path) -> list[str]:
    return [c.name for c in judge(run_dir).failures]


def test_a_clean_run_is_go(tmp_path: Path) -> None:
    verdict = judge(write_run(tmp_path, synthetic_rows()))
    assert verdict.status == "GO", [c.name for c in verdict.failures]
    assert verdict.thresholds["min_sampled_fraction"] == 0.95


def test_a_restart_is_no_go_even_when_the_summary_says_go(tmp_path: Path) -> None:
    rows = synthetic_rows()
    for row in rows[50:]:
        row[restarts_field("gateway")] = 1
    forged = {"status": "GO", "checks": []}
    run_dir = write_run(tmp_path, rows, verdict=forged)
    (run_dir / "verdict.json").write_text(json.dumps({"verdict": forged}))
    verdict = judge(run_dir)
    assert verdict.status == "NO-GO" and failed(run_dir) == ["restarts (gateway)"]


def test_missing_memory_samples_are_invalid(tmp_path: Path) -> None:
    rows = synthetic_rows()
    for row in rows[::10]:
        row[memory_field("memory")] = ""
    run_dir = write_run(tmp_path, rows)
    assert judge(run_dir).status == "INVALID"
    assert failed(run_dir) == ["memory sampled (memory)"]


def test_the_summary_counts_are_judged(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, synthetic_rows(), load={"abandoned": 3},
                        sessions={"stuck": 2},
                        correlation_trace={"sampled": 50, "found": 49, "missing": ["x"]})
    assert set(failed(run_dir)) == {"requests abandoned", "stuck sessions",
                                    "correlation IDs found in the gateway log"}
    assert judge(run_dir).status == "INVALID"  # abandoned: the measurement is incomplete


@pytest.mark.parametrize("damage", ["no csv", "no summary", "summary not json",
                                    "no thresholds", "a threshold missing",
                                    "unknown threshold", "bad cell",
                                    "negative count"])
def test_broken_evidence_is_an_error_naming_the_file(tmp_path: Path, damage: str) -> None:
    run_dir = write_run(tmp_path, synthetic_rows(windows=80))
    summary = json.loads((run_dir / SUMMARY).read_text())
    if damage == "no csv":
        (run_dir / METRICS).unlink()
    elif damage == "no summary":
        (run_dir / SUMMARY).unlink()
    elif damage == "summary not json":
        (run_dir / SUMMARY).write_text("{")
    elif damage == "no thresholds":
        del summary["profile"]["verdict"]
    elif damage == "a threshold missing":  # e.g. written before growth was judged
        del summary["profile"]["verdict"]["memory_growth_bytes_per_hour"]
    elif damage == "unknown threshold":
        summary["profile"]["verdict"]["max_leak"] = 1
    elif damage == "bad cell":
        text = (run_dir / METRICS).read_text().splitlines()
        header = text[0].split(",")
        cells = text[3].split(",")
        cells[header.index(uptime_field("gateway"))] = "soon"
        text[3] = ",".join(cells)
        (run_dir / METRICS).write_text("\n".join(text) + "\n")
    elif damage == "negative count":
        summary["sessions"]["stuck"] = -1
    if damage in ("no thresholds", "a threshold missing", "unknown threshold",
                  "negative count"):
        (run_dir / SUMMARY).write_text(json.dumps(summary))
    with pytest.raises(GateError) as raised:
        judge(run_dir)
    named = METRICS if damage in ("no csv", "bad cell") else SUMMARY
    assert named in str(raised.value)
