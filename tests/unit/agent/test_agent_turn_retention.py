"""Turn records do not grow for ever: ended turns go after the retention period.

A paused turn is an approver's open question, so it stays through its
approval's deadline as well; a turn that changed recently stays whatever its
status. On a real SQLite file and a real PostgreSQL database, the gateway's own
migrations.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from backends import Backend

from sonia.home import Home
from sonia.kit.portable import Conn, LedgerDatabase, open_ledger_database
from sonia.services.gateway import turns
from sonia.services.gateway.state import MIGRATIONS, PG_MIGRATIONS
from sonia.testing import in_process

DAY = 86_400.0
NOW = 1_900_000_000.0


@pytest.fixture()
def db(backend: Backend) -> Iterator[LedgerDatabase]:
    database = backend.database("gateway", MIGRATIONS, PG_MIGRATIONS)
    database.open()
    yield database
    database.close()


def turn(db: LedgerDatabase, status: str, age_days: float) -> str:
    record = turns.TurnRecord(id=turns.new_turn_id(), key_id="k1", session_id="s1",
                              message="hi", profile=None, messages=[], recalled=[],
                              status=status)
    def save(conn: Conn) -> None:
        turns.save(conn, record)
        conn.execute("UPDATE agent_turns SET updated_at = ? WHERE id = ?",
                     (NOW - age_days * DAY, record.id))
    db.write_sync(save)
    return record.id


def remaining(db: LedgerDatabase) -> set[str]:
    return db.write_sync(lambda c: {row[0] for row in c.execute("SELECT id FROM agent_turns")})


def test_ended_turns_past_retention_are_deleted_and_recent_ones_kept(db: LedgerDatabase) -> None:
    old_done, old_failed = turn(db, "completed", 31), turn(db, "failed", 40)
    new_done = turn(db, "completed", 29)
    deleted = db.write_sync(lambda c: turns.prune(c, ended_before=NOW - 30 * DAY,
                                                  paused_before=NOW - 31 * DAY))
    assert deleted == 2
    assert remaining(db) == {new_done}
    assert old_done not in remaining(db) and old_failed not in remaining(db)


def test_a_paused_turn_outlives_retention_by_its_approval_deadline(db: LedgerDatabase) -> None:
    paused_recent = turn(db, "pending_approval", 30.5)
    paused_old = turn(db, "pending_approval", 32)
    db.write_sync(lambda c: turns.prune(c, ended_before=NOW - 30 * DAY,
                                        paused_before=NOW - 31 * DAY))
    assert remaining(db) == {paused_recent}
    assert paused_old not in remaining(db)


def test_a_paused_turn_is_claimed_once(db: LedgerDatabase) -> None:
    paused = turn(db, "pending_approval", 0)
    db.write_sync(lambda c: c.execute(
        "UPDATE agent_turns SET pending_action_id = 'act_1' WHERE id = ?", (paused,)))
    assert db.write_sync(lambda c: turns.find_pending(c, "act_1")) == paused
    assert db.write_sync(lambda c: turns.claim(c, paused, "act_2")) is False, "another action"
    assert db.write_sync(lambda c: turns.claim(c, paused, "act_1")) is True
    assert db.write_sync(lambda c: turns.claim(c, paused, "act_1")) is False, "claimed already"
    assert db.write_sync(lambda c: turns.find_pending(c, "act_1")) is None


def _gateway_db(home: Home) -> LedgerDatabase:
    return open_ledger_database(home, home.settings(), service="gateway",
                                sqlite_migrations=MIGRATIONS, postgres_migrations=PG_MIGRATIONS)


def test_the_gateway_prunes_at_start_up_by_its_configured_retention(
        backend: Backend, tmp_path: Path) -> None:
    home = Home.at(tmp_path / "home")
    home.init(base_port=47100)  # nothing listens: the gateway runs in-process
    home.configure({"gateway": {"agent_turn_retention_days": 1}})
    backend.configure(home)
    database = _gateway_db(home)
    database.open()
    now = time.time()
    stale = turn(database, "completed", (NOW - now) / DAY + 2)  # ended two days ago
    fresh = turn(database, "completed", (NOW - now) / DAY)  # just now
    database.close()
    with in_process("gateway", home):
        check = _gateway_db(home)
        check.open()
        try:
            deadline = time.monotonic() + 10
            while stale in remaining(check) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert remaining(check) == {fresh}
        finally:
            check.close()
    assert home.db_path("gateway").exists() == (backend.name == "sqlite")
