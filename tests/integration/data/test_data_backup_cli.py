"""`sonia backup`, `sonia backup list` and `sonia restore` from the command line, for real."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sonia.testing import FreshStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def sonia(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sonia", *args, "--home", str(home)],
                          capture_output=True, text=True, timeout=120)


def fingerprint(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`: to prove nothing changed."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_backup_list_and_restore_refusals(own_stack: FreshStack) -> None:
    home = own_stack.home
    made = sonia("backup", home=home.root)
    assert made.returncode == 0, made.stderr
    assert "verified" in made.stdout
    listed = sonia("backup", "list", "--json", home=home.root)
    assert listed.returncode == 0, listed.stderr
    (entry,) = json.loads(listed.stdout)
    assert entry["ok"] is True and entry["age_seconds"] >= 0
    backup = Path(entry["path"])

    running = sonia("restore", str(backup), home=home.root)
    assert running.returncode == 1
    assert "sonia down" in running.stderr

    own_stack.down()
    before = fingerprint(home.data) | {"sonia.toml": fingerprint(home.root)["sonia.toml"]}
    damaged = home.root.parent / "damaged"
    shutil.copytree(backup, damaged)
    memory_db = damaged / "data" / "memory.db"
    memory_db.write_bytes(memory_db.read_bytes()[:-100])
    refused = sonia("restore", str(damaged), home=home.root)
    assert refused.returncode == 1
    assert "data/memory.db" in refused.stderr and "truncated" in refused.stderr
    after = fingerprint(home.data) | {"sonia.toml": fingerprint(home.root)["sonia.toml"]}
    assert after == before, "a refused restore leaves the home as it was"

    shutil.copytree(damaged, home.backups / "zz-damaged")
    flagged = sonia("backup", "list", home=home.root)
    assert flagged.returncode == 1 and "BAD" in flagged.stdout

    restored = sonia("restore", "latest", home=home.root)
    assert restored.returncode == 0, restored.stderr
    assert "restored" in restored.stdout
    assert not list(home.data.glob("*-wal")) and not list(home.data.glob("*-shm"))


def test_backup_of_a_missing_home_is_a_usage_error(tmp_path: Path) -> None:
    proc = sonia("backup", home=tmp_path / "nowhere")
    assert proc.returncode == 2
    assert "sonia init" in proc.stderr
