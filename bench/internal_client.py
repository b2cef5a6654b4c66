"""The caller's CPU per internal call, by HTTP client, against one bare uvicorn server.

    python bench/internal_client.py [--n 2000] [--rounds 3]

What `bench/profile.py` shows spread over a whole request, isolated: one process
sends `--n` sequential POSTs of a small JSON body with the service headers and
decodes the JSON answer, through

  * `ServiceClient`: Sonia's internal client as it is (aiohttp's session);
  * httpx: `httpx.AsyncClient`, configured as the internal client was before;
  * httpcore: `httpcore.AsyncConnectionPool` alone (httpx's transport, without
    its request and response models);
  * curl_cffi: `curl_cffi.requests.AsyncSession`, only when it is installed.

The server is a bare Starlette app under uvicorn (httptools, uvloop: what the
services run) in its own process, so the figure is the client's CPU alone
(`time.process_time` of this process), which the machine's load hardly moves.
Rounds interleave the clients; the table gives each one's median.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop

from sonia.kit import correlation
from sonia.kit.auth import SERVICE_TOKEN_HEADER
from sonia.kit.client import CONNECT_TIMEOUT_S, KEEPALIVE_S, MAX_CONNECTIONS, ServiceClient

BODY = {"session_id": "s" * 32, "text": "What is my favourite colour? " * 4, "limit": 5}
TOKEN = "t" * 43
SERVER = """
import sys
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

async def answer(request):
    body = await request.body()
    return JSONResponse({"received": len(body), "results": [
        {"id": f"m-{i}", "text": "teal is the favourite colour", "score": 0.5} for i in range(5)]})

app = Starlette(routes=[Route("/v1/call", answer, methods=["POST"])])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            access_log=False, timeout_keep_alive=75)
"""

Call = Callable[[], Awaitable[Any]]
Close = Callable[[], Awaitable[None]]


def headers() -> dict[str, str]:
    return {SERVICE_TOKEN_HEADER: TOKEN, correlation.HEADER: correlation.current()}


async def service_client(url: str) -> tuple[Call, Close]:
    client = ServiceClient(TOKEN, "memory", url)

    async def call() -> Any:
        return await client.request("POST", "/v1/call", json_body=BODY)

    return call, client.aclose


async def httpx_client(url: str) -> tuple[Call, Close]:
    import httpx

    client = httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(10.0, connect=2.0),
                               limits=httpx.Limits(max_connections=MAX_CONNECTIONS,
                                                   keepalive_expiry=KEEPALIVE_S))

    async def call() -> Any:
        response = await client.request("POST", "/v1/call", json=BODY, headers=headers())
        response.raise_for_status()
        return response.json()

    return call, client.aclose


async def httpcore_pool(url: str) -> tuple[Call, Close]:
    import httpcore

    pool = httpcore.AsyncConnectionPool(max_connections=MAX_CONNECTIONS,
                                        keepalive_expiry=KEEPALIVE_S)
    target, host = f"{url}/v1/call".encode(), url.split("://", 1)[1].encode()
    timeouts = {"connect": CONNECT_TIMEOUT_S, "read": 10.0, "write": 10.0, "pool": 10.0}

    async def call() -> Any:
        content = json.dumps(BODY, separators=(",", ":")).encode()
        sent = [(b"Host", host), (b"Content-Type", b"application/json"),
                (b"Content-Length", str(len(content)).encode()),
                *((k.encode(), v.encode()) for k, v in headers().items())]
        response = await pool.request(b"POST", target, headers=sent, content=content,
                                      extensions={"timeout": timeouts})
        assert response.status == 200
        return json.loads(response.content)

    return call, pool.aclose


async def curl_session(url: str) -> tuple[Call, Close]:
    from curl_cffi.requests import AsyncSession

    session = AsyncSession(base_url=url, timeout=10.0)

    async def call() -> Any:
        response = await session.request("POST", "/v1/call", json=BODY, headers=headers())
        assert response.status_code == 200
        return response.json()

    return call, session.close


CLIENTS: dict[str, Callable[[str], Awaitable[tuple[Call, Close]]]] = {
    "ServiceClient (aiohttp)": service_client,
    "httpx.AsyncClient": httpx_client,
    "httpcore pool": httpcore_pool,
    "curl_cffi": curl_session,
}


def available() -> list[str]:
    names = list(CLIENTS)
    try:
        import curl_cffi  # noqa: F401
    except ImportError:
        names.remove("curl_cffi")
    return names


async def measure(name: str, url: str, n: int) -> float:
    """The client's CPU milliseconds per call over `n` calls, after a warm-up."""
    call, close = await CLIENTS[name](url)
    try:
        for _ in range(100):
            await call()
        start = time.process_time()
        for _ in range(n):
            await call()
        return (time.process_time() - start) * 1000 / n
    finally:
        await close()


def wait_listening(port: int, server: subprocess.Popen[bytes], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("the test server exited")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the test server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="calls per client per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
    try:
        wait_listening(port, server)
        url = f"http://127.0.0.1:{port}"
        names = available()
        results: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(args.rounds):
            for name in names:
                results[name].append(uvloop.run(measure(name, url, args.n)))
    finally:
        server.terminate()
        server.wait(timeout=30)
    base = statistics.median(results[names[0]])
    print(f"\n{args.n} sequential calls per client per round, {args.rounds} rounds")
    print(f"{'client':<26}{'CPU ms/call':>12}{'rounds':>22}{'ratio':>8}")
    for name, values in results.items():
        median = statistics.median(values)
        rounds = " ".join(f"{v:.3f}" for v in values)
        print(f"{name:<26}{median:12.3f}{rounds:>22}{median / base:7.1f}x")
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
