"""The lean internal HTTP/1.1 client (kit/http1.py) and ServiceClient on top of it.

Each test runs a real TCP server on loopback (asyncio streams) that records
what arrived and answers with bytes the test chose, so framing, keep-alive,
connection loss, timeouts and cancellation are exercised on real sockets.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from sonia.errors import ApiError, Timeout, Unavailable
from sonia.kit import http1
from sonia.kit.client import ServiceClient


def answer(status: int = 200, body: bytes = b'{"ok":true}', *, close: bool = False,
           extra: bytes = b"") -> bytes:
    head = (f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n").encode()
    return head + (b"connection: close\r\n" if close else b"") + extra + b"\r\n" + body


@dataclass
class Server:
    """Answers each request with the next item of `replies` (bytes, or None: say nothing)."""

    replies: list[bytes | None]
    requests: list[tuple[bytes, dict[bytes, bytes], bytes]] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    closed_connections: int = 0
    after_reply: Callable[[asyncio.StreamWriter], Awaitable[None]] | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line, *rest = head[:-4].split(b"\r\n")
                headers = {k.strip().lower(): v.strip()
                           for k, v in (h.split(b":", 1) for h in rest)}
                body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
                self.requests.append((line, headers, body))
                reply = self.replies.pop(0) if self.replies else answer()
                if reply is None:
                    await reader.read()  # never answer; wait for the client to go away
                    return
                writer.write(reply)
                await writer.drain()
                if self.after_reply is not None:
                    await self.after_reply(writer)
                    return
                if b"connection: close" in reply:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            self.closed_connections += 1
            writer.close()


async def serving(server: Server) -> asyncio.Server:
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    return listener


async def until(condition: Callable[[], bool]) -> None:
    """Let the event loop run until `condition` holds (bounded: a hang fails the test)."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def test_requests_reuse_one_keep_alive_connection() -> None:
    async def scenario() -> None:
        server = Server([answer(body=b'{"n":1}'), answer(body=b'{"n":2}')])
        async with await serving(server):
            pool = http1.Http1Pool("127.0.0.1", server.port)
            first = await pool.send(pool.encode("GET", "/a", [], None), timeout=5,
                                    connect_timeout=2)
            second = await pool.send(pool.encode("POST", "/b", [], b"xyz"), timeout=5,
                                     connect_timeout=2)
            pool.close()
        assert (first.status_code, first.content) == (200, b'{"n":1}')
        assert second.content == b'{"n":2}'
        assert server.connections == 1
        assert [r[0] for r in server.requests] == [b"GET /a HTTP/1.1", b"POST /b HTTP/1.1"]
        assert server.requests[1][1][b"content-length"] == b"3"
        assert server.requests[1][2] == b"xyz"
        assert server.requests[0][1][b"host"] == f"127.0.0.1:{server.port}".encode()

    asyncio.run(scenario())


def test_a_post_without_a_body_says_content_length_zero() -> None:
    async def scenario() -> None:
        server = Server([answer()])
        async with await serving(server):
            pool = http1.Http1Pool("127.0.0.1", server.port)
            await pool.send(pool.encode("POST", "/x", [], None), timeout=5, connect_timeout=2)
            pool.close()
        assert server.requests[0][1][b"content-length"] == b"0"

    asyncio.run(scenario())


def test_connection_close_is_honoured_and_the_next_request_opens_a_new_one() -> None:
    async def scenario() -> None:
        server = Server([answer(close=True), answer()])
        async with await serving(server):
            pool = http1.Http1Pool("127.0.0.1", server.port)
            for _ in range(2):
                response = await pool.send(pool.encode("GET", "/", [], None), timeout=5,
                                           connect_timeout=2)
                assert response.status_code == 200
            pool.close()
        assert server.connections == 2

    asyncio.run(scenario())


def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    async def scenario() -> None:
        async def close_after(writer: asyncio.StreamWriter) -> None:
            writer.close()

        server = Server([answer(), answer()], after_reply=close_after)
        async with await serving(server):
            pool = http1.Http1Pool("127.0.0.1", server.port)
            await pool.send(pool.encode("GET", "/", [], None), timeout=5, connect_timeout=2)
            await until(lambda: all(c.closed for c in pool._idle))
            response = await pool.send(pool.encode("GET", "/", [], None), timeout=5,
                                       connect_timeout=2)
            pool.close()
        assert response.status_code == 200
        assert server.connections == 2

    asyncio.run(scenario())


def test_a_chunked_answer_is_read_whole() -> None:
    async def scenario() -> None:
        chunked = (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                   b"4\r\n{\"a\"\r\n5\r\n:[1]}\r\n0\r\n\r\n")
        server = Server([chunked, answer()])
        async with await serving(server):
            pool = http1.Http1Pool("127.0.0.1", server.port)
            first = await pool.send(pool.encode("GET", "/", [], None), timeout=5,
                                    connect_timeout=2)
            second = await pool.send(pool.encode("GET", "/", [], None), timeout=5,
                                     connect_timeout=2)
            pool.close()
        assert json.loads(first.content) == {"a": [1]}
        assert second.status_code == 200
        assert server.connections == 1

    asyncio.run(scenario())


def test_a_connection_that_breaks_before_the_answer_is_a_read_error() -> None:
    async def scenario() -> None:
        server = Server([b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"],
                        after_reply=lambda writer: _close(writer))
        async with await serving(server):
            pool = http1.Http1Pool("127.0.0.1", server.port)
            with pytest.raises(http1.ReadError):
                await pool.send(pool.encode("GET", "/", [], None), timeout=5,
                                connect_timeout=2)
            pool.close()

    asyncio.run(scenario())


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()


def test_a_refused_connection_is_a_connect_error() -> None:
    async def scenario() -> None:
        listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        listener.close()
        await listener.wait_closed()
        pool = http1.Http1Pool("127.0.0.1", port)
        with pytest.raises(http1.ConnectError):
            await pool.send(pool.encode("GET", "/", [], None), timeout=5, connect_timeout=2)

    asyncio.run(scenario())


def test_no_answer_in_time_is_a_read_timeout_and_the_connection_is_dropped() -> None:
    async def scenario() -> None:
        server = Server([None, answer()])
        async with await serving(server):
            pool = http1.Http1Pool("127.0.0.1", server.port)
            with pytest.raises(http1.ReadTimeout):
                await pool.send(pool.encode("GET", "/", [], None), timeout=0.2,
                                connect_timeout=0.2)
            assert not pool._idle
            response = await pool.send(pool.encode("GET", "/", [], None), timeout=5,
                                       connect_timeout=2)
            pool.close()
        assert response.status_code == 200
        assert server.connections == 2

    asyncio.run(scenario())


def test_a_cancelled_request_closes_its_connection() -> None:
    async def scenario() -> None:
        server = Server([None, answer()])
        async with await serving(server):
            pool = http1.Http1Pool("127.0.0.1", server.port)
            call = asyncio.create_task(pool.send(pool.encode("GET", "/", [], None), timeout=5,
                                                 connect_timeout=2))
            await until(lambda: len(server.requests) == 1)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            assert not pool._idle
            await until(lambda: server.closed_connections == 1)
            response = await pool.send(pool.encode("GET", "/", [], None), timeout=5,
                                       connect_timeout=2)
            pool.close()
        assert response.status_code == 200
        assert server.connections == 2

    asyncio.run(scenario())


def test_service_client_encodes_path_query_and_json_as_the_target_expects() -> None:
    async def scenario() -> None:
        server = Server([answer(body=b'{"x":1}')])
        async with await serving(server):
            client = ServiceClient("t" * 43, "memory", f"http://127.0.0.1:{server.port}")
            found = await client.request(
                "POST", "/v1/memories/a b?c%2F/archive",
                params={"q": "é & =", "limit": 3, "flag": True, "none": None},
                json_body={"text": "héllo", "n": [1, 2]})
            await client.aclose()
        assert found == {"x": 1}
        line, headers, body = server.requests[0]
        assert line == (b"POST /v1/memories/a%20b%3Fc%252F/archive"
                        b"?q=%C3%A9+%26+%3D&limit=3&flag=true&none= HTTP/1.1")
        assert headers[b"x-service-token"] == b"t" * 43
        assert headers[b"content-type"] == b"application/json"
        assert json.loads(body) == {"text": "héllo", "n": [1, 2]}

    asyncio.run(scenario())


def test_service_client_rebuilds_a_problem_answer_and_maps_failures() -> None:
    async def scenario() -> None:
        problem = json.dumps({"type": "about:blank", "title": "Not found", "status": 404,
                              "detail": "no such memory", "code": "NOT_FOUND"}).encode()
        server = Server([answer(404, problem), None])
        async with await serving(server):
            client = ServiceClient("t" * 43, "memory", f"http://127.0.0.1:{server.port}")
            with pytest.raises(ApiError) as raised:
                await client.request("GET", "/v1/memories/x")
            assert raised.value.code == "NOT_FOUND"
            assert client.breaker.failures == 0, "an answer, even an error, is reachable"
            with pytest.raises(Timeout):
                await client.request("POST", "/v1/memories", json_body={}, timeout=0.2)
            assert client.breaker.failures == 1
            await client.aclose()
        client = ServiceClient("t" * 43, "memory", f"http://127.0.0.1:{server.port}")
        with pytest.raises(Unavailable):
            await client.request("GET", "/v1/memories/x")
        await client.aclose()

    asyncio.run(scenario())
