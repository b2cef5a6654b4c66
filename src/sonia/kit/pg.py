"""PostgreSQL, the way a Sonia service uses it when `[storage] url` names a server.

The counterpart of `kit/db.py`, with the same shape so a store is the same code
path on both: callers pass plain functions of a connection, `await db.write(fn)`
runs `fn(conn)` in one transaction and `await db.read(fn)` in a read-only one.

psycopg 3's blocking API runs on a small thread pool (one connection per
thread), not its asyncio API: a ledger's functions compose inside one
transaction (an exchange is two turns and the facts of the message), and on
SQLite they are already functions of a connection run on threads; one shape for
both keeps the service layer backend-neutral. psycopg waits on the socket
without the GIL, so the threads do not hold the event loop back.

Durable before acknowledged: every connection sets `synchronous_commit = on`
(whatever the server's default), so a commit returns once its WAL is flushed.
Unlike SQLite's single writer, several writers (threads here, replicas later)
run at once; what must be serial (a session's turn numbers) takes a
transaction-scoped advisory lock in the store's own SQL.

Each service owns one PostgreSQL schema, named after it (`memory`), as it owns
one file under `data/` on SQLite: its tables and its `schema_version` table live
there, and the connection's `search_path` points at it. `migrations[i]` takes
the schema from version i to i+1 in its own transaction, under an advisory lock,
so two processes starting at once migrate once.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sonia.errors import ConfigError, Unavailable

if TYPE_CHECKING:
    import psycopg

T = TypeVar("T")

CONNECT_TIMEOUT_SECONDS = 5
BINDIR_ENV = "SONIA_PG_BINDIR"
"""A folder of PostgreSQL's programs that overrides where they are looked for."""
INSTALL_ROOT = Path("/usr/lib/postgresql")
"""Debian's layout: one `<major version>/bin` per installed version."""


def installed_bindirs() -> list[Path]:
    """The `bin` folders of the installed PostgreSQL versions, newest first."""
    if not INSTALL_ROOT.is_dir():
        return []
    versions = sorted((p for p in INSTALL_ROOT.iterdir() if p.name.isdigit()),
                      key=lambda p: int(p.name), reverse=True)
    return [p / "bin" for p in versions]
_SCHEMA = r"[a-z][a-z0-9_]{0,30}"


def require_psycopg() -> None:
    """Raise ConfigError naming what to install when psycopg (or libpq) is missing."""
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"storage.url names PostgreSQL but psycopg cannot be loaded ({exc}): install "
            f"the `postgres` extra (pip install 'sonia-stack[postgres]') and libpq "
            f"(Debian: libpq5)", key="storage.url") from exc


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for `name`."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def connect(url: str, *, password: str | None, schema: str,
            application_name: str = "sonia") -> psycopg.Connection[dict[str, Any]]:
    """Open a connection in autocommit mode (transactions are explicit), rows as dicts,
    `synchronous_commit = on`, the service's schema first on the search path."""
    import psycopg
    from psycopg.rows import dict_row

    _check_schema(schema)
    try:
        return psycopg.connect(
            url, password=password, autocommit=True, row_factory=dict_row,
            connect_timeout=CONNECT_TIMEOUT_SECONDS, application_name=application_name,
            options=f"-c synchronous_commit=on -c search_path={schema}")
    except psycopg.OperationalError as exc:
        raise Unavailable(f"PostgreSQL cannot be reached: {_first_line(exc)}") from exc


def migrate(conn: psycopg.Connection[dict[str, Any]], schema: str,
            migrations: Sequence[str]) -> int:
    """Bring `schema` forward to `len(migrations)`; refuse a schema from the future.

    Versions are rows of `<schema>.schema_version` (version, applied_at); each
    step runs in its own transaction under an advisory lock on the schema's name.
    """
    _check_schema(schema)
    lock = lock_key(f"sonia-migrate:{schema}")
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {schema}.schema_version ("
                     " version integer PRIMARY KEY,"
                     " applied_at timestamptz NOT NULL DEFAULT now())")
    while True:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
            version = _version(conn, schema)
            if version > len(migrations):
                raise ConfigError(
                    f"PostgreSQL schema {schema} is at version {version}, newer than this "
                    f"code ({len(migrations)})", key="storage.url")
            if version == len(migrations):
                break
            conn.execute(migrations[version])
            conn.execute(f"INSERT INTO {schema}.schema_version (version) VALUES (%s)",
                         (version + 1,))
    return len(migrations)


def schema_version(conn: psycopg.Connection[dict[str, Any]], schema: str) -> int:
    """The version `schema` is at (0 before any migration)."""
    _check_schema(schema)
    with conn.transaction():
        return _version(conn, schema)


def _version(conn: psycopg.Connection[dict[str, Any]], schema: str) -> int:
    row = conn.execute(f"SELECT coalesce(max(version), 0) AS v FROM {schema}.schema_version"
                       ).fetchone()
    return int(row["v"]) if row is not None else 0


def _check_schema(schema: str) -> None:
    if not re.fullmatch(_SCHEMA, schema):
        raise ValueError(f"schema name {schema!r} must match {_SCHEMA}")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


class PgDatabase:
    """One service's schema on a PostgreSQL server: a pool of threads, one connection each.

    A connection that broke (the server restarted, the network dropped) is
    discarded and the next call opens a new one; the call that met the break
    fails with 503 UNAVAILABLE, since whether its commit landed is unknown.
    """

    def __init__(self, url: str, *, password: str | None, schema: str,
                 migrations: Sequence[str], threads: int = 4,
                 application_name: str = "sonia") -> None:
        _check_schema(schema)
        self.url = url
        self.schema = schema
        self.migrations = list(migrations)
        self._password = password
        self._application_name = application_name
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix=f"pg-{schema}")
        self._local = threading.local()
        self._conns: list[psycopg.Connection[dict[str, Any]]] = []
        self._conns_lock = threading.Lock()

    def open(self) -> None:
        """Connect once and migrate the schema (blocking; call at start-up)."""
        require_psycopg()
        conn = self._connect()
        try:
            migrate(conn, self.schema, self.migrations)
        finally:
            conn.close()

    def _connect(self) -> psycopg.Connection[dict[str, Any]]:
        return connect(self.url, password=self._password, schema=self.schema,
                       application_name=self._application_name)

    def _conn(self) -> psycopg.Connection[dict[str, Any]]:
        conn: psycopg.Connection[dict[str, Any]] | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            conn = self._connect()
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def _run(self, fn: Callable[[psycopg.Connection[dict[str, Any]]], T], *,
             readonly: bool) -> T:
        import psycopg

        conn = self._conn()
        try:
            with conn.transaction():
                if readonly:
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                return fn(conn)
        except psycopg.OperationalError as exc:
            if conn.broken or conn.closed:
                raise Unavailable(f"PostgreSQL connection lost: {_first_line(exc)}") from exc
            raise

    def write_sync(self, fn: Callable[[psycopg.Connection[dict[str, Any]]], T]) -> T:
        """Run `fn` in a transaction and wait (for non-async callers)."""
        return self._pool.submit(self._run, fn, readonly=False).result()

    async def write(self, fn: Callable[[psycopg.Connection[dict[str, Any]]], T]) -> T:
        """Run `fn` in one transaction, committed (WAL flushed) before this returns."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: self._run(fn, readonly=False))

    async def read(self, fn: Callable[[psycopg.Connection[dict[str, Any]]], T]) -> T:
        """Run `fn` in one read-only REPEATABLE READ transaction: every statement of `fn`
        sees the same moment (the audit chain and its head, memories and turns)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: self._run(fn, readonly=True))

    async def ping(self) -> None:
        """A real query on a pooled connection: the readiness check of the database."""
        await self.read(lambda c: c.execute("SELECT 1").fetchone())

    def close(self) -> None:
        """Wait for the calls in flight and close every connection."""
        self._pool.shutdown(wait=True)
        with self._conns_lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()


__all__ = ["CONNECT_TIMEOUT_SECONDS", "PgDatabase", "connect", "lock_key", "migrate",
           "require_psycopg", "schema_version"]
