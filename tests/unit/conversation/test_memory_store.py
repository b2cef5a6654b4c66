"""The memory ledger: memories, turns, full-text recall, on a real SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sonia.errors import InvalidArgument, NotFound
from sonia.kit.db import connect, migrate
from sonia.services.memory import store
from sonia.services.memory.store import (
    MIGRATIONS,
    MemoryStore,
    add_memory,
    add_turn,
    archive_memory,
    check_index,
    counts,
    get_memory,
    list_turns,
    match_expression,
    recent_sessions,
    search,
)

OWNER = "a1b2c3d4e5f6"
"""The key id the memories of these tests belong to."""


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = connect(tmp_path / "memory.db")
    migrate(connection, MIGRATIONS)
    yield connection
    connection.close()


class Ticks:
    """A clock that moves one second per reading, so timestamps are distinct and known."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def test_exported_names_match_the_module() -> None:
    public = {n for n in vars(store) if not n.startswith("_")}
    assert set(store.__all__) <= public
    assert store.__all__ == sorted(store.__all__)


def test_a_stored_memory_reads_back_with_a_stable_id(conn: sqlite3.Connection) -> None:
    memory = add_memory(conn, "my favourite colour is teal", kind="fact",
                        metadata={"source": "chat"}, session_id="s1", clock=Ticks(),
                        owner=OWNER)
    assert memory.id.startswith("mem_")
    assert memory.created_at == "2030-01-01T00:00:01.000000Z"
    assert get_memory(conn, memory.id, owner=OWNER) == memory
    assert memory.to_dict()["metadata"] == {"source": "chat"}


def test_the_better_match_ranks_first_with_a_positive_score(conn: sqlite3.Connection) -> None:
    add_memory(conn, "I live in Lisbon", owner=OWNER)
    add_memory(conn, "the sea has many colours", owner=OWNER)
    best = add_memory(conn, "my favourite colour is teal", owner=OWNER)
    add_memory(conn, "my brother likes football", owner=OWNER)

    hits = search(conn, "What is my favourite colour?", limit=10, owner=OWNER)

    assert hits[0].id == best.id
    assert all(hit.score > 0 for hit in hits)
    assert hits == sorted(hits, key=lambda h: h.score, reverse=True)
    assert set(hits[0].to_dict()) == {"id", "kind", "content", "score", "created_at"}


@pytest.mark.parametrize("query", [
    '"', '""', "*", "teal*", "NEAR(", "NEAR(teal colour, 2)", "OR", "teal OR", "AND NOT",
    "-", "-teal", ":", "content:teal", "{content}: teal", "^teal", "(", ")", "teal)", "'",
    "\\", "\x00", "", "   ", "teal\"colour", "🙂", "a" * 5000,
])
def test_queries_with_fts_syntax_never_raise(conn: sqlite3.Connection, query: str) -> None:
    add_memory(conn, "my favourite colour is teal", owner=OWNER)
    search(conn, query, owner=OWNER)  # no exception is the assertion


def test_fts_operators_in_a_query_are_matched_as_words(conn: sqlite3.Connection) -> None:
    add_memory(conn, "my favourite colour is teal", owner=OWNER)
    # Were NOT an operator, this query would exclude the memory it is about.
    hits = search(conn, "teal NOT colour", owner=OWNER)
    assert [h.content for h in hits] == ["my favourite colour is teal"]
    assert match_expression('say "hi" NEAR(x) *') == '"say" OR "hi" OR "near" OR "x"'
    assert match_expression("*:-()") is None


def test_an_archived_memory_is_kept_but_no_longer_recalled(conn: sqlite3.Connection) -> None:
    memory = add_memory(conn, "my locker code is 1234", owner=OWNER)
    archived = archive_memory(conn, memory.id, owner=OWNER)

    assert archived.archived_at is not None
    assert search(conn, "locker code", owner=OWNER) == []
    assert get_memory(conn, memory.id, owner=OWNER).content == "my locker code is 1234"
    again = archive_memory(conn, memory.id, owner=OWNER)
    assert again.archived_at == archived.archived_at  # idempotent
    assert counts(conn)["memories_archived"] == 1


def test_unknown_memories_are_not_found(conn: sqlite3.Connection) -> None:
    with pytest.raises(NotFound):
        get_memory(conn, "mem_missing", owner=OWNER)
    with pytest.raises(NotFound):
        archive_memory(conn, "mem_missing", owner=OWNER)


def test_a_retry_with_the_same_idempotency_key_returns_the_first_memory(
    conn: sqlite3.Connection,
) -> None:
    first = add_memory(conn, "buy milk", idempotency_key="client-42", owner=OWNER)
    again = add_memory(conn, "buy milk", idempotency_key="client-42", owner=OWNER)

    assert again == first
    assert counts(conn)["memories"] == 1
    with pytest.raises(InvalidArgument):
        add_memory(conn, "buy bread", idempotency_key="client-42", owner=OWNER)


@pytest.mark.parametrize("content", ["", "   ", "a\x00b", "x" * (store.MAX_CONTENT_CHARS + 1)])
def test_unusable_content_is_refused(conn: sqlite3.Connection, content: str) -> None:
    with pytest.raises(InvalidArgument):
        add_memory(conn, content, owner=OWNER)


def test_bad_kinds_and_limits_are_refused(conn: sqlite3.Connection) -> None:
    with pytest.raises(InvalidArgument):
        add_memory(conn, "x", kind="Bad Kind", owner=OWNER)
    for limit in (0, -1, store.MAX_LIMIT + 1):
        with pytest.raises(InvalidArgument):
            search(conn, "x", limit=limit, owner=OWNER)


def test_turns_are_numbered_and_listed_in_order_per_session(conn: sqlite3.Connection) -> None:
    for n in range(5):
        add_turn(conn, "s1", "user", f"question {n}")
        add_turn(conn, "s1", "assistant", f"answer {n}")
    add_turn(conn, "s2", "user", "elsewhere")

    turns = list_turns(conn, "s1", limit=4)

    assert [t.turn_no for t in turns] == [7, 8, 9, 10]
    assert [t.content for t in turns] == ["question 3", "answer 3", "question 4", "answer 4"]
    assert [t.turn_no for t in list_turns(conn, "s2")] == [1]
    with pytest.raises(InvalidArgument):
        add_turn(conn, "s1", "system", "roles are user and assistant")


def test_recent_sessions_come_most_recent_first(conn: sqlite3.Connection) -> None:
    clock = Ticks()
    add_turn(conn, "old", "user", "a", clock=clock)
    add_turn(conn, "new", "user", "b", clock=clock)
    add_turn(conn, "old", "user", "c", clock=clock)

    sessions = recent_sessions(conn)

    assert [(s.session_id, s.turns) for s in sessions] == [("old", 2), ("new", 1)]
    assert sessions[0].last_at > sessions[0].first_at


def test_counts_cover_every_table(conn: sqlite3.Connection) -> None:
    add_memory(conn, "one", owner=OWNER)
    add_turn(conn, "s", "user", "hi")
    add_turn(conn, "s", "assistant", "hello")
    assert counts(conn) == {"memories": 1, "turns": 2, "memories_archived": 0, "sessions": 1}


def test_the_index_follows_edits_and_deletes(conn: sqlite3.Connection) -> None:
    memory = add_memory(conn, "the cat sleeps", owner=OWNER)
    conn.execute("UPDATE memories SET content = 'the dog barks' WHERE id = ?", (memory.id,))
    assert search(conn, "cat", owner=OWNER) == []
    assert [h.id for h in search(conn, "dog", owner=OWNER)] == [memory.id]
    conn.execute("DELETE FROM memories WHERE id = ?", (memory.id,))
    assert search(conn, "dog", owner=OWNER) == []
    check_index(conn)


def test_migrations_are_idempotent_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    first = connect(path)
    assert migrate(first, MIGRATIONS) == len(MIGRATIONS)
    memory = add_memory(first, "persisted", owner=OWNER)
    first.close()

    second = connect(path)
    assert migrate(second, MIGRATIONS) == len(MIGRATIONS)
    assert second.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert get_memory(second, memory.id, owner=OWNER).content == "persisted"
    second.close()


def test_the_async_store_writes_durably_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"

    async def scenario() -> None:
        memory_store = MemoryStore.open(path, clock=Ticks())
        try:
            memory = await memory_store.add_memory("my dog is called Rex", kind="fact",
                                                   owner=OWNER)
            asked, answered = await memory_store.add_exchange("s1", "hi", "hello")
            assert (asked.turn_no, answered.turn_no) == (1, 2)
            assert [h.id for h in await memory_store.search("dog", owner=OWNER)] == [memory.id]
            assert (await memory_store.counts())["turns"] == 2
            await memory_store.ping()
        finally:
            memory_store.close()

    asyncio.run(scenario())

    # Acknowledged writes are in the file, visible to a brand-new connection.
    reader = connect(path, readonly=True)
    assert counts(reader)["memories"] == 1
    assert [t.content for t in list_turns(reader, "s1")] == ["hi", "hello"]
    reader.close()


OTHER = "0f0f0f0f0f0f"


def _archived_at(conn: sqlite3.Connection, memory_id: str) -> str | None:
    row = conn.execute("SELECT archived_at FROM memories WHERE id = ?", (memory_id,)).fetchone()
    return None if row is None else row["archived_at"]


def test_finding_8_another_owner_cannot_find_read_or_archive_a_memory(
    conn: sqlite3.Connection,
) -> None:
    """Key B searches, reads and archives key A's memory: it finds nothing, reads 404,
    archives 404, and by effect the row is still live and still A's."""
    mine = add_memory(conn, "my locker code is 4417", owner=OWNER)
    assert search(conn, "locker code", owner=OTHER) == []
    with pytest.raises(NotFound):
        get_memory(conn, mine.id, owner=OTHER)
    with pytest.raises(NotFound):
        archive_memory(conn, mine.id, owner=OTHER)
    assert _archived_at(conn, mine.id) is None
    assert [h.id for h in search(conn, "locker code", owner=OWNER)] == [mine.id]


def test_finding_8_one_idempotency_key_gives_each_owner_its_own_memory(
    conn: sqlite3.Connection,
) -> None:
    """Two keys stating the same fact (same idempotency key) get two rows: the second
    key is not handed the first key's memory."""
    a = add_memory(conn, "my name is Ana", owner=OWNER, idempotency_key="fact:ana")
    b = add_memory(conn, "my name is Ana", owner=OTHER, idempotency_key="fact:ana")
    assert a.id != b.id
    assert add_memory(conn, "my name is Ana", owner=OTHER, idempotency_key="fact:ana") == b


@pytest.mark.parametrize("owner", ["", "legacy", "a b", "x" * 65])
def test_an_owner_must_be_a_key_id(conn: sqlite3.Connection, owner: str) -> None:
    with pytest.raises(InvalidArgument):
        search(conn, "x", owner=owner)
    with pytest.raises(InvalidArgument):
        add_memory(conn, "x", owner=owner)


def test_finding_8_rows_from_before_owners_belong_to_no_key(tmp_path: Path) -> None:
    """A database written by the schema before owners is migrated: its memories get the
    legacy owner, which no key id is, so no key finds them; nothing is lost."""
    path = tmp_path / "memory.db"
    old = connect(path)
    migrate(old, MIGRATIONS[:1])
    old.execute("INSERT INTO memories (id, kind, content, idempotency_key, created_at)"
                " VALUES ('mem_old', 'fact', 'my pin is 9981', 'fact:pin', '2030')")
    old.commit()
    old.close()

    conn = connect(path)
    migrate(conn, MIGRATIONS)
    row = conn.execute("SELECT owner, idempotency_key FROM memories WHERE id = 'mem_old'"
                       ).fetchone()
    assert (row["owner"], row["idempotency_key"]) == (store.LEGACY_OWNER, "legacy/fact:pin")
    assert search(conn, "pin", owner=OWNER) == []
    assert counts(conn)["memories"] == 1
    check_index(conn)
    conn.close()
