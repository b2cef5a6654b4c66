"""The chaos judge, fed recorded runs: one good run, then runs that each hide a failure
(voice never exercised after its kill, voice never served again, a stuck session, a lost
write). It reads `chaos-report.json` and `chaos-history.jsonl` only."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sonia import SERVICES
from sonia.errors import ConfigError
from sonia.gates.chaos import history as h
from sonia.gates.chaos.evidence import DEPENDENTS, HISTORY, REPORT, judge

ACTION_KEY = "c" * 32


class Run:
    """A recorded run under construction: operations, faults, and what the stack stored."""

    def __init__(self) -> None:
        self.ops: list[dict[str, Any]] = []
        self.faults: list[dict[str, Any]] = []
        self.sessions: dict[str, Any] = {"acknowledged": {"ses_1": True}, "active_at_end": [],
                                         "approvals_left_unknown": []}

    def op(self, kind: str, at: float, outcome: str = "ok", key: str | None = None,
           **result: Any) -> None:
        seq = len(self.ops)
        key = key or f"{seq:032x}"
        if outcome == "ok" and kind == h.MEMORY_WRITE:
            result.setdefault("id", f"mem_{seq}")
        if outcome == "ok" and kind == h.CHAT:
            result.setdefault("turn_id", f"turn_{seq}")
        self.ops.append({"seq": seq, "kind": kind, "key": key, "attempt": 1, "invoked_s": at,
                         "completed_s": at + 0.05, "latency_s": 0.05, "outcome": outcome,
                         "status": 200 if outcome == "ok" else 503, "code": None,
                         "error": None, "result": result})

    def fault(self, kind: str, target: str, at: float, **detail: Any) -> None:
        self.faults.append({"kind": kind, "target": target, "at_s": at, "at": "2026-01-01",
                            "detail": detail, "effect_s": 0.1, "recovered_at_s": at,
                            "ready_s": 1.0, "e2e_s": 2.0, "recovered": True})

    def observed(self) -> dict[str, Any]:
        memory = [o for o in self.ops if o["kind"] == h.MEMORY_WRITE and o["outcome"] == "ok"]
        chats = [o for o in self.ops if o["kind"] == h.CHAT and o["outcome"] == "ok"]
        voice = [o for o in self.ops if o["kind"] == h.VOICE_TURN and o["outcome"] == "ok"]
        return {"memory_keys": {o["key"]: 1 for o in memory},
                "memory_ids": [o["result"]["id"] for o in memory],
                "turn_keys": {o["key"]: 1 for o in chats},
                "turn_ids": [o["result"]["turn_id"] for o in chats],
                "voice_keys": {o["key"]: 1 for o in voice},
                "execution_effects": {ACTION_KEY: 1}, "action_keys": {"act_1": ACTION_KEY},
                "executed": [["act_1", "jti-1"]], "approved": ["act_1"],
                "consumed_grants": [["jti-1", "act_1"]]}

    def write(self, run_dir: Path) -> Path:
        with open(run_dir / HISTORY, "w") as out:
            for op in self.ops:
                out.write(json.dumps(op) + "\n")
        (run_dir / REPORT).write_text(json.dumps({
            "profile": {"min_ok_per_kind": 1, "kills_per_service": 1,
                        "recovery_deadline_s": 45.0},
            "faults": self.faults, "observed": self.observed(),
            "stored": {"audit_chain_ok": True, "audit_reason": "",
                       "foreign_lines_in_action_files": 0},
            "sessions": self.sessions,
            "supervisor_restarts": {s: 1 for s in SERVICES}, "orphans": []}))
        return run_dir


def good_run() -> Run:
    """Every kind of traffic, each service killed once and served again through itself,
    memory dropped once (a fast 503 while cut)."""
    run = Run()
    for kind in h.KINDS:
        if kind == h.ACTION_PROPOSE:
            run.op(kind, 0.5, key=ACTION_KEY, id="act_1", status="pending")
        elif kind == h.ACTION_APPROVE:
            run.op(kind, 0.6, key=ACTION_KEY, id="act_1", status="executed")
        else:
            run.op(kind, 0.5)
    for n, service in enumerate(SERVICES):
        at = 10.0 + 10 * n
        run.fault("sigkill", service, at)
        run.op(DEPENDENTS[service][0], at + 2.0)
    run.fault("proxy-drop", "memory", 100.0, healed_at_s=105.0)
    run.faults[-1]["recovered_at_s"] = 105.0
    run.op(h.MEMORY_WRITE, 101.0, outcome="failed")
    run.op(h.MEMORY_WRITE, 106.0)
    return run


def verdict_of(tmp_path: Path, change: Callable[[Run], object] = lambda r: None
               ) -> tuple[str, dict[str, Any]]:
    run = good_run()
    change(run)
    verdict = judge(run.write(tmp_path))
    return verdict.status, {c.name: c for c in verdict.failures}


def drop_voice_after_kill(run: Run) -> None:
    at = next(f["at_s"] for f in run.faults if f["target"] == "voice")
    run.ops = [o for o in run.ops if not (o["kind"] == h.VOICE_TURN and o["invoked_s"] >= at)]


def test_a_good_run_is_go(tmp_path: Path) -> None:
    status, failed = verdict_of(tmp_path)
    assert status == "GO", failed


def test_voice_never_exercised_after_its_kill_is_invalid(tmp_path: Path) -> None:
    status, failed = verdict_of(tmp_path, drop_voice_after_kill)
    assert status == "INVALID"
    assert "sigkill:voice" in str(failed["faulted_service_exercised_after_fault"].observed)


def test_other_traffic_succeeding_does_not_stand_in_for_voice(tmp_path: Path) -> None:
    def only_chat_after_the_voice_kill(run: Run) -> None:
        drop_voice_after_kill(run)
        at = next(f["at_s"] for f in run.faults if f["target"] == "voice")
        run.op(h.VOICE_TURN, at + 1.0, outcome="failed")  # exercised, never served
        run.op(h.CHAT, at + 2.0)
        run.op(h.MEMORY_WRITE, at + 2.0)

    status, failed = verdict_of(tmp_path, only_chat_after_the_voice_kill)
    assert status == "NO-GO"
    assert "sigkill:voice" in str(failed["every_fault_recovered"].observed)


def test_a_recovery_past_the_deadline_is_no_go(tmp_path: Path) -> None:
    def late(run: Run) -> None:
        op = next(o for o in run.ops if o["kind"] == h.VOICE_TURN and o["invoked_s"] > 1)
        op["completed_s"] = op["invoked_s"] + 60.0

    status, failed = verdict_of(tmp_path, late)
    assert status == "NO-GO"
    assert "every_fault_recovered" in failed and "worst_recovery_s" in failed


def test_a_stuck_session_is_no_go_and_the_gate_stopped_none(tmp_path: Path) -> None:
    status, failed = verdict_of(
        tmp_path, lambda r: r.sessions.__setitem__("active_at_end", ["ses_1", "ses_x"]))
    assert status == "NO-GO"
    assert failed["sessions_active_at_end"].observed == 2
    assert failed["acknowledged_sessions_left_active"].observed == 1
    assert "1 whose start went unanswered" in failed["sessions_active_at_end"].detail


def test_sessions_that_cannot_be_listed_are_not_a_pass(tmp_path: Path) -> None:
    status, failed = verdict_of(
        tmp_path, lambda r: r.sessions.__setitem__("active_at_end", None))
    assert status == "NO-GO"
    assert "sessions_active_at_end" in failed


def test_a_lost_acknowledged_write_is_no_go(tmp_path: Path) -> None:
    def lose(run: Run) -> None:
        original = run.observed

        def without_first() -> dict[str, Any]:
            observed = original()
            first = next(iter(observed["memory_keys"]))
            del observed["memory_keys"][first]
            return observed

        run.observed = without_first  # type: ignore[method-assign]

    status, failed = verdict_of(tmp_path, lose)
    assert status == "NO-GO"
    assert failed["lost_memory_writes"].observed == 1


def test_missing_or_malformed_evidence_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing"):
        judge(tmp_path)
    good_run().write(tmp_path)
    with open(tmp_path / HISTORY, "a") as out:
        out.write('{"seq": 99, "kind": "teleport"}\n')
    with pytest.raises(ConfigError, match="line .* is not an operation"):
        judge(tmp_path)
    good_run().write(tmp_path)
    report = json.loads((tmp_path / REPORT).read_text())
    del report["sessions"]
    (tmp_path / REPORT).write_text(json.dumps(report))
    with pytest.raises(ConfigError, match="incomplete"):
        judge(tmp_path)


def test_a_voice_turn_answered_but_not_stored_is_no_go(tmp_path: Path) -> None:
    def lose_a_voice_turn(run: Run) -> None:
        original = run.observed

        def without_voice() -> dict[str, Any]:
            observed = original()
            observed["voice_keys"].popitem()
            return observed

        run.observed = without_voice  # type: ignore[method-assign]

    status, failed = verdict_of(tmp_path, lose_a_voice_turn)
    assert status == "NO-GO"
    assert failed["lost_voice_turns"].observed == 1
