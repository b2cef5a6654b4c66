"""The memory service: the memory ledger and conversation turns in SQLite."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from sonia.kit.app import ServiceContext, ServiceParts, create_app, run_sync
from sonia.kit.db import Database


def create(ctx: ServiceContext) -> FastAPI:
    db = Database(ctx.home.db_path("memory"), [])
    routes = APIRouter(prefix="/v1")

    @routes.get("/stats")
    async def stats() -> dict[str, object]:
        tables = await db.read(
            lambda c: [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        )
        return {"tables": tables}

    async def database() -> dict[str, object]:
        await db.ping()
        return {}

    return create_app(ctx, ServiceParts(
        service_routers=[routes],
        callers={"/v1/stats": frozenset({"gateway"})},
        checks={"database": database},
        on_startup=[run_sync(db.open)],
        on_shutdown=[run_sync(db.close)],
    ))
