"""EVA's decisions: what to do with a proposed action, and the store that remembers it.

`Decider.decide(tool, args)` turns a request into a `Verdict`:

- the arguments must match the tool's schema (INVALID_ARGUMENT), and a
  `shell.run` argv must pass the allowlist (INVALID_COMMAND);
- a tool the policy denies (or does not list) -> `deny` (the route records it,
  then raises `verdict.denial()`, 403 POLICY_DENIED);
- tier 0-1 -> `allow` (the route mints a grant at once);
- tier 2-3 -> `approval_required` (pending until an approver decides).

The store keeps one row per action in EVA's database. Status moves only
forward, each step a single conditional UPDATE whose rowcount says who won, so
that it happens exactly once even under concurrent requests:

    pending --approve--> approved --mark_executed--> executed
    pending --deny-----> denied
    pending --(expires_at passed)--> expired
    approved --approve, once its grant is dead--> approved (a new decision)

An `allow` verdict is stored as already `approved` (by "policy"), a `deny` as
`denied`. Approving or denying anything not pending is ALREADY_DECIDED (409);
an unknown action is NOT_FOUND (404).

The one exception is an approved action whose grant died unused (OpenClaw was
down, say): it may be approved again, but only once no verifier can accept its
last grant any more (`grant_dead_at`: the grant's `exp` plus the verifier's
skew). Until then a second approval is 409 like any other, so two concurrent
approvers can never both be told they approved. After it, the re-approval is a
new decision: the same conditional UPDATE picks one winner, the row records the
new approver and grant deadline, and the route appends its own audit record.
Even then the action cannot run twice: OpenClaw's ledger admits one execution
per action id.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sonia.actions import audit
from sonia.actions.commands import CommandPlan, plan_command
from sonia.actions.plan import canonical_json, plan_hash
from sonia.actions.policy import Policy, validate_args
from sonia.errors import AlreadyDecided, NotFound, PolicyDenied
from sonia.kit.portable import Conn
from sonia.services.eva import origins
from sonia.services.eva.verdict import Decision, Verdict

__all__ = [
    "DECISIONS",
    "EVA_MIGRATIONS",
    "EVA_PG_MIGRATIONS",
    "MIGRATIONS",
    "PG_MIGRATIONS",
    "POLICY_ACTOR",
    "STATUSES",
    "DecisionRecord",
    "Decider",
    "Verdict",
    "approve",
    "deny",
    "expire_pending",
    "get_decision",
    "list_decisions",
    "mark_executed",
    "new_action_id",
    "record_decision",
]

DECISIONS: tuple[Decision, ...] = ("allow", "approval_required", "deny")
STATUSES = ("pending", "approved", "denied", "executed", "expired")
POLICY_ACTOR = "policy"
"""`decided_by` of actions the policy decided on its own (tier 0-1 and denials)."""

MIGRATIONS: list[str] = [
    """
    CREATE TABLE decisions (
        action_id TEXT PRIMARY KEY,
        tool TEXT NOT NULL,
        args TEXT NOT NULL,
        principal TEXT NOT NULL,
        session_id TEXT,
        tier INTEGER NOT NULL CHECK (tier BETWEEN 0 AND 3),
        plan_hash TEXT NOT NULL,
        decision TEXT NOT NULL CHECK (decision IN ('allow', 'approval_required', 'deny')),
        reason TEXT NOT NULL,
        status TEXT NOT NULL
            CHECK (status IN ('pending', 'approved', 'denied', 'executed', 'expired')),
        created_at REAL NOT NULL,
        expires_at REAL,
        decided_by TEXT,
        decided_at REAL,
        executed_at REAL
    );
    CREATE INDEX decisions_pending ON decisions (status, expires_at);
    """,
    """
    ALTER TABLE decisions ADD COLUMN grant_dead_at REAL;
    """,
]
"""The decisions table alone (for tests or a separate database)."""

EVA_MIGRATIONS: list[str] = [MIGRATIONS[0], audit.MIGRATIONS[0], MIGRATIONS[1],
                             origins.MIGRATIONS[0]]
"""EVA's database: decisions and the audit log, so a decision and its audit record
commit in one transaction. Append new steps at the end; never edit or reorder."""

PG_MIGRATIONS: list[str] = [
    """
    CREATE TABLE decisions (
        rowid bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
        action_id text PRIMARY KEY,
        tool text NOT NULL,
        args text NOT NULL,
        principal text NOT NULL,
        session_id text,
        tier integer NOT NULL CHECK (tier BETWEEN 0 AND 3),
        plan_hash text NOT NULL,
        decision text NOT NULL CHECK (decision IN ('allow', 'approval_required', 'deny')),
        reason text NOT NULL,
        status text NOT NULL
            CHECK (status IN ('pending', 'approved', 'denied', 'executed', 'expired')),
        created_at double precision NOT NULL,
        expires_at double precision,
        decided_by text,
        decided_at double precision,
        executed_at double precision,
        grant_dead_at double precision
    );
    CREATE INDEX decisions_pending ON decisions (status, expires_at);
    """,
]
"""The decisions table on PostgreSQL. `rowid` (SQLite's implicit paging cursor) is an
identity column here, so the listing's SQL is the same on both."""

EVA_PG_MIGRATIONS: list[str] = [PG_MIGRATIONS[0], audit.PG_MIGRATIONS[0],
                                origins.PG_MIGRATIONS[0]]
"""EVA's schema on PostgreSQL (`[storage] url`): the same tables as EVA_MIGRATIONS.
Append new steps at the end; never edit or reorder."""


class Decider:
    """Policy + command allowlist + plan hash: decides every proposed action."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def decide(self, tool: str, args: object) -> Verdict:
        """The verdict for `tool` with `args`. Bad arguments or commands raise
        (INVALID_ARGUMENT, INVALID_COMMAND); policy denials are returned as verdicts.

        `plan_hash` covers `args` exactly as requested (defaults not filled in):
        OpenClaw must hash the arguments of the execute request the same way."""
        checked = validate_args(tool, args)
        assert isinstance(args, dict)  # validate_args refused anything else
        requested: dict[str, Any] = dict(args)
        digest = plan_hash(tool, requested)
        try:
            tool_policy = self.policy.tool(tool)
        except PolicyDenied as exc:
            return Verdict(tool, requested, 3, digest, "deny", exc.detail)
        if tool_policy.deny:
            return Verdict(tool, requested, tool_policy.tier, digest, "deny",
                           f"tool {tool} is denied by policy")
        tier = tool_policy.tier
        command: CommandPlan | None = None
        if tool == "shell.run":
            command = plan_command(self.policy, checked["argv"])
            if tool_policy.tier_from_command:
                tier = max(tier, command.tier)
        if tier <= 1:
            return Verdict(tool, requested, tier, digest, "allow",
                           f"tier {tier}: runs without approval", command)
        return Verdict(tool, requested, tier, digest, "approval_required",
                       f"tier {tier}: needs an approver", command)


@dataclass(frozen=True)
class DecisionRecord:
    """One stored action and where it stands."""

    action_id: str
    tool: str
    args: dict[str, Any]
    principal: str
    session_id: str | None
    tier: int
    plan_hash: str
    decision: Decision
    reason: str
    status: str
    created_at: float
    expires_at: float | None
    decided_by: str | None
    decided_at: float | None
    executed_at: float | None
    grant_dead_at: float | None = None
    """When the last grant an approver obtained stops verifying anywhere (None: no
    approver grant yet). Re-approval is possible only from this moment."""


_COLUMNS = ("action_id, tool, args, principal, session_id, tier, plan_hash, decision, reason, "
            "status, created_at, expires_at, decided_by, decided_at, executed_at, "
            "grant_dead_at")


def _record(row: Sequence[Any]) -> DecisionRecord:
    values = list(row)
    values[2] = json.loads(values[2])
    return DecisionRecord(*values)


def new_action_id() -> str:
    return f"act_{secrets.token_hex(12)}"


def record_decision(
    conn: Conn,
    verdict: Verdict,
    *,
    principal: str,
    session_id: str | None = None,
    ttl: float = 900.0,
    now: float | None = None,
    action_id: str | None = None,
) -> DecisionRecord:
    """Store `verdict` as a new action; pending ones expire `ttl` seconds from now."""
    created = time.time() if now is None else now
    status, decided_by, decided_at, expires = {
        "allow": ("approved", POLICY_ACTOR, created, None),
        "approval_required": ("pending", None, None, created + ttl),
        "deny": ("denied", POLICY_ACTOR, created, None),
    }[verdict.decision]
    record = DecisionRecord(
        action_id=action_id or new_action_id(), tool=verdict.tool, args=verdict.args,
        principal=principal, session_id=session_id, tier=verdict.tier,
        plan_hash=verdict.plan_hash, decision=verdict.decision, reason=verdict.reason,
        status=status, created_at=created, expires_at=expires, decided_by=decided_by,
        decided_at=decided_at, executed_at=None,
    )
    conn.execute(
        f"INSERT INTO decisions ({_COLUMNS}) VALUES "
        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (record.action_id, record.tool, canonical_json(record.args).decode(), record.principal,
         record.session_id, record.tier, record.plan_hash, record.decision, record.reason,
         record.status, record.created_at, record.expires_at, record.decided_by,
         record.decided_at, record.executed_at, record.grant_dead_at),
    )
    return record


def get_decision(conn: Conn, action_id: str) -> DecisionRecord:
    """The action `action_id` (NOT_FOUND when unknown)."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM decisions WHERE action_id = ?",
                       (action_id,)).fetchone()
    if row is None:
        raise NotFound(f"no action {action_id}")
    return _record(row)


def list_decisions(conn: Conn, *, status: str | None = None,
                   principal: str | None = None, before: int | None = None, limit: int = 50,
                   now: float | None = None) -> list[tuple[int, DecisionRecord]]:
    """Actions newest first, as (cursor, record); the next page is `before=<last cursor>`.

    `status` is where the action stands now: a pending action past its deadline is
    `expired` (stored as such only when it is next decided on), not `pending`.
    `principal` keeps one proposer's actions."""
    at = time.time() if now is None else now
    where: list[str] = ["1 = 1"]
    params: list[str | float] = []
    if status == "pending":
        where.append("status = 'pending' AND expires_at > ?")
        params.append(at)
    elif status == "expired":
        where.append("(status = 'expired' OR (status = 'pending' AND expires_at <= ?))")
        params.append(at)
    elif status is not None:
        where.append("status = ?")
        params.append(status)
    if principal is not None:
        where.append("principal = ?")
        params.append(principal)
    if before is not None:
        where.append("rowid < ?")
        params.append(before)
    rows = conn.execute(f"SELECT rowid, {_COLUMNS} FROM decisions WHERE {' AND '.join(where)}"
                        " ORDER BY rowid DESC LIMIT ?", (*params, limit)).fetchall()
    return [(int(row[0]), _record(tuple(row)[1:])) for row in rows]


def _not_pending(conn: Conn, action_id: str, now: float, verb: str) -> Exception:
    """Why `action_id` could not be `verb` (it exists: NOT_FOUND otherwise), as the 409."""
    record = get_decision(conn, action_id)
    if record.status == "pending" and record.expires_at is not None and record.expires_at <= now:
        conn.execute("UPDATE decisions SET status = 'expired' WHERE action_id = ? "
                     "AND status = 'pending'", (action_id,))
        return AlreadyDecided(f"action {action_id} expired before it was {verb}")
    if (verb == "approved" and record.status == "approved"
            and record.grant_dead_at is not None):
        return AlreadyDecided(
            f"action {action_id} is already approved; if it never runs, it may be approved "
            f"again once its grant is dead, at {record.grant_dead_at:.0f}",
            extra={"action_status": record.status,
                   "approvable_again_at": record.grant_dead_at})
    return AlreadyDecided(f"action {action_id} is {record.status}, not pending",
                          extra={"action_status": record.status})


def approve(conn: Conn, action_id: str, approver: str, *,
            grant_dead_at: float, now: float | None = None) -> DecisionRecord:
    """pending -> approved by `approver`, exactly once; or, for an approved action whose
    last grant is dead (`grant_dead_at <= now`), approved again as a new decision.

    `grant_dead_at` is when the grant the caller is about to hand out stops verifying
    (its `exp` plus the verifier's skew). One conditional UPDATE decides: of any number
    of concurrent approvers exactly one sees rowcount 1; every other gets ALREADY_DECIDED
    (409), as does approving an action that ran, was denied, expired or was decided by
    policy. NOT_FOUND when unknown.
    """
    at = time.time() if now is None else now
    changed = conn.execute(
        "UPDATE decisions SET status = 'approved', decided_by = ?, decided_at = ?, "
        "grant_dead_at = ? "
        "WHERE action_id = ? AND decision = 'approval_required' AND ("
        " (status = 'pending' AND expires_at > ?)"
        " OR (status = 'approved' AND grant_dead_at IS NOT NULL AND grant_dead_at <= ?))",
        (approver, at, grant_dead_at, action_id, at, at),
    ).rowcount
    if changed != 1:
        raise _not_pending(conn, action_id, at, "approved")
    return get_decision(conn, action_id)


def deny(conn: Conn, action_id: str, approver: str, *,
         now: float | None = None) -> DecisionRecord:
    """pending -> denied, exactly once (ALREADY_DECIDED otherwise, NOT_FOUND if unknown)."""
    at = time.time() if now is None else now
    changed = conn.execute(
        "UPDATE decisions SET status = 'denied', decided_by = ?, decided_at = ? "
        "WHERE action_id = ? AND status = 'pending' AND expires_at > ?",
        (approver, at, action_id, at),
    ).rowcount
    if changed != 1:
        raise _not_pending(conn, action_id, at, "denied")
    return get_decision(conn, action_id)


def mark_executed(conn: Conn, action_id: str, *,
                  now: float | None = None) -> DecisionRecord:
    """approved -> executed, exactly once (ALREADY_DECIDED otherwise)."""
    at = time.time() if now is None else now
    changed = conn.execute(
        "UPDATE decisions SET status = 'executed', executed_at = ? "
        "WHERE action_id = ? AND status = 'approved'",
        (at, action_id),
    ).rowcount
    if changed != 1:
        record = get_decision(conn, action_id)
        raise AlreadyDecided(f"action {action_id} is {record.status}, not approved")
    return get_decision(conn, action_id)


def expire_pending(conn: Conn, *, now: float | None = None) -> list[str]:
    """Mark every pending action past its deadline expired; returns their ids."""
    at = time.time() if now is None else now
    rows = conn.execute(
        "UPDATE decisions SET status = 'expired' WHERE status = 'pending' AND expires_at <= ? "
        "RETURNING action_id",
        (at,),
    ).fetchall()
    return sorted(str(row[0]) for row in rows)
