"""The gateway's session store: owners, the default session, expiry, the cap."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from sonia.errors import NotFound, RateLimited
from sonia.kit.db import connect, migrate
from sonia.services.gateway import sessions
from sonia.services.gateway.sessions import SessionPolicy
from sonia.services.gateway.state import MIGRATIONS

POLICY = SessionPolicy(idle_seconds=100.0, max_open=3, max_per_key=3)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = connect(tmp_path / "gateway.db")
    migrate(connection, MIGRATIONS)
    yield connection
    connection.close()


def test_a_session_is_invisible_to_another_owner(conn: sqlite3.Connection) -> None:
    row = sessions.start(conn, POLICY, "text", "alice", now=0.0)
    assert sessions.get(conn, row["id"], "alice")["id"] == row["id"]
    with pytest.raises(NotFound):
        sessions.get(conn, row["id"], "bob")
    with pytest.raises(NotFound):
        sessions.stop(conn, POLICY, row["id"], 1.0, "bob")
    assert [r["id"] for r in sessions.listing(conn, None, 10, "bob")] == []


def test_the_default_session_is_reused_until_it_closes(conn: sqlite3.Connection) -> None:
    first = sessions.default_session(conn, POLICY, "alice", now=0.0)
    assert sessions.default_session(conn, POLICY, "alice", now=50.0)["id"] == first["id"]
    assert sessions.default_session(conn, POLICY, "bob", now=50.0)["id"] != first["id"]
    sessions.stop(conn, POLICY, first["id"], 60.0)
    assert sessions.default_session(conn, POLICY, "alice", now=61.0)["id"] != first["id"]


def test_the_default_session_expires_like_any_other(conn: sqlite3.Connection) -> None:
    first = sessions.default_session(conn, POLICY, "alice", now=0.0)
    later = sessions.default_session(conn, POLICY, "alice", now=500.0)
    assert later["id"] != first["id"]
    assert sessions.get(conn, first["id"])["state"] == "expired"


def test_a_touch_within_the_granularity_writes_nothing(conn: sqlite3.Connection) -> None:
    row = sessions.start(conn, POLICY, "text", "alice", now=10.0)
    changes = conn.total_changes
    assert sessions.touch(conn, POLICY, row["id"], 10.5)["last_seen_at"] == 10.0
    assert conn.total_changes == changes
    assert sessions.touch(conn, POLICY, row["id"], 12.0)["last_seen_at"] == 12.0


def test_expiry_returns_what_it_expired(conn: sqlite3.Connection) -> None:
    old = sessions.start(conn, POLICY, "text", "alice", now=0.0)
    sessions.start(conn, POLICY, "voice", "alice", now=90.0)
    assert sessions.expire_idle(conn, POLICY, now=150.0) == [old["id"]]
    assert sessions.counts(conn, "alice") == {"active": 1, "closed": 0, "expired": 1}


def test_the_cap_counts_every_owner(conn: sqlite3.Connection) -> None:
    for owner in ("a", "b", "c"):
        sessions.start(conn, POLICY, "text", owner, now=0.0)
    with pytest.raises(RateLimited):
        sessions.default_session(conn, POLICY, "d", now=1.0)
