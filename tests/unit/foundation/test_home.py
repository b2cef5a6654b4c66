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
