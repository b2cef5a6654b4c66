"""EVA's decisions: tiers 0-1 run at once, tiers 2-3 wait for an approver, denied tools are
denied; and an action is approved, denied, executed or expired exactly once."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from backends import Backend
from starlette.testclient import TestClient

from sonia.actions import audit
from sonia.actions.plan import plan_hash
from sonia.actions.policy import Policy, ToolPolicy, load_policy
from sonia.errors import AlreadyDecided, InvalidArgument, InvalidCommand, NotFound, PolicyDenied
from sonia.home import Home
from sonia.kit.db import connect
from sonia.kit.portable import Conn, transaction
from sonia.services.eva.decisions import (
    EVA_MIGRATIONS,
    EVA_PG_MIGRATIONS,
    POLICY_ACTOR,
    Decider,
    DecisionRecord,
    Verdict,
    approve,
    deny,
    expire_pending,
    get_decision,
    mark_executed,
    record_decision,
)
from sonia.services.runner import build_app

NOW = 1_750_000_000.0


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(Path(str(files("sonia.policies"))))


@pytest.fixture()
def decider(policy: Policy) -> Decider:
    return Decider(policy)


def _connect(backend: Backend) -> Conn:
    return backend.connect("eva", EVA_MIGRATIONS, EVA_PG_MIGRATIONS)


@pytest.fixture()
def conn(backend: Backend) -> Iterator[Conn]:
    """EVA's ledger on each backend (a SQLite file, a schema on a real PostgreSQL)."""
    conn = _connect(backend)
    yield conn
    backend.close(conn)


# --- deciding ------------------------------------------------------------------------------
@pytest.mark.parametrize("tool, args, decision, tier", [
    ("file.read", {"path": "a.txt"}, "allow", 0),
    ("file.list", {}, "allow", 0),
    ("file.search", {"query": "x"}, "allow", 0),
    ("shell.run", {"argv": ["ls", "-la"]}, "allow", 1),
    ("shell.run", {"argv": ["grep", "-rn", "x", "."]}, "allow", 1),
    ("file.write", {"path": "a.txt", "content": "hi"}, "approval_required", 2),
    ("file.delete", {"path": "a.txt"}, "approval_required", 3),
    ("shell.run", {"argv": ["rm", "-rf", "build"]}, "approval_required", 3),
    ("shell.run", {"argv": ["mkdir", "d"]}, "approval_required", 3),
])
def test_tiers_decide_what_runs_at_once(
        decider: Decider, tool: str, args: dict[str, Any], decision: str, tier: int) -> None:
    verdict = decider.decide(tool, args)
    assert (verdict.decision, verdict.tier) == (decision, tier)
    assert verdict.plan_hash == plan_hash(tool, args)
    assert verdict.args == args


def test_shell_run_carries_its_command_plan(decider: Decider, policy: Policy) -> None:
    verdict = decider.decide("shell.run", {"argv": ["cat", "notes.txt"]})
    assert verdict.command is not None
    assert verdict.command.binary == policy.commands["cat"].binary


def test_the_plan_hash_covers_the_args_as_requested(decider: Decider) -> None:
    bare = decider.decide("file.list", {})
    explicit = decider.decide("file.list", {"path": "."})
    assert bare.plan_hash == plan_hash("file.list", {}) != explicit.plan_hash


def test_a_tool_denied_by_policy_is_denied(policy: Policy) -> None:
    tools = {**policy.tools, "file.delete": ToolPolicy("file.delete", 3, deny=True)}
    verdict = Decider(dataclasses.replace(policy, tools=tools)).decide(
        "file.delete", {"path": "a"})
    assert verdict.decision == "deny"
    error = verdict.denial()
    assert isinstance(error, PolicyDenied) and error.status == 403 and "denied" in error.detail


def test_a_tool_missing_from_the_policy_is_denied(policy: Policy) -> None:
    tools = {name: tool for name, tool in policy.tools.items() if name != "file.write"}
    verdict = Decider(dataclasses.replace(policy, tools=tools)).decide(
        "file.write", {"path": "a", "content": ""})
    assert verdict.decision == "deny" and "tools.toml" in verdict.reason


def test_the_policy_can_raise_shell_run_above_its_commands(policy: Policy) -> None:
    tools = {**policy.tools, "shell.run": ToolPolicy("shell.run", 2, tier_from_command=True)}
    verdict = Decider(dataclasses.replace(policy, tools=tools)).decide(
        "shell.run", {"argv": ["ls"]})
    assert (verdict.decision, verdict.tier) == ("approval_required", 2)


@pytest.mark.parametrize("tool, args, error", [
    ("file.read", {}, InvalidArgument),
    ("file.read", {"path": "a", "mode": "x"}, InvalidArgument),
    ("file.exec", {"path": "a"}, InvalidArgument),
    ("shell.run", {"argv": "rm -rf /"}, InvalidArgument),
    ("shell.run", {"argv": ["bash", "-c", "id"]}, InvalidCommand),
    ("shell.run", {"argv": ["rm", "-rf", "/"]}, InvalidCommand),
    ("file.read", {"path": float("nan")}, InvalidArgument),
])
def test_bad_requests_raise_instead_of_deciding(
        decider: Decider, tool: str, args: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        decider.decide(tool, args)


# --- the store -----------------------------------------------------------------------------
def _pending(conn: Conn, decider: Decider, ttl: float = 900) -> str:
    verdict = decider.decide("file.write", {"path": "a.txt", "content": "hi"})
    return record_decision(conn, verdict, principal="user:k1", session_id="s1", ttl=ttl,
                           now=NOW).action_id


def test_a_pending_action_is_stored_with_its_plan(
        conn: Conn, decider: Decider) -> None:
    action_id = _pending(conn, decider)
    record = get_decision(conn, action_id)
    assert record.status == "pending" and record.decision == "approval_required"
    assert record.args == {"path": "a.txt", "content": "hi"}
    assert record.expires_at == NOW + 900 and record.decided_by is None
    assert record.principal == "user:k1" and record.session_id == "s1"
    assert action_id.startswith("act_")


GRANT_LIFE = 35.0
"""A grant's `exp` plus the verifier's skew, past the moment of approval."""


def _approve(conn: Conn, action_id: str, who: str, at: float) -> DecisionRecord:
    return approve(conn, action_id, who, now=at, grant_dead_at=at + GRANT_LIFE)


def test_allow_and_deny_verdicts_are_stored_as_decided_by_policy(
        conn: Conn, decider: Decider) -> None:
    allowed = record_decision(conn, decider.decide("file.read", {"path": "a"}),
                              principal="user:k1", now=NOW)
    assert (allowed.status, allowed.decided_by) == ("approved", POLICY_ACTOR)
    denied = record_decision(conn, Verdict("file.delete", {"path": "a"}, 3, "0" * 64, "deny",
                                           "no"), principal="user:k1", now=NOW)
    assert (denied.status, denied.decided_by) == ("denied", POLICY_ACTOR)
    for action_id in (allowed.action_id, denied.action_id):
        with pytest.raises(AlreadyDecided):
            _approve(conn, action_id, "approver:k2", NOW + 3600)
    assert get_decision(conn, allowed.action_id).decided_by == POLICY_ACTOR


def test_a_second_approval_is_409_while_the_grant_can_still_verify(
        conn: Conn, decider: Decider) -> None:
    action_id = _pending(conn, decider)
    record = _approve(conn, action_id, "approver:k2", NOW + 1)
    assert (record.status, record.decided_by, record.decided_at, record.grant_dead_at) == (
        "approved", "approver:k2", NOW + 1, NOW + 1 + GRANT_LIFE)
    for who in ("approver:k2", "approver:k3"):  # the same approver too: no second grant
        with pytest.raises(AlreadyDecided) as caught:
            _approve(conn, action_id, who, NOW + GRANT_LIFE)
        assert caught.value.status == 409
        assert caught.value.extra["approvable_again_at"] == NOW + 1 + GRANT_LIFE
    assert get_decision(conn, action_id) == record, "a refused approval changes nothing"
    with pytest.raises(AlreadyDecided):
        deny(conn, action_id, "approver:k3", now=NOW + 2)


def test_an_approval_whose_grant_died_unused_is_decided_again(
        conn: Conn, decider: Decider) -> None:
    action_id = _pending(conn, decider, ttl=60)
    _approve(conn, action_id, "approver:k2", NOW + 1)
    later = NOW + 1 + GRANT_LIFE  # the first grant is dead; the pending ttl is long past too
    again = _approve(conn, action_id, "approver:k3", later)
    assert (again.status, again.decided_by, again.decided_at, again.grant_dead_at) == (
        "approved", "approver:k3", later, later + GRANT_LIFE), "a new decision, recorded"
    with pytest.raises(AlreadyDecided):
        _approve(conn, action_id, "approver:k2", later + 1)
    mark_executed(conn, action_id, now=later + 2)
    with pytest.raises(AlreadyDecided) as caught:
        _approve(conn, action_id, "approver:k2", later + 3600)
    assert "executed" in caught.value.detail
    assert "approvable_again_at" not in caught.value.extra


def test_a_denied_action_cannot_be_approved(conn: Conn, decider: Decider) -> None:
    action_id = _pending(conn, decider)
    assert deny(conn, action_id, "approver:k2", now=NOW).status == "denied"
    with pytest.raises(AlreadyDecided):
        _approve(conn, action_id, "approver:k2", NOW)
    with pytest.raises(AlreadyDecided):
        mark_executed(conn, action_id, now=NOW)


def test_unknown_actions_are_not_found(conn: Conn) -> None:
    with pytest.raises(NotFound):
        _approve(conn, "act_nope", "approver:k2", NOW)
    with pytest.raises(NotFound):
        deny(conn, "act_nope", "approver:k2")
    with pytest.raises(NotFound):
        mark_executed(conn, "act_nope")
    with pytest.raises(NotFound):
        get_decision(conn, "act_nope")


def test_an_expired_action_cannot_be_approved(conn: Conn, decider: Decider) -> None:
    action_id = _pending(conn, decider, ttl=60)
    with pytest.raises(AlreadyDecided) as caught:
        _approve(conn, action_id, "approver:k2", NOW + 60)
    assert "expired" in caught.value.detail
    assert get_decision(conn, action_id).status == "expired"


def test_expire_pending_sweeps_only_overdue_actions(
        conn: Conn, decider: Decider) -> None:
    short = _pending(conn, decider, ttl=10)
    long = _pending(conn, decider, ttl=1000)
    assert expire_pending(conn, now=NOW + 11) == [short]
    assert get_decision(conn, long).status == "pending"
    assert expire_pending(conn, now=NOW + 11) == []


def test_an_approved_action_is_executed_exactly_once(
        conn: Conn, decider: Decider) -> None:
    action_id = _pending(conn, decider)
    _approve(conn, action_id, "approver:k2", NOW)
    record = mark_executed(conn, action_id, now=NOW + 3)
    assert (record.status, record.executed_at) == ("executed", NOW + 3)
    with pytest.raises(AlreadyDecided):
        mark_executed(conn, action_id, now=NOW + 4)


# --- races: each one run ROUNDS times, on real connections to one database ------------------
ROUNDS = 200
"""Enough rounds that a check-then-act window shows up: the single conditional UPDATE has
none, so every round must have exactly one winner."""


class _Racers:
    """Threads, each with its own connection to the database file, kept for all rounds and
    released together by a barrier at the start of each round."""

    def __init__(self, backend: Backend, count: int) -> None:
        self.backend = backend
        self.conns = [_connect(backend) for _ in range(count)]
        self.barrier = threading.Barrier(count, timeout=30)

    def race(self, attempts: list[Callable[[Conn], Any]]) -> list[Any]:
        outcomes: list[Any] = [None] * len(attempts)

        def run(index: int) -> None:
            self.barrier.wait()
            try:
                outcomes[index] = transaction(self.conns[index], attempts[index])
            except Exception as exc:  # the outcome under test
                outcomes[index] = exc

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(attempts))]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        assert not any(thread.is_alive() for thread in threads), "a racer is stuck"
        return outcomes

    def close(self) -> None:
        for c in self.conns:
            self.backend.close(c)


@pytest.fixture()
def racers(backend: Backend, conn: Conn) -> Iterator[_Racers]:
    group = _Racers(backend, 4)
    yield group
    group.close()


def _approver(action_id: str, who: str, at: float = NOW) -> Callable[[Conn], Any]:
    return lambda c: _approve(c, action_id, who, at)


def _denier(action_id: str, who: str) -> Callable[[Conn], Any]:
    return lambda c: deny(c, action_id, who, now=NOW)


def _one_winner(outcomes: list[Any]) -> DecisionRecord:
    winners = [o for o in outcomes if not isinstance(o, Exception)]
    assert len(winners) == 1, outcomes
    assert all(isinstance(o, AlreadyDecided) for o in outcomes if o is not winners[0]), outcomes
    winner = winners[0]
    assert isinstance(winner, DecisionRecord)
    return winner


def test_concurrent_approvals_have_exactly_one_winner(
        conn: Conn, decider: Decider, racers: _Racers) -> None:
    for _ in range(ROUNDS):
        action_id = _pending(conn, decider)
        winner = _one_winner(racers.race([_approver(action_id, f"approver:{n}")
                                          for n in range(4)]))
        assert get_decision(conn, action_id).decided_by == winner.decided_by


def test_concurrent_reapprovals_after_the_grant_died_have_exactly_one_winner(
        conn: Conn, decider: Decider, racers: _Racers) -> None:
    later = NOW + GRANT_LIFE
    for _ in range(ROUNDS):
        action_id = _pending(conn, decider)
        _approve(conn, action_id, "approver:first", NOW)
        winner = _one_winner(racers.race([_approver(action_id, f"approver:{n}", later)
                                          for n in range(4)]))
        stored = get_decision(conn, action_id)
        assert (stored.decided_by, stored.decided_at) == (winner.decided_by, later)


def test_approve_racing_deny_has_exactly_one_winner(
        conn: Conn, decider: Decider, racers: _Racers) -> None:
    for n in range(ROUNDS):
        action_id = _pending(conn, decider)
        attempts = [_approver(action_id, "approver:a"), _denier(action_id, "approver:b")] * 2
        winner = _one_winner(racers.race(attempts[n % 2:] + attempts[:n % 2]))
        assert get_decision(conn, action_id).status == winner.status


def test_a_decision_and_its_audit_record_commit_together(
        conn: Conn, decider: Decider) -> None:
    verdict = decider.decide("file.write", {"path": "a.txt", "content": "hi"})

    def write(c: Conn) -> str:
        record = record_decision(c, verdict, principal="user:k1", now=NOW)
        audit.append(c, "pending", actor="user:k1", action_id=record.action_id,
                     detail={"tool": verdict.tool, "plan_hash": verdict.plan_hash})
        raise RuntimeError("crash before commit")

    with pytest.raises(RuntimeError):
        transaction(conn, write)
    assert conn.execute("SELECT count(*) FROM decisions").fetchone()[0] == 0
    assert audit.verify(conn).count == 0


# --- the routes: EVA's app in process, on a real home and database --------------------------
@pytest.fixture()
def eva_client(tmp_path: Path) -> Iterator[tuple[TestClient, Home]]:
    home = Home.at(tmp_path / "home")
    home.init()
    app, _ = build_app("eva", home)
    with TestClient(app, headers={"X-Service-Token": home.read_token("gateway")}) as client:
        yield client, home


def test_the_approve_route_grants_once_then_answers_409_until_the_grant_is_dead(
        eva_client: tuple[TestClient, Home]) -> None:
    client, home = eva_client
    proposed = client.post("/v1/decisions", json={
        "tool": "file.write", "args": {"path": "a.txt", "content": "hi"},
        "principal": "user:k1"}).json()
    action_id = proposed["action_id"]
    first = client.post(f"/v1/decisions/{action_id}/approve", json={"approver": "approver:a"})
    assert first.status_code == 200 and first.json()["grant"]
    second = client.post(f"/v1/decisions/{action_id}/approve", json={"approver": "approver:b"})
    assert (second.status_code, second.json()["code"]) == (409, "ALREADY_DECIDED")
    dead_at = second.json()["approvable_again_at"]
    assert dead_at > time.time() + 5, "the grant's exp plus the verifier's skew"

    with closing(connect(home.db_path("eva"))) as db:
        # The grant's life passes (rather than waiting it out): the deadline moves back.
        db.execute("UPDATE decisions SET grant_dead_at = ? WHERE action_id = ?",
                   (time.time() - 1, action_id))
    third = client.post(f"/v1/decisions/{action_id}/approve", json={"approver": "approver:b"})
    assert third.status_code == 200, third.text
    assert third.json()["grant"] != first.json()["grant"]
    shown = client.get(f"/v1/decisions/{action_id}").json()
    assert shown["decided_by"] == "approver:b"

    with closing(connect(home.db_path("eva"))) as db:
        assert audit.verify(db).ok
        rows = db.execute("SELECT kind, actor, detail FROM audit_log WHERE action_id = ? "
                          "ORDER BY seq", (action_id,)).fetchall()
    approvals = [(r[1], json.loads(r[2])["reapproval"]) for r in rows if r[0] == "approved"]
    assert approvals == [("approver:a", False), ("approver:b", True)], "its own audit record"


def test_an_approval_refused_for_lateness_leaves_the_action_expired(
        eva_client: tuple[TestClient, Home]) -> None:
    client, home = eva_client
    action_id = client.post("/v1/decisions", json={
        "tool": "file.delete", "args": {"path": "a.txt"}, "principal": "user:k1"}
    ).json()["action_id"]
    with closing(connect(home.db_path("eva"))) as db:
        # Its time to wait for an approver passes (rather than waiting it out).
        db.execute("UPDATE decisions SET expires_at = ? WHERE action_id = ?",
                   (time.time() - 1, action_id))
    late = client.post(f"/v1/decisions/{action_id}/approve", json={"approver": "approver:a"})
    assert (late.status_code, late.json()["code"]) == (409, "ALREADY_DECIDED")
    assert "expired" in late.json()["detail"]
    assert client.get(f"/v1/decisions/{action_id}").json()["status"] == "expired"
    denied = client.post(f"/v1/decisions/{action_id}/deny", json={"approver": "approver:a"})
    assert denied.status_code == 409 and denied.json()["action_status"] == "expired"
