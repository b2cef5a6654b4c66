"""`sonia chat`: a conversation in the terminal, here driven through a pipe."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from sonia.testing import FreshStack

pytestmark = pytest.mark.integration


def sonia_chat(stack: FreshStack, lines: str, *args: str,
               key: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SONIA_API_KEY"}
    if key is not None:
        env["SONIA_API_KEY"] = key
    return subprocess.run([sys.executable, "-m", "sonia", "chat", "--home", str(stack.root),
                           *args], input=lines, capture_output=True, text=True, timeout=60,
                          env=env)


def test_sonia_chat_holds_a_conversation_and_stops_its_session(stack: FreshStack) -> None:
    def active() -> int:
        return int(httpx.get(stack.url() + "/v1/sessions", headers=stack.user_headers())
                   .json()["counts"]["active"])

    before = active()
    result = sonia_chat(stack, "My umbrella is yellow.\n\nWhat colour is my umbrella?\n/quit\n",
                        key=stack.user_key)
    assert result.returncode == 0, result.stderr
    replies = [line for line in result.stdout.splitlines() if line.startswith("sonia> ")]
    assert replies == ["sonia> Noted: your umbrella is yellow.  [builtin]",
                       "sonia> You told me: My umbrella is yellow.  [builtin]"], \
        "each reply says which provider answered"
    assert active() == before, "the session it started is stopped"


def test_sonia_chat_takes_the_key_as_an_option(stack: FreshStack) -> None:
    result = sonia_chat(stack, "hello\n", "--key", stack.user_key)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("sonia> Hello!")


def test_sonia_chat_without_a_key_is_bad_usage(stack: FreshStack) -> None:
    result = sonia_chat(stack, "hello\n")
    assert result.returncode == 2
    assert "SONIA_API_KEY" in result.stderr


def test_sonia_chat_with_a_wrong_key_says_so(stack: FreshStack) -> None:
    result = sonia_chat(stack, "hello\n", key="sk-sonia-wrong")
    assert result.returncode == 1
    assert "UNAUTHENTICATED" in result.stderr


def test_sonia_chat_on_the_stream_says_when_a_tool_call_waits_for_an_approver(
        stack: FreshStack) -> None:
    result = sonia_chat(stack, "write from the terminal to cli-note.txt\n/quit\n",
                        key=stack.user_key)
    assert result.returncode == 0, result.stderr
    assert ('[waiting for an approver: file.write {"path": "cli-note.txt", '
            '"content": "from the terminal"}') in result.stdout
    assert not (stack.home.workspace / "cli-note.txt").exists()
