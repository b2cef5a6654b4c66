"""The EVA service: policy tiers, approvals, signed execution grants, the audit chain.

Internal routes (service token; callers in `CALLERS`):

    POST /v1/decisions {tool, args, principal, session_id?, origin?, turn_id?, untrusted?}
        -> {action_id, decision: allow|approval_required, status, tier, plan_hash,
            reason, expires_at, grant?}; a policy denial is 403 POLICY_DENIED (with
            action_id); bad arguments or commands 400 (audited as `rejected`).
        `origin` is user (default) or model; a model's proposal with `untrusted`
        sources in its turn's context always needs approval (`origins.escalate`)
    GET  /v1/decisions?status=&principal=&before=&limit=
                                                   actions newest first, each as below, and
                                                   `next_before` (the cursor of the next page)
    GET  /v1/decisions/{action_id}                 the stored action and its status,
                                                   with origin, turn_id, untrusted_sources
    POST /v1/decisions/{action_id}/approve {approver}
        -> {action_id, status: approved, tool, args, plan_hash, grant}; 409
        ALREADY_DECIDED unless pending, or approved with its last grant dead
        (the 409 then carries `approvable_again_at`)
    POST /v1/decisions/{action_id}/deny {approver} -> {action_id, status: denied}
    POST /v1/decisions/{action_id}/executed {jti, outcome, result_digest, error_code?}
        OpenClaw's report that a grant was consumed and the tool ran (or failed)
    GET  /v1/grant-key                             the public key, as a JWK
    GET  /v1/audit?before=&limit=                  audit records newest first, and the
                                                   whole chain's verification (`audit.verify`;
                                                   whole each minute, else since the last)

The policy (policies/*.toml) is loaded inside `create`, so a policy that cannot
be trusted stops the service with exit code 2 before it binds a port. Every
decision and its audit record commit in one transaction; audit details carry a
grant's `jti`, never the grant itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Query
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from sonia.actions import audit
from sonia.actions.grants import DEFAULT_SKEW_SECONDS, GrantSigner, public_key_jwk
from sonia.actions.policy import load_policy
from sonia.errors import AlreadyDecided, ApiError, PolicyDenied
from sonia.kit.app import ServiceContext, ServiceParts, create_app, run_sync
from sonia.kit.portable import Conn, open_ledger_database
from sonia.services.eva.decisions import (
    EVA_MIGRATIONS,
    EVA_PG_MIGRATIONS,
    POLICY_ACTOR,
    Decider,
    DecisionRecord,
    Verdict,
    approve,
    deny,
    get_decision,
    list_decisions,
    mark_executed,
    new_action_id,
    record_decision,
)
from sonia.services.eva.origins import Origin, escalate, load_origin, save_origin

log = logging.getLogger("sonia.eva")

GATEWAY = frozenset({"gateway"})
CALLERS: dict[str, frozenset[str]] = {
    "/v1/decisions": GATEWAY,
    "/v1/decisions/{action_id}": GATEWAY,
    "/v1/decisions/{action_id}/approve": GATEWAY,
    "/v1/decisions/{action_id}/deny": GATEWAY,
    "/v1/decisions/{action_id}/executed": frozenset({"openclaw"}),
    "/v1/grant-key": frozenset({"openclaw", "gateway"}),
    "/v1/audit": GATEWAY,
}
"""Only the gateway proposes and decides; only OpenClaw reports executions."""

Name = Annotated[StrictStr, Field(min_length=1, max_length=200)]
Status = Literal["pending", "approved", "denied", "executed", "expired"]
MAX_CURSOR = 2**62
"""Paging cursors are rowids and sequence numbers: larger ones cannot exist (and would
not fit SQLite's or PostgreSQL's 64-bit integer)."""
ActionId = Annotated[str, Field(pattern=r"^act_[0-9a-f]{24}$")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Proposal(_Body):
    tool: Annotated[StrictStr, Field(min_length=1, max_length=100)]
    args: dict[str, Any]
    principal: Name
    session_id: Name | None = None
    origin: Literal["user", "model"] = "user"
    turn_id: Name | None = None
    untrusted: Annotated[list[Annotated[StrictStr, Field(min_length=1, max_length=300)]],
                         Field(max_length=256)] = Field(default_factory=list)

    def source(self) -> Origin:
        return Origin(origin=self.origin, turn_id=self.turn_id,
                      untrusted=tuple(dict.fromkeys(self.untrusted)))


class Decision(_Body):
    approver: Name


class Execution(_Body):
    jti: Name
    outcome: Literal["ok", "error"]
    result_digest: Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    error_code: Annotated[StrictStr, Field(max_length=64)] | None = None


def describe(record: DecisionRecord) -> dict[str, Any]:
    """The public view of a stored action."""
    return {
        "action_id": record.action_id, "tool": record.tool, "args": record.args,
        "principal": record.principal, "session_id": record.session_id, "tier": record.tier,
        "plan_hash": record.plan_hash, "decision": record.decision, "reason": record.reason,
        "status": record.status, "created_at": record.created_at,
        "expires_at": record.expires_at, "decided_by": record.decided_by,
        "decided_at": record.decided_at, "executed_at": record.executed_at,
    }


_AUDIT_KIND = {"allow": "allowed", "approval_required": "pending", "deny": "denied"}


class KnownChain:
    """The last intact check of the audit chain, so the page view walks only what was
    appended since (a whole walk of a release run's 57,000 records took 2 to 15 s a page
    under load), and the whole chain again at least every WHOLE_WALK_S seconds."""

    WHOLE_WALK_S = 60.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._whole_at = 0.0
        self._result: audit.VerifyResult | None = None

    def current(self) -> audit.VerifyResult | None:
        """Where to walk from, or None: walk it all."""
        if self._result is None or self._clock() - self._whole_at >= self.WHOLE_WALK_S:
            return None
        return self._result

    def checked(self, chain: Mapping[str, Any], *, whole: bool) -> None:
        if not chain.get("ok"):
            self._result = None
            return
        if whole:
            self._whole_at = self._clock()
        self._result = audit.VerifyResult(True, int(chain["records"]),
                                          head_hash=str(chain["head_hash"]))


class Eva:
    """The decisions of one EVA: policy, grant signer, database."""

    def __init__(self, ctx: ServiceContext) -> None:
        home = ctx.home
        self.policy = load_policy(home.policies, forbidden_roots=[home.root, home.workspace])
        self.decider = Decider(self.policy)
        self.signer = GrantSigner(home.grant_private_key(), ctx.settings.eva.grant_ttl_seconds)
        self.action_ttl = ctx.settings.gateway.action_ttl_seconds
        self.db = open_ledger_database(home, ctx.settings, service="eva",
                                       sqlite_migrations=EVA_MIGRATIONS,
                                       postgres_migrations=EVA_PG_MIGRATIONS)
        self.audit_known = KnownChain()

    async def propose(self, body: Proposal) -> dict[str, Any]:
        try:
            verdict = escalate(self.decider.decide(body.tool, body.args), body.source())
        except ApiError as exc:
            await self._rejected(body, exc)
            raise
        return await self.db.write(lambda c: self._record(c, body, verdict))

    async def _rejected(self, body: Proposal, exc: ApiError) -> None:
        detail = {"tool": body.tool, "principal": body.principal, "code": exc.code,
                  "reason": exc.detail[:500], **body.source().to_dict()}
        await self.db.write(lambda c: audit.append(c, "rejected", actor=POLICY_ACTOR,
                                                   detail=detail))

    def _record(self, conn: Conn, body: Proposal,
                verdict: Verdict) -> dict[str, Any]:
        record = record_decision(conn, verdict, principal=body.principal,
                                 session_id=body.session_id, ttl=self.action_ttl,
                                 action_id=new_action_id())
        save_origin(conn, record.action_id, body.source())
        detail: dict[str, Any] = {"tool": verdict.tool, "tier": verdict.tier,
                                  "plan_hash": verdict.plan_hash, "principal": body.principal,
                                  "reason": verdict.reason, **body.source().to_dict()}
        answer = {"action_id": record.action_id, "decision": verdict.decision,
                  "status": record.status, "tier": verdict.tier,
                  "plan_hash": verdict.plan_hash, "reason": verdict.reason,
                  "expires_at": record.expires_at}
        if verdict.decision == "allow":
            grant, claims = self.signer.mint(record.action_id, verdict.tool, verdict.plan_hash)
            detail["jti"] = claims.jti
            answer["grant"] = grant
        audit.append(conn, _AUDIT_KIND[verdict.decision], actor=POLICY_ACTOR,
                     action_id=record.action_id, detail=detail)
        if verdict.decision == "deny":
            # Committed with its audit record: the caller's transaction ends normally
            # and the route turns the answer into 403 POLICY_DENIED.
            answer["denial"] = verdict.reason
        return answer

    async def approve(self, action_id: str, approver: str) -> dict[str, Any]:
        """Approve once (409 for every later or concurrent attempt), or approve again an
        approved action whose last grant died unused: a new decision with its own audit
        record (`reapproval: true`)."""
        def write(conn: Conn) -> dict[str, Any]:
            at = time.time()
            before = get_decision(conn, action_id)  # NOT_FOUND before anything is minted
            # Minted first so that the row records exactly when this grant stops verifying;
            # a loser's grant is dropped here, unseen.
            grant, claims = self.signer.mint(action_id, before.tool, before.plan_hash, now=at)
            record = approve(conn, action_id, approver, now=at,
                             grant_dead_at=float(claims.exp + DEFAULT_SKEW_SECONDS))
            audit.append(conn, "approved", actor=approver, action_id=action_id,
                         detail={"tool": record.tool, "plan_hash": record.plan_hash,
                                 "jti": claims.jti, "reapproval": before.status == "approved",
                                 "grant_dead_at": record.grant_dead_at})
            return {"action_id": action_id, "status": record.status, "tool": record.tool,
                    "args": record.args, "tier": record.tier, "plan_hash": record.plan_hash,
                    "principal": record.principal, "grant": grant}

        return await self._decide(write)

    async def deny(self, action_id: str, approver: str) -> dict[str, Any]:
        def write(conn: Conn) -> dict[str, Any]:
            record = deny(conn, action_id, approver)
            audit.append(conn, "denied", actor=approver, action_id=action_id,
                         detail={"tool": record.tool, "plan_hash": record.plan_hash})
            return {"action_id": action_id, "status": record.status, "tool": record.tool,
                    "principal": record.principal}

        return await self._decide(write)

    async def _decide(self, write: Callable[[Conn], dict[str, Any]]
                      ) -> dict[str, Any]:
        """Run an approve or deny in one transaction. A refusal (409) leaves the transaction
        as a value and is raised once it committed, so that what the refusal found out is
        kept: a pending action past its deadline is stored as `expired`."""
        def guarded(conn: Conn) -> dict[str, Any] | AlreadyDecided:
            try:
                return write(conn)
            except AlreadyDecided as refused:
                return refused

        outcome = await self.db.write(guarded)
        if isinstance(outcome, AlreadyDecided):
            raise outcome
        return outcome

    async def executed(self, action_id: str, body: Execution) -> dict[str, Any]:
        def write(conn: Conn) -> dict[str, Any]:
            record = mark_executed(conn, action_id)
            detail: dict[str, Any] = {"tool": record.tool, "jti": body.jti,
                                      "outcome": body.outcome}
            if body.result_digest is not None:
                detail["result_digest"] = body.result_digest
            if body.error_code is not None:
                detail["error_code"] = body.error_code
            audit.append(conn, "executed", actor="openclaw", action_id=action_id,
                         detail=detail)
            return {"action_id": action_id, "status": record.status}

        return await self.db.write(write)


def shown(conn: Conn, record: DecisionRecord) -> dict[str, Any]:
    """A stored action with its origin, as the decision routes answer it."""
    return {**describe(record), **load_origin(conn, record.action_id).to_dict()}


def audit_page(conn: Conn, before: int | None, limit: int,
               since: audit.VerifyResult | None = None) -> dict[str, Any]:
    """One page of the audit log (newest first) and the verification of the whole chain:
    an approver reading the log sees at once whether it is intact. `since` (an earlier
    intact check) walks only what was appended after it (`audit.verify`)."""
    records = audit.latest_records(conn, before_seq=before, limit=limit)
    checked = audit.verify(conn, since=since)
    return {
        "records": [{"seq": r.seq, "ts": r.ts, "kind": r.kind, "action_id": r.action_id,
                     "actor": r.actor, "detail": r.detail, "hash": r.hash} for r in records],
        "next_before": records[-1].seq if len(records) == limit and records[-1].seq > 1
        else None,
        "chain": {"ok": checked.ok, "records": checked.count,
                  "first_bad_seq": checked.first_bad_seq, "reason": checked.reason,
                  "head_hash": checked.head_hash},
    }


def routes(eva: Eva) -> APIRouter:
    router = APIRouter(prefix="/v1")
    public_key = public_key_jwk(eva.signer.public_key)

    @router.get("/decisions")
    async def listing(status: Status | None = None,
                      principal: Annotated[str, Query(min_length=1, max_length=200)] | None
                      = None,
                      before: Annotated[int, Query(ge=1, le=MAX_CURSOR)] | None = None,
                      limit: Annotated[int, Query(ge=1, le=200)] = 50) -> dict[str, Any]:
        def read(conn: Conn) -> dict[str, Any]:
            found = list_decisions(conn, status=status, principal=principal, before=before,
                                   limit=limit)
            return {"decisions": [shown(conn, record) for _, record in found],
                    "next_before": found[-1][0] if len(found) == limit else None}

        return await eva.db.read(read)

    @router.post("/decisions")
    async def decide(body: Proposal) -> dict[str, Any]:
        answer = await eva.propose(body)
        if "denial" in answer:
            raise PolicyDenied(answer["denial"], extra={"action_id": answer["action_id"]})
        return answer

    @router.get("/decisions/{action_id}")
    async def get(action_id: ActionId) -> dict[str, Any]:
        return await eva.db.read(lambda c: shown(c, get_decision(c, action_id)))

    @router.post("/decisions/{action_id}/approve")
    async def approve_route(action_id: ActionId, body: Decision) -> dict[str, Any]:
        return await eva.approve(action_id, body.approver)

    @router.post("/decisions/{action_id}/deny")
    async def deny_route(action_id: ActionId, body: Decision) -> dict[str, Any]:
        return await eva.deny(action_id, body.approver)

    @router.post("/decisions/{action_id}/executed")
    async def executed(action_id: ActionId, body: Execution) -> dict[str, Any]:
        return await eva.executed(action_id, body)

    @router.get("/grant-key")
    async def grant_key() -> dict[str, str]:
        return public_key

    @router.get("/audit")
    async def audit_log(before: Annotated[int, Query(ge=1, le=MAX_CURSOR)] | None = None,
                        limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
        since = eva.audit_known.current()
        page = await eva.db.read(lambda c: audit_page(c, before, limit, since))
        eva.audit_known.checked(page["chain"], whole=since is None)
        return page

    return router


def create(ctx: ServiceContext) -> FastAPI:
    eva = Eva(ctx)  # ConfigError here (policy, key) exits 2 before any port is bound

    async def database() -> dict[str, object]:
        await eva.db.ping()
        return {}

    async def policy() -> dict[str, object]:
        return {"tools": len(eva.policy.tools), "commands": sorted(eva.policy.commands),
                "unavailable": list(eva.policy.unavailable)}

    return create_app(ctx, ServiceParts(
        service_routers=[routes(eva)],
        callers=CALLERS,
        checks={"database": database, "policy": policy},
        on_startup=[run_sync(eva.db.open)],
        on_shutdown=[run_sync(eva.db.close)],
    ))
