"""`sonia init --replica-of`: a second home that shares the first one's database and
secrets, with ports, logs, pid files and workspace of its own."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import tomlkit

from sonia.errors import ConfigError
from sonia.home import Home
from sonia.replica import make_replica

URL = "postgresql://sonia@127.0.0.1:5432/sonia"


@pytest.fixture
def source(tmp_path: Path) -> Home:
    home = Home.at(tmp_path / "a")
    home.init(base_port=7100)
    home.configure({"storage": {"url": URL}, "gateway": {"max_sessions": 9}})
    home.configure({"ports": {"gateway": 7101}})
    home.write_storage_password("pw-of-the-database")
    home.create_api_key("approver")
    (home.policies / "tools.toml").write_text(
        (home.policies / "tools.toml").read_text() + "\n# this home's own edit\n")
    return home


def sonia(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sonia", *args], capture_output=True,
                          text=True, timeout=60)


def test_the_cli_copies_what_replicas_share_and_nothing_of_their_own(
    source: Home, tmp_path: Path,
) -> None:
    (source.workspace / "notes.txt").write_text("the source's file")
    (source.logs / "gateway.log").write_text("{}\n")
    made = sonia("init", "--home", str(tmp_path / "b"), "--replica-of", str(source.root),
                 "--base-port", "7300")
    assert made.returncode == 0, made.stderr
    replica = Home.at(tmp_path / "b")
    settings = replica.check()
    assert (settings.base_port, settings.ports) == (7300, {}), "its own ports"
    assert settings.storage.url == URL and settings.gateway.max_sessions == 9
    assert replica.all_tokens() == source.all_tokens()
    for name in ("eva_grant_key.pem", "api_keys.json", "backup.key", "postgres_password"):
        copied = replica.secrets / name
        assert copied.read_bytes() == (source.secrets / name).read_bytes(), name
        assert stat.S_IMODE(copied.stat().st_mode) == 0o600, name
    assert replica.storage_password() == "pw-of-the-database"
    assert (replica.policies / "tools.toml").read_text() == \
        (source.policies / "tools.toml").read_text()
    assert list(replica.workspace.iterdir()) == [] and list(replica.logs.iterdir()) == []

    key = source.create_api_key("user")
    again = sonia("init", "--home", str(replica.root), "--replica-of", str(source.root),
                  "--base-port", "7300")
    assert again.returncode == 0, again.stderr
    assert key.split("-")[2] in {k.id for k in replica.api_keys()}, \
        "running it again brings keys made since"


def test_without_a_base_port_the_replica_listens_where_the_source_does(
    source: Home, tmp_path: Path,
) -> None:
    settings = make_replica(source, Home.at(tmp_path / "b"))
    assert settings.base_port == 7100, "another host: the same ports"


def test_a_home_of_its_own_or_a_sqlite_home_is_refused(source: Home, tmp_path: Path) -> None:
    other = Home.at(tmp_path / "other")
    other.init()
    before = other.all_tokens()
    refused = sonia("init", "--home", str(other.root), "--replica-of", str(source.root))
    assert refused.returncode == 2 and "its own tokens" in refused.stderr
    assert other.all_tokens() == before, "nothing of that home was replaced"
    with pytest.raises(ConfigError, match="SQLite") as raised:
        make_replica(other, Home.at(tmp_path / "c"))
    assert raised.value.key == "storage.url"
    with pytest.raises(ConfigError, match="not its own replica"):
        make_replica(source, Home.at(source.root))


def host_settings(home: Home, **values: object) -> None:
    """Set top-level settings (the host's own) in sonia.toml."""
    document = tomlkit.parse(home.config_file.read_text())
    document.update(values)
    home.config_file.write_text(tomlkit.dumps(document))


def test_the_source_hosts_addresses_stay_behind_and_a_sync_keeps_the_replicas_own(
    source: Home, tmp_path: Path,
) -> None:
    """bind, binds and upstreams name the source host's addresses (or a gate's proxy):
    a replica never takes them; synced again, it keeps its own and its base port, and
    takes the deployment's settings from the source."""
    host_settings(source, bind="127.0.0.2", binds={"gateway": "127.0.0.3"},
                  upstreams={"memory": "http://127.0.0.1:7901"})
    source.check()
    replica = Home.at(tmp_path / "b")
    settings = make_replica(source, replica, base_port=7400)
    assert (settings.bind, settings.binds, settings.upstreams) == ("127.0.0.1", {}, {})

    host_settings(replica, ports={"voice": 7499})
    source.configure({"gateway": {"max_sessions": 5}})
    settings = make_replica(source, replica)  # the documented sync: no --base-port
    assert (settings.base_port, settings.ports) == (7400, {"voice": 7499}), "its own"
    assert settings.gateway.max_sessions == 5, "the deployment's, from the source"
    assert settings.upstreams == {}


def test_keys_are_made_and_revoked_at_the_source_only(source: Home, tmp_path: Path) -> None:
    """A replica's key file is replaced at every sync: a key made or revoked there alone
    would be undone, or differ between gateways."""
    replica = Home.at(tmp_path / "b")
    make_replica(source, replica, base_port=7400)
    assert replica.replica_source() == str(source.root)
    with pytest.raises(ConfigError, match="is a replica of"):
        replica.create_api_key("user")
    kept = source.api_keys()[0].id
    refused = sonia("keys", "revoke", kept, "--home", str(replica.root))
    assert refused.returncode == 2 and "is a replica of" in refused.stderr
    assert replica.api_keys()[0].revoked_at is None


def test_a_replica_is_no_source_and_swapped_homes_are_refused(
    source: Home, tmp_path: Path,
) -> None:
    replica = Home.at(tmp_path / "b")
    make_replica(source, replica, base_port=7400)
    with pytest.raises(ConfigError, match="itself a replica"):
        make_replica(replica, Home.at(tmp_path / "c"))
    keys_before = source.api_keys_file.read_bytes()
    swapped = sonia("init", "--home", str(source.root), "--replica-of", str(replica.root))
    assert swapped.returncode == 2 and "itself a replica" in swapped.stderr
    assert source.api_keys_file.read_bytes() == keys_before
    assert source.replica_source() is None and source.settings().base_port == 7100
    copy = Home.at(tmp_path / "copy")  # a home of the deployment that is no replica
    shutil.copytree(source.root, copy.root)
    with pytest.raises(ConfigError, match="swapped"):
        make_replica(source, copy)
    assert copy.replica_source() is None


def test_a_linked_secret_in_the_source_is_refused(source: Home, tmp_path: Path) -> None:
    outside = tmp_path / "backup.key"
    outside.write_bytes(source.backup_key_file.read_bytes())
    source.backup_key_file.unlink()
    source.backup_key_file.symlink_to(outside)
    with pytest.raises(ConfigError, match="symbolic link"):
        make_replica(source, Home.at(tmp_path / "b"))
