"""The internal client against real servers on loopback: what each call sends, what each
failure becomes, TLS with a CA the test makes, and which services load it at all.

A uvicorn server (HTTP or HTTPS) serves a small app; raw sockets play the servers
that misbehave (never answer, drop the request, speak no TLS) and count what reached
them. Every server is on a free port and stopped in `finally`.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from tls_certs import TestCA

from sonia import SERVICES
from sonia.errors import Internal, NotFound, Timeout, Unavailable
from sonia.home import Home
from sonia.kit import correlation
from sonia.kit.auth import SERVICE_TOKEN_HEADER
from sonia.kit.client import KEEPALIVE_S, ServiceClient, failed_in_transport
from sonia.kit.problems import problem_response
from sonia.services.runner import KEEP_ALIVE_S
from sonia.supervisor.ports import free_base_port

TOKEN = "t" * 43
DEADLINE_S = 10.0
LONG_LINE = "x" * 300_000  # longer than aiohttp's own line limit (128 KiB)


@dataclass
class Seen:
    """What the app saw of each request."""

    requests: list[dict[str, object]] = field(default_factory=list)


def make_app(seen: Seen) -> Starlette:
    async def echo(request: Request) -> Response:
        body = await request.body()
        seen.requests.append({"method": request.method, "peer": request.client,
                              "query": dict(request.query_params),
                              "headers": dict(request.headers), "body": body})
        return JSONResponse({"method": request.method, "query": dict(request.query_params),
                             "json": json.loads(body) if body else None})

    async def empty(request: Request) -> Response:
        return Response(status_code=204)

    async def missing(request: Request) -> Response:
        return problem_response(NotFound("no memory m-1", extra={"memory_id": "m-1"}))

    async def plain(request: Request) -> Response:
        return Response(f"broken {request.path_params['code']}", request.path_params["code"])

    async def lines(request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            yield b"data: one\r\n"
            yield b"data: t"  # a line split across chunks
            yield "w\u00f6\n".encode()[:-2]  # and a character split across chunks
            yield "w\u00f6\n".encode()[-2:]
            yield (LONG_LINE + "\n").encode()
            yield b"last, no line end"
        return StreamingResponse(body(), media_type="text/event-stream")

    async def readyz(request: Request) -> Response:
        return JSONResponse({"status": "pass", "checks": {}})

    return Starlette(routes=[
        Route("/echo", echo, methods=["GET", "POST", "DELETE"]),
        Route("/empty", empty, methods=["POST"]),
        Route("/missing", missing, methods=["GET", "POST"]),
        Route("/plain/{code:int}", plain),
        Route("/lines", lines, methods=["POST"]),
        Route("/readyz", readyz),
    ])


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


@dataclass
class Server:
    url: str
    seen: Seen


def serve(tls: tuple[Path, Path] | None = None) -> Iterator[Server]:
    """A real uvicorn server in a thread on a free loopback port, HTTPS with `tls`."""
    sock = free_socket()
    scheme = "https" if tls else "http"
    seen = Seen()
    config = uvicorn.Config(make_app(seen), lifespan="off", ws="none", log_level="warning",
                            access_log=False, timeout_keep_alive=KEEP_ALIVE_S,
                            timeout_graceful_shutdown=1,
                            ssl_certfile=str(tls[0]) if tls else None,
                            ssl_keyfile=str(tls[1]) if tls else None)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        yield Server(f"{scheme}://127.0.0.1:{sock.getsockname()[1]}", seen)
    finally:
        server.should_exit = True
        thread.join(DEADLINE_S)
        sock.close()


@pytest.fixture()
def http() -> Iterator[Server]:
    yield from serve()


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("pki"))


@pytest.fixture()
def https(ca: TestCA) -> Iterator[Server]:
    files = ca.issue("service")
    yield from serve((files.cert, files.key))


class RawServer:
    """A TCP server that accepts and then does one thing wrong, counting connections and
    requests: `silent` never answers, `drop` reads a request and closes, `junk` answers
    a TLS hello with plain text and closes."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.connections = 0
        self.requests = 0
        self._sock = free_socket()
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            if self.behaviour == "silent":
                self._held.append(conn)
                continue
            with conn:
                if self.behaviour == "junk":
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                    continue
                data = b""
                conn.settimeout(DEADLINE_S)
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                if data:
                    self.requests += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(DEADLINE_S)
        for conn in self._held:
            conn.close()
        self._sock.close()


@pytest.fixture()
def raw() -> Iterator[Callable[[str], RawServer]]:
    made: list[RawServer] = []

    def start(behaviour: str) -> RawServer:
        server = RawServer(behaviour)
        made.append(server)
        return server

    try:
        yield start
    finally:
        for server in made:
            server.close()


def trusting(ca: TestCA) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca.ca_file))


T = TypeVar("T")


def run(client: ServiceClient, scenario: Callable[[ServiceClient], Awaitable[T]]) -> T:
    """Run `scenario(client)` in a fresh event loop, closing the client in it."""
    async def main() -> T:
        try:
            return await scenario(client)
        finally:
            await client.aclose()
    return asyncio.run(main())


# ------------------------------------------------------------------ answers


def test_a_call_carries_the_token_the_correlation_id_its_query_and_compact_json(
        http: Server) -> None:
    async def scenario(client: ServiceClient) -> Any:
        correlation.correlation_id.set("c" * 32)
        return await client.request("POST", "/echo", json_body={"text": "h\u00e9", "n": 1},
                                    params={"owner": "k-1", "limit": 5, "all": True})

    answer = run(ServiceClient(TOKEN, "memory", http.url), scenario)
    assert answer == {"method": "POST", "query": {"owner": "k-1", "limit": "5", "all": "true"},
                      "json": {"text": "h\u00e9", "n": 1}}
    seen = http.seen.requests[0]
    headers = seen["headers"]
    assert isinstance(headers, dict)
    assert headers[SERVICE_TOKEN_HEADER.lower()] == TOKEN
    assert headers[correlation.HEADER] == "c" * 32
    assert headers["content-type"] == "application/json"
    assert seen["body"] == '{"text":"h\u00e9","n":1}'.encode()


def test_an_empty_answer_is_none_and_calls_share_one_kept_alive_connection(
        http: Server) -> None:
    async def scenario(client: ServiceClient) -> Any:
        return [await client.request("POST", "/empty"), await client.request("GET", "/echo"),
                await client.request("GET", "/echo")]

    echoed: dict[str, Any] = {"method": "GET", "query": {}, "json": None}
    assert run(ServiceClient(TOKEN, "memory", http.url), scenario) == [None, echoed, echoed]
    first, second = (seen["peer"] for seen in http.seen.requests)
    assert first == second, "the second call went out on the first call's connection"
    assert KEEPALIVE_S < KEEP_ALIVE_S, "the client must drop an idle connection first"


def test_a_problem_answer_is_the_same_api_error_again(http: Server) -> None:
    async def scenario(client: ServiceClient) -> Any:
        with pytest.raises(NotFound) as raised:
            await client.request("GET", "/missing")
        assert client.breaker.failures == 0, "an answer, even an error, is a success"
        return raised.value

    error = run(ServiceClient(TOKEN, "memory", http.url), scenario)
    assert isinstance(error, NotFound)
    assert error.detail == "no memory m-1" and error.extra == {"memory_id": "m-1"}


def test_an_answer_without_a_problem_body_is_internal_or_unavailable(http: Server) -> None:
    async def scenario(client: ServiceClient) -> Any:
        with pytest.raises(Internal, match="memory answered 500 without a problem body"):
            await client.request("GET", "/plain/500")
        with pytest.raises(Unavailable, match="memory answered 503") as raised:
            await client.request("GET", "/plain/503")
        assert not failed_in_transport(raised.value), "an answer is no transport failure"
        return None

    run(ServiceClient(TOKEN, "memory", http.url), scenario)


def test_stream_lines_splits_on_line_ends_across_chunks_with_no_limit_on_length(
        http: Server) -> None:
    async def scenario(client: ServiceClient) -> Any:
        async with client.stream_lines("POST", "/lines", json_body={}) as lines:
            return [line async for line in lines]

    assert run(ServiceClient(TOKEN, "router", http.url), scenario) == [
        "data: one", "data: tw\u00f6", LONG_LINE, "last, no line end"]


def test_a_stream_answered_with_a_problem_raises_it(http: Server) -> None:
    async def scenario(client: ServiceClient) -> Any:
        with pytest.raises(NotFound, match="no memory m-1"):
            async with client.stream_lines("POST", "/missing"):
                pass
        return client.breaker.trial_in_flight

    assert run(ServiceClient(TOKEN, "router", http.url), scenario) is False


def test_a_client_made_before_the_event_loop_works_inside_it(http: Server) -> None:
    """Services make their clients while the app is built, before uvicorn's loop runs."""
    client = ServiceClient(TOKEN, "memory", http.url)

    async def scenario(client: ServiceClient) -> Any:
        return await client.readiness()

    assert run(client, scenario) == (True, {"status": "pass", "checks": {}})


# ------------------------------------------------------------------ failures


def test_a_silent_server_is_a_timeout_and_a_failure(raw: Callable[[str], RawServer]) -> None:
    server = raw("silent")

    async def scenario(client: ServiceClient) -> Any:
        with pytest.raises(Timeout, match="memory did not answer POST /v1/x in time"):
            await client.request("POST", "/v1/x", json_body={}, timeout=0.3)
        with pytest.raises(Timeout):
            async with client.stream_lines("POST", "/v1/x", json_body={}, timeout=0.3):
                pass
        return client.breaker.failures

    assert run(ServiceClient(TOKEN, "memory", f"http://127.0.0.1:{server.port}"),
               scenario) == 2


def test_a_call_without_its_own_timeout_has_the_clients(
        raw: Callable[[str], RawServer]) -> None:
    """aiohttp takes `timeout=None` for no timeout: a silent dependency must still end
    in TIMEOUT after the client's budget, not hold the caller for as long as it likes."""
    server = raw("silent")

    async def scenario(client: ServiceClient) -> Any:
        with pytest.raises(Timeout, match="memory did not answer GET /v1/x in time"):
            await client.request("GET", "/v1/x")
        return client.breaker.failures

    client = ServiceClient(TOKEN, "memory", f"http://127.0.0.1:{server.port}", timeout=0.3)
    assert run(client, scenario) == 1


def test_a_request_dropped_by_the_server_is_not_sent_again(raw: Callable[[str], RawServer]) -> None:
    """Neither a DELETE (aiohttp would resend it) nor a GET: the request reached the
    server, so only the caller may decide to send it again."""
    server = raw("drop")

    async def scenario(client: ServiceClient) -> Any:
        for method in ("DELETE", "GET", "POST"):
            with pytest.raises(Unavailable, match="memory is unreachable") as raised:
                await client.request(method, "/v1/memories/m-1")
            assert failed_in_transport(raised.value)
        return client.breaker.failures

    assert run(ServiceClient(TOKEN, "memory", f"http://127.0.0.1:{server.port}"),
               scenario) == 3
    assert server.requests == 3


def test_only_a_get_is_tried_again_when_no_connection_could_be_made(
        raw: Callable[[str], RawServer]) -> None:
    """A server that answers the TLS handshake with plain text: the connection is never
    made, so a GET is tried once more and a POST is not."""
    server = raw("junk")
    url = f"https://127.0.0.1:{server.port}"

    async def get(client: ServiceClient) -> int:
        with pytest.raises(Unavailable):
            await client.request("GET", "/v1/audit")
        return client.breaker.failures

    assert run(ServiceClient(TOKEN, "eva", url), get) == 1
    assert server.connections == 2

    async def post(client: ServiceClient) -> None:
        with pytest.raises(Unavailable):
            await client.request("POST", "/v1/decisions", json_body={})
        return None

    run(ServiceClient(TOKEN, "eva", url), post)
    assert server.connections == 3


def test_an_unreachable_target_is_unavailable_and_not_ready() -> None:
    with free_socket() as probe:
        port = probe.getsockname()[1]  # bound, never listening: refused

    async def scenario(client: ServiceClient) -> Any:
        with pytest.raises(Unavailable, match="eva is unreachable"):
            await client.ready()
        with pytest.raises(Unavailable):
            async with client.stream_lines("POST", "/v1/x"):
                pass
        return await client.readiness()

    ready, body = run(ServiceClient(TOKEN, "eva", f"http://127.0.0.1:{port}"), scenario)
    assert ready is False and body["status"] == "fail"
    assert body["output"].startswith("no answer: ")


# ------------------------------------------------------------------ TLS


def test_https_with_the_homes_ca_is_verified_and_used(https: Server, ca: TestCA) -> None:
    async def scenario(client: ServiceClient) -> Any:
        ready = await client.ready()
        async with client.stream_lines("POST", "/lines") as lines:
            first = await anext(aiter(lines))
        return ready, first, await client.request("POST", "/echo", json_body=[1])

    client = ServiceClient(TOKEN, "eva", https.url, verify=trusting(ca))
    assert run(client, scenario) == ({"url": https.url}, "data: one",
                                     {"method": "POST", "query": {}, "json": [1]})


def test_a_certificate_the_caller_does_not_trust_is_refused_naming_tls_ca_file(
        https: Server, tmp_path: Path) -> None:
    """Without the home's CA (here: another CA) the service is not trusted; its
    readiness check says why and what to set."""
    other = trusting(TestCA(tmp_path / "other", name="Another CA"))

    async def scenario(client: ServiceClient) -> Any:
        with pytest.raises(Unavailable, match=r"eva's TLS certificate is not trusted: .*"
                                              r"\(check tls.ca_file\)"):
            await client.ready()
        with pytest.raises(Unavailable, match="eva is unreachable"):
            await client.request("POST", "/echo", json_body={})
        return None

    run(ServiceClient(TOKEN, "eva", https.url, verify=other), scenario)
    assert https.seen.requests == [], "nothing was sent to an untrusted server"


# ------------------------------------------------------------------ weight


def test_the_services_that_call_no_other_never_load_the_clients_library(
        tmp_path: Path) -> None:
    """aiohttp is 8 MiB in a process: EVA, memory and the router, which call nobody,
    build and start their apps without it (kit.app imports the client on first use)."""
    home = Home.at(tmp_path / "home")
    home.init(base_port=free_base_port())
    program = ("import sys\n"
               "from starlette.testclient import TestClient\n"
               "from sonia.home import Home\n"
               "from sonia.services.runner import build_app\n"
               "app, _ = build_app(sys.argv[1], Home.at(sys.argv[2]))\n"
               "with TestClient(app) as client:\n"
               "    assert client.get('/livez').status_code == 200\n"
               "print(sorted(m for m in sys.modules if m.split('.')[0] == 'aiohttp'))\n")
    for name in ("eva", "memory", "router", "gateway"):
        done = subprocess.run([sys.executable, "-c", program, name, str(home.root)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        loaded = done.stdout.strip() != "[]"
        assert loaded is (name == "gateway"), f"{name}: {done.stdout[:200]}"


def test_only_the_router_loads_httpx_without_a_speech_server(
        tmp_path: Path) -> None:
    """httpx brings its command line's rich and pygments (9 MiB): the router's model
    providers are written on it (the router loads it), voice's transcriber too, made only
    when a speech server is configured. (Starlette's TestClient is httpx, so each app's
    start and stop run here without it.)"""
    home = Home.at(tmp_path / "home")
    home.init(base_port=free_base_port())
    program = ("import asyncio, sys\n"
               "from sonia.home import Home\n"
               "from sonia.services.runner import build_app\n"
               "app, _ = build_app(sys.argv[1], Home.at(sys.argv[2]))\n"
               "async def started_and_stopped():\n"
               "    async with app.router.lifespan_context(app):\n"
               "        pass\n"
               "asyncio.run(started_and_stopped())\n"
               "print(sorted(m for m in sys.modules if m.split('.')[0] in ('httpx', 'rich')))\n")
    for name in SERVICES:
        done = subprocess.run([sys.executable, "-c", program, name, str(home.root)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        loaded = done.stdout.strip() != "[]"
        assert loaded is (name == "router"), f"{name}: {done.stdout[:200]}"
