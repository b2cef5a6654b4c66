"""The chat flow behind the gateway's conversation routes: recall, generate, store.

    context    memory `GET /v1/sessions/{id}/context`: the memories recalled for the
               user's message and the session's recent turns, in one read
    generate   router `POST /v1/generate` (or `/v1/generate/stream`) with the
               history, the message and what was recalled
    store      memory `POST /v1/sessions/{id}/exchanges`: the user turn, the
               reply and the facts the message stated, in one transaction

Every call is an internal call (the gateway's service token, the request's
correlation ID), so one chat shows up under one ID in the gateway, memory and
router logs. What the memory service remembers on its own is described in
`sonia.services.memory.facts`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any

from sonia.errors import api_error_for
from sonia.kit import correlation
from sonia.kit.app import ServiceContext
from sonia.kit.sse import parse_sse_data

Progress = Callable[[dict[str, Any]], Awaitable[None]]
"""Told of a chat turn as it goes (`POST /v1/chat/stream`): `start` with what was
recalled, `delta` with the reply's words as the model gives them, and, in a turn with
tools (`agent`), one `step` per model step and tool call."""

RECALL_LIMIT = 5
HISTORY_TURNS = 20
MODELS_TTL_SECONDS = 10.0


def generation_budget(ctx: ServiceContext) -> float:
    """How long the gateway waits for the router: a few provider timeouts (fallbacks)."""
    return ctx.settings.router.timeout_seconds * 3 + 5.0


class Assistant:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.memory = ctx.client("memory")
        self.router = ctx.client("router")
        self._models: tuple[float, dict[str, Any]] | None = None

    # ------------------------------------------------------------------ memory

    async def recall(self, text: str, limit: int = RECALL_LIMIT, *,
                     owner: str) -> list[dict[str, Any]]:
        """The memories of `owner` (a key id) matching `text`: no key recalls another's."""
        found = await self.memory.request("GET", "/v1/memories/search",
                                          params={"q": text[:4096], "limit": limit,
                                                  "owner": owner})
        return list(found["results"])

    async def context(self, session_id: str, text: str, *, owner: str
                      ) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
        """What a reply in `session_id` needs, in one read: memories recalled for `text`
        and the session's recent turns (as {role, content} messages)."""
        recalled, turns = await self.context_turns(session_id, text, owner=owner)
        return recalled, [{"role": t["role"], "content": t["content"]} for t in turns]

    async def context_turns(self, session_id: str, text: str, *, owner: str
                            ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """`context`, with the turns as stored (id, role, content, metadata)."""
        found = await self.memory.request(
            "GET", f"/v1/sessions/{session_id}/context",
            params={"q": text[:4096], "recall": RECALL_LIMIT, "turns": HISTORY_TURNS,
                    "owner": owner})
        return list(found["recalled"]), [dict(t) for t in found["turns"]]

    async def store_exchange(self, session_id: str, user: str, assistant: str | None,
                             metadata: dict[str, Any], *, owner: str) -> dict[str, Any]:
        stored: dict[str, Any] = await self.memory.request(
            "POST", f"/v1/sessions/{session_id}/exchanges", params={"owner": owner},
            json_body={"user": user, "assistant": assistant, "metadata": metadata})
        return stored

    async def remember(self, text: str, *, owner: str) -> list[dict[str, Any]]:
        stored = await self.memory.request("POST", "/v1/facts", json_body={"text": text},
                                           params={"owner": owner})
        return list(stored["memories"])

    # ------------------------------------------------------------------ router

    @staticmethod
    def _body(messages: Sequence[dict[str, str]], recalled: Sequence[str], profile: str | None,
              max_tokens: int | None, temperature: float | None,
              model: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"messages": list(messages), "recalled": list(recalled)}
        if profile is not None:
            body["profile"] = profile
        if model is not None:
            body["model"] = model
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if temperature is not None:
            body["temperature"] = temperature
        return body

    async def generate(self, messages: Sequence[dict[str, str]], recalled: Sequence[str], *,
                       profile: str | None = None, max_tokens: int | None = None,
                       temperature: float | None = None,
                       model: str | None = None) -> dict[str, Any]:
        generation: dict[str, Any] = await self.router.request(
            "POST", "/v1/generate",
            json_body=self._body(messages, recalled, profile, max_tokens, temperature, model),
            timeout=generation_budget(self.ctx))
        return generation

    async def events(self, messages: Sequence[dict[str, str]], recalled: Sequence[str], *,
                     profile: str | None = None, max_tokens: int | None = None,
                     temperature: float | None = None,
                     model: str | None = None) -> AsyncGenerator[dict[str, Any], None]:
        """The router's stream events (start, delta..., end); an `error` event is raised.

        Take the first event before answering the client: when no provider can
        answer, that raises the router's problem (503 UNAVAILABLE, 400 ...)."""
        body = self._body(messages, recalled, profile, max_tokens, temperature, model)
        async with contextlib.aclosing(self._router_events("/v1/generate/stream", body)) as events:
            async for event in events:
                yield event  # closing this generator closes the router's stream at once

    async def _router_events(self, path: str, body: dict[str, Any]
                             ) -> AsyncGenerator[dict[str, Any], None]:
        """The JSON events of one of the router's SSE routes; an `error` event is raised."""
        async with self.router.stream_lines("POST", path, json_body=body,
                                            timeout=generation_budget(self.ctx)) as lines:
            async for line in lines:
                event = parse_sse_data(line)
                if not isinstance(event, dict):
                    continue
                if event.get("type") == "error":
                    raise api_error_for(str(event.get("code")), str(event.get("detail", "")))
                yield event

    async def tool_step(self, body: dict[str, Any]) -> dict[str, Any]:
        """One tool-calling step of the model (router `POST /v1/generate/tools`)."""
        step: dict[str, Any] = await self.router.request(
            "POST", "/v1/generate/tools", json_body=body, timeout=generation_budget(self.ctx))
        return step

    async def tool_step_events(self, body: dict[str, Any]
                               ) -> AsyncGenerator[dict[str, Any], None]:
        """One tool-calling step as it streams (router `POST /v1/generate/tools/stream`):
        start, delta and tool_calls events, then `end` with the whole step; an `error`
        event is raised. A problem before the stream (no provider) raises at once."""
        async with contextlib.aclosing(
                self._router_events("/v1/generate/tools/stream", body)) as events:
            async for event in events:
                yield event

    async def models(self) -> dict[str, Any]:
        """The router's profiles and providers (cached for a few seconds)."""
        now = time.monotonic()
        if self._models is None or now - self._models[0] > MODELS_TTL_SECONDS:
            found = await self.router.request("GET", "/v1/providers")
            self._models = (now, dict(found))
        return self._models[1]

    async def served_models(self) -> list[dict[str, str]]:
        """Every model the router's providers serve, as `{id, provider}` (asked each time:
        a model server that went away must show, not hide behind a cache)."""
        found = await self.router.request("GET", "/v1/models")
        return [dict(m) for m in found["models"]]

    async def _streamed(self, messages: Sequence[dict[str, str]], recalled: Sequence[str],
                        profile: str | None, progress: Progress) -> dict[str, Any]:
        """A generation through the router's stream, each delta told as it arrives; the
        same shape as `generate`'s answer."""
        answer: dict[str, Any] = {"text": "", "model": None, "provider": None, "usage": {},
                                  "finish_reason": "stop"}
        events = self.events(messages, recalled, profile=profile)
        try:
            async for event in events:
                kind = event.get("type")
                if kind == "start":
                    answer.update(model=event.get("model"), provider=event.get("provider"))
                elif kind == "delta" and event.get("text"):
                    answer["text"] += str(event["text"])
                    await progress({"type": "delta", "text": str(event["text"])})
                elif kind == "end":
                    answer.update(usage=event.get("usage") or {},
                                  finish_reason=event.get("finish_reason", "stop"))
        finally:
            await events.aclose()
        return answer

    # ------------------------------------------------------------------ the flow

    async def chat(self, session_id: str, message: str, profile: str | None, *,
                   owner: str, progress: Progress | None = None) -> dict[str, Any]:
        """One chat turn of `owner` (a key id) in `session_id`; the answer of `POST /v1/chat`.
        With `progress`, the reply is streamed from the model and told word by word."""
        recalled, history = await self.context(session_id, message, owner=owner)
        messages = [*history, {"role": "user", "content": message}]
        memories = [r["content"] for r in recalled]
        if progress is None:
            generation = await self.generate(messages, memories, profile=profile)
        else:
            await progress({"type": "start", "session_id": session_id,
                            "recalled": [{k: r[k] for k in ("id", "kind", "content", "score")}
                                         for r in recalled]})
            generation = await self._streamed(messages, memories, profile, progress)
        stored = await self.store_exchange(
            session_id, message, generation["text"] or None,
            {"model": generation["model"], "provider": generation["provider"],
             "correlation_id": correlation.current()}, owner=owner)
        assistant_turn = stored["turns"][-1]
        return {
            "reply": generation["text"],
            "session_id": session_id,
            "turn_id": assistant_turn["id"],
            "model": generation["model"],
            "provider": generation["provider"],
            "memory": {
                "recalled": [{k: r[k] for k in ("id", "kind", "content", "score")}
                             for r in recalled],
                "stored": [{k: m[k] for k in ("id", "kind", "content", "new")}
                           for m in stored["memories"]],
            },
            "usage": generation["usage"],
        }


__all__ = ["Assistant", "Progress", "generation_budget"]
