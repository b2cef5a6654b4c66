"""The gateway end of a session's WebSocket: authenticate, then relay frames to the voice service.

The voice service owns realtime sessions (turn state, interruption, speech);
the gateway only checks who is calling and whether the session is theirs and
active, opens the voice service's `/v1/sessions/{id}/stream` with its own
service token and the correlation ID, and relays frames both ways unchanged
(text frames as text, audio as binary).

A refused handshake is an HTTP answer in problem+json, not an accepted socket
closed at once: 401 without a valid key, 404 for a session that is unknown,
someone else's, closed or expired, 503 when the voice service cannot be reached.

`LiveStreams` knows every relay by session, so stopping a session (or its idle
expiry) ends its stream at once: the client gets `session.ended` and a normal
close, the voice session is torn down (its reply cancelled). Frames in either
direction count as activity and keep the session from expiring. The gateway
adds one event of its own to a session's streams: `turn.resumed`, when a chat
turn of the session that waited for an approver went on (`LiveStreams.tell`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from sonia.errors import ApiError, RateLimited, Unavailable
from sonia.kit import correlation
from sonia.kit.auth import SERVICE_TOKEN_HEADER

log = logging.getLogger("sonia.gateway.stream")

MAX_FRAME_BYTES = 1 << 20
CLOSE_NORMAL = 1000
CLOSE_SERVER_ERROR = 1011
"""Close codes (RFC 6455) the relay gives its client: 1000 when the session ended (stop,
expiry, control.end), 1011 when the voice service dropped the connection."""


class Relay:
    """One client socket joined to one voice-service socket."""

    def __init__(self, session_id: str, client: WebSocket, upstream: ClientConnection,
                 on_activity: Callable[[], Awaitable[None]]) -> None:
        self.session_id = session_id
        self.client = client
        self.upstream = upstream
        self._on_activity = on_activity
        self._ending: str | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def _client_to_upstream(self) -> None:
        while True:
            message = await self.client.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await self.upstream.send(message["text"])
            elif message.get("bytes") is not None:
                await self.upstream.send(message["bytes"])
            try:
                await self._on_activity()
            except ApiError as exc:  # stopped or expired between two frames
                self._ending = exc.detail
                return

    async def _upstream_to_client(self) -> None:
        async for frame in self.upstream:
            if isinstance(frame, bytes):
                await self.client.send_bytes(frame)
            else:
                await self.client.send_text(frame)
            try:
                await self._on_activity()
            except ApiError as exc:
                self._ending = exc.detail
                return

    async def run(self) -> None:
        """Relay until either side closes or `end` is called; closes both sides."""
        self._tasks = [asyncio.create_task(self._client_to_upstream()),
                       asyncio.create_task(self._upstream_to_client())]
        if self._ending is not None:  # ended before it started
            for task in self._tasks:
                task.cancel()
        try:
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    try:
                        await task
                    except (ConnectionClosed, WebSocketDisconnect, OSError):
                        pass  # one side went away: the other is closed below
                    except Exception:
                        log.exception("relay of %s failed", self.session_id)
            await self._close_both()

    async def _close_both(self) -> None:
        if self._ending is not None and self.client.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await self.client.send_text(json.dumps(
                    {"type": "session.ended", "reason": self._ending}))
        with contextlib.suppress(Exception):
            await self.upstream.close(CLOSE_NORMAL)
        if self.client.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await self.client.close(code=self._client_close_code())

    def _client_close_code(self) -> int:
        """Normal when the relay was ended on purpose or the voice session ended; 1011
        (server error) when the voice service dropped the connection."""
        code = self.upstream.close_code
        if self._ending is not None or code in (None, CLOSE_NORMAL, 1001):
            return CLOSE_NORMAL
        return code if 3000 <= code < 5000 else CLOSE_SERVER_ERROR

    async def tell(self, event: dict[str, Any]) -> None:
        """Send the client a gateway event of its own (not from the voice service)."""
        if self.client.application_state == WebSocketState.CONNECTED and self._ending is None:
            await self.client.send_text(json.dumps(event))

    def end(self, reason: str) -> None:
        """Stop relaying (the session was stopped or expired); `run` closes both sides."""
        self._ending = reason
        for task in self._tasks:
            task.cancel()


class LiveStreams:
    """Every relay that is running, by session id, and the handshakes under way.

    `reserve` takes one of a session's `max_per_session` stream slots before the
    (awaited) upstream connection is opened, and the slot is held until `discard`
    or `release`: checking and taking happen with no await between them, so
    concurrent handshakes cannot overshoot the cap (issue 10, finding 6)."""

    def __init__(self, max_per_session: int = 1_000_000) -> None:
        self._relays: dict[str, set[Relay]] = {}
        self._reserved: dict[str, int] = {}
        self.max_per_session = max_per_session

    def reserve(self, session_id: str) -> None:
        """Take a stream slot of `session_id`; RateLimited when all are taken."""
        held = len(self._relays.get(session_id, ())) + self._reserved.get(session_id, 0)
        if held >= self.max_per_session:
            raise RateLimited(f"session {session_id} has {held} streams open, the limit is "
                              f"{self.max_per_session}", extra={"retry_after": 1})
        self._reserved[session_id] = self._reserved.get(session_id, 0) + 1

    def release(self, session_id: str) -> None:
        """Give back a slot taken by `reserve` (the relay now counts, or never started)."""
        left = self._reserved.get(session_id, 0) - 1
        if left > 0:
            self._reserved[session_id] = left
        else:
            self._reserved.pop(session_id, None)

    def __len__(self) -> int:
        return sum(len(r) for r in self._relays.values())

    def session_ids(self) -> list[str]:
        return list(self._relays)

    def add(self, relay: Relay) -> None:
        self._relays.setdefault(relay.session_id, set()).add(relay)

    def discard(self, relay: Relay) -> None:
        relays = self._relays.get(relay.session_id)
        if relays is not None:
            relays.discard(relay)
            if not relays:
                del self._relays[relay.session_id]

    async def tell(self, session_id: str, event: dict[str, Any]) -> int:
        """Send `event` to every open stream of `session_id`; how many got it."""
        told = 0
        for relay in list(self._relays.get(session_id, ())):
            with contextlib.suppress(Exception):  # a socket closing meanwhile
                await relay.tell(event)
                told += 1
        return told

    def end(self, session_id: str, reason: str) -> int:
        relays = list(self._relays.get(session_id, ()))
        for relay in relays:
            relay.end(reason)
        return len(relays)

    def end_all(self, reason: str) -> None:
        for session_id in list(self._relays):
            self.end(session_id, reason)


async def open_upstream(url: str, token: str, mode: str, owner: str, *,
                        tls: ssl.SSLContext | None = None) -> ClientConnection:
    """The voice service's socket for a session of `owner` (the key id whose memories
    the session recalls and stores); Unavailable when it cannot be opened. A wss://
    url is verified with `tls` (the home's CA, kit/tls.py)."""
    try:
        return await connect(
            f"{url}?{urlencode({'mode': mode, 'owner': owner})}", proxy=None, open_timeout=5,
            max_size=MAX_FRAME_BYTES, ssl=tls if url.startswith("wss://") else None,
            compression=None,  # as the services' servers: no permessage-deflate (runner.py)
            additional_headers={SERVICE_TOKEN_HEADER: token,
                                correlation.HEADER: correlation.current()})
    except InvalidHandshake as exc:
        raise Unavailable(f"the voice service refused the stream: {exc}") from exc
    except (OSError, TimeoutError) as exc:
        raise Unavailable(f"the voice service is unreachable: {type(exc).__name__}") from exc


__all__ = ["LiveStreams", "Relay", "open_upstream"]
