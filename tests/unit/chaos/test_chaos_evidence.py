"""The chaos gate's findings: reading what a home stored, and the latency and recovery tables."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from sonia.actions import audit, grant_ledger
from sonia.gates.chaos import history as h
from sonia.gates.chaos.evidence import Fault, fast_fail, observe, percentile, recovery
from sonia.gates.chaos.history import History, check_history
from sonia.home import Home
from sonia.kit.db import connect, migrate
from sonia.services.eva.decisions import EVA_MIGRATIONS
from sonia.services.memory.store import MIGRATIONS as MEMORY_MIGRATIONS

KEY_A = "a" * 32
KEY_B = "b" * 32


def write_db(path: Path, migrations: list[str],
             fill: Callable[[sqlite3.Connection], object]) -> None:
    conn = connect(path)
    try:
        migrate(conn, migrations)
        conn.execute("BEGIN")
        fill(conn)
        conn.execute("COMMIT")
    finally:
        conn.close()


@pytest.fixture()
def home(tmp_path: Path) -> Home:
    """A home as the stack would leave it: one memory, one turn, one approved execution."""
    home = Home.at(tmp_path / "home")
    home.data.mkdir(parents=True)

    def memory(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO memories (id, kind, content, created_at) VALUES "
                  f"('mem_1', 'note', 'chaos memory {KEY_A}', 'now')")
        c.execute("INSERT INTO turns (id, session_id, turn_no, role, content, created_at) "
                  f"VALUES ('turn_1', 's', 1, 'user', 'chaos turn {KEY_B}', 'now'),"
                  f" ('turn_2', 's', 2, 'assistant', 'chaos turn {KEY_B}', 'now')")

    def eva(c: sqlite3.Connection) -> None:
        args = json.dumps({"path": f"chaos/{KEY_A}.txt", "content": KEY_A, "mode": "append"})
        c.execute("INSERT INTO decisions (action_id, tool, args, principal, tier, plan_hash, "
                  "decision, reason, status, created_at) VALUES ('act_1', 'file.write', ?, "
                  "'key:k', 2, 'p', 'approval_required', 'tier 2', 'executed', 0)", (args,))
        audit.append(c, "pending", actor="policy", action_id="act_1")
        audit.append(c, "approved", actor="key:approver", action_id="act_1",
                     detail={"jti": "jti-1"})
        audit.append(c, "executed", actor="openclaw", action_id="act_1",
                     detail={"jti": "jti-1", "outcome": "ok"})

    write_db(home.db_path("memory"), MEMORY_MIGRATIONS, memory)
    write_db(home.db_path("eva"), EVA_MIGRATIONS, eva)
    write_db(home.db_path("openclaw"), grant_ledger.MIGRATIONS,
             lambda c: grant_ledger.consume(c, "jti-1", "act_1", 2_000_000_000))
    (home.workspace / "chaos").mkdir(parents=True)
    (home.workspace / "chaos" / f"{KEY_A}.txt").write_text(f"{KEY_A}\n")
    return home


def test_observe_reads_what_the_stack_stored(home: Home) -> None:
    observed, facts = observe(home)
    assert observed.memory_keys == {KEY_A: 1}
    assert observed.memory_ids == {"mem_1"}
    assert observed.turn_keys == {KEY_B: 1}  # the assistant's echo is not the user's turn
    assert observed.action_keys == {"act_1": KEY_A}
    assert observed.executed == [("act_1", "jti-1")]
    assert observed.approved == {"act_1"}
    assert observed.consumed_grants == [("jti-1", "act_1")]
    assert observed.execution_effects == {KEY_A: 1}
    assert facts["audit_chain_ok"] is True
    assert facts["foreign_lines_in_action_files"] == 0


def test_observed_state_against_a_matching_history_passes(home: Home) -> None:
    history = History()
    for kind, key, result in [
        (h.MEMORY_WRITE, KEY_A, {"id": "mem_1"}),
        (h.CHAT, KEY_B, {"turn_id": "turn_1"}),
        (h.ACTION_PROPOSE, KEY_A, {"id": "act_1"}),
        (h.ACTION_APPROVE, KEY_A, {"id": "act_1", "status": "executed"}),
    ]:
        history.complete(history.invoke(kind, key), "ok", result=result)
    observed, _facts = observe(home)
    assert check_history(history, observed).ok


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0
    assert percentile([5.0], 99) == 5.0


def clocked(times: list[float]) -> Callable[[], float]:
    readings = iter(times)
    return lambda: next(readings)


def test_fast_fail_measures_the_requests_sent_while_memory_was_cut() -> None:
    # start, then (invoke, complete) pairs: two during the drop, one after it
    history = History(clock=clocked([0.0, 1.0, 1.1, 2.0, 2.3, 6.0, 6.2]))
    for kind, outcome in [(h.MEMORY_WRITE, "failed"), (h.CHAT, "failed"),
                          (h.MEMORY_WRITE, "ok")]:
        history.complete(history.invoke(kind, "k"), outcome)  # type: ignore[arg-type]
    fault = Fault("proxy-drop", "memory", at_s=0.5, at="t",
                  detail={"healed_at_s": 5.0})
    table = fast_fail(history, [fault])["proxy-drop"]
    assert table["requests"] == 2
    assert table["failed"]["count"] == 2
    assert table["failed"]["p99_s"] == pytest.approx(0.3)


def test_recovery_groups_faults_per_service_and_kind() -> None:
    faults = [Fault("sigkill", "memory", 1.0, "t", ready_s=2.0, e2e_s=2.5, recovered=True),
              Fault("sigkill", "memory", 9.0, "t", ready_s=3.0, e2e_s=None)]
    row = recovery(faults)["memory"]["sigkill"]
    assert row["count"] == 2
    assert row["ready_s_max"] == 3.0
    assert row["e2e_s"] == [2.5]
    assert row["not_recovered"] == 1


def test_observe_counts_voice_utterances_apart_from_chat_turns(home: Home) -> None:
    conn = connect(home.db_path("memory"))
    try:
        conn.execute("INSERT INTO turns (id, session_id, turn_no, role, content, created_at) "
                     f"VALUES ('turn_v', 's2', 1, 'user', 'chaos voice {KEY_A}', 'now'),"
                     f" ('turn_w', 's2', 2, 'assistant', 'chaos voice {KEY_A}', 'now')")
        conn.commit()
    finally:
        conn.close()
    observed, _facts = observe(home)
    assert observed.voice_keys == {KEY_A: 1}  # the reply echoing it is not the utterance
    assert observed.turn_keys == {KEY_B: 1}
