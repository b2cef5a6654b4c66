"""Gateway route: a chat turn told as it happens, for the console and any SSE client.

    POST /v1/chat/stream {message, session_id?, profile?}
         -> text/event-stream of `data: {json}` events:
            {type: start, session_id, agent_turn_id?, recalled: [{id, kind, content, score}]}
            {type: step, kind: model|tool_call, ...}     (a turn with tools: each model step
                                                          and tool call as it completes)
            {type: delta, text}...                       the reply
            {type: final, ...}                           exactly the answer of POST /v1/chat
                                                         (provider, model, memory,
                                                         pending_approval?)
            {type: error, status, code, detail}          the turn failed after it started
         A failure before the turn starts (unknown session, no memory service) is a
         problem+json answer, not a stream.

The turn is the same as `POST /v1/chat` (`conversation`): with Sonia's tools
offered (the default), the model's steps stream from the router's tool step, so
the model's words are sent as deltas as it says them (a reply it did not say,
such as "waiting for an approver", is sent in pieces at the end), while tool
calls and approvals show as they happen. With
`gateway.agent_tools = false`, the reply streams from the model word by word.

A client that goes away does not stop the turn: it completes and is stored, as it
would have been without streaming.
"""

# No `from __future__ import annotations`: FastAPI must see the dependency aliases.

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from starlette.responses import StreamingResponse

from sonia.errors import ApiError, describe_exception
from sonia.home import ApiKey
from sonia.services.gateway.agent import Agent, TurnLive
from sonia.services.gateway.assistant import Assistant
from sonia.services.gateway.conversation import ChatBody, checked_text, session_for
from sonia.services.gateway.state import Gateway

log = logging.getLogger("sonia.gateway.chat_stream")

Event = dict[str, Any]
_PIECE = re.compile(r"\S+\s*|\s+")


def pieces(text: str) -> list[str]:
    """`text` as word-sized deltas that join back to exactly `text`."""
    return _PIECE.findall(text)


def sse(event: Event) -> str:
    return f"data: {json.dumps(event, separators=(',', ':'), ensure_ascii=False)}\n\n"


async def next_event(queue: "asyncio.Queue[Event]", task: "asyncio.Task[Event]"
                     ) -> Event | None:
    """The next event the turn told, or None once it is over and everything was told."""
    while True:
        if not queue.empty():
            return queue.get_nowait()
        if task.done():
            return None
        getter = asyncio.ensure_future(queue.get())
        await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
        if not getter.done():
            getter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await getter
        if getter.done() and not getter.cancelled():
            return getter.result()


def routers(gw: Gateway, assistant: Assistant, agent: Agent | None) -> list[APIRouter]:
    User = Annotated[ApiKey, Depends(gw.user)]
    api = APIRouter(prefix="/v1", tags=["conversation"])
    running: set[asyncio.Task[Event]] = set()  # turns whose client may have gone

    @api.post("/chat/stream", response_class=StreamingResponse)
    async def chat_stream(body: ChatBody, key: User) -> StreamingResponse:
        message = checked_text(gw, body.message)
        session_id = await session_for(gw, key, body.session_id)
        queue: asyncio.Queue[Event] = asyncio.Queue()

        async def work() -> Event:
            if agent is not None and gw.ctx.settings.gateway.agent_tools:
                said: list[str] = []

                async def delta(text: str) -> None:
                    said.append(text)
                    await queue.put({"type": "delta", "text": text})

                # never interrupted: a client that goes away leaves the turn to complete
                answer = await agent.turn(key, session_id, message, body.profile, queue.put,
                                          live=TurnLive(on_delta=delta))
                if not said:
                    for piece in pieces(str(answer.get("reply") or "")):
                        await queue.put({"type": "delta", "text": piece})
                return answer
            return await assistant.chat(session_id, message, body.profile, owner=key.id,
                                        progress=queue.put)

        task = asyncio.create_task(work(), name="chat-stream")
        running.add(task)
        task.add_done_callback(running.discard)
        first = await next_event(queue, task)
        if first is None:
            task.result()  # it failed before it started: answer its problem, not a stream

        async def events() -> AsyncIterator[str]:
            event = first
            while event is not None:
                yield sse(event)
                event = await next_event(queue, task)
            try:
                yield sse({"type": "final", **task.result()})
            except ApiError as exc:
                yield sse({"type": "error", "status": exc.status, "code": exc.code,
                           "detail": exc.detail})
            except Exception as exc:  # a bug: logged as its type and place, never its text
                log.error("a streamed chat turn failed: %s", describe_exception(exc))
                yield sse({"type": "error", "status": 500, "code": "INTERNAL",
                           "detail": "an internal error occurred; see the service log"})

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store"})

    return [api]
