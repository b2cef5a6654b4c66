"""Conversation sessions at the gateway: start, touch, stop, idle expiry, concurrency caps
(all keys together, and each key alone).

Stored in the gateway's database (`state.Gateway.db`: its SQLite file, or the
`gateway` schema on PostgreSQL; the same SQL on both, `kit.portable`) so a
restart forgets nothing. Every rule holds in the database, so it holds with
several gateways on one PostgreSQL database as with one on SQLite:

- the caps: `start` counts the open sessions and inserts the new one under
  `serialise(conn, LOCK)` (on SQLite the write transaction already excludes
  every other writer; on PostgreSQL an advisory lock held to the commit), so
  two starts on two replicas never both take the last slot;
- idle expiry is one conditional UPDATE (`state='active' AND last_seen_at < ?`):
  each session expires once, and a touch committed first keeps it open;
- a touch is conditional on `state='active'` too, so a session another replica
  closed or expired is never revived nor reported open.

A session belongs to the API key that started it (`owner` is the key's id);
another key sees it as unknown (NOT_FOUND), never as forbidden, so session ids
reveal nothing. A chat without a session id goes to the key's *default*
session, started on first use and started again once it closed or expired, so
one-off chats do not each hold a session open against the cap; two replicas
starting it at once start one (it is looked for again under the lock).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from sonia.errors import NotFound, RateLimited
from sonia.kit.portable import Conn, serialise

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

PG_MIGRATIONS: list[str] = [
    """
    CREATE TABLE sessions (
        id text PRIMARY KEY,
        mode text NOT NULL CHECK (mode IN ('text', 'voice')),
        state text NOT NULL CHECK (state IN ('active', 'closed', 'expired')),
        owner text NOT NULL,
        created_at double precision NOT NULL,
        last_seen_at double precision NOT NULL,
        closed_at double precision
    );
    CREATE INDEX sessions_open ON sessions (state, last_seen_at);
    CREATE INDEX sessions_owner ON sessions (owner, created_at);
    CREATE TABLE default_sessions (
        owner text PRIMARY KEY,
        session_id text NOT NULL REFERENCES sessions (id)
    );
    """,
]
"""The same tables in the gateway's PostgreSQL schema (state.PG_MIGRATIONS); never edit
or reorder."""

LOCK = "sonia-gateway-sessions"
"""Held (`serialise`) while a start counts the open sessions and inserts one. Taken
before the transaction writes any row: one that held a row lock while waiting for it
could deadlock with the lock's holder, whose expiry may need that row."""

STATES = ("active", "closed", "expired")
MODES = ("text", "voice")
_COLUMNS = "id, mode, state, owner, created_at, last_seen_at, closed_at"


@dataclass(frozen=True)
class SessionPolicy:
    idle_seconds: float
    max_open: int
    max_per_key: int
    """No key holds more open sessions than this, so one key cannot take every slot
    of `max_open` and deny all others (issue 10, finding 6)."""


@dataclass(frozen=True)
class Session:
    """One row of `sessions`, the same from either backend."""

    id: str
    mode: str
    state: str
    owner: str
    created_at: float
    last_seen_at: float
    closed_at: float | None

    @classmethod
    def of(cls, row: Any) -> Session:
        return cls(str(row[0]), str(row[1]), str(row[2]), str(row[3]), float(row[4]),
                   float(row[5]), None if row[6] is None else float(row[6]))


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def as_json(session: Session, policy: SessionPolicy) -> dict[str, Any]:
    return {
        "id": session.id,
        "mode": session.mode,
        "state": session.state,
        "created_at": _iso(session.created_at),
        "last_seen_at": _iso(session.last_seen_at),
        "expires_at": _iso(session.last_seen_at + policy.idle_seconds)
        if session.state == "active" else None,
        "closed_at": _iso(session.closed_at),
    }


def expire_idle(conn: Conn, policy: SessionPolicy, now: float) -> list[str]:
    """Expire every active session idle for longer than the policy allows; their ids."""
    rows = conn.execute(
        "UPDATE sessions SET state='expired', closed_at=? "
        "WHERE state='active' AND last_seen_at < ? RETURNING id",
        (now, now - policy.idle_seconds),
    ).fetchall()
    return [r[0] for r in rows]


def start(conn: Conn, policy: SessionPolicy, mode: str, owner: str, now: float) -> Session:
    serialise(conn, LOCK)  # first: the counts below and the insert are one step for all
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


def get(conn: Conn, session_id: str, owner: str | None = None) -> Session:
    """The session; NotFound when unknown or (with `owner`) someone else's."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM sessions WHERE id=?", (session_id,)).fetchone()
    if row is None or (owner is not None and row[3] != owner):
        raise NotFound(f"no session {session_id!r}")
    return Session.of(row)


def get_fresh(conn: Conn, policy: SessionPolicy, session_id: str,
              now: float, owner: str | None = None) -> Session:
    """The session, with idle expiry applied first (so a stale one reads as expired)."""
    expire_idle(conn, policy, now)
    return get(conn, session_id, owner)


def _touch(conn: Conn, policy: SessionPolicy, session: Session, now: float) -> Session | None:
    """`session` (read as open) marked active at `now`; None when it is no longer open
    (another replica closed it since the read, or it idled out)."""
    if now - session.last_seen_at < touch_granularity(policy):
        return session  # recent enough: no write, so no fsync on every chat turn
    touched = conn.execute(
        f"UPDATE sessions SET last_seen_at=? WHERE id=? AND state='active'"
        f" AND last_seen_at >= ? RETURNING {_COLUMNS}",
        (now, session.id, now - policy.idle_seconds)).fetchone()
    return None if touched is None else Session.of(touched)


def touch(conn: Conn, policy: SessionPolicy, session_id: str,
          now: float, owner: str | None = None) -> Session:
    """Mark activity on an open session; NotFound when unknown, not open or expired."""
    row = get_fresh(conn, policy, session_id, now, owner)
    touched = _touch(conn, policy, row, now) if row.state == "active" else None
    if touched is None:
        raise NotFound(f"session {session_id!r} is {get(conn, session_id).state}")
    return touched


def touch_granularity(policy: SessionPolicy) -> float:
    """How stale `last_seen_at` may be before a touch rewrites it: a second at most,
    a small fraction of the idle timeout at least, so expiry stays accurate."""
    return min(1.0, policy.idle_seconds / 20)


def stop(conn: Conn, policy: SessionPolicy, session_id: str,
         now: float, owner: str | None = None) -> Session:
    """Close a session; stopping a closed or expired one is harmless and says so."""
    get_fresh(conn, policy, session_id, now, owner)
    conn.execute("UPDATE sessions SET state='closed', closed_at=? WHERE id=? AND state='active'",
                 (now, session_id))
    return get(conn, session_id)


def _default_of(conn: Conn, policy: SessionPolicy, owner: str, now: float) -> Session | None:
    """The owner's default session if it is open and not idle past the policy."""
    found = conn.execute(
        f"SELECT {', '.join('s.' + c for c in _COLUMNS.split(', '))} FROM default_sessions d"
        " JOIN sessions s ON s.id = d.session_id"
        " WHERE d.owner=? AND s.state='active' AND s.last_seen_at >= ?",
        (owner, now - policy.idle_seconds)).fetchone()
    return None if found is None else Session.of(found)


def default_session(conn: Conn, policy: SessionPolicy, owner: str, now: float) -> Session:
    """The owner's default text session, touched; started (within the cap) when it is
    missing, closed or expired.

    The common case (it is open) writes at most its own row and takes no lock. Else,
    under `LOCK`, taken before anything else is written (see `LOCK`), it is looked
    for again, since another replica may have started it meanwhile (each statement
    of a PostgreSQL write transaction sees what committed before the statement)."""
    found = _default_of(conn, policy, owner, now)
    touched = None if found is None else _touch(conn, policy, found, now)
    if touched is not None:
        return touched
    serialise(conn, LOCK)
    expire_idle(conn, policy, now)
    found = _default_of(conn, policy, owner, now)
    touched = None if found is None else _touch(conn, policy, found, now)
    if touched is not None:
        return touched
    row = start(conn, policy, "text", owner, now)
    conn.execute("INSERT INTO default_sessions (owner, session_id) VALUES (?, ?) "
                 "ON CONFLICT (owner) DO UPDATE SET session_id=excluded.session_id",
                 (owner, row.id))
    return row


def listing(conn: Conn, state: str | None, limit: int,
            owner: str | None = None) -> list[Session]:
    clauses, args = [], []
    if state is not None:
        clauses.append("state=?")
        args.append(state)
    if owner is not None:
        clauses.append("owner=?")
        args.append(owner)
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    rows = conn.execute(f"SELECT {_COLUMNS} FROM sessions {where}"
                        " ORDER BY created_at DESC LIMIT ?", (*args, limit)).fetchall()
    return [Session.of(r) for r in rows]


def counts(conn: Conn, owner: str | None = None) -> dict[str, int]:
    if owner is None:
        rows = conn.execute("SELECT state, count(*) FROM sessions GROUP BY state").fetchall()
    else:
        rows = conn.execute("SELECT state, count(*) FROM sessions WHERE owner=? GROUP BY state",
                            (owner,)).fetchall()
    found = {r[0]: r[1] for r in rows}
    return {state: int(found.get(state, 0)) for state in STATES}
