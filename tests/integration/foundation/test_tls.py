"""TLS between the services, on loopback, with a CA and certificates the test makes.

With `[tls]` every service serves HTTPS, every caller verifies it against
`tls.ca_file`, and a caller without that CA (or a certificate for another name)
is refused: what lets replicas on several hosts talk to each other safely.
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from foreground import ForegroundService
from tls_certs import TestCA
from websockets.sync.client import connect

from sonia import SERVICES
from sonia.home import Home
from sonia.testing import FreshStack, free_stack_port

pytestmark = pytest.mark.integration

START_S = 60.0


def test_listening_beyond_loopback_without_tls_exits_2_naming_the_setting(
        tmp_path: Path) -> None:
    home = Home.at(tmp_path / "home")
    home.init(base_port=free_stack_port())
    home.config_file.write_text(home.config_file.read_text().replace(
        'bind = "127.0.0.1"', 'bind = "0.0.0.0"'))
    done = subprocess.run([sys.executable, "-m", "sonia", "run", "eva", "--home",
                           str(home.root)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "configuration error" in done.stderr and "'bind'" in done.stderr
    assert "tls.cert_file" in done.stderr


def tls_config(ca: TestCA, name: str, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")
               ) -> dict[str, dict[str, str]]:
    server = ca.issue(name, hosts=hosts)
    return {"tls": {"cert_file": str(server.cert), "key_file": str(server.key),
                    "ca_file": str(ca.ca_file)}}


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, ca: TestCA) -> Iterator[FreshStack]:
    """A whole stack over TLS: `up` is ready only once every service has verified the
    certificates of the services it needs."""
    with FreshStack(tmp_path_factory.mktemp("tls") / "home",
                    config=tls_config(ca, "stack")) as s:
        s.up()
        yield s


@pytest.fixture(scope="module")
def trusting(ca: TestCA) -> ssl.SSLContext:
    """A client context that trusts the test CA and nothing else."""
    return ssl.create_default_context(cafile=str(ca.ca_file))


def test_every_service_serves_https_that_a_client_with_the_ca_verifies(
        stack: FreshStack, trusting: ssl.SSLContext) -> None:
    for service in SERVICES:
        url = stack.url(service)
        assert url.startswith("https://127.0.0.1:")
        assert httpx.get(url + "/readyz", verify=trusting, timeout=10).status_code == 200


def test_a_client_without_the_ca_is_refused(stack: FreshStack) -> None:
    for service in SERVICES:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(stack.url(service) + "/livez", timeout=10)


def test_plain_http_gets_no_answer(stack: FreshStack) -> None:
    plain = stack.url("gateway").replace("https://", "http://")
    with pytest.raises(httpx.HTTPError):
        httpx.get(plain + "/livez", timeout=10)


def test_a_chat_and_an_action_cross_the_services_over_tls(
        stack: FreshStack, trusting: ssl.SSLContext) -> None:
    """gateway -> eva, memory, router; eva's grant -> openclaw; all verified."""
    with httpx.Client(base_url=stack.url(), headers=stack.user_headers(), verify=trusting,
                      timeout=30) as gateway:
        chat = gateway.post("/v1/chat", json={"message": "my favourite tree is the rowan",
                                               "session_id": None})
        assert chat.status_code == 200, chat.text
        assert chat.json()["memory"]["stored"]
        (stack.home.workspace / "notes.txt").write_text("over tls\n")
        action = gateway.post("/v1/actions", json={"tool": "file.read",
                                                   "args": {"path": "notes.txt"}})
        assert action.status_code == 200, action.text
        assert "over tls" in json.dumps(action.json()["result"])


def test_a_voice_session_streams_through_the_gateway_over_wss(
        stack: FreshStack, trusting: ssl.SSLContext) -> None:
    """The gateway relays the session's WebSocket to the voice service over wss://."""
    with httpx.Client(base_url=stack.url(), headers=stack.user_headers(), verify=trusting,
                      timeout=30) as gateway:
        session_id = gateway.post("/v1/sessions", json={"mode": "text"}).json()["id"]
    url = stack.url().replace("https://", "wss://") + f"/v1/sessions/{session_id}/stream"
    with connect(url, additional_headers=stack.user_headers(), ssl=trusting, proxy=None,
                 open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "session.ready"
        ws.send(json.dumps({"type": "input.text", "text": "hello over tls"}))
        kinds: list[str] = []
        while not kinds or kinds[-1] != "response.final":
            kinds.append(json.loads(ws.recv(timeout=30))["type"])
    assert "response.delta" in kinds


def test_sonia_status_verifies_the_services_with_the_homes_ca(stack: FreshStack) -> None:
    done = subprocess.run([sys.executable, "-m", "sonia", "status", "--json", "--home",
                           str(stack.home.root)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert all(row["ready"] for row in json.loads(done.stdout))


@pytest.fixture()
def home(tmp_path: Path, ca: TestCA) -> Home:
    home = Home.at(tmp_path / "home")
    home.init(base_port=free_stack_port())
    home.configure(tls_config(ca, "eva"))
    return home


def test_a_caller_without_the_ca_does_not_trust_the_service(
        home: Home, tmp_path: Path, trusting: ssl.SSLContext) -> None:
    """OpenClaw started from a copy of the home without `tls.ca_file`: EVA is up and
    serving TLS, but OpenClaw cannot verify it, so it never becomes ready."""
    untrusting = Home.at(tmp_path / "untrusting")
    shutil.copytree(home.root, untrusting.root)
    untrusting.configure({"tls": {"ca_file": None}})
    with ForegroundService("eva", home, tmp_path / "eva") as eva, \
            ForegroundService("openclaw", untrusting, tmp_path / "openclaw") as openclaw:
        eva.wait_for("READY", START_S)
        waiting = openclaw.wait_for("STATUS", START_S)
        assert "READY" not in waiting and "eva" in waiting["STATUS"]
        answer = httpx.get(home.settings().url_of("openclaw") + "/readyz", timeout=10,
                           verify=trusting)
        assert answer.status_code == 503
        check = answer.json()["checks"]["eva"]
        assert check["status"] == "fail" and "certificate is not trusted" in check["output"]


def test_a_certificate_for_another_name_is_refused(
        tmp_path: Path, ca: TestCA, trusting: ssl.SSLContext) -> None:
    """The CA alone is not enough: the certificate must name the address called."""
    home = Home.at(tmp_path / "home")
    home.init(base_port=free_stack_port())
    home.configure(tls_config(ca, "elsewhere", hosts=("eva.example",)))
    with ForegroundService("eva", home, tmp_path / "run") as eva:
        eva.wait_for("READY", START_S)  # its own readiness needs no TLS client
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(home.settings().url_of("eva") + "/livez", verify=trusting, timeout=10)
