"""Chat through the gateway: recall, generate, store; memory routes; the OpenAI-compatible API."""

from __future__ import annotations

import httpx
import openai
import pytest
from conversation_helpers import log_lines

from sonia.kit.deadline import wait_until
from sonia.testing import FreshStack

pytestmark = pytest.mark.integration


def new_session(gateway: httpx.Client) -> str:
    response = gateway.post("/v1/sessions", json={"mode": "text"})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_a_fact_told_in_one_session_is_recalled_and_used_in_another(
    gateway: httpx.Client,
) -> None:
    first, second = new_session(gateway), new_session(gateway)
    told = gateway.post("/v1/chat", json={"message": "My sister lives in Lisbon.",
                                          "session_id": first})
    assert told.status_code == 200, told.text
    body = told.json()
    assert body["session_id"] == first and body["turn_id"].startswith("turn_")
    assert [m["content"] for m in body["memory"]["stored"]] == ["My sister lives in Lisbon"]
    assert body["memory"]["stored"][0]["kind"] == "fact"

    asked = gateway.post("/v1/chat", json={"message": "Where does my sister live?",
                                           "session_id": second}).json()
    assert asked["session_id"] == second
    assert "Lisbon" in asked["reply"]
    assert any("Lisbon" in m["content"] for m in asked["memory"]["recalled"])
    assert asked["memory"]["stored"] == [], "a question is not a fact"
    assert asked["model"] == "sonia-builtin" and asked["usage"]["completion_tokens"] > 0


def test_a_session_keeps_its_own_turns(gateway: httpx.Client, stack: FreshStack) -> None:
    session_id = new_session(gateway)
    for message in ("hello", "What can you do?"):
        assert gateway.post("/v1/chat", json={"message": message,
                                              "session_id": session_id}).status_code == 200
    turns = httpx.get(stack.url("memory") + f"/v1/sessions/{session_id}/turns",
                      headers=stack.service_headers("gateway"), timeout=10).json()["turns"]
    assert [(t["turn_no"], t["role"]) for t in turns] == [
        (1, "user"), (2, "assistant"), (3, "user"), (4, "assistant")]
    assert turns[2]["content"] == "What can you do?"


def test_a_chat_without_a_session_uses_the_keys_default_session(gateway: httpx.Client) -> None:
    first = gateway.post("/v1/chat", json={"message": "hi"}).json()["session_id"]
    again = gateway.post("/v1/chat", json={"message": "hi again"}).json()["session_id"]
    assert first == again
    assert gateway.get(f"/v1/sessions/{first}").json()["state"] == "active"


def test_repeating_a_fact_does_not_store_it_twice(gateway: httpx.Client) -> None:
    message = "My locker code is 4417."
    first = gateway.post("/v1/chat", json={"message": message}).json()["memory"]["stored"]
    second = gateway.post("/v1/chat", json={"message": message}).json()["memory"]["stored"]
    assert first[0]["new"] is True and second[0]["new"] is False
    assert first[0]["id"] == second[0]["id"]


def test_full_text_search_ranks_the_better_match_first(gateway: httpx.Client) -> None:
    # BM25 weighs a word by how rare it is; FTS5 floors that weight at 1e-6 when a
    # word is in half the rows or more, so the ledger needs rows without it whatever
    # ran before this test.
    for n in range(12):
        filler = {"content": f"unrelated note number {n} about the weather"}
        assert gateway.post("/v1/memory", json=filler).status_code == 201
    for content in ("the garden shed needs a new roof",
                    "quarterly zebrafish report: zebrafish tank cleaning and zebrafish feeding",
                    "buy milk",
                    "the zebrafish tank is in the lab"):
        assert gateway.post("/v1/memory", json={"content": content}).status_code == 201
    results = gateway.get("/v1/memory/search", params={"q": "zebrafish", "limit": 5}).json()[
        "results"]
    assert [r["content"] for r in results] == [
        "quarterly zebrafish report: zebrafish tank cleaning and zebrafish feeding",
        "the zebrafish tank is in the lab"]
    assert results[0]["score"] > results[1]["score"] > 0
    assert set(results[0]) == {"id", "kind", "content", "score", "created_at"}
    two_words = gateway.get("/v1/memory/search", params={"q": "zebrafish lab"}).json()["results"]
    assert two_words[0]["content"] == "the zebrafish tank is in the lab"


def test_an_archived_memory_is_kept_but_no_longer_recalled(gateway: httpx.Client) -> None:
    made = gateway.post("/v1/memory", json={"content": "the spare key is under the blue pot",
                                            "kind": "note"})
    assert made.status_code == 201
    memory_id = made.json()["id"]
    archived = gateway.post(f"/v1/memory/{memory_id}/archive").json()
    assert archived["archived_at"] is not None
    assert gateway.get(f"/v1/memory/{memory_id}").json()["content"].startswith("the spare key")
    found = gateway.get("/v1/memory/search", params={"q": "spare key blue pot"}).json()
    assert memory_id not in [r["id"] for r in found["results"]]


def test_the_openai_sdk_gets_a_reply(stack: FreshStack) -> None:
    client = openai.OpenAI(base_url=stack.url() + "/v1", api_key=stack.user_key, max_retries=0)
    assert "sonia" in [m.id for m in client.models.list()]
    client.chat.completions.create(
        model="sonia", messages=[{"role": "user", "content": "My dog is called Biscuit."}])
    completion = client.chat.completions.create(
        model="sonia", messages=[{"role": "user", "content": "What is my dog called?"}])
    assert completion.object == "chat.completion"
    assert "Biscuit" in (completion.choices[0].message.content or "")
    assert completion.usage is not None and completion.usage.total_tokens > 0


def test_the_openai_sdk_streams_a_reply(stack: FreshStack) -> None:
    client = openai.OpenAI(base_url=stack.url() + "/v1", api_key=stack.user_key, max_retries=0)
    client.chat.completions.create(
        model="builtin", messages=[{"role": "user", "content": "My bike is green."}])
    stream = client.chat.completions.create(
        model="sonia", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "What colour is my bike?"}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "green" in text
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_the_openai_api_refuses_what_it_cannot_serve(stack: FreshStack) -> None:
    client = openai.OpenAI(base_url=stack.url() + "/v1", api_key=stack.user_key, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="sonia", n=2,
                                       messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=stack.url() + "/v1", api_key="sk-wrong",
                      max_retries=0).models.list()


BAD_CHATS: dict[str, tuple[bytes, int, str]] = {
    "empty message": (b'{"message": ""}', 400, "INVALID_ARGUMENT"),
    "blank message": (b'{"message": "   \\n "}', 400, "INVALID_ARGUMENT"),
    "message over max_message_chars": (b'{"message": "' + b"a" * 40_000 + b'"}', 400,
                                       "INVALID_ARGUMENT"),
    "1 MB message": (b'{"message": "' + b"a" * 1_048_576 + b'"}', 413, "PAYLOAD_TOO_LARGE"),
    "message of the wrong type": (b'{"message": 42}', 400, "INVALID_ARGUMENT"),
    "message as a list": (b'{"message": ["hi"]}', 400, "INVALID_ARGUMENT"),
    "missing message": (b'{"session_id": "x"}', 400, "INVALID_ARGUMENT"),
    "unknown field": (b'{"message": "hi", "colour": "red"}', 400, "INVALID_ARGUMENT"),
    "invalid JSON": (b'{"message": "hi"', 400, "INVALID_ARGUMENT"),
    "not an object": (b'["hi"]', 400, "INVALID_ARGUMENT"),
    "NUL in message": (b'{"message": "a\\u0000b"}', 400, "INVALID_ARGUMENT"),
    "unknown session": (b'{"message": "hi", "session_id": "ses_nope"}', 404, "NOT_FOUND"),
    "session id of the wrong type": (b'{"message": "hi", "session_id": 7}', 400,
                                     "INVALID_ARGUMENT"),
    "unknown profile": (b'{"message": "hi", "profile": "turbo"}', 400, "INVALID_ARGUMENT"),
}


@pytest.mark.parametrize("case", sorted(BAD_CHATS))
def test_bad_chat_input_is_a_4xx_problem(gateway: httpx.Client, case: str) -> None:
    body, status, code = BAD_CHATS[case]
    response = gateway.post("/v1/chat", content=body,
                            headers={"content-type": "application/json"})
    assert (response.status_code, response.json()["code"]) == (status, code), response.text
    assert response.headers["content-type"] == "application/problem+json"


BAD_REQUESTS: dict[str, tuple[str, str, dict[str, object], int]] = {
    "memory without content": ("POST", "/v1/memory", {"json": {}}, 400),
    "memory with empty content": ("POST", "/v1/memory", {"json": {"content": ""}}, 400),
    "memory with a bad kind": ("POST", "/v1/memory",
                               {"json": {"content": "x", "kind": "NOT A KIND"}}, 400),
    "memory content of the wrong type": ("POST", "/v1/memory", {"json": {"content": 1}}, 400),
    "search without a query": ("GET", "/v1/memory/search", {}, 400),
    "search with a limit that is not a number": ("GET", "/v1/memory/search",
                                                 {"params": {"q": "x", "limit": "many"}}, 400),
    "search with a limit too high": ("GET", "/v1/memory/search",
                                     {"params": {"q": "x", "limit": 100000}}, 400),
    "search with FTS syntax": ("GET", "/v1/memory/search",
                               {"params": {"q": 'NEAR("a" b) OR * AND -x: "'}}, 200),
    "unknown memory": ("GET", "/v1/memory/mem_000000", {}, 404),
    "malformed memory id": ("GET", "/v1/memory/a%20b", {}, 400),
    "completions without messages": ("POST", "/v1/chat/completions",
                                     {"json": {"model": "sonia", "messages": []}}, 400),
    "completions with a tool message": (
        "POST", "/v1/chat/completions",
        {"json": {"model": "sonia", "messages": [{"role": "tool", "content": "x"}]}}, 400),
    "completions with image content": (
        "POST", "/v1/chat/completions",
        {"json": {"model": "sonia", "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}},
        400),
    "completions with stream of the wrong type": (
        "POST", "/v1/chat/completions",
        {"json": {"model": "sonia", "stream": "yes",
                  "messages": [{"role": "user", "content": "x"}]}}, 400),
    "session with an unknown mode": ("POST", "/v1/sessions", {"json": {"mode": "video"}}, 400),
    "sessions filtered by an unknown state": ("GET", "/v1/sessions",
                                              {"params": {"state": "zombie"}}, 400),
    "stop of an unknown session": ("POST", "/v1/sessions/ses_nope/stop", {}, 404),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_input_on_other_routes_is_never_a_500(gateway: httpx.Client, case: str) -> None:
    method, path, kwargs, status = BAD_REQUESTS[case]
    response = gateway.request(method, path, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == status, response.text


def test_the_correlation_id_of_a_chat_reaches_gateway_memory_and_router_logs(
    gateway: httpx.Client, stack: FreshStack,
) -> None:
    cid = "chat-trace-7f3a"
    response = gateway.post("/v1/chat", json={"message": "My train leaves at nine."},
                            headers={"X-Correlation-ID": cid})
    assert response.headers["x-correlation-id"] == cid

    def routes_logged(service: str) -> set[str]:
        return {str(line.get("route")) for line in log_lines(stack.home.log_file(service))
                if line.get("correlation_id") == cid}

    expected = {
        "gateway": {"/v1/chat"},
        "memory": {"/v1/sessions/{session_id}/context", "/v1/sessions/{session_id}/exchanges"},
        "router": {"/v1/generate/tools/stream"},  # Sonia's tools are offered (agent)
    }
    for service, routes in expected.items():
        wait_until(lambda: routes <= routes_logged(service), timeout=10,  # noqa: B023
                   what=f"{service} log lines of {cid}")
    turns = httpx.get(stack.url("memory") + f"/v1/sessions/{response.json()['session_id']}/turns",
                      headers=stack.service_headers("gateway")).json()["turns"]
    assert turns[-1]["metadata"]["correlation_id"] == cid
