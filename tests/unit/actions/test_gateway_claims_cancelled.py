"""A request holding an idempotency key's claim on PostgreSQL that is cancelled (a
shutdown whose grace ran out under it) gives the key back, as a 5xx does: the retry
works at once instead of waiting for the claim and answering 503 for ten minutes.

EVA and OpenClaw are stand-ins here (the claim path is the gateway's own logic); the
database is a real PostgreSQL server, as replicas share it."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from backends import Backend

from sonia.home import ApiKey
from sonia.services.gateway.actions_api import Actions, NewAction
from sonia.services.gateway.state import MIGRATIONS, PG_MIGRATIONS

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)

KEY = ApiKey("k1", "user", 0.0)
BODY = NewAction(tool="file.list", args={"path": "."}, idempotency_key="idem-1")


class Eva:
    """Decides `allow` at once, or, when `held`, says it was asked and never answers."""

    def __init__(self, held: bool = False) -> None:
        self.held = held
        self.asked = asyncio.Event()
        self.calls = 0

    async def request(self, method: str, path: str, **_: Any) -> Any:
        self.calls += 1
        self.asked.set()
        if self.held:
            await asyncio.Event().wait()
        return {"action_id": f"act_{self.calls:024x}", "decision": "allow", "grant": "g"}


class Claw:
    async def request(self, method: str, path: str, **_: Any) -> Any:
        return {"result": {"entries": []}}


def gateway(db: Any, eva: Eva) -> Any:
    settings = SimpleNamespace(
        openclaw=SimpleNamespace(shell_timeout_seconds=10.0),
        storage=SimpleNamespace(backend="postgresql"),
        gateway=SimpleNamespace(invalid_proposals_per_minute=100,
                                max_pending_actions_per_key=100, action_ttl_seconds=600))
    clients = {"eva": eva, "openclaw": Claw()}
    return SimpleNamespace(db=db, ctx=SimpleNamespace(
        settings=settings, client=lambda name: clients[name]))


def test_a_cancelled_request_gives_its_key_back(backend: Backend) -> None:
    db = backend.database("gateway", MIGRATIONS, PG_MIGRATIONS)
    db.open()
    try:
        async def scenario() -> dict[str, Any]:
            held = Eva(held=True)
            first = asyncio.create_task(Actions(gateway(db, held)).propose(KEY, BODY))
            await held.asked.wait()  # the claim is made and EVA is being asked
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            claims = await db.read(lambda c: c.execute(
                "SELECT COUNT(*) FROM action_requests").fetchone()[0])
            assert claims == 0, "the cancelled request's claim was given back"
            retry = Actions(gateway(db, Eva()))
            retry.claim_wait = 0.0  # a held key would answer 503 at once
            answer = await retry.propose(KEY, BODY)
            return {"status": answer.status_code, "body": answer.body}

        answered = asyncio.run(scenario())
        assert answered["status"] == 200 and answered["body"]["status"] == "executed"
    finally:
        db.close()
