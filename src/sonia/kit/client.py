"""The internal HTTP client: how one service calls another.

Every call carries the caller's own service token and the current correlation
ID, has a timeout, and turns failures into Sonia's errors at this boundary: a
problem+json answer becomes the same ApiError again, a refused connection is
UNAVAILABLE, a call that runs out of time is TIMEOUT.

Plain requests go through `kit.http1` (a lean keep-alive HTTP/1.1 client: the
profiles showed httpx to be most of the gateway's CPU per request); streamed
answers (SSE from the router) go through httpx, made on first use.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, urlencode, urlsplit

from sonia.errors import ApiError, Internal, Timeout, Unavailable, api_error_for
from sonia.kit import correlation, http1
from sonia.kit.auth import SERVICE_TOKEN_HEADER
from sonia.kit.breaker import CircuitBreaker

PATH_SAFE = "/:@!$&'()*+,;=-._~"
"""Characters left as they are in a request path; everything else, `%`, `?` and `#`
included, is percent-encoded, so an id taken from a caller's path reaches the
target service as exactly that id."""

if TYPE_CHECKING:
    import httpx


@dataclass(frozen=True)
class Timeouts:
    """Seconds for a whole call (`read`) and for making its connection (`connect`)."""

    read: float
    connect: float


DEFAULT_TIMEOUT = Timeouts(read=10.0, connect=2.0)
KEEPALIVE_S = 2.0
"""Idle connections are dropped well before uvicorn's 5 s keep-alive closes them, so a
request is never sent on a connection the server is closing at that moment."""


class _Answer(Protocol):
    @property
    def status_code(self) -> int: ...

    @property
    def content(self) -> bytes: ...


def error_from_response(target: str, response: _Answer) -> ApiError:
    """Rebuild the ApiError a service answered, or describe a non-problem answer."""
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        extra = {k: v for k, v in body.items()
                 if k not in {"type", "title", "status", "detail", "code", "correlation_id"}}
        return api_error_for(body["code"], str(body.get("detail", "")), extra)
    if response.status_code == 503:
        return Unavailable(f"{target} answered 503")
    return Internal(f"{target} answered {response.status_code} without a problem body")


class ServiceClient:
    """Calls one target service on behalf of `caller`.

    Only idempotent reads (GET) are retried, once, and only when the connection
    could not be made, so a retry can never run a write twice.
    """

    def __init__(self, caller_token: str, target: str, base_url: str,
                 timeout: Timeouts = DEFAULT_TIMEOUT) -> None:
        self.target = target
        self.base_url = base_url
        self.breaker = CircuitBreaker(target)
        self._token = caller_token
        self._timeout = timeout
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"an internal client needs http://host:port, not {base_url!r}")
        self._pool = http1.Http1Pool(parts.hostname, parts.port, keepalive_s=KEEPALIVE_S,
                                     max_connections=200)
        self._stream_http: httpx.AsyncClient | None = None

    @property
    def _http(self) -> httpx.AsyncClient:
        """The httpx client for streamed answers, made (and httpx imported: 5 MiB and a
        hundred modules) on first use, in the services that stream."""
        import httpx

        if self._stream_http is None:
            self._stream_http = httpx.AsyncClient(
                base_url=self.base_url,
                timeout=httpx.Timeout(self._timeout.read, connect=self._timeout.connect),
                limits=httpx.Limits(max_connections=200, keepalive_expiry=KEEPALIVE_S))
        return self._stream_http

    def _headers(self) -> dict[str, str]:
        return {SERVICE_TOKEN_HEADER: self._token, correlation.HEADER: correlation.current()}

    def _failure(self, exc: httpx.HTTPError | http1.HttpError, method: str,
                 path: str) -> ApiError:
        """Count a failure to reach the target and translate it into Sonia's error."""
        self.breaker.failed()
        timed_out = isinstance(exc, http1.ReadTimeout | http1.ConnectTimeout)
        if not isinstance(exc, http1.HttpError):
            import httpx

            timed_out = isinstance(exc, httpx.TimeoutException)
        if timed_out:
            return Timeout(f"{self.target} did not answer {method} {path} in time")
        return Unavailable(f"{self.target} is unreachable: {type(exc).__name__}")

    def _encode(self, method: str, path: str, json_body: Any,
                params: dict[str, Any] | None) -> bytes:
        """The request's bytes: path and query percent-encoded, JSON as httpx would send it
        (compact UTF-8, no NaN)."""
        target = quote(path, safe=PATH_SAFE)
        if params:
            target += "?" + urlencode([(k, _query_value(v)) for k, v in params.items()])
        headers = [(SERVICE_TOKEN_HEADER, self._token),
                   (correlation.HEADER, correlation.current()),
                   ("Accept", "application/json")]
        body = None
        if json_body is not None:
            body = json.dumps(json_body, ensure_ascii=False, separators=(",", ":"),
                              allow_nan=False).encode("utf-8")
            headers.append(("Content-Type", "application/json"))
        return self._pool.encode(method, target, headers, body)

    def _options(self, json_body: Any, timeout: float | None) -> dict[str, Any]:
        import httpx

        kwargs: dict[str, Any] = {"headers": self._headers()}
        if json_body is not None:
            kwargs["json"] = json_body
        if timeout is not None:
            kwargs["timeout"] = httpx.Timeout(timeout, connect=min(timeout, 2.0))
        return kwargs

    async def request(self, method: str, path: str, *, json_body: Any = None,
                      params: dict[str, Any] | None = None,
                      timeout: float | None = None) -> Any:
        """Send a request and return the decoded JSON body (None for an empty body)."""
        data = self._encode(method, path, json_body, params)
        total = timeout if timeout is not None else self._timeout.read
        connect = min(total, self._timeout.connect)
        self.breaker.before_call()
        attempts = 2 if method == "GET" else 1
        try:
            for attempt in range(attempts):
                try:
                    response = await self._pool.send(data, timeout=total,
                                                     connect_timeout=connect)
                    break
                except http1.ConnectError as exc:
                    if attempt + 1 < attempts:
                        continue
                    raise self._failure(exc, method, path) from exc
                except http1.HttpError as exc:
                    raise self._failure(exc, method, path) from exc
        except BaseException:
            self.breaker.abandoned()
            raise
        self.breaker.succeeded()
        if response.status_code >= 400:
            raise error_from_response(self.target, response)
        if not response.content:
            return None
        return json.loads(response.content)

    @asynccontextmanager
    async def stream_lines(self, method: str, path: str, *, json_body: Any = None,
                           timeout: float | None = None) -> AsyncIterator[AsyncIterator[str]]:
        """Open a streaming request and yield an iterator over its lines."""
        import httpx

        self.breaker.before_call()
        try:
            async with self._http.stream(method, path,
                                         **self._options(json_body, timeout)) as response:
                self.breaker.succeeded()
                if response.status_code >= 400:
                    await response.aread()
                    raise error_from_response(self.target, response)
                yield response.aiter_lines()
        except httpx.TransportError as exc:
            raise self._failure(exc, method, path) from exc
        finally:
            self.breaker.abandoned()

    async def ready(self) -> dict[str, Any]:
        """The target's /readyz; raises Unavailable unless it is ready."""
        data = self._pool.encode("GET", "/readyz", [], None)
        try:
            response = await self._pool.send(data, timeout=2.0, connect_timeout=2.0)
        except http1.HttpError as exc:
            raise Unavailable(f"{self.target} is unreachable: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise Unavailable(f"{self.target} is not ready ({response.status_code})")
        return {"url": self.base_url}

    async def aclose(self) -> None:
        self._pool.close()
        if self._stream_http is not None:
            await self._stream_http.aclose()
            self._stream_http = None


def _query_value(value: Any) -> str:
    """A query value as httpx writes it: booleans lower-case, None empty."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return ""
    return str(value)


def parse_sse_data(line: str) -> Any | None:
    """The JSON payload of one `data:` line of an SSE stream (None for others and [DONE])."""
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if not data or data == "[DONE]":
        return None
    return json.loads(data)
