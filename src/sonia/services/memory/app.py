"""The memory service: the memory ledger and conversation turns, with full-text search.

Stored in SQLite (WAL, FTS5; the default) or PostgreSQL (`[storage] url`), behind
`repository.MemoryRepository`: the routes call it and nothing else.

Internal routes (service token; callers in `CALLERS`). Routes marked * take
`?owner=<key id>`, required: the principal whose memories they store, find, read or
archive; a memory of another owner does not exist for them (404, not in results).

  * POST /v1/memories                          store a memory -> 201 memory
  * GET  /v1/memories/search?q=&limit=         {results: [{id, kind, content, score, created_at}]}
  * GET  /v1/memories/{memory_id}              one memory (archived ones too)
  * POST /v1/memories/{memory_id}/archive      stop recalling it (kept in the ledger)
  * DELETE /v1/memories/{memory_id}            forget it: deleted, with its index entry
  * POST /v1/facts                             remember the facts stated in a text -> 201
    POST /v1/sessions/{session_id}/turns       append one turn -> 201 turn
  * POST /v1/sessions/{session_id}/exchanges   user turn + reply + facts, one transaction -> 201
    GET  /v1/sessions/{session_id}/turns       the last turns, oldest first
  * GET  /v1/sessions/{session_id}/context?q=&recall=&turns=
                                               what a reply needs in one read: the memories
                                               recalled for q and the session's last turns
    GET  /v1/stats                             tables and row counts

Every write is committed (SQLite: WAL, synchronous=FULL; PostgreSQL: synchronous_commit
on) before its answer is sent.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr
from starlette.responses import JSONResponse

from sonia.kit.app import ServiceContext, ServiceParts, create_app, run_sync
from sonia.services.memory.repository import MemoryRepository, open_repository
from sonia.services.memory.store import MAX_CONTENT_CHARS, MAX_LIMIT

GW_VOICE = frozenset({"gateway", "voice"})
GATEWAY = frozenset({"gateway"})

CALLERS: dict[str, frozenset[str]] = {
    "/v1/memories": GW_VOICE,
    "/v1/memories/search": GW_VOICE,
    "/v1/memories/{memory_id}": GATEWAY,
    "/v1/memories/{memory_id}/archive": GATEWAY,
    "/v1/facts": GW_VOICE,
    "/v1/sessions/{session_id}/turns": GW_VOICE,
    "/v1/sessions/{session_id}/context": GW_VOICE,
    "/v1/sessions/{session_id}/exchanges": GW_VOICE,
    "/v1/stats": GATEWAY,
}
"""Who may call what: the gateway for everything, voice for what a realtime turn needs."""

Content = Annotated[StrictStr, Field(min_length=1, max_length=MAX_CONTENT_CHARS)]
SessionId = Annotated[str, Field(min_length=1, max_length=200)]
Owner = Annotated[str, Query(min_length=1, max_length=64,
                             description="the key id whose memories these are")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NewMemory(_Body):
    content: Content
    kind: StrictStr = "note"
    metadata: dict[str, Any] = Field(default_factory=dict)
    session_id: Annotated[StrictStr, Field(min_length=1, max_length=200)] | None = None
    idempotency_key: Annotated[StrictStr, Field(min_length=1, max_length=200)] | None = None


class NewTurn(_Body):
    role: StrictStr
    content: Content
    metadata: dict[str, Any] = Field(default_factory=dict)


class NewExchange(_Body):
    user: Content
    assistant: Annotated[StrictStr, Field(max_length=MAX_CONTENT_CHARS)] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    remember: StrictBool = True


class FactsIn(_Body):
    text: Content
    session_id: Annotated[StrictStr, Field(min_length=1, max_length=200)] | None = None


def routes(memory: MemoryRepository) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.post("/memories", status_code=201)
    async def add_memory(body: NewMemory, owner: Owner) -> dict[str, Any]:
        added = await memory.add_memory(body.content, owner=owner, kind=body.kind,
                                        metadata=body.metadata,
                                        session_id=body.session_id,
                                        idempotency_key=body.idempotency_key)
        return added.to_dict()

    @router.get("/memories/search")
    async def search(q: Annotated[str, Query(max_length=4096)], owner: Owner,
                     limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 10) -> dict[str, Any]:
        hits = await memory.search(q, limit, owner=owner)
        return {"query": q, "results": [h.to_dict() for h in hits]}

    @router.get("/memories/{memory_id}")
    async def get_memory(memory_id: str, owner: Owner) -> dict[str, Any]:
        return (await memory.get_memory(memory_id, owner=owner)).to_dict()

    @router.delete("/memories/{memory_id}")
    async def forget(memory_id: str, owner: Owner) -> dict[str, Any]:
        await memory.delete_memory(memory_id, owner=owner)
        return {"id": memory_id, "deleted": True}

    @router.post("/memories/{memory_id}/archive")
    async def archive(memory_id: str, owner: Owner) -> dict[str, Any]:
        return (await memory.archive_memory(memory_id, owner=owner)).to_dict()

    @router.post("/facts", status_code=201)
    async def remember(body: FactsIn, owner: Owner) -> dict[str, Any]:
        stored = await memory.remember_facts(body.text, owner=owner,
                                             session_id=body.session_id)
        return {"memories": [r.to_dict() for r in stored]}

    @router.post("/sessions/{session_id}/turns", status_code=201)
    async def add_turn(session_id: SessionId, body: NewTurn) -> dict[str, Any]:
        turn = await memory.add_turn(session_id, body.role, body.content,
                                     metadata=body.metadata)
        return turn.to_dict()

    @router.post("/sessions/{session_id}/exchanges", status_code=201)
    async def add_exchange(session_id: SessionId, body: NewExchange,
                           owner: Owner) -> dict[str, Any]:
        asked, answered, stored = await memory.store_exchange(
            session_id, body.user, body.assistant, owner=owner, metadata=body.metadata,
            remember=body.remember)
        return {"session_id": session_id,
                "turns": [t.to_dict() for t in (asked, answered) if t is not None],
                "memories": [r.to_dict() for r in stored]}

    @router.get("/sessions/{session_id}/turns")
    async def list_turns(session_id: SessionId,
                         limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50
                         ) -> dict[str, Any]:
        turns = await memory.list_turns(session_id, limit)
        return {"session_id": session_id, "turns": [t.to_dict() for t in turns]}

    @router.get("/sessions/{session_id}/context")
    async def context(session_id: SessionId, q: Annotated[str, Query(max_length=65_536)],
                      owner: Owner,
                      recall: Annotated[int, Query(ge=0, le=MAX_LIMIT)] = 5,
                      turns: Annotated[int, Query(ge=0, le=MAX_LIMIT)] = 20) -> dict[str, Any]:
        hits, recent = await memory.context(session_id, q, owner=owner, recall=recall,
                                            turns=turns)
        return {"session_id": session_id, "recalled": [h.to_dict() for h in hits],
                "turns": [t.to_dict() for t in recent]}

    @router.get("/stats")
    async def stats() -> JSONResponse:
        return JSONResponse({"backend": memory.backend, "tables": await memory.tables(),
                             "counts": await memory.counts()})

    return router


def create(ctx: ServiceContext) -> FastAPI:
    memory = open_repository(ctx.home, ctx.settings)

    async def database() -> dict[str, object]:
        await memory.ping()
        return {}

    return create_app(ctx, ServiceParts(
        service_routers=[routes(memory)],
        callers=CALLERS,
        checks={"database": database},
        on_startup=[run_sync(memory.open)],
        on_shutdown=[run_sync(memory.close)],
    ))
