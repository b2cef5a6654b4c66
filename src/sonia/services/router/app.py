"""The router service: model providers, routing profiles, fallbacks, provider health.

Internal routes (service token; callers in `CALLERS`):

    POST /v1/generate          {messages, recalled?, profile?, max_tokens?, temperature?, model?}
                               -> {text, model, provider, usage, finish_reason}
    POST /v1/generate/stream   same body -> text/event-stream of `data: {json}` events:
                               {type: start, provider, model}, {type: delta, text}...,
                               then {type: end, finish_reason, usage}
                               or {type: error, status, code, detail} when a provider fails
                               after its first words (before them it falls back, and when
                               nothing can answer the route answers a problem, not a stream)
    POST /v1/generate/tools    one tool-calling step (see `router.tools`)
    POST /v1/generate/tools/stream  the same step as it streams (see `router.tools`)
    GET  /v1/providers         provider states, profiles, the default profile
    GET  /v1/models            {models: [{id, provider}]}: what each provider serves
                               (a model server's own list); 503 naming a provider
                               that cannot say

Readiness probes the model servers of the default profile (see
`Router.check_ready`): a dead model server makes the router not ready.

A request whose client goes away is cancelled, and with it the provider call.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from starlette.responses import StreamingResponse

from sonia.errors import ApiError, Unavailable
from sonia.kit.app import ServiceContext, ServiceParts, create_app
from sonia.kit.sse import sse_data
from sonia.services.router import tools
from sonia.services.router.assembly import build_router
from sonia.services.router.providers import GenerationRequest, count_words
from sonia.services.router.routing import Router

T = TypeVar("T")

CALLERS: dict[str, frozenset[str]] = {
    "/v1/generate": frozenset({"gateway", "voice"}),
    "/v1/generate/stream": frozenset({"gateway", "voice"}),
    "/v1/generate/tools": frozenset({"gateway"}),
    "/v1/generate/tools/stream": frozenset({"gateway"}),
    "/v1/providers": frozenset({"gateway", "voice"}),
    "/v1/models": frozenset({"gateway"}),
}

MAX_MESSAGES = 256
MAX_CHARS = 262_144


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: Annotated[StrictStr, Field(max_length=MAX_CHARS)]


class GenerateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    recalled: Annotated[list[Annotated[StrictStr, Field(max_length=MAX_CHARS)]],
                        Field(max_length=64)] = Field(default_factory=list)
    profile: Annotated[StrictStr, Field(min_length=1, max_length=64)] | None = None
    max_tokens: Annotated[int, Field(ge=1, le=32_768)] = 512
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.0
    model: Annotated[StrictStr, Field(min_length=1, max_length=200)] | None = None

    def request(self) -> GenerationRequest:
        return GenerationRequest.of([m.model_dump() for m in self.messages], self.recalled,
                                    max_tokens=self.max_tokens, temperature=self.temperature,
                                    model=self.model)


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it when the HTTP client disconnects first.

    The body has been read by then, so the next ASGI message can only be the
    disconnect; a provider call is never left running for nobody.
    """
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
    if task.cancelled():
        raise Unavailable("the client went away; the generation was cancelled")
    return task.result()


def routes(router: Router) -> APIRouter:
    api = APIRouter(prefix="/v1")

    @api.post("/generate")
    async def generate(body: GenerateBody, request: Request) -> dict[str, Any]:
        generation = await unless_client_leaves(request,
                                                router.generate(body.request(), body.profile))
        return {"text": generation.text, "model": generation.model,
                "provider": generation.provider, "usage": generation.usage.to_dict(),
                "finish_reason": generation.finish_reason}

    @api.post("/generate/stream")
    async def generate_stream(body: GenerateBody, request: Request) -> StreamingResponse:
        generation_request = body.request()
        routed = await unless_client_leaves(request,
                                            router.open_stream(generation_request, body.profile))
        prompt_tokens = sum(count_words(m.content) for m in generation_request.messages) + sum(
            count_words(r) for r in generation_request.recalled)

        async def events() -> AsyncIterator[str]:
            text = ""
            try:
                yield sse_data({"type": "start", "provider": routed.provider,
                              "model": routed.model})
                async for delta in routed:
                    text += delta
                    yield sse_data({"type": "delta", "text": delta})
                completion = count_words(text)
                yield sse_data({"type": "end", "finish_reason": "stop",
                              "usage": {"prompt_tokens": prompt_tokens,
                                        "completion_tokens": completion,
                                        "total_tokens": prompt_tokens + completion}})
            except ApiError as exc:
                yield sse_data({"type": "error", "status": exc.status, "code": exc.code,
                              "detail": exc.detail})
            finally:
                await routed.aclose()

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store"})

    @api.get("/providers")
    async def providers() -> dict[str, Any]:
        return {"default_profile": router.default_profile, "profiles": router.profiles,
                "providers": [
                    {**state, "model": str(getattr(router.providers[state["name"]], "model",
                                                   state["name"]))}
                    for state in router.report()]}

    @api.get("/models")
    async def models() -> dict[str, Any]:
        return {"models": await router.models()}

    return api


def create(ctx: ServiceContext) -> FastAPI:
    router = build_router(ctx.settings, ctx.home)

    async def providers() -> dict[str, object]:
        return await router.check_ready()

    async def close_providers() -> None:
        for provider in router.providers.values():
            aclose = getattr(provider, "aclose", None)
            if aclose is not None:
                await aclose()

    return create_app(ctx, ServiceParts(
        service_routers=[routes(router), tools.routes(router, unless_client_leaves)],
        callers=CALLERS,
        checks={"providers": providers},
        on_shutdown=[close_providers],
        state={"router": router},
    ))
