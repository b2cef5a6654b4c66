"""Two whole stacks on one PostgreSQL database, both serving at once: the second home is
made by `sonia init --replica-of` from the first, so two gateways, two memory services,
two EVAs and two OpenClaws share the ledgers. What one gateway stores the other
recalls; an approval raced through both gateways has one winner and runs once; a
grant presented to both OpenClaws runs once; an idempotency key sent to both gateways
makes one action with one answer (docs/scale-out.md, "Replicas")."""

from __future__ import annotations

import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from backends import Backend

from sonia.kit import pg
from sonia.kit.deadline import wait_until
from sonia.kit.portable import PgConnection
from sonia.pgserver import PostgresServer
from sonia.services.gateway import actions
from sonia.testing import FreshStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROUNDS = 20
"""Rounds of each race at least; more until `RACED` of them really overlapped."""
RACED = 10
MAX_ROUNDS = 200
Pair = tuple[FreshStack, FreshStack]


@pytest.fixture(scope="module")
def database(postgres_server: PostgresServer) -> Iterator[Backend]:
    name = f"t_{secrets.token_hex(6)}"
    url = postgres_server.create_database(name)
    try:
        yield Backend.postgresql(url, postgres_server.password)
    finally:
        postgres_server.drop_database(name)


@pytest.fixture(scope="module")
def pair(database: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Home A, and home B made from it by the CLI as an operator would; both up."""
    root = tmp_path_factory.mktemp("replicas")
    with FreshStack(root / "a", config={"storage": {"url": database.url}}) as a:
        assert database.password is not None
        a.home.write_storage_password(database.password)
        with FreshStack(root / "b", replica_of=a) as b:
            a.up()
            b.up()
            yield a, b


OVERLAPPED: list[bool] = []
"""Per `at_once`: whether every request was sent before any had its answer."""


def at_once(*calls: Callable[[], httpx.Response]) -> list[httpx.Response]:
    """Send every request together: each thread waits at one barrier, then sends."""
    barrier = threading.Barrier(len(calls))

    def send(call: Callable[[], httpx.Response]) -> tuple[float, httpx.Response, float]:
        barrier.wait(timeout=30)
        sent = time.monotonic()
        answer = call()
        return sent, answer, time.monotonic()

    with ThreadPoolExecutor(len(calls)) as pool:
        timed = list(pool.map(send, calls))
    OVERLAPPED.append(max(t[0] for t in timed) < min(t[2] for t in timed))
    return [t[1] for t in timed]


class Races:
    """Round numbers for one race: at least `ROUNDS`, and on until `RACED` rounds had
    both requests in flight together (a loaded machine may serialise some), at most
    `MAX_ROUNDS`; `run` is how many there were. The race is then a fact of the run,
    asserted, not a matter of timing luck."""

    def __init__(self) -> None:
        self.run = 0
        self._first = len(OVERLAPPED)

    def raced(self) -> int:
        return sum(OVERLAPPED[self._first:])

    def __iter__(self) -> Iterator[int]:
        while self.run < MAX_ROUNDS and (self.run < ROUNDS or self.raced() < RACED):
            yield self.run
            self.run += 1


def poster(url: str, headers: dict[str, str],
           body: dict[str, Any] | None = None) -> Callable[[], httpx.Response]:
    """A POST to send later (`at_once`)."""
    return lambda: httpx.post(url, json=body, headers=headers, timeout=60)


def lines(stack: FreshStack, name: str) -> list[str]:
    path = stack.home.workspace / name
    return path.read_text().splitlines() if path.exists() else []


def key_id(key: str) -> str:
    return key.split("-")[2]


def test_the_replica_shares_the_database_and_secrets_and_keeps_its_own_files(
    pair: Pair,
) -> None:
    a, b = pair
    assert b.home.all_tokens() == a.home.all_tokens()
    assert b.home.grant_key_file.read_bytes() == a.home.grant_key_file.read_bytes()
    assert b.settings.storage.url == a.settings.storage.url
    assert b.settings.base_port != a.settings.base_port
    assert b.home.workspace != a.home.workspace and b.home.logs != a.home.logs
    for stack in (a, b):
        ready = httpx.get(stack.url() + "/readyz", timeout=30)
        assert ready.status_code == 200, ready.text
        for service in ("memory", "eva", "openclaw"):
            assert not stack.home.db_path(service).exists(), "its ledgers are the server's"


def test_a_memory_written_through_one_gateway_is_recalled_through_the_other(
    pair: Pair,
) -> None:
    a, b = pair
    noted = httpx.post(a.url() + "/v1/memory", headers=a.user_headers(), timeout=30,
                       json={"content": "the greenhouse key is under the blue pot",
                             "kind": "note"})
    assert noted.status_code == 201, noted.text
    found = httpx.get(b.url() + "/v1/memory/search", headers=b.user_headers(), timeout=30,
                      params={"q": "greenhouse key"}).json()["results"]
    assert [r["id"] for r in found][:1] == [noted.json()["id"]]

    told = httpx.post(a.url() + "/v1/chat", headers=a.user_headers(), timeout=30,
                      json={"message": "My locker code is 7312."})
    assert told.status_code == 200, told.text
    asked = httpx.post(b.url() + "/v1/chat", headers=b.user_headers(), timeout=30,
                       json={"message": "What is my locker code?"})
    assert asked.status_code == 200, asked.text
    assert "7312" in asked.json()["reply"]


def test_an_approval_raced_through_both_gateways_has_one_winner_and_runs_once(
    pair: Pair, database: Backend,
) -> None:
    a, b = pair
    winners: dict[str, str] = {}
    races = Races()
    with httpx.Client(timeout=60) as client:
        for round_ in races:
            proposed = client.post(a.url() + "/v1/actions", headers=a.user_headers(), json={
                "tool": "file.write",
                "args": {"path": "approved.txt", "content": f"round {round_}\n",
                         "mode": "append"}})
            assert proposed.status_code == 202, proposed.text
            action_id = proposed.json()["id"]
            answers = at_once(*(
                poster(f"{s.url()}/v1/actions/{action_id}/approve", s.approver_headers())
                for s in (a, b)))
            codes = sorted(r.status_code for r in answers)
            assert codes == [200, 409], [r.text for r in answers]
            lost = next(r for r in answers if r.status_code == 409)
            assert lost.json()["code"] == "ALREADY_DECIDED"
            winners[action_id] = "a" if answers[0].status_code == 200 else "b"

    assert races.raced() >= RACED, OVERLAPPED
    in_a, in_b = lines(a, "approved.txt"), lines(b, "approved.txt")
    assert sorted(in_a + in_b) == sorted(f"round {i}" for i in range(races.run)), \
        "each approved write ran exactly once, in the winning gateway's OpenClaw"
    assert len(in_a) == list(winners.values()).count("a")

    verified = subprocess.run(
        [sys.executable, "-m", "sonia", "audit", "verify", "--home", str(b.home.root)],
        capture_output=True, text=True, timeout=120)
    assert verified.returncode == 0, verified.stderr
    assert "audit chain intact" in verified.stdout
    with database.ledger() as ledger:
        for action_id in winners:
            kinds = ledger.execute("SELECT kind FROM eva.audit_log WHERE action_id = ? "
                                   "ORDER BY seq", (action_id,))
            assert [r["kind"] for r in kinds] == ["pending", "approved", "executed"], action_id
    for stack in (a, b):
        page = httpx.get(stack.url("eva") + "/v1/audit", timeout=60,
                         headers=stack.service_headers("gateway")).json()
        assert page["chain"]["ok"], page["chain"]


def test_a_grant_presented_to_both_openclaws_runs_once(pair: Pair) -> None:
    a, b = pair
    gateway = a.service_headers("gateway")
    user, approver = f"key:{key_id(a.user_key)}", f"key:{key_id(a.approver_key)}"
    races = Races()
    with httpx.Client(timeout=60, headers=gateway) as client:
        for round_ in races:
            args = {"path": "granted.txt", "content": f"grant {round_}\n", "mode": "append"}
            decided = client.post(a.url("eva") + "/v1/decisions", json={
                "tool": "file.write", "args": args, "principal": user})
            assert decided.status_code == 200, decided.text
            assert decided.json()["decision"] == "approval_required"
            approved = client.post(
                a.url("eva") + f"/v1/decisions/{decided.json()['action_id']}/approve",
                json={"approver": approver})
            assert approved.status_code == 200, approved.text
            body = {"tool": "file.write", "args": args, "grant": approved.json()["grant"]}
            answers = at_once(*(
                poster(s.url("openclaw") + "/v1/execute", gateway, body) for s in (a, b)))
            codes = sorted(r.status_code for r in answers)
            assert codes == [200, 401], [r.text for r in answers]
            refused = next(r for r in answers if r.status_code == 401)
            assert refused.json()["code"] == "INVALID_APPROVAL"
    assert races.raced() >= RACED, OVERLAPPED
    ran = lines(a, "granted.txt") + lines(b, "granted.txt")
    assert sorted(ran) == sorted(f"grant {i}" for i in range(races.run)), \
        "each grant ran exactly once across the two OpenClaws"


def test_an_idempotency_key_sent_to_both_gateways_at_once_makes_one_action(
    pair: Pair, database: Backend,
) -> None:
    a, b = pair
    races = Races()
    for round_ in races:
        body: dict[str, Any] = {
            "tool": "file.write", "idempotency_key": f"idem-{round_}",
            "args": {"path": f"idem-{round_}.txt", "content": "once\n"}}
        answers = at_once(*(
            poster(s.url() + "/v1/actions", s.user_headers(), body) for s in (a, b)))
        assert [r.status_code for r in answers] == [202, 202], [r.text for r in answers]
        assert answers[0].json() == answers[1].json(), "the same answer from both"
    assert races.raced() >= RACED, OVERLAPPED
    with database.ledger() as ledger:
        rows = ledger.execute("SELECT args FROM eva.decisions WHERE args LIKE ?",
                              ('%"idem-%',))
    assert len(rows) == races.run, "one action per idempotency key"


COUNT_ATTEMPTS = """
CREATE TABLE claim_attempts (n integer NOT NULL);
CREATE FUNCTION count_claim_attempt() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.idempotency_key = 'held-elsewhere' THEN
        INSERT INTO claim_attempts VALUES (1);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER count_claim_attempt BEFORE INSERT ON action_requests
    FOR EACH ROW EXECUTE FUNCTION count_claim_attempt();
"""
"""Counts the gateway's claims of one key: a BEFORE INSERT trigger fires for an
insert that then does nothing on conflict, so the test sees the gateway asking."""


def test_a_request_whose_key_is_held_elsewhere_waits_for_that_answer(
    pair: Pair, database: Backend,
) -> None:
    a, b = pair
    body: dict[str, Any] = {"tool": "file.write", "idempotency_key": "held-elsewhere",
                            "args": {"path": "held.txt", "content": "never\n"}}
    digest = actions.request_hash(body["tool"], body["args"], None)
    owner = key_id(a.user_key)
    assert database.password is not None
    raw = pg.connect(database.url, password=database.password, schema="gateway")
    conn = PgConnection(raw)
    try:
        raw.execute(COUNT_ATTEMPTS)
        claim = actions.claim_answer(conn, owner, "held-elsewhere", digest)
        assert isinstance(claim, actions.Claim), "the test holds the key, as a gateway would"
        with ThreadPoolExecutor(1) as pool:
            sent = pool.submit(poster(b.url() + "/v1/actions", b.user_headers(), body))
            wait_until(lambda: conn.execute(
                "SELECT count(*) FROM claim_attempts").fetchone()[0] >= 3, timeout=30,
                interval=0.01, what="gateway B asking for the key three times")
            assert not sent.done(), sent.result().text
            kept = actions.StoredAnswer(202, {"id": "act_made_elsewhere", "tool": "file.write",
                                              "status": "pending_approval"})
            assert actions.keep_answer(conn, owner, "held-elsewhere", claim, kept)
            answer = sent.result()
    finally:
        raw.execute("DROP TRIGGER count_claim_attempt ON action_requests;"
                    "DROP FUNCTION count_claim_attempt(); DROP TABLE claim_attempts")
        raw.close()
    assert (answer.status_code, answer.json()) == (202, kept.body), \
        "the answer of the request that held the key, not a second action"
    assert not (b.home.workspace / "held.txt").exists()


def test_a_replicas_gateway_refuses_to_revoke_a_key(pair: Pair) -> None:
    """Keys are revoked at the source home (its copy is replaced at every sync): the
    replica's gateway answers 403 and the key keeps working everywhere."""
    a, b = pair
    user = key_id(a.user_key)
    refused = httpx.post(f"{b.url()}/v1/keys/{user}/revoke", headers=b.approver_headers(),
                         timeout=30)
    assert (refused.status_code, refused.json()["code"]) == (403, "FORBIDDEN")
    assert "source home" in refused.json()["detail"]
    for stack in (a, b):
        assert httpx.get(f"{stack.url()}/v1/whoami", headers=a.user_headers(),
                         timeout=30).status_code == 200
