"""The chaos history and its checker: synthetic histories, each breaking one rule."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sonia.gates.chaos import history as h
from sonia.gates.chaos.history import History, Observed, check_history


def ticking_clock(step: float = 0.1) -> Callable[[], float]:
    """A deterministic clock: every reading is `step` seconds after the previous one."""
    now = [100.0]

    def clock() -> float:
        now[0] += step
        return now[0]

    return clock


def run(*steps: tuple[str, str, h.Outcome, dict[str, str]]) -> History:
    history = History(clock=ticking_clock())
    for kind, key, outcome, result in steps:
        history.complete(history.invoke(kind, key), outcome, result=result)
    return history


def approved_action(key: str, action_id: str) -> list[tuple[str, str, h.Outcome, dict[str, str]]]:
    return [(h.ACTION_PROPOSE, key, "ok", {"id": action_id, "status": "pending_approval"}),
            (h.ACTION_APPROVE, key, "ok", {"id": action_id, "status": "executed"})]


CLEAN = Observed(
    memory_keys={"m1": 1}, memory_ids={"mem_1"},
    turn_keys={"c1": 1}, turn_ids={"turn_1"},
    execution_effects={"a1": 1}, action_keys={"act_1": "a1"},
    executed=[("act_1", "jti-1")], approved={"act_1"}, consumed_grants=[("jti-1", "act_1")],
)


def clean_history() -> History:
    return run((h.MEMORY_WRITE, "m1", "ok", {"id": "mem_1"}),
               (h.CHAT, "c1", "ok", {"turn_id": "turn_1"}),
               *approved_action("a1", "act_1"))


def with_(**changes: object) -> Observed:
    fields = {name: getattr(CLEAN, name) for name in CLEAN.__dataclass_fields__}
    return Observed(**(fields | changes))


def test_a_clean_run_passes_every_rule() -> None:
    checked = check_history(clean_history(), CLEAN)
    assert checked.ok
    assert checked.counts() == {rule: 0 for rule in h.HistoryChecks.RULES}
    assert checked.facts["actions_acknowledged_executed"] == 1


def test_an_acknowledged_memory_write_that_is_missing_is_lost() -> None:
    checked = check_history(clean_history(), with_(memory_keys={}, memory_ids=set()))
    assert checked.lost_memory_writes == ["m1"]
    assert not checked.ok


def test_an_acknowledged_id_that_is_not_stored_is_lost() -> None:
    checked = check_history(clean_history(), with_(memory_ids={"mem_other"}))
    assert checked.lost_memory_writes == ["m1"]


def test_unknown_and_failed_writes_may_be_absent_or_present() -> None:
    history = run((h.MEMORY_WRITE, "u1", "unknown", {}), (h.MEMORY_WRITE, "f1", "failed", {}),
                  (h.MEMORY_WRITE, "u2", "unknown", {}))
    checked = check_history(history, Observed(memory_keys={"u2": 1}))
    assert checked.ok
    assert checked.facts["memory_writes_present_without_ack"] == 1


def test_a_write_stored_twice_is_a_duplicate() -> None:
    checked = check_history(clean_history(), with_(memory_keys={"m1": 2}))
    assert checked.duplicated_memory_writes == ["m1"]


def test_a_lost_chat_turn_is_caught() -> None:
    checked = check_history(clean_history(), with_(turn_keys={}, turn_ids=set()))
    assert checked.lost_chat_turns == ["c1"]


def test_a_double_execution_in_the_workspace_is_caught() -> None:
    checked = check_history(clean_history(), with_(execution_effects={"a1": 2}))
    assert checked.double_executions == ["a1"]
    assert checked.lost_executions == ["a1"]  # acknowledged once, present twice


def test_two_executed_audit_records_for_one_action_are_a_double_execution() -> None:
    checked = check_history(clean_history(),
                            with_(executed=[("act_1", "jti-1"), ("act_1", "jti-2")]))
    assert checked.double_executions == ["a1"]


def test_a_grant_used_twice_is_a_double_execution() -> None:
    history = run(*approved_action("a1", "act_1"), *approved_action("a2", "act_2"))
    observed = with_(execution_effects={"a1": 1, "a2": 1},
                     action_keys={"act_1": "a1", "act_2": "a2"},
                     executed=[("act_1", "jti-1"), ("act_2", "jti-1")],
                     approved={"act_1", "act_2"},
                     consumed_grants=[("jti-1", "act_1")])
    assert check_history(history, observed).double_executions == ["jti:jti-1"]


def test_an_execution_whose_approval_the_gate_never_invoked_is_caught() -> None:
    history = run((h.ACTION_PROPOSE, "a1", "ok", {"id": "act_1"}))
    checked = check_history(history, CLEAN)
    assert checked.unapproved_executions == ["a1"]


def test_an_execution_without_an_approved_audit_record_is_caught() -> None:
    checked = check_history(clean_history(), with_(approved=set()))
    assert checked.unapproved_executions == ["a1"]


def test_an_executed_action_the_gate_never_proposed_is_caught() -> None:
    checked = check_history(clean_history(),
                            with_(executed=[("act_1", "jti-1"), ("act_9", "jti-9")]))
    assert checked.unapproved_executions == ["action:act_9"]


def test_an_approval_acknowledged_as_executed_must_have_its_effect() -> None:
    checked = check_history(clean_history(), with_(execution_effects={}))
    assert checked.lost_executions == ["a1"]


def test_an_approved_action_that_never_ran_is_counted() -> None:
    history = run((h.ACTION_PROPOSE, "a1", "ok", {"id": "act_1"}),
                  (h.ACTION_APPROVE, "a1", "failed", {}))
    observed = with_(execution_effects={}, executed=[], consumed_grants=[])
    checked = check_history(history, observed)
    assert checked.ok
    assert checked.facts["actions_approved_not_executed"] == 1


def test_summary_counts_every_outcome_and_what_is_in_flight() -> None:
    history = clean_history()
    history.invoke(h.MEMORY_WRITE, "m2")
    summary = history.summary()
    assert summary[h.MEMORY_WRITE] == {"invoked": 2, "in_flight": 1, "ok": 1, "failed": 0,
                                       "unknown": 0}
    assert [op.key for op in history.in_flight()] == ["m2"]


def test_operations_are_timed_on_the_history_clock() -> None:
    history = History(clock=ticking_clock(0.5))
    op = history.invoke(h.CHAT, "c1")
    history.complete(op, "ok")
    assert op.latency_s == pytest.approx(0.5)
    assert op.to_dict()["latency_s"] == pytest.approx(0.5)


def test_an_operation_completes_once_and_kinds_are_known() -> None:
    history = History(clock=ticking_clock())
    op = history.invoke(h.CHAT, "c1")
    history.complete(op, "ok")
    with pytest.raises(ValueError):
        history.complete(op, "failed")
    with pytest.raises(ValueError):
        history.invoke("teleport", "x")
