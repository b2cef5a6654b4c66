"""Gateway route: the state of the whole stack, for approvers.

    GET /v1/system  {services: [{name, port, pid, state, ready, not_ready_because, checks,
                                 uptime_s, uss_bytes, restarts, last_exit}],
                     supervisor: {running, updated_at}, sandbox, model, audit, backup}

What `sonia status` prints, read the same way: the supervisor's state file for
pids, start times and restart counts (`Home.supervisor_state_file`), each
service's own /readyz for readiness (every check, and the first failing one
as the reason), the USS of each process tree (`kit.process_memory`), the
sandbox OpenClaw reports in force, the router's providers and profiles, EVA's
verification of the audit chain, and the last scheduled backup. A service that
does not answer is shown as such; the route itself fails only when the caller
may not see it (a user key: 403).
"""

# No `from __future__ import annotations`: FastAPI must see the dependency aliases.

import asyncio
import json
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from sonia import SERVICES
from sonia.errors import ApiError
from sonia.home import ApiKey
from sonia.kit.process_memory import tree_uss
from sonia.services.gateway.state import Gateway

SANDBOX_FIELDS = ("level", "network", "runs_as_uid", "reason")


def read_state(gw: Gateway) -> dict[str, Any]:
    """The supervisor's state file, or {} when there is none (no supervisor)."""
    try:
        found = json.loads(gw.ctx.home.supervisor_state_file.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def why_not(checks: dict[str, Any]) -> str | None:
    failing = [f"{name}: {check.get('output', 'fail')}" for name, check in checks.items()
               if isinstance(check, dict) and check.get("status") != "pass"]
    return "; ".join(failing) or None


async def _optional(call: Any) -> Any:
    """A part of the report that may fail alone: its value, or {error: {code, detail}}."""
    try:
        return await call
    except ApiError as exc:
        return {"error": {"code": exc.code, "detail": exc.detail}}


def routers(gw: Gateway) -> list[APIRouter]:
    Approver = Annotated[ApiKey, Depends(gw.approver)]
    api = APIRouter(prefix="/v1", tags=["system"])

    async def readiness(request: Request, name: str) -> tuple[bool, dict[str, Any]]:
        if name == gw.ctx.name:
            ok, body = await request.app.state.readiness.report()
            return bool(ok), dict(body)
        return await gw.ctx.client(name).readiness()

    @api.get("/system")
    async def system(key: Approver, request: Request) -> dict[str, Any]:
        state = await asyncio.to_thread(read_state, gw)
        answers = await asyncio.gather(*(readiness(request, n) for n in SERVICES))
        supervised = state.get("services") or {}
        now = time.time()
        services = []
        for name, (ready, body) in zip(SERVICES, answers, strict=True):
            info = supervised.get(name) or {}
            pid = info.get("pid")
            started = info.get("started_at")
            checks = dict(body.get("checks") or {})
            services.append({
                "name": name, "port": gw.ctx.settings.port_of(name), "pid": pid,
                "state": info.get("state", "unknown"), "ready": ready,
                "not_ready_because": None if ready else (
                    why_not(checks) or str(body.get("output") or "not ready")),
                "checks": {k: {"status": v.get("status"), "output": v.get("output")}
                           if isinstance(v, dict) else {"status": None, "output": None}
                           for k, v in checks.items()},
                "uptime_s": round(now - float(started), 1) if pid and started else None,
                "uss_bytes": await asyncio.to_thread(tree_uss, int(pid)) if pid else None,
                "restarts": int(info.get("restarts") or 0),
                "last_exit": info.get("last_exit"),
            })
        claw_checks = dict(answers[SERVICES.index("openclaw")][1].get("checks") or {})
        sandbox = claw_checks.get("sandbox")
        sandbox = sandbox if isinstance(sandbox, dict) else {}
        model, audit = await asyncio.gather(
            _optional(gw.ctx.client("router").request("GET", "/v1/providers")),
            _optional(gw.ctx.client("eva").request("GET", "/v1/audit",
                                                   params={"limit": 1})))
        return {
            "services": services,
            "supervisor": {"running": bool(state), "updated_at": state.get("updated_at")},
            "sandbox": {k: sandbox.get(k) for k in SANDBOX_FIELDS},
            "model": model,
            "audit": audit.get("chain", audit) if isinstance(audit, dict) else audit,
            "backup": state.get("backup") or {},
        }

    return [api]
