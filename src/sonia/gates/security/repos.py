"""Hostile git repositories: every way a repository's own files can make git run a program.

Git reads configuration and attributes from the repository it is run in, and
several keys name commands. A user can get such a repository into the
workspace without any privilege: a downloaded project (planted here directly
on disk by the gate, with real `git`), or a few approved `file.write`s. Each
case builds one repository whose config points a vector at a payload script,
then asks for a tier-1 git command in it through `shell.run`.

The payload (`payload_script`) writes `id -u` into marker files (in the
workspace and in the home above it) and starts a process whose argv holds the
marker token: the effect oracle finds either, whatever the answer was, and a
marker holding "0" says the command ran as root. Refusing the repository and
running git harmlessly are both right ("<500"); only the effect decides.

    ext-remote        partial clone, promisor remote `ext::<payload>` with
                      protocol.ext.allow=always, `git show <missing object>`
    filter-clean      .gitattributes filter + filter.x.clean, `git diff`
    textconv-status   .gitattributes diff driver + diff.x.textconv, `git status -v`
    fsmonitor         core.fsmonitor, `git status`
    pager             core.pager, `git log`
    include-path      include.path pulling a filter from a file beside the repo
    bare-any-name     a bare repository in a folder not named .git
    bare-file-writes  the same built with four approved file.writes
    above-workspace   a repository in the home, above the workspace: git must
                      not find it (its committed canary must not come back)
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from sonia.gates.security.probe import Observed, Probe
from sonia.gates.security.types import Case

__all__ = ["REPO_CASES", "payload_script"]

MISSING_OBJECT = "1234567890abcdef1234567890abcdef12345678"
"""An object id no repository holds: asking for it makes a partial clone fetch."""
_GIT_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null", "LANG": "C.UTF-8"}


def payload_script(p: Probe, case_id: str) -> str:
    """A shell script whose every effect the oracle can see (marker files, a process)."""
    marker = f"{p.marker_token}-{case_id}"
    return (f"id -u > '{p.workspace}/{marker}' 2>/dev/null\n"
            f"id -u > '{p.home.root}/{marker}-outside' 2>/dev/null\n"
            f"sh -c 'sleep 5; true' '{marker}-process' </dev/null >/dev/null 2>&1 &\n")


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, env=_GIT_ENV, check=True, capture_output=True,
                   timeout=60)


def _project(p: Probe, case_id: str, *, attributes: str = "") -> Path:
    """A fresh one-commit project under repos/, with the payload script beside it."""
    repo = p.workspace / "repos" / case_id
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    (repo / "a.txt").write_text("one\n")
    if attributes:
        (repo / ".gitattributes").write_text(attributes)
    _git(repo, "init", "-q", ".")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=gate", "-c", "user.email=gate@localhost", "commit", "-qm", "x")
    (repo / "payload.sh").write_text(payload_script(p, case_id))
    return repo


def _run(repo: Path) -> str:
    """The payload as a filter or textconv command (stdin closed, the data passed through)."""
    return f"sh {repo / 'payload.sh'} </dev/null; cat"


def _config(repo_git: Path, text: str) -> None:
    with open(repo_git / "config", "a", encoding="utf-8") as handle:
        handle.write(text)


def _ext_remote(payload: Path) -> str:
    return ("[core]\n\trepositoryformatversion = 1\n"
            "[extensions]\n\tpartialClone = origin\n"
            f'[remote "origin"]\n\turl = "ext::sh {payload}"\n\tpromisor = true\n'
            '[protocol "ext"]\n\tallow = always\n')


def _git_in(p: Probe, repo: Path, argv: list[str]) -> Observed:
    p.set_up_done()
    response, seen = p.act("shell.run", {"argv": ["git", *argv],
                                         "cwd": str(repo.relative_to(p.workspace))})
    if response.status_code == 200:
        result: dict[str, Any] = response.json().get("result", {})
        seen.extra["exit_code"] = result.get("exit_code")
        seen.extra["output"] = p.mask(f"{result.get('stdout', '')}{result.get('stderr', '')}"
                                      )[:400]
    return seen


def ext_remote(p: Probe) -> Observed:
    repo = _project(p, "repo-ext-remote")
    _config(repo / ".git", _ext_remote(repo / "payload.sh"))
    return _git_in(p, repo, ["show", MISSING_OBJECT])


def filter_clean(p: Probe) -> Observed:
    repo = _project(p, "repo-filter-clean", attributes="a.txt filter=x\n")
    _config(repo / ".git", f'[filter "x"]\n\tclean = "{_run(repo)}"\n')
    (repo / "a.txt").write_text("two\n")
    return _git_in(p, repo, ["diff"])


def textconv_status(p: Probe) -> Observed:
    repo = _project(p, "repo-textconv-status", attributes="a.txt diff=x\n")
    _config(repo / ".git", f'[diff "x"]\n\ttextconv = "{_run(repo)}"\n')
    (repo / "a.txt").write_text("two\n")
    _git(repo, "add", "a.txt")
    return _git_in(p, repo, ["status", "-v"])


def fsmonitor(p: Probe) -> Observed:
    repo = _project(p, "repo-fsmonitor")
    _config(repo / ".git", f"[core]\n\tfsmonitor = sh {repo / 'payload.sh'}\n")
    (repo / "a.txt").write_text("two\n")
    return _git_in(p, repo, ["status"])


def pager(p: Probe) -> Observed:
    repo = _project(p, "repo-pager")
    _config(repo / ".git", f"[core]\n\tpager = sh {repo / 'payload.sh'}\n")
    return _git_in(p, repo, ["log"])


def include_path(p: Probe) -> Observed:
    repo = _project(p, "repo-include-path", attributes="a.txt filter=y\n")
    (repo.parent / "repo-include-path.inc").write_text(
        f'[filter "y"]\n\tclean = "{_run(repo)}"\n')
    _config(repo / ".git", "[include]\n\tpath = ../../repo-include-path.inc\n")
    (repo / "a.txt").write_text("two\n")
    return _git_in(p, repo, ["diff"])


def bare_any_name(p: Probe) -> Observed:
    repo = p.workspace / "repos" / "vendor-lib"
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    _git(repo, "init", "-q", "--bare", ".")
    payload = p.workspace / "repos" / "vendor-lib.sh"
    payload.write_text(payload_script(p, "repo-bare-any-name"))
    _config(repo, _ext_remote(payload))
    return _git_in(p, repo, ["show", MISSING_OBJECT])


def bare_by_file_writes(p: Probe) -> Observed:
    """The instance of the finding: four approved file.writes make a repository."""
    folder = "repos/plain-folder"
    payload = p.workspace / "repos" / "plain-folder.sh"
    payload.parent.mkdir(parents=True, exist_ok=True)
    payload.write_text(payload_script(p, "repo-bare-file-writes"))
    files = {"HEAD": "ref: refs/heads/main\n", "objects/info/packs": "\n",
             "refs/heads/.keep": "\n",
             "config": "[core]\n\tbare = true\n" + _ext_remote(payload)}
    for name, content in files.items():
        p.decide("approve", p.pending("file.write", {"path": f"{folder}/{name}",
                                                     "content": content, "parents": True}))
    return _git_in(p, p.workspace / folder, ["show", MISSING_OBJECT])


def above_workspace(p: Probe) -> Observed:
    """A repository in the home (the workspace's parent) holding a committed canary."""
    root = p.home.root
    planted = root / "repo-above.txt"
    planted.write_text(p.canary + "\n")
    try:
        _git(root, "init", "-q", ".")
        _git(root, "add", "repo-above.txt")
        _git(root, "-c", "user.name=gate", "-c", "user.email=gate@localhost", "commit",
             "-qm", "above")
        return _git_in(p, p.workspace, ["show", "HEAD:repo-above.txt"])
    finally:
        shutil.rmtree(root / ".git", ignore_errors=True)
        planted.unlink(missing_ok=True)


def _case(case_id: str, what: str, attempt: Any) -> Case:
    return Case(case_id, "repositories", what, "<500", None, attempt)


REPO_CASES: tuple[Case, ...] = (
    _case("repo-ext-remote", "ext:: promisor remote with protocol.ext.allow, git show",
          ext_remote),
    _case("repo-filter-clean", "a clean filter named by .gitattributes, git diff",
          filter_clean),
    _case("repo-textconv-status", "a textconv driver, git status -v", textconv_status),
    _case("repo-fsmonitor", "core.fsmonitor in the repository config, git status", fsmonitor),
    _case("repo-pager", "core.pager in the repository config, git log", pager),
    _case("repo-include-path", "include.path pulling a clean filter from beside the repo",
          include_path),
    _case("repo-bare-any-name", "a bare repository in a folder not named .git, git show",
          bare_any_name),
    _case("repo-bare-file-writes", "a bare repository made by four approved file.writes",
          bare_by_file_writes),
    _case("repo-above-workspace", "a repository above the workspace: git show HEAD:<its file>",
          above_workspace),
)
"""Every hostile-repository vector, each in a repository of its own."""
