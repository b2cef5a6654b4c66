"""The memory ledger: memories, turns, full-text recall, on both backends.

Every test taking `ledger` runs twice: on a real SQLite file and on a fresh
database of a real PostgreSQL server (`backend` in tests/conftest.py). The
tests that pin SQLite's own machinery (FTS5 query syntax, `PRAGMA user_version`,
the migration of rows from before owners) say so and take `conn`, a SQLite
connection only; their PostgreSQL counterparts are in test_memory_postgres.py.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from backends import Backend, Ledger

from sonia.errors import InvalidArgument, NotFound
from sonia.kit.db import connect, migrate
from sonia.services.memory import store
from sonia.services.memory.store import (
    MIGRATIONS,
    add_memory,
    check_index,
    counts,
    get_memory,
    list_turns,
    match_expression,
    search,
)

OWNER = "a1b2c3d4e5f6"
"""The key id the memories of these tests belong to."""


@pytest.fixture
def ledger(backend: Backend) -> Iterator[Ledger]:
    with backend.ledger() as opened:
        yield opened


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """SQLite only: for the tests of SQLite's own machinery."""
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


def test_a_stored_memory_reads_back_with_a_stable_id(ledger: Ledger) -> None:
    memory = ledger.add_memory("my favourite colour is teal", kind="fact",
                               metadata={"source": "chat"}, session_id="s1", clock=Ticks(),
                               owner=OWNER)
    assert memory.id.startswith("mem_")
    assert memory.created_at == "2030-01-01T00:00:01.000000Z"
    assert ledger.get_memory(memory.id, owner=OWNER) == memory
    assert memory.to_dict()["metadata"] == {"source": "chat"}


def test_the_better_match_ranks_first_with_a_positive_score(ledger: Ledger) -> None:
    ledger.add_memory("I live in Lisbon", owner=OWNER)
    ledger.add_memory("the sea has many colours", owner=OWNER)
    best = ledger.add_memory("my favourite colour is teal", owner=OWNER)
    ledger.add_memory("my brother likes football", owner=OWNER)

    hits = ledger.search("What is my favourite colour?", limit=10, owner=OWNER)

    assert hits[0].id == best.id
    assert all(hit.score > 0 for hit in hits)
    assert hits == sorted(hits, key=lambda h: h.score, reverse=True)
    assert set(hits[0].to_dict()) == {"id", "kind", "content", "score", "created_at"}


def test_a_short_memory_that_says_it_beats_a_long_one_that_mentions_it(ledger: Ledger) -> None:
    """Both rankings (BM25, ts_rank normalised by length) weigh a match by its document."""
    long = ledger.add_memory("the garden has roses and tulips and a pond and a shed and a "
                             "bench and an old apple tree, and somewhere a teal gate", owner=OWNER)
    short = ledger.add_memory("the gate is teal", owner=OWNER)
    assert [h.id for h in ledger.search("teal gate", owner=OWNER)] == [short.id, long.id]


def test_stemming_matches_other_forms_of_a_word(ledger: Ledger) -> None:
    memory = ledger.add_memory("my sister runs marathons", owner=OWNER)
    assert [h.id for h in ledger.search("running a marathon", owner=OWNER)] == [memory.id]


@pytest.mark.parametrize("query", [
    '"', '""', "*", "teal*", "NEAR(", "NEAR(teal colour, 2)", "OR", "teal OR", "AND NOT",
    "-", "-teal", ":", "content:teal", "{content}: teal", "^teal", "(", ")", "teal)", "'",
    "\\", "\x00", "", "   ", "teal\"colour", "🙂", "a" * 5000,
    "teal & colour", "teal | !colour", "teal <-> colour", "teal:*", "'teal' & 'x'", "_", "²",
])
def test_queries_with_search_syntax_never_raise(ledger: Ledger, query: str) -> None:
    ledger.add_memory("my favourite colour is teal", owner=OWNER)
    ledger.search(query, owner=OWNER)  # no exception is the assertion


def test_search_operators_in_a_query_are_matched_as_words(ledger: Ledger) -> None:
    ledger.add_memory("my favourite colour is teal", owner=OWNER)
    # Were NOT (or !) an operator, these queries would exclude the memory they are about.
    for query in ("teal NOT colour", "teal & !colour"):
        hits = ledger.search(query, owner=OWNER)
        assert [h.content for h in hits] == ["my favourite colour is teal"]


def test_sqlite_only_the_fts5_expression_quotes_every_word() -> None:
    """SQLite's FTS5 syntax (PostgreSQL's tsquery: test_memory_postgres.py)."""
    assert match_expression('say "hi" NEAR(x) *') == '"say" OR "hi" OR "near" OR "x"'
    assert match_expression("*:-()") is None


def test_an_archived_memory_is_kept_but_no_longer_recalled(ledger: Ledger) -> None:
    memory = ledger.add_memory("my locker code is 1234", owner=OWNER)
    archived = ledger.archive_memory(memory.id, owner=OWNER)

    assert archived.archived_at is not None
    assert ledger.search("locker code", owner=OWNER) == []
    assert ledger.get_memory(memory.id, owner=OWNER).content == "my locker code is 1234"
    again = ledger.archive_memory(memory.id, owner=OWNER)
    assert again.archived_at == archived.archived_at  # idempotent
    assert ledger.counts()["memories_archived"] == 1


def test_unknown_memories_are_not_found(ledger: Ledger) -> None:
    with pytest.raises(NotFound):
        ledger.get_memory("mem_missing", owner=OWNER)
    with pytest.raises(NotFound):
        ledger.archive_memory("mem_missing", owner=OWNER)
    with pytest.raises(NotFound):
        ledger.delete_memory("mem_missing", owner=OWNER)


def test_a_forgotten_memory_is_gone_from_the_row_and_the_index(ledger: Ledger) -> None:
    kept = ledger.add_memory("my favourite colour is teal", owner=OWNER)
    gone = ledger.add_memory("my favourite tree is the teal oak", owner=OWNER)
    ledger.delete_memory(gone.id, owner=OWNER)
    assert [h.id for h in ledger.search("teal", owner=OWNER)] == [kept.id]
    with pytest.raises(NotFound):
        ledger.get_memory(gone.id, owner=OWNER)
    with pytest.raises(NotFound):
        ledger.delete_memory(gone.id, owner=OWNER)  # forgetting twice: not found
    assert ledger.execute("SELECT id FROM memories WHERE content LIKE ?", ("%oak%",)) == []
    ledger.check_index()


def test_a_retry_with_the_same_idempotency_key_returns_the_first_memory(
    ledger: Ledger,
) -> None:
    first = ledger.add_memory("buy milk", idempotency_key="client-42", owner=OWNER)
    again = ledger.add_memory("buy milk", idempotency_key="client-42", owner=OWNER)

    assert again == first
    assert ledger.counts()["memories"] == 1
    with pytest.raises(InvalidArgument):
        ledger.add_memory("buy bread", idempotency_key="client-42", owner=OWNER)


@pytest.mark.parametrize("content", ["", "   ", "a\x00b", "x" * (store.MAX_CONTENT_CHARS + 1)])
def test_unusable_content_is_refused(ledger: Ledger, content: str) -> None:
    with pytest.raises(InvalidArgument):
        ledger.add_memory(content, owner=OWNER)


def test_metadata_json_cannot_hold_is_refused(ledger: Ledger) -> None:
    with pytest.raises(InvalidArgument, match="metadata"):
        ledger.add_memory("x", owner=OWNER, metadata={"when": datetime(2030, 1, 1)})
    assert ledger.counts()["memories"] == 0


def test_bad_kinds_and_limits_are_refused(ledger: Ledger) -> None:
    with pytest.raises(InvalidArgument):
        ledger.add_memory("x", kind="Bad Kind", owner=OWNER)
    for limit in (0, -1, store.MAX_LIMIT + 1):
        with pytest.raises(InvalidArgument):
            ledger.search("x", limit=limit, owner=OWNER)


def test_turns_are_numbered_and_listed_in_order_per_session(ledger: Ledger) -> None:
    for n in range(5):
        ledger.add_turn("s1", "user", f"question {n}")
        ledger.add_turn("s1", "assistant", f"answer {n}")
    ledger.add_turn("s2", "user", "elsewhere")

    turns = ledger.list_turns("s1", limit=4)

    assert [t.turn_no for t in turns] == [7, 8, 9, 10]
    assert [t.content for t in turns] == ["question 3", "answer 3", "question 4", "answer 4"]
    assert [t.turn_no for t in ledger.list_turns("s2")] == [1]
    with pytest.raises(InvalidArgument):
        ledger.add_turn("s1", "system", "roles are user and assistant")


def test_recent_sessions_come_most_recent_first(ledger: Ledger) -> None:
    clock = Ticks()
    ledger.add_turn("old", "user", "a", clock=clock)
    ledger.add_turn("new", "user", "b", clock=clock)
    ledger.add_turn("old", "user", "c", clock=clock)

    sessions = ledger.recent_sessions()

    assert [(s.session_id, s.turns) for s in sessions] == [("old", 2), ("new", 1)]
    assert sessions[0].last_at > sessions[0].first_at


def test_counts_cover_every_table(ledger: Ledger) -> None:
    ledger.add_memory("one", owner=OWNER)
    ledger.add_turn("s", "user", "hi")
    ledger.add_turn("s", "assistant", "hello")
    assert ledger.counts() == {"memories": 1, "turns": 2, "memories_archived": 0, "sessions": 1}
    assert {"memories", "turns"} <= set(ledger.table_names())


def test_the_index_follows_edits_and_deletes(ledger: Ledger) -> None:
    memory = ledger.add_memory("the cat sleeps", owner=OWNER)
    ledger.execute("UPDATE memories SET content = 'the dog barks' WHERE id = ?", (memory.id,))
    assert ledger.search("cat", owner=OWNER) == []
    assert [h.id for h in ledger.search("dog", owner=OWNER)] == [memory.id]
    ledger.execute("DELETE FROM memories WHERE id = ?", (memory.id,))
    assert ledger.search("dog", owner=OWNER) == []
    ledger.check_index()


def test_sqlite_only_migrations_are_idempotent_on_reopen(tmp_path: Path) -> None:
    """`PRAGMA user_version` (PostgreSQL's schema_version: test_memory_postgres.py)."""
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


def test_the_async_repository_writes_durably_and_reads_back(backend: Backend) -> None:
    async def scenario() -> None:
        repository = backend.repository(clock=Ticks())
        repository.open()
        try:
            memory = await repository.add_memory("my dog is called Rex", kind="fact",
                                                 owner=OWNER)
            asked, answered = await repository.add_exchange("s1", "hi", "hello")
            assert (asked.turn_no, answered.turn_no) == (1, 2)
            assert [h.id for h in await repository.search("dog", owner=OWNER)] == [memory.id]
            hits, turns = await repository.context("s1", "dog", owner=OWNER, recall=5,
                                                   turns=1)
            assert ([h.id for h in hits], [t.content for t in turns]) == ([memory.id],
                                                                          ["hello"])
            assert (await repository.counts())["turns"] == 2
            assert {"memories", "turns"} <= set(await repository.tables())
            await repository.ping()
        finally:
            repository.close()

    asyncio.run(scenario())

    # Acknowledged writes are in the database, visible to a brand-new connection.
    with backend.ledger() as reader:
        assert reader.counts()["memories"] == 1
        assert [t.content for t in reader.list_turns("s1")] == ["hi", "hello"]


def test_concurrent_writers_number_turns_without_gaps_or_repeats(backend: Backend) -> None:
    """SQLite has one writer; PostgreSQL's pool writes at once and locks the session."""
    async def scenario() -> list[int]:
        repository = backend.repository()
        repository.open()
        try:
            await asyncio.gather(*(repository.add_turn("s1", "user", f"m{n}")
                                   for n in range(24)))
            await asyncio.gather(*(repository.add_memory("same", owner=OWNER,
                                                         idempotency_key="k")
                                   for _ in range(8)))
            assert (await repository.counts())["memories"] == 1
            return [t.turn_no for t in await repository.list_turns("s1", 50)]
        finally:
            repository.close()

    assert asyncio.run(scenario()) == list(range(1, 25))


OTHER = "0f0f0f0f0f0f"


def _archived_at(ledger: Ledger, memory_id: str) -> str | None:
    rows = ledger.execute("SELECT archived_at FROM memories WHERE id = ?", (memory_id,))
    return None if not rows else rows[0]["archived_at"]


def test_finding_8_another_owner_cannot_find_read_archive_or_forget_a_memory(
    ledger: Ledger,
) -> None:
    """Key B searches, reads, archives and forgets key A's memory: it finds nothing, reads
    404, archives 404, forgets 404, and by effect the row is still live and still A's."""
    mine = ledger.add_memory("my locker code is 4417", owner=OWNER)
    assert ledger.search("locker code", owner=OTHER) == []
    with pytest.raises(NotFound):
        ledger.get_memory(mine.id, owner=OTHER)
    with pytest.raises(NotFound):
        ledger.archive_memory(mine.id, owner=OTHER)
    with pytest.raises(NotFound):
        ledger.delete_memory(mine.id, owner=OTHER)
    assert _archived_at(ledger, mine.id) is None
    assert [h.id for h in ledger.search("locker code", owner=OWNER)] == [mine.id]


def test_finding_8_one_idempotency_key_gives_each_owner_its_own_memory(
    ledger: Ledger,
) -> None:
    """Two keys stating the same fact (same idempotency key) get two rows: the second
    key is not handed the first key's memory."""
    a = ledger.add_memory("my name is Ana", owner=OWNER, idempotency_key="fact:ana")
    b = ledger.add_memory("my name is Ana", owner=OTHER, idempotency_key="fact:ana")
    assert a.id != b.id
    assert ledger.add_memory("my name is Ana", owner=OTHER, idempotency_key="fact:ana") == b


@pytest.mark.parametrize("owner", ["", "legacy", "a b", "x" * 65])
def test_an_owner_must_be_a_key_id(ledger: Ledger, owner: str) -> None:
    with pytest.raises(InvalidArgument):
        ledger.search("x", owner=owner)
    with pytest.raises(InvalidArgument):
        ledger.add_memory("x", owner=owner)


def test_sqlite_only_finding_8_rows_from_before_owners_belong_to_no_key(
    tmp_path: Path,
) -> None:
    """A SQLite database written by the schema before owners is migrated: its memories
    get the legacy owner, which no key id is, so no key finds them; nothing is lost.
    (PostgreSQL storage began after owners: it has no such rows.)"""
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


def test_sqlite_only_the_turns_of_a_fresh_connection_read_back(conn: sqlite3.Connection) -> None:
    """The SQLite functions compose inside one transaction of the caller's."""
    from sonia.kit.db import transaction

    transaction(conn, lambda c: (store.add_turn(c, "s", "user", "a"),
                                 store.add_turn(c, "s", "assistant", "b")))
    assert [t.turn_no for t in list_turns(conn, "s")] == [1, 2]
