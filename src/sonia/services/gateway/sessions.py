"""Conversation sessions at the gateway: start, touch, stop, idle expiry, concurrency caps
(all keys together, and each key alone).

Stored in the gateway's SQLite database so a restart forgets nothing. Each
write is one transaction on the single writer: expiring idle sessions, counting
the open ones and inserting a new one happen atomically, so the cap holds under
concurrent starts.

A session belongs to the API key that started it (`owner` is the key's id);
another key sees it as unknown (NOT_FOUND), never as forbidden, so session ids
reveal nothing. A chat without a session id goes to the key's *default*
session, started on first use and started again once it closed or expired, so
one-off chats do not each hold a session open against the cap.
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

DEFAULT_SESSIONS_MIGRATION = """
    CREATE TABLE default_sessions (
        owner TEXT PRIMARY KEY,
        session_id TEXT NOT NULL REFERENCES sessions(id)
    );
    CREATE INDEX sessions_owner ON sessions(owner, created_at);
"""
"""Appended to the gateway's MIGRATIONS (state.py): each key's default chat session."""

STATES = ("active", "closed", "expired")
MODES = ("text", "voice")


@dataclass(frozen=True)
class SessionPolicy:
    idle_seconds: float
    max_open: int
    max_per_key: int
    """No key holds more open sessions than this, so one key cannot take every slot
    of `max_open` and deny all others (issue 10, finding 6)."""


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


def expire_idle(conn: sqlite3.Connection, policy: SessionPolicy, now: float) -> list[str]:
    """Expire every active session idle for longer than the policy allows; their ids."""
    rows = conn.execute(
        "UPDATE sessions SET state='expired', closed_at=? "
        "WHERE state='active' AND last_seen_at < ? RETURNING id",
        (now, now - policy.idle_seconds),
    ).fetchall()
    return [r[0] for r in rows]


def start(conn: sqlite3.Connection, policy: SessionPolicy, mode: str, owner: str,
          now: float) -> sqlite3.Row:
    expire_idle(conn, policy, now)
    mine = conn.execute("SELECT count(*) FROM sessions WHERE state='active' AND owner=?",
                        (owner,)).fetchone()[0]
    if mine >= policy.max_per_key:
        raise RateLimited(f"this key has {mine} sessions open, the limit per key is "
                          f"{policy.max_per_key}; stop one first", extra={"retry_after": 1})
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


def get(conn: sqlite3.Connection, session_id: str, owner: str | None = None) -> sqlite3.Row:
    """The session; NotFound when unknown or (with `owner`) someone else's."""
    row: sqlite3.Row | None = conn.execute("SELECT * FROM sessions WHERE id=?",
                                           (session_id,)).fetchone()
    if row is None or (owner is not None and row["owner"] != owner):
        raise NotFound(f"no session {session_id!r}")
    return row


def get_fresh(conn: sqlite3.Connection, policy: SessionPolicy, session_id: str,
              now: float, owner: str | None = None) -> sqlite3.Row:
    """The session, with idle expiry applied first (so a stale one reads as expired)."""
    expire_idle(conn, policy, now)
    return get(conn, session_id, owner)


def touch(conn: sqlite3.Connection, policy: SessionPolicy, session_id: str,
          now: float, owner: str | None = None) -> sqlite3.Row:
    """Mark activity on an open session; NotFound when unknown, not open or expired."""
    row = get_fresh(conn, policy, session_id, now, owner)
    if row["state"] != "active":
        raise NotFound(f"session {session_id!r} is {row['state']}")
    if now - row["last_seen_at"] < touch_granularity(policy):
        return row  # recent enough: no write, so no fsync on every chat turn
    conn.execute("UPDATE sessions SET last_seen_at=? WHERE id=?", (now, session_id))
    return get(conn, session_id)


def touch_granularity(policy: SessionPolicy) -> float:
    """How stale `last_seen_at` may be before a touch rewrites it: a second at most,
    a small fraction of the idle timeout at least, so expiry stays accurate."""
    return min(1.0, policy.idle_seconds / 20)


def stop(conn: sqlite3.Connection, policy: SessionPolicy, session_id: str,
         now: float, owner: str | None = None) -> sqlite3.Row:
    """Close a session; stopping a closed or expired one is harmless and says so."""
    row = get_fresh(conn, policy, session_id, now, owner)
    if row["state"] == "active":
        conn.execute("UPDATE sessions SET state='closed', closed_at=? WHERE id=?",
                     (now, session_id))
    return get(conn, session_id)


def default_session(conn: sqlite3.Connection, policy: SessionPolicy, owner: str,
                    now: float) -> sqlite3.Row:
    """The owner's default text session, touched; started (within the cap) when it is
    missing, closed or expired."""
    expire_idle(conn, policy, now)
    found = conn.execute(
        "SELECT s.* FROM default_sessions d JOIN sessions s ON s.id = d.session_id "
        "WHERE d.owner=? AND s.state='active'", (owner,)).fetchone()
    if found is not None:
        return touch(conn, policy, found["id"], now)
    row = start(conn, policy, "text", owner, now)
    conn.execute("INSERT INTO default_sessions (owner, session_id) VALUES (?, ?) "
                 "ON CONFLICT (owner) DO UPDATE SET session_id=excluded.session_id",
                 (owner, row["id"]))
    return row


def listing(conn: sqlite3.Connection, state: str | None, limit: int,
            owner: str | None = None) -> list[sqlite3.Row]:
    clauses, args = [], []
    if state is not None:
        clauses.append("state=?")
        args.append(state)
    if owner is not None:
        clauses.append("owner=?")
        args.append(owner)
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    return conn.execute(f"SELECT * FROM sessions {where} ORDER BY created_at DESC LIMIT ?",
                        (*args, limit)).fetchall()


def counts(conn: sqlite3.Connection, owner: str | None = None) -> dict[str, int]:
    if owner is None:
        rows = conn.execute("SELECT state, count(*) FROM sessions GROUP BY state").fetchall()
    else:
        rows = conn.execute("SELECT state, count(*) FROM sessions WHERE owner=? GROUP BY state",
                            (owner,)).fetchall()
    found = {r[0]: r[1] for r in rows}
    return {state: int(found.get(state, 0)) for state in STATES}
