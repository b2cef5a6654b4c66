"""Issue 10, finding 6: per-key caps at the gateway, on a real SQLite file and a real
PostgreSQL database.

One key flooding sessions, streams or refused proposals must not deny another key.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from backends import Backend

from sonia.errors import RateLimited
from sonia.kit.portable import Conn
from sonia.services.gateway import actions, sessions
from sonia.services.gateway.limits import RefusalBudget, check_pending
from sonia.services.gateway.sessions import SessionPolicy
from sonia.services.gateway.state import MIGRATIONS, PG_MIGRATIONS
from sonia.services.gateway.stream_proxy import LiveStreams

POLICY = SessionPolicy(idle_seconds=100.0, max_open=4, max_per_key=2)


@pytest.fixture
def conn(backend: Backend) -> Iterator[Conn]:
    connection = backend.connect("gateway", MIGRATIONS, PG_MIGRATIONS)
    try:
        yield connection
    finally:
        backend.close(connection)


def _active(conn: Conn, owner: str) -> int:
    return int(conn.execute("SELECT count(*) FROM sessions WHERE owner=? AND state='active'",
                            (owner,)).fetchone()[0])


def test_finding_6_one_key_cannot_take_every_session(conn: Conn) -> None:
    """Key A starts sessions until refused: it holds max_per_key, not every slot; key B
    then still gets sessions, and the global cap still holds for all keys together."""
    refused = 0
    for _ in range(10):
        try:
            sessions.start(conn, POLICY, "text", "key-a", now=1.0)
        except RateLimited as exc:
            refused += 1
            assert exc.extra["retry_after"] >= 1
    assert _active(conn, "key-a") == POLICY.max_per_key and refused == 8
    assert sessions.start(conn, POLICY, "text", "key-b", now=2.0).owner == "key-b"
    sessions.default_session(conn, POLICY, "key-b", now=3.0)  # B's second: its own cap
    with pytest.raises(RateLimited):
        sessions.start(conn, POLICY, "text", "key-c", now=4.0)  # 4 open: the global cap
    assert _active(conn, "key-b") == 2


def test_finding_6_a_session_takes_at_most_its_streams() -> None:
    """Stream slots are taken before the upstream is opened and given back after."""
    live = LiveStreams(max_per_session=2)
    live.reserve("ses_a")
    live.reserve("ses_a")
    with pytest.raises(RateLimited):
        live.reserve("ses_a")
    live.reserve("ses_b")  # another session is not affected
    live.release("ses_a")
    live.reserve("ses_a")
    with pytest.raises(RateLimited):
        live.reserve("ses_a")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_finding_6_refused_proposals_are_throttled_per_key() -> None:
    """Three refusals a minute: the fourth proposal of key A answers 429 with a
    Retry-After, key B is not affected, and A's budget comes back with time."""
    clock = Clock()
    budget = RefusalBudget(per_minute=3, clock=clock)
    for _ in range(3):
        budget.check("a")
        budget.spend("a")
    with pytest.raises(RateLimited) as refused:
        budget.check("a")
    assert refused.value.extra["retry_after"] == 20  # one token is 60/3 s away
    budget.check("b")
    clock.now += 20
    budget.check("a")
    budget.spend("a")
    with pytest.raises(RateLimited):
        budget.check("a")


def test_finding_6_pending_actions_are_counted_per_key_within_their_ttl(
    conn: Conn,
) -> None:
    for n in range(3):
        actions.save_action(conn, f"act_{n}", "a", "file.write", "pending_approval")
    actions.save_action(conn, "act_x", "a", "file.write", "executed")
    actions.save_action(conn, "act_b", "b", "file.write", "pending_approval")
    assert actions.pending_count(conn, "a", since=0.0) == 3
    assert actions.pending_count(conn, "b", since=0.0) == 1
    assert actions.pending_count(conn, "a", since=2e9) == 0  # all older: expired
    with pytest.raises(RateLimited):
        check_pending(3, cap=3)
    check_pending(1, cap=3)
