"""A damaged backup, or a running stack, never changes the home."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from sonia.backup import create_backup, read_backup_key, restore_backup
from sonia.errors import BackupError
from sonia.home import Home
from sonia.kit.db import connect


def make_home(root: Path, rows: int) -> Home:
    home = Home.at(root)
    home.init(base_port=7500)
    conn = connect(home.db_path("eva"))
    conn.execute("CREATE TABLE audit (id INTEGER PRIMARY KEY, entry TEXT)")
    conn.executemany("INSERT INTO audit (entry) VALUES (?)", [(f"e{i}",) for i in range(rows)])
    conn.close()
    return home


def snapshot(home: Home) -> dict[str, str]:
    """Every file of the home (but secrets) with its digest."""
    return {
        p.relative_to(home.root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(home.root.rglob("*")) if p.is_file()
    }


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


DAMAGE: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "truncated database": ("data/eva.db", truncate, "truncated"),
    "altered database": ("data/eva.db", flip_byte, "sha256"),
    "altered config": ("sonia.toml", flip_byte, "sha256"),
    "altered policy": ("policies/tools.toml", flip_byte, "sha256"),
    "altered manifest": ("manifest.json", flip_byte, "manifest.hmac"),
    "missing database": ("data/eva.db", Path.unlink, "missing"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_backup_is_refused_naming_the_file(tmp_path: Path, case: str) -> None:
    source = make_home(tmp_path / "source", rows=50)
    backup = create_backup(source)
    target = make_home(tmp_path / "target", rows=7)
    before = snapshot(target)
    file, damage, word = DAMAGE[case]
    damage(backup / file)

    with pytest.raises(BackupError) as caught:
        restore_backup(target, backup, key=read_backup_key(source.backup_key_file))

    assert file in str(caught.value) and word in str(caught.value)
    assert snapshot(target) == before  # the home is untouched


def test_an_extra_file_in_a_backup_is_refused(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home", rows=3)
    backup = create_backup(home)
    (backup / "data" / "eva.db-wal").write_bytes(b"x")
    with pytest.raises(BackupError, match="data/eva.db-wal: not in the manifest"):
        restore_backup(home, backup)


def test_restore_refuses_while_the_stack_runs(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home", rows=3)
    backup = create_backup(home)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (home.run / "supervisor.pid").write_text(f"{child.pid}\n")
        before = snapshot(home)
        with pytest.raises(BackupError, match="sonia down"):
            restore_backup(home, backup)
        assert snapshot(home) == before
    finally:
        child.terminate()
        child.wait(10)
    restore_backup(home, backup)  # the same pid file, now stale, does not block


def test_a_custom_stopped_check_is_used(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home", rows=3)
    backup = create_backup(home)

    def running() -> None:
        raise BackupError("supervisor says the stack is up")

    with pytest.raises(BackupError, match="supervisor says"):
        restore_backup(home, backup, require_stopped=running)
