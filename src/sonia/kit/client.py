"""The internal HTTP client: how one service calls another.

Every call carries the caller's own service token and the current correlation
ID, has a timeout, and turns failures into Sonia's errors at this boundary: a
problem+json answer becomes the same ApiError again, a refused connection is
UNAVAILABLE, a call that runs out of time is TIMEOUT.

The transport is aiohttp's client session (its HTTP parser is llhttp, in C; TLS
is Python's own `ssl` with the context kit/tls.py makes). httpx cost the caller
about four times as much CPU per call, and the gateway makes three to five
internal calls per request (BENCHMARKS.md, issue 15). aiohttp's exceptions stop
here: callers see ApiErrors, and `failed_in_transport` answers the one question
a caller asks of the cause.

    ApiError (sonia.errors)
     ├── Unavailable   refused, reset or dropped connection; refused certificate;
     │                 circuit open; a 503 answer
     ├── Timeout       no connection or no complete answer in time
     └── ...           whatever problem+json the target answered
"""

from __future__ import annotations

import codecs
import functools
import json
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from sonia.errors import ApiError, Internal, Timeout, Unavailable, api_error_for
from sonia.kit import correlation
from sonia.kit.auth import SERVICE_TOKEN_HEADER
from sonia.kit.breaker import CircuitBreaker

__all__ = [
    "CONNECT_TIMEOUT_S",
    "DEFAULT_TIMEOUT_S",
    "KEEPALIVE_S",
    "MAX_CONNECTIONS",
    "ServiceClient",
    "error_from_response",
    "failed_in_transport",
]

DEFAULT_TIMEOUT_S = 10.0
"""The whole of a call, from asking for a connection to the last byte of the answer."""
CONNECT_TIMEOUT_S = 2.0
"""Opening one connection (TCP and the TLS handshake); never more than the call's own."""
KEEPALIVE_S = 2.0
"""Idle connections are dropped well before the services' own keep-alive (75 s,
services/runner.py) closes them, so a request is never sent on a connection the
server is closing at that moment."""
MAX_CONNECTIONS = 200

_TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError)
"""What can go wrong between sending and having the whole answer. aiohttp's own
timeouts (connect, read) are both ClientErrors and TimeoutErrors; its total
timeout is a plain TimeoutError."""


@functools.lru_cache(maxsize=32)
def _call_timeout(total: float) -> aiohttp.ClientTimeout:
    """A request's budget: `total` for all of it, of which at most 2 s to connect."""
    return aiohttp.ClientTimeout(total=total, sock_connect=min(total, CONNECT_TIMEOUT_S))


@functools.lru_cache(maxsize=32)
def _stream_timeout(between: float) -> aiohttp.ClientTimeout:
    """A stream's budget: `between` to get a connection and then for each read, no total
    (a generation streams for as long as it keeps producing)."""
    return aiohttp.ClientTimeout(total=None, connect=between,
                                 sock_connect=min(between, CONNECT_TIMEOUT_S),
                                 sock_read=between)


def error_from_response(target: str, status: int, body: bytes) -> ApiError:
    """Rebuild the ApiError a service answered, or describe a non-problem answer."""
    try:
        problem = json.loads(body)
    except ValueError:
        problem = None
    if isinstance(problem, dict) and isinstance(problem.get("code"), str):
        extra = {k: v for k, v in problem.items()
                 if k not in {"type", "title", "status", "detail", "code", "correlation_id"}}
        return api_error_for(problem["code"], str(problem.get("detail", "")), extra)
    if status == 503:
        return Unavailable(f"{target} answered 503")
    return Internal(f"{target} answered {status} without a problem body")


def failed_in_transport(error: ApiError) -> bool:
    """Whether `error` says the connection failed under the call (refused, reset, closed
    before the answer), as opposed to the target's answer or an open circuit."""
    return isinstance(error, Unavailable) and isinstance(error.__cause__, aiohttp.ClientError)


def _query_value(value: Any) -> str | int | float:
    """A query parameter as httpx wrote it (aiohttp refuses booleans and None)."""
    if value is True or value is False:
        return "true" if value else "false"
    if value is None:
        return ""
    return value if isinstance(value, str | int | float) else str(value)


def _encode(json_body: Any) -> bytes:
    """Compact UTF-8 JSON; NaN and infinities are refused rather than sent as non-JSON."""
    return json.dumps(json_body, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False).encode()


class ServiceClient:
    """Calls one target service on behalf of `caller`.

    Only idempotent reads (GET) are retried, once, and only when the connection
    could not be made, so a retry can never run a write twice.

    The aiohttp session is made on first use, inside the event loop that uses it
    (services build their clients before uvicorn starts the loop).
    """

    def __init__(self, caller_token: str, target: str, base_url: str,
                 timeout: float = DEFAULT_TIMEOUT_S,
                 verify: ssl.SSLContext | None = None) -> None:
        """`verify` checks an https:// target's certificate (kit/tls.py: the home's CA);
        without it, Python's default context (the system's store). It is never off."""
        self.target = target
        self.base_url = base_url
        self.breaker = CircuitBreaker(target)
        self._token = caller_token
        self._timeout = timeout
        self._verify = verify
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=MAX_CONNECTIONS, limit_per_host=0, keepalive_timeout=KEEPALIVE_S,
                ssl=self._verify if self._verify is not None else True)
            session = aiohttp.ClientSession(
                base_url=self.base_url, connector=connector,
                timeout=_call_timeout(self._timeout),
                cookie_jar=aiohttp.DummyCookieJar(),  # no state carried between calls
                trust_env=False)  # loopback and the home's hosts: never through a proxy
            # aiohttp resends an idempotent method (DELETE too) once when a kept-alive
            # connection fails under it; here only a GET is resent, and only when no
            # connection could be made (request below).
            session._retry_connection = False
            self._session = session
        return self._session

    def _headers(self, json_body: Any) -> dict[str, str]:
        headers = {SERVICE_TOKEN_HEADER: self._token, correlation.HEADER: correlation.current()}
        if json_body is not None:
            headers["Content-Type"] = "application/json"
        return headers

    def _failure(self, exc: BaseException, method: str, path: str) -> ApiError:
        """Count a failure to reach the target and translate it into Sonia's error."""
        self.breaker.failed()
        if isinstance(exc, TimeoutError):
            return Timeout(f"{self.target} did not answer {method} {path} in time")
        return Unavailable(f"{self.target} is unreachable: {type(exc).__name__}")

    async def request(self, method: str, path: str, *, json_body: Any = None,
                      params: Mapping[str, Any] | None = None,
                      timeout: float | None = None) -> Any:
        """Send a request and return the decoded JSON body (None for an empty body)."""
        data = None if json_body is None else _encode(json_body)
        query = None if params is None else {k: _query_value(v) for k, v in params.items()}
        # aiohttp reads `timeout=None` as "no timeout at all": the client's own budget
        # is passed every time (the chaos gate's delayed memory once waited 22 s).
        budget = _call_timeout(self._timeout if timeout is None else timeout)
        headers = self._headers(json_body)
        self.breaker.before_call()
        attempts = 2 if method == "GET" else 1
        try:
            for attempt in range(attempts):
                try:
                    async with self._http().request(
                            method, path, data=data, params=query, headers=headers,
                            timeout=budget, allow_redirects=False) as response:
                        status, body = response.status, await response.read()
                    break
                except aiohttp.ClientConnectorError as exc:
                    if attempt + 1 < attempts:
                        continue
                    raise self._failure(exc, method, path) from exc
                except _TRANSPORT_ERRORS as exc:
                    raise self._failure(exc, method, path) from exc
        except BaseException:
            self.breaker.abandoned()
            raise
        self.breaker.succeeded()
        if status >= 400:
            raise error_from_response(self.target, status, body)
        if not body:
            return None
        return json.loads(body)

    @asynccontextmanager
    async def stream_lines(self, method: str, path: str, *, json_body: Any = None,
                           timeout: float | None = None) -> AsyncIterator[AsyncIterator[str]]:
        """Open a streaming request and yield an iterator over its lines (without their
        line ends). `timeout` bounds getting the connection and each wait for more."""
        budget = _stream_timeout(self._timeout if timeout is None else timeout)
        data = None if json_body is None else _encode(json_body)
        self.breaker.before_call()
        try:
            try:
                response = await self._http().request(
                    method, path, data=data, headers=self._headers(json_body),
                    timeout=budget, allow_redirects=False)
            except _TRANSPORT_ERRORS as exc:
                raise self._failure(exc, method, path) from exc
            try:
                self.breaker.succeeded()
                if response.status >= 400:
                    body = await self._read_rest(response, method, path)
                    raise error_from_response(self.target, response.status, body)
                lines = self._lines(response, method, path)
                try:
                    yield lines
                finally:
                    await lines.aclose()
            finally:
                response.release()  # back to the pool if read to the end, else closed
        finally:
            self.breaker.abandoned()

    async def _read_rest(self, response: aiohttp.ClientResponse, method: str,
                         path: str) -> bytes:
        try:
            return await response.read()
        except _TRANSPORT_ERRORS as exc:
            raise self._failure(exc, method, path) from exc

    async def _lines(self, response: aiohttp.ClientResponse, method: str,
                     path: str) -> AsyncGenerator[str, None]:
        """The body's lines as they arrive, split on LF (a CR before it dropped), decoded
        as UTF-8 with replacement; no limit on a line's length."""
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        pending = ""
        try:
            async for chunk in response.content.iter_any():
                *lines, pending = (pending + decoder.decode(chunk)).split("\n")
                for line in lines:
                    yield line.removesuffix("\r")
        except _TRANSPORT_ERRORS as exc:
            raise self._failure(exc, method, path) from exc
        pending += decoder.decode(b"", final=True)
        if pending:
            yield pending.removesuffix("\r")

    async def _get_readyz(self, timeout: float) -> tuple[int, bytes]:
        async with self._http().get("/readyz", timeout=_call_timeout(timeout),
                                    allow_redirects=False) as response:
            return response.status, await response.read()

    async def ready(self) -> dict[str, Any]:
        """The target's /readyz; raises Unavailable unless it is ready."""
        try:
            status, _ = await self._get_readyz(2.0)
        except _TRANSPORT_ERRORS as exc:
            untrusted = _certificate_refusal(exc)
            if untrusted is not None:
                raise Unavailable(f"{self.target}'s TLS certificate is not trusted: "
                                  f"{untrusted} (check tls.ca_file)") from exc
            raise Unavailable(f"{self.target} is unreachable: {type(exc).__name__}") from exc
        if status != 200:
            raise Unavailable(f"{self.target} is not ready ({status})")
        return {"url": self.base_url}

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """The target's /readyz as it answered, (ready, body), for a report that shows
        every check; an unreachable target is (False, {"status": "fail", "output": why})."""
        try:
            status, raw = await self._get_readyz(2.5)
            body = json.loads(raw)
        except (*_TRANSPORT_ERRORS, ValueError) as exc:
            return False, {"status": "fail", "output": f"no answer: {type(exc).__name__}"}
        return status == 200, body if isinstance(body, dict) else {}

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _certificate_refusal(exc: BaseException) -> str | None:
    """Why the target's certificate was refused, when that is why the call failed (aiohttp's
    wrapper is itself an ssl.CertificateError; the reason is on the one it wraps)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError) and not isinstance(
                seen, aiohttp.ClientError):
            return str(seen.verify_message or seen.reason or "verification failed")
        seen = seen.__cause__ or seen.__context__
    return None

