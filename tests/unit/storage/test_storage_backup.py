"""`sonia backup` copies SQLite files: on a PostgreSQL home it refuses rather than make
a backup that looks whole and is not."""

from __future__ import annotations

from pathlib import Path

import pytest

from sonia.backup import create_backup
from sonia.errors import BackupError
from sonia.home import Home


def test_a_backup_of_a_postgresql_home_is_refused_not_partial(tmp_path: Path) -> None:
    home = Home.at(tmp_path / "home")
    home.init()
    home.configure({"storage": {"url": "postgresql://sonia@127.0.0.1:5432/sonia"}})
    with pytest.raises(BackupError, match="storage.url names PostgreSQL"):
        create_backup(home)
    assert not any(home.backups.iterdir())


def test_a_backup_of_a_sqlite_home_still_runs(tmp_path: Path) -> None:
    home = Home.at(tmp_path / "home")
    home.init()
    home.configure({"storage": {"url": "sqlite"}})
    assert create_backup(home).is_dir()
