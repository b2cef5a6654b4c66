"""The API behind the console, against a real stack: actions listed by where they stand,
with their canonical plan and what they would change; the audit log; forgetting a
memory; the system's state; a chat turn told as it happens."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sonia.testing import FreshStack

pytestmark = pytest.mark.integration


def client(stack: FreshStack, key: str) -> httpx.Client:
    return httpx.Client(base_url=stack.url("gateway"), timeout=60,
                        headers={"Authorization": f"Bearer {key}"})


@pytest.fixture(scope="module")
def people(stack: FreshStack) -> Iterator[dict[str, httpx.Client]]:
    """Two users and an approver, each with their own key."""
    clients = {"alice": client(stack, stack.home.create_api_key("user")),
               "bob": client(stack, stack.home.create_api_key("user")),
               "approver": client(stack, stack.approver_key)}
    yield clients
    for made in clients.values():
        made.close()


def propose(who: httpx.Client, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    answer = who.post("/v1/actions", json={"tool": tool, "args": args})
    assert answer.status_code in (200, 202), answer.text
    return dict(answer.json())


def listed(who: httpx.Client, **params: Any) -> list[str]:
    answer = who.get("/v1/actions", params=params)
    assert answer.status_code == 200, answer.text
    return [a["id"] for a in answer.json()["actions"]]


def test_an_approver_lists_everyones_pending_actions_a_user_only_their_own(
        people: dict[str, httpx.Client]) -> None:
    mine = propose(people["alice"], "file.write", {"path": "a.txt", "content": "a"})["id"]
    theirs = propose(people["bob"], "file.write", {"path": "b.txt", "content": "b"})["id"]
    assert {mine, theirs} <= set(listed(people["approver"], status="pending", limit=100))
    alice_sees = listed(people["alice"], status="pending", limit=100)
    assert mine in alice_sees and theirs not in alice_sees


def test_status_filters_and_pages_newest_first(stack: FreshStack,
                                               people: dict[str, httpx.Client]) -> None:
    alice = people["alice"]
    (stack.home.workspace / "read-me.txt").write_text("hi\n")
    read = propose(alice, "file.read", {"path": "read-me.txt"})["id"]
    write = propose(alice, "file.write", {"path": "later.txt", "content": "x"})["id"]
    assert read in listed(alice, status="executed") and read not in listed(alice,
                                                                              status="pending")
    first = alice.get("/v1/actions", params={"limit": 1}).json()
    assert [a["id"] for a in first["actions"]] == [write]
    second = alice.get("/v1/actions", params={"limit": 1, "cursor": first["next_cursor"]})
    assert [a["id"] for a in second.json()["actions"]] == [read]
    for bad in ({"status": "pending_review"}, {"cursor": "x'--"}, {"limit": 0}):
        refused = alice.get("/v1/actions", params=bad)
        assert (refused.status_code, refused.json()["code"]) == (400, "INVALID_ARGUMENT"), bad


def test_an_action_shows_the_canonical_plan_its_hash_binds(people: dict[str, httpx.Client]
                                                           ) -> None:
    made = propose(people["alice"], "file.write", {"path": "p.txt", "content": "ünï"})
    shown = people["approver"].get(f"/v1/actions/{made['id']}").json()
    assert hashlib.sha256(shown["canonical_plan"].encode()).hexdigest() == shown["plan_hash"]
    assert json.loads(shown["canonical_plan"]) == {"tool": "file.write",
                                                   "args": {"path": "p.txt", "content": "ünï"}}
    assert (shown["origin"], shown["turn_id"], shown["untrusted_sources"]) == ("user", None, [])
    assert shown["key_id"] == people["alice"].get("/v1/whoami").json()["key_id"]


def test_a_pending_write_previews_its_diff_and_a_command_its_argv(
        stack: FreshStack, people: dict[str, httpx.Client]) -> None:
    (stack.home.workspace / "todo.txt").write_text("milk\neggs\n")
    write = propose(people["alice"], "file.write", {"path": "todo.txt",
                                                    "content": "milk\nbread\n"})
    diff = people["approver"].get(f"/v1/actions/{write['id']}/preview").json()
    assert diff["kind"] == "diff" and "-eggs\n+bread\n" in diff["diff"]
    assert (stack.home.workspace / "todo.txt").read_text() == "milk\neggs\n"
    command = propose(people["alice"], "shell.run", {"argv": ["rm", "todo.txt"]})
    shown = people["alice"].get(f"/v1/actions/{command['id']}/preview").json()
    assert (shown["kind"], shown["argv"], shown["cwd"]) == ("command", ["rm", "todo.txt"], ".")
    read = propose(people["alice"], "file.read", {"path": "todo.txt"})
    assert people["alice"].get(f"/v1/actions/{read['id']}/preview").json()["kind"] == "none"
    other = people["bob"].get(f"/v1/actions/{write['id']}/preview")
    assert other.status_code == 404


def test_the_audit_log_is_read_with_its_chain_verified(people: dict[str, httpx.Client]) -> None:
    propose(people["alice"], "file.write", {"path": "audited.txt", "content": "x"})
    page = people["approver"].get("/v1/audit", params={"limit": 5}).json()
    assert page["chain"]["ok"] is True and page["chain"]["records"] >= 1
    seqs = [r["seq"] for r in page["records"]]
    assert seqs == sorted(seqs, reverse=True)
    assert page["records"][0]["kind"] == "pending"
    refused = people["alice"].get("/v1/audit")
    assert (refused.status_code, refused.json()["code"]) == (403, "FORBIDDEN")


def test_a_memory_is_forgotten_by_its_owner_only(people: dict[str, httpx.Client]) -> None:
    alice, bob = people["alice"], people["bob"]
    memory = alice.post("/v1/memory", json={"content": "my bike lock code is 8081"}).json()
    assert bob.delete(f"/v1/memory/{memory['id']}").status_code == 404
    assert alice.get(f"/v1/memory/{memory['id']}").status_code == 200
    forgotten = alice.delete(f"/v1/memory/{memory['id']}")
    assert forgotten.json() == {"id": memory["id"], "deleted": True}
    assert alice.get(f"/v1/memory/{memory['id']}").status_code == 404
    found = alice.get("/v1/memory/search", params={"q": "bike lock code"}).json()["results"]
    assert memory["id"] not in [r["id"] for r in found]
    again = alice.delete(f"/v1/memory/{memory['id']}")
    assert (again.status_code, again.json()["code"]) == (404, "NOT_FOUND")


def test_the_system_page_reads_what_sonia_status_reads(people: dict[str, httpx.Client]) -> None:
    system = people["approver"].get("/v1/system").json()
    services = {s["name"]: s for s in system["services"]}
    assert set(services) == {"gateway", "router", "memory", "voice", "openclaw", "eva"}
    for service in services.values():
        assert service["ready"] is True, service
        assert service["pid"] and service["uss_bytes"] and service["uptime_s"] is not None
        assert service["restarts"] == 0
    assert system["sandbox"]["level"] in ("bwrap", "rlimits", "unavailable")
    assert system["model"]["default_profile"] == "default"
    assert system["audit"]["ok"] is True and system["supervisor"]["running"] is True
    assert people["alice"].get("/v1/system").status_code == 403


def events(answer: httpx.Response) -> list[dict[str, Any]]:
    assert answer.headers["content-type"].startswith("text/event-stream")
    return [json.loads(line[5:]) for line in answer.text.splitlines()
            if line.startswith("data:")]


def test_a_streamed_chat_turn_says_what_it_recalled_and_who_answered(
        people: dict[str, httpx.Client]) -> None:
    alice = people["alice"]
    alice.post("/v1/chat", json={"message": "my favourite river is the Danube"})
    told = events(alice.post("/v1/chat/stream",
                             json={"message": "which river is my favourite?"}))
    kinds = [e["type"] for e in told]
    assert kinds[0] == "start" and kinds[-1] == "final" and "delta" in kinds
    assert any("Danube" in r["content"] for r in told[0]["recalled"])
    final = told[-1]
    assert "".join(e["text"] for e in told if e["type"] == "delta") == final["reply"]
    assert (final["provider"], final["status"]) == ("builtin", "completed")
    assert final["agent_turn_id"] == told[0]["agent_turn_id"]


def test_a_streamed_turn_shows_a_tool_call_waiting_for_approval(
        people: dict[str, httpx.Client]) -> None:
    told = events(people["alice"].post("/v1/chat/stream",
                                       json={"message": "write streamed to stream.txt"}))
    steps = [e for e in told if e["type"] == "step" and e["kind"] == "tool_call"]
    assert [(s["tool"], s["status"]) for s in steps] == [("file.write", "pending_approval")]
    final = told[-1]
    assert final["status"] == "pending_approval"
    assert final["pending_approval"]["action_id"] == steps[0]["action_id"]


def test_a_turn_that_cannot_start_is_a_problem_not_a_stream(
        people: dict[str, httpx.Client]) -> None:
    answer = people["alice"].post("/v1/chat/stream",
                                  json={"message": "hi", "session_id": "ses_nope"})
    assert (answer.status_code, answer.json()["code"]) == (404, "NOT_FOUND")
    assert answer.headers["content-type"] == "application/problem+json"


@pytest.fixture(scope="module")
def plain_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FreshStack]:
    """A stack whose chat offers the model no tools: replies stream from the model."""
    with FreshStack(tmp_path_factory.mktemp("plain"),
                    config={"gateway": {"agent_tools": False}}) as made:
        made.up()
        yield made


def test_without_tools_the_reply_streams_from_the_model(plain_stack: FreshStack) -> None:
    with client(plain_stack, plain_stack.user_key) as alice:
        told = events(alice.post("/v1/chat/stream",
                                 json={"message": "please tell me a few words back"}))
    deltas = [e["text"] for e in told if e["type"] == "delta"]
    assert told[0]["type"] == "start" and "agent_turn_id" not in told[0]
    assert len(deltas) > 1 and "".join(deltas) == told[-1]["reply"]
    assert told[-1]["provider"] == "builtin" and told[-1]["turn_id"]


