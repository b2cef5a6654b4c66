"""Actions end to end: gateway -> EVA decides -> OpenClaw runs with EVA's grant, once.

Tier 0-1 run at once (200); tier 2-3 wait for an approver (202), run exactly
once when approved, never when denied; every step is in EVA's audit chain.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sonia.kit.db import connect
from sonia.testing import FreshStack

pytestmark = pytest.mark.integration


@pytest.fixture()
def approver(stack: FreshStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url("gateway"), headers=stack.approver_headers(),
                      timeout=30) as client:
        yield client


def propose(gateway: httpx.Client, tool: str, args: dict[str, Any], **more: Any
            ) -> httpx.Response:
    return gateway.post("/v1/actions", json={"tool": tool, "args": args, **more})


def audit_kinds(stack: FreshStack, action_id: str) -> list[str]:
    conn = connect(stack.home.db_path("eva"), readonly=True)
    try:
        return [row[0] for row in conn.execute(
            "SELECT kind FROM audit_log WHERE action_id = ? ORDER BY seq", (action_id,))]
    finally:
        conn.close()


def test_a_tier0_action_runs_at_once(stack: FreshStack, gateway: httpx.Client) -> None:
    (stack.home.workspace / "hello.txt").write_text("hello\n")
    answer = propose(gateway, "file.read", {"path": "hello.txt"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "executed" and body["result"]["content"] == "hello\n"
    shown = gateway.get(f"/v1/actions/{body['id']}").json()
    assert shown["status"] == "executed" and shown["result"]["content"] == "hello\n"
    assert audit_kinds(stack, body["id"]) == ["allowed", "executed"]


def test_a_read_only_command_runs_at_once_in_the_reported_sandbox(
    stack: FreshStack, gateway: httpx.Client
) -> None:
    answer = propose(gateway, "shell.run", {"argv": ["ls", "-a"]})
    assert answer.status_code == 200, answer.text
    result = answer.json()["result"]
    assert result["exit_code"] == 0
    ready = httpx.get(stack.url("openclaw") + "/readyz", timeout=10).json()
    assert result["sandbox"]["level"] == ready["checks"]["sandbox"]["level"]


def test_a_write_waits_for_an_approver_and_runs_exactly_once(
    stack: FreshStack, gateway: httpx.Client, approver: httpx.Client
) -> None:
    args = {"path": "out/once.txt", "content": "line\n", "mode": "append", "parents": True}
    pending = propose(gateway, "file.write", args)
    assert pending.status_code == 202, pending.text
    body = pending.json()
    assert body["status"] == "pending_approval" and len(body["plan_hash"]) == 64
    assert body["expires_at"].endswith("Z")
    assert not (stack.home.workspace / "out" / "once.txt").exists()
    refused = gateway.post(f"/v1/actions/{body['id']}/approve")
    assert (refused.status_code, refused.json()["code"]) == (403, "FORBIDDEN")
    approved = approver.post(f"/v1/actions/{body['id']}/approve")
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "executed"
    again = approver.post(f"/v1/actions/{body['id']}/approve")
    assert (again.status_code, again.json()["code"]) == (409, "ALREADY_DECIDED")
    assert (stack.home.workspace / "out" / "once.txt").read_text() == "line\n"
    assert gateway.get(f"/v1/actions/{body['id']}").json()["status"] == "executed"
    assert audit_kinds(stack, body["id"]) == ["pending", "approved", "executed"]


def test_a_denied_action_never_runs(stack: FreshStack, gateway: httpx.Client,
                                    approver: httpx.Client) -> None:
    pending = propose(gateway, "file.delete", {"path": "hello-keep.txt"}).json()
    (stack.home.workspace / "hello-keep.txt").write_text("keep\n")
    denied = approver.post(f"/v1/actions/{pending['id']}/deny")
    assert denied.status_code == 200 and denied.json()["status"] == "denied"
    late = approver.post(f"/v1/actions/{pending['id']}/approve")
    assert (late.status_code, late.json()["code"]) == (409, "ALREADY_DECIDED")
    assert (stack.home.workspace / "hello-keep.txt").exists()
    assert gateway.get(f"/v1/actions/{pending['id']}").json()["status"] == "denied"
    assert audit_kinds(stack, pending["id"]) == ["pending", "denied"]


def test_a_failing_tool_answers_its_error_and_the_action_is_spent(
    gateway: httpx.Client
) -> None:
    answer = propose(gateway, "file.read", {"path": "no-such-file.txt"})
    assert (answer.status_code, answer.json()["code"]) == (404, "NOT_FOUND")
    action_id = answer.json()["action_id"]
    shown = gateway.get(f"/v1/actions/{action_id}").json()
    assert shown["status"] == "failed" and shown["error"]["code"] == "NOT_FOUND"


def test_bad_commands_are_refused_before_any_grant(stack: FreshStack,
                                                   gateway: httpx.Client) -> None:
    answer = propose(gateway, "shell.run", {"argv": ["bash", "-c", "id"]})
    assert (answer.status_code, answer.json()["code"]) == (400, "INVALID_COMMAND")
    conn = connect(stack.home.db_path("eva"), readonly=True)
    try:
        last = conn.execute("SELECT kind, detail FROM audit_log ORDER BY seq DESC").fetchone()
    finally:
        conn.close()
    assert last[0] == "rejected" and json.loads(last[1])["code"] == "INVALID_COMMAND"


def test_the_tool_registry_is_listed_at_the_gateway(gateway: httpx.Client) -> None:
    body = gateway.get("/v1/tools").json()
    tiers = {tool["name"]: tool["tier"] for tool in body["tools"]}
    assert tiers == {"file.read": 0, "file.list": 0, "file.search": 0, "shell.run": 1,
                     "file.write": 2, "file.delete": 3}
    assert all(tool["schema"]["type"] == "object" for tool in body["tools"])
    assert "ls" in body["commands"] and body["sandbox"]["level"] in ("bwrap", "rlimits")


def test_an_idempotency_key_returns_the_first_answer(stack: FreshStack,
                                                     gateway: httpx.Client) -> None:
    (stack.home.workspace / "idem.txt").write_text("first\n")
    first = propose(gateway, "file.read", {"path": "idem.txt"}, idempotency_key="read-1")
    (stack.home.workspace / "idem.txt").write_text("second\n")
    again = propose(gateway, "file.read", {"path": "idem.txt"}, idempotency_key="read-1")
    assert again.status_code == first.status_code == 200
    assert again.json() == first.json()
    assert again.json()["result"]["content"] == "first\n"
    other = propose(gateway, "file.read", {"path": "hello.txt"}, idempotency_key="read-1")
    assert (other.status_code, other.json()["code"]) == (400, "INVALID_ARGUMENT")


def test_unknown_and_malformed_actions_are_not_found(gateway: httpx.Client) -> None:
    for action_id in ("act_" + "0" * 24, "nope", "act_" + "g" * 24):
        answer = gateway.get(f"/v1/actions/{action_id}")
        assert (answer.status_code, answer.json()["code"]) == (404, "NOT_FOUND")


def test_only_the_proposer_or_an_approver_sees_an_action(
    stack: FreshStack, gateway: httpx.Client, approver: httpx.Client
) -> None:
    action_id = propose(gateway, "file.write", {"path": "mine.txt", "content": "x"}).json()["id"]
    other_key = stack.home.create_api_key("user")
    other = httpx.get(f"{stack.url('gateway')}/v1/actions/{action_id}", timeout=10,
                      headers={"Authorization": f"Bearer {other_key}"})
    assert (other.status_code, other.json()["code"]) == (404, "NOT_FOUND")
    assert approver.get(f"/v1/actions/{action_id}").json()["status"] == "pending_approval"


def test_openclaw_reports_the_sandbox_and_the_grant_key_in_readiness(stack: FreshStack) -> None:
    checks = httpx.get(stack.url("openclaw") + "/readyz", timeout=10).json()["checks"]
    assert checks["grant_key"]["status"] == "pass"
    sandbox = checks["sandbox"]
    assert sandbox["level"] in ("bwrap", "rlimits") and sandbox["reason"]
    if sandbox["level"] == "rlimits":
        assert sandbox["network"] == "host", "no network isolation is claimed without bwrap"


def test_eva_records_its_decisions_in_one_unbroken_chain(stack: FreshStack,
                                                         gateway: httpx.Client) -> None:
    propose(gateway, "file.list", {"path": "."})
    conn = sqlite3.connect(f"file:{stack.home.db_path('eva')}?mode=ro", uri=True)
    try:
        details = [row[0] for row in conn.execute("SELECT detail FROM audit_log")]
    finally:
        conn.close()
    assert details and not any("eyJ" in d for d in details), "no grant is ever audited"
