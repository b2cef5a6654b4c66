"""Tool calling at the router: one model step that may answer with `tool_calls`.

    POST /v1/generate/tools {messages, tools, tool_choice?, profile?, model?,
                             max_tokens?, temperature?, sonia_tools?}
         -> {message: {content, tool_calls}, finish_reason, model, provider, usage,
             tools_refused}

`messages` are OpenAI chat messages as the model sees them (system, user,
assistant with `tool_calls`, `tool` with `tool_call_id`), `tools` OpenAI function
definitions. The router runs no tool and decides nothing about them: it asks a
provider that can call tools for the next step and hands back what the model
said, tool calls included, for the gateway to turn into proposals (or, for a
client of `/v1/chat/completions`, to run itself).

Which providers can call tools:

- a model server (`OpenAIProvider.complete`) always: the tools go upstream as given.
  When it refuses them (400/422: a model without tool support), Sonia's tools
  are dropped for that step and the model answers in words (`tools_refused`);
  a client's tools get the server's refusal as a 400;
- the builtin model only when `sonia_tools` is set, i.e. for Sonia's own tools,
  through its small deterministic grammar (`builtin_tools`); a client's tools it
  cannot call, and a chain with no other provider answers 400 INVALID_ARGUMENT
  saying so, never a reply that silently dropped the tools.

Fallback follows the profile like `/v1/generate`: a provider that fails is
quarantined and the next is asked; one that cannot call tools is skipped.

    POST /v1/generate/tools/stream   same body -> text/event-stream of `data: {json}`:
         {type: start, provider, model}, then as the model makes them
         {type: delta, text} and {type: tool_calls, tool_calls: [OpenAI deltas:
         {index, id?, type?, function: {name?, arguments?}}]}, then
         {type: end, message, finish_reason, model, provider, usage, tools_refused}
         (the whole step, as `/v1/generate/tools` answers it), or
         {type: error, status, code, detail} when the provider fails mid-step.

The streamed step asks a model server with `stream: true` and passes its chunks
on as they come (a server that ignores `stream` answers one completion, passed
on as one chunk); the builtin's step comes word by word. Fallback happens only
until the first chunk; a stream whose client leaves is closed, and with it the
model server's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Protocol, TypeVar

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from starlette.responses import StreamingResponse

from sonia.errors import ApiError, InvalidArgument
from sonia.kit.sse import sse_data
from sonia.services.router import builtin_tools
from sonia.services.router.providers import (
    BuiltinProvider,
    GenerationRequest,
    OpenAIProvider,
    Provider,
    system_with_memories,
    word_deltas,
)
from sonia.services.router.routing import Router, _describe

MAX_MESSAGES = 256
MAX_CHARS = 262_144
MAX_TOOLS = 128


class ToolMessage(BaseModel):
    """One OpenAI chat message, tool turns included; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant", "tool"]
    content: Annotated[StrictStr, Field(max_length=MAX_CHARS)] | None = None
    tool_calls: Annotated[list[dict[str, Any]], Field(max_length=MAX_TOOLS)] | None = None
    tool_call_id: Annotated[StrictStr, Field(max_length=200)] | None = None
    name: Annotated[StrictStr, Field(max_length=200)] | None = None


class ToolsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    messages: Annotated[list[ToolMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    tools: Annotated[list[dict[str, Any]], Field(min_length=1, max_length=MAX_TOOLS)]
    tool_choice: StrictStr | dict[str, Any] | None = None
    profile: Annotated[StrictStr, Field(min_length=1, max_length=64)] | None = None
    model: Annotated[StrictStr, Field(min_length=1, max_length=200)] | None = None
    max_tokens: Annotated[int, Field(ge=1, le=32_768)] = 512
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.0
    recalled: Annotated[list[Annotated[StrictStr, Field(max_length=MAX_CHARS)]],
                        Field(max_length=64)] = Field(default_factory=list)
    sonia_tools: bool = False


@dataclass(frozen=True)
class ToolStep:
    """What the model answered in one step: text, tool calls, or both."""

    content: str | None
    tool_calls: list[dict[str, Any]]
    finish_reason: str
    model: str
    provider: str
    usage: dict[str, int] = field(default_factory=dict)
    tools_refused: bool = False
    """The model server refused the tools and answered without them."""

    def to_dict(self) -> dict[str, Any]:
        return {"message": {"role": "assistant", "content": self.content,
                            "tool_calls": self.tool_calls},
                "finish_reason": self.finish_reason, "model": self.model,
                "provider": self.provider, "usage": self.usage,
                "tools_refused": self.tools_refused}


def _payload(body: ToolsBody, model: str) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "model": body.model or model, "stream": False,
        "messages": system_with_memories(body.recalled)
        + [m.model_dump(exclude_none=True) for m in body.messages],
        "tools": body.tools, "max_tokens": body.max_tokens, "temperature": body.temperature}
    if body.tool_choice is not None:
        payload["tool_choice"] = body.tool_choice
    return payload


def _usage(raw: Any) -> dict[str, int]:
    usage = raw if isinstance(raw, dict) else {}
    prompt = int(usage.get("prompt_tokens", 0) or 0)
    completion = int(usage.get("completion_tokens", 0) or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


async def _without_tools(provider: OpenAIProvider, body: ToolsBody) -> ToolStep:
    """A plain reply from a model server that refused Sonia's tools: the model talks."""
    plain = [{"role": m.role, "content": m.content} for m in body.messages
             if m.role != "tool" and m.content]
    generation = await provider.generate(GenerationRequest.of(
        plain, body.recalled, max_tokens=body.max_tokens, temperature=body.temperature,
        model=body.model))
    return ToolStep(content=generation.text, tool_calls=[], finish_reason="stop",
                    model=generation.model, provider=provider.name,
                    usage=generation.usage.to_dict(), tools_refused=True)


async def _ask(provider: Provider, body: ToolsBody) -> ToolStep | None:
    """The provider's step, or None when it cannot call these tools."""
    if isinstance(provider, OpenAIProvider):
        try:
            answer = await provider.complete(_payload(body, provider.model))
        except InvalidArgument:
            if not body.sonia_tools:
                raise  # the client's tools, refused by the model server: the client's 400
            return await _without_tools(provider, body)
        choice = answer["choices"][0]
        message = choice.get("message") or {}
        calls = message.get("tool_calls") or []
        if not isinstance(calls, list):
            calls = []
        return ToolStep(content=message.get("content"), tool_calls=calls,
                        finish_reason=str(choice.get("finish_reason")
                                          or ("tool_calls" if calls else "stop")),
                        model=str(answer.get("model") or body.model or provider.model),
                        provider=provider.name, usage=_usage(answer.get("usage")))
    if isinstance(provider, BuiltinProvider) and body.sonia_tools:
        messages = [m.model_dump(exclude_none=True) for m in body.messages]
        content, calls = builtin_tools.step(provider, messages, body.recalled, body.tools)
        words = sum(len(str(m.get("content") or "").split()) for m in messages)
        return ToolStep(content=content, tool_calls=calls,
                        finish_reason="tool_calls" if calls else "stop",
                        model=provider.model, provider=provider.name,
                        usage=_usage({"prompt_tokens": words,
                                      "completion_tokens": len((content or "").split())}))
    return None


@dataclass
class _Attempts:
    """The providers a tool step went through: the basis of its refusal or its 503."""

    tried: list[dict[str, str]] = field(default_factory=list)
    unable: list[str] = field(default_factory=list)
    last: BaseException | None = None

    async def candidates(self, router: Router, body: ToolsBody) -> AsyncIterator[Provider]:
        """The profile's providers that can call these tools and are not quarantined."""
        for name in router._chain(body.profile):
            provider = router.providers[name]
            if not isinstance(provider, OpenAIProvider) and not (
                    isinstance(provider, BuiltinProvider) and body.sonia_tools):
                self.unable.append(str(getattr(provider, "model", name)))
                continue
            if not await router._admit(name):
                self.tried.append({"provider": name, "error": "quarantined"})
                continue
            yield provider

    def failed(self, router: Router, provider: Provider, exc: Exception) -> None:
        router._failed(provider, exc)
        self.tried.append({"provider": provider.name, "error": _describe(exc)})
        self.last = exc

    def exhausted(self, router: Router, body: ToolsBody) -> ApiError:
        """400 when no provider of the profile can call tools; else the router's 503."""
        if not self.tried:
            return InvalidArgument(
                f"the model {', '.join(self.unable)} cannot call tools; configure a model "
                "server that can (sonia model use URL --model NAME) or send the request "
                "without tools", extra={"models": self.unable})
        return router._exhausted(body.profile, self.tried)


async def complete(router: Router, body: ToolsBody) -> ToolStep:
    """The first tool-capable provider of the profile that answers; see the module doc."""
    attempts = _Attempts()
    async for provider in attempts.candidates(router, body):
        try:
            async with asyncio.timeout(router.timeout):
                step = await _ask(provider, body)
        except InvalidArgument:
            raise  # the server answered, and refused the request: no fallback, no quarantine
        except Exception as exc:  # CancelledError is not an Exception: it propagates
            attempts.failed(router, provider, exc)
            continue
        router._succeeded(provider)
        assert step is not None  # only tool-capable providers get here
        return step
    raise attempts.exhausted(router, body) from attempts.last


# --------------------------------------------------------------------------- streamed steps

REFUSED = "sonia_tools_refused"
"""Marks the chunks of a plain reply that stands in for a step whose tools were refused."""


class StepBuilder:
    """Puts a step together from its streamed chunks (OpenAI's deltas: text pieces, and
    tool calls whose `arguments` arrive in pieces under their `index`), and says what
    each chunk added."""

    def __init__(self) -> None:
        self.content = ""
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.usage: dict[str, int] = {}
        self.model: str | None = None
        self.tools_refused = False

    def add(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        """Take one chunk; the stream events it makes (delta, tool_calls)."""
        events: list[dict[str, Any]] = []
        if chunk.get("model"):
            self.model = str(chunk["model"])
        if isinstance(chunk.get("usage"), dict):
            self.usage = _usage(chunk["usage"])
        self.tools_refused = self.tools_refused or bool(chunk.get(REFUSED))
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                continue
            text = delta.get("content")
            if isinstance(text, str) and text:
                self.content += text
                events.append({"type": "delta", "text": text})
            calls = delta.get("tool_calls")
            if isinstance(calls, list):
                shown = [self._call_delta(call) for call in calls if isinstance(call, dict)]
                if shown:
                    events.append({"type": "tool_calls", "tool_calls": shown})
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
        return events

    def _call_delta(self, call: dict[str, Any]) -> dict[str, Any]:
        index = call.get("index")
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < MAX_TOOLS:
            index = len(self.calls)
        entry = self.calls.setdefault(index, {"id": f"call_{index + 1}", "type": "function",
                                              "function": {"name": "", "arguments": ""}})
        raw = call.get("function")
        function: dict[str, Any] = raw if isinstance(raw, dict) else {}
        shown: dict[str, Any] = {"index": index, "function": {}}
        if isinstance(call.get("id"), str) and call["id"]:
            entry["id"] = shown["id"] = call["id"]
            shown["type"] = "function"
        name = function.get("name")
        if isinstance(name, str) and name and name != entry["function"]["name"]:
            entry["function"]["name"] += name
            shown["function"]["name"] = name
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            entry["function"]["arguments"] += arguments
            shown["function"]["arguments"] = arguments
        return shown

    def step(self, provider: Provider, body: ToolsBody) -> ToolStep:
        calls = [self.calls[i] for i in sorted(self.calls)]
        return ToolStep(content=self.content or None, tool_calls=calls,
                        finish_reason=self.finish_reason or ("tool_calls" if calls else "stop"),
                        model=self.model or body.model or str(getattr(provider, "model", "")),
                        provider=provider.name, usage=self.usage or _usage({}),
                        tools_refused=self.tools_refused)


def _chunks_of(step: ToolStep) -> list[dict[str, Any]]:
    """A whole step as the chunks a model server would have streamed: word by word."""
    chunks: list[dict[str, Any]] = [{"choices": [{"index": 0, "delta": {"content": word}}]}
                                    for word in word_deltas(step.content or "")]
    if step.tool_calls:
        chunks.append({"choices": [{"index": 0, "delta": {"tool_calls": [
            {**call, "index": index} for index, call in enumerate(step.tool_calls)]}}]})
    chunks.append({"model": step.model, "usage": step.usage, REFUSED: step.tools_refused,
                   "choices": [{"index": 0, "delta": {}, "finish_reason": step.finish_reason}]})
    return chunks


async def _stream(provider: Provider, body: ToolsBody) -> AsyncIterator[dict[str, Any]]:
    """The provider's step as chunks (only tool-capable providers get here)."""
    if isinstance(provider, OpenAIProvider):
        try:
            async for chunk in provider.complete_stream(_payload(body, provider.model)):
                yield chunk
            return
        except InvalidArgument:  # raised before any chunk: the server refused the tools
            if not body.sonia_tools:
                raise
        whole: ToolStep | None = await _without_tools(provider, body)
    else:
        whole = await _ask(provider, body)  # the builtin: deterministic, whole at once
    assert whole is not None
    for chunk in _chunks_of(whole):
        yield chunk


@dataclass
class OpenedStep:
    """A streamed step whose provider answered its first chunk (no fallback after this)."""

    provider: Provider
    first: dict[str, Any] | None
    rest: AsyncIterator[dict[str, Any]]

    async def aclose(self) -> None:
        aclose = getattr(self.rest, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


async def open_step(router: Router, body: ToolsBody) -> OpenedStep:
    """The streamed step of the first tool-capable provider that answers a first chunk;
    the fallbacks and refusals of `complete`."""
    attempts = _Attempts()
    async for provider in attempts.candidates(router, body):
        chunks = _stream(provider, body)
        opened = OpenedStep(provider, None, chunks)
        try:
            async with asyncio.timeout(router.timeout):
                opened.first = await anext(chunks)
        except StopAsyncIteration:
            opened.first = None
        except InvalidArgument:
            await opened.aclose()
            raise  # the server answered, and refused the request: no fallback
        except Exception as exc:  # CancelledError is not an Exception: it propagates
            await opened.aclose()
            attempts.failed(router, provider, exc)
            continue
        except BaseException:
            await opened.aclose()
            raise
        router._succeeded(provider)
        return opened
    raise attempts.exhausted(router, body) from attempts.last


async def step_events(opened: OpenedStep, body: ToolsBody) -> AsyncIterator[dict[str, Any]]:
    """The stream's events (module doc) from an opened step; closes it at the end."""
    builder = StepBuilder()
    try:
        yield {"type": "start", "provider": opened.provider.name,
               "model": body.model or str(getattr(opened.provider, "model", ""))}
        chunk = opened.first
        while chunk is not None:
            for event in builder.add(chunk):
                yield event
            chunk = await anext(opened.rest, None)
        yield {"type": "end", **builder.step(opened.provider, body).to_dict()}
    except ApiError as exc:
        yield {"type": "error", "status": exc.status, "code": exc.code, "detail": exc.detail}
    finally:
        await opened.aclose()


T = TypeVar("T")


class Guard(Protocol):
    """How the app cancels work whose client went away (`app.unless_client_leaves`)."""

    def __call__(self, request: Request, work: Awaitable[T]) -> Awaitable[T]: ...


def routes(router: Router, guard: Guard) -> APIRouter:
    api = APIRouter(prefix="/v1")

    @api.post("/generate/tools")
    async def generate_tools(body: ToolsBody, request: Request) -> dict[str, Any]:
        step = await guard(request, complete(router, body))
        return step.to_dict()

    @api.post("/generate/tools/stream")
    async def generate_tools_stream(body: ToolsBody, request: Request) -> StreamingResponse:
        opened = await guard(request, open_step(router, body))

        async def events() -> AsyncIterator[str]:
            async for event in step_events(opened, body):
                yield sse_data(event)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store"})

    return api


__all__ = ["OpenedStep", "StepBuilder", "ToolStep", "ToolsBody", "complete", "open_step",
           "routes", "step_events"]
