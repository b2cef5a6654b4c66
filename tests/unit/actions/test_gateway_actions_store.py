"""The gateway's action rows and idempotent answers, in a real SQLite database and in a
real PostgreSQL one."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from backends import Backend

from sonia.errors import InvalidArgument, NotFound
from sonia.kit.portable import Conn
from sonia.services.gateway import actions
from sonia.services.gateway.state import MIGRATIONS


@pytest.fixture()
def conn(backend: Backend) -> Iterator[Conn]:
    """The whole gateway database on SQLite; the action store's schema on PostgreSQL."""
    connection = backend.connect("gateway", MIGRATIONS, actions.PG_MIGRATIONS)
    try:
        yield connection
    finally:
        backend.close(connection)


def test_an_answer_is_kept_per_key_and_idempotency_key(conn: Conn) -> None:
    digest = actions.request_hash("file.read", {"path": "a"}, None)
    answer = actions.StoredAnswer(200, {"id": "act_1", "status": "executed"})
    actions.save_answer(conn, "k1", "idem", digest, answer)
    assert actions.load_answer(conn, "k1", "idem", digest) == answer
    assert actions.load_answer(conn, "k2", "idem", digest) is None, "keys do not share"


def test_the_same_idempotency_key_with_another_request_is_refused(
    conn: Conn
) -> None:
    first = actions.request_hash("file.read", {"path": "a"}, None)
    actions.save_answer(conn, "k1", "idem", first, actions.StoredAnswer(200, {}))
    actions.save_answer(conn, "k1", "idem", first, actions.StoredAnswer(500, {}))
    assert actions.load_answer(conn, "k1", "idem", first) == actions.StoredAnswer(200, {}), \
        "the first answer is kept"
    other = actions.request_hash("file.read", {"path": "b"}, None)
    with pytest.raises(InvalidArgument):
        actions.load_answer(conn, "k1", "idem", other)


def test_a_kept_error_is_raised_again(conn: Conn) -> None:
    error = NotFound("no such file", extra={"action_id": "act_2"})
    answer = actions.answer_of_error(error)
    with pytest.raises(NotFound) as raised:
        answer.replay()
    assert raised.value.extra == {"action_id": "act_2"}


def test_an_action_row_moves_forward(conn: Conn) -> None:
    actions.save_action(conn, "act_3", "k1", "file.write", "pending_approval")
    actions.save_action(conn, "act_3", "k1", "file.write", "executed", result={"bytes": 1})
    row = actions.get_action(conn, "act_3")
    assert row is not None and row.status == "executed" and row.result == {"bytes": 1}
    assert actions.get_action(conn, "act_4") is None


def test_times_are_utc_iso_with_milliseconds() -> None:
    assert actions.iso_time(0.25) == "1970-01-01T00:00:00.250Z"
    assert actions.iso_time(None) is None


def test_the_first_request_claims_a_key_and_the_others_wait_for_its_answer(
    conn: Conn,
) -> None:
    digest = actions.request_hash("file.write", {"path": "a"}, None)
    claim = actions.claim_answer(conn, "k1", "idem", digest)
    assert isinstance(claim, actions.Claim)
    assert actions.claim_answer(conn, "k1", "idem", digest) is None, "held: wait"
    assert actions.load_answer(conn, "k1", "idem", digest) is None, "no answer yet"
    other = actions.request_hash("file.write", {"path": "b"}, None)
    with pytest.raises(InvalidArgument):
        actions.claim_answer(conn, "k1", "idem", other)
    answer = actions.StoredAnswer(202, {"id": "act_1", "status": "pending_approval"})
    assert actions.keep_answer(conn, "k1", "idem", claim, answer)
    assert actions.claim_answer(conn, "k1", "idem", digest) == answer
    assert actions.load_answer(conn, "k1", "idem", digest) == answer


def test_a_released_claim_lets_a_retry_work_and_a_stale_one_is_taken_over(
    conn: Conn,
) -> None:
    digest = actions.request_hash("file.write", {"path": "a"}, None)
    first = actions.claim_answer(conn, "k1", "idem", digest)
    assert isinstance(first, actions.Claim)
    actions.release_claim(conn, "k1", "idem", first)
    second = actions.claim_answer(conn, "k1", "idem", digest)
    assert isinstance(second, actions.Claim) and second != first

    later = actions.STALE_CLAIM_SECONDS + 1 + time.time()
    third = actions.claim_answer(conn, "k1", "idem", digest, now=later)
    assert isinstance(third, actions.Claim), "a claim left by a dead gateway is taken over"
    answer = actions.StoredAnswer(200, {"id": "act_2"})
    assert not actions.keep_answer(conn, "k1", "idem", second, answer), \
        "the old holder's answer no longer lands"
    assert actions.keep_answer(conn, "k1", "idem", third, answer)
    actions.release_claim(conn, "k1", "idem", third)
    assert actions.load_answer(conn, "k1", "idem", digest) == answer, "an answer stays"


def test_a_claim_in_process_writes_nothing_and_keeping_its_answer_inserts_it(
        conn: Conn) -> None:
    """The SQLite gateway's claim is its own per-key lock: no row (no commit, no fsync)
    until the answer is kept, so a gateway killed mid-request leaves nothing behind."""
    digest = actions.request_hash("file.read", {"path": "a"}, None)
    claim = actions.claim_in_process(conn, "k1", "idem", digest)
    assert isinstance(claim, actions.Claim) and not claim.in_database
    rows = "SELECT COUNT(*) FROM action_requests"
    assert conn.execute(rows).fetchone()[0] == 0
    actions.release_claim(conn, "k1", "idem", claim)  # nothing to give back
    answer = actions.StoredAnswer(200, {"id": "act_1"})
    assert actions.keep_answer(conn, "k1", "idem", claim, answer)
    assert actions.claim_in_process(conn, "k1", "idem", digest) == answer
    other = actions.request_hash("file.read", {"path": "b"}, None)
    with pytest.raises(InvalidArgument):
        actions.claim_in_process(conn, "k1", "idem", other)
