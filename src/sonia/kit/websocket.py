"""Refusing a WebSocket handshake the way every other route refuses: problem+json.

A refused handshake is an HTTP answer (401, 403, 404, ...) sent before accept,
through the WebSocket denial-response extension; on a server without it, the
socket is accepted and closed at once with code 4000 + status (4401, 4404, ...).
"""

from __future__ import annotations

import logging

from starlette.websockets import WebSocket

from sonia.errors import ApiError
from sonia.kit.problems import problem_response

DENIAL_NOISE = "ASGI callable returned without completing handshake."


class DenialNoiseFilter(logging.Filter):
    """Drops uvicorn's false alarm after a refused handshake.

    uvicorn's websockets-sansio protocol logs DENIAL_NOISE at error level whenever
    an app answers a handshake with a denial response, although the client did get
    that answer. A WebSocket route here either accepts, refuses with a denial
    response, or raises (logged separately), so the line only ever reports a
    refusal that worked."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != DENIAL_NOISE


def quiet_denial_noise() -> None:
    uvicorn_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, DenialNoiseFilter) for f in uvicorn_log.filters):
        uvicorn_log.addFilter(DenialNoiseFilter())


async def refuse(websocket: WebSocket, error: ApiError) -> None:
    """Refuse a handshake with the problem+json answer of `error` (HTTP, before accept)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(problem_response(error))
        return
    await websocket.accept()
    await websocket.close(code=4000 + error.status, reason=error.code)
