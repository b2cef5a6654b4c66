"""Gateway routes: chat and memory (user keys).

    POST /v1/chat {message, session_id?, profile?}
         -> {reply, status, session_id, turn_id, agent_turn_id, model, provider,
             memory: {recalled: [{id, kind, content, score}],
                      stored: [{id, kind, content, new}]}, usage, steps,
             pending_approval?: {action_id, call_id, tool, args, tier, plan_hash, reason,
                                 expires_at, untrusted_sources}}
         The model is offered Sonia's tools (`agent`; `gateway.agent_tools = false`
         turns that off): `status` is completed, or pending_approval when a tool call
         waits for an approver (then `turn_id`, the stored assistant turn, is null
         until the turn completes).
         Without `session_id` the chat goes to the key's default session (see
         `sessions`); an unknown, closed or expired session is 404 NOT_FOUND.
         `stored` lists the facts the message stated (`memory.facts`): that is
         how a fact told in one session is recalled in another.
    GET  /v1/memory/search?q=&limit=   {results: [{id, kind, content, score, created_at}]}
    POST /v1/memory {content, kind?}   -> 201 the memory
    GET  /v1/memory/{memory_id}        one memory
    POST /v1/memory/{memory_id}/archive  stop recalling it (it stays in the ledger)
    DELETE /v1/memory/{memory_id}      forget it: deleted for good (its owner only; another
                                       key's memory is 404 and stays)
    GET  /v1/turns/{agent_turn_id}     the turn record: status, every step (model steps,
                                       tool calls with action ids), untrusted sources,
                                       reply (its key's, or any for an approver)

The OpenAI-compatible routes live in `openai_compat`.
"""

# No `from __future__ import annotations`: FastAPI must see the `User` dependency
# alias, which is local to `routers()`, as a real object rather than a string.

import re
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from sonia.errors import InvalidArgument, NotFound
from sonia.home import ApiKey
from sonia.services.gateway import openai_compat, sessions
from sonia.services.gateway.agent import Agent
from sonia.services.gateway.assistant import Assistant
from sonia.services.gateway.state import Gateway

MEMORY_ID = r"^[A-Za-z0-9_-]{1,64}$"
TURN_ID = re.compile(r"^trn_[0-9a-f]{24}$")


class ChatBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: StrictStr
    session_id: Annotated[StrictStr, Field(min_length=1, max_length=200)] | None = None
    profile: Annotated[StrictStr, Field(min_length=1, max_length=64)] | None = None


class MemoryBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    content: StrictStr
    kind: Annotated[StrictStr, Field(min_length=1, max_length=32)] = "note"


def checked_text(gw: Gateway, text: str, what: str = "message") -> str:
    """A user's text within the gateway's limits: not blank, not NUL, not too long."""
    if not text.strip():
        raise InvalidArgument(f"{what} must not be empty")
    limit = gw.ctx.settings.gateway.max_message_chars
    if len(text) > limit:
        raise InvalidArgument(f"{what} is {len(text)} characters; the limit is {limit}")
    if "\x00" in text:
        raise InvalidArgument(f"{what} must not contain NUL characters")
    return text


async def session_for(gw: Gateway, key: ApiKey, session_id: str | None) -> str:
    """The session a chat turn goes to: the one named (404 when unknown, closed, expired
    or another key's), else the key's default session; either is touched."""
    now = time.time()
    policy = gw.session_policy
    if session_id is not None:
        await gw.db.write(lambda c: sessions.touch(c, policy, session_id, now, key.id))
        return session_id
    row = await gw.db.write(lambda c: sessions.default_session(c, policy, key.id, now))
    return row.id


def routers(gw: Gateway, assistant: Assistant | None = None,
            agent: Agent | None = None) -> list[APIRouter]:
    assistant = assistant or Assistant(gw.ctx)
    memory = gw.ctx.client("memory")
    User = Annotated[ApiKey, Depends(gw.user)]
    api = APIRouter(prefix="/v1", tags=["conversation"])

    @api.post("/chat")
    async def chat(body: ChatBody, key: User) -> dict[str, Any]:
        message = checked_text(gw, body.message)
        session_id = await session_for(gw, key, body.session_id)
        if agent is not None and gw.ctx.settings.gateway.agent_tools:
            return await agent.turn(key, session_id, message, body.profile)
        return await assistant.chat(session_id, message, body.profile, owner=key.id)

    @api.get("/turns/{turn_id}")
    async def turn(key: User, turn_id: Annotated[str, Path(max_length=200)]) -> dict[str, Any]:
        if not TURN_ID.match(turn_id):
            raise NotFound(f"no turn {turn_id[:80]!r}")
        if agent is None:
            raise NotFound("turn records are kept only where the model uses tools")
        return await agent.show(key, turn_id)

    @api.get("/memory/search")
    async def search(key: User,
                     q: Annotated[str, Query(min_length=1, max_length=4096)],
                     limit: Annotated[int, Query(ge=1, le=50)] = 10) -> dict[str, Any]:
        results = await assistant.recall(q, limit, owner=key.id)
        return {"results": [{k: r[k] for k in ("id", "kind", "content", "score", "created_at")}
                            for r in results]}

    @api.post("/memory", status_code=201)
    async def add_memory(body: MemoryBody, key: User) -> dict[str, Any]:
        content = checked_text(gw, body.content, "content")
        added: dict[str, Any] = await memory.request(
            "POST", "/v1/memories", params={"owner": key.id},
            json_body={"content": content, "kind": body.kind,
                       "metadata": {"source": "user", "key_id": key.id}})
        return added

    @api.get("/memory/{memory_id}")
    async def get_memory(key: User,
                         memory_id: Annotated[str, Path(pattern=MEMORY_ID)]) -> dict[str, Any]:
        found: dict[str, Any] = await memory.request("GET", f"/v1/memories/{memory_id}",
                                                     params={"owner": key.id})
        return found

    @api.delete("/memory/{memory_id}")
    async def forget_memory(key: User, memory_id: Annotated[str, Path(pattern=MEMORY_ID)]
                            ) -> dict[str, Any]:
        forgotten: dict[str, Any] = await memory.request(
            "DELETE", f"/v1/memories/{memory_id}", params={"owner": key.id})
        return forgotten

    @api.post("/memory/{memory_id}/archive")
    async def archive_memory(key: User, memory_id: Annotated[str, Path(pattern=MEMORY_ID)]
                             ) -> dict[str, Any]:
        found: dict[str, Any] = await memory.request(
            "POST", f"/v1/memories/{memory_id}/archive", params={"owner": key.id})
        return found

    return [api, openai_compat.router(gw, assistant)]
