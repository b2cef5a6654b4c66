"""The five open routes answer GET and HEAD without credentials; errors are problem+json."""

from __future__ import annotations

import httpx
import pytest

from sonia import SERVICES
from sonia.testing import FreshStack

pytestmark = pytest.mark.integration

OPEN_ROUTES = ("/livez", "/readyz", "/healthz", "/metrics", "/version")


@pytest.mark.parametrize("service", SERVICES)
def test_open_routes_answer_get_and_head_without_credentials(
    stack: FreshStack, service: str
) -> None:
    with httpx.Client(base_url=stack.url(service), timeout=10) as client:
        for route in OPEN_ROUTES:
            assert client.get(route).status_code == 200, route
            assert client.head(route).status_code == 200, route
        ready = client.get("/readyz")
        assert ready.headers["content-type"].startswith("application/health+json")
        assert ready.json()["status"] == "pass"
        metrics = client.get("/metrics").text
        assert "sonia_http_requests_total" in metrics


def test_open_routes_reveal_no_secret(stack: FreshStack) -> None:
    tokens = stack.home.all_tokens().values()
    for service in SERVICES:
        for route in OPEN_ROUTES:
            body = httpx.get(stack.url(service) + route, timeout=10).text
            assert not any(token in body for token in tokens)


def test_unknown_route_and_wrong_method_are_problems(stack: FreshStack) -> None:
    missing = httpx.get(stack.url("gateway") + "/v1/nothing-here", timeout=10)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    body = missing.json()
    assert set(body) >= {"type", "title", "status", "detail", "code", "correlation_id"}
    assert body["code"] == "NOT_FOUND"
    wrong = httpx.post(stack.url("gateway") + "/livez", timeout=10)
    assert (wrong.status_code, wrong.json()["code"]) == (405, "METHOD_NOT_ALLOWED")


def test_correlation_id_is_echoed_or_generated(stack: FreshStack) -> None:
    url = stack.url("gateway") + "/v1/whoami"
    given = httpx.get(url, headers=stack.user_headers(**{"X-Correlation-ID": "test-cid-42"}))
    assert given.headers["x-correlation-id"] == "test-cid-42"
    made = httpx.get(url, headers=stack.user_headers())
    assert len(made.headers["x-correlation-id"]) == 32
    for hostile in ("a;b c", "x" * 300, '"quoted"'):
        answer = httpx.get(url, headers=stack.user_headers(**{"X-Correlation-ID": hostile}))
        assert answer.headers["x-correlation-id"] != hostile, "malformed IDs are replaced"


def test_log_lines_are_json_with_the_request_fields(stack: FreshStack) -> None:
    import json

    from sonia.kit.deadline import wait_until

    httpx.get(stack.url("gateway") + "/v1/whoami",
              headers=stack.user_headers(**{"X-Correlation-ID": "log-probe-1"}))

    def line() -> dict[str, object] | None:
        for raw in stack.home.log_file("gateway").read_text().splitlines():
            entry = json.loads(raw)
            if entry.get("correlation_id") == "log-probe-1" and entry.get("route"):
                return dict(entry)
        return None

    entry = wait_until(line, timeout=10, what="access log line")
    assert entry["service"] == "gateway"
    assert entry["route"] == "/v1/whoami" and entry["status"] == 200
    assert isinstance(entry["duration_ms"], float)
    assert entry["level"] == "info"
