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
                        metadata={"source": "chat"}, session_id="s1", clock=Ticks())
    assert memory.id.startswith("mem_")
    assert memory.created_at == "2030-01-01T00:00:01.000000Z"
    assert get_memory(conn, memory.id) == memory
    assert memory.to_dict()["metadata"] == {"source": "chat"}


def test_the_better_match_ranks_first_with_a_positive_score(conn: sqlite3.Connection) -> None:
    add_memory(conn, "I live in Lisbon")
    add_memory(conn, "the sea has many colours")
    best = add_memory(conn, "my favourite colour is teal")
    add_memory(conn, "my brother likes football")

    hits = search(conn, "What is my favourite colour?", limit=10)

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
    add_memory(conn, "my favourite colour is teal")
    search(conn, query)  # no exception is the assertion


def test_fts_operators_in_a_query_are_matched_as_words(conn: sqlite3.Connection) -> None:
    add_memory(conn, "my favourite colour is teal")
    # Were NOT an operator, this query would exclude the memory it is about.
    assert [h.content for h in search(conn, "teal NOT colour")] == ["my favourite colour is teal"]
    assert match_expression('say "hi" NEAR(x) *') == '"say" OR "hi" OR "near" OR "x"'
    assert match_expression("*:-()") is None


def test_an_archived_memory_is_kept_but_no_longer_recalled(conn: sqlite3.Connection) -> None:
    memory = add_memory(conn, "my locker code is 1234")
    archived = archive_memory(conn, memory.id)

    assert archived.archived_at is not None
    assert search(conn, "locker code") == []
    assert get_memory(conn, memory.id).content == "my locker code is 1234"
    assert archive_memory(conn, memory.id).archived_at == archived.archived_at  # idempotent
    assert counts(conn)["memories_archived"] == 1


def test_unknown_memories_are_not_found(conn: sqlite3.Connection) -> None:
    with pytest.raises(NotFound):
        get_memory(conn, "mem_missing")
    with pytest.raises(NotFound):
        archive_memory(conn, "mem_missing")


def test_a_retry_with_the_same_idempotency_key_returns_the_first_memory(
    conn: sqlite3.Connection,
) -> None:
    first = add_memory(conn, "buy milk", idempotency_key="client-42")
    again = add_memory(conn, "buy milk", idempotency_key="client-42")

    assert again == first
    assert counts(conn)["memories"] == 1
    with pytest.raises(InvalidArgument):
        add_memory(conn, "buy bread", idempotency_key="client-42")


@pytest.mark.parametrize("content", ["", "   ", "a\x00b", "x" * (store.MAX_CONTENT_CHARS + 1)])
def test_unusable_content_is_refused(conn: sqlite3.Connection, content: str) -> None:
    with pytest.raises(InvalidArgument):
        add_memory(conn, content)


def test_bad_kinds_and_limits_are_refused(conn: sqlite3.Connection) -> None:
    with pytest.raises(InvalidArgument):
        add_memory(conn, "x", kind="Bad Kind")
    for limit in (0, -1, store.MAX_LIMIT + 1):
        with pytest.raises(InvalidArgument):
            search(conn, "x", limit=limit)


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
    add_memory(conn, "one")
    add_turn(conn, "s", "user", "hi")
    add_turn(conn, "s", "assistant", "hello")
    assert counts(conn) == {"memories": 1, "turns": 2, "memories_archived": 0, "sessions": 1}


def test_the_index_follows_edits_and_deletes(conn: sqlite3.Connection) -> None:
    memory = add_memory(conn, "the cat sleeps")
    conn.execute("UPDATE memories SET content = 'the dog barks' WHERE id = ?", (memory.id,))
    assert search(conn, "cat") == []
    assert [h.id for h in search(conn, "dog")] == [memory.id]
    conn.execute("DELETE FROM memories WHERE id = ?", (memory.id,))
    assert search(conn, "dog") == []
    check_index(conn)


def test_migrations_are_idempotent_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    first = connect(path)
    assert migrate(first, MIGRATIONS) == len(MIGRATIONS)
    memory = add_memory(first, "persisted")
    first.close()

    second = connect(path)
    assert migrate(second, MIGRATIONS) == len(MIGRATIONS)
    assert second.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert get_memory(second, memory.id).content == "persisted"
    second.close()


def test_the_async_store_writes_durably_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"

    async def scenario() -> None:
        memory_store = MemoryStore.open(path, clock=Ticks())
        try:
            memory = await memory_store.add_memory("my dog is called Rex", kind="fact")
            asked, answered = await memory_store.add_exchange("s1", "hi", "hello")
            assert (asked.turn_no, answered.turn_no) == (1, 2)
            assert [h.id for h in await memory_store.search("dog")] == [memory.id]
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
