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


TLS = "[tls]\ncert_file = 'server.pem'\nkey_file = 'server.key'\n"


@pytest.mark.parametrize(("text", "key"), [
    ("bind = '0.0.0.0'\n", "bind"),
    ("bind = '10.0.0.5'\n", "bind"),
    ("[binds]\ngateway = '0.0.0.0'\n", "binds.gateway"),
    ("[binds]\nnosuch = '127.0.0.1'\n", "binds"),
    ("[binds]\ngateway = 'gateway.example'\n", "binds"),
])
def test_listening_beyond_loopback_without_tls_names_the_address_to_fix(
        tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    assert caught.value.key == key


def test_the_refusal_says_what_would_allow_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tls.cert_file and tls.key_file"):
        load_settings(write(tmp_path, "bind = '0.0.0.0'\n"))


def test_with_tls_a_service_may_listen_anywhere_and_is_reached_over_https(
        tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "[binds]\ngateway = '0.0.0.0'\n"
                                             "router = '::'\neva = '10.0.0.5'\n" + TLS))
    assert settings.bind_of("gateway") == "0.0.0.0"
    assert settings.bind_of("memory") == "127.0.0.1"
    assert settings.url_of("gateway") == "https://127.0.0.1:7000"  # a wildcard: loopback
    assert settings.url_of("router") == "https://[::1]:7010"
    assert settings.url_of("eva") == "https://10.0.0.5:7050"
    assert settings.url_of("memory") == "https://127.0.0.1:7020"


def test_without_tls_services_are_reached_over_http(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""))
    assert not settings.tls.enabled
    assert settings.url_of("gateway") == "http://127.0.0.1:7000"


@pytest.mark.parametrize(("text", "key"), [
    ("[tls]\ncert_file = 'server.pem'\n", "tls.key_file"),
    ("[tls]\nkey_file = 'server.key'\n", "tls.cert_file"),
    ("[tls]\ncertificate = 'server.pem'\n", "tls.certificate"),
])
def test_a_certificate_goes_with_its_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    assert caught.value.key == key


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:7100", "http://[::1]:7100",
    "https://memory.internal:7020", "https://10.0.0.7:7020", "https://[fd00::7]:7020",
])
def test_an_upstream_is_loopback_in_clear_or_any_host_over_tls(tmp_path: Path, url: str) -> None:
    settings = load_settings(write(tmp_path, f"[upstreams]\nmemory = '{url}'\n"))
    assert settings.upstream_of("memory") == url


@pytest.mark.parametrize("url", [
    "http://10.0.0.7:7020", "http://memory.internal:7020", "https://memory.internal",
    "https://memory.internal:7020/path", "ftp://127.0.0.1:7020",
])
def test_an_upstream_on_another_host_in_clear_is_refused(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, f"[upstreams]\nmemory = '{url}'\n"))
    assert caught.value.key == "upstreams"


@pytest.mark.parametrize(("text", "key"), [
    ("[logs]\nmax_bytes = 100\n", "logs.max_bytes"),
    ("[logs]\nkeep = 0\n", "logs.keep"),
])
def test_log_rotation_settings_are_bounded(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    assert caught.value.key == key
