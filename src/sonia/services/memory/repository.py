"""The memory service's repository: one protocol, a SQLite and a PostgreSQL implementation.

    MemoryRepository (protocol)          what the routes of `app.py` call, and nothing else
    └── LedgerRepository[C]              one implementation over a backend's functions:
        ├── on SQLite                    `store.py` + `facts.py` on `kit.db.Database`
        └── on PostgreSQL                `postgres.py` on `kit.pg.PgDatabase`

`open_repository(home, settings)` picks the backend from `[storage] url`.

Both backends' functions have the same signatures and take a connection, so
one class runs either: a write is one transaction on the backend's writer
(committed, and on disk, before the awaited call returns: SQLite with
`synchronous=FULL`, PostgreSQL with `synchronous_commit = on`); a read is one
read transaction, so `context` sees the memories and the turns at one moment.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from sonia.services.memory import facts, postgres, store
from sonia.services.memory.facts import Remembered
from sonia.services.memory.store import (
    Clock,
    Memory,
    MemoryHit,
    SessionSummary,
    Turn,
    check_limit,
    check_owner,
    utc_now,
)

if TYPE_CHECKING:
    from sonia.config import Settings
    from sonia.home import Home

T = TypeVar("T")
C = TypeVar("C")
C_co = TypeVar("C_co", covariant=True)


class MemoryRepository(Protocol):
    """The memory ledger as the service sees it: memories (owned by a key id), their
    search, conversation turns, and the facts of a message."""

    backend: str

    def open(self) -> None: ...
    def close(self) -> None: ...
    async def ping(self) -> None: ...

    async def add_memory(self, content: str, *, owner: str, kind: str = "note",
                         metadata: Mapping[str, Any] | None = None,
                         session_id: str | None = None,
                         idempotency_key: str | None = None) -> Memory: ...
    async def get_memory(self, memory_id: str, *, owner: str) -> Memory: ...
    async def archive_memory(self, memory_id: str, *, owner: str) -> Memory: ...
    async def delete_memory(self, memory_id: str, *, owner: str) -> None: ...
    async def search(self, query: str, limit: int = 10, *, owner: str) -> list[MemoryHit]: ...
    async def remember_facts(self, text: str, *, owner: str,
                             session_id: str | None = None) -> list[Remembered]: ...

    async def add_turn(self, session_id: str, role: str, content: str, *,
                       metadata: Mapping[str, Any] | None = None) -> Turn: ...
    async def add_exchange(self, session_id: str, user: str, assistant: str, *,
                           metadata: Mapping[str, Any] | None = None) -> tuple[Turn, Turn]: ...
    async def store_exchange(
        self, session_id: str, user: str, assistant: str | None, *, owner: str,
        metadata: Mapping[str, Any] | None = None, remember: bool = True,
    ) -> tuple[Turn, Turn | None, list[Remembered]]: ...
    async def list_turns(self, session_id: str, limit: int = 50) -> list[Turn]: ...
    async def context(self, session_id: str, query: str, *, owner: str, recall: int,
                      turns: int) -> tuple[list[MemoryHit], list[Turn]]: ...
    async def recent_sessions(self, limit: int = 20) -> list[SessionSummary]: ...

    async def counts(self) -> dict[str, int]: ...
    async def tables(self) -> list[str]: ...


class Db(Protocol[C_co]):
    """A backend's database: `kit.db.Database` or `kit.pg.PgDatabase`."""

    def open(self) -> None: ...
    def close(self) -> None: ...
    async def ping(self) -> None: ...
    def write(self, fn: Callable[[C_co], T]) -> Awaitable[T]: ...
    def read(self, fn: Callable[[C_co], T]) -> Awaitable[T]: ...


@dataclass(frozen=True)
class LedgerFunctions:
    """One backend's ledger: functions of its connection, with `store.py`'s signatures."""

    add_memory: Callable[..., Memory]
    get_memory: Callable[..., Memory]
    archive_memory: Callable[..., Memory]
    delete_memory: Callable[..., None]
    search: Callable[..., list[MemoryHit]]
    add_turn: Callable[..., Turn]
    list_turns: Callable[..., list[Turn]]
    recent_sessions: Callable[..., list[SessionSummary]]
    counts: Callable[..., dict[str, int]]
    table_names: Callable[..., list[str]]
    remember_facts: Callable[..., list[Remembered]]
    store_exchange: Callable[..., tuple[Turn, Turn | None, list[Remembered]]]


SQLITE = LedgerFunctions(
    add_memory=store.add_memory, get_memory=store.get_memory,
    archive_memory=store.archive_memory, delete_memory=store.delete_memory,
    search=store.search, add_turn=store.add_turn, list_turns=store.list_turns,
    recent_sessions=store.recent_sessions, counts=store.counts,
    table_names=store.table_names, remember_facts=facts.remember_facts,
    store_exchange=facts.store_exchange)
"""The ledger on SQLite (`store.py`, `facts.py`)."""

POSTGRESQL = LedgerFunctions(
    add_memory=postgres.add_memory, get_memory=postgres.get_memory,
    archive_memory=postgres.archive_memory, delete_memory=postgres.delete_memory,
    search=postgres.search, add_turn=postgres.add_turn, list_turns=postgres.list_turns,
    recent_sessions=postgres.recent_sessions, counts=postgres.counts,
    table_names=postgres.table_names, remember_facts=postgres.remember_facts,
    store_exchange=postgres.store_exchange)
"""The ledger on PostgreSQL (`postgres.py`)."""


class LedgerRepository(Generic[C]):
    """`MemoryRepository` over one backend's database and functions."""

    def __init__(self, db: Db[C], functions: LedgerFunctions, *, backend: str,
                 clock: Clock = utc_now) -> None:
        self.db = db
        self.backend = backend
        self._fn = functions
        self._clock = clock

    def open(self) -> None:
        """Connect, create and migrate (blocking; call at start-up)."""
        self.db.open()

    def close(self) -> None:
        self.db.close()

    async def ping(self) -> None:
        await self.db.ping()

    async def add_memory(self, content: str, *, owner: str, kind: str = "note",
                         metadata: Mapping[str, Any] | None = None,
                         session_id: str | None = None,
                         idempotency_key: str | None = None) -> Memory:
        return await self.db.write(lambda c: self._fn.add_memory(
            c, content, owner=owner, kind=kind, metadata=metadata, session_id=session_id,
            idempotency_key=idempotency_key, clock=self._clock))

    async def get_memory(self, memory_id: str, *, owner: str) -> Memory:
        return await self.db.read(lambda c: self._fn.get_memory(c, memory_id, owner=owner))

    async def archive_memory(self, memory_id: str, *, owner: str) -> Memory:
        return await self.db.write(lambda c: self._fn.archive_memory(
            c, memory_id, owner=owner, clock=self._clock))

    async def delete_memory(self, memory_id: str, *, owner: str) -> None:
        await self.db.write(lambda c: self._fn.delete_memory(c, memory_id, owner=owner))

    async def search(self, query: str, limit: int = 10, *, owner: str) -> list[MemoryHit]:
        check_limit(limit)
        check_owner(owner)
        return await self.db.read(lambda c: self._fn.search(c, query, limit, owner=owner))

    async def remember_facts(self, text: str, *, owner: str,
                             session_id: str | None = None) -> list[Remembered]:
        return await self.db.write(lambda c: self._fn.remember_facts(
            c, text, owner=owner, session_id=session_id, clock=self._clock))

    async def add_turn(self, session_id: str, role: str, content: str, *,
                       metadata: Mapping[str, Any] | None = None) -> Turn:
        return await self.db.write(lambda c: self._fn.add_turn(
            c, session_id, role, content, metadata=metadata, clock=self._clock))

    async def add_exchange(self, session_id: str, user: str, assistant: str, *,
                           metadata: Mapping[str, Any] | None = None) -> tuple[Turn, Turn]:
        """Store a user message and its reply in one transaction: both or neither."""
        def both(c: C) -> tuple[Turn, Turn]:
            asked = self._fn.add_turn(c, session_id, "user", user, metadata=metadata,
                                      clock=self._clock)
            answered = self._fn.add_turn(c, session_id, "assistant", assistant,
                                         metadata=metadata, clock=self._clock)
            return asked, answered
        return await self.db.write(both)

    async def store_exchange(
        self, session_id: str, user: str, assistant: str | None, *, owner: str,
        metadata: Mapping[str, Any] | None = None, remember: bool = True,
    ) -> tuple[Turn, Turn | None, list[Remembered]]:
        """A user message, its reply and the message's facts: one transaction."""
        return await self.db.write(lambda c: self._fn.store_exchange(
            c, session_id, user, assistant, owner=owner, metadata=metadata,
            remember=remember, clock=self._clock))

    async def list_turns(self, session_id: str, limit: int = 50) -> list[Turn]:
        return await self.db.read(lambda c: self._fn.list_turns(c, session_id, limit))

    async def context(self, session_id: str, query: str, *, owner: str, recall: int,
                      turns: int) -> tuple[list[MemoryHit], list[Turn]]:
        """What a reply needs, in one read: the memories recalled for `query` (none when
        `recall` is 0) and the session's last `turns` turns."""
        check_owner(owner)

        def read(c: C) -> tuple[list[MemoryHit], list[Turn]]:
            hits = self._fn.search(c, query, recall, owner=owner) if recall else []
            recent = self._fn.list_turns(c, session_id, turns) if turns else []
            return hits, recent
        return await self.db.read(read)

    async def recent_sessions(self, limit: int = 20) -> list[SessionSummary]:
        return await self.db.read(lambda c: self._fn.recent_sessions(c, limit))

    async def counts(self) -> dict[str, int]:
        return await self.db.read(self._fn.counts)

    async def tables(self) -> list[str]:
        return await self.db.read(self._fn.table_names)


def sqlite_repository(path: Path, *, clock: Clock = utc_now) -> LedgerRepository[Any]:
    """The ledger in the SQLite file at `path` (not opened yet)."""
    from sonia.kit.db import Database

    return LedgerRepository(Database(path, store.MIGRATIONS), SQLITE, backend="sqlite",
                            clock=clock)


def postgres_repository(url: str, *, password: str | None, clock: Clock = utc_now,
                        application_name: str = "sonia-memory") -> LedgerRepository[Any]:
    """The ledger in the schema `memory` of the PostgreSQL database at `url` (not
    opened yet)."""
    from sonia.kit.pg import PgDatabase

    db = PgDatabase(url, password=password, schema=postgres.SCHEMA,
                    migrations=postgres.MIGRATIONS, application_name=application_name)
    return LedgerRepository(db, POSTGRESQL, backend="postgresql", clock=clock)


def open_repository(home: Home, settings: Settings) -> MemoryRepository:
    """The memory service's repository as `[storage] url` says (not opened yet)."""
    if settings.storage.backend == "postgresql":
        return postgres_repository(settings.storage.url, password=home.storage_password())
    return sqlite_repository(home.db_path("memory"))


__all__ = ["Db", "LedgerFunctions", "LedgerRepository", "MemoryRepository", "POSTGRESQL",
           "SQLITE", "open_repository", "postgres_repository", "sqlite_repository"]
