"""Realtime sessions over the gateway's WebSocket, relayed to the voice service."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest
from conversation_helpers import (
    events_until,
    next_event,
    open_stream,
    refused_status,
)
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from sonia.kit.deadline import wait_until
from sonia.testing import FreshStack

pytestmark = pytest.mark.integration


def start_session(stack: FreshStack, mode: str = "text", key: str | None = None) -> str:
    response = httpx.post(stack.url() + "/v1/sessions", json={"mode": mode}, timeout=10,
                          headers={"Authorization": f"Bearer {key or stack.user_key}"})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def say(ws: object, text: str) -> None:
    ws.send(json.dumps({"type": "input.text", "text": text}))  # type: ignore[attr-defined]


def test_a_text_turn_streams_the_reply_and_stores_it(stack: FreshStack) -> None:
    session_id = start_session(stack)
    with open_stream(stack, session_id) as ws:
        say(ws, "My boat is called Wanderer.")
        events = events_until(ws, "response.final")
        kinds = [e["type"] for e in events]
        assert kinds[0] == "state" and events[0]["state"] == "listening"
        assert "transcript" in kinds and "response.delta" in kinds
        states = [e["state"] for e in events if e["type"] == "state"]
        assert states[:3] == ["listening", "thinking", "speaking"]
        final = events[-1]
        assert final["interrupted"] is False
        assert final["text"] == "".join(e["text"] for e in events if e["type"] == "response.delta")
        assert "Wanderer" in final["text"]
        assert events_until(ws, "state")[-1]["state"] == "idle"

    chat = httpx.post(stack.url() + "/v1/chat", headers=stack.user_headers(), timeout=30,
                      json={"message": "What is my boat called?"})
    assert "Wanderer" in chat.json()["reply"], "the voice turn's fact is remembered"


def test_no_stream_is_compressed_even_when_the_client_offers_it(stack: FreshStack) -> None:
    """permessage-deflate keeps zlib state per connection (and it outlived the
    connection: voice's memory rose in a soak's session churn); neither the gateway
    nor the voice service accepts it. The websockets client offers it by default."""
    session_id = start_session(stack)
    with open_stream(stack, session_id) as ws:
        assert ws.request is not None and ws.response is not None
        assert "permessage-deflate" in ws.request.headers["Sec-WebSocket-Extensions"]
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
    voice = stack.url("voice").replace("http://", "ws://") + f"/v1/sessions/{session_id}/stream"
    with connect(voice + "?mode=text&owner=k", proxy=None, open_timeout=10,
                 additional_headers=stack.service_headers("gateway")) as direct:
        assert direct.request is not None and direct.response is not None
        assert "permessage-deflate" in direct.request.headers["Sec-WebSocket-Extensions"]
        assert "Sec-WebSocket-Extensions" not in direct.response.headers


def test_stop_ends_the_stream_and_the_session(stack: FreshStack) -> None:
    session_id = start_session(stack)
    with open_stream(stack, session_id) as ws:
        stopped = httpx.post(stack.url() + f"/v1/sessions/{session_id}/stop",
                             headers=stack.user_headers(), timeout=10)
        assert stopped.json()["state"] == "closed"
        ended = events_until(ws, "session.ended", timeout=5)[-1]
        assert ended["reason"] == "session stopped"
        with pytest.raises(ConnectionClosed):
            next_event(ws, timeout=5)
        assert ws.close_code == 1000
    status = httpx.get(stack.url("voice") + "/v1/status", headers=stack.service_headers("gateway"))
    wait_until(lambda: httpx.get(stack.url("voice") + "/v1/status",
                                 headers=stack.service_headers("gateway")).json()["sessions"] == 0,
               timeout=5, what="voice session torn down")
    assert status.status_code == 200


def test_control_end_says_goodbye_and_closes(stack: FreshStack) -> None:
    session_id = start_session(stack)
    with open_stream(stack, session_id) as ws:
        ws.send(json.dumps({"type": "control.end"}))
        assert events_until(ws, "session.ended", timeout=5)[-1]["reason"] == "control.end"


def test_a_bad_event_answers_an_error_and_the_session_goes_on(stack: FreshStack) -> None:
    session_id = start_session(stack)
    with open_stream(stack, session_id) as ws:
        ws.send("not json")
        assert next_event(ws)["code"] == "INVALID_ARGUMENT"
        ws.send(json.dumps({"type": "input.text", "text": ""}))
        assert next_event(ws)["code"] == "INVALID_ARGUMENT"
        ws.send(json.dumps({"type": "teleport"}))
        assert next_event(ws)["code"] == "INVALID_ARGUMENT"
        say(ws, "hello")
        assert events_until(ws, "response.final")[-1]["interrupted"] is False


@pytest.mark.parametrize("case", ["no key", "wrong key", "unknown session", "closed session",
                                  "another key's session"])
def test_the_handshake_is_refused_with_a_problem(stack: FreshStack, case: str) -> None:
    session_id = start_session(stack)
    key: str | None = stack.user_key
    expected = 404
    if case == "no key":
        key, expected = None, 401
    elif case == "wrong key":
        key, expected = "sk-sonia-nope", 401
    elif case == "unknown session":
        session_id = "ses_" + "0" * 32
    elif case == "closed session":
        httpx.post(stack.url() + f"/v1/sessions/{session_id}/stop", headers=stack.user_headers())
    else:
        key = stack.approver_key
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    url = stack.url().replace("http://", "ws://") + f"/v1/sessions/{session_id}/stream"
    status, problem = refused_status(url, headers)
    assert status == expected
    assert problem["code"] == ("UNAUTHENTICATED" if expected == 401 else "NOT_FOUND")


def test_the_voice_stream_refuses_callers_other_than_the_gateway(stack: FreshStack) -> None:
    url = stack.url("voice").replace("http://", "ws://") + "/v1/sessions/ses_x/stream"
    for headers, status in (({}, 401), ({"X-Service-Token": "x" * 43}, 401),
                            (stack.service_headers("router"), 403)):
        assert refused_status(url, headers)[0] == status


def test_voice_readiness_reports_the_speech_adapters_that_really_work(stack: FreshStack) -> None:
    ready = httpx.get(stack.url("voice") + "/readyz", timeout=10).json()
    speech = ready["checks"]["speech"]
    assert speech["status"] == "pass"
    has_espeak = shutil.which("espeak-ng") is not None
    assert speech["tts"] == ("espeak-ng" if has_espeak else "none")
    assert speech["stt"] == "none", "no transcription server is configured"


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="missing system package: espeak-ng")
def test_a_voice_session_speaks_its_reply(stack: FreshStack) -> None:
    session_id = start_session(stack, mode="voice")
    audio: list[bytes] = []
    with open_stream(stack, session_id) as ws:
        say(ws, "hello")
        events = events_until(ws, "response.audio")
        assert events[-1]["encoding"] == "pcm_s16le"
        assert events_until(ws, "state", timeout=30, audio=audio)[-1]["state"] == "idle"
    assert audio and all(len(frame) % 2 == 0 for frame in audio)
