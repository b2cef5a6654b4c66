"""API keys are listed and revoked by the home's administrator: on the machine
(`sonia keys list|revoke`) and, with an approver key, through the gateway."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from sonia.cli import app
from sonia.errors import ConfigError
from sonia.home import Home, match_api_key
from sonia.testing import in_process


def key_id(key: str) -> str:
    return key.split("-")[2]


@pytest.fixture
def home(tmp_path: Path) -> Home:
    made = Home.at(tmp_path / "home")
    made.init(base_port=17000)
    return made


def test_a_revoked_key_stops_matching_and_its_record_stays(home: Home) -> None:
    key = home.create_api_key("user")
    revoked = home.revoke_api_key(key_id(key))
    assert revoked is not None and revoked.revoked_at is not None
    assert match_api_key(home.api_key_table(), key) is None
    listed = home.api_keys()
    assert [(k.id, k.role, k.to_dict()["state"]) for k in listed] == [
        (key_id(key), "user", "revoked")]
    assert "sha256" not in json.dumps([k.to_dict() for k in listed])


def test_revoking_twice_changes_nothing_and_an_unknown_id_is_none(home: Home) -> None:
    key = home.create_api_key("user")
    first = home.revoke_api_key(key_id(key))
    again = home.revoke_api_key(key_id(key))
    assert first == again
    assert home.revoke_api_key("000000000000") is None


def test_a_revoked_id_can_be_reissued_and_an_active_one_cannot(home: Home) -> None:
    """Revoke the lost key, then give its owner a new secret under the same id."""
    lost = home.create_api_key("approver")
    with pytest.raises(ConfigError):
        home.create_api_key("approver", key_id(lost))
    home.revoke_api_key(key_id(lost))
    new = home.create_api_key("approver", key_id(lost))
    found = match_api_key(home.api_key_table(), new)
    assert found is not None and found.id == key_id(lost)
    assert match_api_key(home.api_key_table(), lost) is None
    assert [k.to_dict()["state"] for k in home.api_keys()] == ["active"]


def test_the_cli_lists_and_revokes_keys(home: Home) -> None:
    key = home.create_api_key("user")
    listed = CliRunner().invoke(app, ["keys", "list", "--json", "--home", str(home.root)])
    assert listed.exit_code == 0, listed.output
    assert [k["id"] for k in json.loads(listed.output)] == [key_id(key)]
    revoked = CliRunner().invoke(app, ["keys", "revoke", key_id(key), "--home", str(home.root)])
    assert revoked.exit_code == 0, revoked.output
    assert f"key {key_id(key)} (user) revoked" in revoked.output
    unknown = CliRunner().invoke(app, ["keys", "revoke", "abcdefabcdef", "--home",
                                       str(home.root)])
    assert isinstance(unknown.exception, ConfigError)


@pytest.fixture
def gateway(home: Home) -> Iterator[TestClient]:
    with in_process("gateway", home) as client:
        yield client


def test_an_approver_lists_keys_without_their_secrets(home: Home, gateway: TestClient) -> None:
    approver = home.create_api_key("approver")
    user = home.create_api_key("user")
    answer = gateway.get("/v1/keys", headers={"Authorization": f"Bearer {approver}"})
    assert answer.status_code == 200, answer.text
    assert {k["id"]: k["role"] for k in answer.json()["keys"]} == {
        key_id(approver): "approver", key_id(user): "user"}
    assert user not in answer.text and "sha256" not in answer.text


def test_a_user_key_may_neither_list_nor_revoke(home: Home, gateway: TestClient) -> None:
    user = home.create_api_key("user")
    headers = {"Authorization": f"Bearer {user}"}
    assert gateway.get("/v1/keys", headers=headers).json()["code"] == "FORBIDDEN"
    refused = gateway.post(f"/v1/keys/{key_id(user)}/revoke", headers=headers)
    assert (refused.status_code, refused.json()["code"]) == (403, "FORBIDDEN")
    assert gateway.get("/v1/whoami", headers=headers).status_code == 200


def test_a_key_revoked_through_the_gateway_fails_on_its_next_request(
        home: Home, gateway: TestClient) -> None:
    approver = home.create_api_key("approver")
    user = home.create_api_key("user")
    assert gateway.get("/v1/whoami", headers={"Authorization": f"Bearer {user}"}).is_success
    answer = gateway.post(f"/v1/keys/{key_id(user)}/revoke",
                          headers={"Authorization": f"Bearer {approver}"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["state"] == "revoked"
    after = gateway.get("/v1/whoami", headers={"Authorization": f"Bearer {user}"})
    assert (after.status_code, after.json()["code"]) == (401, "UNAUTHENTICATED")


@pytest.mark.parametrize("unknown", ["000000000000", "not-a-key-id", "A" * 64])
def test_revoking_an_unknown_key_is_not_found(home: Home, gateway: TestClient,
                                               unknown: str) -> None:
    approver = home.create_api_key("approver")
    answer = gateway.post(f"/v1/keys/{unknown}/revoke",
                          headers={"Authorization": f"Bearer {approver}"})
    assert (answer.status_code, answer.json()["code"]) == (404, "NOT_FOUND")
