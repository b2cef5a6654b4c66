"""What the console lists: EVA's actions by where they stand now, newest first and
paged; the audit log newest first, next to the verification of its whole chain; and a
memory its owner forgets is gone for good."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

import pytest

from sonia.actions import audit
from sonia.actions.policy import load_policy
from sonia.errors import NotFound
from sonia.kit.db import connect, migrate
from sonia.services.eva.app import KnownChain, audit_page
from sonia.services.eva.decisions import (
    EVA_MIGRATIONS,
    Decider,
    DecisionRecord,
    approve,
    deny,
    list_decisions,
    record_decision,
)
from sonia.services.memory import store

NOW = 1_750_000_000.0
WRITE = ("file.write", {"path": "a.txt", "content": "hi"})


@pytest.fixture
def eva(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = connect(tmp_path / "eva.db")
    migrate(conn, EVA_MIGRATIONS)
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def decider() -> Decider:
    return Decider(load_policy(Path(str(files("sonia.policies")))))


def propose(conn: sqlite3.Connection, decider: Decider, principal: str, at: float,
            tool: tuple[str, dict[str, str]] = WRITE) -> str:
    verdict = decider.decide(*tool)
    return record_decision(conn, verdict, principal=principal, ttl=100.0, now=at).action_id


def ids(found: list[tuple[int, DecisionRecord]]) -> list[str]:
    return [record.action_id for _, record in found]


def test_actions_come_newest_first_and_page_by_cursor(eva: sqlite3.Connection,
                                                      decider: Decider) -> None:
    made = [propose(eva, decider, "key:a", NOW + n) for n in range(5)]
    first = list_decisions(eva, limit=2, now=NOW)
    assert ids(first) == [made[4], made[3]]
    second = list_decisions(eva, limit=2, before=first[-1][0], now=NOW)
    assert ids(second) == [made[2], made[1]]
    last = list_decisions(eva, limit=2, before=second[-1][0], now=NOW)
    assert ids(last) == [made[0]]


def test_status_is_where_an_action_stands_now(eva: sqlite3.Connection,
                                              decider: Decider) -> None:
    """A pending action past its deadline is expired, though EVA stores that only
    when it is next decided on."""
    old = propose(eva, decider, "key:a", NOW - 500)
    fresh = propose(eva, decider, "key:a", NOW)
    approved = propose(eva, decider, "key:a", NOW)
    denied = propose(eva, decider, "key:a", NOW)
    read = propose(eva, decider, "key:a", NOW, ("file.read", {"path": "a.txt"}))
    approve(eva, approved, "key:boss", grant_dead_at=NOW + 60, now=NOW + 1)
    deny(eva, denied, "key:boss", now=NOW + 1)
    assert ids(list_decisions(eva, status="pending", now=NOW + 2)) == [fresh]
    assert ids(list_decisions(eva, status="expired", now=NOW + 2)) == [old]
    assert ids(list_decisions(eva, status="approved", now=NOW + 2)) == [read, approved]
    assert ids(list_decisions(eva, status="denied", now=NOW + 2)) == [denied]


def test_one_principal_sees_only_their_actions(eva: sqlite3.Connection,
                                               decider: Decider) -> None:
    mine = propose(eva, decider, "key:a", NOW)
    propose(eva, decider, "key:b", NOW)
    assert ids(list_decisions(eva, principal="key:a", now=NOW)) == [mine]


def test_the_audit_page_comes_newest_first_with_the_chain_verified(
        eva: sqlite3.Connection) -> None:
    for n in range(5):
        audit.append(eva, "pending", actor="policy", action_id=f"act_{n}", detail={"n": n})
    page = audit_page(eva, None, 2)
    assert [r["seq"] for r in page["records"]] == [5, 4]
    assert page["next_before"] == 4
    assert page["chain"] == {"ok": True, "records": 5, "first_bad_seq": None, "reason": "",
                             "head_hash": audit.head(eva)[1]}
    assert [r["seq"] for r in audit_page(eva, 4, 10)["records"]] == [3, 2, 1]
    assert audit_page(eva, 2, 1)["next_before"] is None


def test_an_edited_audit_log_is_reported_beside_its_records(eva: sqlite3.Connection) -> None:
    for n in range(3):
        audit.append(eva, "pending", actor="policy", detail={"n": n})
    eva.execute("DROP TRIGGER audit_log_no_update")  # someone with the database file
    eva.execute("UPDATE audit_log SET actor = 'nobody' WHERE seq = 2")
    chain = audit_page(eva, None, 10)["chain"]
    assert (chain["ok"], chain["first_bad_seq"]) == (False, 2)


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = connect(tmp_path / "memory.db")
    migrate(conn, store.MIGRATIONS)
    yield conn
    conn.close()


def test_a_forgotten_memory_is_deleted_and_no_longer_found(memory: sqlite3.Connection) -> None:
    kept = store.add_memory(memory, "my favourite colour is teal", owner="a1")
    gone = store.add_memory(memory, "my favourite tree is the teal oak", owner="a1")
    store.delete_memory(memory, gone.id, owner="a1")
    assert [h.id for h in store.search(memory, "teal", owner="a1")] == [kept.id]
    with pytest.raises(NotFound):
        store.get_memory(memory, gone.id, owner="a1")
    with pytest.raises(NotFound):
        store.delete_memory(memory, gone.id, owner="a1")  # forgetting twice: not found
    assert memory.execute("SELECT count(*) FROM memories WHERE id = ?",
                          (gone.id,)).fetchone()[0] == 0


def test_another_owner_cannot_forget_a_memory(memory: sqlite3.Connection) -> None:
    mine = store.add_memory(memory, "my locker code is 4711", owner="a1")
    with pytest.raises(NotFound):
        store.delete_memory(memory, mine.id, owner="b2")
    assert store.get_memory(memory, mine.id, owner="a1").content == "my locker code is 4711"


def test_the_page_view_walks_the_whole_chain_again_at_least_every_minute(
        eva: sqlite3.Connection) -> None:
    for n in range(3):
        audit.append(eva, "pending", actor="policy", detail={"n": n})
    now = [0.0]
    known = KnownChain(clock=lambda: now[0])
    assert known.current() is None  # nothing checked yet: walk it all
    known.checked(audit_page(eva, None, 10)["chain"], whole=True)
    eva.execute("DROP TRIGGER audit_log_no_update")
    eva.execute("UPDATE audit_log SET actor = 'nobody' WHERE seq = 2")
    now[0] = 59.0
    assert audit_page(eva, None, 10, known.current())["chain"]["ok"]  # not re-read yet
    now[0] = 60.0
    assert known.current() is None
    chain = audit_page(eva, None, 10, known.current())["chain"]
    assert (chain["ok"], chain["first_bad_seq"]) == (False, 2)
    known.checked(chain, whole=True)
    assert known.current() is None  # a broken chain is never walked from
