"""shell.run arguments that name links, hard-linked files or protected names are refused."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sonia.errors import PathOutsideSandbox, PolicyDenied, SymlinkDenied
from sonia.services.openclaw.app import PROTECTED
from sonia.services.openclaw.operands import MAX_HIDDEN, check_operands, protected_below
from sonia.services.openclaw.paths import Workspace


@pytest.fixture()
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    root = tmp_path / "workspace"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("a\n")
    outside = tmp_path / "outside.txt"
    outside.write_text("secret\n")
    os.symlink(outside, root / "link")
    os.symlink(tmp_path, root / "linkdir")
    os.link(outside, root / "hard")
    with Workspace(root, protected=PROTECTED) as ws:
        yield ws


def test_plain_files_flags_and_new_names_pass(workspace: Workspace) -> None:
    check_operands(workspace, ["docs/a.txt", "new/file.txt", "-n"])


@pytest.mark.parametrize(("argument", "error"), [
    ("link", SymlinkDenied),
    ("linkdir/outside.txt", SymlinkDenied),
    ("./linkdir//outside.txt", SymlinkDenied),
    ("hard", PathOutsideSandbox),
    (".git/config", PolicyDenied),
    (".GIT", PolicyDenied),
    ("sub/.env", PolicyDenied),
    (".gitconfig", PolicyDenied),
])
def test_dangerous_arguments_are_refused(workspace: Workspace, argument: str,
                                         error: type[Exception]) -> None:
    with pytest.raises(error):
        check_operands(workspace, [argument])


def test_names_that_start_with_a_dash_are_still_paths(workspace: Workspace) -> None:
    os.symlink("../link", Path(workspace.root) / "docs" / "-d")
    with pytest.raises(SymlinkDenied):
        check_operands(workspace, ["-d/x"], "docs")


def test_protected_names_below_are_found_but_not_through_links(workspace: Workspace) -> None:
    root = Path(workspace.root)
    (root / "p" / ".git" / "objects").mkdir(parents=True)
    (root / "p" / "deep").mkdir()
    (root / "p" / "deep" / ".env.local").write_text("x")
    (root / ".env").write_text("x")
    found = protected_below(workspace)
    assert found == sorted(str(root / rel) for rel in (".env", "p/.git", "p/deep/.env.local"))


def test_a_workspace_too_large_to_hide_is_refused(workspace: Workspace) -> None:
    with pytest.raises(PolicyDenied):
        protected_below(workspace, limit=3)
    for index in range(MAX_HIDDEN + 1):
        (Path(workspace.root) / f".env.{index}").write_text("x")
    with pytest.raises(PolicyDenied):
        protected_below(workspace)
