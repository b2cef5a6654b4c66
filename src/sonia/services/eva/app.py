"""The EVA service: policy tiers, approvals, signed execution grants, the audit chain."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import serialization
from fastapi import APIRouter, FastAPI

from sonia.kit.app import ServiceContext, ServiceParts, create_app, run_sync
from sonia.kit.db import Database


def create(ctx: ServiceContext) -> FastAPI:
    db = Database(ctx.home.db_path("eva"), [])
    key = ctx.home.grant_private_key()
    public_raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                               serialization.PublicFormat.Raw)
    routes = APIRouter(prefix="/v1")

    @routes.get("/grant-key")
    async def grant_key() -> dict[str, str]:
        return {"alg": "EdDSA", "crv": "Ed25519",
                "x": base64.urlsafe_b64encode(public_raw).rstrip(b"=").decode()}

    async def database() -> dict[str, object]:
        await db.ping()
        return {}

    return create_app(ctx, ServiceParts(
        service_routers=[routes],
        callers={"/v1/grant-key": frozenset({"openclaw", "gateway"})},
        checks={"database": database},
        on_startup=[run_sync(db.open)],
        on_shutdown=[run_sync(db.close)],
    ))
