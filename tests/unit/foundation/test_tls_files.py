"""A home's TLS files are checked before anything starts: a broken setup is exit 2 naming
the key, never a service that fails its first caller."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tls_certs import TestCA

from sonia.errors import ConfigError
from sonia.home import Home


@pytest.fixture()
def home(tmp_path: Path) -> Home:
    home = Home.at(tmp_path / "home")
    home.init()
    return home


@pytest.fixture()
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "pki")


def use_tls(home: Home, cert: Path | str, key: Path | str, ca_file: Path | str | None = None
            ) -> None:
    values: dict[str, str | None] = {"cert_file": str(cert), "key_file": str(key),
                                     "ca_file": None if ca_file is None else str(ca_file)}
    text = home.config_file.read_text() + "\n[tls]\n" + "".join(
        f"{k} = '{v}'\n" for k, v in values.items() if v is not None)
    home.config_file.write_text(text)


def test_a_certificate_and_its_key_are_accepted(home: Home, ca: TestCA) -> None:
    server = ca.issue("server")
    use_tls(home, server.cert, server.key, ca.ca_file)
    assert home.check().tls.enabled


def test_relative_paths_are_relative_to_the_home(home: Home, ca: TestCA) -> None:
    server = ca.issue("server")
    (home.secrets / "tls").mkdir(mode=0o700)
    for source in (server.cert, server.key):
        target = home.secrets / "tls" / source.name
        target.write_bytes(source.read_bytes())
        target.chmod(0o600)
    use_tls(home, "secrets/tls/server.pem", "secrets/tls/server.key")
    assert home.resolve("secrets/tls/server.pem") == home.secrets / "tls" / "server.pem"
    assert home.check().tls.cert_file == "secrets/tls/server.pem"


def test_a_key_others_may_read_is_refused(home: Home, ca: TestCA) -> None:
    server = ca.issue("server")
    os.chmod(server.key, 0o644)
    use_tls(home, server.cert, server.key)
    with pytest.raises(ConfigError, match="chmod 600") as caught:
        home.check()
    assert caught.value.key == "tls.key_file"


def test_a_key_its_group_may_read_is_accepted(home: Home, ca: TestCA) -> None:
    """The ssl-cert convention: root:ssl-cert 0640."""
    server = ca.issue("server")
    os.chmod(server.key, 0o640)
    use_tls(home, server.cert, server.key)
    assert home.check().tls.enabled


def test_a_key_of_another_certificate_is_refused(home: Home, ca: TestCA) -> None:
    one, other = ca.issue("one"), ca.issue("other")
    use_tls(home, one.cert, other.key)
    with pytest.raises(ConfigError) as caught:
        home.check()
    assert caught.value.key == "tls.key_file"


@pytest.mark.parametrize("which", ["cert", "key", "ca"])
def test_a_missing_file_is_named(home: Home, ca: TestCA, which: str) -> None:
    server = ca.issue("server")
    missing = home.root / "nowhere.pem"
    use_tls(home, missing if which == "cert" else server.cert,
            missing if which == "key" else server.key,
            missing if which == "ca" else ca.ca_file)
    with pytest.raises(ConfigError, match="nowhere.pem") as caught:
        home.check()
    assert caught.value.key == {"cert": "tls.cert_file", "key": "tls.key_file",
                                "ca": "tls.ca_file"}[which]


def test_a_ca_file_that_holds_no_certificate_is_refused(home: Home, ca: TestCA) -> None:
    server = ca.issue("server")
    not_a_ca = home.root / "notes.txt"
    not_a_ca.write_text("not a certificate\n")
    use_tls(home, server.cert, server.key, not_a_ca)
    with pytest.raises(ConfigError) as caught:
        home.check()
    assert caught.value.key == "tls.ca_file"
