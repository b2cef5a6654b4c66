"""Who is calling the gateway: an API key, or a console session made from one.

Scripts and SDKs send `Authorization: Bearer <api key>` on every request. A
browser should not hold the key: the console exchanges it once
(`POST /v1/console/login`) for a session, and from then on the browser sends
only a cookie, which its scripts cannot read:

    sonia_session=<random 256 bits>; HttpOnly; SameSite=Strict; Path=/; Max-Age=...

The gateway keeps the SHA-256 of the session token (never the token), the key's
id and the hash of the key it was made with, and when it expires
(`gateway.console_session_hours`), in its database (`console_sessions`, in its
SQLite file or its PostgreSQL schema). Nothing of a session is the process's
own: the hashes and the CSRF token are plain SHA-256 with no per-process secret,
so gateways sharing one PostgreSQL database (and one `api_keys.json`) each
accept a session any of them made, and a sign-out on one ends it on all.
Every request checks that this very key is still in force, so revoking the key
(or re-issuing its id with a new secret) ends its sessions at once; signing out
deletes the row.

A cookie is sent by the browser on its own, so a request that changes anything
must also prove it comes from the console's own page: the `X-CSRF-Token` header
with the session's CSRF token (derived from the session token, so it needs no
storage and no other page can compute it), and, when the browser names one, an
`Origin` of this very host. SameSite=Strict already keeps the cookie off
cross-site requests; the token is the second lock. A bearer key needs neither: a
page elsewhere cannot make a browser send it.

WebSocket streams take only the bearer key, so no cookie can open one across sites.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Request
from starlette.responses import Response

from sonia.errors import Forbidden, Unauthenticated
from sonia.home import ApiKey
from sonia.kit.auth import UserKeys
from sonia.kit.portable import Conn, LedgerDatabase, serialise

__all__ = ["COOKIE", "CSRF_HEADER", "MIGRATIONS", "PG_MIGRATIONS", "Credentials", "WebSession",
           "remember"]

COOKIE = "sonia_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_SESSIONS_PER_KEY = 16
"""Console sessions one key may hold; a new sign-in drops the oldest past this."""

MIGRATIONS: list[str] = [
    """
    CREATE TABLE console_sessions (
        token_hash TEXT PRIMARY KEY,
        key_id TEXT NOT NULL,
        key_digest TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE INDEX console_sessions_key ON console_sessions (key_id, created_at);
    """,
]
"""Appended to the gateway's MIGRATIONS (state.py); never edit or reorder."""

PG_MIGRATIONS: list[str] = [
    """
    CREATE TABLE console_sessions (
        token_hash text PRIMARY KEY,
        key_id text NOT NULL,
        key_digest text NOT NULL,
        created_at double precision NOT NULL,
        expires_at double precision NOT NULL
    );
    CREATE INDEX console_sessions_key ON console_sessions (key_id, created_at);
    """,
]
"""The same table in the gateway's PostgreSQL schema (state.PG_MIGRATIONS); never edit
or reorder."""


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def remember(conn: Conn, token_hash: str, key_id: str, key_digest: str, now: float,
             expires: float) -> None:
    """Store a new console session; drop the expired ones, and the key's oldest past
    MAX_SESSIONS_PER_KEY. The key's sign-ins are serialised (`serialise`, first in the
    transaction), so sign-ins through several gateways at once still leave at most
    MAX_SESSIONS_PER_KEY: each one's trim sees every session committed before it."""
    serialise(conn, f"sonia-console-sessions:{key_id}")
    conn.execute("DELETE FROM console_sessions WHERE expires_at <= ?", (now,))
    conn.execute("INSERT INTO console_sessions (token_hash, key_id, key_digest,"
                 " created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                 (token_hash, key_id, key_digest, now, expires))
    conn.execute("DELETE FROM console_sessions WHERE key_id = ? AND token_hash NOT IN"
                 " (SELECT token_hash FROM console_sessions WHERE key_id = ?"
                 "  ORDER BY created_at DESC LIMIT ?)",
                 (key_id, key_id, MAX_SESSIONS_PER_KEY))


def csrf_token(token: str) -> str:
    """The CSRF token of a session: only who holds the (HttpOnly) session token can
    compute it, and the gateway never stores it."""
    return hashlib.sha256(b"sonia-console-csrf:" + token.encode()).hexdigest()


@dataclass(frozen=True)
class WebSession:
    """A console session as its owner may see it."""

    key: ApiKey
    csrf_token: str
    expires_at: float


class Credentials:
    """The gateway's user authentication: bearer keys, and console sessions."""

    def __init__(self, keys: UserKeys, db: LedgerDatabase, hours: float) -> None:
        self.keys = keys
        self.db = db
        self.lifetime = hours * 3600.0

    # ------------------------------------------------------------------ sessions

    async def sign_in(self, presented: str, response: Response) -> WebSession:
        """Exchange an API key for a session: the cookie goes on `response`."""
        key = self.keys.authenticate(f"Bearer {presented}")
        digest = hashlib.sha256(presented.strip().encode()).hexdigest()
        token = secrets.token_urlsafe(32)
        now = time.time()
        expires = now + self.lifetime

        await self.db.write(lambda c: remember(c, _token_hash(token), key.id, digest, now,
                                               expires))
        response.set_cookie(COOKIE, token, max_age=int(self.lifetime), path="/",
                            httponly=True, samesite="strict")
        return WebSession(key, csrf_token(token), expires)

    async def sign_out(self, request: Request, response: Response) -> bool:
        """End the request's console session (if it came with one) and clear the cookie."""
        token = request.cookies.get(COOKIE)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        if not token:
            return False
        await self.db.write(lambda c: c.execute(
            "DELETE FROM console_sessions WHERE token_hash = ?", (_token_hash(token),)))
        return True

    async def forget_key(self, key_id: str) -> None:
        """Delete the sessions of a revoked key (they no longer authenticate anyway)."""
        await self.db.write(lambda c: c.execute(
            "DELETE FROM console_sessions WHERE key_id = ?", (key_id,)))

    async def session_of(self, request: Request) -> WebSession:
        """The console session the request's cookie names; 401 when there is none, it
        expired, or its key is no longer in force."""
        token = request.cookies.get(COOKIE, "")
        row = await self.db.read(lambda c: c.execute(
            "SELECT key_id, key_digest, expires_at FROM console_sessions"
            " WHERE token_hash = ?", (_token_hash(token),)).fetchone()) if token else None
        if row is None or float(row[2]) <= time.time():
            raise Unauthenticated("no console session (or it expired): sign in again")
        key = self.keys.in_force(str(row[0]), bytes.fromhex(str(row[1])))
        if key is None:
            raise Unauthenticated("the key of this console session was revoked")
        return WebSession(key, csrf_token(token), float(row[2]))

    # ------------------------------------------------------------------ requests

    @staticmethod
    def check_origin(request: Request) -> None:
        """A browser's request that changes something must come from this host's pages."""
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
            raise Forbidden("this request came from another site's page")
        if request.headers.get("sec-fetch-site") == "cross-site":
            raise Forbidden("this request came from another site's page")

    async def authenticate(self, request: Request) -> ApiKey:
        authorization = request.headers.get("authorization")
        if authorization is not None or COOKIE not in request.cookies:
            return self.keys.authenticate(authorization)
        session = await self.session_of(request)
        if request.method not in SAFE_METHODS:
            self.check_origin(request)
            presented = request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(presented.encode(), session.csrf_token.encode()):
                raise Forbidden(f"a console request that changes something needs the "
                                f"session's {CSRF_HEADER} header")
        return session.key

    def dependency(self, role: str | None = None) -> Callable[[Request], Awaitable[ApiKey]]:
        """A FastAPI dependency: any valid key or console session, or one with `role`."""

        async def require_user(request: Request) -> ApiKey:
            key = await self.authenticate(request)
            if role is not None and key.role != role:
                raise Forbidden(f"this needs an {role} key; yours is a {key.role} key")
            request.state.caller = f"key:{key.id}"
            return key

        return require_user
