"""Who is calling: service tokens between services, API keys from users.

Service auth: the caller presents its own token in `X-Service-Token`; the callee
maps it to the caller's name by comparing in constant time against every known
token, then checks the route's row in its explicit caller table. The table is
deny-by-default: a route without a row answers 403 to every caller.

User auth (gateway only): `Authorization: Bearer <key>`, matched by SHA-256 in
constant time against the home's key table, which is re-read when it changes
so `sonia keys create` takes effect without a restart.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request

from sonia.errors import Forbidden, Unauthenticated
from sonia.home import ApiKey, Home, match_api_key

SERVICE_TOKEN_HEADER = "x-service-token"


@dataclass(frozen=True)
class Caller:
    """An authenticated service caller."""

    name: str


class ServiceAuth:
    """Maps presented tokens to callers and enforces one service's caller table.

    `table` maps a route template ("/v1/decisions/{action_id}/approve") to the
    set of services that may call it.
    """

    def __init__(self, tokens: Mapping[str, str], table: Mapping[str, frozenset[str]]) -> None:
        self._tokens = [(name, token.encode()) for name, token in tokens.items()]
        self.table = dict(table)

    def identify(self, presented: str | None) -> Caller:
        if not presented:
            raise Unauthenticated("missing X-Service-Token")
        given = presented.encode()
        found: str | None = None
        for name, token in self._tokens:
            if hmac.compare_digest(token, given):
                found = name
        if found is None:
            raise Unauthenticated("unknown service token")
        return Caller(found)

    def authorize(self, caller: Caller, route: str) -> None:
        allowed = self.table.get(route, frozenset())
        if caller.name not in allowed:
            raise Forbidden(f"service {caller.name!r} may not call {route}")

    def dependency(self) -> Callable[[Request], Awaitable[Caller]]:
        """A FastAPI dependency for a router: authenticate, then check the table."""

        async def require_service(request: Request) -> Caller:
            caller = self.identify(request.headers.get(SERVICE_TOKEN_HEADER))
            route = getattr(request.scope.get("route"), "path", request.url.path)
            self.authorize(caller, route)
            request.state.caller = caller.name
            return caller

        return require_service


class UserKeys:
    """The gateway's view of user API keys, reloaded when the key file changes."""

    def __init__(self, home: Home) -> None:
        self.home = home
        self._stamp: tuple[int, int] | None = None
        self._table: list[tuple[bytes, ApiKey]] = []

    def _fresh_table(self) -> list[tuple[bytes, ApiKey]]:
        path: Path = self.home.api_keys_file
        try:
            st = path.stat()
        except FileNotFoundError:
            return []
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            self._table = self.home.api_key_table()
            self._stamp = stamp
        return self._table

    def authenticate(self, authorization: str | None) -> ApiKey:
        if not authorization:
            raise Unauthenticated("missing Authorization: Bearer <api key>")
        scheme, _, credential = authorization.partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            raise Unauthenticated("Authorization must be 'Bearer <api key>'")
        key = match_api_key(self._fresh_table(), credential.strip())
        if key is None:
            raise Unauthenticated("unknown API key")
        return key

    def by_id(self, key_id: str) -> ApiKey | None:
        """The key with id `key_id` as the key file says now (None once it is gone)."""
        return next((key for _, key in self._fresh_table() if key.id == key_id), None)

    def in_force(self, key_id: str, digest: bytes) -> ApiKey | None:
        """The key `key_id` if it is still in force with this very hash: None once it was
        revoked, or re-issued under its id with a new secret (a console session made with
        the old secret dies with it)."""
        found: ApiKey | None = None
        for stored, key in self._fresh_table():
            if key.id == key_id and hmac.compare_digest(stored, digest):
                found = key
        return found

    def dependency(self, role: str | None = None) -> Callable[[Request], Awaitable[ApiKey]]:
        """A FastAPI dependency: any valid key, or one with `role` (approver)."""

        async def require_user(request: Request) -> ApiKey:
            key = self.authenticate(request.headers.get("authorization"))
            if role is not None and key.role != role:
                raise Forbidden(f"this needs an {role} key; yours is a {key.role} key")
            request.state.caller = f"key:{key.id}"
            return key

        return require_user
