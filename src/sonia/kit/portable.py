"""The security ledgers' SQL, one code path on SQLite and on PostgreSQL.

EVA's decisions and audit chain, OpenClaw's grant ledger and the gateway's
action store are written in the
small SQL both engines share (`?` placeholders, `INSERT ... ON CONFLICT DO
NOTHING`, `UPDATE ... WHERE <condition>` whose rowcount names the winner,
`RETURNING`). Their functions take a `Conn`, which a `sqlite3.Connection`
already is; on PostgreSQL, `PgConnection` wraps a psycopg connection to speak
it (placeholders translated, rows as tuples; so a `?` is always a placeholder,
never part of a literal, in this SQL). Only the schemas differ (each
ledger keeps its SQLite and its PostgreSQL migrations side by side), so a test
that runs on both backends tests one implementation of each invariant.

    LedgerDatabase (protocol)     open/close/ping, write(fn) and read(fn) of a Conn
    ├── kit.db.Database           one SQLite file (fn gets the sqlite3.Connection)
    └── PgLedgerDatabase          one schema on kit.pg.PgDatabase (fn gets a PgConnection)

`open_ledger_database(home, settings, ...)` picks the backend from `[storage] url`.

What must be serial across processes (the audit chain's append) calls
`serialise(conn, name)` inside its transaction: a transaction-scoped advisory
lock on PostgreSQL, where several replicas write at once; nothing on SQLite,
where a write transaction (BEGIN IMMEDIATE) already holds the file's one write lock.

Reads on PostgreSQL run in a REPEATABLE READ transaction (see `kit.pg`), so a
function that reads twice (the audit chain, then its head) sees one moment.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sonia.kit import db, pg

if TYPE_CHECKING:
    import psycopg

    from sonia.config import Settings
    from sonia.home import Home

T = TypeVar("T")


class Cursor(Protocol):
    """What a ledger function reads back from `Conn.execute`."""

    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> Any: ...
    def __iter__(self) -> Iterator[Any]: ...


class Conn(Protocol):
    """A connection as the portable ledgers use it: `sqlite3.Connection` or `PgConnection`."""

    @property
    def in_transaction(self) -> bool: ...
    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...


class LedgerDatabase(Protocol):
    """A ledger's database: a write is one transaction, committed (and durable) before
    the awaited call returns; a read is one read transaction."""

    def open(self) -> None: ...
    def close(self) -> None: ...
    async def ping(self) -> None: ...
    def write_sync(self, fn: Callable[[Conn], T]) -> T: ...
    async def write(self, fn: Callable[[Conn], T]) -> T: ...
    async def read(self, fn: Callable[[Conn], T]) -> T: ...


def _placeholders(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


class PgConnection:
    """A psycopg connection speaking the SQLite subset of `Conn`: `?` placeholders, rows
    as tuples, `in_transaction`. `raw` is the psycopg connection itself."""

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return self.raw.info.transaction_status != TransactionStatus.IDLE

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor:
        from psycopg.rows import tuple_row

        cursor = self.raw.cursor(row_factory=tuple_row)
        if parameters:
            cursor.execute(_placeholders(sql), tuple(parameters))
        else:
            cursor.execute(sql)
        return cursor


def transaction(conn: Conn, fn: Callable[[Conn], T]) -> T:
    """Run `fn(conn)` in one transaction of its own: committed whole or not at all."""
    if isinstance(conn, PgConnection):
        with conn.raw.transaction():
            return fn(conn)
    assert isinstance(conn, sqlite3.Connection)
    return db.transaction(conn, fn)


def in_transaction(conn: Conn, fn: Callable[[Conn], T]) -> T:
    """`fn(conn)` in the caller's transaction if one is open, else in one of its own."""
    return fn(conn) if conn.in_transaction else transaction(conn, fn)


def serialise(conn: Conn, name: str) -> None:
    """Hold the lock `name` until the caller's transaction ends (PostgreSQL: an advisory
    transaction lock, shared by every process on the database; SQLite: the open write
    transaction already excludes every other writer)."""
    if isinstance(conn, PgConnection):
        conn.raw.execute("SELECT pg_advisory_xact_lock(%s)", (pg.lock_key(name),))


class PgLedgerDatabase:
    """A ledger's schema on PostgreSQL, its functions given a `PgConnection`."""

    backend = "postgresql"

    def __init__(self, url: str, *, password: str | None, schema: str,
                 migrations: Sequence[str], threads: int = 4,
                 application_name: str = "sonia") -> None:
        self.pg = pg.PgDatabase(url, password=password, schema=schema, migrations=migrations,
                                threads=threads, application_name=application_name)

    def open(self) -> None:
        self.pg.open()

    def close(self) -> None:
        self.pg.close()

    async def ping(self) -> None:
        await self.pg.ping()

    def write_sync(self, fn: Callable[[Conn], T]) -> T:
        return self.pg.write_sync(lambda c: fn(PgConnection(c)))

    async def write(self, fn: Callable[[Conn], T]) -> T:
        return await self.pg.write(lambda c: fn(PgConnection(c)))

    async def read(self, fn: Callable[[Conn], T]) -> T:
        return await self.pg.read(lambda c: fn(PgConnection(c)))


def open_ledger_database(home: Home, settings: Settings, *, service: str,
                         sqlite_migrations: Sequence[str],
                         postgres_migrations: Sequence[str]) -> LedgerDatabase:
    """`service`'s ledger as `[storage] url` says: `data/<service>.db`, or the schema
    `<service>` on PostgreSQL (not opened yet)."""
    if settings.storage.backend == "postgresql":
        return PgLedgerDatabase(settings.storage.url, password=home.storage_password(),
                                schema=service, migrations=postgres_migrations,
                                application_name=f"sonia-{service}")
    return db.Database(home.db_path(service), sqlite_migrations)


def read_postgres(home: Home, settings: Settings, *, schema: str,
                  fn: Callable[[Conn], T]) -> T:
    """Run `fn` once in a read-only REPEATABLE READ transaction on `schema` (for the CLI)."""
    pg.require_psycopg()
    raw = pg.connect(settings.storage.url, password=home.storage_password(), schema=schema,
                     application_name="sonia-cli")
    try:
        with raw.transaction():
            raw.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            return fn(PgConnection(raw))
    finally:
        raw.close()


__all__ = ["Conn", "Cursor", "LedgerDatabase", "PgConnection", "PgLedgerDatabase",
           "in_transaction", "open_ledger_database", "read_postgres", "serialise",
           "transaction"]
