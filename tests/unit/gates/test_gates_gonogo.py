"""The go-no-go judge, fed recorded rows: a clean run is GO; a zombie, an orphan, a port left
bound, an escalation, a failed probe or a restart between probes is NO-GO; zero cycles or a
probe without the supervisor's state is INVALID."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from gate_runs import cycle, go_no_go, go_no_go_summary
from gate_runs import supervisor_state as services

from sonia import SERVICES
from sonia.errors import GateError
from sonia.gates.common.evidence import Verdict
from sonia.gates.gonogo import EVIDENCE, judge

Summary = dict[str, Any]


def judged(tmp_path: Path, change: Callable[[Summary], object] = lambda s: None) -> Verdict:
    """A clean run (3 cycles, 12 probes: `gate_runs.go_no_go`) edited by `change`, judged."""
    return judge(go_no_go(tmp_path, change=change))


def failed(verdict: Verdict) -> dict[str, Any]:
    return {c.name: c.observed for c in verdict.failures}


def test_a_clean_run_is_go(tmp_path: Path) -> None:
    verdict = judged(tmp_path)
    assert verdict.status == "GO", failed(verdict)


def _set_cycle(n: int, **changes: Any) -> Callable[[Summary], object]:
    return lambda s: s["cycles"].__setitem__(n, cycle(s["cycles"][n]["cycle"], **changes))


@pytest.mark.parametrize("change, check", [
    (_set_cycle(1, zombies=[4242]), "zombies"),
    (_set_cycle(0, orphans=[4243]), "orphans"),
    (_set_cycle(3, leftovers_killed=[4244]), "orphans"),  # the stop after the health phase
    (_set_cycle(2, ports_bound=[7050]), "ports_left_bound"),
    (_set_cycle(0, escalations=["voice"]), "sigkill_escalations"),
    (_set_cycle(1, wal_not_checkpointed=["memory.db-wal"]), "wal_not_checkpointed"),
    (_set_cycle(2, started=False, error="gateway not ready"), "failed_starts"),
])
def test_a_cycle_that_left_something_behind_is_no_go(
        tmp_path: Path, change: Callable[[Summary], object], check: str) -> None:
    verdict = judged(tmp_path, change)
    assert verdict.status == "NO-GO"
    assert check in failed(verdict)


def test_a_row_that_claims_ok_is_not_believed(tmp_path: Path) -> None:
    verdict = judged(tmp_path, _set_cycle(0, zombies=[4242], ok=True))
    assert verdict.status == "NO-GO" and failed(verdict)["cycles_ok"] == 2


def test_a_failed_probe_is_no_go(tmp_path: Path) -> None:
    def change(s: Summary) -> None:
        s["health"]["probes"][5]["failed"] = {"memory": "ReadTimeout"}

    verdict = judged(tmp_path, change)
    assert verdict.status == "NO-GO" and failed(verdict) == {"health_checks_passed": "11/12"}


def test_a_restart_between_probes_is_no_go_and_named(tmp_path: Path) -> None:
    """Every probe answered ready, but the supervisor restarted the voice service."""
    def change(s: Summary) -> None:
        for probe in s["health"]["probes"][7:]:
            probe["services"] = services(restarted="voice")

    verdict = judged(tmp_path, change)
    assert verdict.status == "NO-GO" and set(failed(verdict)) == {"restarts_during_health"}
    detail = next(c.detail for c in verdict.failures)
    pid = 1000 + SERVICES.index("voice")
    assert detail == f"voice at probe 7: pid {pid} -> {pid + 500}, restarts 0 -> 1"


def test_a_service_down_at_a_probe_is_a_restart_even_before_it_is_back(tmp_path: Path) -> None:
    def change(s: Summary) -> None:
        s["health"]["probes"][3]["services"]["eva"]["pid"] = None

    assert "restarts_during_health" in failed(judged(tmp_path, change))


@pytest.mark.parametrize("cycles", [0, 2])
def test_too_few_cycles_is_invalid(tmp_path: Path, cycles: int) -> None:
    def change(s: Summary) -> None:
        s["cycles"] = [cycle(n) for n in range(1, cycles + 1)] + [cycle("after-health")]
        if cycles == 0:
            s["profile"]["cycles"] = 0  # `--cycles 0`: nothing measured, never GO

    verdict = judged(tmp_path, change)
    assert verdict.status == "INVALID" and "cycles_measured" in failed(verdict)


@pytest.mark.parametrize("change", [
    lambda s: s["health"].__setitem__("baseline", None),
    lambda s: s["health"]["probes"][4].__setitem__("services", None),
    lambda s: s["health"]["baseline"]["gateway"].__setitem__("pid", None),
])
def test_a_probe_without_the_supervisors_state_is_invalid(
        tmp_path: Path, change: Callable[[Summary], object]) -> None:
    verdict = judged(tmp_path, change)
    assert verdict.status == "INVALID" and "probes_with_supervisor_state" in failed(verdict)


@pytest.mark.parametrize("change, check", [
    (lambda s: s["health"]["probes"].pop(), "health_probes"),
    (lambda s: s.__setitem__("subreaper", False), "subreaper"),
])
def test_a_measurement_that_cannot_see_everything_is_invalid(
        tmp_path: Path, change: Callable[[Summary], object], check: str) -> None:
    verdict = judged(tmp_path, change)
    assert verdict.status == "INVALID" and check in failed(verdict)


def test_a_stated_go_is_ignored(tmp_path: Path) -> None:
    def change(s: Summary) -> None:
        s["verdict"] = {"status": "GO", "checks": []}
        s["totals"] = {"zombies": 0}
        s["cycles"][0]["zombies"] = [4242]

    assert judged(tmp_path, change).status == "NO-GO"


def test_missing_or_malformed_evidence_raises_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(GateError, match=EVIDENCE):
        judge(tmp_path)
    (tmp_path / EVIDENCE).write_text("{not json")
    with pytest.raises(GateError, match="not readable JSON"):
        judge(tmp_path)
    (tmp_path / EVIDENCE).write_text('{"cycles": 9}')
    with pytest.raises(GateError, match="raw rows"):
        judge(tmp_path)
    data = go_no_go_summary()
    del data["cycles"][0]["zombies"]
    (tmp_path / EVIDENCE).write_text(json.dumps(data))
    with pytest.raises(GateError, match="zombies"):
        judge(tmp_path)
