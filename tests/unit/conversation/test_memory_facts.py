"""What the memory service remembers on its own: the facts a user states about themselves."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from sonia.errors import InvalidArgument
from sonia.kit.db import connect, migrate
from sonia.services.memory import facts
from sonia.services.memory.facts import facts_in, remember_facts, store_exchange
from sonia.services.memory.store import MIGRATIONS, archive_memory, counts, list_turns, search

OWNER = "a1b2c3d4e5f6"
"""The key id the memories of these tests belong to."""


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = connect(tmp_path / "memory.db")
    migrate(connection, MIGRATIONS)
    yield connection
    connection.close()


def test_exported_names_match_the_module() -> None:
    assert set(facts.__all__) <= {n for n in vars(facts) if not n.startswith("_")}
    assert facts.__all__ == sorted(facts.__all__)


@pytest.mark.parametrize(("message", "expected"), [
    ("My favourite colour is teal.", ["My favourite colour is teal"]),
    ("I'm allergic to peanuts!", ["I'm allergic to peanuts"]),
    ("remember that the wifi password is on the fridge",
     ["the wifi password is on the fridge"]),
    ("Please note: standup moved to 10:30", ["standup moved to 10:30"]),
    ("Hi! My name is Ada. What's yours?", ["My name is Ada"]),
    ("My cat is Tom. My dog is Rex.", ["My cat is Tom", "My dog is Rex"]),
    ("What is my favourite colour?", []),
    ("is my car blue", []),
    ("hello there", []),
    ("The sky is blue.", []),
    ("", []),
])
def test_statements_about_the_user_are_facts_and_nothing_else(message: str,
                                                              expected: list[str]) -> None:
    assert facts_in(message) == expected


def test_a_message_gives_at_most_a_few_facts() -> None:
    message = " ".join(f"My item {n} is here." for n in range(20))
    assert len(facts_in(message)) == facts.MAX_FACTS_PER_MESSAGE


def test_a_repeated_fact_is_stored_once(conn: sqlite3.Connection) -> None:
    first = remember_facts(conn, "My locker code is 4417.", owner=OWNER)
    # Other case: another memory.
    again = remember_facts(conn, "my locker code is 4417", owner=OWNER)
    same = remember_facts(conn, "My locker code is 4417!", owner=OWNER)
    assert first[0].new and again[0].new and not same[0].new
    assert same[0].memory.id == first[0].memory.id
    assert counts(conn)["memories"] == 2


def test_an_archived_fact_told_again_is_remembered_afresh(conn: sqlite3.Connection) -> None:
    first = remember_facts(conn, "My bike is green.", owner=OWNER)[0].memory
    archive_memory(conn, first.id, owner=OWNER)
    again = remember_facts(conn, "My bike is green.", owner=OWNER)[0]
    assert again.new and again.memory.id != first.id
    assert [hit.id for hit in search(conn, "bike green", owner=OWNER)] == [again.memory.id]


def test_an_exchange_stores_both_turns_and_the_facts_together(conn: sqlite3.Connection) -> None:
    asked, answered, stored = store_exchange(conn, "s1", "My boat is Wanderer.",
                                             "Noted: your boat is Wanderer.", owner=OWNER)
    assert answered is not None
    assert [t.role for t in list_turns(conn, "s1")] == ["user", "assistant"]
    assert [r.memory.content for r in stored] == ["My boat is Wanderer"]
    assert stored[0].memory.session_id == "s1" and stored[0].memory.kind == "fact"


def test_an_exchange_without_a_reply_keeps_the_users_turn(conn: sqlite3.Connection) -> None:
    asked, answered, _ = store_exchange(conn, "s1", "tell me a story", None, owner=OWNER)
    assert answered is None
    assert [t.content for t in list_turns(conn, "s1")] == ["tell me a story"]


def test_an_exchange_is_all_or_nothing(conn: sqlite3.Connection) -> None:
    from sonia.kit.db import transaction

    with pytest.raises(InvalidArgument):
        transaction(conn, lambda c: store_exchange(c, "s1", "My hat is red.", "\x00",
                                                   owner=OWNER))
    assert counts(conn) == {"memories": 0, "turns": 0, "memories_archived": 0, "sessions": 0}
