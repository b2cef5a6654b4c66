"""`[storage] url`: sqlite by default, a PostgreSQL URL without its password, the
password from `secrets/postgres_password` only."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sonia.config import load_settings
from sonia.errors import ConfigError
from sonia.home import Home


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sonia.toml"
    path.write_text(text)
    return path


def test_sqlite_is_the_default(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""))
    assert (settings.storage.url, settings.storage.backend) == ("sqlite", "sqlite")
    assert load_settings(write(tmp_path, "[storage]\nurl = 'sqlite'\n")).storage.backend == \
        "sqlite"


@pytest.mark.parametrize("url", [
    "postgresql://sonia@db.internal:5432/sonia",
    "postgres://sonia@127.0.0.1/sonia?sslmode=verify-full",
    "postgresql:///sonia?host=/run/postgresql",
])
def test_a_postgresql_url_selects_postgresql(tmp_path: Path, url: str) -> None:
    settings = load_settings(write(tmp_path, f"[storage]\nurl = '{url}'\n"))
    assert (settings.storage.url, settings.storage.backend) == (url, "postgresql")


@pytest.mark.parametrize("url", [
    "postgresql://sonia:hunter2-secret@db.internal:5432/sonia",
    "postgresql://sonia@db.internal/sonia?password=hunter2-secret",
    "postgresql://sonia@db.internal/sonia?PassWord=hunter2-secret",
    "postgresql://sonia@db.internal/sonia?passfile=hunter2-secret",
])
def test_a_url_carrying_a_password_is_refused_naming_the_key_not_the_secret(
    tmp_path: Path, url: str,
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, f"[storage]\nurl = '{url}'\n"))
    assert caught.value.key == "storage.url"
    assert "secrets/postgres_password" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_the_environment_cannot_smuggle_a_password_either(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SONIA_STORAGE__URL", "postgresql://u:hunter2-secret@h/db")
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, ""))
    assert caught.value.key == "storage.url" and "hunter2" not in str(caught.value)


@pytest.mark.parametrize("url", [
    "mysql://sonia@db/sonia", "sqlite:///data/memory.db", "postgresql://sonia@db:port/x",
    "postgresql://sonia@db.internal:5432/", "", "SQLITE",
])
def test_other_urls_are_refused_naming_the_key(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, f"[storage]\nurl = '{url}'\n"))
    assert caught.value.key == "storage.url"


def test_unknown_storage_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, "[storage]\npassword = 'x'\n"))
    assert caught.value.key == "storage.password"


def test_the_password_comes_from_a_private_file_in_secrets(tmp_path: Path) -> None:
    home = Home.at(tmp_path / "home")
    home.init()
    assert home.storage_password() is None  # no file: the server trusts the connection
    home.write_storage_password("s3cret-pw")
    assert home.storage_password_file == home.secrets / "postgres_password"
    assert os.stat(home.storage_password_file).st_mode & 0o777 == 0o600
    assert home.storage_password() == "s3cret-pw"
    home.check()


def test_a_password_file_others_may_read_is_refused(tmp_path: Path) -> None:
    home = Home.at(tmp_path / "home")
    home.init()
    home.write_storage_password("s3cret-pw")
    os.chmod(home.storage_password_file, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        home.storage_password()
    with pytest.raises(ConfigError, match="chmod 600"):
        home.check()


def test_an_empty_password_file_is_refused(tmp_path: Path) -> None:
    home = Home.at(tmp_path / "home")
    home.init()
    home.write_storage_password("")
    with pytest.raises(ConfigError) as caught:
        home.storage_password()
    assert caught.value.key == "secrets/postgres_password"
