"""The test suite's PostgreSQL server and `kit/pg.py`, on a real server."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

pytest.importorskip("psycopg", reason="needs psycopg with libpq (the postgres extra)")

import psycopg  # noqa: E402 - after the skip above

from sonia.errors import ConfigError, Unavailable
from sonia.kit import pg
from sonia.pgserver import MARKER_ENV, PostgresServer

MIGRATIONS = [
    "CREATE TABLE notes (id integer PRIMARY KEY, body text NOT NULL)",
    "ALTER TABLE notes ADD COLUMN tag text; CREATE INDEX notes_tag ON notes (tag)",
]


@pytest.fixture
def database(postgres_server: PostgresServer) -> Iterator[str]:
    name = "kit_pg_test"
    postgres_server.drop_database(name)
    url = postgres_server.create_database(name)
    try:
        yield url
    finally:
        postgres_server.drop_database(name)


def test_the_server_listens_on_loopback_and_never_runs_as_root(
    postgres_server: PostgresServer,
) -> None:
    process = psutil.Process(postgres_server.process.pid)
    assert process.uids().real != 0 and process.uids().effective != 0
    assert process.environ()[MARKER_ENV] == str(postgres_server.root)
    assert postgres_server.url("x") == f"postgresql://sonia@127.0.0.1:{postgres_server.port}/x"
    with postgres_server.admin() as conn:
        row = conn.execute("SELECT current_setting('listen_addresses'),"
                           " current_setting('password_encryption')").fetchone()
    assert row == ("127.0.0.1", "scram-sha-256")


def test_a_wrong_password_is_refused(postgres_server: PostgresServer) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(postgres_server.url("postgres"), password="wrong", connect_timeout=5)


def test_a_stopped_server_leaves_no_process_and_no_folder() -> None:
    server = PostgresServer.start()
    pid, root = server.process.pid, server.root
    children = psutil.Process(pid).children(recursive=True)
    assert server.stop() == 0
    assert not psutil.pid_exists(pid)
    assert not any(child.is_running() for child in children)
    assert not root.exists()


def test_connections_commit_synchronously_whatever_the_server_says(
    postgres_server: PostgresServer, database: str,
) -> None:
    """A server (or database) configured with synchronous_commit = off would acknowledge
    commits before their WAL is flushed; Sonia's connections turn it back on."""
    with psycopg.connect(database, password=postgres_server.password,
                         autocommit=True) as admin:
        admin.execute("ALTER DATABASE kit_pg_test SET synchronous_commit = off")
        with psycopg.connect(database, password=postgres_server.password) as plain:
            assert plain.execute("SHOW synchronous_commit").fetchone() == ("off",)
    conn = pg.connect(database, password=postgres_server.password, schema="kit")
    try:
        assert conn.execute("SHOW synchronous_commit").fetchone() == {"synchronous_commit": "on"}
        assert conn.execute("SHOW search_path").fetchone() == {"search_path": "kit"}
    finally:
        conn.close()


def test_migrations_run_once_and_are_recorded(postgres_server: PostgresServer,
                                              database: str) -> None:
    conn = pg.connect(database, password=postgres_server.password, schema="kit")
    try:
        assert not _has_schema(conn)
        assert pg.migrate(conn, "kit", MIGRATIONS[:1]) == 1
        assert pg.migrate(conn, "kit", MIGRATIONS) == 2
        assert pg.migrate(conn, "kit", MIGRATIONS) == 2
        rows = conn.execute("SELECT version FROM kit.schema_version ORDER BY version").fetchall()
        assert [r["version"] for r in rows] == [1, 2]
        conn.execute("INSERT INTO notes (id, body, tag) VALUES (1, 'x', 't')")
    finally:
        conn.close()


def _has_schema(conn: psycopg.Connection[Any]) -> bool:
    return conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'kit'").fetchone() is not None


def test_a_schema_from_the_future_is_refused_naming_the_key(postgres_server: PostgresServer,
                                                            database: str) -> None:
    conn = pg.connect(database, password=postgres_server.password, schema="kit")
    try:
        pg.migrate(conn, "kit", MIGRATIONS)
        with pytest.raises(ConfigError, match="newer than this code") as caught:
            pg.migrate(conn, "kit", MIGRATIONS[:1])
        assert caught.value.key == "storage.url"
    finally:
        conn.close()


def test_processes_starting_at_once_migrate_once(postgres_server: PostgresServer,
                                                 database: str) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        conn = pg.connect(database, password=postgres_server.password, schema="kit")
        try:
            barrier.wait()
            pg.migrate(conn, "kit", MIGRATIONS)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    conn = pg.connect(database, password=postgres_server.password, schema="kit")
    try:
        assert pg.schema_version(conn, "kit") == 2
    finally:
        conn.close()


def test_reads_are_read_only_and_writes_commit(postgres_server: PostgresServer,
                                               database: str) -> None:
    db = pg.PgDatabase(database, password=postgres_server.password, schema="kit",
                       migrations=MIGRATIONS)
    db.open()

    async def scenario() -> None:
        await db.write(lambda c: c.execute("INSERT INTO notes (id, body) VALUES (1, 'a')"))
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            await db.read(lambda c: c.execute("INSERT INTO notes (id, body) VALUES (2, 'b')"))
        with pytest.raises(psycopg.errors.UniqueViolation):  # rolled back whole
            await db.write(lambda c: (
                c.execute("INSERT INTO notes (id, body) VALUES (3, 'c')"),
                c.execute("INSERT INTO notes (id, body) VALUES (1, 'again')")))
        rows = await db.read(lambda c: c.execute("SELECT id FROM notes ORDER BY id").fetchall())
        assert [r["id"] for r in rows] == [1]
        await db.ping()

    try:
        asyncio.run(scenario())
    finally:
        db.close()


def test_a_lost_connection_fails_one_call_with_503_and_the_next_reconnects(
    postgres_server: PostgresServer, database: str,
) -> None:
    db = pg.PgDatabase(database, password=postgres_server.password, schema="kit",
                       migrations=MIGRATIONS, threads=1)
    db.open()

    async def scenario() -> None:
        await db.ping()
        with postgres_server.admin() as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                          " WHERE datname = 'kit_pg_test' AND pid <> pg_backend_pid()")
        with pytest.raises(Unavailable):
            await db.ping()
        await db.ping()

    try:
        asyncio.run(scenario())
    finally:
        db.close()


def test_an_unreachable_server_is_unavailable(postgres_server: PostgresServer) -> None:
    with pytest.raises(Unavailable, match="cannot be reached"):
        pg.connect(f"postgresql://sonia@127.0.0.1:{postgres_server.port}/no_such_db",
                   password=postgres_server.password, schema="kit")


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_restart_in_place_is_a_new_postmaster_that_kept_the_data(mode: str) -> None:
    server = PostgresServer.start()
    try:
        url = server.create_database("kept")
        with psycopg.connect(url, password=server.password, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (v int)")
            conn.execute("INSERT INTO t VALUES (7)")
        before = server.started()
        old = psutil.Process(before[0])
        assert "postgres" in old.name() and old.pid == server.process.pid, \
            "the pid is the server's own record of its postmaster"
        server.shutdown(mode)
        assert not old.is_running() or old.status() == psutil.STATUS_ZOMBIE
        server.start_again()
        after = server.started()
        assert after[0] != before[0] and after[1] > before[1]
        assert after[0] == server.process.pid
        assert server.port == int(url.rsplit(":", 1)[1].split("/")[0])
        with psycopg.connect(url, password=server.password) as conn:
            assert conn.execute("SELECT v FROM t").fetchall() == [(7,)]
    finally:
        server.stop()
    assert not server.root.exists()


def test_an_unknown_shutdown_mode_is_refused(postgres_server: PostgresServer) -> None:
    with pytest.raises(ValueError, match="smart"):
        postgres_server.shutdown("smart")
