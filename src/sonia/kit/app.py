"""The app factory: every service is `create_app(ctx, parts)` and nothing more.

A service contributes `ServiceParts` (its routers, its caller table, its
readiness checks, its start and stop hooks); the factory adds what all of them
share, in a fixed order, outermost first:

    ServerErrorMiddleware   renders a bug as 500 problem+json, then re-raises
    CorrelationMiddleware   X-Correlation-ID in, context, out
    AccessLogMiddleware     one log line and the metrics of every request
    BodyLimitMiddleware     413 before a handler reads an oversized body
    EncodingGuardMiddleware 400 for a path, query or text body that is not UTF-8 or
                            holds a lone surrogate (kit/encoding.py)
    ExceptionMiddleware     ApiError / validation / 404 -> problem+json
    routes                  health routes (open), service routes (token + caller table),
                            user routes (gateway: API keys)
"""

from __future__ import annotations

import asyncio
import inspect
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, FastAPI
from prometheus_client import CollectorRegistry, Gauge

import sonia
from sonia.config import Settings
from sonia.home import Home
from sonia.kit.access import AccessLogMiddleware, RequestMetrics
from sonia.kit.auth import ServiceAuth
from sonia.kit.body_limit import BodyLimitMiddleware
from sonia.kit.correlation import CorrelationMiddleware
from sonia.kit.encoding import EncodingGuardMiddleware
from sonia.kit.health import Check, Readiness, health_router
from sonia.kit.problems import install_handlers
from sonia.kit.tls import client_context

if TYPE_CHECKING:
    from sonia.kit.client import ServiceClient

Hook = Callable[[], Awaitable[None] | None]


@dataclass
class ServiceContext:
    """What a running service knows about itself and its home."""

    name: str
    home: Home
    settings: Settings
    tokens: Mapping[str, str]
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    _clients: dict[str, ServiceClient] = field(default_factory=dict)
    _tls: ssl.SSLContext | None = None

    @property
    def token(self) -> str:
        return self.tokens[self.name]

    @property
    def tls(self) -> ssl.SSLContext:
        """How this service verifies the https:// services it calls (one per process)."""
        if self._tls is None:
            self._tls = client_context(self.home, self.settings)
        return self._tls

    def client(self, target: str) -> ServiceClient:
        """The (shared) internal client for calls from this service to `target`."""
        if target not in self._clients:
            # Imported on first use: the client's HTTP library (aiohttp) is 8 MiB in a
            # process, and EVA, memory and the router call no other service.
            from sonia.kit.client import ServiceClient

            self._clients[target] = ServiceClient(self.token, target,
                                                  self.settings.upstream_of(target),
                                                  verify=self.tls)
        return self._clients[target]

    def dependency_check(self, target: str) -> Check:
        """A readiness check: `target` answers its own /readyz with 200."""

        async def check() -> dict[str, Any]:
            return await self.client(target).ready()

        return check

    async def close_clients(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


@dataclass
class ServiceParts:
    """What one service adds to the shared app."""

    service_routers: Sequence[APIRouter] = ()
    callers: Mapping[str, frozenset[str]] = field(default_factory=dict)
    user_routers: Sequence[APIRouter] = ()
    checks: Mapping[str, Check] = field(default_factory=dict)
    on_startup: Sequence[Hook] = ()
    on_shutdown: Sequence[Hook] = ()
    state: Mapping[str, Any] = field(default_factory=dict)


async def _call(hook: Hook) -> None:
    result = hook()
    if inspect.isawaitable(result):
        await result


def _check_callers(parts: ServiceParts) -> None:
    """Every service route must have a row in the caller table, and no row may dangle."""
    paths = {getattr(r, "path", "") for router in parts.service_routers for r in router.routes}
    missing = paths - set(parts.callers)
    unknown = set(parts.callers) - paths
    if missing or unknown:
        raise ValueError(f"caller table mismatch: missing {sorted(missing)}, "
                         f"unknown {sorted(unknown)}")
    for route, callers in parts.callers.items():
        bad = set(callers) - set(sonia.SERVICES) - {"cli"}
        if bad:
            raise ValueError(f"caller table of {route} names unknown services {sorted(bad)}")


def create_app(ctx: ServiceContext, parts: ServiceParts) -> FastAPI:
    _check_callers(parts)
    readiness = Readiness(ctx.name, parts.checks)
    metrics = RequestMetrics(ctx.registry, ctx.name)
    up = Gauge("sonia_service_start_time_seconds", "When the service started (unix time)",
               ["service"], registry=ctx.registry)
    up.labels(ctx.name).set_to_current_time()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for hook in parts.on_startup:
            await _call(hook)
        try:
            yield
        finally:
            readiness.draining = True
            for hook in reversed(parts.on_shutdown):
                await _call(hook)
            await ctx.close_clients()

    app = FastAPI(
        title=f"sonia-{ctx.name}",
        version=sonia.__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # every route but the five open ones needs credentials
    )
    app.state.ctx = ctx
    app.state.readiness = readiness
    app.state.callers = dict(parts.callers)
    app.state.service_methods = {
        r.path: sorted(set(getattr(r, "methods", ())) - {"HEAD"})
        for router in parts.service_routers for r in router.routes if hasattr(r, "path")
    }
    for key, value in parts.state.items():
        setattr(app.state, key, value)

    install_handlers(app)
    app.include_router(health_router(readiness, ctx.registry))
    service_auth = ServiceAuth(ctx.tokens, parts.callers)
    for router in parts.service_routers:
        app.include_router(router, dependencies=[Depends(service_auth.dependency())])
    for router in parts.user_routers:
        app.include_router(router)

    app.add_middleware(EncodingGuardMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=ctx.settings.gateway.max_body_bytes)
    app.add_middleware(AccessLogMiddleware, metrics=metrics)
    app.add_middleware(CorrelationMiddleware)
    return app


def run_sync(fn: Callable[[], Any]) -> Hook:
    """A start/stop hook that runs blocking `fn` in a thread."""

    async def hook() -> None:
        await asyncio.to_thread(fn)

    return hook
