"""Sonia's tools in WebSocket sessions: the voice service's replies are agent turns.

A typed utterance on a session's stream goes voice -> gateway
(`/internal/v1/turns`) -> the agent, exactly as `/v1/chat`: the builtin model's
tool grammar proposes each call to EVA. A read runs in the turn; a write
pauses it, the stream says `response.pending_approval` and nothing is on disk;
when an approver approves through the gateway, the turn resumes and the open
stream gets `turn.resumed` with the reply, and the file is there. The voice
service never reaches EVA or OpenClaw itself, and the gateway takes the
session's owner from its own table, not from the caller.
"""

from __future__ import annotations

import json

import httpx
import pytest
from conversation_helpers import events_until, next_event, open_stream
from test_conversation_voice import say, start_session

from sonia.testing import FreshStack

pytestmark = pytest.mark.integration


def test_a_read_on_the_stream_runs_in_an_agent_turn(stack: FreshStack) -> None:
    (stack.home.workspace / "stream-notes.txt").write_text("feed the cat\n")
    session_id = start_session(stack)
    with open_stream(stack, session_id) as ws:
        say(ws, "read stream-notes.txt")
        final = events_until(ws, "response.final", timeout=30)[-1]
    assert "feed the cat" in final["text"]
    assert final["status"] == "completed" and final["provider"] == "builtin"
    record = httpx.get(f"{stack.url()}/v1/turns/{final['agent_turn_id']}",
                       headers=stack.user_headers(), timeout=10).json()
    calls = [s for s in record["steps"] if s["kind"] == "tool_call"]
    assert [(c["tool"], c["status"]) for c in calls] == [("file.read", "executed")]
    assert record["session_id"] == session_id


def test_a_write_on_the_stream_waits_for_an_approver_and_the_stream_hears_it_resume(
        stack: FreshStack) -> None:
    target = stack.home.workspace / "from-the-stream.txt"
    session_id = start_session(stack)
    with open_stream(stack, session_id) as ws:
        say(ws, "write hello from the stream to from-the-stream.txt")
        events = events_until(ws, "response.final", timeout=30)
        pending = [e for e in events if e["type"] == "response.pending_approval"]
        assert len(pending) == 1, events
        asked = pending[0]
        assert asked["tool"] == "file.write"
        assert asked["args"] == {"path": "from-the-stream.txt", "content": "hello from the stream"}
        assert asked["plan_hash"] and asked["action_id"].startswith("act_")
        final = events[-1]
        assert final["status"] == "pending_approval"
        assert final["pending_approval"]["action_id"] == asked["action_id"]
        assert not target.exists(), "nothing runs before a person approves"

        approved = httpx.post(f"{stack.url()}/v1/actions/{asked['action_id']}/approve",
                              headers=stack.approver_headers(), timeout=30)
        assert approved.status_code == 200, approved.text
        resumed = events_until(ws, "turn.resumed", timeout=30)[-1]
    assert resumed["agent_turn_id"] == final["agent_turn_id"]
    assert resumed["decision"] == "executed" and resumed["status"] == "completed"
    assert target.read_text() == "hello from the stream"


def test_a_denied_write_is_told_to_the_stream_and_nothing_is_written(
        stack: FreshStack) -> None:
    target = stack.home.workspace / "denied-on-stream.txt"
    session_id = start_session(stack)
    with open_stream(stack, session_id) as ws:
        say(ws, "write nope to denied-on-stream.txt")
        asked = next(e for e in events_until(ws, "response.final", timeout=30)
                     if e["type"] == "response.pending_approval")
        denied = httpx.post(f"{stack.url()}/v1/actions/{asked['action_id']}/deny",
                            headers=stack.approver_headers(), timeout=30)
        assert denied.status_code == 200, denied.text
        resumed = events_until(ws, "turn.resumed", timeout=30)[-1]
    assert resumed["decision"] == "denied" and resumed["status"] == "completed"
    assert not target.exists()


def test_only_the_voice_service_may_ask_for_a_turn_and_the_owner_is_the_sessions(
        stack: FreshStack) -> None:
    session_id = start_session(stack)
    url = f"{stack.url()}/internal/v1/turns"
    body = {"session_id": session_id, "text": "hello there"}
    as_user = httpx.post(url, json=body, headers=stack.user_headers(), timeout=10)
    assert as_user.status_code == 401, "a user key is not a service token"
    as_memory = httpx.post(url, json=body, headers=stack.service_headers("memory"), timeout=10)
    assert as_memory.status_code == 403, as_memory.text
    unknown = httpx.post(url, json={**body, "session_id": "no-such-session"},
                         headers=stack.service_headers("voice"), timeout=10)
    assert unknown.status_code == 404, unknown.text
    answered = httpx.post(url, json=body, headers=stack.service_headers("voice"), timeout=30)
    assert answered.status_code == 200, answered.text
    events = [json.loads(line[5:]) for line in answered.text.splitlines()
              if line.startswith("data:")]
    assert events[-1]["type"] == "final", events
    assert "delta" in {e["type"] for e in events}, "the words stream before the final"
    record = httpx.get(f"{stack.url()}/v1/turns/{events[-1]['answer']['agent_turn_id']}",
                       headers=stack.user_headers(), timeout=10)
    assert record.status_code == 200, "the turn is the session owner's, readable with its key"


def test_an_unrelated_stream_event_order_is_kept(stack: FreshStack) -> None:
    """A plain utterance still streams as before: state, transcript, delta, final, idle."""
    session_id = start_session(stack)
    with open_stream(stack, session_id) as ws:
        say(ws, "My kite is called Zephyr.")
        events = events_until(ws, "response.final", timeout=30)
        kinds = [e["type"] for e in events]
        assert kinds.index("transcript") < kinds.index("response.delta") < len(kinds) - 1
        assert "Zephyr" in events[-1]["text"]
        assert next_event(ws)["state"] == "idle"
