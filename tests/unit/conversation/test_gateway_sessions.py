"""The gateway's session store: owners, the default session, expiry, the cap; on a real
SQLite file and on a real PostgreSQL database (the same SQL, `kit.portable`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest
from backends import Backend

from sonia.errors import NotFound, RateLimited
from sonia.kit.portable import Conn, PgConnection
from sonia.services.gateway import sessions
from sonia.services.gateway.sessions import SessionPolicy
from sonia.services.gateway.state import MIGRATIONS, PG_MIGRATIONS

POLICY = SessionPolicy(idle_seconds=100.0, max_open=3, max_per_key=3)


@pytest.fixture
def conn(backend: Backend) -> Iterator[Conn]:
    connection = backend.connect("gateway", MIGRATIONS, PG_MIGRATIONS)
    try:
        yield connection
    finally:
        backend.close(connection)


def _row_version(conn: Conn, session_id: str) -> object:
    """What changes with every write of the row: SQLite's count of changes on the
    connection, PostgreSQL's row version (`xmin`)."""
    if isinstance(conn, PgConnection):
        return conn.execute("SELECT xmin::text FROM sessions WHERE id = ?",
                            (session_id,)).fetchone()[0]
    assert isinstance(conn, sqlite3.Connection)
    return conn.total_changes


def test_a_session_is_invisible_to_another_owner(conn: Conn) -> None:
    row = sessions.start(conn, POLICY, "text", "alice", now=0.0)
    assert sessions.get(conn, row.id, "alice").id == row.id
    with pytest.raises(NotFound):
        sessions.get(conn, row.id, "bob")
    with pytest.raises(NotFound):
        sessions.stop(conn, POLICY, row.id, 1.0, "bob")
    assert [r.id for r in sessions.listing(conn, None, 10, "bob")] == []


def test_the_default_session_is_reused_until_it_closes(conn: Conn) -> None:
    first = sessions.default_session(conn, POLICY, "alice", now=0.0)
    assert sessions.default_session(conn, POLICY, "alice", now=50.0).id == first.id
    assert sessions.default_session(conn, POLICY, "bob", now=50.0).id != first.id
    sessions.stop(conn, POLICY, first.id, 60.0)
    assert sessions.default_session(conn, POLICY, "alice", now=61.0).id != first.id


def test_the_default_session_expires_like_any_other(conn: Conn) -> None:
    first = sessions.default_session(conn, POLICY, "alice", now=0.0)
    later = sessions.default_session(conn, POLICY, "alice", now=500.0)
    assert later.id != first.id
    assert sessions.get(conn, first.id).state == "expired"


def test_a_touch_within_the_granularity_writes_nothing(conn: Conn) -> None:
    row = sessions.start(conn, POLICY, "text", "alice", now=10.0)
    version = _row_version(conn, row.id)
    assert sessions.touch(conn, POLICY, row.id, 10.5).last_seen_at == 10.0
    assert _row_version(conn, row.id) == version
    assert sessions.touch(conn, POLICY, row.id, 12.0).last_seen_at == 12.0
    assert _row_version(conn, row.id) != version


def test_a_closed_session_is_not_touched_back_open(conn: Conn) -> None:
    row = sessions.start(conn, POLICY, "text", "alice", now=0.0)
    sessions.stop(conn, POLICY, row.id, 5.0)
    with pytest.raises(NotFound, match="closed"):
        sessions.touch(conn, POLICY, row.id, 6.0)
    assert sessions.get(conn, row.id).state == "closed"


def test_expiry_returns_what_it_expired(conn: Conn) -> None:
    old = sessions.start(conn, POLICY, "text", "alice", now=0.0)
    sessions.start(conn, POLICY, "voice", "alice", now=90.0)
    assert sessions.expire_idle(conn, POLICY, now=150.0) == [old.id]
    assert sessions.counts(conn, "alice") == {"active": 1, "closed": 0, "expired": 1}


def test_the_cap_counts_every_owner(conn: Conn) -> None:
    for owner in ("a", "b", "c"):
        sessions.start(conn, POLICY, "text", owner, now=0.0)
    with pytest.raises(RateLimited):
        sessions.default_session(conn, POLICY, "d", now=1.0)


def test_a_session_reads_the_same_from_either_backend(conn: Conn) -> None:
    row = sessions.start(conn, POLICY, "voice", "alice", now=1_700_000_000.25)
    shown = sessions.as_json(sessions.get(conn, row.id), POLICY)
    assert shown == {"id": row.id, "mode": "voice", "state": "active",
                     "created_at": "2023-11-14T22:13:20.250Z",
                     "last_seen_at": "2023-11-14T22:13:20.250Z",
                     "expires_at": "2023-11-14T22:15:00.250Z", "closed_at": None}
