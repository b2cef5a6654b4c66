"""The voice service: realtime sessions over WebSocket.

Internal routes (service token):

    WS  /v1/sessions/{session_id}/stream?mode=text|voice   callers: gateway
        one `RealtimeSession` (pipeline.py) per connection; replies come from
        `Dialogue` (memory + router); `mode=text` turns speech output off
    GET /v1/status                                          callers: gateway
        {sessions: open now, adapters: what really works}

The WebSocket route checks its caller itself, against `STREAM_CALLERS` (the
app factory's caller table covers HTTP routes only): a missing or unknown token
is refused with 401, another service with 403, both before the handshake
completes. /readyz reports the speech adapters that really work
(`detect_adapters`, cached for a few seconds) beside the router and memory.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from fastapi import APIRouter, FastAPI, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from sonia.errors import ApiError, InvalidArgument, Unavailable
from sonia.kit.app import ServiceContext, ServiceParts, create_app
from sonia.kit.auth import SERVICE_TOKEN_HEADER, ServiceAuth
from sonia.kit.websocket import quiet_denial_noise, refuse
from sonia.services.voice.dialogue import Dialogue
from sonia.services.voice.pipeline import Outgoing, RealtimeSession
from sonia.services.voice.speech import (
    EspeakTTS,
    NullTTS,
    build_transcriber,
    detect_adapters,
)

STREAM_ROUTE = "/v1/sessions/{session_id}/stream"
STREAM_CALLERS: dict[str, frozenset[str]] = {STREAM_ROUTE: frozenset({"gateway"})}
CALLERS: dict[str, frozenset[str]] = {"/v1/status": frozenset({"gateway"})}
ADAPTERS_TTL_SECONDS = 5.0


class Adapters:
    """`detect_adapters`, cached: /readyz runs often and espeak-ng is a process start."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.voice = ctx.settings.voice
        self._cached: tuple[float, dict[str, Any]] | None = None

    async def report(self) -> dict[str, Any]:
        now = time.monotonic()
        if self._cached is None or now - self._cached[0] > ADAPTERS_TTL_SECONDS:
            self._cached = (now, await detect_adapters(self.voice))
        return self._cached[1]

    async def tts(self, mode: str) -> EspeakTTS | NullTTS:
        """The synthesizer for a session: none for text sessions or when none works."""
        if mode == "text" or self.voice.tts == "none":
            return NullTTS()
        report = await self.report()
        return EspeakTTS() if report["tts"]["available"] else NullTTS()


def create(ctx: ServiceContext) -> FastAPI:
    quiet_denial_noise()
    dialogue = Dialogue(ctx)
    adapters = Adapters(ctx)
    transcriber = build_transcriber(ctx.settings.voice)
    stream_auth = ServiceAuth(ctx.tokens, STREAM_CALLERS)
    open_sessions: dict[int, RealtimeSession] = {}
    max_text = ctx.settings.gateway.max_message_chars

    status_routes = APIRouter(prefix="/v1")

    @status_routes.get("/status")
    async def status() -> dict[str, Any]:
        return {"sessions": len(open_sessions), "adapters": await adapters.report()}

    stream_routes = APIRouter()

    @stream_routes.websocket(STREAM_ROUTE)
    async def stream(websocket: WebSocket, session_id: str, mode: str = "voice",
                     owner: str = "") -> None:
        try:
            caller = stream_auth.identify(websocket.headers.get(SERVICE_TOKEN_HEADER))
            stream_auth.authorize(caller, STREAM_ROUTE)
            if mode not in ("text", "voice"):
                raise InvalidArgument("mode must be text or voice")
            if not owner:
                raise InvalidArgument("owner (the key id of the session) is required")
        except ApiError as exc:
            await refuse(websocket, exc)
            return
        session = RealtimeSession(session_id, dialogue.for_session(session_id, owner),
                                  tts=await adapters.tts(mode), transcriber=transcriber,
                                  max_text_chars=max_text)
        await websocket.accept()
        open_sessions[id(session)] = session

        async def receive() -> bytes | str | None:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return None
            if message.get("bytes") is not None:
                return bytes(message["bytes"])
            return str(message.get("text") or "")

        async def send(event: Outgoing) -> None:
            if isinstance(event, bytes):
                await websocket.send_bytes(event)
            else:
                await websocket.send_json(event)

        try:
            await session.pump(receive, send)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the gateway went away; pump has already cancelled the reply
        finally:
            open_sessions.pop(id(session), None)
            if websocket.application_state == WebSocketState.CONNECTED:
                with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                    await websocket.close()

    async def speech() -> dict[str, Any]:
        report = await adapters.report()
        if not report["ready"]:
            raise Unavailable(f"a configured speech adapter does not work: {report}")
        return {"tts": report["tts"]["adapter"], "stt": report["stt"]["adapter"],
                "tts_detail": report["tts"]["detail"], "stt_detail": report["stt"]["detail"]}

    async def shutdown() -> None:
        for session in list(open_sessions.values()):
            await session.abort()
        await dialogue.drain()
        if transcriber is not None:
            await transcriber.aclose()

    return create_app(ctx, ServiceParts(
        service_routers=[status_routes],
        callers=CALLERS,
        user_routers=[stream_routes],
        checks={"router": ctx.dependency_check("router"),
                "memory": ctx.dependency_check("memory"),
                "speech": speech},
        on_shutdown=[shutdown],
    ))
