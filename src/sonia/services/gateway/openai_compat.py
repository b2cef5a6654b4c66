"""Gateway routes: the OpenAI-compatible API, so existing clients and SDKs work unchanged.

    GET  /v1/models             {object: list, data: [{id, object: model, created, owned_by}]}
    POST /v1/chat/completions   {model, messages, stream?, stream_options?, max_tokens?,
                                 max_completion_tokens?, temperature?, n?, tools?,
                                 tool_choice?}
                                -> chat.completion, or with `stream: true` an SSE stream of
                                `data: {chat.completion.chunk}` events ending in `data: [DONE]`

`/v1/models` lists `sonia` (the default routing profile) and every model the
configured providers serve: a model server's own ids (its `GET /models`) and
`sonia-builtin` where the builtin model is configured. A request names one of
those, or a routing profile by name (`openai`, `builtin`, ...), which stays
accepted as an alias. A model server that cannot list its models makes
`/v1/models` a 503 that names it.
Parameters of the OpenAI API that Sonia does not use (top_p, seed, user, ...)
are accepted and ignored, as OpenAI-compatible servers do; the ones it cannot
honour (n > 1, non-text content) are refused with 400. A request with `tools`
(or tool turns in its history) is one tool-calling step, see `tool_calls`.

The conversation is the client's (it sends the whole history each time), so no
session or turn is stored here; the last user message is still used to recall
memories and its stated facts are remembered, like `/v1/chat`.
"""

# No `from __future__ import annotations`: FastAPI must see the `User` dependency
# alias, which is local to `routers()`, as a real object rather than a string.

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr
from starlette.responses import StreamingResponse

from sonia.errors import ApiError, InvalidArgument, NotFound, Unavailable
from sonia.home import ApiKey
from sonia.services.gateway import tool_calls
from sonia.services.gateway.assistant import Assistant
from sonia.services.gateway.state import Gateway

log = logging.getLogger("sonia.gateway.openai")

DEFAULT_MODEL = "sonia"
MAX_MESSAGES = 256
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: StrictStr
    text: StrictStr | None = None


class CompletionMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: StrictStr
    content: StrictStr | list[ContentPart] | None = None
    tool_calls: list[Any] | None = None
    tool_call_id: Annotated[StrictStr, Field(min_length=1, max_length=200)] | None = None

    def has_tool_turn(self) -> bool:
        return self.role == "tool" or bool(self.tool_calls)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: StrictBool = False


class CompletionBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    messages: Annotated[list[CompletionMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, Field(ge=1, le=32_768)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1, le=32_768)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    n: Annotated[int, Field(ge=1, le=1)] | None = None
    tools: Annotated[list[Any], Field(max_length=128)] | None = None
    tool_choice: StrictStr | dict[str, Any] | None = None

    def uses_tools(self) -> bool:
        return bool(self.tools) or any(m.has_tool_turn() for m in self.messages)


def _text(message: CompletionMessage, index: int) -> str | None:
    content = message.content
    if content is None or isinstance(content, str):
        return content
    texts = []
    for part in content:
        if part.type != "text" or part.text is None:
            raise InvalidArgument(f"messages.{index}: only text content is supported, "
                                  f"not {part.type!r}")
        texts.append(part.text)
    return "\n".join(texts)


def plain_messages(body: CompletionBody, max_chars: int) -> list[dict[str, str]]:
    """The conversation as {role, content} dicts the router takes; 400 for what it cannot."""
    messages: list[dict[str, str]] = []
    for index, message in enumerate(body.messages):
        role = ROLES.get(message.role)
        if role is None:
            raise InvalidArgument(f"messages.{index}: role {message.role!r} is not supported; "
                                  "use system, developer, user or assistant")
        text = _text(message, index)
        if text is None:
            if role == "assistant":
                continue  # an assistant turn without text (tool calls elsewhere)
            raise InvalidArgument(f"messages.{index}: content is required")
        if len(text) > max_chars:
            raise InvalidArgument(f"messages.{index}: content is {len(text)} characters; "
                                  f"the limit is {max_chars}")
        if "\x00" in text:
            raise InvalidArgument(f"messages.{index}: content must not contain NUL characters")
        messages.append({"role": role, "content": text})
    if not any(m["role"] == "user" and m["content"].strip() for m in messages):
        raise InvalidArgument("messages must contain a non-empty user message")
    return messages


def tool_messages(body: CompletionBody, max_chars: int) -> list[dict[str, Any]]:
    """The conversation with its tool turns, as the router's `/v1/generate/tools` takes it."""
    messages: list[dict[str, Any]] = []
    for index, message in enumerate(body.messages):
        role = "tool" if message.role == "tool" else ROLES.get(message.role)
        if role is None:
            raise InvalidArgument(f"messages.{index}: role {message.role!r} is not supported; "
                                  "use system, developer, user, assistant or tool")
        text = _text(message, index)
        if text is not None and (len(text) > max_chars or "\x00" in text):
            raise InvalidArgument(f"messages.{index}: content must be at most {max_chars} "
                                  "characters without NUL characters")
        out: dict[str, Any] = {"role": role, "content": text}
        if role == "assistant" and message.tool_calls:
            out["tool_calls"] = tool_calls.check_tool_calls(message.tool_calls,
                                                            f"messages.{index}")
        elif message.tool_calls:
            raise InvalidArgument(f"messages.{index}: only assistant messages carry tool_calls")
        if role == "tool":
            if message.tool_call_id is None or text is None:
                raise InvalidArgument(f"messages.{index}: a tool message needs tool_call_id "
                                      "and content")
            out["tool_call_id"] = message.tool_call_id
        elif text is None and "tool_calls" not in out:
            raise InvalidArgument(f"messages.{index}: content is required")
        messages.append(out)
    if not any(m["role"] == "user" and (m["content"] or "").strip() for m in messages):
        raise InvalidArgument("messages must contain a non-empty user message")
    return messages


def _sse(payload: dict[str, Any] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n"


async def first_event(events: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    """The router stream's first event, taken before the client is answered: a refusal
    (400) or no provider that can answer (503) is then a problem, not a stream."""
    try:
        return await anext(events)
    except StopAsyncIteration:
        raise Unavailable("the router ended the stream before it started") from None


def _sse_problem(exc: ApiError) -> str:
    """A failure after the stream began, as OpenAI's error event."""
    return _sse({"error": {"message": exc.detail, "type": exc.code.lower(), "code": exc.code}})


async def remember_quietly(assistant: Assistant, text: str, owner: str) -> None:
    """Remember the facts of `text`; a memory service that fails here costs the facts,
    not the reply the client is already getting."""
    try:
        await assistant.remember(text, owner=owner)
    except ApiError as exc:
        log.warning("facts of a completion were not stored: %s %s", exc.code, exc.detail)


def router(gw: Gateway, assistant: Assistant) -> APIRouter:
    User = Annotated[ApiKey, Depends(gw.user)]
    api = APIRouter(prefix="/v1", tags=["openai"])

    async def profiles() -> dict[str, list[str]]:
        found = await assistant.models()
        return dict(found["profiles"])

    async def route_of(model: str) -> tuple[str | None, str | None]:
        """(profile, model to ask for) of a requested model id."""
        if model == DEFAULT_MODEL:
            return None, None
        known = await profiles()
        if model in known:
            return model, None
        served = await assistant.served_models()
        for entry in served:
            if entry["id"] == model:
                return entry["provider"], model
        names = [DEFAULT_MODEL, *(m["id"] for m in served)]
        raise NotFound(f"model {model!r} does not exist; models are {', '.join(names)}")

    @api.get("/models")
    async def models(key: User) -> dict[str, Any]:
        created = int(time.time())
        entries = [{"id": DEFAULT_MODEL, "owned_by": "sonia"}] + [
            {"id": m["id"], "owned_by": m["provider"]} for m in await assistant.served_models()]
        return {"object": "list",
                "data": [{**entry, "object": "model", "created": created}
                         for entry in entries]}

    async def with_tools(body: CompletionBody) -> dict[str, Any] | StreamingResponse:
        """One tool-calling step for the client (`tool_calls`)."""
        messages = tool_messages(body, gw.ctx.settings.gateway.max_message_chars)
        tools = tool_calls.check_tools(body.tools or [])
        if not tools:
            raise InvalidArgument("a conversation with tool calls needs the tools in `tools`")
        profile, upstream_model = await route_of(body.model)
        request: dict[str, Any] = {"messages": messages, "tools": tools}
        for name, value in (("profile", profile), ("model", upstream_model),
                            ("tool_choice", body.tool_choice),
                            ("max_tokens", body.max_completion_tokens or body.max_tokens),
                            ("temperature", body.temperature)):
            if value is not None:
                request[name] = value
        completion_id, created = "chatcmpl-" + uuid.uuid4().hex, int(time.time())
        if not body.stream:
            step = await assistant.tool_step(request)
            return tool_calls.completion(step, completion_id, created)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = assistant.tool_step_events(request)
        start = await first_event(events)
        chunks = tool_calls.StreamedChunks(completion_id, created,
                                           str(start.get("model") or DEFAULT_MODEL))

        async def stream() -> AsyncIterator[str]:
            try:
                yield _sse(chunks.first())
                async for event in events:
                    for chunk in chunks.of(event, include_usage):
                        yield _sse(chunk)
                yield _sse("[DONE]")
            except ApiError as exc:
                yield _sse_problem(exc)
            finally:
                await events.aclose()

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store"})

    @api.post("/chat/completions", response_model=None)
    async def completions(body: CompletionBody, key: User) -> dict[str, Any] | StreamingResponse:
        if body.uses_tools():
            return await with_tools(body)
        messages = plain_messages(body, gw.ctx.settings.gateway.max_message_chars)
        profile, upstream_model = await route_of(body.model)
        last_user = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        recalled = [r["content"] for r in await assistant.recall(last_user, owner=key.id)]
        max_tokens = body.max_completion_tokens or body.max_tokens
        completion_id = "chatcmpl-" + uuid.uuid4().hex
        created = int(time.time())
        if not body.stream:
            generation = await assistant.generate(messages, recalled, profile=profile,
                                                  max_tokens=max_tokens,
                                                  temperature=body.temperature,
                                                  model=upstream_model)
            await remember_quietly(assistant, last_user, key.id)
            return {
                "id": completion_id, "object": "chat.completion", "created": created,
                "model": generation["model"],
                "choices": [{"index": 0, "finish_reason": generation["finish_reason"],
                             "message": {"role": "assistant", "content": generation["text"]},
                             "logprobs": None}],
                "usage": generation["usage"],
            }

        events = assistant.events(messages, recalled, profile=profile, max_tokens=max_tokens,
                                  temperature=body.temperature, model=upstream_model)
        start = await first_event(events)
        model = str(start.get("model", DEFAULT_MODEL))
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            return _sse({"id": completion_id, "object": "chat.completion.chunk",
                         "created": created, "model": model,
                         "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                                      "logprobs": None}]})

        async def stream() -> AsyncIterator[str]:
            usage: dict[str, Any] | None = None
            try:
                yield chunk({"role": "assistant", "content": ""})
                async for event in events:
                    if event.get("type") == "delta" and event.get("text"):
                        yield chunk({"content": event["text"]})
                    elif event.get("type") == "end":
                        usage = event.get("usage")
                yield chunk({}, "stop")
                if include_usage:
                    yield _sse({"id": completion_id, "object": "chat.completion.chunk",
                                "created": created, "model": model, "choices": [],
                                "usage": usage})
                await remember_quietly(assistant, last_user, key.id)
                yield _sse("[DONE]")
            except ApiError as exc:
                yield _sse_problem(exc)
            finally:
                await events.aclose()

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store"})

    return api
