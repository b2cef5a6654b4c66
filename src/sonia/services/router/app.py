"""The router service: model providers, routing profiles, fallbacks, provider health."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from sonia.kit.app import ServiceContext, ServiceParts, create_app


def create(ctx: ServiceContext) -> FastAPI:
    routes = APIRouter(prefix="/v1")

    @routes.get("/providers")
    async def providers() -> dict[str, object]:
        return {"providers": [{"name": "builtin", "healthy": True}]}

    return create_app(ctx, ServiceParts(
        service_routers=[routes],
        callers={"/v1/providers": frozenset({"gateway", "voice"})},
    ))
