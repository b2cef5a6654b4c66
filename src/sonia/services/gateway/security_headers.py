"""Headers that make every gateway answer safe to open in a browser.

The gateway serves the console's pages and, to the same browser, JSON that holds
model output, file contents and memories: text an attacker may have written. So
every answer (pages, scripts, JSON, problems, streams) carries

    Content-Security-Policy   scripts, styles, images and fetches from this origin
                              only; no inline script, no eval, no plugins, no
                              <base>, no forms to elsewhere, no framing; and Trusted
                              Types, so a script that assigned a string to
                              `innerHTML` would be refused by the browser itself
    X-Content-Type-Options    nosniff: JSON is never run as a script or page
    X-Frame-Options           DENY, for browsers older than frame-ancestors
    Referrer-Policy           no-referrer
    Cross-Origin-Opener-Policy / -Resource-Policy   same-origin

An answer that already set one of them keeps its own.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_SECURITY_POLICY", "SECURITY_HEADERS", "SecurityHeadersMiddleware"]

CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "connect-src 'self'",
    "form-action 'self'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
    "require-trusted-types-for 'script'",
    "trusted-types 'none'",
))

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)


class SecurityHeadersMiddleware:
    """Adds `SECURITY_HEADERS` to every HTTP answer (pure ASGI: streams stay streams)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
