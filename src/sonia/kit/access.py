"""The access record of every request: one JSON log line and the request metrics.

Pure ASGI, so it sees the final status of every response, including the
problem+json answers of the error handlers, and the route template (not the raw
path) that the router matched, which keeps metric labels bounded.
"""

from __future__ import annotations

import logging
import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("sonia.access")

QUIET_ROUTES = frozenset({"/livez", "/readyz", "/healthz", "/metrics"})
"""Health probes are counted but not logged at info, or they would drown the log."""


class RequestMetrics:
    def __init__(self, registry: CollectorRegistry, service: str) -> None:
        self.requests = Counter(
            "sonia_http_requests_total", "HTTP requests answered",
            ["service", "route", "method", "status"], registry=registry,
        )
        self.duration = Histogram(
            "sonia_http_request_duration_seconds", "HTTP request duration",
            ["service", "route", "method"], registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.service = service


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp, metrics: RequestMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            duration = time.perf_counter() - start
            route_obj = scope.get("route")
            route = getattr(route_obj, "path", None) or "(unmatched)"
            method = scope.get("method", "")
            self.metrics.requests.labels(self.metrics.service, route, method, str(status)).inc()
            self.metrics.duration.labels(self.metrics.service, route, method).observe(duration)
            level = logging.DEBUG if route in QUIET_ROUTES and status < 400 else logging.INFO
            log.log(
                level, "%s %s %d", method, route, status,
                extra={"route": route, "method": method, "status": status,
                       "duration_ms": round(duration * 1000, 3)},
            )
