"""Where a gate's stack keeps its ledgers: SQLite files in its home, or a PostgreSQL
server the gate starts for the run.

A gate that takes `storage = "postgresql"` (the chaos and durability gates,
`sonia gate NAME --storage postgresql`) runs its stack on a server of its own:
`initdb` in a temporary folder, a free loopback port, never as root
(`sonia.pgserver.PostgresServer`), one database for the run, stopped and removed
after. Where PostgreSQL is not installed the run is refused with a ConfigError
(exit 2) that names what is missing: a gate that cannot run on the backend it
was asked for must not answer GO on another one.

`read_rows` and `verify_audit` read what a stopped stack stored through its
backend (the schema on the server, or the SQLite file), with the same SQL text
for both (`kit/portable.py`): evidence readers never open `data/*.db` themselves.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sonia import pgserver
from sonia.actions import audit
from sonia.config import Settings
from sonia.errors import ConfigError
from sonia.home import Home
from sonia.kit.db import connect
from sonia.kit.portable import Conn, read_postgres
from sonia.pgdump import SCHEMAS
from sonia.pgserver import PostgresServer

__all__ = ["STORAGES", "GateStorage", "backend_of", "gate_storage", "read_rows",
           "verify_audit"]

STORAGES: tuple[str, ...] = ("sqlite", "postgresql")
DATABASE = "sonia_gate"
"""The run's database on the gate's own server."""


@dataclass
class GateStorage:
    """The backend of one gate run; `server` is None on SQLite."""

    backend: str
    server: PostgresServer | None = None

    @property
    def url(self) -> str | None:
        return None if self.server is None else self.server.url(DATABASE)

    def config(self) -> dict[str, dict[str, Any]]:
        """The `sonia.toml` tables that put a home on this backend."""
        return {} if self.url is None else {"storage": {"url": self.url}}

    def prepare(self, home: Home) -> None:
        """Give `home` the server's password (secrets/postgres_password)."""
        if self.server is not None:
            home.write_storage_password(self.server.password)

    def recreate_database(self) -> None:
        """Drop the run's database and make it again, empty: the storage is lost."""
        if self.server is not None:
            self.server.drop_database(DATABASE)
            self.server.create_database(DATABASE)

    def schemas(self) -> list[str]:
        """Sonia's schemas present in the run's database ([] on SQLite)."""
        if self.server is None:
            return []
        import psycopg

        with psycopg.connect(self.server.url(DATABASE), password=self.server.password) as conn:
            rows = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s) "
                                "ORDER BY nspname", (list(SCHEMAS),)).fetchall()
        return [str(r[0]) for r in rows]

    def facts(self) -> dict[str, Any]:
        """What the evidence records of the backend that ran (its server's version)."""
        if self.server is None:
            return {"backend": self.backend}
        with self.server.admin() as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
        return {"backend": self.backend, "server_version": str(version),
                "database": DATABASE, "bindir": str(self.server.bindir)}


@contextmanager
def gate_storage(backend: str) -> Iterator[GateStorage]:
    """The backend for one run: nothing to start on SQLite; on PostgreSQL a server of
    the run's own, with an empty database, stopped (folder removed) at the end."""
    if backend not in STORAGES:
        raise ConfigError(f"unknown storage {backend!r}; use one of {', '.join(STORAGES)}",
                          key="storage")
    if backend == "sqlite":
        yield GateStorage(backend)
        return
    reason = pgserver.missing()
    if reason is not None:
        raise ConfigError(f"--storage postgresql needs {reason}", key="storage")
    server = PostgresServer.start()
    try:
        server.create_database(DATABASE)
        yield GateStorage(backend, server)
    finally:
        server.stop()


def _postgres_settings(home: Home) -> Settings | None:
    """The home's settings when its `[storage] url` names PostgreSQL, else None (a home
    without a sonia.toml, as some tests build, has only its SQLite files)."""
    if not home.config_file.exists():
        return None
    settings = home.settings()
    return settings if settings.storage.backend == "postgresql" else None


def backend_of(home: Home) -> str:
    """`sqlite` or `postgresql`, as the home's `[storage] url` says."""
    return "sqlite" if _postgres_settings(home) is None else "postgresql"


def read_rows(home: Home, service: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a read-only query on `service`'s ledger, through the home's backend;
    [] when the ledger or its table does not exist (the service never wrote)."""
    settings = _postgres_settings(home)
    if settings is not None:
        import psycopg

        def fetch(conn: Conn) -> list[tuple[Any, ...]]:
            return [tuple(r) for r in conn.execute(sql).fetchall()]

        try:
            return read_postgres(home, settings, schema=service, fn=fetch)
        except psycopg.errors.UndefinedTable:
            return []
    path = home.db_path(service)
    if not path.is_file():
        return []
    conn = connect(path, readonly=True)
    try:
        return [tuple(r) for r in conn.execute(sql).fetchall()]
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        conn.close()


def verify_audit(home: Home) -> audit.VerifyResult:
    """EVA's audit chain in `home`, verified through the home's backend."""
    settings = _postgres_settings(home)
    if settings is not None:
        return read_postgres(home, settings, schema="eva", fn=audit.verify)
    return audit.verify(home.db_path("eva"))

