"""How a realtime session's reply is made: recall from memory, stream from the router, store.

`Dialogue.for_session(id, owner)` is the `generate_stream` a `RealtimeSession` calls
for each utterance. Each reply:

  1. recalls memories for the utterance and reads the session's recent turns
     (memory service, one read);
  2. streams the reply from the router (`POST /v1/generate/stream`), yielding
     each delta as it arrives;
  3. when the reply is complete, stores the exchange (user turn, reply, the
     facts the user stated) before the generator ends, so the turn is durable
     by the time the client sees `response.final`.

An interrupted or failed reply is still part of the conversation: the user's
turn and whatever was said are stored by a background task (the reply's own
task is being cancelled), marked `interrupted` or `failed`. Closing the
generator early closes the router stream, which cancels the provider call.

With Sonia's tools offered to the model (`gateway.agent_tools`, the default)
the reply is the gateway's agent turn instead (`POST /internal/v1/turns`):
the voice service may not reach EVA or OpenClaw, and the gateway runs every
tool call as a proposal to EVA, with taint and approvals, exactly as in
`/v1/chat`, and stores the exchange itself. The model's words stream as it says
them (a turn may run several model steps and tools between them); at the end
an `Attribution` carries the provider, the turn's id, its status and any
pending approval. Closing the generator early closes the gateway's stream,
which interrupts the turn (its model step in flight, and the model server's
stream with it); the gateway stores the interrupted exchange.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from typing import Any

from sonia.errors import ApiError, api_error_for
from sonia.kit import correlation
from sonia.kit.app import ServiceContext
from sonia.kit.sse import parse_sse_data
from sonia.services.voice.pipeline import Attribution, GenerateStream

log = logging.getLogger("sonia.voice.dialogue")

RECALL_LIMIT = 5
HISTORY_TURNS = 20


class Dialogue:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.memory = ctx.client("memory")
        self.router = ctx.client("router")
        self.gateway = ctx.client("gateway")
        self.tools = ctx.settings.gateway.agent_tools
        self._background: set[asyncio.Task[None]] = set()

    def for_session(self, session_id: str, owner: str) -> GenerateStream:
        """Replies in `session_id` of `owner`, the key id whose memories are recalled."""
        def generate(text: str) -> AsyncGenerator[str, None]:
            return self.reply(session_id, text, owner)
        return generate

    async def _context(self, session_id: str, text: str,
                       owner: str) -> tuple[list[str], list[dict[str, str]]]:
        found = await self.memory.request(
            "GET", f"/v1/sessions/{session_id}/context",
            params={"q": text[:4096], "recall": RECALL_LIMIT, "turns": HISTORY_TURNS,
                    "owner": owner})
        recalled = [r["content"] for r in found["recalled"]]
        history = [{"role": t["role"], "content": t["content"]} for t in found["turns"]]
        return recalled, history

    async def _store(self, session_id: str, owner: str, text: str, reply: str,
                     metadata: dict[str, Any]) -> None:
        await self.memory.request(
            "POST", f"/v1/sessions/{session_id}/exchanges", params={"owner": owner},
            json_body={"user": text, "assistant": reply or None,
                       "metadata": {**metadata, "source": "voice",
                                    "correlation_id": correlation.current()}})

    def _store_later(self, session_id: str, owner: str, text: str, reply: str,
                     metadata: dict[str, Any]) -> None:
        async def store() -> None:
            try:
                await self._store(session_id, owner, text, reply, metadata)
            except ApiError as exc:
                log.warning("could not store the turn of %s: %s", session_id, exc.detail)

        task = asyncio.create_task(store(), name=f"store-{session_id}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def reply(self, session_id: str, text: str,
                    owner: str) -> AsyncGenerator[str, None]:
        """The reply's text deltas, after one `Attribution` saying who answers."""
        if self.tools:
            async for delta in self._agent_reply(session_id, text):
                yield delta
            return
        recalled, history = await self._context(session_id, text, owner)
        body = {"messages": [*history, {"role": "user", "content": text}],
                "recalled": recalled}
        budget = self.ctx.settings.router.timeout_seconds * 3 + 5.0
        said = ""
        outcome: dict[str, Any] = {"interrupted": True}
        try:
            async with self.router.stream_lines("POST", "/v1/generate/stream", json_body=body,
                                                timeout=budget) as lines:
                async for line in lines:
                    event = parse_sse_data(line)
                    if not isinstance(event, dict):
                        continue
                    kind = event.get("type")
                    if kind == "start":
                        outcome.update(provider=event.get("provider"), model=event.get("model"))
                        yield Attribution(str(event.get("provider")), str(event.get("model")))
                    elif kind == "delta" and event.get("text"):
                        said += str(event["text"])
                        yield str(event["text"])
                    elif kind == "error":
                        outcome = {"failed": event.get("code")}
                        raise api_error_for(str(event.get("code")), str(event.get("detail")))
            outcome["interrupted"] = False
            await self._store(session_id, owner, text, said, outcome)
        except ApiError as exc:
            outcome = {"failed": exc.code}
            self._store_later(session_id, owner, text, said, outcome)
            raise
        finally:
            if outcome.get("interrupted"):
                self._store_later(session_id, owner, text, said, outcome)

    async def _agent_reply(self, session_id: str, text: str) -> AsyncGenerator[str, None]:
        settings = self.ctx.settings
        budget = settings.router.timeout_seconds * (settings.gateway.agent_max_steps + 1) + 10.0
        said = False
        async with self.gateway.stream_lines(
                "POST", "/internal/v1/turns", timeout=budget,
                json_body={"session_id": session_id, "text": text}) as lines:
            async for line in lines:
                event = parse_sse_data(line)
                if not isinstance(event, dict):
                    continue
                kind = event.get("type")
                if kind == "delta" and event.get("text"):
                    said = True
                    yield str(event["text"])
                elif kind == "final":
                    answer = event.get("answer") or {}
                    turn = {k: answer[k] for k in ("agent_turn_id", "status", "pending_approval")
                            if answer.get(k) is not None}
                    yield Attribution(str(answer.get("provider")), str(answer.get("model")),
                                      turn)
                    if not said and answer.get("reply"):
                        yield str(answer["reply"])  # e.g. "waiting for an approver"
                elif kind == "error":
                    raise api_error_for(str(event.get("code")), str(event.get("detail")))

    async def drain(self) -> None:
        """Wait for the background stores (at shutdown)."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=5.0)


__all__ = ["Dialogue"]
