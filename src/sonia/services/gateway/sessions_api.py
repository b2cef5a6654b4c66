"""Gateway routes: sessions (user keys).

    POST /v1/sessions {mode?: text|voice}   -> 201 {id, mode, state: active, created_at,
                                               last_seen_at, expires_at, closed_at}
                                               429 RATE_LIMITED at gateway.max_sessions open,
                                               or gateway.max_sessions_per_key for this key
    GET  /v1/sessions?state=&limit=         {sessions: [...], counts: {active, closed, expired}}
    GET  /v1/sessions/{id}                  one session (404 when unknown or another key's)
    POST /v1/sessions/{id}/stop             -> {state: closed}; ends its stream at once
    WS   /v1/sessions/{id}/stream           the realtime session (`stream_proxy`), relayed to
                                            the voice service; `Authorization: Bearer` on the
                                            handshake; 429 past
                                            gateway.max_streams_per_session

Idle sessions expire after gateway.session_idle_seconds without activity (a chat
turn, a stream frame): on every access, and by a sweeper task that also ends
the streams of sessions that are no longer active, so no session is left
half-open after a stop or an expiry.
"""

# No `from __future__ import annotations`: FastAPI must see the `User` dependency
# alias, which is local to `routers()`, as a real object rather than a string.

import logging
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, WebSocket
from pydantic import BaseModel, ConfigDict

from sonia.errors import ApiError
from sonia.home import ApiKey
from sonia.kit.periodic import Periodic
from sonia.kit.websocket import quiet_denial_noise, refuse
from sonia.services.gateway import sessions
from sonia.services.gateway.state import Gateway
from sonia.services.gateway.stream_proxy import LiveStreams, Relay, open_upstream

log = logging.getLogger("sonia.gateway.sessions")

State = Literal["active", "closed", "expired"]


class NewSession(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Literal["text", "voice"] = "text"


class Sweeper:
    """Expires idle sessions on a period and ends the streams of sessions no longer active."""

    def __init__(self, gw: Gateway, live: LiveStreams) -> None:
        self.gw = gw
        self.live = live
        policy = gw.session_policy
        self.interval = max(0.2, min(policy.idle_seconds / 4, 5.0))
        self._periodic = Periodic("session sweep", self.interval, self.sweep)

    async def sweep(self) -> int:
        policy = self.gw.session_policy
        live_ids = self.live.session_ids()

        def expire(conn: Any) -> tuple[list[str], list[str]]:
            expired = sessions.expire_idle(conn, policy, time.time())
            if not live_ids:
                return expired, []
            marks = ",".join("?" * len(live_ids))
            ended = [r[0] for r in conn.execute(
                f"SELECT id FROM sessions WHERE state != 'active' AND id IN ({marks})",
                live_ids).fetchall()]
            return expired, ended

        expired, ended = await self.gw.db.write(expire)
        for session_id in {*expired, *ended}:
            self.live.end(session_id, "session expired" if session_id in expired
                          else "session closed")
        if expired:
            log.info("expired %d idle sessions", len(expired))
        return len(expired)

    def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()
        self.live.end_all("gateway shutting down")


def routers(gw: Gateway) -> list[APIRouter]:
    policy = gw.session_policy
    quiet_denial_noise()
    live = LiveStreams(gw.ctx.settings.gateway.max_streams_per_session)
    sweeper = Sweeper(gw, live)
    gw.on_startup.append(sweeper.start)
    gw.on_shutdown.append(sweeper.stop)

    async def tell_streams(session_id: str, event: dict[str, Any]) -> None:
        await live.tell(session_id, event)

    gw.on_turn_resumed.append(tell_streams)
    voice_ws = gw.ctx.settings.upstream_of("voice").replace("http", "ws", 1)  # https: wss
    touch_every = max(0.5, min(policy.idle_seconds / 4, 10.0))
    User = Annotated[ApiKey, Depends(gw.user)]
    api = APIRouter(prefix="/v1", tags=["sessions"])

    @api.post("/sessions", status_code=201)
    async def start(key: User, body: NewSession | None = None) -> dict[str, Any]:
        mode = body.mode if body is not None else "text"
        row = await gw.db.write(lambda c: sessions.start(c, policy, mode, key.id, time.time()))
        return sessions.as_json(row, policy)

    @api.get("/sessions")
    async def listing(key: User, state: State | None = None,
                      limit: Annotated[int, Query(ge=1, le=500)] = 100) -> dict[str, Any]:
        def read(conn: Any) -> tuple[list[Any], dict[str, int]]:
            sessions.expire_idle(conn, policy, time.time())
            return (sessions.listing(conn, state, limit, key.id),
                    sessions.counts(conn, key.id))

        rows, counts = await gw.db.write(read)
        return {"sessions": [sessions.as_json(r, policy) for r in rows], "counts": counts}

    @api.get("/sessions/{session_id}")
    async def get(key: User, session_id: str) -> dict[str, Any]:
        row = await gw.db.write(
            lambda c: sessions.get_fresh(c, policy, session_id, time.time(), key.id))
        return sessions.as_json(row, policy)

    @api.post("/sessions/{session_id}/stop")
    async def stop(key: User, session_id: str) -> dict[str, Any]:
        row = await gw.db.write(
            lambda c: sessions.stop(c, policy, session_id, time.time(), key.id))
        live.end(session_id, "session stopped")
        return sessions.as_json(row, policy)

    @api.websocket("/sessions/{session_id}/stream")
    async def stream(websocket: WebSocket, session_id: str) -> None:
        reserved = False
        try:
            key = gw.keys.authenticate(websocket.headers.get("authorization"))
            row = await gw.db.write(
                lambda c: sessions.touch(c, policy, session_id, time.time(), key.id))
            live.reserve(session_id)
            reserved = True
            upstream = await open_upstream(f"{voice_ws}/v1/sessions/{session_id}/stream",
                                           gw.ctx.token, row.mode, key.id,
                                           tls=gw.ctx.tls)
        except ApiError as exc:
            if reserved:
                live.release(session_id)
            await refuse(websocket, exc)
            return
        except BaseException:
            if reserved:
                live.release(session_id)
            raise
        last_touch = time.monotonic()

        async def activity() -> None:
            nonlocal last_touch
            if time.monotonic() - last_touch < touch_every:
                return
            last_touch = time.monotonic()
            await gw.db.write(lambda c: sessions.touch(c, policy, session_id, time.time()))

        try:
            await websocket.accept()
        except BaseException:
            live.release(session_id)
            await upstream.close()
            raise
        relay = Relay(session_id, websocket, upstream, activity)
        live.add(relay)
        live.release(session_id)  # the relay holds the slot from here
        log.info("stream of %s opened", session_id)
        try:
            await relay.run()
        finally:
            live.discard(relay)
            log.info("stream of %s closed", session_id)

    return [api]
