"""Online backup under live writes, and restore into a clean home."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from sonia.backup import (
    MANIFEST,
    create_backup,
    database_facts,
    list_backups,
    prune_backups,
    read_backup_key,
    restore_backup,
    verify_backup,
)
from sonia.home import Home
from sonia.kit.db import connect

SCHEMA = """
CREATE TABLE ledger (id INTEGER PRIMARY KEY, n INTEGER NOT NULL, payload BLOB, note TEXT);
CREATE TABLE counter (k TEXT PRIMARY KEY, v INTEGER NOT NULL) WITHOUT ROWID;
CREATE VIRTUAL TABLE notes USING fts5(body);
INSERT INTO counter VALUES ('writes', 0);
PRAGMA user_version = 3;
"""


def make_home(root: Path) -> Home:
    home = Home.at(root)
    home.init(base_port=7300)
    conn = connect(home.db_path("memory"))
    conn.executescript(SCHEMA)
    conn.close()
    return home


def write_one(conn: sqlite3.Connection, n: int) -> None:
    """One transaction that keeps an invariant: rows in ledger == counter value."""
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO ledger (n, payload, note) VALUES (?, ?, ?)",
                 (n, bytes([n % 256]) * 64, f"note {n} \u00e9"))
    conn.execute("INSERT INTO notes (body) VALUES (?)", (f"memory number {n}",))
    conn.execute("UPDATE counter SET v = v + 1 WHERE k = 'writes'")
    conn.execute("COMMIT")


class Writer(threading.Thread):
    """Writes continuously to a database until stopped."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.stopping = threading.Event()
        self.written = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        conn = connect(self.path)
        try:
            while not self.stopping.is_set():
                write_one(conn, self.written)
                self.written += 1
        except BaseException as exc:  # reported by the test, not lost
            self.error = exc
        finally:
            conn.close()

    def wait_for(self, count: int) -> None:
        deadline = time.monotonic() + 10
        while self.written < count:
            assert time.monotonic() < deadline, "writer made no progress"
            time.sleep(0.005)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_backup_during_writes_is_a_consistent_snapshot(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home")
    writer = Writer(home.db_path("memory"))
    writer.start()
    try:
        writer.wait_for(200)
        backup = create_backup(home)
        writer.wait_for(writer.written + 50)  # still writing after the snapshot
    finally:
        writer.stopping.set()
        writer.join(10)
    assert writer.error is None

    report = verify_backup(backup)
    assert report.ok, report.problems
    snapshot = sqlite3.connect(backup / "data" / "memory.db")
    rows = snapshot.execute("SELECT count(*) FROM ledger").fetchone()[0]
    counted = snapshot.execute("SELECT v FROM counter").fetchone()[0]
    snapshot.close()
    assert rows == counted > 0  # no half-applied transaction in the copy
    assert rows < writer.written  # and it is a copy of a moment, not of the end

    manifest = json.loads((backup / MANIFEST).read_text())
    memory = manifest["databases"]["memory"]
    assert memory["integrity_check"] == "ok" and memory["user_version"] == 3
    assert memory["tables"]["ledger"]["rows"] == rows
    assert "notes" not in memory["tables"] and "notes_data" in memory["tables"]
    assert {f["path"] for f in manifest["files"]} >= {"data/memory.db", "sonia.toml",
                                                       "policies/tools.toml"}
    assert not any(f["path"].startswith("secrets") for f in manifest["files"])


def test_restore_into_a_clean_home_keeps_its_secrets_and_matches_the_digests(
    tmp_path: Path,
) -> None:
    source = make_home(tmp_path / "source")
    conn = connect(source.db_path("memory"))
    for n in range(100):
        write_one(conn, n)
    conn.close()
    backup = create_backup(source)
    manifest = json.loads((backup / MANIFEST).read_text())

    clean = Home.at(tmp_path / "clean")
    clean.init(base_port=7400)
    own_tokens = clean.all_tokens()
    (clean.data / "memory.db-wal").write_bytes(b"stale wal of another database")
    (clean.data / "memory.db-shm").write_bytes(b"stale shm")

    result = restore_backup(clean, backup, key=read_backup_key(source.backup_key_file))

    assert result.databases == ("memory",)
    restored = clean.db_path("memory")
    assert sha256(restored) == next(f["sha256"] for f in manifest["files"]
                                    if f["path"] == "data/memory.db")
    assert database_facts(restored)["tables"] == manifest["databases"]["memory"]["tables"]
    assert not (clean.data / "memory.db-wal").exists()
    assert not (clean.data / "memory.db-shm").exists()
    assert clean.all_tokens() == own_tokens  # secrets are the home's own, never restored
    assert clean.config_file.read_text() == source.config_file.read_text()
    assert not list(clean.root.glob(".restore-*"))
    reopened = connect(restored)  # services open it as usual (WAL again)
    assert reopened.execute("SELECT count(*) FROM ledger").fetchone()[0] == 100
    reopened.close()


def test_list_and_prune_keep_the_newest(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home")
    made = [create_backup(home) for _ in range(3)]
    (home.backups / ".20990101T000000.000000Z.partial").mkdir()  # an interrupted backup
    (made[1] / "sonia.toml").write_text("altered = true\n")

    listed = list_backups(home)
    assert [i.path for i in listed] == list(reversed(made))
    assert [i.ok for i in listed] == [True, False, True]
    assert listed[1].problem is not None and listed[1].problem.startswith("sonia.toml")
    assert all(i.size > 0 and i.age_seconds is not None for i in listed)

    removed = prune_backups(home, retention=2)
    assert removed == [made[0]]
    assert sorted(p.name for p in home.backups.iterdir()) == sorted(
        [made[1].name, made[2].name, ".20990101T000000.000000Z.partial"]
    )


def test_backup_to_another_folder(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home")
    backup = create_backup(home, tmp_path / "offsite")
    assert backup.parent == tmp_path / "offsite" and verify_backup(backup).ok


@pytest.mark.parametrize("retention", [0, -1])
def test_prune_refuses_to_delete_everything(tmp_path: Path, retention: int) -> None:
    from sonia.errors import BackupError

    home = make_home(tmp_path / "home")
    with pytest.raises(BackupError):
        prune_backups(home, retention)
