"""The ledger of consumed grants makes every grant single-use: across threads, connections and
restarts, exactly one consume of a jti (or of an action) succeeds."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from backends import Backend

from sonia.actions import grant_ledger
from sonia.kit.portable import Conn, PgConnection

EXP = 1_750_000_030


def _open(backend: Backend) -> Conn:
    return backend.connect("openclaw", grant_ledger.MIGRATIONS, grant_ledger.PG_MIGRATIONS)


@pytest.fixture()
def conn(backend: Backend) -> Iterator[Conn]:
    """The ledger on each backend (a SQLite file, a schema on a real PostgreSQL)."""
    conn = _open(backend)
    yield conn
    backend.close(conn)


def test_a_grant_is_consumed_once(conn: Conn) -> None:
    assert not grant_ledger.is_consumed(conn, "j1")
    assert grant_ledger.consume(conn, "j1", "act_1", EXP) is True
    assert grant_ledger.is_consumed(conn, "j1")
    assert grant_ledger.consume(conn, "j1", "act_1", EXP) is False
    assert grant_ledger.consume(conn, "j1", "act_other", EXP) is False


def test_a_second_grant_for_an_executed_action_is_refused(conn: Conn) -> None:
    assert grant_ledger.consume(conn, "j1", "act_1", EXP)
    assert grant_ledger.consume(conn, "j2", "act_1", EXP) is False
    assert grant_ledger.consume(conn, "j3", "act_2", EXP) is True


def test_consumption_survives_a_restart(backend: Backend) -> None:
    first = _open(backend)
    assert grant_ledger.consume(first, "j1", "act_1", EXP)
    backend.close(first)
    reopened = _open(backend)
    try:
        assert grant_ledger.consume(reopened, "j1", "act_1", EXP) is False
    finally:
        backend.close(reopened)


def test_a_consume_rolled_back_with_its_transaction_can_be_retried(
        conn: Conn) -> None:
    conn.execute("BEGIN" if isinstance(conn, PgConnection) else "BEGIN IMMEDIATE")
    assert grant_ledger.consume(conn, "j1", "act_1", EXP)
    conn.execute("ROLLBACK")
    assert grant_ledger.consume(conn, "j1", "act_1", EXP) is True


def test_two_connections_racing_for_the_same_grant_have_exactly_one_winner(
        backend: Backend) -> None:
    rounds = 40
    conns = [_open(backend), _open(backend)]
    results: list[list[bool]] = [[], []]
    errors: list[BaseException] = []
    barrier = threading.Barrier(2, timeout=10)

    def racer(index: int) -> None:
        try:
            for round_no in range(rounds):
                barrier.wait()
                results[index].append(
                    grant_ledger.consume(conns[index], f"jti-{round_no}", f"act-{round_no}", EXP)
                )
        except BaseException as exc:  # surfaced below, in the test's thread
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    for c in conns:
        backend.close(c)
    assert not errors, errors
    assert not any(thread.is_alive() for thread in threads)
    for round_no in range(rounds):
        assert results[0][round_no] != results[1][round_no], f"round {round_no}"


def test_prune_keeps_every_grant_that_could_still_verify(conn: Conn) -> None:
    now = 1_800_000_000.0
    grant_ledger.consume(conn, "old", "a1", int(now) - grant_ledger.PRUNE_MARGIN_SECONDS - 1)
    grant_ledger.consume(conn, "recent", "a2", int(now) - 10)
    grant_ledger.consume(conn, "live", "a3", int(now) + 30)
    assert grant_ledger.prune(conn, now=now) == 1
    assert not grant_ledger.is_consumed(conn, "old")
    assert grant_ledger.is_consumed(conn, "recent") and grant_ledger.is_consumed(conn, "live")
