"""Turn records do not grow for ever: ended turns go after the retention period.

A paused turn is an approver's open question, so it stays through its
approval's deadline as well; a turn that changed recently stays whatever its
status. Real SQLite, the gateway's own migrations.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sonia.home import Home
from sonia.kit.db import Database
from sonia.services.gateway import turns
from sonia.services.gateway.state import MIGRATIONS
from sonia.testing import in_process

DAY = 86_400.0
NOW = 1_900_000_000.0


@pytest.fixture()
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "gateway.db", MIGRATIONS)
    database.open()
    yield database
    database.close()


def turn(db: Database, status: str, age_days: float) -> str:
    record = turns.TurnRecord(id=turns.new_turn_id(), key_id="k1", session_id="s1",
                              message="hi", profile=None, messages=[], recalled=[],
                              status=status)
    def save(conn: sqlite3.Connection) -> None:
        turns.save(conn, record)
        conn.execute("UPDATE agent_turns SET updated_at = ? WHERE id = ?",
                     (NOW - age_days * DAY, record.id))
    db.write_sync(save)
    return record.id


def remaining(db: Database) -> set[str]:
    return db.write_sync(lambda c: {row[0] for row in c.execute("SELECT id FROM agent_turns")})


def test_ended_turns_past_retention_are_deleted_and_recent_ones_kept(db: Database) -> None:
    old_done, old_failed = turn(db, "completed", 31), turn(db, "failed", 40)
    new_done = turn(db, "completed", 29)
    deleted = db.write_sync(lambda c: turns.prune(c, ended_before=NOW - 30 * DAY,
                                                  paused_before=NOW - 31 * DAY))
    assert deleted == 2
    assert remaining(db) == {new_done}
    assert old_done not in remaining(db) and old_failed not in remaining(db)


def test_a_paused_turn_outlives_retention_by_its_approval_deadline(db: Database) -> None:
    paused_recent = turn(db, "pending_approval", 30.5)
    paused_old = turn(db, "pending_approval", 32)
    db.write_sync(lambda c: turns.prune(c, ended_before=NOW - 30 * DAY,
                                        paused_before=NOW - 31 * DAY))
    assert remaining(db) == {paused_recent}
    assert paused_old not in remaining(db)


def test_the_gateway_prunes_at_start_up_by_its_configured_retention(tmp_path: Path) -> None:
    home = Home.at(tmp_path / "home")
    home.init(base_port=47100)  # nothing listens: the gateway runs in-process
    home.configure({"gateway": {"agent_turn_retention_days": 1}})
    database = Database(home.db_path("gateway"), MIGRATIONS)
    database.open()
    now = time.time()
    stale = turn(database, "completed", (NOW - now) / DAY + 2)  # ended two days ago
    fresh = turn(database, "completed", (NOW - now) / DAY)  # just now
    database.close()
    with in_process("gateway", home):
        check = Database(home.db_path("gateway"), MIGRATIONS)
        check.open()
        try:
            deadline = time.monotonic() + 10
            while stale in remaining(check) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert remaining(check) == {fresh}
        finally:
            check.close()
