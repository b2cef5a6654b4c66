"""The storage backends a test runs on: a SQLite file or a database on a real PostgreSQL.

`Backend` is what the `backend` fixture (tests/conftest.py) yields: its name, the
`[storage] url` a home would name, and the password a home keeps in
`secrets/postgres_password`. `backend.ledger()` opens the memory ledger on it
(migrated) as the functions of one connection, so a test reads the same on both:

    ledger = backend.ledger()
    memory = ledger.add_memory("my cat is Tom", owner=OWNER)
    ledger.execute("UPDATE memories SET content = ? WHERE id = ?", ("x", memory.id))
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sonia.home import Home
from sonia.kit import db, pg, portable
from sonia.services.memory import facts, postgres, repository, store

_SQLITE_FUNCTIONS: dict[str, Callable[..., Any]] = {
    **{name: getattr(store, name) for name in (
        "add_memory", "get_memory", "archive_memory", "delete_memory", "search", "add_turn",
        "list_turns", "recent_sessions", "counts", "check_index", "table_names")},
    "remember_facts": facts.remember_facts,
    "store_exchange": facts.store_exchange,
}
_POSTGRES_FUNCTIONS: dict[str, Callable[..., Any]] = {
    name: getattr(postgres, name) for name in _SQLITE_FUNCTIONS}


@dataclass(frozen=True)
class Backend:
    name: str
    """`sqlite` or `postgresql`."""
    url: str
    """What `[storage] url` would say."""
    password: str | None
    path: Path | None = None
    """The SQLite file (sqlite only)."""

    @classmethod
    def sqlite(cls, folder: Path) -> Backend:
        return cls("sqlite", "sqlite", None, folder / "memory.db")

    @classmethod
    def postgresql(cls, url: str, password: str) -> Backend:
        return cls("postgresql", url, password)

    def configure(self, home: Home) -> None:
        """Point `home`'s `[storage] url` here (its password in `secrets/`, on PostgreSQL)."""
        if self.password is not None:
            home.write_storage_password(self.password)
        home.configure({"storage": {"url": self.url}})

    @contextmanager
    def ledger(self) -> Iterator[Ledger]:
        """The memory ledger, created and migrated, on one connection that commits each
        statement (as Sonia's SQLite connections do outside a transaction)."""
        if self.path is not None:
            conn: Any = db.connect(self.path)
            db.migrate(conn, store.MIGRATIONS)
        else:
            conn = pg.connect(self.url, password=self.password, schema=postgres.SCHEMA)
            pg.migrate(conn, postgres.SCHEMA, postgres.MIGRATIONS)
        try:
            yield Ledger(self.name, conn)
        finally:
            conn.close()

    def connect(self, service: str, sqlite_migrations: list[str],
                postgres_migrations: list[str]) -> portable.Conn:
        """A new connection to `service`'s ledger (migrated), committing each statement
        outside a transaction: `<service>.db` beside the memory file, or the schema
        `<service>` (close it with `close`)."""
        if self.path is not None:
            conn = db.connect(self.path.with_name(f"{service}.db"))
            db.migrate(conn, sqlite_migrations)
            return conn
        raw = pg.connect(self.url, password=self.password, schema=service)
        pg.migrate(raw, service, postgres_migrations)
        return portable.PgConnection(raw)

    @staticmethod
    def close(conn: portable.Conn) -> None:
        if isinstance(conn, portable.PgConnection):
            conn.raw.close()
        else:
            assert isinstance(conn, sqlite3.Connection)
            conn.close()

    def database(self, service: str, sqlite_migrations: list[str],
                 postgres_migrations: list[str], *, threads: int = 4
                 ) -> portable.LedgerDatabase:
        """`service`'s ledger database (not opened): each call a new one, with its own
        connections (`threads` of them on PostgreSQL), as each replica of a service has."""
        if self.path is not None:
            return db.Database(self.path.with_name(f"{service}.db"), sqlite_migrations)
        return portable.PgLedgerDatabase(self.url, password=self.password, schema=service,
                                         migrations=postgres_migrations, threads=threads)

    def repository(self, **kwargs: Any) -> repository.LedgerRepository[Any]:
        """The memory service's repository on this backend (not opened yet)."""
        if self.path is not None:
            return repository.sqlite_repository(self.path, **kwargs)
        return repository.postgres_repository(self.url, password=self.password, **kwargs)


class Ledger:
    """One backend's ledger functions bound to one connection: `ledger.search(...)` is
    `store.search(conn, ...)` on SQLite and `postgres.search(conn, ...)` on PostgreSQL."""

    def __init__(self, backend: str, conn: Any) -> None:
        self.backend = backend
        self.conn = conn
        self._functions = _SQLITE_FUNCTIONS if backend == "sqlite" else _POSTGRES_FUNCTIONS

    def __getattr__(self, name: str) -> Callable[..., Any]:
        return functools.partial(self._functions[name], self.conn)

    def function(self, name: str) -> Callable[..., Any]:
        """The backend's function itself, taking a connection first."""
        return self._functions[name]

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Raw SQL with `?` placeholders on either backend; the rows as dicts."""
        if self.backend == "sqlite":
            cursor = self.conn.execute(sql, params)
            return [dict(row) for row in cursor.fetchall()] if cursor.description else []
        cursor = self.conn.execute(sql.replace("?", "%s"), params)
        return list(cursor.fetchall()) if cursor.description else []

    def transaction(self, fn: Callable[[Any], Any]) -> Any:
        """Run `fn(conn)` in one transaction: committed whole or not at all."""
        if self.backend == "sqlite":
            return db.transaction(self.conn, fn)
        with self.conn.transaction():
            return fn(self.conn)
