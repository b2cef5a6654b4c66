"""The five open routes of every service: /livez, /readyz, /healthz, /metrics, /version.

/readyz runs the service's real checks (its database answers, the services it
needs are ready) with a deadline each, and answers 503 when one fails or while
the service drains on shutdown. Nothing here needs credentials or shows secrets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.responses import JSONResponse, Response

import sonia

HEALTH_MEDIA_TYPE = "application/health+json"
CHECK_TIMEOUT_S = 2.0

Check = Callable[[], Awaitable[dict[str, Any] | None]]
"""A readiness check: returns optional details, raises when not ready."""


class Readiness:
    def __init__(self, service: str, checks: Mapping[str, Check]) -> None:
        self.service = service
        self.checks = dict(checks)
        self.draining = False

    async def _run(self, name: str, check: Check) -> tuple[str, dict[str, Any]]:
        try:
            details = await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
        except TimeoutError:
            return name, {"status": "fail", "output": f"no answer within {CHECK_TIMEOUT_S}s"}
        except Exception as exc:  # a failed check is data, not an error of this route
            return name, {"status": "fail", "output": f"{type(exc).__name__}: {exc}"}
        return name, {"status": "pass", **(details or {})}

    async def report(self) -> tuple[bool, dict[str, Any]]:
        results = dict(await asyncio.gather(*(self._run(n, c) for n, c in self.checks.items())))
        ok = all(r["status"] == "pass" for r in results.values()) and not self.draining
        body = {
            "status": "pass" if ok else "fail",
            "service": self.service,
            "version": sonia.__version__,
            "draining": self.draining,
            "checks": results,
        }
        return ok, body


def health_router(readiness: Readiness, registry: CollectorRegistry) -> APIRouter:
    router = APIRouter(tags=["health"], include_in_schema=False)

    @router.api_route("/livez", methods=["GET", "HEAD"])
    async def livez() -> Response:
        return JSONResponse({"status": "pass", "service": readiness.service},
                            media_type=HEALTH_MEDIA_TYPE)

    async def ready(request: Request) -> Response:
        ok, body = await readiness.report()
        return JSONResponse(body, status_code=200 if ok else 503, media_type=HEALTH_MEDIA_TYPE)

    router.add_api_route("/readyz", ready, methods=["GET", "HEAD"])
    router.add_api_route("/healthz", ready, methods=["GET", "HEAD"])

    @router.api_route("/metrics", methods=["GET", "HEAD"])
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @router.api_route("/version", methods=["GET", "HEAD"])
    async def version() -> Response:
        return JSONResponse({"service": readiness.service, "version": sonia.__version__})

    return router
