"""`sonia backup` of a PostgreSQL home: the SQLite files plus one pg_dump of Sonia's
schemas, in the same signed manifest; restore verifies the signature, then puts the
dump back with pg_restore in one transaction. On a real server."""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sonia import pgdump
from sonia.backup import (
    MANIFEST,
    MANIFEST_DIGEST,
    MANIFEST_HMAC,
    create_backup,
    home_backup_key,
    manifest_hmac,
    restore_backup,
    verify_backup,
)
from sonia.errors import BackupError, ConfigError
from sonia.home import Home
from sonia.kit.pg import BINDIR_ENV
from sonia.pgserver import PostgresServer


@pytest.fixture
def pg_home(postgres_server: PostgresServer, tmp_path: Path) -> Iterator[Home]:
    """A home whose storage is a fresh database, with a row in two Sonia schemas."""
    name = f"t_{secrets.token_hex(6)}"
    url = postgres_server.create_database(name)
    home = Home.at(tmp_path / "home")
    home.init()
    home.configure({"storage": {"url": url}})
    home.write_storage_password(postgres_server.password)
    with _connect(home) as conn:
        conn.execute("CREATE SCHEMA memory")
        conn.execute("CREATE TABLE memory.memories (seq serial PRIMARY KEY, content text)")
        conn.execute("INSERT INTO memory.memories (content) VALUES ('the boiler is serviced')")
        conn.execute("CREATE SCHEMA openclaw")
        conn.execute("CREATE TABLE openclaw.consumed_grants (jti text PRIMARY KEY)")
        conn.execute("INSERT INTO openclaw.consumed_grants VALUES ('jti-1')")
    try:
        yield home
    finally:
        postgres_server.drop_database(name)


def _connect(home: Home) -> Any:
    import psycopg

    return psycopg.connect(home.settings().storage.url, password=home.storage_password(),
                           autocommit=True)


def _rows(home: Home) -> dict[str, list[Any]]:
    with _connect(home) as conn:
        return {
            "memories": [r[0] for r in conn.execute(
                "SELECT content FROM memory.memories ORDER BY seq")],
            "grants": [r[0] for r in conn.execute("SELECT jti FROM openclaw.consumed_grants")],
        }


def _resign(backup: Path, home: Home, *, sign: bool) -> None:
    """Recompute every file's size and sha256 in the manifest (and, with `sign`, its
    HMAC under the home's key): what someone who altered a file would do."""
    manifest = json.loads((backup / MANIFEST).read_text())
    for entry in manifest["files"]:
        data = (backup / entry["path"]).read_bytes()
        entry["size"], entry["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    (backup / MANIFEST).write_bytes(data)
    (backup / MANIFEST_DIGEST).write_text(f"{hashlib.sha256(data).hexdigest()}  {MANIFEST}\n")
    if sign:
        (backup / MANIFEST_HMAC).write_text(
            f"{manifest_hmac(home_backup_key(home), data)}  {MANIFEST}\n")


def test_a_backup_holds_a_dump_listed_and_signed_in_the_manifest(pg_home: Home) -> None:
    backup = create_backup(pg_home)
    manifest = json.loads((backup / MANIFEST).read_text())
    assert manifest["postgres"]["path"] == pgdump.DUMP_PATH == "postgres/sonia.dump"
    assert manifest["postgres"]["format"] == "custom" and "postgres" in manifest["contains"]
    listed = {e["path"]: e for e in manifest["files"]}
    dump = (backup / pgdump.DUMP_PATH).read_bytes()
    assert dump.startswith(b"PGDMP"), "pg_dump's custom format"
    assert listed[pgdump.DUMP_PATH]["sha256"] == hashlib.sha256(dump).hexdigest()
    assert str(pg_home.storage_password()) not in (backup / MANIFEST).read_text()
    report = verify_backup(backup, home_backup_key(pg_home))
    assert report.ok and report.signature_checked, report.problems
    toc = pgdump.list_dump(backup / pgdump.DUMP_PATH)
    assert any("consumed_grants" in line for line in toc)
    assert manifest["postgres"]["toc_entries"] == len(toc)


def test_restore_puts_dropped_schemas_back_and_undoes_later_writes(pg_home: Home) -> None:
    before = _rows(pg_home)
    backup = create_backup(pg_home)
    with _connect(pg_home) as conn:
        conn.execute("INSERT INTO memory.memories (content) VALUES ('written after')")
        conn.execute("DELETE FROM openclaw.consumed_grants")
    restore_backup(pg_home, backup)
    assert _rows(pg_home) == before, "--clean: what was written after the backup is gone"

    with _connect(pg_home) as conn:
        conn.execute("DROP SCHEMA memory CASCADE")
        conn.execute("DROP SCHEMA openclaw CASCADE")
    result = restore_backup(pg_home, backup)
    assert _rows(pg_home) == before
    assert result.files == len(json.loads((backup / MANIFEST).read_text())["files"])


def test_a_tampered_dump_with_recomputed_hashes_is_refused_by_the_signature(
    pg_home: Home,
) -> None:
    backup = create_backup(pg_home)
    dump = backup / pgdump.DUMP_PATH
    data = bytearray(dump.read_bytes())  # the table data is compressed: flip a byte of it
    data[-40] ^= 0xFF
    dump.write_bytes(bytes(data))
    report = verify_backup(backup, home_backup_key(pg_home))
    assert report.first_bad_file == pgdump.DUMP_PATH, report.problems
    _resign(backup, pg_home, sign=False)
    with _connect(pg_home) as conn:
        conn.execute("DELETE FROM openclaw.consumed_grants")
    with pytest.raises(BackupError, match=MANIFEST_HMAC) as refused:
        restore_backup(pg_home, backup)
    assert "nothing was restored" in str(refused.value)
    assert _rows(pg_home)["grants"] == [], "the database was not touched"
    assert verify_backup(backup, None).ok, "unkeyed, the recomputed hashes would pass"


def test_an_unsigned_backup_is_refused(pg_home: Home) -> None:
    backup = create_backup(pg_home)
    (backup / MANIFEST_HMAC).unlink()
    with pytest.raises(BackupError, match="manifest.hmac: missing"):
        restore_backup(pg_home, backup)


def test_verification_reads_the_dump_with_pg_restore(pg_home: Home) -> None:
    """A dump that pg_restore cannot read fails verification even when the manifest is
    re-signed with the right key (a bug, not an attacker: the bytes are not a dump)."""
    backup = create_backup(pg_home)
    (backup / pgdump.DUMP_PATH).write_bytes(b"not a dump\n")
    _resign(backup, pg_home, sign=True)
    report = verify_backup(backup, home_backup_key(pg_home))
    assert report.first_bad_file == pgdump.DUMP_PATH
    assert "pg_restore --list cannot read it" in report.problems[0]
    with pytest.raises(BackupError, match="pg_restore --list"):
        restore_backup(pg_home, backup)


def test_a_database_without_sonia_schemas_is_refused_not_dumped_empty(
    pg_home: Home,
) -> None:
    with _connect(pg_home) as conn:
        conn.execute("DROP SCHEMA memory, openclaw CASCADE")
    with pytest.raises(BackupError, match="none of Sonia's schemas"):
        create_backup(pg_home)
    assert not any(pg_home.backups.iterdir())


def test_only_the_schemas_that_exist_are_dumped(pg_home: Home) -> None:
    manifest = json.loads((create_backup(pg_home) / MANIFEST).read_text())
    assert manifest["postgres"]["schemas"] == ["memory", "openclaw"]


def test_the_password_reaches_pg_dump_in_its_environment_never_its_argv(
    pg_home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real tools, behind wrappers that record what they were given."""
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in ("pg_dump", "pg_restore"):
        real = pgdump.find_tool(tool, server_major=pgdump.server_major(
            pg_home.settings().storage.url, pg_home.storage_password()))
        wrapper = tools / tool
        wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> "{tools}/{tool}.argv"\n'
                           f'printf "%s\\n" "$PGPASSWORD" >> "{tools}/{tool}.env"\n'
                           f'exec "{real}" "$@"\n')
        wrapper.chmod(0o700)
    monkeypatch.setenv(BINDIR_ENV, str(tools))
    backup = create_backup(pg_home)
    restore_backup(pg_home, backup)
    password = str(pg_home.storage_password())
    for tool in ("pg_dump", "pg_restore"):
        assert password not in (tools / f"{tool}.argv").read_text(), tool
    assert (tools / "pg_dump.env").read_text().splitlines() == [password]
    assert password in (tools / "pg_restore.env").read_text().splitlines(), "the restore"


def test_a_missing_pg_dump_is_a_configuration_error_and_leaves_nothing(
    pg_home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    empty = tmp_path / "no-tools"
    empty.mkdir()
    monkeypatch.setenv(BINDIR_ENV, str(empty))
    with pytest.raises(ConfigError, match="pg_dump not found") as missing:
        create_backup(pg_home)
    assert missing.value.key == "storage.url"
    assert not any(pg_home.backups.iterdir()), "no partial backup is left"


def test_an_unreachable_server_fails_the_backup_and_leaves_nothing(tmp_path: Path) -> None:
    home = Home.at(tmp_path / "home")
    home.init()
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    home.configure({"storage": {"url": f"postgresql://sonia@127.0.0.1:{port}/sonia"}})
    with pytest.raises(BackupError, match="cannot be reached"):
        create_backup(home)
    assert not any(home.backups.iterdir())


def test_a_postgresql_backup_is_not_restored_onto_sqlite(pg_home: Home) -> None:
    backup = create_backup(pg_home)
    (backup / "sonia.toml").unlink()  # so the home's own (sqlite) configuration applies
    manifest = json.loads((backup / MANIFEST).read_text())
    manifest["files"] = [e for e in manifest["files"] if e["path"] != "sonia.toml"]
    data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    (backup / MANIFEST).write_bytes(data)
    _resign(backup, pg_home, sign=True)
    pg_home.configure({"storage": {"url": "sqlite"}})
    with pytest.raises(BackupError, match="storage.url is sqlite"):
        restore_backup(pg_home, backup)
    assert not pg_home.db_path("memory").exists()


def test_a_backup_of_a_sqlite_home_has_no_dump(tmp_path: Path) -> None:
    home = Home.at(tmp_path / "home")
    home.init()
    backup = create_backup(home)
    assert "postgres" not in json.loads((backup / MANIFEST).read_text())
    assert not (backup / "postgres").exists()
    shutil.rmtree(backup)
