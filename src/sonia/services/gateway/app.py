"""The gateway: the only public API (users, chat, sessions, actions, approvals) and
the web console.

Its routes live in one module per concern (conversation, chat_stream, sessions,
actions, audit, keys, system, evidence, console); this module only assembles them
around the shared `Gateway` state, and puts the browser safety headers
(`security_headers`) on every answer.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI

from sonia.home import ApiKey
from sonia.kit.app import ServiceContext, ServiceParts, create_app
from sonia.services.gateway import (
    actions_api,
    audit_api,
    chat_stream,
    console,
    conversation,
    evidence_api,
    keys_api,
    sessions_api,
    system_api,
    voice_turns,
)
from sonia.services.gateway.actions_api import Actions
from sonia.services.gateway.agent import Agent
from sonia.services.gateway.assistant import Assistant
from sonia.services.gateway.security_headers import SecurityHeadersMiddleware
from sonia.services.gateway.state import Gateway

DOWNSTREAM = ("eva", "memory", "router", "openclaw", "voice")


def create(ctx: ServiceContext) -> FastAPI:
    gw = Gateway.build(ctx)
    assistant, actions = Assistant(gw.ctx), Actions(gw)
    agent = Agent(gw, assistant, actions)
    actions.on_decided.append(agent.decided)  # an approval resumes the turn waiting on it
    gw.on_startup.append(agent.start)
    gw.on_shutdown.append(agent.stop)
    whoami_routes = APIRouter(prefix="/v1", tags=["identity"])

    @whoami_routes.get("/whoami")
    async def whoami(key: ApiKey = Depends(gw.user)) -> dict[str, str]:  # noqa: B008
        """Who the presented key is: the cheapest authenticated route (benchmarks' baseline)."""
        return {"key_id": key.id, "role": key.role}

    async def database() -> dict[str, object]:
        await gw.db.ping()
        return {}

    checks = {"database": database} | {name: ctx.dependency_check(name) for name in DOWNSTREAM}
    app = create_app(ctx, ServiceParts(
        service_routers=[voice_turns.router(gw, agent)],
        callers=voice_turns.CALLERS,
        user_routers=[whoami_routes, *conversation.routers(gw, assistant, agent),
                      *chat_stream.routers(gw, assistant, agent),
                      *sessions_api.routers(gw), *actions_api.routers(gw, actions),
                      *audit_api.routers(gw), *keys_api.routers(gw), *system_api.routers(gw),
                      *evidence_api.routers(gw), *console.routers(gw)],
        checks=checks,
        on_startup=gw.on_startup,  # the database opens first (Gateway.build)
        on_shutdown=gw.on_shutdown,  # hooks run in reverse: the database closes last
    ))
    app.add_middleware(SecurityHeadersMiddleware)  # outermost: every answer carries them
    return app
