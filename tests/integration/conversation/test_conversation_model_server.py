"""A real model server, loudly: configured with `sonia model use`, listed by `/v1/models`,
and when it is wrong or dead, said by `sonia model use`, `up`, `/readyz`, `status` and chat.

The model server is a real OpenAI-compatible HTTP server on a free loopback
port (`SlowModelServer`); the dead one is a port bound by the test that
listens to nobody, so every connection to it is refused.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from conversation_helpers import SlowModelServer

from sonia.errors import SupervisorError
from sonia.home import Home
from sonia.testing import FreshStack

pytestmark = pytest.mark.integration


@pytest.fixture()
def dead_url() -> Iterator[str]:
    """The URL of a port that is bound (so nobody else takes it) but never listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def sonia(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sonia", *args], capture_output=True,
                          text=True, timeout=120)


def router_settings(home: Home) -> dict[str, object]:
    return dict(tomllib.loads(home.config_file.read_text()).get("router", {}))


def test_model_use_probes_the_server_then_writes_the_configuration(tmp_path: Path) -> None:
    home = Home.at(tmp_path / "home")
    home.init(base_port=47200)
    with SlowModelServer(words=3, delay=0) as server:
        used = sonia("model", "use", server.url, "--model", "slow", "--home", str(home.root))
        assert used.returncode == 0, used.stderr
        assert server.requests == 1, "it sent one real completion"
    assert router_settings(home) == {"openai_base_url": server.url, "openai_model": "slow"}
    off = sonia("model", "off", "--home", str(home.root))
    assert off.returncode == 0, off.stderr
    assert router_settings(home) == {}


def test_model_use_refuses_a_dead_server_and_changes_nothing(tmp_path: Path,
                                                              dead_url: str) -> None:
    home = Home.at(tmp_path / "home")
    home.init(base_port=47300)
    before = home.config_file.read_text()
    refused = sonia("model", "use", dead_url, "--model", "any", "--home", str(home.root))
    assert refused.returncode == 1
    assert "cannot list its models" in refused.stderr and dead_url in refused.stderr
    assert home.config_file.read_text() == before


def test_model_use_refuses_a_model_the_server_does_not_have(tmp_path: Path) -> None:
    home = Home.at(tmp_path / "home")
    home.init(base_port=47400)
    with SlowModelServer() as server:
        refused = sonia("model", "use", server.url, "--model", "gpt-9", "--home", str(home.root))
    assert refused.returncode == 1
    assert "has no model 'gpt-9'; it has: slow" in refused.stderr


def test_models_are_the_servers_own_and_the_sdk_can_use_them(slow_stack: FreshStack) -> None:
    sdk = openai.OpenAI(base_url=slow_stack.url() + "/v1", api_key=slow_stack.user_key,
                        max_retries=0)
    listed = {m.id: m.owned_by for m in sdk.models.list()}
    assert listed == {"sonia": "sonia", "slow": "openai", "sonia-builtin": "builtin"}
    answer = sdk.chat.completions.create(model="slow", messages=[
        {"role": "user", "content": "hello"}])
    assert answer.choices[0].message.content == "slow reply"


def test_a_dead_model_server_is_said_by_up_readyz_status_and_chat(tmp_path: Path,
                                                                  dead_url: str) -> None:
    config: dict[str, dict[str, Any]] = {
        "router": {"openai_base_url": dead_url, "openai_model": "any"},
        "supervisor": {"ready_timeout_seconds": 10}}
    with FreshStack(tmp_path / "home", config=config) as stack:
        with pytest.raises(SupervisorError, match=r"router: providers: .*openai does not answer"):
            stack.up()
        ready = httpx.get(stack.url("router") + "/readyz", timeout=10)
        assert ready.status_code == 503
        assert "openai does not answer" in ready.text

        status = sonia("status", "--json", "--home", str(stack.root))
        assert status.returncode == 1, "status fails while a service is not ready"
        router = next(r for r in json.loads(status.stdout) if r["name"] == "router")
        assert router["ready"] is False and "openai does not answer" in router[
            "not_ready_because"]

        chat = httpx.post(stack.url() + "/v1/chat", headers=stack.user_headers(), timeout=60,
                          json={"message": "hello"})
        assert (chat.status_code, chat.json()["code"]) == (503, "UNAVAILABLE")
        assert "openai" in chat.json()["detail"], "no quiet answer from the builtin model"
