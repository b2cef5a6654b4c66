"""Issue 10's findings 1, 2, 3 and 7, and least privilege, each refused and judged by effect.

Every case goes through the real pipeline of `shell.run`: EVA's default allowlist
(`plan_command`), OpenClaw's checks (`check_plan`: operands from the real cwd, the
git repository guard, protected names hidden from recursion) and the executor, at
both sandbox levels (bubblewrap, and rlimits as opted in). Hostile repositories
are built with real git; the threat is shown to be real first (plain git runs the
repository's program: a control), then the same argv through Sonia must leave no
marker, inside the workspace or outside it. Secrets are random canaries: no
8-character slice of one may appear in any output.

The lab lives in a world-traversable temporary directory (not pytest's 0700
tmp_path), with drop folders everyone may write, so a hostile program running as
`nobody` *could* leave its marker there: an absent marker means nothing ran.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

from sonia.actions.commands import CommandPlan, plan_command
from sonia.actions.policy import Policy, load_policy
from sonia.errors import ApiError, PolicyDenied, SandboxUnavailable, SymlinkDenied
from sonia.redact import Redactor
from sonia.services.openclaw.app import PROTECTED
from sonia.services.openclaw.execution import (
    UNPRIVILEGED_ID,
    Executor,
    SandboxLevel,
    detect_sandbox,
)
from sonia.services.openclaw.operands import check_plan
from sonia.services.openclaw.paths import Workspace
from sonia.services.openclaw.tools import Toolbox

GIT = shutil.which("git", path="/usr/bin:/bin")
MISSING_SHA = "0123456789012345678901234567890123456789"
needs_git = pytest.mark.skipif(GIT is None, reason="git is not installed")


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(Path(str(files("sonia.policies"))))


def level_for(name: str) -> SandboxLevel:
    if name == "rlimits":
        return detect_sandbox("rlimits", allow_unsandboxed=True)
    level = detect_sandbox("auto")
    if level.level != "bwrap":
        pytest.skip(f"bubblewrap does not work here: {level.reason}")
    return level


@dataclass
class Lab:
    """A home (secrets/, workspace/) and an outside folder, with canaries and drops."""

    root: Path
    home: Path
    workspace: Path
    outside: Path
    canary: str
    toolbox: Toolbox
    level: SandboxLevel

    @property
    def ws_drop(self) -> Path:
        return self.workspace / "drop"

    @property
    def out_drop(self) -> Path:
        return self.outside / "drop"

    def markers(self) -> list[str]:
        return sorted(p.name for drop in (self.ws_drop, self.out_drop)
                      for p in drop.iterdir() if p.name.startswith("pwned"))

    def clear_markers(self) -> None:
        for drop in (self.ws_drop, self.out_drop):
            for p in drop.iterdir():
                p.unlink()

    def touch_both(self, name: str) -> str:
        """A shell snippet leaving marker `name` in both drops."""
        return f"touch {self.ws_drop}/{name} {self.out_drop}/{name}"

    def shell(self, argv: list[str], cwd: str = ".") -> dict[str, Any] | ApiError:
        """The result of shell.run, or the ApiError it raised."""
        try:
            return self.toolbox.run("shell.run", {"argv": argv, "cwd": cwd})
        except ApiError as exc:
            return exc

    def assert_no_canary(self, answer: object) -> None:
        text = repr((answer.code, answer.detail, answer.extra)
                    if isinstance(answer, ApiError) else answer)
        for start in range(len(self.canary) - 8):
            assert self.canary[start:start + 8] not in text, answer


def _world_dir(path: Path, mode: int = 0o755) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    return path


@pytest.fixture(params=["bwrap", "rlimits"])
def lab(request: pytest.FixtureRequest, policy: Policy) -> Iterator[Lab]:
    level = level_for(request.param)
    root = Path(tempfile.mkdtemp(prefix="sonia-findings-"))
    try:
        root.chmod(0o755)
        home = _world_dir(root / "home")
        secrets_dir = _world_dir(home / "secrets", 0o700)
        canary = "CANARY-" + secrets.token_hex(16)
        (secrets_dir / "eva_grant_key.pem").write_text(f"-----BEGIN PRIVATE KEY-----\n"
                                                       f"{canary}\n")
        (secrets_dir / "eva_grant_key.pem").chmod(0o600)
        workspace = _world_dir(home / "workspace")
        _world_dir(workspace / "drop", 0o777)
        outside = _world_dir(root / "outside")
        _world_dir(outside / "drop", 0o777)
        (outside / "secret.txt").write_text(f"PRIVATE {canary}\n")
        (outside / "secret.txt").chmod(0o644)
        with Workspace(workspace, protected=PROTECTED) as ws:
            def validate(argv: list[str], cwd: str) -> CommandPlan:
                return check_plan(ws, plan_command(policy, argv), cwd)

            toolbox = Toolbox(ws, executor=Executor(ws, level, max_output_bytes=1 << 16),
                              validate_command=validate, redactor=Redactor())
            yield Lab(root, home, workspace, outside, canary, toolbox, level)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def git(cwd: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Real git as a user would run it (no Sonia safeguards), for building and controls."""
    assert GIT is not None
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@localhost",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@localhost"}
    return subprocess.run([GIT, *args], cwd=cwd, env=env, capture_output=True, timeout=60,
                          check=False)


def make_repo(path: Path, bare: bool = False) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    assert git(path, "init", "-q", *(["--bare"] if bare else []), ".").returncode == 0
    if not bare:
        (path / "a.txt").write_text("one\n")
        git(path, "add", "a.txt")
        assert git(path, "commit", "-q", "-m", "first").returncode == 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in (*dirnames, *filenames):
            os.chmod(os.path.join(dirpath, name), 0o755 if name in dirnames else 0o644)
    return path


def promisor_ext(repo: Path, lab: Lab, name: str) -> None:
    """A partial clone whose promisor remote is `ext::` a shell: a missing object runs it."""
    for key, value in (("core.repositoryformatversion", "1"),
                       ("extensions.partialClone", "origin"),
                       ("remote.origin.url",
                        "ext::sh -c " + lab.touch_both(name).replace(" ", "% ")),
                       ("remote.origin.promisor", "true"), ("protocol.ext.allow", "always")):
        assert git(repo, "config", key, value).returncode == 0


# Each vector: builds a hostile repository in the workspace and returns (cwd, argv).
Vector = Callable[[Lab], tuple[str, list[str]]]


def vector_ext_remote(lab: Lab) -> tuple[str, list[str]]:
    promisor_ext(make_repo(lab.workspace / "proj"), lab, "pwned-ext")
    return "proj", ["git", "show", MISSING_SHA]


def vector_filter_clean(lab: Lab) -> tuple[str, list[str]]:
    repo = make_repo(lab.workspace / "proj")
    git(repo, "config", "filter.x.clean", f"{lab.touch_both('pwned-filter')}; cat")
    (repo / ".gitattributes").write_text("* filter=x\n")
    (repo / "a.txt").write_text("two\n")
    return "proj", ["git", "diff"]


def vector_textconv(lab: Lab) -> tuple[str, list[str]]:
    repo = make_repo(lab.workspace / "proj")
    git(repo, "config", "diff.x.textconv", f"{lab.touch_both('pwned-textconv')}; cat")
    (repo / ".gitattributes").write_text("*.txt diff=x\n")
    (repo / "a.txt").write_text("two\n")
    git(repo, "add", "a.txt")
    return "proj", ["git", "status", "-v"]


def vector_fsmonitor(lab: Lab) -> tuple[str, list[str]]:
    repo = make_repo(lab.workspace / "proj")
    git(repo, "config", "core.fsmonitor", lab.touch_both("pwned-fsmonitor"))
    return "proj", ["git", "status"]


def vector_pager(lab: Lab) -> tuple[str, list[str]]:
    repo = make_repo(lab.workspace / "proj")
    git(repo, "config", "core.pager", f"{lab.touch_both('pwned-pager')}; cat")
    return "proj", ["git", "log"]


def vector_include(lab: Lab) -> tuple[str, list[str]]:
    repo = make_repo(lab.workspace / "proj")
    (lab.workspace / "included.cfg").write_text(
        f'[filter "x"]\n\tclean = {lab.touch_both("pwned-include")}; cat\n')
    git(repo, "config", "include.path", "../../included.cfg")
    (repo / ".gitattributes").write_text("* filter=x\n")
    (repo / "a.txt").write_text("two\n")
    return "proj", ["git", "diff"]


def vector_bare_odd_name(lab: Lab) -> tuple[str, list[str]]:
    promisor_ext(make_repo(lab.workspace / "download", bare=True), lab, "pwned-bare")
    return "download", ["git", "show", MISSING_SHA]


def vector_subdir_of_repo(lab: Lab) -> tuple[str, list[str]]:
    repo = make_repo(lab.workspace / "proj")
    git(repo, "config", "core.fsmonitor", lab.touch_both("pwned-subdir"))
    (repo / "deep" / "er").mkdir(parents=True)
    return "proj/deep/er", ["git", "status"]


def vector_submodule(lab: Lab) -> tuple[str, list[str]]:
    """A harmless repository holding a hostile one as a submodule: status looks inside it."""
    repo = make_repo(lab.workspace / "proj")
    inner = make_repo(repo / "inner")
    git(inner, "config", "filter.x.clean", f"{lab.touch_both('pwned-submodule')}; cat")
    (inner / ".gitattributes").write_text("* filter=x\n")
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "./inner", "inner")
    git(repo, "commit", "-q", "-m", "sub")
    # as unpacked from an archive: a gitlink in the index, no submodule keys in config
    git(repo, "config", "--remove-section", "submodule.inner")
    (inner / "a.txt").write_text("two\n")  # same size: only the content (filtered) tells
    return "proj", ["git", "status"]


def vector_submodule_diff(lab: Lab) -> tuple[str, list[str]]:
    cwd, _argv = vector_submodule(lab)
    return cwd, ["git", "diff"]


VECTORS: dict[str, tuple[Vector, bool]] = {
    # name: (builder, whether plain git without a terminal runs it: the control)
    "ext_remote": (vector_ext_remote, True),
    "filter_clean": (vector_filter_clean, True),
    "textconv_status_v": (vector_textconv, True),
    "fsmonitor": (vector_fsmonitor, True),
    "core_pager": (vector_pager, False),
    "include_path": (vector_include, True),
    "bare_repo_odd_name": (vector_bare_odd_name, True),
    "repo_above_cwd": (vector_subdir_of_repo, True),
    "submodule_status": (vector_submodule, True),
    "submodule_diff": (vector_submodule_diff, True),
}


@needs_git
@pytest.mark.parametrize("vector", sorted(VECTORS))
def test_finding_1_git_repo_config_cannot_run_code(lab: Lab, vector: str) -> None:
    build, live = VECTORS[vector]
    cwd, argv = build(lab)
    if live:  # the threat is real: plain git, in that folder, runs the repository's program
        git(lab.workspace / cwd, *argv[1:])
        assert lab.markers(), f"control: plain git did not run the {vector} program"
        lab.clear_markers()
    answer = lab.shell(argv, cwd)
    assert lab.markers() == []
    if vector.startswith("submodule"):
        # the outer repository is harmless: git runs, but never inside the submodule
        assert isinstance(answer, dict), answer
        inner = lab.shell(argv, f"{cwd}/inner")
        assert isinstance(inner, PolicyDenied), inner
        assert lab.markers() == []
        return
    assert isinstance(answer, PolicyDenied), answer
    assert "git refused" in answer.detail


@needs_git
def test_finding_1_gitfile_and_alternates_cannot_point_outside(lab: Lab) -> None:
    """A `.git` file naming an outside repository, and alternates reading outside objects."""
    outer = make_repo(lab.outside / "repo")
    (outer / "leak.txt").write_text(f"{lab.canary}\n")
    git(outer, "add", "leak.txt")
    git(outer, "commit", "-q", "-m", "leak")
    blob = git(outer, "rev-parse", "HEAD:leak.txt").stdout.decode().strip()
    gitfile = lab.workspace / "viafile"
    gitfile.mkdir()
    (gitfile / ".git").write_text(f"gitdir: {outer / '.git'}\n")
    inner = make_repo(lab.workspace / "viaalt")
    (inner / ".git" / "objects" / "info" / "alternates").write_text(
        f"{outer / '.git' / 'objects'}\n")
    assert lab.canary.encode() in git(inner, "show", blob).stdout  # control
    for cwd in ("viafile", "viaalt"):
        answer = lab.shell(["git", "show", blob], cwd)
        assert isinstance(answer, PolicyDenied), answer
        lab.assert_no_canary(answer)


@needs_git
def test_finding_1_a_harmless_repository_still_works(lab: Lab) -> None:
    repo = make_repo(lab.workspace / "proj")
    git(repo, "config", "user.name", "someone")
    git(repo, "config", "remote.origin.url", "https://example.invalid/x.git")
    answer = lab.shell(["git", "log", "--oneline"], "proj")
    if lab.level.level != "bwrap":
        # as nobody, git refuses a root-owned repository ("dubious ownership"): fails closed
        assert isinstance(answer, dict), answer
        return
    assert isinstance(answer, dict) and answer["exit_code"] == 0, answer
    assert "first" in answer["stdout"]


@needs_git
def test_finding_1_free_text_format_is_refused(lab: Lab) -> None:
    make_repo(lab.workspace / "proj")
    for argv in (["git", "log", "--format=%H %(describe)"], ["git", "show", "--format", "%s"]):
        answer = lab.shell(argv, "proj")
        assert isinstance(answer, ApiError) and answer.code == "INVALID_COMMAND", answer


@needs_git
def test_finding_7_git_does_not_find_repos_above_workspace(lab: Lab) -> None:
    """The home itself under git, holding a secret: git from the workspace must not read it."""
    (lab.home / "notes.txt").write_text(f"{lab.canary}\n")
    (lab.home / "notes.txt").chmod(0o644)
    make_repo(lab.home)
    git(lab.home, "add", "notes.txt")
    assert git(lab.home, "commit", "-q", "-m", "home").returncode == 0
    assert lab.canary.encode() in git(lab.workspace, "show", "HEAD:notes.txt").stdout  # control
    for cwd in (".", "drop"):
        for argv in (["git", "show", "HEAD:notes.txt"], ["git", "log", "-p"],
                     ["git", "status"]):
            answer = lab.shell(argv, cwd)
            lab.assert_no_canary(answer)
            if isinstance(answer, dict):
                assert answer["exit_code"] != 0, answer


def plant_link(lab: Lab, where: str) -> None:
    folder = lab.workspace / where
    folder.mkdir(parents=True, exist_ok=True)
    os.symlink(lab.outside / "secret.txt", folder / "link")


def test_finding_2_operands_checked_in_real_cwd(lab: Lab) -> None:
    plant_link(lab, "sub")
    for argv in (["grep", "-v", "-e", "PRIVATE", "link"], ["cat", "link"],
                 ["head", "-c", "30", "link"], ["grep", "-o", "-e", "[A-Z0-9-]*", "link"],
                 ["wc", "-c", "link"]):
        answer = lab.shell(argv, "sub")
        assert isinstance(answer, SymlinkDenied), (argv, answer)
        lab.assert_no_canary(answer)


def test_finding_2_operands_checked_after_double_dash(lab: Lab) -> None:
    plant_link(lab, "-d")
    (lab.workspace / "cfg").write_text("[core]\n")
    for argv in (["head", "-c", "30", "--", "-d/link"], ["cat", "--", "-d/link"],
                 ["grep", "-o", "-e", "[0-9a-f]*", "--", "-d/link"]):
        answer = lab.shell(argv)
        assert isinstance(answer, SymlinkDenied), (argv, answer)
        lab.assert_no_canary(answer)
    for argv in (["mkdir", "-p", "--", "-x/.git/hooks"], ["cp", "--", "cfg", "-x/.git/config"],
                 ["mkdir", "--", "-y/.env"]):
        answer = lab.shell(argv)
        assert isinstance(answer, PolicyDenied), (argv, answer)
    assert not (lab.workspace / "-x").exists() and not (lab.workspace / "-y").exists()


def test_finding_2_path_flag_values_are_checked(lab: Lab) -> None:
    plant_link(lab, "sub")
    answer = lab.shell(["find", ".", "-newer", "link"], "sub")
    assert isinstance(answer, SymlinkDenied), answer


def plant_project(lab: Lab) -> None:
    proj = lab.workspace / "proj"
    (proj / ".git").mkdir(parents=True)
    (proj / ".git" / "config").write_text(f"[remote]\n\turl = postgres://admin:{lab.canary}@db\n")
    (proj / ".env").write_text(f"PASSWORD={lab.canary}\n")
    (proj / "nested" / ".env.local").parent.mkdir()
    (proj / "nested" / ".env.local").write_text(f"TOKEN={lab.canary}\n")
    (proj / "readme.txt").write_text("hello\n")
    for dirpath, dirnames, filenames in os.walk(proj):
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o755)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o644)


def test_finding_3_recursive_grep_cannot_read_protected_files(lab: Lab) -> None:
    plant_project(lab)
    before = {p: p.read_bytes() for p in (lab.workspace / "proj").rglob("*") if p.is_file()}
    for argv, cwd in ((["grep", "-r", "-H", "", "proj"], "."),
                      (["grep", "-r", "-H", "-e", "="], "proj"),
                      (["grep", "--recursive", "", "."], "."),
                      (["ls", "-R", "-a", "proj"], "."),
                      (["find", "proj", "-type", "f"], ".")):
        answer = lab.shell(argv, cwd)
        lab.assert_no_canary(answer)
        if lab.level.level == "bwrap":
            assert isinstance(answer, dict), (argv, answer)
        else:  # nothing can hide them: refused
            assert isinstance(answer, PolicyDenied), (argv, answer)
    if lab.level.level == "bwrap":
        shown = lab.shell(["grep", "-r", "-H", "", "proj"])
        assert isinstance(shown, dict) and "proj/readme.txt:hello" in shown["stdout"]
    after = {p: p.read_bytes() for p in (lab.workspace / "proj").rglob("*") if p.is_file()}
    assert after == before


@needs_git
def test_finding_3_git_diff_cannot_read_a_protected_working_file(lab: Lab) -> None:
    """A tracked `.env` changed in the worktree: its new (uncommitted) bytes stay unseen."""
    repo = make_repo(lab.workspace / "proj")
    (repo / ".env").write_text("PASSWORD=old\n")
    git(repo, "add", "-f", ".env")
    git(repo, "commit", "-q", "-m", "env")
    (repo / ".env").write_text(f"PASSWORD={lab.canary}\n")
    (repo / ".env").chmod(0o644)
    assert lab.canary.encode() in git(repo, "diff").stdout  # control
    for argv in (["git", "diff"], ["git", "status", "-v", "-v"], ["git", "diff", "--stat"]):
        answer = lab.shell(argv, "proj")
        lab.assert_no_canary(answer)
        if lab.level.level == "bwrap":
            assert isinstance(answer, dict), answer
        else:
            assert isinstance(answer, PolicyDenied), answer


def test_finding_3_recursive_copy_does_not_carry_protected_contents(lab: Lab) -> None:
    plant_project(lab)
    answer = lab.shell(["cp", "-r", "proj", "copy"])
    for path in (lab.workspace / "copy").rglob("*") if (lab.workspace / "copy").exists() else ():
        if path.is_file() and not path.is_symlink():
            assert lab.canary.encode() not in path.read_bytes(), path
    lab.assert_no_canary(answer)


def test_commands_never_run_as_root(lab: Lab) -> None:
    """By effect: a 0600 file of another user stays unreadable, which root would read."""
    private = lab.workspace / "private.txt"
    private.write_text(f"{lab.canary}\n")
    os.chown(private, 4242, 4242)
    private.chmod(0o600)
    answer = lab.shell(["cat", "private.txt"])
    assert isinstance(answer, dict) and answer["exit_code"] != 0, answer
    lab.assert_no_canary(answer)
    executor = lab.toolbox.executor
    assert executor is not None
    ids = executor.run(CommandPlan("/usr/bin/id", ["id", "-u"], tier=1))
    assert ids.stdout.strip() != "0"
    if os.geteuid() == 0:
        assert ids.stdout.strip() == str(UNPRIVILEGED_ID)
    assert ids.sandbox["runs_as_uid"] == str(UNPRIVILEGED_ID if os.geteuid() == 0
                                             else os.geteuid())


def test_secrets_are_never_visible_to_a_command(lab: Lab) -> None:
    """Even a plan naming the absolute path of the grant key (the allowlist never would)."""
    executor = lab.toolbox.executor
    assert executor is not None
    key = lab.home / "secrets" / "eva_grant_key.pem"
    for target in (key, lab.home / "secrets", lab.outside / "secret.txt"):
        result = executor.run(CommandPlan("/usr/bin/cat", ["cat", str(target)], tier=1))
        if target != lab.outside / "secret.txt" or lab.level.level == "bwrap":
            lab.assert_no_canary(result.as_dict())
            assert result.exit_code != 0


def test_mutating_commands_still_write_the_workspace_under_bwrap(lab: Lab) -> None:
    if lab.level.level != "bwrap":
        pytest.skip("as nobody, a root-owned workspace is read-only to commands (documented)")
    answer = lab.shell(["mkdir", "-p", "made/here"])
    assert isinstance(answer, dict) and answer["exit_code"] == 0, answer
    assert (lab.workspace / "made" / "here").is_dir()


def test_without_bubblewrap_shell_run_is_refused(tmp_path: Path, policy: Policy) -> None:
    """No bwrap (a binary that does not exist) and no opt-in: SANDBOX_UNAVAILABLE, nothing runs."""
    level = detect_sandbox("auto", bwrap=str(tmp_path / "no-such-bwrap"))
    assert level.level == "unavailable" and level.as_dict()["level"] == "unavailable"
    (tmp_path / "ws").mkdir()
    with Workspace(tmp_path / "ws", protected=PROTECTED) as ws:
        toolbox = Toolbox(ws, executor=Executor(ws, level),
                          validate_command=lambda argv, cwd: check_plan(
                              ws, plan_command(policy, argv), cwd))
        with pytest.raises(SandboxUnavailable) as info:
            toolbox.run("shell.run", {"argv": ["mkdir", "made"]})
        assert info.value.status == 503 and info.value.code == "SANDBOX_UNAVAILABLE"
        assert not (tmp_path / "ws" / "made").exists()
        assert toolbox.run("file.list", {"path": "."})["entries"] == []
    opted = detect_sandbox("auto", bwrap=str(tmp_path / "no-such-bwrap"), allow_unsandboxed=True)
    assert opted.level == "rlimits"
