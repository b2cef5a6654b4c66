"""Files written whole or not at all: the one implementation every writer of state uses."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from sonia import files


def test_a_write_replaces_the_file_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")
    files.write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_secret_has_its_mode_from_birth(tmp_path: Path) -> None:
    target = files.write_atomic(tmp_path / "key", b"s3cret", mode=0o600)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")

    def crash(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="No space"):
        files.write_atomic(target, b"new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_json_is_sorted_and_ends_with_a_newline(tmp_path: Path) -> None:
    target = files.write_json_atomic(tmp_path / "s.json", {"b": 1, "a": [1, 2]})
    text = target.read_text()
    assert text.endswith("\n") and json.loads(text) == {"a": [1, 2], "b": 1}
    assert text.index('"a"') < text.index('"b"')


def test_sha256_of_a_file_larger_than_one_chunk(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 17)
    (tmp_path / "blob").write_bytes(data)
    assert files.sha256_file(tmp_path / "blob") == hashlib.sha256(data).hexdigest()
