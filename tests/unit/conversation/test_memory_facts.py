"""What the memory service remembers on its own: the facts a user states about themselves.

The tests that store run on both backends (`backend` in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from backends import Backend, Ledger

from sonia.errors import InvalidArgument
from sonia.services.memory import facts
from sonia.services.memory.facts import facts_in

OWNER = "a1b2c3d4e5f6"
"""The key id the memories of these tests belong to."""


@pytest.fixture
def ledger(backend: Backend) -> Iterator[Ledger]:
    with backend.ledger() as opened:
        yield opened


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


def test_a_repeated_fact_is_stored_once(ledger: Ledger) -> None:
    first = ledger.remember_facts("My locker code is 4417.", owner=OWNER)
    # Other case: another memory.
    again = ledger.remember_facts("my locker code is 4417", owner=OWNER)
    same = ledger.remember_facts("My locker code is 4417!", owner=OWNER)
    assert first[0].new and again[0].new and not same[0].new
    assert same[0].memory.id == first[0].memory.id
    assert ledger.counts()["memories"] == 2


def test_an_archived_fact_told_again_is_remembered_afresh(ledger: Ledger) -> None:
    first = ledger.remember_facts("My bike is green.", owner=OWNER)[0].memory
    ledger.archive_memory(first.id, owner=OWNER)
    again = ledger.remember_facts("My bike is green.", owner=OWNER)[0]
    assert again.new and again.memory.id != first.id
    assert [hit.id for hit in ledger.search("bike green", owner=OWNER)] == [again.memory.id]


def test_one_fact_stated_by_two_keys_is_each_keys_own(ledger: Ledger) -> None:
    mine = ledger.remember_facts("My bike is green.", owner=OWNER)[0]
    theirs = ledger.remember_facts("My bike is green.", owner="0f0f0f0f0f0f")[0]
    assert mine.new and theirs.new and mine.memory.id != theirs.memory.id


def test_an_exchange_stores_both_turns_and_the_facts_together(ledger: Ledger) -> None:
    asked, answered, stored = ledger.store_exchange("s1", "My boat is Wanderer.",
                                                    "Noted: your boat is Wanderer.", owner=OWNER)
    assert answered is not None
    assert [t.role for t in ledger.list_turns("s1")] == ["user", "assistant"]
    assert [r.memory.content for r in stored] == ["My boat is Wanderer"]
    assert stored[0].memory.session_id == "s1" and stored[0].memory.kind == "fact"
    assert stored[0].memory.metadata == {"source": "user statement"}


def test_an_exchange_without_a_reply_keeps_the_users_turn(ledger: Ledger) -> None:
    asked, answered, _ = ledger.store_exchange("s1", "tell me a story", None, owner=OWNER)
    assert answered is None
    assert [t.content for t in ledger.list_turns("s1")] == ["tell me a story"]


def test_an_exchange_is_all_or_nothing(ledger: Ledger) -> None:
    store_exchange = ledger.function("store_exchange")
    with pytest.raises(InvalidArgument):
        ledger.transaction(lambda c: store_exchange(c, "s1", "My hat is red.", "\x00",
                                                    owner=OWNER))
    assert ledger.counts() == {"memories": 0, "turns": 0, "memories_archived": 0, "sessions": 0}
