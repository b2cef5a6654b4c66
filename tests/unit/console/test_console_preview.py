"""What a pending file action would change, read before anyone approves it: the diff
comes through the same path sandbox as `file.read`, redacted, bounded, and runs nothing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sonia.errors import InvalidArgument
from sonia.redact import Redactor
from sonia.services.openclaw.paths import Workspace
from sonia.services.openclaw.preview import MAX_PREVIEW_BYTES, preview
from sonia.services.openclaw.tools import Toolbox

GITHUB_TOKEN = "ghp_" + "Zz90" * 9


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "workspace"
    root.mkdir()
    (root / "notes.txt").write_text("one\ntwo\n")
    (tmp_path / "outside.txt").write_text("not yours\n")
    os.symlink(tmp_path / "outside.txt", root / "link.txt")
    return root


@pytest.fixture
def toolbox(root: Path) -> Iterator[Toolbox]:
    with Workspace(root, protected=(".env",)) as ws:
        yield Toolbox(ws, redactor=Redactor(), max_file_bytes=4 << 20)


def test_an_overwrite_shows_the_lines_it_changes(toolbox: Toolbox, root: Path) -> None:
    shown = preview(toolbox, "file.write", {"path": "notes.txt", "content": "one\nthree\n"})
    assert shown["exists"] is True and shown["size_before"] == 8
    assert shown["diff"].splitlines() == [
        "--- a/notes.txt", "+++ b/notes.txt", "@@ -1,2 +1,2 @@", " one", "-two", "+three"]
    assert (root / "notes.txt").read_text() == "one\ntwo\n"  # nothing was written


def test_a_new_file_and_an_append_are_shown_as_additions(toolbox: Toolbox) -> None:
    created = preview(toolbox, "file.write", {"path": "new.txt", "content": "hello"})
    assert created["exists"] is False
    assert created["diff"].splitlines()[:2] == ["--- /dev/null", "+++ b/new.txt"]
    assert "+hello" in created["diff"] and "No newline at end of file" in created["diff"]
    appended = preview(toolbox, "file.write",
                       {"path": "notes.txt", "content": "three\n", "mode": "append"})
    assert appended["size_after"] == 14
    assert [line for line in appended["diff"].splitlines() if line.startswith(("+", "-"))
            and not line.startswith(("+++", "---"))] == ["+three"]


def test_a_delete_shows_every_line_going(toolbox: Toolbox, root: Path) -> None:
    shown = preview(toolbox, "file.delete", {"path": "notes.txt"})
    assert shown["diff"].splitlines()[:2] == ["--- a/notes.txt", "+++ /dev/null"]
    assert "-one" in shown["diff"] and "-two" in shown["diff"]
    assert (root / "notes.txt").exists()


@pytest.mark.parametrize(("path", "code"), [
    ("link.txt", "SYMLINK_DENIED"),
    ("../outside.txt", "PATH_OUTSIDE_SANDBOX"),
    (".env", "POLICY_DENIED"),
])
def test_what_a_read_would_refuse_is_refused_and_said(toolbox: Toolbox, path: str,
                                                       code: str) -> None:
    shown = preview(toolbox, "file.write", {"path": path, "content": "x"})
    assert shown["refused"]["code"] == code
    assert shown["diff"] is None and "not yours" not in repr(shown)


def test_secrets_in_the_file_are_redacted(toolbox: Toolbox, root: Path) -> None:
    (root / "config.txt").write_text(f"token = {GITHUB_TOKEN}\n")
    shown = preview(toolbox, "file.delete", {"path": "config.txt"})
    assert GITHUB_TOKEN not in shown["diff"] and "token = " in shown["diff"]


def test_large_and_binary_files_are_described_not_diffed(toolbox: Toolbox, root: Path) -> None:
    (root / "big.txt").write_bytes(b"x" * (MAX_PREVIEW_BYTES + 10))
    (root / "image.bin").write_bytes(b"\x89PNG\x00\x01")
    big = preview(toolbox, "file.delete", {"path": "big.txt"})
    assert big["too_large"] is True and big["diff"] is None
    assert big["size_before"] == MAX_PREVIEW_BYTES + 10
    binary = preview(toolbox, "file.write", {"path": "image.bin", "content": "text"})
    assert binary["binary"] is True and binary["diff"] is None


def test_only_file_changes_have_a_preview(toolbox: Toolbox) -> None:
    with pytest.raises(InvalidArgument):
        preview(toolbox, "file.read", {"path": "notes.txt"})
    with pytest.raises(InvalidArgument):
        preview(toolbox, "file.write", {"path": "notes.txt"})  # no content
