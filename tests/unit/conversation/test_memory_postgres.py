"""What is PostgreSQL's own in the memory ledger: its tsquery, its text search
configuration, its GIN index, its versioned schema (the shared behaviour is tested
on both backends in test_memory_store.py and test_memory_facts.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from backends import Backend, Ledger

from sonia.kit import pg
from sonia.pgserver import PostgresServer
from sonia.services.memory import postgres, repository

OWNER = "a1b2c3d4e5f6"


@pytest.fixture
def pg_backend(postgres_server: PostgresServer) -> Iterator[Backend]:
    name = "memory_pg_test"
    postgres_server.drop_database(name)
    url = postgres_server.create_database(name)
    try:
        yield Backend.postgresql(url, postgres_server.password)
    finally:
        postgres_server.drop_database(name)


@pytest.fixture
def ledger(pg_backend: Backend) -> Iterator[Ledger]:
    with pg_backend.ledger() as opened:
        yield opened


@pytest.mark.parametrize("module", [postgres, repository])
def test_exported_names_match_the_module(module: object) -> None:
    names = module.__all__  # type: ignore[attr-defined]
    assert set(names) <= {n for n in vars(module) if not n.startswith("_")}
    assert names == sorted(names)


def test_the_tsquery_is_quoted_words_only() -> None:
    assert postgres.tsquery_text("say 'hi' & !x | y:* <->") == "'say' | 'hi' | 'x' | 'y'"
    assert postgres.tsquery_text("*:-()&|!") is None


def test_no_word_is_a_stop_word(ledger: Ledger) -> None:
    """English's stop words would make "what is my" find nothing; SQLite's porter
    tokenizer drops none, and neither does `sonia_english`."""
    memory = ledger.add_memory("what is mine is yours", owner=OWNER)
    assert [h.id for h in ledger.search("what is my", owner=OWNER)] == [memory.id]


def test_search_uses_the_gin_index(ledger: Ledger) -> None:
    ledger.add_memory("my favourite colour is teal", owner=OWNER)
    ledger.execute("SET enable_seqscan = off")
    plan = ledger.execute(
        "EXPLAIN SELECT id FROM memories WHERE content_tsv @@ to_tsquery('sonia_english', ?)",
        ("'teal'",))
    assert "memories_fts" in "\n".join(row["QUERY PLAN"] for row in plan)


def test_the_schema_is_versioned_in_its_own_table(pg_backend: Backend) -> None:
    with pg_backend.ledger() as first:
        memory = first.add_memory("persisted", owner=OWNER)
    with pg_backend.ledger() as second:  # migrating again changes nothing
        assert pg.schema_version(second.conn, postgres.SCHEMA) == len(postgres.MIGRATIONS)
        rows = second.execute("SELECT version FROM memory.schema_version")
        assert [r["version"] for r in rows] == list(range(1, len(postgres.MIGRATIONS) + 1))
        assert second.get_memory(memory.id, owner=OWNER).content == "persisted"
        assert second.table_names() == ["memories", "schema_version", "turns"]


def test_the_ledger_lives_in_the_memory_schema_only(ledger: Ledger) -> None:
    ledger.add_memory("x", owner=OWNER)
    rows = ledger.execute("SELECT table_schema FROM information_schema.tables"
                          " WHERE table_name = 'memories'")
    assert [r["table_schema"] for r in rows] == ["memory"]


def test_check_index_notices_a_tsvector_that_disagrees(ledger: Ledger) -> None:
    """The generated column cannot drift; the check is what would say so if it did."""
    import psycopg

    ledger.add_memory("the cat sleeps", owner=OWNER)
    ledger.check_index()
    with pytest.raises(psycopg.DatabaseError):  # a generated column takes no writes
        ledger.execute("UPDATE memories SET content_tsv = to_tsvector('simple', 'dog')")
    ledger.execute("ALTER TABLE memories ALTER COLUMN content_tsv DROP EXPRESSION")
    ledger.execute("UPDATE memories SET content_tsv = to_tsvector('simple', 'dog')")
    with pytest.raises(psycopg.DatabaseError, match="disagrees"):
        ledger.check_index()
