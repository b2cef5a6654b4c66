"""A lean HTTP/1.1 client for the calls between Sonia's services on loopback.

Why not httpx here: profiled (bench/profile.py, BENCHMARKS.md), a chat turn
spent 70 % of the gateway's samples, and a tier-0 action 60 %, inside
httpx, httpcore, h11 and anyio: URL objects, cookie jars, auth and redirect
layers, a pure-Python HTTP parser and a backend-neutral stream for every call,
none of which a call to a sibling service on 127.0.0.1 uses. This client is an
asyncio protocol with the C parser uvicorn itself uses (httptools), a
keep-alive pool per target, and nothing else.

Its scope is kept small on purpose: `http://` only; a request body is bytes with
a Content-Length; a response is read whole (Content-Length or chunked); one
request at a time per connection. Streaming responses (SSE) stay with httpx
(`ServiceClient.stream_lines`), where its generality is worth its cost.

What it promises, which `ServiceClient` relies on:

- `ConnectError` means nothing was sent (the connection could not be made), so
  a caller may retry any request; every other failure after that point is
  `ReadError` (the connection broke) or `ReadTimeout`, after which the request
  may or may not have run.
- A connection is reused only if its last response was complete and allowed
  keep-alive, it has not been closed by the server, it belongs to the running
  event loop, and it has been idle less than `keepalive_s` (kept well below
  uvicorn's 5 s, so a request is never sent on a connection the server is
  closing at that moment).
- A cancelled or failed request closes its connection: its state is unknown.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from dataclasses import dataclass
from typing import cast

import httptools


class HttpError(Exception):
    """A failure to get an answer (never an HTTP error status: those are answers)."""


class ConnectError(HttpError):
    """The connection could not be made: the request was not sent."""


class ConnectTimeout(ConnectError):
    """The connection was not made in time: the request was not sent."""


class ReadError(HttpError):
    """The connection broke, or the answer was not HTTP, after the request was sent."""


class ReadTimeout(HttpError):
    """No complete answer in time, after the request was sent."""


@dataclass(frozen=True)
class Response:
    status_code: int
    headers: list[tuple[bytes, bytes]]
    content: bytes

    def header(self, name: bytes) -> bytes | None:
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[Response] | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._reusable = False

    # asyncio.Protocol ------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self._parser is None:  # bytes nobody asked for: the connection is not sane
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ReadError(f"malformed answer: {type(exc).__name__}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ReadError("the server closed the connection before answering in full"))

    # httptools callbacks -----------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        parser, waiter = self._parser, self._waiter
        if parser is None or waiter is None or waiter.done():
            return
        self._reusable = bool(parser.should_keep_alive())
        self._parser = None
        waiter.set_result(Response(parser.get_status_code(), self._headers,
                                   b"".join(self._body)))

    # ------------------------------------------------------------------------
    def _fail(self, error: HttpError) -> None:
        self._parser = None
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def usable(self, loop: asyncio.AbstractEventLoop, now: float, keepalive_s: float) -> bool:
        return (not self.closed and self.loop is loop and self.transport is not None
                and not self.transport.is_closing() and now - self.idle_since < keepalive_s)

    async def exchange(self, request: bytes) -> Response:
        """Send one request and wait for its complete answer."""
        if self.transport is None:
            raise ReadError("the connection is not open")
        self._headers, self._body, self._reusable = [], [], False
        self._parser = httptools.HttpResponseParser(self)
        self._waiter = self.loop.create_future()
        self.transport.write(request)
        response = await self._waiter
        self._waiter = None
        if not self._reusable:
            self.close()
        return response


class Http1Pool:
    """Keep-alive connections to one `host:port`, shared by every caller in the process."""

    def __init__(self, host: str, port: int, *, keepalive_s: float = 2.0,
                 max_connections: int = 200) -> None:
        self.host = host
        self.port = port
        self.keepalive_s = keepalive_s
        self.max_connections = max_connections
        self._host_header = f"Host: {host}:{port}\r\n".encode("ascii")
        self._idle: list[_Connection] = []
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary())

    def _slot(self, loop: asyncio.AbstractEventLoop) -> asyncio.Semaphore:
        """The cap on connections in use, per event loop (a semaphore belongs to one loop)."""
        slot = self._slots.get(loop)
        if slot is None:
            slot = self._slots[loop] = asyncio.Semaphore(self.max_connections)
        return slot

    def _take_idle(self, loop: asyncio.AbstractEventLoop) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.usable(loop, now, self.keepalive_s):
                return conn
            conn.close()
        return None

    async def _connect(self, loop: asyncio.AbstractEventLoop, timeout: float) -> _Connection:
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(lambda: _Connection(loop),
                                                       self.host, self.port)
        except TimeoutError as exc:
            raise ConnectTimeout(f"no connection to {self.host}:{self.port} in time") from exc
        except OSError as exc:
            raise ConnectError(f"no connection to {self.host}:{self.port}: "
                               f"{type(exc).__name__}") from exc
        return conn

    def encode(self, method: str, target: str, headers: list[tuple[str, str]],
               body: bytes | None) -> bytes:
        """The request's bytes (names and values come from the caller's code, never from a
        request it received: no CR/LF can reach them)."""
        if method == "HEAD":
            raise ValueError("HEAD is not supported by this client (its answer has no body)")
        lines = [f"{method} {target} HTTP/1.1\r\n".encode("ascii"), self._host_header]
        lines.extend(f"{name}: {value}\r\n".encode("latin-1") for name, value in headers)
        if body is not None or method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
            lines.append(f"Content-Length: {len(body or b'')}\r\n".encode("ascii"))
        lines.append(b"\r\n")
        if body:
            lines.append(body)
        return b"".join(lines)

    async def send(self, data: bytes, *, timeout: float, connect_timeout: float) -> Response:
        """Send one encoded request (`encode`) and return its whole answer within `timeout`
        seconds; the connection is made within `connect_timeout` of those."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        slot = self._slot(loop)
        try:
            async with asyncio.timeout(timeout):
                await slot.acquire()
        except TimeoutError as exc:
            raise ConnectTimeout(f"no free connection to {self.host}:{self.port} in time") from exc
        conn: _Connection | None = None
        try:
            conn = self._take_idle(loop)
            if conn is None:
                conn = await self._connect(loop, min(connect_timeout,
                                                     max(0.0, deadline - loop.time())))
            try:
                async with asyncio.timeout_at(deadline):
                    response = await conn.exchange(data)
            except TimeoutError as exc:
                raise ReadTimeout(f"{self.host}:{self.port} did not answer in time") from exc
            if not conn.closed:
                conn.idle_since = time.monotonic()
                self._idle.append(conn)
                conn = None
            return response
        finally:
            if conn is not None and (conn.closed or conn._waiter is not None):
                conn.close()  # failed or cancelled mid-request: its state is unknown
            slot.release()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
