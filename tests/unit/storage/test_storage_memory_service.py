"""The memory service picks its backend from `[storage] url` (in-process, real servers)."""

from __future__ import annotations

from pathlib import Path

import pytest
from backends import Backend

from sonia.errors import Unavailable
from sonia.home import Home
from sonia.pgserver import PostgresServer
from sonia.testing import in_process

OWNER = "a1b2c3d4e5f6"


def _home(tmp_path: Path, backend: Backend) -> Home:
    home = Home.at(tmp_path / "home")
    home.init()
    home.configure({"storage": {"url": backend.url}})
    if backend.password is not None:
        home.write_storage_password(backend.password)
    return home


def test_the_service_stores_where_the_configuration_says(backend: Backend,
                                                         tmp_path: Path) -> None:
    home = _home(tmp_path, backend)
    headers = {"X-Service-Token": home.read_token("gateway")}
    with in_process("memory", home) as client:
        assert client.get("/readyz").status_code == 200
        stored = client.post("/v1/memories", params={"owner": OWNER}, headers=headers,
                             json={"content": "my cat is called Tom"})
        assert stored.status_code == 201
        exchange = client.post("/v1/sessions/s1/exchanges", params={"owner": OWNER},
                               headers=headers,
                               json={"user": "My dog is Rex.", "assistant": "Noted."})
        assert [m["content"] for m in exchange.json()["memories"]] == ["My dog is Rex"]
        context = client.get("/v1/sessions/s1/context", headers=headers,
                             params={"owner": OWNER, "q": "cat dog", "recall": 5}).json()
        assert {h["content"] for h in context["recalled"]} == {"my cat is called Tom",
                                                              "My dog is Rex"}
        assert [t["role"] for t in context["turns"]] == ["user", "assistant"]
        stats = client.get("/v1/stats", headers=headers).json()
        assert stats["backend"] == backend.name
        assert stats["counts"]["memories"] == 2
    assert home.db_path("memory").exists() == (backend.name == "sqlite")


def test_a_wrong_password_stops_the_start_without_showing_it(
    postgres_server: PostgresServer, tmp_path: Path,
) -> None:
    home = _home(tmp_path, Backend.postgresql(postgres_server.url("postgres"),
                                              "not-the-password-81723"))
    with pytest.raises(Unavailable, match="password authentication failed") as caught:
        with in_process("memory", home):
            pass
    assert "not-the-password-81723" not in str(caught.value)
