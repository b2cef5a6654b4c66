"""EVA's audit log: every decision as an append-only, hash-chained record.

Each record is `{seq, ts, kind, action_id, actor, detail}` plus `prev_hash` and

    hash = sha256_hex(prev_hash + canonical_json({seq, ts, kind, action_id, actor, detail}))

with `prev_hash` of the first record 64 zeros. `verify` walks the chain in seq
order and finds the first record that was edited (its hash no longer matches),
deleted (a gap in seq, a broken link) or moved (seq is inside the hash, and the
links break).

Deleting the *last* records leaves a shorter chain that is still consistent, so
the log also keeps a one-row `audit_head` table (last seq and hash), written in
the same transaction as every append: a chain that ends before its head is
truncated. Someone able to rewrite the database file can of course rewrite the
head too; to catch that, keep the head elsewhere (`VerifyResult.head_hash` is
printed by `sonia audit verify` and belongs in backup manifests) and pass it back
as `expected_head`. Triggers refuse UPDATE and DELETE on records so that no
code path edits history by accident.

Never put secrets (grant tokens, keys) into `detail`: record the grant's `jti`.

The same functions run on SQLite and on PostgreSQL (`kit.portable`); only the
schema differs (`MIGRATIONS`, `PG_MIGRATIONS`). The chain must be appended one
record at a time: `append` reads the head and writes the next record under
`serialise(conn, APPEND_LOCK)`, an advisory transaction lock on PostgreSQL, so
two EVA processes on one database never both extend the same head (and `seq`,
the primary key, refuses a second record with one number if anything ever did).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sonia.actions.plan import canonical_json
from sonia.kit.db import connect
from sonia.kit.portable import Conn, in_transaction, serialise

__all__ = [
    "APPEND_LOCK",
    "GENESIS_HASH",
    "KINDS",
    "MIGRATIONS",
    "PG_MIGRATIONS",
    "AuditRecord",
    "VerifyResult",
    "append",
    "head",
    "latest_records",
    "read_records",
    "record_hash",
    "verify",
]

GENESIS_HASH = "0" * 64
KINDS = ("allowed", "pending", "approved", "denied", "executed", "rejected")

MIGRATIONS: list[str] = [
    f"""
    CREATE TABLE audit_log (
        seq INTEGER PRIMARY KEY,
        ts TEXT NOT NULL,
        kind TEXT NOT NULL,
        action_id TEXT,
        actor TEXT NOT NULL,
        detail TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE INDEX audit_log_action ON audit_log (action_id);
    CREATE TABLE audit_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seq INTEGER NOT NULL,
        hash TEXT NOT NULL
    );
    INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '{GENESIS_HASH}');
    CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    BEGIN
        SELECT RAISE(ABORT, 'audit records are append-only');
    END;
    CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    BEGIN
        SELECT RAISE(ABORT, 'audit records are append-only');
    END;
    """,
]
"""Schema of the audit log, for EVA's database; append new steps, never edit old ones."""

PG_MIGRATIONS: list[str] = [
    f"""
    CREATE TABLE audit_log (
        seq bigint PRIMARY KEY,
        ts text NOT NULL,
        kind text NOT NULL,
        action_id text,
        actor text NOT NULL,
        detail text NOT NULL,
        prev_hash text NOT NULL,
        hash text NOT NULL
    );
    CREATE INDEX audit_log_action ON audit_log (action_id);
    CREATE TABLE audit_head (
        id integer PRIMARY KEY CHECK (id = 1),
        seq bigint NOT NULL,
        hash text NOT NULL
    );
    INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '{GENESIS_HASH}');
    CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'audit records are append-only';
    END
    $$;
    CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
        FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
    CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
        FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
    """,
]
"""The same schema on PostgreSQL (EVA's schema); append new steps, never edit old ones."""

APPEND_LOCK = "sonia-audit-append"
"""The advisory lock every append holds (PostgreSQL): one chain, one writer at a time."""


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    ts: str
    kind: str
    action_id: str | None
    actor: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class VerifyResult:
    """What `verify` found: ok, how many records, the first bad one and why."""

    ok: bool
    count: int
    first_bad_seq: int | None = None
    reason: str = ""
    head_hash: str = GENESIS_HASH


def record_hash(prev_hash: str, seq: int, ts: str, kind: str, action_id: str | None,
                actor: str, detail: dict[str, Any]) -> str:
    """The chained hash of one record."""
    body = canonical_json({"seq": seq, "ts": ts, "kind": kind, "action_id": action_id,
                           "actor": actor, "detail": detail})
    return hashlib.sha256(prev_hash.encode("ascii") + body).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def append(
    conn: Conn,
    kind: str,
    *,
    actor: str,
    action_id: str | None = None,
    detail: dict[str, Any] | None = None,
    ts: str | None = None,
) -> AuditRecord:
    """Append one record and move the head, in one transaction (the caller's, if open)."""
    if kind not in KINDS:
        raise ValueError(f"audit kind {kind!r} is not one of {', '.join(KINDS)}")
    body = dict(detail or {})
    stamp = ts or _now()

    def _write(c: Conn) -> AuditRecord:
        serialise(c, APPEND_LOCK)
        last_seq, last_hash = c.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
        seq = int(last_seq) + 1
        digest = record_hash(last_hash, seq, stamp, kind, action_id, actor, body)
        c.execute(
            "INSERT INTO audit_log (seq, ts, kind, action_id, actor, detail, prev_hash, hash)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, stamp, kind, action_id, actor, canonical_json(body).decode(), last_hash,
             digest),
        )
        c.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (seq, digest))
        return AuditRecord(seq, stamp, kind, action_id, actor, body, last_hash, digest)

    return in_transaction(conn, _write)


def head(conn: Conn) -> tuple[int, str]:
    """(seq, hash) of the last record as the head table says."""
    row = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
    return int(row[0]), str(row[1])


def read_records(
    conn: Conn, *, action_id: str | None = None, after_seq: int = 0,
    limit: int = 100,
) -> list[AuditRecord]:
    """Records in seq order, optionally of one action, for listing."""
    sql = ("SELECT seq, ts, kind, action_id, actor, detail, prev_hash, hash FROM audit_log"
           " WHERE seq > ?")
    params: list[Any] = [after_seq]
    if action_id is not None:
        sql += " AND action_id = ?"
        params.append(action_id)
    sql += " ORDER BY seq LIMIT ?"
    params.append(limit)
    return [AuditRecord(int(r[0]), r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7])
            for r in conn.execute(sql, params)]


def latest_records(conn: Conn, *, before_seq: int | None = None,
                   limit: int = 50) -> list[AuditRecord]:
    """Records newest first (those before `before_seq`), for paging back through the log."""
    sql = ("SELECT seq, ts, kind, action_id, actor, detail, prev_hash, hash FROM audit_log"
           + ("" if before_seq is None else " WHERE seq < ?") + " ORDER BY seq DESC LIMIT ?")
    params = [limit] if before_seq is None else [before_seq, limit]
    return [AuditRecord(int(r[0]), r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7])
            for r in conn.execute(sql, params)]


def _walk(conn: Conn, expected_head: str | None, since: VerifyResult | None = None
          ) -> VerifyResult:
    previous = GENESIS_HASH
    count = 0
    if since is not None and since.ok and since.count:
        anchor = conn.execute("SELECT hash FROM audit_log WHERE seq = ?",
                              (since.count,)).fetchone()
        if anchor is None or str(anchor[0]) != since.head_hash:
            return _walk(conn, expected_head)  # the anchor itself moved: walk it all
        previous, count = since.head_hash, since.count
    rows = conn.execute(
        "SELECT seq, ts, kind, action_id, actor, detail, prev_hash, hash FROM audit_log"
        " WHERE seq > ? ORDER BY seq", (count,)
    )
    for seq, ts, kind, action_id, actor, detail, prev_hash, stored in rows:
        expected_seq = count + 1
        if seq != expected_seq:
            return VerifyResult(False, count, expected_seq,
                                f"record {expected_seq} is missing (next is {seq})", previous)
        if prev_hash != previous:
            return VerifyResult(False, count, seq,
                                f"record {seq} does not link to record {seq - 1}", previous)
        body: Any = None
        try:
            body = json.loads(detail)
            digest = record_hash(prev_hash, seq, ts, kind, action_id, actor, body)
        except (ValueError, TypeError):
            digest = ""
        if kind not in KINDS or not isinstance(body, dict) or digest != stored:
            return VerifyResult(False, count, seq,
                                f"record {seq} was altered (its hash does not match)", previous)
        previous = stored
        count += 1
    row = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
    if row is None:
        return VerifyResult(False, count, None, "the audit head is missing", previous)
    head_seq, head_hash = int(row[0]), str(row[1])
    if head_seq != count or head_hash != previous:
        return VerifyResult(
            False, count, count + 1 if head_seq > count else head_seq,
            f"the log ends at record {count} but its head says {head_seq}: records were "
            f"removed from the end or the head was altered",
            previous,
        )
    if expected_head is not None and expected_head != previous:
        return VerifyResult(False, count, None,
                            "the head differs from the expected (anchored) head", previous)
    return VerifyResult(True, count, None, "", previous)


def verify(
    source: Conn | Path | str, *, expected_head: str | None = None,
    since: VerifyResult | None = None,
) -> VerifyResult:
    """Check the whole chain; a path is opened read-only. Never raises for a bad log.

    `since`, an intact result of an earlier check of this log, walks only the records
    after it, once the record it ended at still holds the hash it had: cheap while the
    log grows, and blind to an edit before that record, which only a whole walk finds
    (`sonia audit verify` always walks it all; EVA's page view at least every minute).

    On PostgreSQL pass a connection inside a REPEATABLE READ transaction (a read of
    `kit.pg`), so that the records and the head are read at one moment."""
    if not isinstance(source, Path | str):
        return _walk(source, expected_head, since)
    path = Path(source)
    if not path.is_file():
        return VerifyResult(False, 0, None, f"{path} does not exist")
    conn = connect(path, readonly=True)
    try:
        return _walk(conn, expected_head)
    except sqlite3.DatabaseError as exc:
        return VerifyResult(False, 0, None, f"the audit log cannot be read: {exc}")
    finally:
        conn.close()
