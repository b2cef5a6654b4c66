"""SQLite, the way every Sonia service uses it.

One writer per database (a single thread owns the write connection, so writes
never contend), reads in parallel on a small pool of read connections; callers
pass plain functions of a `sqlite3.Connection`. Databases run in WAL mode with
`synchronous=FULL`, so a write is on disk before it is acknowledged; each
connection's page cache is bounded (`PAGE_CACHE_KIB`); the schema is versioned
with `PRAGMA user_version`: `migrations[i]` takes the schema from version i to
i+1 and runs in its own transaction.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

BUSY_TIMEOUT_MS = 5000

PAGE_CACHE_KIB = 256
"""The page cache of each connection, in KiB (SQLite's default is about 2 MiB).

A database has up to five connections (the writer and four readers), and each
cache fills with the pages a growing database adds, for as long as it grows:
with the default, a service's memory rose 0.1 MiB a minute for the first hour
of a soak (EVA and memory, 6 MiB/h, up to 10 MiB a database), a bounded cache
indistinguishable from a leak. A read that misses is a pread served by the
kernel's page cache for files of this size, not a disk read.
"""


def connect(path: Path | str, *, readonly: bool = False) -> sqlite3.Connection:
    """Open `path` with Sonia's pragmas (WAL, FULL sync, foreign keys, busy timeout,
    a bounded page cache)."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False,
                               isolation_level=None)
    else:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA cache_size=-{PAGE_CACHE_KIB}")
    if not readonly:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
    return conn


def migrate(conn: sqlite3.Connection, migrations: Sequence[str]) -> int:
    """Bring the schema forward to `len(migrations)`; refuse a database from the future."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > len(migrations):
        raise sqlite3.DatabaseError(
            f"database schema version {version} is newer than this code ({len(migrations)})"
        )
    for target in range(version, len(migrations)):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _split_sql(migrations[target]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={target + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(migrations)


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements (sqlite3.complete_statement knows about triggers)."""
    statements: list[str] = []
    current = ""
    for piece in script.split(";"):
        current += piece + ";"
        if sqlite3.complete_statement(current):
            if current.strip(" \n\t;"):
                statements.append(current.strip())
            current = ""
    return statements


def transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run `fn` in one IMMEDIATE transaction: committed whole or not at all."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


class Database:
    """One SQLite file: a single writer thread and a pool of reader threads.

    `await db.write(fn)` runs `fn(conn)` inside a transaction on the writer;
    `await db.read(fn)` runs `fn(conn)` on one of the read connections.
    """

    def __init__(self, path: Path, migrations: Sequence[str], *, readers: int = 4) -> None:
        self.path = path
        self.migrations = list(migrations)
        self._writer_pool = ThreadPoolExecutor(1, thread_name_prefix=f"{path.stem}-writer")
        self._reader_pool = ThreadPoolExecutor(readers, thread_name_prefix=f"{path.stem}-reader")
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None

    def open(self) -> None:
        """Create the file if needed and migrate it (blocking; call at start-up)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = connect(self.path)
        migrate(self._writer, self.migrations)

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def write_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in a transaction on the writer thread and wait (for non-async callers)."""
        return self._writer_pool.submit(self._run_write, fn).result()

    def _run_write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._writer is None:
            raise sqlite3.ProgrammingError(f"database {self.path} is not open")
        return transaction(self._writer, fn)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer_pool, self._run_write, fn)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader_pool, lambda: fn(self._reader()))

    async def ping(self) -> None:
        """A real query through a read connection: the readiness check of a database."""
        await self.read(lambda c: c.execute("SELECT count(*) FROM sqlite_master").fetchone())

    def close(self) -> None:
        """Checkpoint the WAL into the main file and close every connection."""
        self._reader_pool.shutdown(wait=True)
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        if self._writer is not None:
            writer = self._writer

            def _final() -> None:
                writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                writer.close()

            self._writer_pool.submit(_final).result()
            self._writer = None
        self._writer_pool.shutdown(wait=True)
