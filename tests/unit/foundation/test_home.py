"""The home: private secrets, distinct strong tokens, hashed user keys."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from sonia import SERVICES
from sonia.errors import ConfigError
from sonia.home import MIN_TOKEN_CHARS, Home, match_api_key


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_lays_out_the_design_home(tmp_path: Path) -> None:
    home = Home.at(tmp_path)
    home.init()
    for folder in ("secrets", "data", "workspace", "policies", "logs", "run", "artifacts"):
        assert (tmp_path / folder).is_dir(), folder
    assert mode(home.secrets) == 0o700 and mode(home.tokens) == 0o700
    tokens = home.all_tokens()
    assert set(tokens) == set(SERVICES)
    assert len(set(tokens.values())) == len(SERVICES)
    for service in SERVICES:
        assert mode(home.token_file(service)) == 0o600
        assert len(tokens[service]) >= MIN_TOKEN_CHARS
    assert mode(home.grant_key_file) == 0o600
    home.check()


def test_init_twice_keeps_existing_secrets(tmp_path: Path) -> None:
    home = Home.at(tmp_path)
    home.init()
    before = home.all_tokens()
    home.init()
    assert home.all_tokens() == before


def test_api_keys_are_stored_hashed_and_matched(tmp_path: Path) -> None:
    home = Home.at(tmp_path)
    home.init()
    key = home.create_api_key("approver")
    stored = home.api_keys_file.read_text()
    assert key not in stored
    assert json.loads(stored)[0]["role"] == "approver"
    found = match_api_key(home.api_key_table(), key)
    assert found is not None and found.role == "approver"
    assert match_api_key(home.api_key_table(), key + "x") is None


def test_unknown_role_is_refused(tmp_path: Path) -> None:
    home = Home.at(tmp_path)
    home.init()
    with pytest.raises(ConfigError, match="role"):
        home.create_api_key("admin")


def test_readable_token_is_refused(tmp_path: Path) -> None:
    home = Home.at(tmp_path)
    home.init()
    home.token_file("memory").chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        home.check()


def test_finding_8_a_home_made_open_is_made_private(tmp_path: Path) -> None:
    """A home from before (folders 0755, a database and a log 0644, -wal/-shm files) is
    tightened: folders 0700, files 0600; a symlink is left alone, not followed."""
    home = Home.at(tmp_path)
    home.init()
    outside = tmp_path / "outside.txt"
    outside.write_text("x")
    outside.chmod(0o644)
    for folder in (home.data, home.logs):
        folder.chmod(0o755)
    files = [home.data / "memory.db", home.data / "memory.db-wal", home.data / "memory.db-shm",
             home.logs / "gateway.log", home.data / "old" / "nested.db"]
    for path in files:
        path.parent.mkdir(exist_ok=True)
        path.write_text("")
        path.chmod(0o644)
    (home.logs / "link").symlink_to(outside)

    home.make_private()

    assert mode(home.data) == 0o700 and mode(home.logs) == 0o700
    assert mode(home.data / "old") == 0o700
    assert all(mode(path) == 0o600 for path in files)
    assert mode(outside) == 0o644


def test_a_lost_key_is_reissued_under_its_old_id(tmp_path: Path) -> None:
    """Memories and sessions belong to a key id: re-issuing keeps the id, not the secret;
    an id in use or not 12 hex digits is refused."""
    home = Home.at(tmp_path)
    home.init()
    old = home.create_api_key("user")
    old_id = old.split("-")[2]
    other = Home.at(tmp_path / "rebuilt")
    other.init()
    new = other.create_api_key("user", old_id)
    assert new.split("-")[2] == old_id and new != old
    key = match_api_key(other.api_key_table(), new)
    assert key is not None and key.id == old_id
    assert match_api_key(other.api_key_table(), old) is None
    for bad in (old_id, "XYZ", "0123456789ABCDEF"):
        with pytest.raises(ConfigError):
            other.create_api_key("user", bad)


def test_configure_sets_and_removes_keys_and_keeps_the_rest_of_the_file(tmp_path: Path) -> None:
    home = Home.at(tmp_path / "home")
    home.init(base_port=47200)
    before = home.config_file.read_text()
    settings = home.configure({"gateway": {"max_sessions": 9},
                               "router": {"openai_base_url": "http://127.0.0.1:1/v1"}})
    assert settings.gateway.max_sessions == 9
    assert settings.router.openai_base_url == "http://127.0.0.1:1/v1"
    comments = [line for line in before.splitlines() if line.startswith("#")]
    assert all(line in home.config_file.read_text() for line in comments)
    assert home.configure({"router": {"openai_base_url": None}}).router.openai_base_url is None


def test_configure_puts_the_file_back_when_the_result_is_invalid(tmp_path: Path) -> None:
    home = Home.at(tmp_path / "home")
    home.init(base_port=47200)
    before = home.config_file.read_bytes()
    with pytest.raises(ConfigError, match="max_sessions"):
        home.configure({"gateway": {"max_sessions": -1}})
    assert home.config_file.read_bytes() == before
