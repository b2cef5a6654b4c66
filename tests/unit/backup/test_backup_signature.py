"""Backup manifests are signed with the home's key: recomputed hashes do not help a forger.

The attack: change a row in the backed-up database, then recompute the file's
sha256, the manifest's row digest and `manifest.sha256`, all unkeyed. Only the
HMAC under `secrets/backup.key` can tell, and restore must refuse, name the file,
and leave the home byte for byte as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sonia.backup import (
    MANIFEST,
    MANIFEST_DIGEST,
    create_backup,
    database_facts,
    read_backup_key,
    restore_backup,
    verify_backup,
)
from sonia.errors import BackupError
from sonia.home import Home
from sonia.kit.db import connect


def make_home(root: Path, rows: int) -> Home:
    home = Home.at(root)
    home.init(base_port=7600)
    conn = connect(home.db_path("eva"))
    conn.execute("CREATE TABLE audit (id INTEGER PRIMARY KEY, entry TEXT)")
    conn.executemany("INSERT INTO audit (entry) VALUES (?)", [(f"e{i}",) for i in range(rows)])
    conn.close()
    return home


def snapshot(home: Home) -> dict[str, str]:
    return {p.relative_to(home.root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(home.root.rglob("*")) if p.is_file()}


def forge(backup: Path) -> None:
    """Change one audit row and recompute every unkeyed hash, as an attacker can."""
    db = backup / "data" / "eva.db"
    conn = connect(db)
    conn.execute("UPDATE audit SET entry = 'forged' WHERE id = 1")
    conn.close()
    for side in db.parent.glob("eva.db-*"):
        side.unlink()
    manifest = json.loads((backup / MANIFEST).read_text())
    for entry in manifest["files"]:
        if entry["path"] == "data/eva.db":
            entry["size"] = db.stat().st_size
            entry["sha256"] = hashlib.sha256(db.read_bytes()).hexdigest()
    manifest["databases"]["eva"] = {"path": "data/eva.db", **database_facts(db)}
    data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    (backup / MANIFEST).write_bytes(data)
    (backup / MANIFEST_DIGEST).write_text(f"{hashlib.sha256(data).hexdigest()}  {MANIFEST}\n")


def test_a_backup_with_recomputed_hashes_is_refused_and_the_home_untouched(
        tmp_path: Path) -> None:
    home = make_home(tmp_path / "home", rows=20)
    backup = create_backup(home)
    forge(backup)
    assert verify_backup(backup).ok  # every unkeyed hash agrees: the forgery is consistent
    before = snapshot(home)

    with pytest.raises(BackupError) as refused:
        restore_backup(home, backup)

    assert "manifest.hmac" in str(refused.value)
    assert "does not verify" in str(refused.value)
    assert snapshot(home) == before
    rows = connect(home.db_path("eva")).execute("SELECT entry FROM audit WHERE id = 1")
    assert rows.fetchone()[0] == "e0"


def test_a_backup_from_another_home_needs_that_homes_key(tmp_path: Path) -> None:
    source = make_home(tmp_path / "source", rows=5)
    target = make_home(tmp_path / "target", rows=2)
    backup = create_backup(source)
    before = snapshot(target)
    with pytest.raises(BackupError, match="manifest.hmac"):
        restore_backup(target, backup)  # the target's own key: not the one that signed
    assert snapshot(target) == before
    restore_backup(target, backup, key=read_backup_key(source.backup_key_file))
    assert connect(target.db_path("eva")).execute("SELECT count(*) FROM audit").fetchone()[0] == 5


def test_a_missing_signature_is_refused(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home", rows=3)
    backup = create_backup(home)
    (backup / "manifest.hmac").unlink()
    with pytest.raises(BackupError, match="manifest.hmac: missing"):
        restore_backup(home, backup)


def test_a_readable_backup_key_is_refused(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home", rows=1)
    os.chmod(home.backup_key_file, 0o644)
    with pytest.raises(BackupError, match="chmod 600"):
        read_backup_key(home.backup_key_file)


def sonia(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sonia", *args], capture_output=True,
                          text=True, timeout=120)


def test_the_cli_refuses_a_forged_backup_and_restores_onto_a_new_home_with_the_key(
        tmp_path: Path) -> None:
    home = make_home(tmp_path / "home", rows=4)
    backup = create_backup(home)
    good = create_backup(home, tmp_path / "copies")
    forge(backup)
    before = snapshot(home)
    refused = sonia("restore", str(backup), "--home", str(home.root))
    assert refused.returncode == 1
    assert "manifest.hmac" in refused.stderr
    assert snapshot(home) == before

    new_home = tmp_path / "new-machine"
    no_key = sonia("restore", str(good), "--home", str(new_home))
    assert no_key.returncode == 1 and "--backup-key" in no_key.stderr
    assert not new_home.exists()
    carried = sonia("restore", str(good), "--home", str(new_home),
                    "--backup-key", str(home.backup_key_file))
    assert carried.returncode == 0, carried.stderr
    assert Home.at(new_home).backup_key_file.read_bytes() == home.backup_key_file.read_bytes()
