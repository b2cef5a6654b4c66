"""The router's `openai` provider against a real OpenAI-compatible server: another Sonia stack.

Stack A's router is configured with stack B's gateway as its OpenAI-compatible
server (and B's user key in a key file). A's replies come from B while B is up;
when B goes down, A falls back to its builtin provider (its default profile names
builtin as the fallback: without that, no fallback) and quarantines `openai`;
when B is back and the quarantine has run out, a probe brings `openai` back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from sonia.kit.deadline import wait_until
from sonia.testing import FreshStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUARANTINE_SECONDS = 2.0


def chat(stack: FreshStack, message: str) -> dict[str, object]:
    response = httpx.post(stack.url() + "/v1/chat", headers=stack.user_headers(), timeout=60,
                          json={"message": message})
    assert response.status_code == 200, response.text
    return dict(response.json())


def openai_state(stack: FreshStack) -> dict[str, Any]:
    providers = httpx.get(stack.url("router") + "/v1/providers",
                          headers=stack.service_headers("gateway"), timeout=10).json()
    return next(p for p in providers["providers"] if p["name"] == "openai")


def test_the_openai_provider_answers_then_falls_back_and_probes_back(tmp_path: Path) -> None:
    with FreshStack(tmp_path / "b") as b:
        b.up()
        key_file = tmp_path / "b-key"
        key_file.write_text(b.user_key + "\n")
        key_file.chmod(0o600)
        config = {"router": {"openai_base_url": f"{b.url()}/v1", "openai_model": "sonia",
                             "openai_api_key_file": str(key_file),
                             "quarantine_seconds": QUARANTINE_SECONDS,
                             "profiles": {"default": ["openai", "builtin"]}}}
        with FreshStack(tmp_path / "a", config=config) as a:
            a.up()
            told = chat(a, "My kite is red.")
            assert told["provider"] == "openai" and told["model"] == "sonia-builtin"
            assert told["reply"] == "Noted: your kite is red."

            sdk = openai.OpenAI(base_url=a.url() + "/v1", api_key=a.user_key, max_retries=0)
            stream = sdk.chat.completions.create(
                model="openai", stream=True,
                messages=[{"role": "user", "content": "What colour is my kite?"}])
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            assert "red" in text, "recalled by A, answered by B from A's system message"
            assert openai_state(a)["state"] == "healthy"

            b.down()
            fallback = chat(a, "What colour is my kite?")
            assert fallback["provider"] == "builtin" and "red" in str(fallback["reply"])
            state = openai_state(a)
            assert state["state"] == "quarantined" and int(state["failures"]) >= 1
            ready = httpx.get(a.url("router") + "/readyz", timeout=10)
            assert ready.status_code == 200, "builtin still answers the default profile"
            assert ready.json()["checks"]["providers"]["providers"]["openai"].startswith(
                "does not answer"), "readiness asked B, and B is down"
            only_openai = httpx.post(a.url() + "/v1/chat", headers=a.user_headers(), timeout=60,
                                     json={"message": "hi", "profile": "openai"})
            assert (only_openai.status_code, only_openai.json()["code"]) == (503, "UNAVAILABLE")

            b.up()
            wait_until(lambda: openai_state(a)["state"] == "probe_due",
                       timeout=QUARANTINE_SECONDS * 5, what="quarantine over")
            back = chat(a, "hello")
            assert back["provider"] == "openai", "the probe found B healthy again"
