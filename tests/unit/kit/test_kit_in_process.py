"""What every service gets from the kit, checked on one service at a time in-process.

No ports and no processes: each app is built by the same factory the service
process uses and driven through Starlette's TestClient. Cross-service flows are
in tests/integration/.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from sonia import SERVICES
from sonia.home import Home
from sonia.services.runner import build_app
from sonia.testing import in_process

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    home = Home.at(tmp_path_factory.mktemp("home"))
    home.init(base_port=47000)  # nothing listens: every service runs in-process
    return home


@pytest.fixture()
def memory(home: Home) -> Iterator[TestClient]:
    with in_process("memory", home) as client:
        yield client


def service_headers(home: Home, caller: str) -> dict[str, str]:
    return {"X-Service-Token": home.read_token(caller)}


def concrete(path: str) -> str:
    return path.replace("{", "").replace("}", "")


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_route_refuses_missing_wrong_and_unlisted_tokens(
    home: Home, service: str
) -> None:
    app, _ = build_app(service, home)
    table: dict[str, frozenset[str]] = dict(app.state.callers)
    if service == "gateway":
        assert table == {"/internal/v1/turns": frozenset({"voice"})}, (
            "the gateway's one internal route: the voice service's agent turns")
    assert table, f"{service} has no authenticated route"
    with in_process(service, home) as client:
        for path, allowed in table.items():
            method = app.state.service_methods[path][0]
            url = concrete(path)
            missing = client.request(method, url)
            assert (missing.status_code, missing.json()["code"]) == (401, "UNAUTHENTICATED")
            wrong = client.request(method, url, headers={"X-Service-Token": "x" * 43})
            assert (wrong.status_code, wrong.json()["code"]) == (401, "UNAUTHENTICATED")
            token = home.read_token("gateway")
            in_query = client.request(method, url,
                                      params={"token": token, "X-Service-Token": token})
            assert in_query.status_code == 401, "a token in the query string is never read"
            for other in SERVICES:
                if other in allowed:
                    continue
                refused = client.request(method, url, headers=service_headers(home, other))
                assert (refused.status_code, refused.json()["code"]) == (403, "FORBIDDEN"), (
                    f"{other} calling {service} {path}"
                )


def test_an_allowed_caller_gets_through(home: Home) -> None:
    with in_process("eva", home) as eva:
        response = eva.get("/v1/grant-key", headers=service_headers(home, "openclaw"))
    assert response.status_code == 200
    assert response.json()["alg"] == "EdDSA"


def test_user_routes_need_a_valid_key(home: Home) -> None:
    approver = home.create_api_key("approver")
    with in_process("gateway", home) as gateway:
        assert gateway.get("/v1/whoami").json()["code"] == "UNAUTHENTICATED"
        wrong = gateway.get("/v1/whoami", headers={"Authorization": "Bearer sk-sonia-000-nope"})
        assert (wrong.status_code, wrong.json()["code"]) == (401, "UNAUTHENTICATED")
        basic = gateway.get("/v1/whoami", headers={"Authorization": f"Basic {approver}"})
        assert basic.status_code == 401
        ok = gateway.get("/v1/whoami", headers={"Authorization": f"Bearer {approver}"})
        assert ok.status_code == 200 and ok.json()["role"] == "approver"


def test_an_unknown_route_is_problem_json_not_found(memory: TestClient) -> None:
    response = memory.get("/v1/no-such-route")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["code"] == "NOT_FOUND"


def test_a_wrong_method_is_problem_json_method_not_allowed(memory: TestClient) -> None:
    response = memory.delete("/livez")
    assert response.status_code == 405
    assert response.json()["code"] == "METHOD_NOT_ALLOWED"


def test_a_correlation_id_is_echoed_and_one_is_made_when_absent(memory: TestClient) -> None:
    given = memory.get("/livez", headers={"X-Correlation-ID": "abc-123"})
    assert given.headers["X-Correlation-ID"] == "abc-123"
    made = memory.get("/livez")
    assert made.headers["X-Correlation-ID"], "every answer carries a correlation ID"
    assert made.headers["X-Correlation-ID"] != "abc-123"


def test_an_oversized_body_is_refused_before_the_handler(home: Home, memory: TestClient) -> None:
    limit = home.check().gateway.max_body_bytes
    response = memory.post("/v1/memories", content=b"x" * (limit + 1),
                           headers={**service_headers(home, "gateway"),
                                    "content-type": "application/json"})
    assert (response.status_code, response.json()["code"]) == (413, "PAYLOAD_TOO_LARGE")


def test_readiness_says_which_dependency_is_missing(home: Home) -> None:
    with in_process("gateway", home) as gateway:  # nothing else runs
        ready = gateway.get("/readyz")
    assert ready.status_code == 503
    assert "memory" in ready.text

