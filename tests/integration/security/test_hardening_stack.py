"""Issue 10, findings 4, 6 and 8, against a live stack with small per-key caps.

Each finding is judged by its effect: rows in the SQLite files (a memory still live,
no audit row added), modes on disk, a second key still served, /livez answering
while hostile bodies are in flight.
"""

from __future__ import annotations

import json
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from sonia.testing import FreshStack

pytestmark = pytest.mark.integration

CAPS = """max_sessions = 6
max_sessions_per_key = 2
max_streams_per_session = 2
max_pending_actions_per_key = 2
invalid_proposals_per_minute = 3"""


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FreshStack]:
    with FreshStack(tmp_path_factory.mktemp("capped-home")) as s:
        config = s.home.config_file.read_text()
        s.home.config_file.write_text(config.replace("max_sessions = 64", CAPS))
        s.settings = s.home.check()
        assert s.settings.gateway.max_sessions_per_key == 2
        s.up()
        yield s


@pytest.fixture()
def keys(capped: FreshStack) -> tuple[str, str]:
    """Two fresh user keys (A, B) for one test: budgets and caps start empty."""
    return capped.home.create_api_key("user"), capped.home.create_api_key("user")


def _client(stack: FreshStack, key: str) -> httpx.Client:
    return httpx.Client(base_url=stack.url(), timeout=30,
                        headers={"Authorization": f"Bearer {key}"})


def _rows(db: Path, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [tuple(r) for r in conn.execute(sql, args).fetchall()]
    finally:
        conn.close()


# finding 4 ---------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "body"), [
    ("/v1/chat", b'{"message": "hi \\ud800"}'),
    ("/v1/memory", b'{"content": "hi \\ud800"}'),
    ("/v1/actions", b'{"tool": "file.read", "args": {"path": "\\ud800"}}'),
    ("/v1/sessions", b'{"mode": "text\\udfff"}'),
    ("/v1/chat/completions",
     b'{"model": "default", "messages": [{"role": "user", "content": "\\ud800"}]}'),
])
def test_finding_4_surrogate_is_400_on_the_live_gateway(
    capped: FreshStack, keys: tuple[str, str], path: str, body: bytes,
) -> None:
    """Each body is valid for its route but for one lone surrogate, which the old code
    forwarded until httpx failed to encode it: 500 INTERNAL."""
    with _client(capped, keys[0]) as client:
        response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "INVALID_ARGUMENT"


def test_finding_4_livez_answers_while_big_bodies_in_flight(capped: FreshStack,
                                                           keys: tuple[str, str]) -> None:
    """Adversarial bodies (a 150 KB `sk-sk-...` run that once made the log redactor
    quadratic, plus a lone surrogate that once made a 500 whose log line held the body)
    are posted to three routes from three threads; meanwhile /livez must answer every
    probe within 5 s (a liveness check: the freeze this guards against lasted 31.8 s)."""
    hostile = "sk-" * 50_000  # 150 KB
    bodies = [
        ("/v1/actions", json.dumps({"tool": "file.write", "args": {
            "path": "hostile.txt", "content": hostile + "\ud800"}})),
        ("/v1/chat", json.dumps({"message": hostile[:30_000] + "\ud800"})),
        ("/v1/memory", json.dumps({"content": hostile[:30_000] + "\ud800"})),
    ]
    done = threading.Event()
    statuses: list[int] = []

    def flood(path: str, body: str) -> None:
        with _client(capped, keys[0]) as client:
            while not done.is_set():
                statuses.append(client.post(path, content=body.encode(),
                                            headers={"content-type": "application/json"}
                                            ).status_code)

    threads = [threading.Thread(target=flood, args=b, daemon=True) for b in bodies]
    for t in threads:
        t.start()
    worst = 0.0
    try:
        with httpx.Client(base_url=capped.url(), timeout=5) as probe:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline or len(statuses) < 6:
                sent = time.monotonic()
                assert probe.get("/livez").status_code == 200
                worst = max(worst, time.monotonic() - sent)
                if time.monotonic() > deadline + 60:
                    break
    finally:
        done.set()
        for t in threads:
            t.join(timeout=60)
    assert worst < 5.0, f"/livez took {worst:.1f} s"
    assert statuses and 500 not in statuses, sorted(set(statuses))
    log = (capped.home.logs / "gateway.log").read_text()
    assert "sk-sk-sk-sk-sk-sk-" not in log


# finding 5 ---------------------------------------------------------------------------

def test_finding_5_tool_output_of_sk_runs_does_not_stall_openclaw(
    capped: FreshStack, keys: tuple[str, str],
) -> None:
    """A tier-0 `file.read` of a 120 KB `sk-sk-...` file (its output is redacted before
    it leaves OpenClaw) once took 20.5 s and blocked OpenClaw's /livez. Now the read
    answers, and OpenClaw's /livez answers within 5 s all the while."""
    (capped.home.workspace / "sk-run.txt").write_text("sk-" * 40_000)
    answer: list[httpx.Response] = []

    def read() -> None:
        with _client(capped, keys[0]) as client:
            answer.append(client.post("/v1/actions", json={
                "tool": "file.read", "args": {"path": "sk-run.txt"}}))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    with httpx.Client(base_url=capped.url("openclaw"), timeout=5) as probe:
        while reader.is_alive():
            assert probe.get("/livez").status_code == 200
            reader.join(timeout=0.05)
    assert answer and answer[0].status_code == 200, answer[0].text if answer else None
    assert answer[0].json()["result"]["content"].startswith("sk-sk-")


# finding 6 ---------------------------------------------------------------------------

def test_finding_6_one_key_cannot_take_every_session(capped: FreshStack,
                                                     keys: tuple[str, str]) -> None:
    """Key A floods session starts: it holds two (its cap), each refusal is 429 with
    Retry-After; key B still gets a session."""
    with _client(capped, keys[0]) as a, _client(capped, keys[1]) as b:
        answers = [a.post("/v1/sessions", json={"mode": "text"}) for _ in range(8)]
        refused = [r for r in answers if r.status_code == 429]
        assert len([r for r in answers if r.status_code == 201]) <= 2
        assert refused and all(r.headers.get("retry-after") for r in refused)
        assert a.get("/v1/sessions").json()["counts"]["active"] == 2
        started = b.post("/v1/sessions", json={"mode": "text"})
        assert started.status_code == 201, started.text
        session_id = started.json()["id"]
        assert _rows(capped.home.db_path("gateway"),
                     "SELECT owner FROM sessions WHERE id = ?", (session_id,))
        for s in a.get("/v1/sessions", params={"state": "active"}).json()["sessions"]:
            a.post(f"/v1/sessions/{s['id']}/stop")


def test_finding_6_streams_per_session_are_capped(capped: FreshStack,
                                                  keys: tuple[str, str]) -> None:
    other_key = keys[1]
    with _client(capped, other_key) as b:
        session_id = b.post("/v1/sessions", json={"mode": "text"}).json()["id"]
    url = capped.url().replace("http://", "ws://") + f"/v1/sessions/{session_id}/stream"
    headers = {"Authorization": f"Bearer {other_key}"}
    with connect(url, additional_headers=headers, proxy=None, open_timeout=10) as first, \
            connect(url, additional_headers=headers, proxy=None, open_timeout=10) as second:
        assert json.loads(first.recv(timeout=10))["type"] == "session.ready"
        assert json.loads(second.recv(timeout=10))["type"] == "session.ready"
        with pytest.raises(InvalidStatus) as refused:
            with connect(url, additional_headers=headers, proxy=None, open_timeout=10):
                pass
        assert refused.value.response.status_code == 429
    with _client(capped, other_key) as b:
        b.post(f"/v1/sessions/{session_id}/stop")


def test_finding_6_pending_actions_per_key(capped: FreshStack, keys: tuple[str, str]) -> None:
    """Key A's third tier-2 proposal waits on nobody: 429; key B's is still accepted."""
    def write(client: httpx.Client, n: int) -> httpx.Response:
        return client.post("/v1/actions", json={
            "tool": "file.write", "args": {"path": f"pending-{n}.txt", "content": "x"}})

    with _client(capped, keys[0]) as a, _client(capped, keys[1]) as b:
        assert [write(a, n).status_code for n in range(2)] == [202, 202]
        third = write(a, 3)
        assert third.status_code == 429 and third.headers.get("retry-after")
        assert write(b, 9).status_code == 202


def test_finding_6_refused_proposals_are_throttled_before_eva_audits(
    capped: FreshStack, keys: tuple[str, str],
) -> None:
    """Key A floods proposals EVA refuses: after three, the gateway answers 429 with
    Retry-After and EVA's audit log stops growing (counted in its SQLite file); key B's
    bad proposal still reaches EVA and is refused by it, not throttled."""
    eva_db = capped.home.db_path("eva")

    def audit_rows() -> int:
        count = _rows(eva_db, "SELECT count(*) FROM audit_log")[0][0]
        assert isinstance(count, int)
        return count

    bad = {"tool": "no.such.tool", "args": {}}
    with _client(capped, keys[0]) as a, _client(capped, keys[1]) as b:
        first = [a.post("/v1/actions", json=bad).status_code for _ in range(3)]
        assert all(400 <= s < 500 and s != 429 for s in first), first
        before = audit_rows()
        flood = [a.post("/v1/actions", json=bad) for _ in range(20)]
        assert {r.status_code for r in flood} == {429}
        assert all(int(r.headers["retry-after"]) >= 1 for r in flood)
        assert audit_rows() == before
        other = b.post("/v1/actions", json=bad)
        assert 400 <= other.status_code < 500 and other.status_code != 429


# finding 8 ---------------------------------------------------------------------------

def test_finding_8_memories_belong_to_their_key(capped: FreshStack,
                                               keys: tuple[str, str]) -> None:
    """Key B cannot find, read, recall or archive key A's memory; by effect, A's row is
    still live afterwards, and A itself still finds it."""
    secret = "zanzibar locker code 4417"
    with _client(capped, keys[0]) as a, _client(capped, keys[1]) as b:
        stored = a.post("/v1/memory", json={"content": f"my {secret}"})
        assert stored.status_code == 201, stored.text
        memory_id = stored.json()["id"]
        assert b.get("/v1/memory/search", params={"q": "zanzibar locker"}).json()[
            "results"] == []
        assert b.get(f"/v1/memory/{memory_id}").status_code == 404
        assert b.post(f"/v1/memory/{memory_id}/archive").status_code == 404
        chat = b.post("/v1/chat", json={"message": "what is my zanzibar locker code?"})
        assert chat.status_code == 200, chat.text
        assert memory_id not in {m["id"] for m in chat.json()["memory"]["recalled"]}
        assert "4417" not in chat.json()["reply"]
        found = a.get("/v1/memory/search", params={"q": "zanzibar locker"}).json()["results"]
        assert [m["id"] for m in found] == [memory_id]
    row = _rows(capped.home.db_path("memory"),
                "SELECT archived_at, owner FROM memories WHERE id = ?", (memory_id,))
    assert row and row[0][0] is None and row[0][1] != "legacy"


def test_finding_8_data_and_logs_are_private(capped: FreshStack) -> None:
    """data/ and logs/ are 0700; every file in them (SQLite with -wal/-shm, logs) 0600."""
    home = capped.home
    seen = []
    for folder in (home.data, home.logs):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder.name
        for path in folder.iterdir():
            if path.is_file():
                seen.append(path.name)
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    assert {"gateway.db", "memory.db", "gateway.log"} <= set(seen)
    assert any(name.endswith("-wal") for name in seen)
