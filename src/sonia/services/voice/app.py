"""The voice service: realtime sessions over WebSocket."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from sonia.kit.app import ServiceContext, ServiceParts, create_app


def create(ctx: ServiceContext) -> FastAPI:
    routes = APIRouter(prefix="/v1")

    @routes.get("/status")
    async def status() -> dict[str, object]:
        return {"sessions": 0}

    return create_app(ctx, ServiceParts(
        service_routers=[routes],
        callers={"/v1/status": frozenset({"gateway"})},
        checks={"router": ctx.dependency_check("router")},
    ))
