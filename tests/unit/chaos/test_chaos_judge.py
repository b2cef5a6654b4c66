"""The chaos judge, fed recorded runs: one good run, then runs that each hide a failure
(voice never exercised after its kill, voice never served again, a stuck session, a lost
write). It reads `chaos-report.json` and `chaos-history.jsonl` only."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from gate_runs import ChaosRun as Run
from gate_runs import chaos

from sonia.errors import ConfigError
from sonia.gates.chaos import history as h
from sonia.gates.chaos.evidence import HISTORY, REPORT, judge


def verdict_of(tmp_path: Path, change: Callable[[Run], object] = lambda r: None
               ) -> tuple[str, dict[str, Any]]:
    verdict = judge(chaos(tmp_path, change=change))
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
    chaos(tmp_path)
    with open(tmp_path / HISTORY, "a") as out:
        out.write('{"seq": 99, "kind": "teleport"}\n')
    with pytest.raises(ConfigError, match="line .* is not an operation"):
        judge(tmp_path)
    chaos(tmp_path)
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
