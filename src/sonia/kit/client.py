"""The internal HTTP client: how one service calls another.

Every call carries the caller's own service token and the current correlation
ID, has a timeout, and turns failures into Sonia's errors at this boundary: a
problem+json answer becomes the same ApiError again, a refused connection is
UNAVAILABLE, a call that runs out of time is TIMEOUT.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from sonia.errors import ApiError, Internal, Timeout, Unavailable, api_error_for
from sonia.kit import correlation
from sonia.kit.auth import SERVICE_TOKEN_HEADER
from sonia.kit.breaker import CircuitBreaker

DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=2.0)
KEEPALIVE_S = 2.0
"""Idle connections are dropped well before uvicorn's 5 s keep-alive closes them, so a
request is never sent on a connection the server is closing at that moment."""


def error_from_response(target: str, response: httpx.Response) -> ApiError:
    """Rebuild the ApiError a service answered, or describe a non-problem answer."""
    try:
        body = response.json()
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
                 timeout: httpx.Timeout = DEFAULT_TIMEOUT,
                 verify: ssl.SSLContext | bool = True) -> None:
        """`verify` checks an https:// target's certificate (kit/tls.py: the home's CA)."""
        self.target = target
        self.base_url = base_url
        self.breaker = CircuitBreaker(target)
        self._token = caller_token
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, verify=verify,
                                       limits=httpx.Limits(max_connections=200,
                                                           keepalive_expiry=KEEPALIVE_S))

    def _headers(self) -> dict[str, str]:
        return {SERVICE_TOKEN_HEADER: self._token, correlation.HEADER: correlation.current()}

    def _failure(self, exc: httpx.HTTPError, method: str, path: str) -> ApiError:
        """Count a failure to reach the target and translate it into Sonia's error."""
        self.breaker.failed()
        if isinstance(exc, httpx.TimeoutException):
            return Timeout(f"{self.target} did not answer {method} {path} in time")
        return Unavailable(f"{self.target} is unreachable: {type(exc).__name__}")

    def _options(self, json_body: Any, timeout: float | None) -> dict[str, Any]:
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
        kwargs = self._options(json_body, timeout) | {"params": params}
        self.breaker.before_call()
        attempts = 2 if method == "GET" else 1
        try:
            for attempt in range(attempts):
                try:
                    response = await self._http.request(method, path, **kwargs)
                    break
                except httpx.ConnectError as exc:
                    if attempt + 1 < attempts:
                        continue
                    raise self._failure(exc, method, path) from exc
                except httpx.TransportError as exc:
                    raise self._failure(exc, method, path) from exc
        except BaseException:
            self.breaker.abandoned()
            raise
        self.breaker.succeeded()
        if response.status_code >= 400:
            raise error_from_response(self.target, response)
        if not response.content:
            return None
        return response.json()

    @asynccontextmanager
    async def stream_lines(self, method: str, path: str, *, json_body: Any = None,
                           timeout: float | None = None) -> AsyncIterator[AsyncIterator[str]]:
        """Open a streaming request and yield an iterator over its lines."""
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
        try:
            response = await self._http.get("/readyz", timeout=2.0)
        except httpx.HTTPError as exc:
            untrusted = _certificate_refusal(exc)
            if untrusted is not None:
                raise Unavailable(f"{self.target}'s TLS certificate is not trusted: "
                                  f"{untrusted} (check tls.ca_file)") from exc
            raise Unavailable(f"{self.target} is unreachable: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise Unavailable(f"{self.target} is not ready ({response.status_code})")
        return {"url": self.base_url}

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """The target's /readyz as it answered, (ready, body), for a report that shows
        every check; an unreachable target is (False, {"status": "fail", "output": why})."""
        try:
            response = await self._http.get("/readyz", timeout=2.5)
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            return False, {"status": "fail", "output": f"no answer: {type(exc).__name__}"}
        return response.status_code == 200, body if isinstance(body, dict) else {}

    async def aclose(self) -> None:
        await self._http.aclose()


def sse_data(payload: Any) -> str:
    """One SSE event carrying `payload` as compact JSON (what `parse_sse_data` reads)."""
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def _certificate_refusal(exc: BaseException) -> str | None:
    """Why the target's certificate was refused, when that is why the call failed."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return str(seen.verify_message or seen.reason or "verification failed")
        seen = seen.__cause__ or seen.__context__
    return None


def parse_sse_data(line: str) -> Any | None:
    """The JSON payload of one `data:` line of an SSE stream (None for others and [DONE])."""
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if not data or data == "[DONE]":
        return None
    return json.loads(data)
