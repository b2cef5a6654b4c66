"""Every internal route refuses a missing, wrong or unlisted service token."""

from __future__ import annotations

import httpx
import pytest

from sonia import SERVICES
from sonia.gates.fresh_stack import FreshStack
from sonia.kit.runner import build_app

pytestmark = pytest.mark.integration


def caller_table(stack: FreshStack, service: str) -> dict[str, frozenset[str]]:
    app, _ = build_app(service, stack.home)
    return dict(app.state.callers)


def concrete(path: str) -> str:
    return path.replace("{", "").replace("}", "")


def method_of(stack: FreshStack, service: str, path: str) -> str:
    app, _ = build_app(service, stack.home)
    return str(app.state.service_methods[path][0])


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_route_refuses_missing_wrong_and_unlisted_tokens(
    stack: FreshStack, service: str
) -> None:
    table = caller_table(stack, service)
    if service == "gateway":
        assert table == {}, "the gateway has no internal routes"
        return
    assert table, f"{service} has no authenticated route"
    base = stack.url(service)
    with httpx.Client(base_url=base, timeout=10) as client:
        for path, allowed in table.items():
            method = method_of(stack, service, path)
            url = concrete(path)
            missing = client.request(method, url)
            assert (missing.status_code, missing.json()["code"]) == (401, "UNAUTHENTICATED")
            wrong = client.request(method, url, headers={"X-Service-Token": "x" * 43})
            assert (wrong.status_code, wrong.json()["code"]) == (401, "UNAUTHENTICATED")
            token = stack.token("gateway")
            in_query = client.request(method, url,
                                      params={"token": token, "X-Service-Token": token})
            assert in_query.status_code == 401, "a token in the query string is never read"
            for other in SERVICES:
                if other in allowed:
                    continue
                refused = client.request(method, url, headers=stack.service_headers(other))
                assert (refused.status_code, refused.json()["code"]) == (403, "FORBIDDEN"), (
                    f"{other} calling {service} {path}"
                )


def test_an_allowed_caller_gets_through(stack: FreshStack) -> None:
    response = httpx.get(stack.url("eva") + "/v1/grant-key",
                         headers=stack.service_headers("openclaw"), timeout=10)
    assert response.status_code == 200
    assert response.json()["alg"] == "EdDSA"


def test_user_routes_need_a_valid_key(stack: FreshStack) -> None:
    url = stack.url("gateway") + "/v1/whoami"
    assert httpx.get(url).json()["code"] == "UNAUTHENTICATED"
    wrong = httpx.get(url, headers={"Authorization": "Bearer sk-sonia-000-nope"})
    assert (wrong.status_code, wrong.json()["code"]) == (401, "UNAUTHENTICATED")
    basic = httpx.get(url, headers={"Authorization": f"Basic {stack.user_key}"})
    assert basic.status_code == 401
    ok = httpx.get(url, headers=stack.approver_headers())
    assert ok.status_code == 200 and ok.json()["role"] == "approver"
