"""The voice service's chat turns: Sonia's tools in WebSocket sessions.

A reply in a realtime session (typed or spoken) is made by the voice
service, which may not reach EVA or OpenClaw. When the model is offered tools
(`gateway.agent_tools`), the voice service asks the gateway for the turn
instead of the router:

    POST /internal/v1/turns {session_id, text}   (service token; caller: voice)
         -> text/event-stream of `data: {json}` events: {type: delta, text} as the
            model says its words, then {type: final, answer} (the answer of
            `POST /v1/chat`: reply, status, provider, model, agent_turn_id,
            pending_approval?) or {type: error, status, code, detail}

The gateway does not take the caller's word for whose turn it is: the owner is
the key that holds the session in the gateway's own session table, the
session must be active, and that key must still exist. The turn is then the
agent's, exactly as `/v1/chat` runs it: every tool call a proposal to EVA,
taint, approvals, the turn record. The turn runs as a task of its own,
watched (`agent.TurnLive`): when the voice service closes the stream (the user
interrupted, the session ended), the turn is interrupted, not killed mid-action.
When a paused turn resumes after an approver's decision, the session's open
streams are told (`turn.resumed`, sent by `sessions_api`).
"""

# No `from __future__ import annotations`: FastAPI must see the body model as a real object.

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from starlette.responses import StreamingResponse

from sonia.errors import ApiError, Forbidden
from sonia.kit.sse import sse_data
from sonia.services.gateway import sessions
from sonia.services.gateway.agent import Agent, TurnLive
from sonia.services.gateway.conversation import checked_text
from sonia.services.gateway.state import Gateway

log = logging.getLogger("sonia.gateway.voice_turns")

ROUTE = "/internal/v1/turns"
CALLERS: dict[str, frozenset[str]] = {ROUTE: frozenset({"voice"})}


class VoiceTurn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    session_id: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    text: StrictStr


def router(gw: Gateway, agent: Agent) -> APIRouter:
    api = APIRouter(tags=["internal"])
    running: set[asyncio.Task[None]] = set()

    @api.post(ROUTE)
    async def turn(body: VoiceTurn) -> StreamingResponse:
        text = checked_text(gw, body.text, "text")
        policy = gw.session_policy
        row = await gw.db.write(
            lambda c: sessions.touch(c, policy, body.session_id, time.time()))
        owner = row.owner
        key = gw.keys.by_id(owner)
        if key is None:
            raise Forbidden(f"the key that holds session {body.session_id} no longer exists")
        events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

        async def said(text: str) -> None:
            await events.put({"type": "delta", "text": text})

        live = TurnLive(on_delta=said)

        async def run() -> None:
            try:
                answer = await agent.turn(key, body.session_id, text, None, live=live)
                await events.put({"type": "final", "answer": answer})
            except ApiError as exc:
                await events.put({"type": "error", "status": exc.status, "code": exc.code,
                                  "detail": exc.detail})
            except Exception:  # a bug: the turn record says failed; the stream says so too
                log.exception("the turn of session %s failed", body.session_id)
                await events.put({"type": "error", "status": 500, "code": "INTERNAL",
                                  "detail": "the turn failed"})
            finally:
                await events.put(None)

        task = asyncio.create_task(run(), name=f"voice-turn-{body.session_id}")
        running.add(task)
        task.add_done_callback(running.discard)

        async def stream() -> AsyncIterator[str]:
            try:
                while (event := await events.get()) is not None:
                    yield sse_data(event)
            finally:
                live.interrupt.set()  # the reader left (or the turn ended): stop at once

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store"})

    return api


__all__ = ["CALLERS", "ROUTE", "VoiceTurn", "router"]
