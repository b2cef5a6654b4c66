"""Two replicas' ledger databases on one backend, and a way to race calls through them:
what the storage tests use to show that an invariant is the database's, not a process's."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from backends import Backend

from sonia.kit.portable import LedgerDatabase

DEADLINE_SECONDS = 120
"""How long a race may take before the test fails instead of hanging."""


@contextmanager
def replica_databases(backend: Backend, service: str, sqlite_migrations: list[str],
                      postgres_migrations: list[str], *, threads: int = 4
                      ) -> Iterator[tuple[LedgerDatabase, ...]]:
    """Two opened ledger databases of `service` on `backend`, as two replicas hold them
    (each its own connections: `threads` of them on PostgreSQL)."""
    dbs = tuple(backend.database(service, sqlite_migrations, postgres_migrations,
                                 threads=threads) for _ in range(2))
    for db in dbs:
        db.open()
    try:
        yield dbs
    finally:
        for db in dbs:
            db.close()


def race(calls: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
    """Run every call at once; their outcomes (exceptions as values), within a deadline."""
    async def main() -> list[Any]:
        return await asyncio.wait_for(
            asyncio.gather(*(call() for call in calls), return_exceptions=True),
            DEADLINE_SECONDS)

    return asyncio.run(main())
