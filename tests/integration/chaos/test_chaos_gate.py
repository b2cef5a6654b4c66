"""The chaos gate, quick profile, end to end against a real stack: faults lose nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sonia import SERVICES
from sonia.gates.chaos import gate as chaos
from sonia.gates.chaos.evidence import CLIENT_TIMEOUT_S
from sonia.gates.chaos.history import KINDS, HistoryChecks
from sonia.gates.common.progress import GateProgress
from sonia.gates.registry import profile_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(420)]


def test_profiles_are_frozen_and_known_to_the_registry() -> None:
    quick = profile_for("chaos", "quick", {"kills_per_service": 1})
    assert quick.kills_per_service == 1
    assert chaos.PROFILES["release"].kills_per_service > chaos.PROFILES["quick"].kills_per_service
    with pytest.raises(AttributeError):
        chaos.PROFILES["quick"].stop_seconds = 1.0  # type: ignore[misc]


@pytest.mark.gate  # `make run` runs this gate; `make test` leaves it out
def test_quick_chaos_run_is_go_with_complete_evidence(tmp_path: Path) -> None:
    with GateProgress(enabled=False) as progress:
        verdict = chaos.run(tmp_path, chaos.PROFILES["quick"], progress)
    assert {path for path in chaos.EVIDENCE_FILES} <= {p.name for p in tmp_path.iterdir()}
    report = json.loads((tmp_path / "chaos-report.json").read_text())
    failed = {c.name: (c.observed, c.detail) for c in verdict.failures}
    assert verdict.status == "GO", failed

    assert set(report["history"]["summary"]) == set(KINDS)
    assert report["checks"]["counts"] == {rule: 0 for rule in HistoryChecks.RULES}
    kills = [f for f in report["faults"] if f["kind"] == "sigkill"]
    assert sorted({f["target"] for f in kills}) == sorted(SERVICES)
    assert {f["kind"] for f in report["faults"]} == {"sigkill", "sigstop", "proxy-drop",
                                                     "proxy-delay"}
    for fault in report["faults"]:
        assert fault["recovered"] and fault["at"] and fault["ready_s"] is not None
    for service in SERVICES:
        assert report["recovery"][service]["sigkill"]["e2e_s_max"] is not None
    assert report["fast_fail"]["proxy-drop"]["failed"]["p99_s"] < CLIENT_TIMEOUT_S
    assert report["sessions"]["active_at_end"] == []
    voice_ok = report["history"]["summary"]["voice_turn"]["ok"]
    assert voice_ok >= chaos.PROFILES["quick"].min_ok_per_kind
    assert chaos.judge(tmp_path).to_dict() == verdict.to_dict()
    lines = (tmp_path / "chaos-history.jsonl").read_text().splitlines()
    assert len(lines) == report["history"]["operations"]
