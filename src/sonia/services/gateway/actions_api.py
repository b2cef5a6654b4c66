"""Gateway routes: actions, approvals and the tool registry (user and approver keys).

    GET  /v1/tools                 the registry, from OpenClaw: tools, tiers, argument
                                   schemas, allowlisted commands, sandbox in force
    POST /v1/actions {tool, args, session_id?, idempotency_key?}
                                   tier 0-1: 200 {id, status: executed, tool, result}
                                   tier 2-3: 202 {id, status: pending_approval, tool,
                                                  plan_hash, expires_at}
                                   denied by policy: 403 POLICY_DENIED
    GET  /v1/actions?status=&limit=&cursor=
                                   actions newest first (an approver sees every key's, a
                                   user only their own): {actions: [...], next_cursor};
                                   status = pending|approved|executed|denied|expired
    GET  /v1/actions/{id}          its status (the proposer's key or an approver): tool,
                                   args, tier, plan_hash and `canonical_plan` (the exact
                                   bytes hashed), origin (user|model, turn_id,
                                   untrusted_sources), key_id, expiry, result or error
    GET  /v1/actions/{id}/preview  what it would change before anyone approves it: for
                                   file.write/file.delete the unified diff against the
                                   file as it is now (OpenClaw reads it through its path
                                   sandbox, runs nothing); for shell.run the argv and cwd
    POST /v1/actions/{id}/approve  approver key: EVA mints a grant, OpenClaw runs it once
                                   -> 200 {id, status: executed, tool, result, turn_id?};
                                   again: 409 ALREADY_DECIDED
    POST /v1/actions/{id}/deny     approver key -> 200 {id, status: denied, turn_id?}
    (`turn_id`: the chat turn that waited on the action and has now resumed, `agent`)

The gateway decides nothing itself: EVA decides (and audits), OpenClaw executes
only with EVA's grant. A tool that fails answers its own problem (404 NOT_FOUND,
403 PATH_OUTSIDE_SANDBOX, ...) with the action's id; the action is then spent.
"""

# No `from __future__ import annotations`: FastAPI must see the dependency
# aliases local to `routers()` as real objects.

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from starlette.responses import JSONResponse

from sonia.actions.plan import canonical_json
from sonia.errors import ApiError, InvalidArgument, NotFound, RateLimited, Unavailable
from sonia.home import ApiKey
from sonia.kit.client import failed_in_transport
from sonia.kit.portable import Conn
from sonia.services.gateway import actions, limits
from sonia.services.gateway.limits import RefusalBudget
from sonia.services.gateway.state import Gateway

log = logging.getLogger("sonia.gateway.actions")

ACTION_ID = re.compile(r"^act_[0-9a-f]{24}$")
EVA_STATUS = {"pending": "pending_approval", "approved": "approved", "executed": "executed",
              "denied": "denied", "expired": "expired"}
"""EVA's status of an action, as the public API names it."""

Name = Annotated[StrictStr, Field(min_length=1, max_length=200)]
Status = Literal["pending", "approved", "executed", "denied", "expired"]
CURSOR = re.compile(r"^[1-9][0-9]{0,17}$")


class NewAction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tool: Annotated[StrictStr, Field(min_length=1, max_length=100)]
    args: dict[str, Any] = Field(default_factory=dict)
    session_id: Name | None = None
    idempotency_key: Name | None = None


def principal(key: ApiKey) -> str:
    return f"key:{key.id}"


def key_id_of(principal_name: str) -> str:
    return principal_name.removeprefix("key:")


CLAIM_FIRST_PAUSE = 0.02
CLAIM_MAX_PAUSE = 0.5
"""How often a request asks for the answer of its key's first request, held elsewhere."""


class _Slot:
    """The lock of one (key id, idempotency key) and how many requests hold or await it."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


Decided = Callable[[str, dict[str, Any]], Awaitable[str | None]]
"""Told of an approver's decision: (action id, {status, result?|error?, code?}) -> the id of
a chat turn it resumed, if any (`agent.Agent.decided`)."""


class Actions:
    """Proposing, approving and running actions on behalf of user keys."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.eva = gw.ctx.client("eva")
        self.claw = gw.ctx.client("openclaw")
        self.execute_timeout = gw.ctx.settings.openclaw.shell_timeout_seconds + 15.0
        self.claim_wait = self.execute_timeout + 15.0
        # On PostgreSQL other gateways share the store, so a key is claimed by a row;
        # a SQLite file has this gateway alone, whose per-key lock is the claim.
        self.claims_in_database = gw.ctx.settings.storage.backend == "postgresql"
        self._locks: dict[tuple[str, str], _Slot] = {}
        settings = gw.ctx.settings.gateway
        self.refusals = RefusalBudget(settings.invalid_proposals_per_minute)
        self.max_pending = settings.max_pending_actions_per_key
        self.action_ttl = settings.action_ttl_seconds
        self._in_flight: dict[str, int] = {}
        self.on_decided: list[Decided] = []

    async def _decided(self, action_id: str, outcome: dict[str, Any]) -> str | None:
        turn_id = None
        for hook in self.on_decided:
            turn_id = await hook(action_id, outcome) or turn_id
        return turn_id

    async def run_granted(self, key_id: str, action_id: str, tool: str, args: dict[str, Any],
                          grant: str) -> Any:
        """Run an action EVA allowed with `grant` (a model's tool call goes this way too)."""
        return await self._execute(key_id, action_id, tool, args, grant)

    async def propose(self, key: ApiKey, body: NewAction) -> actions.StoredAnswer:
        if body.idempotency_key is None:
            return await self._propose(key, body)
        slot = (key.id, body.idempotency_key)
        entry = self._locks.setdefault(slot, _Slot())
        entry.users += 1
        digest = actions.request_hash(body.tool, body.args, body.session_id)
        try:
            async with entry.lock:  # one request per key here; the database across gateways
                claimed = await self._claim(key.id, slot[1], digest)
                if isinstance(claimed, actions.StoredAnswer):
                    return claimed
                return await self._answer_claimed(key, body, claimed)
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[slot]

    async def _claim(self, key_id: str, idempotency_key: str,
                     digest: str) -> actions.StoredAnswer | actions.Claim:
        """The kept answer, or the claim to make it; while another request (perhaps on
        another gateway) holds the claim, wait for its answer, up to the time its work
        can take, then say retry (503)."""
        if not self.claims_in_database:
            return await self.gw.db.read(lambda c: actions.claim_in_process(
                c, key_id, idempotency_key, digest))
        deadline = time.monotonic() + self.claim_wait
        pause = CLAIM_FIRST_PAUSE
        while True:
            got = await self.gw.db.write(lambda c: actions.claim_answer(
                c, key_id, idempotency_key, digest))
            if got is not None:
                return got
            if time.monotonic() >= deadline:
                raise Unavailable("the first request with this idempotency_key is still "
                                  "being answered; retry it later")
            await asyncio.sleep(pause)
            pause = min(pause * 2, CLAIM_MAX_PAUSE)

    async def _answer_claimed(self, key: ApiKey, body: NewAction,
                              claim: actions.Claim) -> actions.StoredAnswer:
        idempotency_key = str(body.idempotency_key)
        try:
            answer = await self._propose(key, body)
        except ApiError as exc:
            if exc.status >= 500 or isinstance(exc, RateLimited):
                # "retry later" answers are not kept: a retry must work
                await self.gw.db.write(lambda c: actions.release_claim(
                    c, key.id, idempotency_key, claim))
                raise
            answer = actions.answer_of_error(exc)
        except BaseException:  # cancelled too: a shutdown's grace ran out under it
            await asyncio.shield(self.gw.db.write(lambda c: actions.release_claim(
                c, key.id, idempotency_key, claim)))
            raise
        await self.gw.db.write(lambda c: actions.keep_answer(
            c, key.id, idempotency_key, claim, answer))
        return answer

    async def _propose(self, key: ApiKey, body: NewAction) -> actions.StoredAnswer:
        """Ask EVA, within the key's limits: a key with too many actions awaiting
        approval, or too many refused proposals this minute, is answered 429 before EVA
        is asked, so it can neither fill the approval queue nor the audit log."""
        self.refusals.check(key.id)
        since = time.time() - self.action_ttl
        pending = await self.gw.db.read(lambda c: actions.pending_count(c, key.id, since))
        limits.check_pending(pending + self._in_flight.get(key.id, 0), self.max_pending)
        self._in_flight[key.id] = self._in_flight.get(key.id, 0) + 1
        try:
            return await self._decide(key, body)
        finally:
            left = self._in_flight[key.id] - 1
            if left:
                self._in_flight[key.id] = left
            else:
                del self._in_flight[key.id]

    async def _decide(self, key: ApiKey, body: NewAction) -> actions.StoredAnswer:
        try:
            decision = await self.eva.request("POST", "/v1/decisions", json_body={
                "tool": body.tool, "args": body.args, "principal": principal(key),
                "session_id": body.session_id})
        except ApiError as exc:
            if 400 <= exc.status < 500:
                self.refusals.spend(key.id)
            raise
        action_id = str(decision["action_id"])
        if decision["decision"] == "allow":
            result = await self._execute(key.id, action_id, body.tool, body.args,
                                         str(decision["grant"]))
            return actions.StoredAnswer(200, {"id": action_id, "status": "executed",
                                              "tool": body.tool, "result": result})
        await self.gw.db.write(lambda c: actions.save_action(
            c, action_id, key.id, body.tool, "pending_approval"))
        return actions.StoredAnswer(202, {
            "id": action_id, "status": "pending_approval", "tool": body.tool,
            "tier": decision["tier"], "plan_hash": decision["plan_hash"],
            "expires_at": actions.iso_time(decision.get("expires_at"))})

    async def _execute(self, key_id: str, action_id: str, tool: str, args: dict[str, Any],
                       grant: str) -> Any:
        try:
            answer = await self._send_execute({"tool": tool, "args": args, "grant": grant})
        except ApiError as exc:
            exc.extra.setdefault("action_id", action_id)
            failure = exc
            await self.gw.db.write(lambda c: actions.save_action(
                c, action_id, key_id, tool, "failed", error=failure))
            raise
        result = answer["result"]
        await self.gw.db.write(lambda c: actions.save_action(
            c, action_id, key_id, tool, "executed", result=result))
        return result

    async def _send_execute(self, body: dict[str, Any]) -> Any:
        """POST /v1/execute, sent again once if the connection failed under it.

        Safe because a grant is single-use: if the first request did reach
        OpenClaw, the second is refused and nothing runs twice. (A pooled
        keep-alive connection the server has just closed is the usual cause.)
        """
        for attempt in (1, 2):
            try:
                return await self.claw.request("POST", "/v1/execute", json_body=body,
                                               timeout=self.execute_timeout)
            except Unavailable as exc:
                if attempt == 2 or not failed_in_transport(exc):
                    raise
                log.warning("execute call failed in transport (%s); sending it again",
                            type(exc.__cause__).__name__)
        raise AssertionError("unreachable")

    async def approve(self, key: ApiKey, action_id: str) -> dict[str, Any]:
        approved = await self.eva.request("POST", f"/v1/decisions/{action_id}/approve",
                                          json_body={"approver": principal(key)})
        owner = key_id_of(str(approved["principal"]))
        try:
            result = await self._execute(owner, action_id, str(approved["tool"]),
                                         dict(approved["args"]), str(approved["grant"]))
        except ApiError as exc:
            await self._decided(action_id, {"status": "failed", "error": exc.detail,
                                            "code": exc.code})
            raise
        answer = {"id": action_id, "status": "executed", "tool": approved["tool"],
                  "result": result}
        turn_id = await self._decided(action_id, {"status": "executed", "result": result})
        return answer if turn_id is None else {**answer, "turn_id": turn_id}

    async def deny(self, key: ApiKey, action_id: str) -> dict[str, Any]:
        denied = await self.eva.request("POST", f"/v1/decisions/{action_id}/deny",
                                        json_body={"approver": principal(key)})
        owner = key_id_of(str(denied["principal"]))
        await self.gw.db.write(lambda c: actions.save_action(
            c, action_id, owner, str(denied["tool"]), "denied"))
        answer = {"id": action_id, "status": "denied", "tool": denied["tool"]}
        turn_id = await self._decided(action_id, {"status": "denied"})
        return answer if turn_id is None else {**answer, "turn_id": turn_id}

    async def show(self, key: ApiKey, action_id: str) -> dict[str, Any]:
        record = await self.eva.request("GET", f"/v1/decisions/{action_id}")
        if record["principal"] != principal(key) and key.role != "approver":
            raise NotFound(f"no action {action_id}")
        row = await self.gw.db.read(lambda c: actions.get_action(c, action_id))
        shown = view(record, row)
        if row is not None and row.result is not None:
            shown["result"] = row.result
        if row is not None and row.error is not None:
            shown["error"] = row.error
        return shown

    async def listing(self, key: ApiKey, status: str | None, limit: int,
                      cursor: str | None) -> dict[str, Any]:
        """A page of actions, newest first: every key's for an approver, else the key's own."""
        params: dict[str, Any] = {"limit": limit}
        if status is not None:
            params["status"] = status
        if key.role != "approver":
            params["principal"] = principal(key)
        if cursor is not None:
            if not CURSOR.match(cursor):
                raise InvalidArgument("cursor must be a next_cursor this route answered")
            params["before"] = int(cursor)
        found = await self.eva.request("GET", "/v1/decisions", params=params)
        records = list(found["decisions"])
        ids = [str(r["action_id"]) for r in records]
        rows = await self.gw.db.read(lambda c: rows_of(c, ids))
        after = found.get("next_before")
        return {"actions": [view(r, rows.get(str(r["action_id"]))) for r in records],
                "next_cursor": None if after is None else str(after)}

    async def preview(self, key: ApiKey, action_id: str) -> dict[str, Any]:
        """The change a pending action would make, shown before anyone approves it."""
        shown = await self.show(key, action_id)
        base = {"id": action_id, "tool": shown["tool"], "status": shown["status"]}
        if shown["tool"] == "shell.run":
            return {**base, "kind": "command", "argv": shown["args"].get("argv"),
                    "cwd": shown["args"].get("cwd", ".")}
        if shown["tool"] not in ("file.write", "file.delete"):
            return {**base, "kind": "none", "reason": f"{shown['tool']} changes nothing"}
        if shown["status"] != "pending_approval":
            return {**base, "kind": "none",
                    "reason": f"the action is {shown['status']}: a preview shows what a "
                              "pending action would change"}
        change = await self.claw.request("POST", "/v1/preview",
                                         json_body={"tool": shown["tool"],
                                                    "args": shown["args"]})
        return {**base, "kind": "diff", **change}


def rows_of(conn: Conn, ids: list[str]) -> dict[str, actions.ActionRow]:
    """The gateway's rows of these actions, by id (one read for a page of them)."""
    found = (actions.get_action(conn, action_id) for action_id in ids)
    return {row.id: row for row in found if row is not None}


def view(record: dict[str, Any], row: actions.ActionRow | None) -> dict[str, Any]:
    """An action as the API shows it, from EVA's record and the gateway's own row.

    `canonical_plan` is the RFC 8785 JSON of {tool, args}: the exact bytes whose
    SHA-256 is `plan_hash`, so whoever approves can check what the grant binds."""
    status = EVA_STATUS.get(str(record["status"]), str(record["status"]))
    if status == "pending_approval" and (record["expires_at"] or 0) <= time.time():
        status = "expired"  # EVA marks it so when it is next decided on
    if status == "executed" and row is not None and row.error is not None:
        status = "failed"
    return {
        "id": record["action_id"], "status": status, "tool": record["tool"],
        "args": record["args"], "tier": record["tier"], "plan_hash": record["plan_hash"],
        "canonical_plan": canonical_json({"tool": record["tool"],
                                          "args": record["args"]}).decode(),
        "reason": record["reason"], "session_id": record["session_id"],
        "key_id": key_id_of(str(record["principal"])),
        "created_at": actions.iso_time(record["created_at"]),
        "expires_at": actions.iso_time(record["expires_at"]),
        "decided_by": record["decided_by"],
        "decided_at": actions.iso_time(record["decided_at"]),
        "executed_at": actions.iso_time(record["executed_at"]),
        "origin": record.get("origin", "user"), "turn_id": record.get("turn_id"),
        "untrusted_sources": record.get("untrusted_sources", []),
    }


def _action_id(action_id: str) -> str:
    if not ACTION_ID.match(action_id):
        raise NotFound(f"no action {action_id[:80]!r}")
    return action_id


def routers(gw: Gateway, service: Actions | None = None) -> list[APIRouter]:
    service = service or Actions(gw)
    User = Annotated[ApiKey, Depends(gw.user)]
    Approver = Annotated[ApiKey, Depends(gw.approver)]
    ActionId = Annotated[str, Path(max_length=200)]
    router = APIRouter(prefix="/v1", tags=["actions"])

    @router.get("/tools")
    async def tools(key: User) -> dict[str, Any]:
        answer: dict[str, Any] = await service.claw.request("GET", "/v1/tools")
        return answer

    @router.post("/actions")
    async def propose(key: User, body: NewAction) -> JSONResponse:
        answer = await service.propose(key, body)
        return JSONResponse(answer.replay(), status_code=answer.status_code)

    @router.get("/actions")
    async def listing(key: User, status: Status | None = None,
                      limit: Annotated[int, Query(ge=1, le=100)] = 50,
                      cursor: Annotated[str, Query(min_length=1, max_length=32)] | None = None
                      ) -> dict[str, Any]:
        return await service.listing(key, status, limit, cursor)

    @router.get("/actions/{action_id}")
    async def show(key: User, action_id: ActionId) -> dict[str, Any]:
        return await service.show(key, _action_id(action_id))

    @router.get("/actions/{action_id}/preview")
    async def preview(key: User, action_id: ActionId) -> dict[str, Any]:
        return await service.preview(key, _action_id(action_id))

    @router.post("/actions/{action_id}/approve")
    async def approve(key: Approver, action_id: ActionId) -> dict[str, Any]:
        return await service.approve(key, _action_id(action_id))

    @router.post("/actions/{action_id}/deny")
    async def deny(key: Approver, action_id: ActionId) -> dict[str, Any]:
        return await service.deny(key, _action_id(action_id))

    return [router]
