"""The git repository guard denies by default: every config key outside a few harmless ones.

The classes of the issue, each as real config bytes parsed by real git: filters,
drivers, hooks paths, `core.*` commands, `gpg.*program`, `ext::` remotes,
`url.*.insteadOf`, includes, extensions, protocol overrides; and attributes that
name drivers. The repository-level checks run against real directories.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sonia.errors import PolicyDenied
from sonia.services.openclaw.app import PROTECTED
from sonia.services.openclaw.gitguard import check_repository, config_problems, list_config
from sonia.services.openclaw.paths import Workspace

GIT = shutil.which("git", path="/usr/bin:/bin")
pytestmark = pytest.mark.skipif(GIT is None, reason="git is not installed")

HARMLESS = b"""[core]
\trepositoryformatversion = 0
\tfilemode = true
\tbare = false
\tlogallrefupdates = true
[remote "origin"]
\turl = https://example.invalid/x.git
\tfetch = +refs/heads/*:refs/remotes/origin/*
[branch "main"]
\tremote = origin
\tmerge = refs/heads/main
[user]
\tname = someone
\temail = someone@example.invalid
"""

HOSTILE = [
    b'[filter "lfs"]\n\tclean = sh -c "touch x"\n',
    b'[filter "any-name-at-all"]\n\tsmudge = x\n\trequired = true\n',
    b'[diff "pdf"]\n\ttextconv = x\n',
    b'[diff "pdf"]\n\tcommand = x\n',
    b"[diff]\n\texternal = x\n",
    b'[merge "m"]\n\tdriver = x\n',
    b"[core]\n\tfsmonitor = x\n",
    b"[core]\n\thooksPath = x\n",
    b"[core]\n\tpager = x\n",
    b"[core]\n\teditor = x\n",
    b"[core]\n\tsshCommand = x\n",
    b"[core]\n\taskPass = x\n",
    b"[core]\n\tgitProxy = x\n",
    b"[core]\n\talternateRefsCommand = x\n",
    b"[gpg]\n\tprogram = x\n",
    b'[gpg "ssh"]\n\tprogram = x\n',
    b"[pager]\n\tlog = x\n",
    b"[alias]\n\tst = !sh\n",
    b'[remote "origin"]\n\turl = ext::sh -c touch% x\n',
    b'[remote "origin"]\n\turl = fd::3\n',
    b'[remote "origin"]\n\tuploadpack = x\n',
    b'[remote "origin"]\n\tpromisor = true\n',
    b'[url "ext::sh -c x"]\n\tinsteadOf = https://\n',
    b"[include]\n\tpath = other.cfg\n",
    b'[includeIf "gitdir:/"]\n\tpath = other.cfg\n',
    b"[extensions]\n\tpartialClone = origin\n",
    b"[extensions]\n\tworktreeConfig = true\n",
    b"[protocol]\n\tallow = always\n",
    b'[protocol "ext"]\n\tallow = always\n',
    b"[credential]\n\thelper = x\n",
    b"[sequence]\n\teditor = x\n",
    b"[uploadpack]\n\tpackObjectsHook = x\n",
    b"[safe]\n\tdirectory = *\n",
    b"[Core]\n\tFSMonitor = x\n",
]


def problems(data: bytes) -> list[str]:
    assert GIT is not None
    return config_problems(list_config(GIT, data, "config"))


def test_a_plain_config_passes() -> None:
    assert problems(HARMLESS) == []


@pytest.mark.parametrize("data", HOSTILE, ids=lambda d: d.decode().split("\n")[0] + "...")
def test_every_hostile_key_is_refused(data: bytes) -> None:
    assert problems(HARMLESS + data), data


def test_includes_are_listed_not_followed(tmp_path: Path) -> None:
    """With --file git does not follow include.path, so the key itself is what is refused."""
    (tmp_path / "other.cfg").write_text('[filter "x"]\n\tclean = touch pwned\n')
    found = problems(f"[include]\n\tpath = {tmp_path / 'other.cfg'}\n".encode())
    assert found == ["include.path is not an allowed config key"]


def test_invalid_config_is_refused() -> None:
    with pytest.raises(PolicyDenied):
        problems(b"[core\n\tbroken")


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    root = tmp_path / "ws"
    root.mkdir()
    with Workspace(root, protected=PROTECTED) as ws:
        yield ws


def init(path: Path, *args: str) -> None:
    assert GIT is not None
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run([GIT, "init", "-q", *args, "."], cwd=path, check=True, capture_output=True,
                   env={"PATH": "/usr/bin:/bin", "HOME": str(path), "GIT_CONFIG_NOSYSTEM": "1"})


def test_no_repository_at_all_is_fine(workspace: Workspace) -> None:
    assert GIT is not None
    check_repository(workspace, (), GIT)


def test_attributes_naming_drivers_are_refused(workspace: Workspace) -> None:
    assert GIT is not None
    root = Path(workspace.root)
    init(root / "p")
    check_repository(workspace, ("p",), GIT)
    (root / "p" / "sub").mkdir()
    (root / "p" / "sub" / ".gitattributes").write_text("*.bin -diff\n*.txt text eol=lf\n")
    check_repository(workspace, ("p", "sub"), GIT)
    for line in ("* filter=x", "*.pdf diff=pdf", "* merge=ours", "*.c textconv"):
        (root / "p" / "sub" / ".gitattributes").write_text(line + "\n")
        with pytest.raises(PolicyDenied):
            check_repository(workspace, ("p", "sub"), GIT)
    (root / "p" / "sub" / ".gitattributes").unlink()
    (root / "p" / ".git" / "info" / "attributes").write_text("* filter=x\n")
    with pytest.raises(PolicyDenied):
        check_repository(workspace, ("p",), GIT)


def test_links_gitfiles_worktrees_and_bare_repositories_are_refused(
        workspace: Workspace, tmp_path: Path) -> None:
    assert GIT is not None
    root = Path(workspace.root)
    init(tmp_path / "elsewhere")
    (root / "linked").mkdir()
    (root / "linked" / ".git").symlink_to(tmp_path / "elsewhere" / ".git")
    (root / "gitfile").mkdir()
    (root / "gitfile" / ".git").write_text(f"gitdir: {tmp_path / 'elsewhere' / '.git'}\n")
    init(root / "worktree")
    (root / "worktree" / ".git" / "commondir").write_text(str(tmp_path / "elsewhere" / ".git"))
    init(root / "odd name", "--bare")
    (root / "odd name" / "refs" / "deeper").mkdir(parents=True)
    init(root / "cfglink")
    (root / "cfglink" / ".git" / "config").unlink()
    (root / "cfglink" / ".git" / "config").symlink_to(tmp_path / "elsewhere" / ".git" / "config")
    init(root / "infolink")
    shutil.rmtree(root / "infolink" / ".git" / "info")
    (root / "infolink" / ".git" / "info").symlink_to(tmp_path / "elsewhere" / ".git" / "info")
    init(root / "alternates")
    (root / "alternates" / ".git" / "objects" / "info" / "alternates").write_text(
        str(tmp_path / "elsewhere" / ".git" / "objects"))
    for cwd in (("linked",), ("gitfile",), ("worktree",), ("odd name",),
                ("odd name", "refs", "deeper"), ("cfglink",), ("infolink",), ("alternates",)):
        with pytest.raises(PolicyDenied):
            check_repository(workspace, cwd, GIT)
