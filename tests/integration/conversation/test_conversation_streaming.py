"""Stopping a reply in flight: an interrupt, a stop, or a client that goes away reaches the model.

These run against a stack whose default profile asks a slow model server first
(one word every 50 ms), so a reply is reliably still being made when it is
stopped, and the server can tell when its stream lost its reader.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
from conversation_helpers import SlowModelServer, events_until, open_stream

from sonia.kit.deadline import wait_until
from sonia.testing import FreshStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def start_session(stack: FreshStack) -> str:
    response = httpx.post(stack.url() + "/v1/sessions", json={"mode": "text"}, timeout=10,
                          headers=stack.user_headers())
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def say(ws: object, text: str) -> None:
    ws.send(json.dumps({"type": "input.text", "text": text}))  # type: ignore[attr-defined]


def test_an_interrupt_stops_the_reply_within_200_ms(slow_stack: FreshStack,
                                                    slow_model: SlowModelServer) -> None:
    session_id = start_session(slow_stack)
    abandoned_before = slow_model.abandoned
    with open_stream(slow_stack, session_id) as ws:
        say(ws, "Tell me a long story.")
        events = events_until(ws, "response.delta", timeout=15)
        assert any(e.get("state") == "speaking" for e in events)
        events_until(ws, "response.delta")
        sent = time.monotonic()
        ws.send(json.dumps({"type": "control.interrupt"}))
        final = events_until(ws, "response.final", timeout=5)
        elapsed = time.monotonic() - sent
        assert final[-1]["interrupted"] is True
        assert final[-1]["text"].startswith("word0 word1")
        assert elapsed < 0.2, f"interrupt took {elapsed * 1000:.0f} ms"
        states = [e["state"] for e in final if e["type"] == "state"]
        assert states[-1] == "interrupted"
        assert events_until(ws, "state")[-1]["state"] == "idle"
        # the cancellation travels to the model server: its stream loses its reader
        wait_until(lambda: slow_model.abandoned > abandoned_before, timeout=5,
                   what="model server stream abandoned")
        # and the session carries on
        say(ws, "hello again")
        assert events_until(ws, "response.delta", timeout=15)[-1]["text"] == "word0 "
        stopped = httpx.post(slow_stack.url() + f"/v1/sessions/{session_id}/stop",
                             headers=slow_stack.user_headers(), timeout=10)
        assert stopped.json()["state"] == "closed"
        assert events_until(ws, "session.ended", timeout=5)[-1]["reason"] == "session stopped"

    def turns() -> list[dict[str, object]]:
        answer = httpx.get(slow_stack.url("memory") + f"/v1/sessions/{session_id}/turns",
                           headers=slow_stack.service_headers("gateway"), timeout=10)
        return list(answer.json()["turns"])

    stored = wait_until(lambda: t if len(t := turns()) == 4 else None, timeout=5,
                        what="both interrupted exchanges stored")
    assert [t["role"] for t in stored] == ["user", "assistant", "user", "assistant"]
    assert stored[1]["metadata"]["interrupted"] is True  # type: ignore[index]
    assert str(stored[1]["content"]).startswith("word0 word1")


def test_a_client_that_goes_away_cancels_the_model_call(slow_stack: FreshStack,
                                                       slow_model: SlowModelServer) -> None:
    abandoned_before = slow_model.abandoned
    with httpx.Client(base_url=slow_stack.url(), headers=slow_stack.user_headers(),
                      timeout=30) as client:
        with client.stream("POST", "/v1/chat/completions",
                           json={"model": "sonia", "stream": True,
                                 "messages": [{"role": "user", "content": "go on"}]}) as stream:
            assert stream.status_code == 200
            lines = stream.iter_lines()
            first = next(line for line in lines if '"content":"word0 "' in line)
            assert first.startswith("data: ")
        # leaving the block closes the connection mid-stream
    wait_until(lambda: slow_model.abandoned > abandoned_before, timeout=5,
               what="model server stream abandoned")
