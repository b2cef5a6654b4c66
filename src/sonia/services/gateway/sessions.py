"""Conversation sessions at the gateway: start, touch, stop, idle expiry, a concurrency cap.

Stored in the gateway's SQLite database so a restart forgets nothing. Each
write is one transaction on the single writer: expiring idle sessions, counting
the open ones and inserting a new one happen atomically, so the cap holds under
concurrent starts.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sonia.errors import NotFound, RateLimited

MIGRATIONS = [
    """
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        mode TEXT NOT NULL CHECK (mode IN ('text', 'voice')),
        state TEXT NOT NULL CHECK (state IN ('active', 'closed', 'expired')),
        owner TEXT NOT NULL,
        created_at REAL NOT NULL,
        last_seen_at REAL NOT NULL,
        closed_at REAL
    );
    CREATE INDEX sessions_open ON sessions(state, last_seen_at);
    """,
]

STATES = ("active", "closed", "expired")


@dataclass(frozen=True)
class SessionPolicy:
    idle_seconds: float
    max_open: int


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def as_json(row: sqlite3.Row, policy: SessionPolicy) -> dict[str, Any]:
    return {
        "id": row["id"],
        "mode": row["mode"],
        "state": row["state"],
        "created_at": _iso(row["created_at"]),
        "last_seen_at": _iso(row["last_seen_at"]),
        "expires_at": _iso(row["last_seen_at"] + policy.idle_seconds)
        if row["state"] == "active" else None,
        "closed_at": _iso(row["closed_at"]),
    }


def expire_idle(conn: sqlite3.Connection, policy: SessionPolicy, now: float) -> int:
    cur = conn.execute(
        "UPDATE sessions SET state='expired', closed_at=? "
        "WHERE state='active' AND last_seen_at < ?",
        (now, now - policy.idle_seconds),
    )
    return cur.rowcount


def start(conn: sqlite3.Connection, policy: SessionPolicy, mode: str, owner: str,
          now: float) -> sqlite3.Row:
    expire_idle(conn, policy, now)
    open_count = conn.execute("SELECT count(*) FROM sessions WHERE state='active'").fetchone()[0]
    if open_count >= policy.max_open:
        raise RateLimited(f"{open_count} sessions are open, the limit is {policy.max_open}; "
                          "stop one first", extra={"retry_after": 1})
    session_id = "ses_" + uuid.uuid4().hex
    conn.execute(
        "INSERT INTO sessions (id, mode, state, owner, created_at, last_seen_at) "
        "VALUES (?, ?, 'active', ?, ?, ?)",
        (session_id, mode, owner, now, now),
    )
    return get(conn, session_id)


def get(conn: sqlite3.Connection, session_id: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM sessions WHERE id=?", (session_id,)).fetchone()
    if row is None:
        raise NotFound(f"no session {session_id!r}")
    return row


def get_fresh(conn: sqlite3.Connection, policy: SessionPolicy, session_id: str,
              now: float) -> sqlite3.Row:
    """The session, with idle expiry applied first (so a stale one reads as expired)."""
    expire_idle(conn, policy, now)
    return get(conn, session_id)


def touch(conn: sqlite3.Connection, policy: SessionPolicy, session_id: str,
          now: float) -> sqlite3.Row:
    """Mark activity on an open session; NotFound when unknown, not open or expired."""
    row = get_fresh(conn, policy, session_id, now)
    if row["state"] != "active":
        raise NotFound(f"session {session_id!r} is {row['state']}")
    conn.execute("UPDATE sessions SET last_seen_at=? WHERE id=?", (now, session_id))
    return get(conn, session_id)


def stop(conn: sqlite3.Connection, policy: SessionPolicy, session_id: str,
         now: float) -> sqlite3.Row:
    """Close a session; stopping a closed or expired one is harmless and says so."""
    row = get_fresh(conn, policy, session_id, now)
    if row["state"] == "active":
        conn.execute("UPDATE sessions SET state='closed', closed_at=? WHERE id=?",
                     (now, session_id))
    return get(conn, session_id)


def listing(conn: sqlite3.Connection, state: str | None, limit: int) -> list[sqlite3.Row]:
    if state is None:
        return conn.execute("SELECT * FROM sessions ORDER BY created_at DESC LIMIT ?",
                            (limit,)).fetchall()
    return conn.execute("SELECT * FROM sessions WHERE state=? ORDER BY created_at DESC LIMIT ?",
                        (state, limit)).fetchall()


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    rows = conn.execute("SELECT state, count(*) FROM sessions GROUP BY state").fetchall()
    found = {r[0]: r[1] for r in rows}
    return {state: int(found.get(state, 0)) for state in STATES}
