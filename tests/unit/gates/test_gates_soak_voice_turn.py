"""The soak's voice turn against a real WebSocket server on 127.0.0.1.

The server plays the session stream's protocol (`session.ready`, then the reply
events of one `input.text` turn up to `response.final`), or misbehaves in one
way per test; the turn must succeed only on a whole, uninterrupted reply, and
class each failure the way the load generator counts it.
"""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from sonia.gates.soak.gate import voice_turn

Behaviour = str


async def turn_against(behaviour: Behaviour) -> tuple[tuple[bool, str | None] | None,
                                                       list[dict[str, Any]]]:
    received: list[dict[str, Any]] = []

    def refuse(connection: ServerConnection, request: Request) -> Response | None:
        if behaviour == "refused":
            return connection.respond(HTTPStatus.NOT_FOUND, "no such session\n")
        received.append({"correlation_id": request.headers.get("X-Correlation-ID")})
        return None

    async def handler(ws: ServerConnection) -> None:
        await ws.send(json.dumps({"type": "session.ready"}))
        received.append(json.loads(await ws.recv()))
        if behaviour == "drops":
            await ws.close(code=1011)
            return
        await ws.send(json.dumps({"type": "state", "state": "thinking"}))
        await ws.send(b"\x00\x01")  # an audio frame on the way is skipped
        if behaviour == "error":
            await ws.send(json.dumps({"type": "error", "code": "UNAVAILABLE"}))
        await ws.send(json.dumps({"type": "response.delta", "text": "hi"}))
        await ws.send(json.dumps({"type": "response.final", "text": "hi",
                                  "interrupted": behaviour == "interrupted"}))
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, process_request=refuse) as server:
        port = server.sockets[0].getsockname()[1]
        url = f"ws://127.0.0.1:{port}/v1/sessions/ses_1/stream"
        result = await asyncio.wait_for(
            voice_turn(url, {"X-Correlation-ID": "soak-1"}, "hello"), timeout=30)
    return result, received


def test_a_whole_reply_is_a_success_and_the_turn_was_sent() -> None:
    result, received = asyncio.run(turn_against("whole"))
    assert result is None
    assert received == [{"correlation_id": "soak-1"}, {"type": "input.text", "text": "hello"}]


@pytest.mark.parametrize(("behaviour", "error"), [
    ("refused", "4xx"), ("drops", "transport"), ("error", "other"), ("interrupted", "other"),
])
def test_each_failure_is_classed(behaviour: Behaviour, error: str) -> None:
    result, _ = asyncio.run(turn_against(behaviour))
    assert result == (False, error)


def test_nothing_listening_is_a_connect_failure() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = asyncio.run(voice_turn(f"ws://127.0.0.1:{port}/x", {}, "hello"))
    assert result == (False, "connect")
