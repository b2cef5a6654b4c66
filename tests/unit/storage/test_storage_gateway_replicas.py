"""The gateway's own invariants hold across replicas: PostgreSQL enforces them.

Two gateways on one database each hold their own connection pool; nothing in a
process is shared. So what one gateway on SQLite got from its single writer must
come from the database, and each test here races two independent ledger
databases of the `gateway` schema (as `test_storage_security_replicas.py` does for
EVA, OpenClaw and the action store):

- 50 claims of one paused turn, all in their transactions at once -> one resumes
  it (the conditional UPDATE on `status = 'pending_approval'`);
- 20 session starts of one key at once -> exactly `max_per_key` open, and of 20
  keys -> exactly `max_open` (the advisory lock `sessions.LOCK`);
- a start, a default session, a touch made while the other replica's
  transaction holds what they wait for -> they see its commit (a start past
  the cap is refused, the same default session comes back, a session closed
  meanwhile is not touched open);
- idle expiry run by both at once -> each session expired once;
- 40 console sign-ins of one key at once -> at most MAX_SESSIONS_PER_KEY kept (the
  key's sign-ins are serialised).

Remove a guard and its test fails (see the report of the change that added them).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import pytest
from backends import Backend
from ledger_races import DEADLINE_SECONDS, race, replica_databases

from sonia.errors import NotFound, RateLimited
from sonia.kit import pg
from sonia.kit.portable import Conn, LedgerDatabase, PgConnection, transaction
from sonia.services.gateway import sessions, turns, web_sessions
from sonia.services.gateway.sessions import SessionPolicy
from sonia.services.gateway.state import MIGRATIONS, PG_MIGRATIONS

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)

T = TypeVar("T")
RACERS = 50


def _replicas(backend: Backend, *, threads: int = 4
              ) -> AbstractContextManager[tuple[LedgerDatabase, ...]]:
    """Two opened gateway databases on `backend`, as two gateway processes hold them."""
    return replica_databases(backend, "gateway", MIGRATIONS, PG_MIGRATIONS, threads=threads)


def _all_at_once(dbs: tuple[LedgerDatabase, ...], steps: list[Callable[[Conn], Any]]
                 ) -> list[Any]:
    """Each step in its own write transaction, alternately through either replica, all
    of them begun (a barrier) before any goes on: the widest window a race could use."""
    started = threading.Barrier(len(steps), timeout=DEADLINE_SECONDS)

    def together(step: Callable[[Conn], Any]) -> Callable[[Conn], Any]:
        def write(c: Conn) -> Any:
            c.execute("SELECT 1")  # the transaction has begun
            started.wait()
            return step(c)
        return write

    return race([functools.partial(dbs[n % 2].write, together(step))
                  for n, step in enumerate(steps)])


def test_fifty_claims_of_a_paused_turn_through_two_gateways_have_one_winner(
        backend: Backend) -> None:
    with _replicas(backend, threads=RACERS // 2) as (first, second):
        record = turns.TurnRecord(id=turns.new_turn_id(), key_id="k1", session_id="s1",
                                  message="write it", profile=None, messages=[], recalled=[],
                                  status="pending_approval",
                                  pending={"action_id": "act_1", "tool": "file.write"})
        first.write_sync(lambda c: turns.save(c, record))
        assert second.write_sync(lambda c: turns.find_pending(c, "act_1")) == record.id

        outcomes = _all_at_once((first, second), [
            lambda c: turns.claim(c, record.id, "act_1") for _ in range(RACERS)])
        assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes
        assert outcomes.count(True) == 1, f"{outcomes.count(True)} claims resumed the turn"
        status = first.write_sync(lambda c: c.execute(
            "SELECT status FROM agent_turns WHERE id = ?", (record.id,)).fetchone()[0])
        assert status == "running"


def test_starts_through_two_gateways_at_once_keep_both_caps(backend: Backend) -> None:
    policy = SessionPolicy(idle_seconds=600.0, max_open=5, max_per_key=3)
    now = time.time()
    with _replicas(backend, threads=10) as dbs:
        outcomes = _all_at_once(dbs, [
            lambda c: sessions.start(c, policy, "text", "one-key", now) for _ in range(20)])
        started = [o for o in outcomes if isinstance(o, sessions.Session)]
        assert len(started) == policy.max_per_key, outcomes
        assert all(isinstance(o, RateLimited) for o in outcomes if o not in started)

        outcomes = _all_at_once(dbs, [
            functools.partial(sessions.start, policy=policy, mode="text", owner=f"key-{n}",
                              now=now) for n in range(20)])
        started += [o for o in outcomes if isinstance(o, sessions.Session)]
        assert len(started) == policy.max_open, outcomes
        counts = dbs[0].write_sync(sessions.counts)
        assert counts["active"] == policy.max_open


# ---------------------------------------------------------------- one waits on the other


def _connections(backend: Backend) -> tuple[PgConnection, PgConnection]:
    made = [backend.connect("gateway", MIGRATIONS, PG_MIGRATIONS) for _ in range(2)]
    assert all(isinstance(c, PgConnection) for c in made)
    return made[0], made[1]  # type: ignore[return-value]


def _blocked(backend: Backend, pid: int) -> bool:
    """Whether the backend `pid` waits on a lock (a row's or an advisory one)."""
    watcher = pg.connect(backend.url, password=backend.password, schema="gateway")
    try:
        row = watcher.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                              (pid,)).fetchone()
    finally:
        watcher.close()
    return row is not None and row["wait_event_type"] == "Lock"


def _behind(backend: Backend, holder: Callable[[Conn], Any],
            waiter: Callable[[Conn], T]) -> tuple[Any, T | BaseException]:
    """`holder` runs in an open transaction of one gateway's connection; `waiter`, in a
    transaction of another's, starts meanwhile and runs until it waits on a lock the
    holder's transaction holds; then the holder commits. Both outcomes."""
    held, waiting = _connections(backend)
    try:
        outcome: list[T | BaseException] = []

        def wait() -> None:
            try:
                outcome.append(transaction(waiting, waiter))
            except BaseException as exc:  # noqa: BLE001 - the outcome under test
                outcome.append(exc)

        with held.raw.transaction():
            result = holder(held)
            thread = threading.Thread(target=wait, daemon=True)
            thread.start()
            deadline = time.monotonic() + DEADLINE_SECONDS
            while not _blocked(backend, waiting.raw.info.backend_pid):
                assert thread.is_alive(), f"it did not wait on the holder: {outcome}"
                assert time.monotonic() < deadline, "it never waited on the holder"
                time.sleep(0.01)
        thread.join(DEADLINE_SECONDS)
        assert not thread.is_alive()
        return result, outcome[0]
    finally:
        for conn in (held, waiting):
            Backend.close(conn)


POLICY = SessionPolicy(idle_seconds=100.0, max_open=10, max_per_key=1)


def test_a_start_waits_for_the_other_gateways_start_and_sees_the_cap(backend: Backend) -> None:
    first, second = _behind(backend,
                            lambda c: sessions.start(c, POLICY, "text", "alice", 0.0),
                            lambda c: sessions.start(c, POLICY, "text", "alice", 1.0))
    assert isinstance(first, sessions.Session)
    assert isinstance(second, RateLimited), second


def test_the_default_session_started_meanwhile_by_the_other_gateway_is_reused(
        backend: Backend) -> None:
    roomy = SessionPolicy(idle_seconds=100.0, max_open=10, max_per_key=5)
    first, second = _behind(backend,
                            lambda c: sessions.default_session(c, roomy, "alice", 0.0),
                            lambda c: sessions.default_session(c, roomy, "alice", 0.5))
    assert isinstance(second, sessions.Session), second
    assert second.id == first.id


def test_a_session_closed_by_the_other_gateway_meanwhile_is_not_touched_open(
        backend: Backend) -> None:
    conn = backend.connect("gateway", MIGRATIONS, PG_MIGRATIONS)
    try:
        made = sessions.start(conn, POLICY, "text", "alice", 0.0)
    finally:
        backend.close(conn)
    stopped, touched = _behind(backend,
                               lambda c: sessions.stop(c, POLICY, made.id, 5.0),
                               lambda c: sessions.touch(c, POLICY, made.id, 10.0))
    assert stopped.state == "closed"
    assert isinstance(touched, NotFound), touched
    assert "closed" in str(touched)


def test_idle_expiry_by_two_gateways_at_once_expires_each_session_once(
        backend: Backend) -> None:
    policy = SessionPolicy(idle_seconds=100.0, max_open=100, max_per_key=100)
    with _replicas(backend, threads=10) as dbs:
        made = dbs[0].write_sync(lambda c: [
            sessions.start(c, policy, "text", f"key-{n % 7}", 0.0).id for n in range(60)])
        outcomes = _all_at_once(dbs, [
            functools.partial(sessions.expire_idle, policy=policy, now=1000.0 + n)
            for n in range(20)])
        expired = [session_id for ids in outcomes for session_id in ids]
        assert sorted(expired) == sorted(made), "each expired once, by one of them"


def test_sign_ins_through_two_gateways_at_once_keep_the_per_key_bound(
        backend: Backend) -> None:
    now = time.time()
    with _replicas(backend, threads=20) as dbs:
        outcomes = _all_at_once(dbs, [
            functools.partial(web_sessions.remember, token_hash=f"hash-{n}", key_id="k1",
                              key_digest="digest", now=now + n, expires=now + 3600)
            for n in range(40)])
        assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes
        kept = dbs[1].write_sync(lambda c: c.execute(
            "SELECT token_hash FROM console_sessions WHERE key_id = 'k1'").fetchall())
        assert len(kept) == web_sessions.MAX_SESSIONS_PER_KEY
