"""The OpenClaw service: tool execution behind EVA's signed grants."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from sonia.kit.app import ServiceContext, ServiceParts, create_app, run_sync
from sonia.kit.db import Database


def create(ctx: ServiceContext) -> FastAPI:
    db = Database(ctx.home.db_path("openclaw"), [])
    routes = APIRouter(prefix="/v1")

    @routes.get("/tools")
    async def tools() -> dict[str, object]:
        return {"tools": []}

    async def database() -> dict[str, object]:
        await db.ping()
        return {}

    return create_app(ctx, ServiceParts(
        service_routers=[routes],
        callers={"/v1/tools": frozenset({"gateway"})},
        checks={"database": database, "eva": ctx.dependency_check("eva")},
        on_startup=[run_sync(db.open)],
        on_shutdown=[run_sync(db.close)],
    ))
