"""Before `git` runs: refuse a repository whose own files could make git run code.

Git obeys its repository's configuration, and that configuration can name
programs: `filter.<x>.clean`/`smudge` (run by `git diff` and `git status`),
`diff.<x>.textconv` and `diff.<x>.command` (run by `git status -v`, which has no
`--no-textconv`), `core.fsmonitor`, `core.pager`, `core.sshCommand`,
`gpg.program`, a remote `ext::sh -c ...` allowed by `protocol.ext.allow`, and
`include.path` can pull any of these in from elsewhere. `-c name=value` on the
command line can switch off the names we know, but `filter.<any name>` cannot be
enumerated. So the repository git would use is inspected first, and refused
(403 POLICY_DENIED) unless every key of its config is in a small allowlist of
harmless keys (`SAFE_KEYS`, `SAFE_SUBSECTION_KEYS`); everything else, known or
not, is refused. In detail, from the command's real cwd up to the workspace root
(git finds nothing higher: `GIT_CEILING_DIRECTORIES` is the workspace's parent):

- a `.git` that is a symbolic link or a file (a "gitfile" pointing anywhere) is
  refused; a `.git` directory is the repository, and the walk stops there;
- a directory that is itself a repository (HEAD plus objects/, refs/ or
  commondir: a bare repository, under any name) is refused;
- in the repository: `commondir`, `config.worktree`, `objects/info/alternates`
  (objects read from outside) are refused; `config` must be a regular file with
  one link, and is listed by `git config --file /dev/stdin --list --null` fed the
  bytes read here (with `--file`, git does not follow includes and runs nothing);
- `info/attributes` and the `.gitattributes` from the worktree root down to the
  cwd may not name `filter`, `diff`, `merge` or `textconv` drivers. Deeper
  `.gitattributes` files are moot: a driver only runs if config defines it, and
  no config can.

Hooks are moot too (status, log, diff and show run none), and `core.hooksPath`
is `/dev/null` on the command line anyway.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import subprocess

from sonia.errors import ApiError, PolicyDenied
from sonia.services.openclaw.paths import Workspace, open_regular_file, read_up_to

__all__ = [
    "SAFE_KEYS", "SAFE_SUBSECTION_KEYS", "check_repository", "config_problems", "list_config",
]

SAFE_KEYS = frozenset({
    "core.repositoryformatversion", "core.filemode", "core.bare", "core.logallrefupdates",
    "core.ignorecase", "core.precomposeunicode", "core.symlinks", "core.autocrlf",
    "core.eol", "core.safecrlf", "core.quotepath", "core.abbrev", "core.checkstat",
    "core.trustctime", "user.name", "user.email", "init.defaultbranch", "pull.rebase",
    "pull.ff", "push.default", "color.ui", "i18n.commitencoding", "i18n.logoutputencoding",
})
"""`section.name` keys that only change how git formats or stores things."""
SAFE_SUBSECTION_KEYS: dict[str, frozenset[str]] = {
    "branch": frozenset({"remote", "merge", "rebase", "description"}),
    "remote": frozenset({"url", "pushurl", "fetch", "tagopt", "prune"}),
}
"""`section.<subsection>.name` keys allowed, by section."""
_DRIVER_ATTRIBUTES = frozenset({"filter", "diff", "merge", "textconv"})
_MAX_CONFIG_BYTES = 1 << 20
_GIT_TIMEOUT_SECONDS = 10.0
_ATTRIBUTE = re.compile(r"^[-!]?([A-Za-z0-9_.-]+)(=.*)?$")


def _refuse(why: str) -> PolicyDenied:
    return PolicyDenied(f"git refused: {why}")


def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise


def _looks_like_repository(dir_fd: int) -> bool:
    """Git's own test, loosely: HEAD and one of objects/, refs/, commondir."""
    if _lstat(dir_fd, "HEAD") is None:
        return False
    return any(_lstat(dir_fd, name) is not None for name in ("objects", "refs", "commondir"))


def _read(dir_fd: int, name: str, shown: str) -> bytes | None:
    """The bytes of regular file `name`, None when absent; links and specials refused."""
    if _lstat(dir_fd, name) is None:
        return None
    try:
        fd, _st = open_regular_file(dir_fd, name, shown)
    except ApiError as exc:
        raise _refuse(f"{shown} is not a plain file ({exc.detail})") from exc
    try:
        data = read_up_to(fd, _MAX_CONFIG_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > _MAX_CONFIG_BYTES:
        raise _refuse(f"{shown} is larger than {_MAX_CONFIG_BYTES} bytes")
    return data


def list_config(git: str, data: bytes, shown: str) -> list[tuple[str, str | None]]:
    """(key, value) pairs of config bytes, as git itself parses them, running nothing."""
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CEILING_DIRECTORIES": "/", "LANG": "C"}
    try:
        done = subprocess.run([git, "config", "--file", "/dev/stdin", "--list", "--null"],
                              input=data, capture_output=True, env=env, cwd="/",
                              timeout=_GIT_TIMEOUT_SECONDS, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise _refuse(f"{shown} could not be read by git config: {exc}") from exc
    if done.returncode != 0:
        first = done.stderr.decode("utf-8", "replace").strip().splitlines()[:1]
        raise _refuse(f"{shown} is not valid git config ({first[0] if first else 'error'})")
    pairs: list[tuple[str, str | None]] = []
    for entry in done.stdout.decode("utf-8", "replace").split("\0"):
        if entry:
            key, newline, value = entry.partition("\n")
            pairs.append((key, value if newline else None))
    return pairs


def config_problems(pairs: list[tuple[str, str | None]]) -> list[str]:
    """Every key (with why) outside the allowlist; empty when the config is harmless."""
    problems = []
    for key, value in pairs:
        section, _dot, rest = key.partition(".")
        section = section.lower()
        subsection, _dot2, name = rest.rpartition(".")
        name = name.lower()
        if not subsection:
            if f"{section}.{name}" not in SAFE_KEYS:
                problems.append(f"{key} is not an allowed config key")
        elif name not in SAFE_SUBSECTION_KEYS.get(section, frozenset()):
            problems.append(f"{key} is not an allowed config key")
        elif section == "remote" and name in ("url", "pushurl") and (
                value is None or "::" in value or value.startswith("-")):
            problems.append(f"{key} names a transport helper ({value!r})")
    return problems


def _attributes_problems(data: bytes, shown: str) -> list[str]:
    problems = []
    for line in data.decode("utf-8", "replace").splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        for word in words[1:]:
            match = _ATTRIBUTE.match(word)
            attribute = match.group(1).lower() if match else word.lower()
            if attribute in _DRIVER_ATTRIBUTES and not word.startswith(("-", "!")):
                problems.append(f"{shown} names a {attribute} driver ({word})")
    return problems


def _check_gitdir(git: str, gitdir_fd: int, shown: str) -> None:
    for name in ("commondir", "config.worktree", "gitdir"):
        if _lstat(gitdir_fd, name) is not None:
            raise _refuse(f"{shown}/{name} exists (it points git elsewhere)")
    objects = _lstat(gitdir_fd, "objects")
    if objects is not None and not stat.S_ISDIR(objects.st_mode):
        raise _refuse(f"{shown}/objects is not a directory")
    for sub in ("objects/info/alternates", "objects/info/http-alternates"):
        if _lstat(gitdir_fd, sub) is not None:
            raise _refuse(f"{shown}/{sub} exists (objects read from elsewhere)")
    config = _read(gitdir_fd, "config", f"{shown}/config")
    if config is not None:
        problems = config_problems(list_config(git, config, f"{shown}/config"))
        if problems:
            raise _refuse(f"{shown}/config: " + "; ".join(problems[:5]))
    info = _lstat(gitdir_fd, "info")
    if info is not None and not stat.S_ISDIR(info.st_mode):
        raise _refuse(f"{shown}/info is not a directory")
    if info is not None:
        info_fd = os.open("info", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=gitdir_fd)
        try:
            data = _read(info_fd, "attributes", f"{shown}/info/attributes")
        finally:
            os.close(info_fd)
        problems = _attributes_problems(data or b"", f"{shown}/info/attributes")
        if problems:
            raise _refuse("; ".join(problems[:5]))


def check_repository(workspace: Workspace, cwd: tuple[str, ...], git: str) -> None:
    """Refuse (POLICY_DENIED) when the repository git would use from `cwd` is unsafe."""
    levels = [cwd[:depth] for depth in range(len(cwd), -1, -1)]
    for index, parts in enumerate(levels):
        shown = "/".join(parts) or "."
        fd = workspace.open_dir(shown)
        try:
            found = _lstat(fd, ".git")
            if found is not None:
                if not stat.S_ISDIR(found.st_mode):
                    raise _refuse(f"{shown}/.git is a link or a gitfile, not a directory")
                gitdir = os.open(".git", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                                 | os.O_CLOEXEC, dir_fd=fd)
                try:
                    _check_gitdir(git, gitdir, f"{shown}/.git")
                finally:
                    os.close(gitdir)
                # the worktree root and every folder down to the cwd
                for below in reversed(levels[: index + 1]):
                    _check_attributes_file(workspace, below)
                return
            if _looks_like_repository(fd):
                raise _refuse(f"{shown} is a bare repository")
        finally:
            os.close(fd)


def _check_attributes_file(workspace: Workspace, parts: tuple[str, ...]) -> None:
    shown = "/".join(parts) or "."
    fd = workspace.open_dir(shown)
    try:
        data = _read(fd, ".gitattributes", f"{shown}/.gitattributes")
    finally:
        os.close(fd)
    problems = _attributes_problems(data or b"", f"{shown}/.gitattributes")
    if problems:
        raise _refuse("; ".join(problems[:5]))
