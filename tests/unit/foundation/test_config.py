"""Settings: TOML plus environment, typed, strict; every failure names its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from sonia.config import PORT_OFFSETS, load_settings
from sonia.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sonia.toml"
    path.write_text(text)
    return path


def test_defaults_follow_the_design_ports(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""))
    assert {name: settings.port_of(name) for name in PORT_OFFSETS} == {
        "gateway": 7000, "router": 7010, "memory": 7020, "voice": 7030,
        "openclaw": 7040, "eva": 7050,
    }
    assert settings.bind == "127.0.0.1"


def test_base_port_moves_every_service(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "base_port = 9100\n"))
    assert settings.port_of("eva") == 9150


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SONIA_GATEWAY__MAX_SESSIONS", "5")
    settings = load_settings(write(tmp_path, "[gateway]\nmax_sessions = 3\n"))
    assert settings.gateway.max_sessions == 5


@pytest.mark.parametrize(("text", "key"), [
    ("surprise = 1\n", "surprise"),
    ("[gateway]\nmax_sesions = 3\n", "gateway.max_sesions"),
    ("base_port = 'high'\n", "base_port"),
    ("bind = '0.0.0.0'\n", "bind"),
    ("bind = '192.168.1.5'\n", "bind"),
    ("bind = 'localhost.example'\n", "bind"),
    ("[ports]\nrouter = 7000\n", "(root)"),
    ("[ports]\nnosuch = 7100\n", "ports"),
    ("[openclaw]\nsandbox = 'docker'\n", "openclaw.sandbox"),
    ("[gateway]\nmax_sessions = 0\n", "gateway.max_sessions"),
])
def test_bad_settings_name_their_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    assert caught.value.key == key


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "a = = b"))


def test_loopback_ipv6_is_accepted(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "bind = '::1'\n")).bind == "::1"
