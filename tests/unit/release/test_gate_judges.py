"""Each gate's judge re-derives its verdict from the raw evidence, not from what the
evidence says about itself: a recorded "ok", "passed" or "GO" over raw data that
says otherwise is judged by the data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import gate_runs
import pytest
from release_evidence import build_run, origin_for, zombie_claimed_ok

from sonia.errors import GateError
from sonia.gates import registry


def load(path: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads(path.read_text())
    return data


def save(path: Path, data: object) -> None:
    path.write_text(json.dumps(data))


@pytest.fixture()
def origin() -> dict[str, object]:
    return origin_for("f" * 40)


def failed(gate: str, run_dir: Path) -> tuple[str, list[str]]:
    verdict = registry.judge(gate, run_dir)
    return verdict.status, [c.name for c in verdict.failures]


def test_go_no_go_recounts_the_cycle_rows(tmp_path: Path, origin: dict[str, object]) -> None:
    run = build_run(tmp_path, "go-no-go", origin, change=zombie_claimed_ok)
    assert failed("go-no-go", run) == ("NO-GO", ["cycles_ok", "zombies"])
    summary = load(run / "go-no-go-summary.json")
    summary["cycles"] = summary["cycles"][-1:]  # type: ignore[index]
    save(run / "go-no-go-summary.json", summary)
    assert failed("go-no-go", run)[0] == "INVALID"  # no cycle rows: nothing was proven


def test_security_reads_every_case_and_corpus_row(tmp_path: Path,
                                                  origin: dict[str, object]) -> None:
    run = build_run(tmp_path, "security", origin)
    data = load(run / "security-tests.json")
    data["cases"][0]["got"]["status"] = 200  # type: ignore[index]  # the attack was let in
    save(run / "security-tests.json", data)
    assert failed("security", run) == ("NO-GO", ["cases_failed"]), \
        "the row still says passed: the judge re-derives it from the answer"
    rows = (run / "security-corpus.jsonl").read_text().splitlines()
    (run / "security-corpus.jsonl").write_text("\n".join(rows[:10]) + "\n")
    assert failed("security", run)[0] == "INVALID"  # payloads missing


def test_soak_judges_the_metrics_csv(tmp_path: Path, origin: dict[str, object]) -> None:
    run = build_run(tmp_path, "soak", origin)
    path = run / "soak-metrics.csv"
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["chat.errors"] = "50"
        row["all.errors"] = "50"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    status, names = failed("soak", run)
    assert status == "NO-GO" and "error rate (all routes)" in names


def test_determinism_compares_the_two_runs(tmp_path: Path, origin: dict[str, object]) -> None:
    run = build_run(tmp_path, "determinism", origin)
    flipped = [*gate_runs.GREEN[:2], ("test_c", "failed", "assert 1 == 2")]
    (run / "junit-run2.xml").write_text(gate_runs.junit(flipped))  # the run list still says 0
    assert failed("determinism", run) == ("NO-GO", ["outcomes_identical", "failed_or_errored"])


def test_durability_judges_the_canaries_not_the_recorded_verdict(
        tmp_path: Path, origin: dict[str, object]) -> None:
    """A drill recording GO over a read-back that lost a write acknowledged before the
    backup (a hole in the restored canaries) is NO-GO; so is an RTO over its target."""
    run = build_run(tmp_path, "durability", origin)
    data = load(run / "restore-drill.json")
    data["read_back"]["restored"].remove(10)  # type: ignore[index]
    data["verdict"] = {"status": "GO", "checks": []}
    save(run / "restore-drill.json", data)
    assert failed("durability", run) == ("NO-GO", ["no loss older than the restored backup",
                                                   "restored canaries are a prefix (no holes)"])
    data["read_back"]["restored"].insert(9, 10)  # type: ignore[index]
    data["rto_s"] = 61.0
    save(run / "restore-drill.json", data)
    assert failed("durability", run) == ("NO-GO", ["RTO (kill to restored stack ready)"])


def test_chaos_needs_its_whole_history(tmp_path: Path, origin: dict[str, object]) -> None:
    run = build_run(tmp_path, "chaos", origin)
    (run / "chaos-history.jsonl").write_text("")
    status, names = failed("chaos", run)
    assert status == "INVALID"  # no traffic recorded: nothing was proven
    assert {"traffic_ok_per_kind", "faulted_service_exercised_after_fault"} <= set(names)


def test_a_gate_without_its_evidence_or_provenance_cannot_be_judged(
        tmp_path: Path, origin: dict[str, object]) -> None:
    run = build_run(tmp_path, "chaos", origin)
    (run / "provenance.json").unlink()
    with pytest.raises(GateError, match="provenance.json is missing"):
        registry.judge("chaos", run)
    (run / "chaos-report.json").unlink()
    with pytest.raises(GateError, match="chaos-report.json is missing"):
        registry.judge("chaos", run)
