"""Sessions: lifecycle, the concurrency cap, idle expiry, churn; none is ever left open.

These run against a stack of their own with a small cap (8) and a short idle
timeout (1.5 s), so the limits are reached quickly and expiry is observable.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from conversation_helpers import events_until, open_stream

from sonia.kit.deadline import wait_until
from sonia.testing import FreshStack

pytestmark = pytest.mark.integration

MAX_SESSIONS = 8
IDLE_SECONDS = 2.0


@pytest.fixture(scope="module")
def tight_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FreshStack]:
    with FreshStack(tmp_path_factory.mktemp("tight-home")) as s:
        config = s.home.config_file.read_text()
        config = config.replace("max_sessions = 64", f"max_sessions = {MAX_SESSIONS}")
        config = config.replace("session_idle_seconds = 900",
                                f"session_idle_seconds = {IDLE_SECONDS}")
        s.home.config_file.write_text(config)
        s.settings = s.home.check()
        assert s.settings.gateway.max_sessions == MAX_SESSIONS
        s.up()
        yield s


@pytest.fixture()
def client(tight_stack: FreshStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=tight_stack.url(), headers=tight_stack.user_headers(),
                      timeout=30) as c:
        yield c


def active(client: httpx.Client) -> int:
    return int(client.get("/v1/sessions").json()["counts"]["active"])


def test_a_session_starts_reads_and_stops(client: httpx.Client) -> None:
    started = client.post("/v1/sessions", json={"mode": "voice"})
    assert started.status_code == 201
    session = started.json()
    assert session["state"] == "active" and session["mode"] == "voice"
    assert session["id"].startswith("ses_") and session["expires_at"] > session["created_at"]
    assert client.get(f"/v1/sessions/{session['id']}").json()["id"] == session["id"]

    stopped = client.post(f"/v1/sessions/{session['id']}/stop")
    assert stopped.status_code == 200
    assert stopped.json()["state"] == "closed" and stopped.json()["expires_at"] is None
    assert client.post(f"/v1/sessions/{session['id']}/stop").json()["state"] == "closed"
    closed = client.get("/v1/sessions", params={"state": "closed"}).json()["sessions"]
    assert session["id"] in [s["id"] for s in closed]
    assert session["id"] not in [s["id"] for s in
                                 client.get("/v1/sessions", params={"state": "active"})
                                 .json()["sessions"]]


def test_a_session_without_a_body_is_a_text_session(client: httpx.Client) -> None:
    session = client.post("/v1/sessions").json()
    assert session["mode"] == "text"
    client.post(f"/v1/sessions/{session['id']}/stop")


def test_another_key_cannot_see_or_stop_a_session(client: httpx.Client,
                                                  tight_stack: FreshStack) -> None:
    session_id = client.post("/v1/sessions").json()["id"]
    other = tight_stack.approver_headers()
    url = tight_stack.url() + f"/v1/sessions/{session_id}"
    assert httpx.get(url, headers=other).status_code == 404
    assert httpx.post(url + "/stop", headers=other).status_code == 404
    assert httpx.post(tight_stack.url() + "/v1/chat", headers=other,
                      json={"message": "hi", "session_id": session_id}).status_code == 404
    assert client.get(f"/v1/sessions/{session_id}").json()["state"] == "active"
    client.post(f"/v1/sessions/{session_id}/stop")


def test_the_concurrency_cap_answers_429_and_holds_under_concurrent_starts(
    client: httpx.Client, tight_stack: FreshStack,
) -> None:
    def start(_: int) -> httpx.Response:
        return httpx.post(tight_stack.url() + "/v1/sessions", headers=tight_stack.user_headers(),
                          json={"mode": "text"}, timeout=30)

    before = active(client)
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(start, range(20)))
    started = [a.json()["id"] for a in answers if a.status_code == 201]
    refused = [a for a in answers if a.status_code != 201]
    try:
        assert active(client) <= MAX_SESSIONS
        assert len(started) >= MAX_SESSIONS - before, "every free slot was taken"
        # more only when a session started in the burst went idle (a slow machine)
        # and expired meanwhile, which frees its slot
        expired = [s for s in started
                   if client.get(f"/v1/sessions/{s}").json()["state"] == "expired"]
        assert len(started) - len(expired) <= MAX_SESSIONS - before
        assert all(a.status_code == 429 for a in refused)
        assert refused[0].json()["code"] == "RATE_LIMITED"
        assert refused[0].headers["retry-after"] == "1"
    finally:
        for session_id in started:
            client.post(f"/v1/sessions/{session_id}/stop")
    again = client.post("/v1/sessions")
    assert again.status_code == 201, "stopping frees the slots"
    client.post(f"/v1/sessions/{again.json()['id']}/stop")


def test_an_idle_session_expires_and_can_no_longer_chat(client: httpx.Client) -> None:
    session_id = client.post("/v1/sessions").json()["id"]
    assert client.post("/v1/chat", json={"message": "hi",
                                         "session_id": session_id}).status_code == 200
    expired = wait_until(
        lambda: (s := client.get(f"/v1/sessions/{session_id}").json())["state"] == "expired"
        and s, timeout=IDLE_SECONDS * 4, interval=0.2, what="session expired")
    assert expired["expires_at"] is None and expired["closed_at"] is not None
    chat = client.post("/v1/chat", json={"message": "hi", "session_id": session_id})
    assert (chat.status_code, chat.json()["code"]) == (404, "NOT_FOUND")


def test_an_idle_stream_ends_when_its_session_expires(tight_stack: FreshStack,
                                                      client: httpx.Client) -> None:
    session_id = client.post("/v1/sessions").json()["id"]
    with open_stream(tight_stack, session_id) as ws:
        ended = events_until(ws, "session.ended", timeout=IDLE_SECONDS * 6)[-1]
        assert ended["reason"] == "session expired"
    assert client.get(f"/v1/sessions/{session_id}").json()["state"] == "expired"


def test_a_busy_stream_keeps_its_session_alive(tight_stack: FreshStack,
                                               client: httpx.Client) -> None:
    session_id = client.post("/v1/sessions").json()["id"]
    with open_stream(tight_stack, session_id) as ws:
        start = time.monotonic()
        while time.monotonic() - start < IDLE_SECONDS * 2:  # time passing is what is tested
            ws.send(json.dumps({"type": "input.text", "text": "hello"}))
            events_until(ws, "response.final")
            time.sleep(IDLE_SECONDS / 5)
        assert client.get(f"/v1/sessions/{session_id}").json()["state"] == "active"
    client.post(f"/v1/sessions/{session_id}/stop")


def test_session_churn_leaves_no_session_open(client: httpx.Client) -> None:
    before = active(client)
    ids = []
    for _ in range(200):
        started = client.post("/v1/sessions", json={"mode": "text"})
        assert started.status_code == 201, started.text
        ids.append(started.json()["id"])
        assert client.post(f"/v1/sessions/{ids[-1]}/stop").json()["state"] == "closed"
    assert active(client) == before
    closed = {s["id"] for s in client.get("/v1/sessions", params={"state": "closed",
                                                                   "limit": 500})
              .json()["sessions"]}
    assert set(ids) <= closed
