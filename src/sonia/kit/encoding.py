"""Refuse text no service can store or forward: 400 INVALID_ARGUMENT, never 500.

A lone surrogate (`"\\ud800"` is valid JSON) or bytes that are not UTF-8 decode
into a Python string that later fails to encode: in httpx when a service forwards
it, in SQLite when it stores it, in the log when it writes it. Each of those was a
500 (issue 10, finding 4). This middleware checks once, before any route runs:

    path and query string   percent-decoded, must be UTF-8
    text bodies             JSON, text/* and form bodies (and bodies without a
                            content type, which FastAPI reads as JSON) must be
                            UTF-8, and a JSON body must hold no lone surrogate

Binary bodies are not looked at. The body is read once (the body limit, outside
this middleware, has already capped it) and handed on unchanged. `check_text`
is the same rule for text that arrives another way (WebSocket messages).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from sonia.errors import InvalidArgument
from sonia.kit.problems import problem_response
from sonia.kit.websocket import refuse

_SURROGATE_ESCAPE = re.compile(rb"\\[uU][dD][89a-fA-F]")
"""Where a JSON text can hold a surrogate: only as an escape, since strict UTF-8
decoding refuses an encoded one. Lone or paired is settled by encoding the parsed
value (a pair decodes to one character and encodes; a lone one does not)."""

_TEXT_TYPES = ("application/json", "application/x-www-form-urlencoded", "text/")


def check_url(scope: Scope) -> None:
    """InvalidArgument when the percent-decoded path or query string is not UTF-8."""
    raw_path = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "surrogatepass")
    for part, what in ((raw_path, "path"), (scope.get("query_string", b""), "query string")):
        try:
            unquote_to_bytes(part).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidArgument(f"the {what} is not valid UTF-8 once percent-decoded") from None


def check_body(body: bytes, content_type: str) -> None:
    """InvalidArgument when a text body is not UTF-8 or a JSON body holds a lone surrogate."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media and not (media.startswith(_TEXT_TYPES) or media.endswith("+json")):
        return
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgument(
            f"the request body is not valid UTF-8 (byte {exc.start})") from None
    if _SURROGATE_ESCAPE.search(body) and (not media or "json" in media):
        try:
            value = json.loads(text)
        except ValueError:
            return  # not JSON: the route's own validation answers 400
        except RecursionError:
            raise InvalidArgument("the JSON body is nested too deeply") from None
        check_text(value)


def check_text(value: Any) -> None:
    """InvalidArgument when any string in a decoded JSON value holds a lone surrogate."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgument(
            f"a string holds a lone surrogate (U+{ord(exc.object[exc.start]):04X}), which "
            f"is not a character") from None
    except RecursionError:
        raise InvalidArgument("the JSON value is nested too deeply") from None


class EncodingGuardMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        try:
            check_url(scope)
        except InvalidArgument as error:
            if scope["type"] == "websocket":
                await refuse(WebSocket(scope, receive, send), error)
            else:
                await problem_response(error)(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        content_type = ""
        for name, value in scope.get("headers", []):
            if name == b"content-type":
                content_type = value.decode("latin-1")
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message], receive), send)
                return
            chunks.append(message.get("body", b""))
            more = bool(message.get("more_body", False))
        body = b"".join(chunks)
        try:
            check_body(body, content_type)
        except InvalidArgument as error:
            await problem_response(error)(scope, receive, send)
            return
        first: Message = {"type": "http.request", "body": body, "more_body": False}
        await self.app(scope, _replay([first], receive), send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive that hands out `messages` first, then defers to the real one."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
