"""OpenClaw's ledger of consumed grants: what makes a grant single-use across restarts.

OpenClaw keeps this table in its own database (add `MIGRATIONS` to its SQLite
migration list, `PG_MIGRATIONS` to its PostgreSQL schema's) and, for every
execute request, runs in this order: `GrantVerifier.verify` -> `consume` ->
execute. `consume` is one `INSERT ... ON CONFLICT DO NOTHING` against PRIMARY
KEY (jti) and UNIQUE (action_id), the same SQL on both backends: the database's
unique index decides, so of any number of concurrent attempts (threads,
processes, a restarted service, replicas of OpenClaw on one PostgreSQL) exactly
one inserts the row and sees True; every other sees False and must answer
INVALID_APPROVAL. The row is committed (SQLite: WAL, synchronous=FULL;
PostgreSQL: synchronous_commit = on) before the tool runs, so a crash
mid-execution can never let the grant run a second time.

The UNIQUE action_id makes "an action runs exactly once" hold even if EVA were
ever to mint two grants for one action.

Rows may be pruned once their grant can no longer verify (`prune`): after
`exp` plus the verifier's skew, with a margin.
"""

from __future__ import annotations

import time

from sonia.kit.portable import Conn

__all__ = ["MIGRATIONS", "PG_MIGRATIONS", "PRUNE_MARGIN_SECONDS", "consume", "is_consumed",
           "prune"]

MIGRATIONS: list[str] = [
    """
    CREATE TABLE consumed_grants (
        jti TEXT PRIMARY KEY,
        action_id TEXT NOT NULL UNIQUE,
        exp INTEGER NOT NULL,
        consumed_at REAL NOT NULL
    );
    CREATE INDEX consumed_grants_exp ON consumed_grants (exp);
    """,
]
"""Schema of the ledger; append new steps, never edit old ones."""

PG_MIGRATIONS: list[str] = [
    """
    CREATE TABLE consumed_grants (
        jti text PRIMARY KEY,
        action_id text NOT NULL UNIQUE,
        exp bigint NOT NULL,
        consumed_at double precision NOT NULL
    );
    CREATE INDEX consumed_grants_exp ON consumed_grants (exp);
    """,
]
"""The same schema on PostgreSQL; append new steps, never edit old ones."""

PRUNE_MARGIN_SECONDS = 3600
"""Rows stay an hour past expiry, far beyond any verifier skew."""


def consume(
    conn: Conn, jti: str, action_id: str, exp: int, *, now: float | None = None
) -> bool:
    """Record `jti` (and its action) as used; False when either was already used.

    Atomic on its own (one INSERT) and inside a caller's transaction alike; a refusal
    is a row not inserted, not an error, so the caller's transaction stays usable.
    """
    return conn.execute(
        "INSERT INTO consumed_grants (jti, action_id, exp, consumed_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT DO NOTHING",
        (jti, action_id, int(exp), time.time() if now is None else now),
    ).rowcount == 1


def is_consumed(conn: Conn, jti: str) -> bool:
    """True when `jti` has been consumed (for diagnostics; `consume` is the gate)."""
    row = conn.execute("SELECT 1 FROM consumed_grants WHERE jti = ?", (jti,)).fetchone()
    return row is not None


def prune(conn: Conn, *, now: float | None = None) -> int:
    """Delete rows whose grants expired more than PRUNE_MARGIN_SECONDS ago; returns how many."""
    cutoff = (time.time() if now is None else now) - PRUNE_MARGIN_SECONDS
    return conn.execute("DELETE FROM consumed_grants WHERE exp < ?", (cutoff,)).rowcount
