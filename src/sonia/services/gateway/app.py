"""The gateway: the only public API (users, chat, sessions, actions, approvals)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI

from sonia.home import ApiKey
from sonia.kit.app import ServiceContext, ServiceParts, create_app, run_sync
from sonia.kit.auth import UserKeys
from sonia.kit.db import Database

DOWNSTREAM = ("eva", "memory", "router", "openclaw", "voice")


def create(ctx: ServiceContext) -> FastAPI:
    db = Database(ctx.home.db_path("gateway"), [])
    keys = UserKeys(ctx.home)
    user = APIRouter(prefix="/v1", dependencies=[Depends(keys.dependency())])

    @user.get("/whoami")
    async def whoami(key: ApiKey = Depends(keys.dependency())) -> dict[str, str]:
        return {"key_id": key.id, "role": key.role}

    async def database() -> dict[str, object]:
        await db.ping()
        return {}

    checks = {"database": database} | {name: ctx.dependency_check(name) for name in DOWNSTREAM}
    return create_app(ctx, ServiceParts(
        user_routers=[user],
        checks=checks,
        on_startup=[run_sync(db.open)],
        on_shutdown=[run_sync(db.close)],
    ))
