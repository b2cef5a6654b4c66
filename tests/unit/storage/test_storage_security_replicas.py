"""The security ledgers' invariants hold across replicas: PostgreSQL enforces them.

Each test opens TWO independent ledger databases (two connection pools, as two
replicas of a service have) on one real PostgreSQL database and races them:

- 50 approvals of one action, through both -> exactly one winner (a conditional
  UPDATE: the database re-checks `status = 'pending'` after the winner commits);
- one grant presented through both OpenClaw ledgers, round after round -> it runs
  once (the primary key on the jti, the unique action id);
- 200 audit appends from both EVA writers -> one unbroken chain (the append takes
  an advisory transaction lock, shared by every process on the database);
- an idempotent answer saved through two gateways' action stores at once -> one
  kept, the same for both (the primary key on (key id, idempotency key)).

No process-level lock is shared between the two: remove the database's guard and
each test fails.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from backends import Backend
from ledger_races import DEADLINE_SECONDS, race, replica_databases

from sonia.actions import audit, grant_ledger
from sonia.errors import AlreadyDecided
from sonia.kit.portable import Conn, LedgerDatabase
from sonia.services.eva.decisions import (
    EVA_MIGRATIONS,
    EVA_PG_MIGRATIONS,
    Verdict,
    approve,
    get_decision,
    record_decision,
)
from sonia.services.gateway import actions
from sonia.services.gateway.state import MIGRATIONS as GATEWAY_MIGRATIONS

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)

EXP = 1_750_000_030


def _eva(backend: Backend, threads: int = 4) -> Any:
    return replica_databases(backend, "eva", EVA_MIGRATIONS, EVA_PG_MIGRATIONS, threads=threads)


APPROVALS = 50


def test_fifty_approvals_through_two_replicas_have_one_winner(backend: Backend) -> None:
    # A connection per approval (25 on each replica), all in their transactions at once
    # (a barrier) before any of them decides: the widest window a race could use.
    with _eva(backend, threads=APPROVALS // 2) as (first, second):
        started = threading.Barrier(APPROVALS, timeout=DEADLINE_SECONDS)
        verdict = Verdict("file.write", {"path": "a.txt", "content": "hi"}, 2, "0" * 64,
                          "approval_required", "tier 2: needs an approver")
        action_id = first.write_sync(
            lambda c: record_decision(c, verdict, principal="user:k1")).action_id

        def approval(who: str) -> Callable[[Conn], Any]:
            # What EVA's approve route does in its one transaction: decide, then audit.
            def write(c: Conn) -> Any:
                c.execute("SELECT 1")  # the transaction has begun
                started.wait()
                try:
                    record = approve(c, action_id, who, grant_dead_at=2e9)
                except AlreadyDecided as refused:
                    return refused
                audit.append(c, "approved", actor=who, action_id=action_id,
                             detail={"plan_hash": record.plan_hash})
                return record
            return write

        outcomes = race([functools.partial((first, second)[n % 2].write,
                                            approval(f"approver:{n}"))
                          for n in range(APPROVALS)])
        winners = [o for o in outcomes if not isinstance(o, AlreadyDecided)]
        assert len(winners) == 1, outcomes
        stored = first.write_sync(lambda c: get_decision(c, action_id))
        assert stored.decided_by == winners[0].decided_by
        records = first.write_sync(lambda c: audit.read_records(c, action_id=action_id))
        assert [(r.kind, r.actor) for r in records] == [("approved", stored.decided_by)]


def test_a_grant_presented_through_two_ledgers_runs_once(backend: Backend) -> None:
    with replica_databases(backend, "openclaw", grant_ledger.MIGRATIONS,
                   grant_ledger.PG_MIGRATIONS) as (first, second):
        ran: list[str] = []

        def present(db: LedgerDatabase, jti: str) -> Callable[[], Awaitable[None]]:
            async def execute() -> None:  # OpenClaw's order: consume, then run
                if await db.write(lambda c: grant_ledger.consume(c, jti, f"act-{jti}", EXP)):
                    ran.append(jti)
            return execute

        rounds = [f"jti-{n}" for n in range(100)]
        outcomes = race([present(db, jti) for jti in rounds for db in (first, second)])
        assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes
        assert sorted(ran) == sorted(rounds), "every grant ran exactly once"


def test_two_writers_append_one_unbroken_chain(backend: Backend) -> None:
    with _eva(backend) as (first, second):
        def append(n: int) -> Callable[[Conn], audit.AuditRecord]:
            return lambda c: audit.append(c, "rejected", actor=f"writer-{n % 2}",
                                          detail={"n": n})

        outcomes = race([functools.partial((first, second)[n % 2].write, append(n))
                          for n in range(200)])
        assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes
        assert sorted(o.seq for o in outcomes) == list(range(1, 201))
        checked = first.write_sync(audit.verify)
        assert (checked.ok, checked.count, checked.reason) == (True, 200, "")
        by_second = second.write_sync(lambda c: audit.read_records(c, limit=500))
        assert sorted(r.detail["n"] for r in by_second) == list(range(200))


def test_an_idempotent_answer_saved_through_two_gateways_is_kept_once(
        backend: Backend) -> None:
    with replica_databases(backend, "gateway", GATEWAY_MIGRATIONS,
                   actions.PG_MIGRATIONS) as (first, second):
        digest = actions.request_hash("file.read", {"path": "a"}, None)

        def save(key: str, status: int) -> Callable[[Conn], None]:
            return lambda c: actions.save_answer(c, "k1", key, digest,
                                                 actions.StoredAnswer(status, {"by": status}))

        keys = [f"idem-{n}" for n in range(100)]
        outcomes = race([functools.partial(db.write, save(key, status)) for key in keys
                          for db, status in ((first, 200), (second, 201))])
        assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes
        def kept(c: Conn) -> list[actions.StoredAnswer | None]:
            return [actions.load_answer(c, "k1", key, digest) for key in keys]

        assert first.write_sync(kept) == second.write_sync(kept)
        rows = first.write_sync(
            lambda c: c.execute("SELECT count(*) FROM action_requests").fetchone())
        assert rows[0] == len(keys)
