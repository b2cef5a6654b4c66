"""The chaos judge, fed recorded runs: one good run, then runs that each hide a failure
(voice never exercised after its kill, voice never served again, a stuck session, a lost
write). It reads `chaos-report.json` and `chaos-history.jsonl` only."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from gate_runs import ChaosRun as Run
from gate_runs import chaos

from sonia.errors import ConfigError
from sonia.gates.chaos import history as h
from sonia.gates.chaos.evidence import HISTORY, PG_RESTART, REPORT, judge
from sonia.gates.chaos.gate import PROFILES


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


# -- on PostgreSQL: the server restarts must have happened, and nothing may be lost ------
PG_PROFILE = dataclasses.replace(PROFILES["quick"], storage="postgresql")


def pg_verdict(tmp_path: Path, change: Callable[[Run], object] = lambda r: None
               ) -> tuple[str, dict[str, Any]]:
    verdict = judge(chaos(tmp_path, PG_PROFILE, change=change))
    return verdict.status, {c.name: c for c in verdict.failures}


def restart(run: Run, mode: str) -> dict[str, Any]:
    return next(f for f in run.faults if f["kind"] == PG_RESTART and f["detail"]["mode"] == mode)


def test_a_good_postgresql_run_is_go(tmp_path: Path) -> None:
    status, failed = pg_verdict(tmp_path)
    assert status == "GO", failed


def test_a_restart_that_left_the_same_server_running_is_invalid(tmp_path: Path) -> None:
    def same_postmaster(run: Run) -> None:
        detail = restart(run, "immediate")["detail"]
        detail["new_pid"], detail["new_started"] = detail["pid"], detail["started"]

    status, failed = pg_verdict(tmp_path, same_postmaster)
    assert status == "INVALID"
    observed = failed["postgres_restarts_took_effect"].observed
    assert observed["fast"] == "restarted" and "same server" in observed["immediate"]


def test_a_restart_no_request_noticed_is_invalid(tmp_path: Path) -> None:
    status, failed = pg_verdict(tmp_path, lambda r: restart(r, "fast").__setitem__(
        "effect_s", None))
    assert status == "INVALID"
    assert "pg-restart:postgresql" in str(failed["faults_took_effect"].observed)

    def no_failure_while_down(run: Run) -> None:
        detail = restart(run, "fast")["detail"]
        run.ops = [o for o in run.ops if not (
            o["outcome"] == "failed"
            and detail["stopped_at_s"] <= o["invoked_s"] < detail["back_at_s"])]

    status, failed = pg_verdict(tmp_path / "history", no_failure_while_down)
    assert status == "INVALID", "the judge reads the outage from the history itself"
    assert "no request failed" in failed["postgres_restarts_took_effect"].observed["fast"]


def test_a_failure_before_the_server_was_down_is_not_the_restarts_effect(
    tmp_path: Path,
) -> None:
    """A request that failed before `pg_ctl stop` returned (say on a pooled connection
    an earlier restart broke) says nothing of this restart."""
    def failed_just_before(run: Run) -> None:
        detail = restart(run, "immediate")["detail"]
        for op in run.ops:
            if op["outcome"] == "failed" and \
                    detail["stopped_at_s"] <= op["invoked_s"] < detail["back_at_s"]:
                op["invoked_s"] = detail["stopped_at_s"] - 0.2

    status, failed = pg_verdict(tmp_path, failed_just_before)
    assert status == "INVALID"
    assert "no request failed" in \
        failed["postgres_restarts_took_effect"].observed["immediate"]


def test_a_restart_mode_that_never_ran_is_invalid(tmp_path: Path) -> None:
    status, failed = pg_verdict(tmp_path, lambda r: r.faults.remove(restart(r, "fast")))
    assert status == "INVALID"
    assert failed["postgres_restarts_took_effect"].observed["fast"] == "never restarted"


def test_a_write_acknowledged_after_a_restart_and_then_missing_is_no_go(
    tmp_path: Path,
) -> None:
    def lose_it(run: Run) -> None:
        at = restart(run, "immediate")["detail"]["back_at_s"]
        lost = next(o for o in run.ops if o["kind"] == h.MEMORY_WRITE
                    and o["outcome"] == "ok" and o["invoked_s"] > at)
        original = run.observed

        def without() -> dict[str, Any]:
            observed = original()
            del observed["memory_keys"][lost["key"]]
            return observed

        run.observed = without  # type: ignore[method-assign]

    status, failed = pg_verdict(tmp_path, lose_it)
    assert status == "NO-GO"
    assert failed["lost_memory_writes"].observed == 1


def test_postgresql_is_back_only_once_every_ledger_writes_again(tmp_path: Path) -> None:
    def no_proposal_after(run: Run) -> None:
        at = restart(run, "fast")["detail"]["back_at_s"]
        run.ops = [o for o in run.ops if not (o["kind"] == h.ACTION_PROPOSE
                                              and o["invoked_s"] >= at)]
        run.op(h.ACTION_PROPOSE, at + 2.0, outcome="failed")

    status, failed = pg_verdict(tmp_path, no_proposal_after)
    assert status == "NO-GO"
    assert "pg-restart:postgresql" in str(failed["every_fault_recovered"].observed)


def test_a_ledger_file_beside_postgresql_or_another_backend_is_invalid(
    tmp_path: Path,
) -> None:
    def wrote_a_file(run: Run) -> None:
        report = run.report

        def with_file() -> dict[str, Any]:
            data = report()
            data["stored"]["ledger_files"] = ["memory.db"]
            return data

        run.report = with_file  # type: ignore[method-assign]

    status, failed = pg_verdict(tmp_path, wrote_a_file)
    assert status == "INVALID"
    assert failed["storage_as_profiled"].observed["ledger_files"] == ["memory.db"]

    def ran_on_sqlite(run: Run) -> None:
        report = run.report

        def sqlite() -> dict[str, Any]:
            data = report()
            data["storage"] = {"backend": "sqlite"}
            return data

        run.report = sqlite  # type: ignore[method-assign]

    status, failed = pg_verdict(tmp_path / "b", ran_on_sqlite)
    assert status == "INVALID" and "storage_as_profiled" in failed
