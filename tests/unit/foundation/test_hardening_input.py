"""Issue 10, finding 4: undecodable input is 400 on every route of every service, and
an unhandled error never writes the request body to the log.

Each service's real app (its real routers, middleware and database, in a fresh home)
is driven through Starlette's TestClient; the log is a real file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, Request
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse

from sonia import SERVICES
from sonia.home import Home
from sonia.kit.app import ServiceContext, ServiceParts, create_app
from sonia.kit.logs import configure_logging
from sonia.redact import Redactor
from sonia.services.runner import build_app

LONE = b'{"text": "\\ud800", "content": "\\udfff", "args": ["\\ud800"], "path": "\\ud800"}'
BAD_BYTES = b'{"text": "\xff\xfe"}'
PAIR = b'{"text": "\\ud83d\\ude00"}'
CANARY = "canary-7f3c1a9e-body-must-not-reach-the-log"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    home = Home.at(tmp_path_factory.mktemp("home"))
    home.init(base_port=7000)
    return home


def _headers(home: Home, service: str, user_key: str) -> dict[str, str]:
    if service == "gateway":
        return {"Authorization": f"Bearer {user_key}"}
    return {"X-Service-Token": home.read_token("gateway")}


def _flat(routes: list[Any]) -> Iterator[Any]:
    """The routes of an app, through FastAPI's included-router wrappers."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _flat(inner.routes)
        else:
            yield route


def _routes(service: str, home: Home) -> Iterator[tuple[str, str]]:
    app, _ = build_app(service, home)
    for route in _flat(app.routes):
        if isinstance(route, APIRoute):
            path = route.path_format.replace("{", "").replace("}", "")
            for method in sorted((route.methods or set()) - {"HEAD"}):
                yield method, path


def _all_routes(home: Home) -> list[tuple[str, str, str]]:
    return [(service, method, path) for service in SERVICES
            for method, path in _routes(service, home)]


@pytest.mark.parametrize("service", SERVICES)
def test_finding_4_surrogate_is_400_everywhere(home: Home, service: str) -> None:
    """Every HTTP route of the service answers 400 INVALID_ARGUMENT to a JSON body with
    lone surrogates, to a body that is not UTF-8, to a path segment and to a query value
    that are not UTF-8 once percent-decoded: never 500, never a handler run."""
    user_key = home.create_api_key("user")
    app, _ = build_app(service, home)
    routes = list(_routes(service, home))
    assert routes, service
    headers = _headers(home, service, user_key) | {"content-type": "application/json"}
    with TestClient(app, raise_server_exceptions=False) as client:
        for method, path in routes:
            cases = [("surrogate body", path, "", LONE), ("bytes body", path, "", BAD_BYTES),
                     ("query", path, "q=%ED%A0%80&limit=%FF", b"")]
            if "/" in path.strip("/"):
                cases.append(("path", path.rstrip("/") + "%ED%A0%80", "", b""))
            for what, url, query, body in cases:
                target = url + (f"?{query}" if query else "")
                response = client.request(method, target, content=body or None,
                                          headers=headers)
                assert response.status_code == 400, (what, method, target, response.text)
                problem = response.json()
                assert problem["code"] == "INVALID_ARGUMENT", (what, method, target)
                assert response.headers["content-type"] == "application/problem+json"


def test_a_surrogate_pair_is_a_character_and_passes(home: Home) -> None:
    """An escaped pair (an emoji) is text: the guard lets it through to the route."""
    user_key = home.create_api_key("user")
    app, _ = build_app("gateway", home)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/v1/memory", content=PAIR.replace(b"text", b"content"),
                               headers={"Authorization": f"Bearer {user_key}",
                                        "content-type": "application/json"})
        assert response.status_code != 400 or "surrogate" not in response.text


def test_finding_4_deep_nesting_is_400_not_500(home: Home) -> None:
    user_key = home.create_api_key("user")
    app, _ = build_app("gateway", home)
    body = b'{"a": ' + b"[" * 200_000 + b'"\\ud800"' + b"]" * 200_000 + b"}"
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/v1/chat", content=body,
                               headers={"Authorization": f"Bearer {user_key}",
                                        "content-type": "application/json"})
    assert response.status_code in (400, 413), response.text


def test_finding_4_an_unhandled_error_logs_no_body(home: Home, tmp_path: Path) -> None:
    """A bug whose exception holds the request body (as UnicodeEncodeError holds the
    string it failed on) is logged as type, frames and correlation id: the canary
    planted in the body is nowhere in the log file, and the answer is 500 problem+json."""
    settings = home.check()
    ctx = ServiceContext(name="memory", home=home, settings=settings, tokens=home.all_tokens())
    router = APIRouter()

    @router.post("/v1/explode")
    async def explode(request: Request) -> None:
        body = (await request.body()).decode()
        body.encode("ascii")  # UnicodeEncodeError, whose .object is the whole body

    @router.post("/v1/explode-repr")
    async def explode_repr(request: Request) -> None:
        raise RuntimeError(await request.body())

    app = create_app(ctx, ServiceParts(user_routers=[router]))
    log_file = tmp_path / "memory.log"
    configure_logging("memory", log_file, redact=Redactor(ctx.tokens.values()).redact)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            body = json.dumps({"text": f"é {CANARY} " + "sk-" * 50_000}, ensure_ascii=False)
            for route in ("/v1/explode", "/v1/explode-repr"):
                response = client.post(route, content=body.encode(),
                                       headers={"x-correlation-id": "corr-canary-1"})
                assert response.status_code == 500
                assert response.json()["code"] == "INTERNAL"
    finally:
        for handler in logging.getLogger().handlers:
            handler.flush()
    text = log_file.read_text()
    assert CANARY not in text
    assert "sk-sk-sk-" not in text
    errors = [json.loads(line) for line in text.splitlines()
              if json.loads(line)["level"] == "error"]
    logged = " ".join(e["msg"] + e.get("exc", "") for e in errors)
    assert "UnicodeEncodeError" in logged and "RuntimeError" in logged
    assert "explode" in logged  # the frame that raised, so the bug can be found
    assert {e["correlation_id"] for e in errors} >= {"corr-canary-1"}
    assert all(len(line) < 8192 for line in text.splitlines())


def test_every_service_has_routes_to_check(home: Home) -> None:
    """The parametrised test walks the apps' own route tables, so a new route is covered
    the day it is added; every service has HTTP routes there."""
    assert {service for service, _, _ in _all_routes(home)} == set(SERVICES)


@pytest.mark.parametrize(("service", "url"), [
    ("gateway", "/v1/sessions/%ED%A0%80/stream"),
    ("gateway", "/v1/sessions/s/stream?x=%C0"),
    ("voice", "/v1/sessions/%ED%A0%80/stream"),
])
def test_finding_4_websocket_urls_that_are_not_utf8_are_refused(
    home: Home, service: str, url: str,
) -> None:
    app, _ = build_app(service, home)
    assert any(isinstance(r, APIWebSocketRoute | WebSocketRoute) for r in _flat(app.routes))
    with TestClient(app, raise_server_exceptions=False) as client:
        with pytest.raises(WebSocketDenialResponse) as denied:
            with client.websocket_connect(url):
                pass
    assert denied.value.status_code == 400
    assert denied.value.json()["code"] == "INVALID_ARGUMENT"
