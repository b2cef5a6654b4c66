"""The internal client never leaves its circuit stuck: a cancelled call frees the trial."""

from __future__ import annotations

import asyncio
import socket

import pytest

from sonia.errors import Unavailable
from sonia.kit.client import ServiceClient


def test_a_cancelled_trial_call_does_not_hold_the_circuit_open() -> None:
    async def scenario() -> None:
        with socket.socket() as server:  # accepts connections, never answers
            server.bind(("127.0.0.1", 0))
            server.listen(8)
            port = server.getsockname()[1]
            client = ServiceClient("t" * 43, "memory", f"http://127.0.0.1:{port}")
            breaker = client.breaker
            breaker.threshold, breaker.cooldown = 1, 0.0
            breaker.failed()  # open; with no cooldown the next call is the half-open trial
            call = asyncio.create_task(client.request("POST", "/v1/memories", json_body={}))
            await asyncio.sleep(0)  # let the trial start
            while not breaker.trial_in_flight:
                await asyncio.sleep(0.01)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            assert not breaker.trial_in_flight, "the next caller may try again"
            await client.aclose()

    asyncio.run(scenario())


def test_a_refused_connection_counts_as_a_failure() -> None:
    async def scenario() -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        client = ServiceClient("t" * 43, "memory", f"http://127.0.0.1:{port}")
        with pytest.raises(Unavailable):
            await client.request("POST", "/v1/memories", json_body={})
        assert client.breaker.failures == 1
        await client.aclose()

    asyncio.run(scenario())
