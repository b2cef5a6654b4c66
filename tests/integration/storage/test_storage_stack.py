"""A whole stack on each storage backend: what the gateway's API stores in memory is
recalled, owned by its key, and survives a stop and start of the stack; an action
waits for its approver, runs once, and EVA's audit chain verifies; the gateway's
sessions, a chat turn paused for approval and a console session survive a restart,
and on PostgreSQL the gateway writes no SQLite file at all."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from backends import Backend

from sonia.testing import FreshStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def stack_on(backend: Backend, tmp_path: Path) -> Iterator[FreshStack]:
    with FreshStack(tmp_path / "home", config={"storage": {"url": backend.url}}) as stack:
        if backend.password is not None:
            stack.home.write_storage_password(backend.password)
        stack.up()
        yield stack


def test_a_memory_stored_through_the_gateway_is_recalled_and_survives_a_restart(
    backend: Backend, stack_on: FreshStack,
) -> None:
    stack, headers = stack_on, stack_on.user_headers()
    stats = httpx.get(stack.url("memory") + "/v1/stats", timeout=30,
                      headers=stack.service_headers("gateway")).json()
    assert stats["backend"] == backend.name
    assert (stack.home.db_path("memory").exists()) == (backend.name == "sqlite")

    told = httpx.post(stack.url() + "/v1/chat", headers=headers, timeout=30,
                      json={"message": "My passport number ends in 0451."}).json()
    assert [m["content"] for m in told["memory"]["stored"]] == \
        ["My passport number ends in 0451"]
    noted = httpx.post(stack.url() + "/v1/memory", headers=headers, timeout=30,
                       json={"content": "the boiler was serviced in March", "kind": "note"})
    assert noted.status_code == 201
    found = httpx.get(stack.url() + "/v1/memory/search", headers=headers, timeout=30,
                      params={"q": "boiler serviced"}).json()["results"]
    assert found[0]["id"] == noted.json()["id"]
    other = httpx.get(stack.url() + "/v1/memory/search", headers=stack.approver_headers(),
                      timeout=30, params={"q": "boiler serviced"}).json()["results"]
    assert other == [], "another key's memories do not exist for it"

    report = stack.down()
    assert report.was_running and report.escalations == []
    stack.up()

    found = httpx.get(stack.url() + "/v1/memory/search", headers=headers, timeout=30,
                      params={"q": "boiler serviced"}).json()["results"]
    assert found[0]["id"] == noted.json()["id"]
    turns = httpx.get(stack.url("memory") + f"/v1/sessions/{told['session_id']}/turns",
                      headers=stack.service_headers("gateway"), timeout=30).json()["turns"]
    assert [t["id"] for t in turns][-1] == told["turn_id"]
    session = httpx.post(stack.url() + "/v1/sessions", headers=headers, timeout=30).json()
    asked = httpx.post(stack.url() + "/v1/chat", headers=headers, timeout=30,
                       json={"message": "What does my passport number end in?",
                             "session_id": session["id"]}).json()
    assert "0451" in asked["reply"]
    forgotten = httpx.delete(stack.url() + f"/v1/memory/{noted.json()['id']}",
                             headers=headers, timeout=30)
    assert forgotten.json() == {"id": noted.json()["id"], "deleted": True}

    if backend.name == "postgresql":  # the rows are the server's, not a file's
        with backend.ledger() as ledger:
            rows = ledger.execute("SELECT content FROM memories ORDER BY seq")
        assert [r["content"] for r in rows] == ["My passport number ends in 0451"]


def test_an_approved_action_runs_once_and_the_audit_chain_verifies(
    backend: Backend, stack_on: FreshStack,
) -> None:
    stack = stack_on
    gateway = stack.url("gateway") + "/v1/actions"
    proposed = httpx.post(gateway, headers=stack.user_headers(), timeout=30, json={
        "tool": "file.write", "args": {"path": "stored.txt", "content": "once\n"}})
    assert proposed.status_code == 202, proposed.text
    action_id = proposed.json()["id"]
    approved = httpx.post(f"{gateway}/{action_id}/approve", headers=stack.approver_headers(),
                          timeout=30)
    assert (approved.status_code, approved.json()["status"]) == (200, "executed"), approved.text
    again = httpx.post(f"{gateway}/{action_id}/approve", headers=stack.approver_headers(),
                       timeout=30)
    assert (again.status_code, again.json()["code"]) == (409, "ALREADY_DECIDED")
    assert (stack.home.workspace / "stored.txt").read_text() == "once\n"

    verified = subprocess.run(
        [sys.executable, "-m", "sonia", "audit", "verify", "--home", str(stack.home.root)],
        capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0, verified.stderr
    assert "audit chain intact: 3 records" in verified.stdout
    page = httpx.get(stack.url("eva") + "/v1/audit", headers=stack.service_headers("gateway"),
                     timeout=30).json()
    assert page["chain"]["ok"] and [r["kind"] for r in reversed(page["records"])] == [
        "pending", "approved", "executed"]

    for service in ("eva", "openclaw"):
        assert stack.home.db_path(service).exists() == (backend.name == "sqlite"), service
    if backend.name == "postgresql":  # the ledgers are the server's, not files
        with backend.ledger() as ledger:
            kinds = ledger.execute("SELECT kind FROM eva.audit_log WHERE action_id = ? "
                                   "ORDER BY seq", (action_id,))
            used = ledger.execute("SELECT action_id FROM openclaw.consumed_grants")
            stored = ledger.execute("SELECT status FROM gateway.actions WHERE id = ?",
                                    (action_id,))
        assert [r["kind"] for r in kinds] == ["pending", "approved", "executed"]
        assert [r["action_id"] for r in used] == [action_id]
        assert [r["status"] for r in stored] == ["executed"], "the gateway's action store"


def test_the_gateways_state_is_the_servers_and_survives_a_restart(
    backend: Backend, stack_on: FreshStack,
) -> None:
    """A chat in the key's default session, a chat turn paused on a tier-2 write and a
    console sign-in; the stack stops and starts; the cookie still works and the approval
    resumes the paused turn. On PostgreSQL their rows are the server's and
    `data/gateway.db` never exists."""
    stack, headers = stack_on, stack_on.user_headers()
    chatted = httpx.post(stack.url() + "/v1/chat", headers=headers, timeout=60,
                         json={"message": "hello there"})
    assert chatted.status_code == 200, chatted.text
    session = httpx.post(stack.url() + "/v1/sessions", headers=headers, timeout=30).json()
    paused = httpx.post(stack.url() + "/v1/chat", headers=headers, timeout=60, json={
        "message": "write 'call mum' to todo.txt", "session_id": session["id"]}).json()
    assert paused["status"] == "pending_approval", paused
    console = httpx.Client(base_url=stack.url(), timeout=30)
    signed_in = console.post("/v1/console/login", json={"key": stack.user_key})
    assert signed_in.status_code == 200, signed_in.text
    assert console.get("/v1/whoami").json()["role"] == "user"

    if backend.name == "postgresql":  # the rows are the server's
        with backend.ledger() as ledger:
            states = ledger.execute("SELECT id, state FROM gateway.sessions")
            turns = ledger.execute("SELECT status FROM gateway.agent_turns WHERE id = ?",
                                   (paused["agent_turn_id"],))
            signed = ledger.execute("SELECT count(*) AS n FROM gateway.console_sessions")
        assert {(r["id"], r["state"]) for r in states} == {
            (chatted.json()["session_id"], "active"), (session["id"], "active")}
        assert [r["status"] for r in turns] == ["pending_approval"]
        assert [r["n"] for r in signed] == [1]

    assert stack.down().was_running
    stack.up()
    assert console.get("/v1/whoami").json()["role"] == "user", "the console session"
    approved = httpx.post(
        stack.url() + f"/v1/actions/{paused['pending_approval']['action_id']}/approve",
        headers=stack.approver_headers(), timeout=60)
    assert approved.status_code == 200, approved.text
    assert approved.json()["turn_id"] == paused["agent_turn_id"]
    record = httpx.get(stack.url() + f"/v1/turns/{paused['agent_turn_id']}", headers=headers,
                       timeout=30).json()
    assert (record["status"], record["reply"]) == ("completed", "Wrote todo.txt.")
    listed = httpx.get(stack.url() + "/v1/sessions", headers=headers, timeout=30).json()
    assert session["id"] in {s["id"] for s in listed["sessions"]}
    console.close()
    assert stack.down().was_running
    assert stack.home.db_path("gateway").exists() == (backend.name == "sqlite")
