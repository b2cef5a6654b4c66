"""What the memory service acknowledged survives a full stop and start of the stack."""

from __future__ import annotations

import httpx
import pytest

from sonia.testing import FreshStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_memories_and_turns_survive_down_and_up(own_stack: FreshStack) -> None:
    headers = own_stack.user_headers()
    told = httpx.post(own_stack.url() + "/v1/chat", headers=headers, timeout=30,
                      json={"message": "My passport number ends in 0451."}).json()
    noted = httpx.post(own_stack.url() + "/v1/memory", headers=headers, timeout=30,
                       json={"content": "the boiler was serviced in March", "kind": "note"})
    assert noted.status_code == 201

    report = own_stack.down()
    assert report.was_running and report.escalations == []
    own_stack.up()

    found = httpx.get(own_stack.url() + "/v1/memory/search", headers=headers, timeout=30,
                      params={"q": "boiler serviced"}).json()["results"]
    assert found[0]["id"] == noted.json()["id"]
    turns = httpx.get(own_stack.url("memory") + f"/v1/sessions/{told['session_id']}/turns",
                      headers=own_stack.service_headers("gateway"), timeout=30).json()["turns"]
    assert [t["id"] for t in turns][-1] == told["turn_id"]

    session = httpx.post(own_stack.url() + "/v1/sessions", headers=headers, timeout=30).json()
    assert session["id"] != told["session_id"]
    asked = httpx.post(own_stack.url() + "/v1/chat", headers=headers, timeout=30,
                       json={"message": "What does my passport number end in?",
                             "session_id": session["id"]}).json()
    assert "0451" in asked["reply"]
    old = httpx.get(own_stack.url() + f"/v1/sessions/{told['session_id']}", headers=headers,
                    timeout=30).json()
    assert old["state"] == "active", "sessions live in the gateway's database, too"
