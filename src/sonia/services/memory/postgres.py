"""The memory ledger on PostgreSQL: the same functions as `store.py`, of a psycopg connection.

Each function has the signature and the behaviour of its SQLite namesake in
`store.py` (and `remember_facts`/`store_exchange` of theirs in `facts.py`), and
each is correct on its own and safe inside a larger transaction; the records,
the checks and the words a search looks for are shared (`store.check_*`,
`store.query_terms`). What differs is PostgreSQL's:

- **Search** is PostgreSQL's full text search: a stored generated `tsvector`
  column with a GIN index, queried with the query's words OR-ed in a `tsquery`
  and ranked by `ts_rank` normalised by document length (like BM25, a short
  memory that says it beats a long one that mentions it). The text search
  configuration `sonia_english` is English with the Snowball stemmer and no
  stop words (SQLite's `porter` tokenizer drops none either), so "what is my"
  still matches. Scores are `ts_rank`'s: positive, higher is better, on
  another scale than SQLite's `-bm25`. Diacritics are kept (SQLite folds them).
- **Turn numbers** are one past the session's last, as on SQLite, where the
  single writer serialises them; here writers run at once, so the insert takes
  a transaction-scoped advisory lock on the session first.
- **Idempotency** is `INSERT ... ON CONFLICT DO NOTHING`: a concurrent insert
  of the same key waits for the first to commit and then finds its row.
- **Forgetting** deletes the row and its index entry; PostgreSQL reclaims the
  dead tuple at its next VACUUM, and the text stays in WAL until it is
  recycled (DESIGN.md says the same of SQLite's WAL and FTS segments).

`repository.LedgerRepository` runs these on `kit.pg.PgDatabase`, in the
schema `memory`, versioned by `memory.schema_version` (`MIGRATIONS` below).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sonia.errors import InvalidArgument, NotFound
from sonia.services.memory.facts import FACT_KIND, Remembered, fact_key, facts_in
from sonia.services.memory.store import (
    TABLES,
    Clock,
    Memory,
    MemoryHit,
    SessionSummary,
    Turn,
    check_limit,
    check_new_memory,
    check_owner,
    check_turn,
    dump_metadata,
    new_id,
    query_terms,
    scoped_idempotency_key,
    stamp,
    utc_now,
)

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.Connection[dict[str, Any]]

SCHEMA = "memory"
"""The PostgreSQL schema the memory service owns (its `data/memory.db` on SQLite)."""

TEXT_SEARCH_CONFIG = "sonia_english"

MIGRATIONS: list[str] = [
    # v0 -> v1: the ledger as SQLite's schema v2 has it (owners included), with the
    # full-text index a generated tsvector column under GIN.
    """
    CREATE TEXT SEARCH DICTIONARY sonia_english_stem (TEMPLATE = snowball, Language = english);
    CREATE TEXT SEARCH CONFIGURATION sonia_english (COPY = pg_catalog.english);
    ALTER TEXT SEARCH CONFIGURATION sonia_english
        ALTER MAPPING FOR asciiword, asciihword, hword_asciipart, word, hword, hword_part
        WITH sonia_english_stem;

    CREATE TABLE memories (
        seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id              text NOT NULL UNIQUE,
        owner           text NOT NULL,
        kind            text NOT NULL,
        content         text NOT NULL,
        metadata        jsonb NOT NULL DEFAULT '{}',
        session_id      text,
        idempotency_key text UNIQUE,
        created_at      text NOT NULL,
        archived_at     text,
        content_tsv     tsvector
            GENERATED ALWAYS AS (to_tsvector('sonia_english', content)) STORED
    );
    CREATE INDEX memories_session ON memories (session_id);
    CREATE INDEX memories_owner ON memories (owner, archived_at);
    CREATE INDEX memories_fts ON memories USING gin (content_tsv);

    CREATE TABLE turns (
        seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id         text NOT NULL UNIQUE,
        session_id text NOT NULL,
        turn_no    integer NOT NULL,
        role       text NOT NULL CHECK (role IN ('user', 'assistant')),
        content    text NOT NULL,
        metadata   jsonb NOT NULL DEFAULT '{}',
        created_at text NOT NULL,
        UNIQUE (session_id, turn_no)
    );
    """,
]
"""The schema in `memory`, one script per version (`memory.schema_version`); append only."""

_MEMORY_COLUMNS = "id, kind, content, metadata, session_id, created_at, archived_at"


def _jsonb(metadata: Mapping[str, Any] | None) -> Any:
    from psycopg.types.json import Jsonb

    dump_metadata(metadata)  # the same refusal of what JSON cannot hold as on SQLite
    return Jsonb(dict(metadata or {}))


def _memory(row: Mapping[str, Any]) -> Memory:
    return Memory(id=row["id"], kind=row["kind"], content=row["content"],
                  created_at=row["created_at"], metadata=dict(row["metadata"]),
                  session_id=row["session_id"], archived_at=row["archived_at"])


def _turn(row: Mapping[str, Any]) -> Turn:
    return Turn(id=row["id"], session_id=row["session_id"], turn_no=row["turn_no"],
                role=row["role"], content=row["content"], created_at=row["created_at"],
                metadata=dict(row["metadata"]))


def _insert_memory(conn: Conn, content: str, *, owner: str, kind: str,
                   metadata: Mapping[str, Any] | None, session_id: str | None,
                   idempotency_key: str | None, clock: Clock) -> tuple[Memory, bool]:
    """The memory, and whether this call inserted it (False: an earlier one had)."""
    scoped_key = check_new_memory(content, owner=owner, kind=kind,
                                  idempotency_key=idempotency_key)
    row = conn.execute(
        "INSERT INTO memories (id, kind, content, metadata, session_id, idempotency_key,"
        " created_at, owner) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        f" ON CONFLICT (idempotency_key) DO NOTHING RETURNING {_MEMORY_COLUMNS}",
        (new_id("mem"), kind, content, _jsonb(metadata), session_id, scoped_key,
         stamp(clock), owner),
    ).fetchone()
    if row is not None:
        return _memory(row), True
    row = conn.execute(f"SELECT {_MEMORY_COLUMNS} FROM memories WHERE idempotency_key = %s",
                       (scoped_key,)).fetchone()
    if row is None:  # pragma: no cover - the conflicting row was deleted in between
        raise InvalidArgument("idempotency_key conflicted with a memory that is gone; retry")
    existing = _memory(row)
    if existing.content != content or existing.kind != kind:
        raise InvalidArgument("idempotency_key was already used for a different memory",
                              extra={"memory_id": existing.id})
    return existing, False


def add_memory(
    conn: Conn,
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
    returns the first one, and reusing it for another memory is INVALID_ARGUMENT."""
    return _insert_memory(conn, content, owner=owner, kind=kind, metadata=metadata,
                          session_id=session_id, idempotency_key=idempotency_key,
                          clock=clock)[0]


def get_memory(conn: Conn, memory_id: str, *, owner: str) -> Memory:
    """A memory of `owner`; another owner's memory is NOT_FOUND, as if it did not exist."""
    row = conn.execute(f"SELECT {_MEMORY_COLUMNS} FROM memories WHERE id = %s AND owner = %s",
                       (memory_id, check_owner(owner))).fetchone()
    if row is None:
        raise NotFound(f"no memory {memory_id!r}")
    return _memory(row)


def archive_memory(conn: Conn, memory_id: str, *, owner: str,
                   clock: Clock = utc_now) -> Memory:
    """Stop recalling a memory of `owner`; twice changes nothing; another owner's is
    NOT_FOUND and stays as it is."""
    conn.execute("UPDATE memories SET archived_at = %s"
                 " WHERE id = %s AND owner = %s AND archived_at IS NULL",
                 (stamp(clock), memory_id, check_owner(owner)))
    return get_memory(conn, memory_id, owner=owner)


def delete_memory(conn: Conn, memory_id: str, *, owner: str) -> None:
    """Forget a memory of `owner` (row and index entry); another owner's memory, or one
    already forgotten, is NOT_FOUND and nothing changes."""
    deleted = conn.execute("DELETE FROM memories WHERE id = %s AND owner = %s",
                           (memory_id, check_owner(owner))).rowcount
    if deleted != 1:
        raise NotFound(f"no memory {memory_id!r}")


def tsquery_text(query: str) -> str | None:
    """The `to_tsquery` input for free user text: its words (`store.query_terms`),
    each a quoted lexeme, joined by `|`. Only word characters are left, so no
    tsquery operator survives; None when no word is left."""
    terms = query_terms(query)
    if not terms:
        return None
    return " | ".join("'" + term + "'" for term in terms)


def search(conn: Conn, query: str, limit: int = 10, *, owner: str) -> list[MemoryHit]:
    """The live (unarchived) memories of `owner` matching any word of `query`, best first."""
    check_limit(limit)
    check_owner(owner)
    text = tsquery_text(query)
    if text is None:
        return []
    rows = conn.execute(
        "SELECT m.id, m.kind, m.content, m.created_at,"
        " ts_rank(m.content_tsv, q.query, 1) AS rank"
        " FROM memories AS m, to_tsquery(%s::regconfig, %s) AS q(query)"
        " WHERE m.content_tsv @@ q.query AND m.archived_at IS NULL AND m.owner = %s"
        " ORDER BY rank DESC, m.seq DESC LIMIT %s",
        (TEXT_SEARCH_CONFIG, text, owner, limit),
    ).fetchall()
    return [MemoryHit(id=r["id"], kind=r["kind"], content=r["content"],
                      score=round(float(r["rank"]), 6), created_at=r["created_at"])
            for r in rows]


def add_turn(conn: Conn, session_id: str, role: str, content: str, *,
             metadata: Mapping[str, Any] | None = None, clock: Clock = utc_now) -> Turn:
    """Append a turn to a session; its number is one past the session's last."""
    check_turn(session_id, role, content)
    # Writers run at once here: the session's lock makes max()+1 and the insert one step.
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('sonia-turns:' || %s, 0))",
                 (session_id,))
    row = conn.execute(
        "INSERT INTO turns (id, session_id, turn_no, role, content, metadata, created_at)"
        " SELECT %s, %s, coalesce(max(turn_no), 0) + 1, %s, %s, %s, %s"
        " FROM turns WHERE session_id = %s RETURNING *",
        (new_id("turn"), session_id, role, content, _jsonb(metadata), stamp(clock),
         session_id),
    ).fetchone()
    assert row is not None  # INSERT ... RETURNING of one row
    return _turn(row)


def list_turns(conn: Conn, session_id: str, limit: int = 50) -> list[Turn]:
    """The last `limit` turns of a session, oldest first."""
    check_limit(limit)
    rows = conn.execute(
        "SELECT * FROM (SELECT * FROM turns WHERE session_id = %s"
        " ORDER BY turn_no DESC LIMIT %s) AS last ORDER BY turn_no",
        (session_id, limit),
    ).fetchall()
    return [_turn(r) for r in rows]


def recent_sessions(conn: Conn, limit: int = 20) -> list[SessionSummary]:
    """Sessions by their latest turn, most recent first."""
    check_limit(limit)
    rows = conn.execute(
        "SELECT session_id, count(*) AS turns, min(created_at) AS first_at,"
        " max(created_at) AS last_at, max(seq) AS last_seq"
        " FROM turns GROUP BY session_id ORDER BY last_seq DESC LIMIT %s",
        (limit,),
    ).fetchall()
    return [SessionSummary(session_id=r["session_id"], turns=int(r["turns"]),
                           first_at=r["first_at"], last_at=r["last_at"]) for r in rows]


def counts(conn: Conn) -> dict[str, int]:
    """Rows per table, plus archived memories and sessions (as on SQLite)."""
    result: dict[str, int] = {}
    for table in TABLES:
        row = conn.execute(f"SELECT count(*) AS n FROM {table}").fetchone()
        result[table] = int(row["n"]) if row else 0
    row = conn.execute("SELECT count(*) AS n FROM memories WHERE archived_at IS NOT NULL"
                       ).fetchone()
    result["memories_archived"] = int(row["n"]) if row else 0
    row = conn.execute("SELECT count(DISTINCT session_id) AS n FROM turns").fetchone()
    result["sessions"] = int(row["n"]) if row else 0
    return result


def table_names(conn: Conn) -> list[str]:
    """The tables of the service's schema."""
    rows = conn.execute("SELECT table_name FROM information_schema.tables"
                        " WHERE table_schema = %s ORDER BY table_name", (SCHEMA,)).fetchall()
    return [r["table_name"] for r in rows]


def check_index(conn: Conn) -> None:
    """Raise when a stored tsvector disagrees with its memory's content."""
    import psycopg

    row = conn.execute(
        "SELECT count(*) AS n FROM memories"
        " WHERE content_tsv IS DISTINCT FROM to_tsvector(%s::regconfig, content)",
        (TEXT_SEARCH_CONFIG,)).fetchone()
    if row is None or int(row["n"]):
        raise psycopg.DatabaseError("the full-text index disagrees with memories")


def remember_facts(conn: Conn, message: str, *, owner: str, session_id: str | None = None,
                   clock: Clock = utc_now) -> list[Remembered]:
    """Store the facts of `message` (`facts.facts_in`) as memories of `owner`, as
    `facts.remember_facts` does on SQLite: a fact known word for word is not stored
    again, and one whose copy was archived is remembered afresh."""
    check_owner(owner)
    remembered: list[Remembered] = []
    for fact in facts_in(message):
        key = fact_key(fact)
        conn.execute("UPDATE memories SET idempotency_key = NULL"
                     " WHERE idempotency_key = %s AND archived_at IS NOT NULL",
                     (scoped_idempotency_key(owner, key),))
        memory, new = _insert_memory(conn, fact, owner=owner, kind=FACT_KIND,
                                     metadata={"source": "user statement"},
                                     session_id=session_id, idempotency_key=key, clock=clock)
        remembered.append(Remembered(memory, new=new))
    return remembered


def store_exchange(conn: Conn, session_id: str, user: str, assistant: str | None, *,
                   owner: str, metadata: Mapping[str, Any] | None = None,
                   remember: bool = True,
                   clock: Clock = utc_now) -> tuple[Turn, Turn | None, list[Remembered]]:
    """A user message, its reply and the facts of the message (`facts.store_exchange`)."""
    asked = add_turn(conn, session_id, "user", user, metadata=metadata, clock=clock)
    answered = (add_turn(conn, session_id, "assistant", assistant, metadata=metadata,
                         clock=clock) if assistant and assistant.strip() else None)
    stored = (remember_facts(conn, user, owner=owner, session_id=session_id, clock=clock)
              if remember else [])
    return asked, answered, stored


__all__ = [
    "MIGRATIONS", "SCHEMA", "TEXT_SEARCH_CONFIG", "add_memory", "add_turn", "archive_memory",
    "check_index", "counts", "delete_memory", "get_memory", "list_turns", "recent_sessions",
    "remember_facts", "search", "store_exchange", "table_names", "tsquery_text",
]
