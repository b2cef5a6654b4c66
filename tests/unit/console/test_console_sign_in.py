"""Signing in to the console: an API key is exchanged once for a session cookie that
the page's scripts cannot read, and every request that changes something must also
carry the session's CSRF token. The session dies with its key. Each test runs on a
gateway whose database is a SQLite file and on one whose database is PostgreSQL."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backends import Backend
from starlette.testclient import TestClient

from sonia.home import Home
from sonia.kit.portable import Conn, open_ledger_database
from sonia.services.gateway.state import MIGRATIONS, PG_MIGRATIONS
from sonia.services.gateway.web_sessions import COOKIE
from sonia.testing import in_process


@pytest.fixture
def home(tmp_path: Path, backend: Backend) -> Home:
    made = Home.at(tmp_path / "home")
    made.init(base_port=17000)
    backend.configure(made)
    return made


def gateway_sql(home: Home, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """`sql` in one transaction on the gateway's database, wherever `home` keeps it."""
    database = open_ledger_database(home, home.settings(), service="gateway",
                                    sqlite_migrations=MIGRATIONS,
                                    postgres_migrations=PG_MIGRATIONS)
    database.open()
    try:
        def run(conn: Conn) -> list[Any]:
            cursor = conn.execute(sql, params)
            return [tuple(row) for row in cursor.fetchall()] if sql.startswith("SELECT") else []
        return database.write_sync(run)
    finally:
        database.close()


@pytest.fixture
def gateway(home: Home) -> Iterator[TestClient]:
    with in_process("gateway", home) as client:
        yield client


def sign_in(gateway: TestClient, key: str) -> str:
    answer = gateway.post("/v1/console/login", json={"key": key})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["csrf_token"])


def test_the_cookie_is_http_only_same_site_strict_and_expires(home: Home,
                                                                gateway: TestClient) -> None:
    key = home.create_api_key("user")
    answer = gateway.post("/v1/console/login", json={"key": key})
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    for attribute in ("HttpOnly", "SameSite=strict", "Path=/", "Max-Age=43200"):
        assert attribute in cookie
    assert key not in cookie and key not in answer.text
    body = answer.json()
    assert (body["key_id"], body["role"]) == (key.split("-")[2], "user")
    assert answer.headers["cache-control"] == "no-store"


def test_a_wrong_key_gets_no_session(gateway: TestClient) -> None:
    answer = gateway.post("/v1/console/login", json={"key": "sk-sonia-000000000000-nope"})
    assert (answer.status_code, answer.json()["code"]) == (401, "UNAUTHENTICATED")
    assert "set-cookie" not in answer.headers


def test_the_cookie_reads_and_a_change_needs_the_csrf_token(home: Home,
                                                              gateway: TestClient) -> None:
    csrf = sign_in(gateway, home.create_api_key("user"))
    assert gateway.get("/v1/whoami").json()["role"] == "user"
    assert gateway.get("/v1/console/session").json()["csrf_token"] == csrf
    missing = gateway.post("/v1/sessions", json={"mode": "text"})
    assert (missing.status_code, missing.json()["code"]) == (403, "FORBIDDEN")
    wrong = gateway.post("/v1/sessions", json={"mode": "text"},
                         headers={"X-CSRF-Token": "0" * 64})
    assert wrong.status_code == 403
    right = gateway.post("/v1/sessions", json={"mode": "text"}, headers={"X-CSRF-Token": csrf})
    assert right.status_code == 201, right.text


def test_a_page_of_another_site_is_refused_even_with_the_token(home: Home,
                                                                 gateway: TestClient) -> None:
    csrf = sign_in(gateway, home.create_api_key("user"))
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        refused = gateway.post("/v1/sessions", json={"mode": "text"},
                               headers={"X-CSRF-Token": csrf, **headers})
        assert (refused.status_code, refused.json()["code"]) == (403, "FORBIDDEN")
    same = gateway.post("/v1/sessions", json={"mode": "text"},
                        headers={"X-CSRF-Token": csrf, "Origin": "http://127.0.0.1"})
    assert same.status_code == 201, same.text


def test_a_bearer_key_needs_no_csrf_token(home: Home, gateway: TestClient) -> None:
    key = home.create_api_key("user")
    answer = gateway.post("/v1/sessions", json={"mode": "text"},
                          headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 201, answer.text
    assert gateway.get("/v1/console/session",
                       headers={"Authorization": f"Bearer {key}"}).json()["csrf_token"] is None


def test_signing_out_ends_the_session(home: Home, gateway: TestClient) -> None:
    csrf = sign_in(gateway, home.create_api_key("user"))
    token = gateway.cookies[COOKIE]
    out = gateway.post("/v1/console/logout", headers={"X-CSRF-Token": csrf})
    assert out.json()["signed_out"] is True
    gateway.cookies.set(COOKIE, token)  # a copy of the cookie kept by someone
    assert gateway.get("/v1/whoami").status_code == 401


def test_revoking_the_key_ends_its_sessions(home: Home, gateway: TestClient) -> None:
    key = home.create_api_key("approver")
    sign_in(gateway, key)
    assert gateway.get("/v1/whoami").status_code == 200
    home.revoke_api_key(key.split("-")[2])  # `sonia keys revoke`, on the machine
    answer = gateway.get("/v1/whoami")
    assert (answer.status_code, answer.json()["code"]) == (401, "UNAUTHENTICATED")


def test_a_key_reissued_under_its_id_does_not_revive_old_sessions(
        home: Home, gateway: TestClient) -> None:
    lost = home.create_api_key("user")
    sign_in(gateway, lost)
    home.revoke_api_key(lost.split("-")[2])
    home.create_api_key("user", lost.split("-")[2])
    assert gateway.get("/v1/whoami").status_code == 401


def test_an_expired_session_is_refused(home: Home, gateway: TestClient) -> None:
    sign_in(gateway, home.create_api_key("user"))
    gateway_sql(home, "UPDATE console_sessions SET expires_at = 1.0")
    answer = gateway.get("/v1/whoami")
    assert (answer.status_code, answer.json()["code"]) == (401, "UNAUTHENTICATED")


def test_only_the_token_hash_is_stored(home: Home, gateway: TestClient) -> None:
    sign_in(gateway, home.create_api_key("user"))
    token = gateway.cookies[COOKIE]
    rows = gateway_sql(home, "SELECT * FROM console_sessions")
    assert len(rows) == 1 and token not in repr(rows)


def test_a_session_of_a_user_key_is_refused_approver_routes(home: Home,
                                                              gateway: TestClient) -> None:
    sign_in(gateway, home.create_api_key("user"))
    for path in ("/v1/audit", "/v1/keys", "/v1/system", "/v1/gates", "/v1/releases"):
        answer = gateway.get(path)
        assert (answer.status_code, answer.json()["code"]) == (403, "FORBIDDEN"), path


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_session_made_on_one_gateway_is_valid_on_another(
        backend: Backend, home: Home, gateway: TestClient, tmp_path: Path) -> None:
    """Two gateways (two homes, one PostgreSQL database, the same keys file): a console
    session signed in on one is accepted by the other with its CSRF token, and signing
    out on the other ends it on the first. Neither writes a SQLite file."""
    other = Home.at(tmp_path / "other")
    other.init(base_port=17100)
    backend.configure(other)
    key = home.create_api_key("user")
    shutil.copy2(home.api_keys_file, other.api_keys_file)
    csrf = sign_in(gateway, key)
    with in_process("gateway", other) as second:
        second.cookies.set(COOKIE, gateway.cookies[COOKIE])
        assert second.get("/v1/whoami").json()["key_id"] == key.split("-")[2]
        made = second.post("/v1/sessions", json={"mode": "text"}, headers={"X-CSRF-Token": csrf})
        assert made.status_code == 201, made.text
        out = second.post("/v1/console/logout", headers={"X-CSRF-Token": csrf})
        assert out.json()["signed_out"] is True
    answer = gateway.get("/v1/whoami")
    assert (answer.status_code, answer.json()["code"]) == (401, "UNAUTHENTICATED")
    assert gateway_sql(home, "SELECT count(*) FROM console_sessions") == [(0,)]
    assert not home.db_path("gateway").exists() and not other.db_path("gateway").exists()
