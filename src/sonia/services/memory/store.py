"""The memory ledger: memories and conversation turns in one SQLite database.

Memories are things worth recalling (facts the user stated, notes); turns are
the conversation itself, numbered per session. An archived memory stays in the
ledger and simply stops being recalled; a forgotten one (`delete_memory`, its
owner's choice) is deleted with its index entry. SQLite overwrites the freed
pages (`secure_delete`); what it cannot promise is the text's absence from the
write-ahead log before the next checkpoint, from full-text index segments not
yet merged, and from backups taken before, which keep what they hold. The
turns of the conversation in which a fact was stated are not touched.

Full-text search runs on an FTS5 index kept in step with `memories` by
triggers (external content, so the text is stored once). User text never
reaches FTS5 query syntax: `match_expression` keeps only the words of a query,
quotes each one, and joins them with OR, so recall is broad and BM25 puts the
best match first. Scores are `-bm25(...)`: positive, higher is better.

Every memory has an owner, the principal (key id) of the API key that stored it;
search, read and archive see only the caller's own (issue 10, finding 8). Memories
from before owners existed belong to LEGACY_OWNER, which no key is.

The module is plain functions of a `sqlite3.Connection` (each one correct on
its own, and safe inside a larger transaction), and the ledger's model that
both backends share: the records, the checks every write passes, and
`query_terms`, the words a search looks for. `repository.py` holds the async
faces the service uses (this SQLite one, and PostgreSQL's in `postgres.py`):
writes go through `Database.write`, which commits with `synchronous=FULL`
before the call returns, so an acknowledged write is on disk.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sonia.errors import InvalidArgument, NotFound

MIGRATIONS: list[str] = [
    # v0 -> v1: memories, turns, and the full-text index over memories.
    """
    CREATE TABLE memories (
        seq             INTEGER PRIMARY KEY,
        id              TEXT NOT NULL UNIQUE,
        kind            TEXT NOT NULL,
        content         TEXT NOT NULL,
        metadata        TEXT NOT NULL DEFAULT '{}',
        session_id      TEXT,
        idempotency_key TEXT UNIQUE,
        created_at      TEXT NOT NULL,
        archived_at     TEXT
    );
    CREATE INDEX memories_session ON memories(session_id);

    CREATE TABLE turns (
        seq        INTEGER PRIMARY KEY,
        id         TEXT NOT NULL UNIQUE,
        session_id TEXT NOT NULL,
        turn_no    INTEGER NOT NULL,
        role       TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        content    TEXT NOT NULL,
        metadata   TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL,
        UNIQUE (session_id, turn_no)
    );

    CREATE VIRTUAL TABLE memories_fts USING fts5(
        content,
        content = 'memories',
        content_rowid = 'seq',
        tokenize = 'porter unicode61 remove_diacritics 2'
    );

    CREATE TRIGGER memories_fts_insert AFTER INSERT ON memories BEGIN
        INSERT INTO memories_fts(rowid, content) VALUES (new.seq, new.content);
    END;
    CREATE TRIGGER memories_fts_delete AFTER DELETE ON memories BEGIN
        INSERT INTO memories_fts(memories_fts, rowid, content)
            VALUES ('delete', old.seq, old.content);
    END;
    CREATE TRIGGER memories_fts_update AFTER UPDATE OF content ON memories BEGIN
        INSERT INTO memories_fts(memories_fts, rowid, content)
            VALUES ('delete', old.seq, old.content);
        INSERT INTO memories_fts(rowid, content) VALUES (new.seq, new.content);
    END;
    """,
    # v1 -> v2: every memory belongs to an owner (the principal of the API key that
    # stored it). Rows from before have the owner LEGACY_OWNER, which no key id can be
    # (ids are hex), so no key sees them; idempotency keys are scoped per owner.
    """
    ALTER TABLE memories ADD COLUMN owner TEXT NOT NULL DEFAULT 'legacy';
    UPDATE memories SET idempotency_key = 'legacy/' || idempotency_key
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX memories_owner ON memories(owner, archived_at);
    """,
]
"""The schema, one script per version (`PRAGMA user_version`); append, never edit."""

LEGACY_OWNER = "legacy"
"""The owner of memories stored before memories had owners: no API key's id."""

TABLES: tuple[str, ...] = ("memories", "turns")
"""The tables holding the ledger's rows (the FTS index is derived from `memories`)."""

ROLES = frozenset({"user", "assistant"})
MAX_CONTENT_CHARS = 65_536
MAX_LIMIT = 200
MAX_QUERY_TERMS = 32
MAX_TERM_CHARS = 64
_KIND = re.compile(r"[a-z][a-z0-9_.-]{0,31}")
_OWNER = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_WORD = re.compile(r"\w+", re.UNICODE)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def stamp(clock: Clock) -> str:
    """An ISO 8601 UTC timestamp with microseconds: sortable as text."""
    return clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Memory:
    """One entry of the ledger."""

    id: str
    kind: str
    content: str
    created_at: str
    metadata: dict[str, Any] = field(default_factory=dict)
    session_id: str | None = None
    archived_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": self.kind, "content": self.content,
            "metadata": self.metadata, "session_id": self.session_id,
            "created_at": self.created_at, "archived_at": self.archived_at,
        }


@dataclass(frozen=True)
class MemoryHit:
    """A search result: `score` is positive, higher is a better match."""

    id: str
    kind: str
    content: str
    score: float
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "content": self.content,
                "score": self.score, "created_at": self.created_at}


@dataclass(frozen=True)
class Turn:
    """One message of a conversation; `turn_no` counts from 1 within its session."""

    id: str
    session_id: str
    turn_no: int
    role: str
    content: str
    created_at: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "session_id": self.session_id, "turn_no": self.turn_no,
                "role": self.role, "content": self.content, "created_at": self.created_at,
                "metadata": self.metadata}


@dataclass(frozen=True)
class SessionSummary:
    """A session seen through its turns."""

    session_id: str
    turns: int
    first_at: str
    last_at: str

    def to_dict(self) -> dict[str, Any]:
        return {"session_id": self.session_id, "turns": self.turns,
                "first_at": self.first_at, "last_at": self.last_at}


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def check_content(content: str) -> str:
    if not isinstance(content, str) or not content.strip():
        raise InvalidArgument("content must be a non-empty string")
    if len(content) > MAX_CONTENT_CHARS:
        raise InvalidArgument(f"content is longer than {MAX_CONTENT_CHARS} characters")
    if "\x00" in content:
        raise InvalidArgument("content must not contain NUL characters")
    return content


def check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidArgument(f"limit must be an integer from 1 to {MAX_LIMIT}")
    return limit


def check_owner(owner: str) -> str:
    """An owner is a key's principal (its id); the legacy owner is nobody's."""
    if not isinstance(owner, str) or not _OWNER.fullmatch(owner) or owner == LEGACY_OWNER:
        raise InvalidArgument("owner must be a key id ([A-Za-z0-9_.:-]{1,64}, not 'legacy')")
    return owner


def dump_metadata(metadata: Mapping[str, Any] | None) -> str:
    try:
        return json.dumps(dict(metadata or {}), sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"metadata must be JSON-serialisable: {exc}") from exc


def check_new_memory(content: str, *, owner: str, kind: str,
                     idempotency_key: str | None) -> str | None:
    """Refuse what no backend may store; the idempotency key as stored (per owner)."""
    check_content(content)
    check_owner(owner)
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise InvalidArgument("kind must match [a-z][a-z0-9_.-]{0,31}")
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 200:
        raise InvalidArgument("idempotency_key must be 1 to 200 characters")
    return scoped_idempotency_key(owner, idempotency_key)


def check_turn(session_id: str, role: str, content: str) -> None:
    """Refuse a turn no backend may store."""
    if not isinstance(session_id, str) or not 1 <= len(session_id) <= 200:
        raise InvalidArgument("session_id must be 1 to 200 characters")
    if role not in ROLES:
        raise InvalidArgument(f"role must be one of {', '.join(sorted(ROLES))}")
    check_content(content)


def query_terms(query: str) -> list[str]:
    """The words of free user text a search looks for: runs of word characters,
    lower-cased, each cut to MAX_TERM_CHARS, without repeats, at most MAX_QUERY_TERMS.
    Both backends search for exactly these, so no query syntax reaches either engine."""
    terms: list[str] = []
    if not isinstance(query, str):
        return terms
    for word in _WORD.findall(query):
        term = word[:MAX_TERM_CHARS].lower()
        if term not in terms:
            terms.append(term)
        if len(terms) == MAX_QUERY_TERMS:
            break
    return terms


def _memory(row: sqlite3.Row) -> Memory:
    return Memory(id=row["id"], kind=row["kind"], content=row["content"],
                  created_at=row["created_at"], metadata=json.loads(row["metadata"]),
                  session_id=row["session_id"], archived_at=row["archived_at"])


def _turn(row: sqlite3.Row) -> Turn:
    return Turn(id=row["id"], session_id=row["session_id"], turn_no=row["turn_no"],
                role=row["role"], content=row["content"], created_at=row["created_at"],
                metadata=json.loads(row["metadata"]))


_MEMORY_COLUMNS = "id, kind, content, metadata, session_id, created_at, archived_at"


def add_memory(
    conn: sqlite3.Connection,
    content: str,
    *,
    owner: str,
    kind: str = "note",
    metadata: Mapping[str, Any] | None = None,
    session_id: str | None = None,
    idempotency_key: str | None = None,
    clock: Clock = utc_now,
) -> Memory:
    """Store a memory of `owner`; a retry with the same `idempotency_key` (per owner)
    returns the first one.

    Reusing a key for different content or kind is a client bug and is refused
    (INVALID_ARGUMENT) rather than silently answered with the other record.
    """
    scoped_key = check_new_memory(content, owner=owner, kind=kind,
                                  idempotency_key=idempotency_key)
    cursor = conn.execute(
        "INSERT INTO memories (id, kind, content, metadata, session_id, idempotency_key,"
        " created_at, owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (idempotency_key) DO NOTHING",
        (new_id("mem"), kind, content, dump_metadata(metadata), session_id, scoped_key,
         stamp(clock), owner),
    )
    if cursor.rowcount == 1:
        row = conn.execute(f"SELECT {_MEMORY_COLUMNS} FROM memories WHERE seq = ?",
                           (cursor.lastrowid,)).fetchone()
        return _memory(row)
    row = conn.execute(f"SELECT {_MEMORY_COLUMNS} FROM memories WHERE idempotency_key = ?",
                       (scoped_key,)).fetchone()
    existing = _memory(row)
    if existing.content != content or existing.kind != kind:
        raise InvalidArgument("idempotency_key was already used for a different memory",
                              extra={"memory_id": existing.id})
    return existing


def scoped_idempotency_key(owner: str, key: str | None) -> str | None:
    """Idempotency keys are unique per owner: two keys stating one fact get two rows."""
    return None if key is None else f"{owner}/{key}"


def get_memory(conn: sqlite3.Connection, memory_id: str, *, owner: str) -> Memory:
    """A memory of `owner`; another owner's memory is NOT_FOUND, as if it did not exist."""
    row = conn.execute(f"SELECT {_MEMORY_COLUMNS} FROM memories WHERE id = ? AND owner = ?",
                       (memory_id, check_owner(owner))).fetchone()
    if row is None:
        raise NotFound(f"no memory {memory_id!r}")
    return _memory(row)


def archive_memory(
    conn: sqlite3.Connection, memory_id: str, *, owner: str, clock: Clock = utc_now
) -> Memory:
    """Stop recalling a memory of `owner` (kept in the ledger); archiving twice changes
    nothing, and another owner's memory is NOT_FOUND and stays as it is."""
    conn.execute("UPDATE memories SET archived_at = ?"
                 " WHERE id = ? AND owner = ? AND archived_at IS NULL",
                 (stamp(clock), memory_id, check_owner(owner)))
    return get_memory(conn, memory_id, owner=owner)


def delete_memory(conn: sqlite3.Connection, memory_id: str, *, owner: str) -> None:
    """Forget a memory of `owner` (row and index entry); another owner's memory, or one
    already forgotten, is NOT_FOUND and nothing changes."""
    conn.execute("PRAGMA secure_delete = ON")
    deleted = conn.execute("DELETE FROM memories WHERE id = ? AND owner = ?",
                           (memory_id, check_owner(owner))).rowcount
    if deleted != 1:
        raise NotFound(f"no memory {memory_id!r}")


def match_expression(query: str) -> str | None:
    """Turn free user text into a safe FTS5 query: quoted words joined by OR.

    Only runs of word characters survive, so quotes, `*`, `:`, `-`, parentheses,
    NEAR and column filters cannot reach FTS5; the words OR/AND/NOT are quoted
    too and so match literally. Returns None when no word is left.
    """
    terms = query_terms(query)
    if not terms:
        return None
    return " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)


def search(conn: sqlite3.Connection, query: str, limit: int = 10, *,
           owner: str) -> list[MemoryHit]:
    """The live (unarchived) memories of `owner` matching any word of `query`, best first."""
    check_limit(limit)
    check_owner(owner)
    expression = match_expression(query) if isinstance(query, str) else None
    if expression is None:
        return []
    rows = conn.execute(
        "SELECT m.id, m.kind, m.content, m.created_at, bm25(memories_fts) AS bm25_rank"
        " FROM memories_fts JOIN memories AS m ON m.seq = memories_fts.rowid"
        " WHERE memories_fts MATCH ? AND m.archived_at IS NULL AND m.owner = ?"
        " ORDER BY bm25_rank, m.seq DESC LIMIT ?",
        (expression, owner, limit),
    ).fetchall()
    return [MemoryHit(id=r["id"], kind=r["kind"], content=r["content"],
                      score=round(-float(r["bm25_rank"]), 6), created_at=r["created_at"])
            for r in rows]


def add_turn(
    conn: sqlite3.Connection,
    session_id: str,
    role: str,
    content: str,
    *,
    metadata: Mapping[str, Any] | None = None,
    clock: Clock = utc_now,
) -> Turn:
    """Append a turn to a session; its number is one past the session's last."""
    check_turn(session_id, role, content)
    # One statement computes the number and inserts, so it is atomic on its own.
    cursor = conn.execute(
        "INSERT INTO turns (id, session_id, turn_no, role, content, metadata, created_at)"
        " SELECT ?, ?, coalesce(max(turn_no), 0) + 1, ?, ?, ?, ?"
        " FROM turns WHERE session_id = ?",
        (new_id("turn"), session_id, role, content, dump_metadata(metadata), stamp(clock),
         session_id),
    )
    row = conn.execute("SELECT * FROM turns WHERE seq = ?", (cursor.lastrowid,)).fetchone()
    return _turn(row)


def list_turns(conn: sqlite3.Connection, session_id: str, limit: int = 50) -> list[Turn]:
    """The last `limit` turns of a session, oldest first (ready to become a prompt)."""
    check_limit(limit)
    rows = conn.execute(
        "SELECT * FROM (SELECT * FROM turns WHERE session_id = ? ORDER BY turn_no DESC LIMIT ?)"
        " ORDER BY turn_no",
        (session_id, limit),
    ).fetchall()
    return [_turn(r) for r in rows]


def recent_sessions(conn: sqlite3.Connection, limit: int = 20) -> list[SessionSummary]:
    """Sessions by their latest turn, most recent first."""
    check_limit(limit)
    rows = conn.execute(
        "SELECT session_id, count(*) AS turns, min(created_at) AS first_at,"
        " max(created_at) AS last_at, max(seq) AS last_seq"
        " FROM turns GROUP BY session_id ORDER BY last_seq DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [SessionSummary(session_id=r["session_id"], turns=r["turns"],
                           first_at=r["first_at"], last_at=r["last_at"]) for r in rows]


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Rows per table, plus live and archived memories: what a backup manifest records."""
    result = {table: int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
              for table in TABLES}
    result["memories_archived"] = int(conn.execute(
        "SELECT count(*) FROM memories WHERE archived_at IS NOT NULL").fetchone()[0])
    result["sessions"] = int(conn.execute(
        "SELECT count(DISTINCT session_id) FROM turns").fetchone()[0])
    return result


def table_names(conn: sqlite3.Connection) -> list[str]:
    """The database's tables (the FTS index's shadow tables included)."""
    return [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]


def check_index(conn: sqlite3.Connection) -> None:
    """Raise sqlite3.DatabaseError when the FTS index disagrees with `memories`."""
    conn.execute("INSERT INTO memories_fts(memories_fts, rank) VALUES ('integrity-check', 1)")


__all__ = [
    "Clock", "LEGACY_OWNER", "MAX_CONTENT_CHARS", "MAX_LIMIT", "MIGRATIONS", "Memory", "MemoryHit",
    "SessionSummary", "TABLES", "Turn", "add_memory", "add_turn", "archive_memory",
    "check_content", "check_index", "check_limit", "check_new_memory", "check_owner", "check_turn",
    "counts", "delete_memory", "dump_metadata", "get_memory", "list_turns", "match_expression",
    "new_id", "query_terms", "recent_sessions", "scoped_idempotency_key", "search", "stamp",
    "table_names", "utc_now",
]
