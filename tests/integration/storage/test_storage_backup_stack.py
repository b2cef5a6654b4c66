"""A whole stack on PostgreSQL, backed up and restored with `sonia backup` / `sonia
restore`: after the schemas are dropped, the restore brings back the memories, the
audit chain (it verifies), the grant ledger (the used grant stays used) and the
gateway's sessions, paused turns and console sessions (the cookie still works)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sonia import pgdump
from sonia.kit.pg import BINDIR_ENV
from sonia.pgserver import PostgresServer
from sonia.testing import FreshStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def sonia(*args: str, home: Path, env: dict[str, str] | None = None,
          ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sonia", *args, "--home", str(home)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


@pytest.fixture
def pg_stack(postgres_server: PostgresServer, tmp_path: Path) -> Iterator[FreshStack]:
    name = f"t_{secrets.token_hex(6)}"
    url = postgres_server.create_database(name)
    try:
        with FreshStack(tmp_path / "home", config={"storage": {"url": url}}) as stack:
            stack.home.write_storage_password(postgres_server.password)
            stack.up()
            yield stack
    finally:
        postgres_server.drop_database(name)


def _sql(stack: FreshStack, query: str) -> list[tuple[object, ...]]:
    import psycopg

    with psycopg.connect(stack.home.settings().storage.url, autocommit=True,
                         password=stack.home.storage_password()) as conn:
        cursor = conn.execute(query)
        return cursor.fetchall() if cursor.description else []


def test_backup_drop_restore_brings_the_ledgers_back(pg_stack: FreshStack) -> None:
    stack, headers = pg_stack, pg_stack.user_headers()
    noted = httpx.post(stack.url() + "/v1/memory", headers=headers, timeout=30,
                       json={"content": "the boiler was serviced in March", "kind": "note"})
    assert noted.status_code == 201, noted.text
    actions = stack.url() + "/v1/actions"
    proposed = httpx.post(actions, headers=headers, timeout=30, json={
        "tool": "file.write", "args": {"path": "kept.txt", "content": "once\n"}})
    action_id = proposed.json()["id"]
    approved = httpx.post(f"{actions}/{action_id}/approve", headers=stack.approver_headers(),
                          timeout=30)
    assert approved.json()["status"] == "executed", approved.text
    chatted = httpx.post(stack.url() + "/v1/chat", headers=headers, timeout=60,
                         json={"message": "write 'call mum' to todo.txt"}).json()
    assert chatted["status"] == "pending_approval", chatted
    console = httpx.Client(base_url=stack.url(), timeout=30)
    signed_in = console.post("/v1/console/login", json={"key": stack.user_key})
    assert signed_in.status_code == 200, signed_in.text
    gateway_rows = ("SELECT (SELECT count(*) FROM gateway.sessions),"
                    " (SELECT string_agg(status, ',') FROM gateway.agent_turns),"
                    " (SELECT count(*) FROM gateway.console_sessions)")
    assert _sql(stack, gateway_rows) == [(1, "pending_approval", 1)]

    made = sonia("backup", home=stack.home.root)
    assert made.returncode == 0, made.stderr
    backup = max(p for p in stack.home.backups.iterdir() if not p.name.startswith("."))
    assert (backup / pgdump.DUMP_PATH).is_file()
    assert stack.down().was_running

    _sql(stack, "DROP SCHEMA " + ", ".join(pgdump.SCHEMAS) + " CASCADE")
    assert _sql(stack, "SELECT nspname FROM pg_namespace WHERE nspname = 'memory'") == []

    restored = sonia("restore", "latest", home=stack.home.root)
    assert restored.returncode == 0, restored.stderr
    used = _sql(stack, "SELECT action_id FROM openclaw.consumed_grants")
    assert used == [(action_id,)], "the grant ledger still holds the used grant"
    assert _sql(stack, gateway_rows) == [(1, "pending_approval", 1)], "the gateway's tables"
    assert not stack.home.db_path("gateway").exists()

    stack.up()
    found = httpx.get(stack.url() + "/v1/memory/search", headers=headers, timeout=30,
                      params={"q": "boiler serviced"}).json()["results"]
    assert [r["id"] for r in found] == [noted.json()["id"]]
    verified = sonia("audit", "verify", home=stack.home.root)
    assert verified.returncode == 0, verified.stderr
    assert "audit chain intact: 4 records" in verified.stdout, "and the paused write's"
    again = httpx.post(f"{actions}/{action_id}/approve", headers=stack.approver_headers(),
                       timeout=30)
    assert (again.status_code, again.json()["code"]) == (409, "ALREADY_DECIDED")
    assert console.get("/v1/whoami").json()["role"] == "user", "the console session"
    console.close()


def test_restore_is_refused_while_the_stack_runs_and_a_missing_pg_dump_exits_2(
    pg_stack: FreshStack, tmp_path: Path,
) -> None:
    stack = pg_stack
    made = sonia("backup", home=stack.home.root)
    assert made.returncode == 0, made.stderr
    running = sonia("restore", "latest", home=stack.home.root)
    assert running.returncode == 1 and "sonia down" in running.stderr + running.stdout

    empty = tmp_path / "no-tools"
    empty.mkdir()
    missing = sonia("backup", home=stack.home.root, env={BINDIR_ENV: str(empty)})
    assert missing.returncode == 2, missing.stderr
    assert "pg_dump not found" in missing.stderr + missing.stdout
