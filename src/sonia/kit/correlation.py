"""Correlation IDs: one per request, generated at the edge when absent.

The ID arrives in `X-Correlation-ID`, lives in a context variable while the
request runs (log lines and internal calls read it from there), and is echoed
in the response. A malformed ID is replaced, never trusted: it ends up in logs.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "x-correlation-id"
_VALID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

correlation_id: ContextVar[str] = ContextVar("correlation_id", default="-")


def new_id() -> str:
    return uuid.uuid4().hex


def accept(value: str | None) -> str:
    """The caller's ID if it is well-formed, otherwise a fresh one."""
    if value and _VALID.match(value):
        return value
    return new_id()


def current() -> str:
    return correlation_id.get()


class CorrelationMiddleware:
    """Pure ASGI: read or make the ID, expose it to the request, echo it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope.get("headers", []):
            if name == HEADER.encode():
                incoming = value.decode("latin-1")
                break
        cid = accept(incoming)
        # Not reset afterwards on purpose: the outermost error renderer runs after
        # this middleware returns and still needs the ID for its problem body.
        correlation_id.set(cid)
        scope.setdefault("state", {})["correlation_id"] = cid

        async def send_with_id(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.accept"):
                headers = [h for h in message.get("headers", []) if h[0].lower() != HEADER.encode()]
                headers.append((HEADER.encode(), cid.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)
