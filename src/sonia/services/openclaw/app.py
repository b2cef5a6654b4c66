"""The OpenClaw service: tool execution behind EVA's signed grants.

Internal routes (service token; callers in `CALLERS`):

    POST /v1/execute {tool, args, grant}  -> {action_id, tool, result}
    GET  /v1/tools                        the registry: tools with tier and argument
                                          schema, the allowlisted commands, the sandbox
    POST /v1/preview {tool, args}         what a pending file.write or file.delete would
                                          change: a unified diff (`preview`); runs nothing

Nothing runs without a grant, and every grant runs at most once:

    require_grant     no grant at all                       403 POLICY_DENIED
    verify            forged, expired, other audience, other
                      tool, other args (plan hash recomputed
                      from this very request)                401 INVALID_APPROVAL
    consume           its jti already used                   401 INVALID_APPROVAL
                      its action already run (other jti)     409 ALREADY_DECIDED
    run               the tool, in a worker thread; its output redacted
    report            EVA `POST /v1/decisions/{id}/executed` (the audit record)

The consumption is committed to OpenClaw's own SQLite database before the tool
starts, so neither a concurrent request nor a restart can run a grant twice.
OpenClaw holds only EVA's public key (`grant_key`). /readyz reports the sandbox
level actually in force (bwrap, rlimits, or unavailable: `shell.run` refused), the
uid commands run as, and the path-resolution mechanism.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from starlette.concurrency import run_in_threadpool

from sonia.actions import grant_ledger
from sonia.actions.commands import CommandPlan, plan_command
from sonia.actions.grants import require_grant
from sonia.actions.plan import canonical_json
from sonia.actions.policy import Policy, load_policy
from sonia.errors import AlreadyDecided, ApiError, InvalidApproval
from sonia.kit.app import ServiceContext, ServiceParts, create_app, run_sync
from sonia.kit.portable import open_ledger_database
from sonia.redact import Redactor
from sonia.services.openclaw.execution import Executor, detect_sandbox
from sonia.services.openclaw.grant_key import GrantKeySource
from sonia.services.openclaw.operands import check_plan
from sonia.services.openclaw.paths import DEFAULT_PROTECTED, Workspace
from sonia.services.openclaw.preview import preview
from sonia.services.openclaw.reaper import REAPER
from sonia.services.openclaw.tools import Toolbox

log = logging.getLogger("sonia.openclaw")

CALLERS: dict[str, frozenset[str]] = {
    "/v1/execute": frozenset({"gateway"}),
    "/v1/tools": frozenset({"gateway"}),
    "/v1/preview": frozenset({"gateway"}),
}

PROTECTED: tuple[str, ...] = (*DEFAULT_PROTECTED, ".git", ".gitconfig", ".config/git")
"""No tool touches a repository's internals or git's per-user configuration (the
workspace is the child's HOME): hooks, filters and config entries run code."""
REPORT_ATTEMPTS = 3
REAP_INTERVAL_S = 0.5


class PreviewBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tool: Annotated[StrictStr, Field(min_length=1, max_length=100)]
    args: dict[str, Any]


class ExecuteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tool: Annotated[StrictStr, Field(min_length=1, max_length=100)]
    args: dict[str, Any]
    grant: Any = None


def result_digest(result: Any) -> str:
    return hashlib.sha256(canonical_json(result)).hexdigest()


class OpenClaw:
    """The workspace, the tools, the grant ledger and EVA's key of one OpenClaw."""

    def __init__(self, ctx: ServiceContext) -> None:
        home, settings = ctx.home, ctx.settings.openclaw
        self.ctx = ctx
        self.policy: Policy = load_policy(home.policies,
                                          forbidden_roots=[home.root, home.workspace])
        REAPER.adopt_orphans()  # before the first sandbox runs: its orphans come to us
        self.sandbox = detect_sandbox(settings.sandbox,
                                      allow_unsandboxed=settings.allow_unsandboxed)
        REAPER.reap_orphans()
        self._reaping: asyncio.Task[None] | None = None
        home.workspace.mkdir(exist_ok=True)
        self.workspace = Workspace(home.workspace, protected=PROTECTED)
        redactor = Redactor(ctx.tokens.values())
        self.executor = Executor(self.workspace, self.sandbox,
                                 timeout_seconds=settings.shell_timeout_seconds,
                                 max_output_bytes=settings.max_output_bytes,
                                 redactor=redactor)
        self.toolbox = Toolbox(self.workspace, executor=self.executor,
                               validate_command=self.validate_command, redactor=redactor,
                               max_file_bytes=settings.max_file_bytes)
        self.db = open_ledger_database(home, ctx.settings, service="openclaw",
                                       sqlite_migrations=grant_ledger.MIGRATIONS,
                                       postgres_migrations=grant_ledger.PG_MIGRATIONS)
        self.keys = GrantKeySource(ctx.client("eva"))

    def validate_command(self, argv: list[str], cwd: str = ".") -> CommandPlan:
        return check_plan(self.workspace, plan_command(self.policy, argv), cwd)

    async def execute(self, body: ExecuteBody) -> dict[str, Any]:
        grant = require_grant(body.grant)
        verifier = await self.keys.verifier()
        claims = verifier.verify(grant, tool=body.tool, args=body.args)
        fresh = await self.db.write(lambda c: grant_ledger.consume(
            c, claims.jti, claims.action_id, claims.exp))
        if not fresh:
            log.warning("refused a used grant jti=%s action=%s", claims.jti, claims.action_id)
            reused = await self.db.read(lambda c: grant_ledger.is_consumed(c, claims.jti))
            if not reused:
                # A fresh grant for an action that already ran (a re-issued approval
                # racing the first): the action is decided, not the grant forged.
                raise AlreadyDecided(f"action {claims.action_id} has already been executed")
            raise InvalidApproval("grant already used")
        try:
            result = await run_in_threadpool(self.toolbox.run, body.tool, body.args)
        except ApiError as exc:
            await self._report(claims.action_id, {"jti": claims.jti, "outcome": "error",
                                                  "error_code": exc.code})
            exc.extra.setdefault("action_id", claims.action_id)
            raise
        await self._report(claims.action_id, {"jti": claims.jti, "outcome": "ok",
                                              "result_digest": result_digest(result)})
        return {"action_id": claims.action_id, "tool": body.tool, "result": result}

    async def _report(self, action_id: str, body: dict[str, Any]) -> None:
        """Tell EVA the grant was spent, so the audit chain records the execution."""
        eva = self.ctx.client("eva")
        for attempt in range(1, REPORT_ATTEMPTS + 1):
            try:
                await eva.request("POST", f"/v1/decisions/{action_id}/executed",
                                  json_body=body, timeout=5.0)
                return
            except ApiError as exc:
                if exc.status < 500 or attempt == REPORT_ATTEMPTS:
                    log.error("could not report the execution of %s to EVA: %s %s",
                              action_id, exc.code, exc.detail)
                    return

    def describe(self) -> dict[str, Any]:
        tools = []
        for spec in self.toolbox.describe():
            entry = self.policy.tools.get(spec["name"])
            tools.append({**spec, "policy_tier": entry.tier if entry else None,
                          "denied": entry is None or entry.deny})
        return {"tools": tools, "commands": sorted(self.policy.commands),
                "sandbox": self.sandbox.as_dict(), "paths": self.workspace.mechanism}

    async def start_reaping(self) -> None:
        async def loop() -> None:
            while True:
                await asyncio.sleep(REAP_INTERVAL_S)
                await run_in_threadpool(REAPER.reap_orphans)

        self._reaping = asyncio.create_task(loop())

    async def stop_reaping(self) -> None:
        if self._reaping is not None:
            self._reaping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaping
        REAPER.reap_orphans()

    def close(self) -> None:
        self.db.close()
        self.workspace.close()


def routes(claw: OpenClaw) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.post("/execute")
    async def execute(body: ExecuteBody) -> dict[str, Any]:
        return await claw.execute(body)

    @router.get("/tools")
    async def tools() -> dict[str, Any]:
        return claw.describe()

    @router.post("/preview")
    async def preview_route(body: PreviewBody) -> dict[str, Any]:
        return await run_in_threadpool(preview, claw.toolbox, body.tool, body.args)

    return router


def create(ctx: ServiceContext) -> FastAPI:
    claw = OpenClaw(ctx)  # ConfigError (policy, forced bwrap missing) exits 2

    async def database() -> dict[str, object]:
        await claw.db.ping()
        return {}

    async def sandbox() -> dict[str, object]:
        return {**claw.sandbox.as_dict(), "paths": claw.workspace.mechanism,
                "paths_fallback_reason": claw.workspace.fallback_reason,
                "subreaper": REAPER.subreaper, "orphans_reaped": REAPER.reaped}

    async def start_keys() -> None:
        claw.keys.start()

    return create_app(ctx, ServiceParts(
        service_routers=[routes(claw)],
        callers=CALLERS,
        checks={"database": database, "eva": ctx.dependency_check("eva"),
                "grant_key": claw.keys.check, "sandbox": sandbox},
        on_startup=[run_sync(claw.db.open), start_keys, claw.start_reaping],
        on_shutdown=[claw.keys.stop, run_sync(claw.close), claw.stop_reaping],
    ))
