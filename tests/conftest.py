"""Fixtures that start the real stack (real processes on free loopback ports, a fresh
home) and the real storage backends (a SQLite file, a PostgreSQL server)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from backends import Backend

from sonia import pgserver
from sonia.pgserver import PostgresServer
from sonia.testing import FreshStack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FreshStack]:
    """One running stack shared by the tests of a module (they must not break it)."""
    with FreshStack(tmp_path_factory.mktemp("home")) as s:
        s.up()
        yield s


@pytest.fixture()
def own_stack(tmp_path: Path) -> Iterator[FreshStack]:
    """A running stack for one test that may kill, stop or corrupt it."""
    with FreshStack(tmp_path / "home") as s:
        s.up()
        yield s


@pytest.fixture()
def gateway(stack: FreshStack) -> Iterator[httpx.Client]:
    """An HTTP client for the gateway, authenticated with a user key."""
    with httpx.Client(base_url=stack.url("gateway"), headers=stack.user_headers(),
                      timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session (initdb in a temporary folder, a free
    loopback port); skips, naming what is missing, where it cannot run."""
    reason = pgserver.missing()
    if reason is not None:
        pytest.skip(f"needs {reason}")
    server = PostgresServer.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Where a test's ledger lives: a fresh SQLite file, or a fresh database on the
    session's PostgreSQL server (dropped after the test)."""
    if request.param == "sqlite":
        yield Backend.sqlite(tmp_path)
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = f"t_{secrets.token_hex(6)}"
    url = server.create_database(name)
    try:
        yield Backend.postgresql(url, server.password)
    finally:
        server.drop_database(name)
