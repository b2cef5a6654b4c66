"""What `shell.run` arguments may name in the workspace, checked before the command runs.

The allowlist (EVA's `commands`) already refuses absolute paths, `~` and `..` in
operands, and lists in `CommandPlan.paths` every argument the command will open
as a path: operands before and after `--` (`-d/link` after `--` is a path, not a
flag) and values of path flags (`find -newer FILE`). A command such as `cat`
opens its operands itself, relative to its own working directory, and follows
symbolic links. So each of those paths is resolved here from the command's real
cwd (itself opened without following links), one name at a time without
following links, and the command is refused when that thing is, or goes through:

    a symbolic link                    SYMLINK_DENIED 403
    a file with other hard links       PATH_OUTSIDE_SANDBOX 403 (its twin may be outside)
    a protected name (.git, .env, ...) POLICY_DENIED 403, whether or not it exists

(the protected test is on the whole path from the workspace root, cwd included,
so `mkdir -p -- -x/.git/hooks` is refused like `.git/hooks`). A path that names
nothing existing is fine (`mkdir new`).

A recursive command (`grep -r`, `ls -R`, `find`, `cp -r`, `rm -r`) would also meet
protected names below its operands, so `protected_below` lists every protected
name in the workspace and the plan carries them in `hidden`: bubblewrap covers
them while the command runs, and without bubblewrap the command is refused.
Git walks the worktree too (`git diff` prints changed files): it is treated as
recursive, with every protected name hidden except its `.git` directories, which
`gitguard` inspects instead. What a repository has *committed* (a `.env` in its
history) is repository content, and git shows it.

This is a check before the run, so a link swapped in between is still possible
for someone who can write the workspace directly; bubblewrap, where it works, is
what contains that.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import stat

from sonia.actions.commands import CommandPlan
from sonia.errors import PathOutsideSandbox, PolicyDenied, SymlinkDenied
from sonia.services.openclaw.gitguard import check_repository
from sonia.services.openclaw.paths import Workspace

__all__ = ["MAX_HIDDEN", "MAX_WALK_ENTRIES", "check_operands", "check_plan", "protected_below"]

MAX_WALK_ENTRIES = 100_000
"""Entries a recursive command's view may hold before it is refused as too large to hide."""
MAX_HIDDEN = 512
"""Protected names a view may cover (one mount each) before the command is refused."""


def _walk(cwd_fd: int, names: list[str], shown: str) -> None:
    fd = os.dup(cwd_fd)
    try:
        for index, name in enumerate(names):
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG, errno.EACCES):
                    return  # names nothing (yet): nothing to follow
                raise
            if stat.S_ISLNK(st.st_mode):
                raise SymlinkDenied(f"argument {shown!r} goes through a symbolic link")
            last = index == len(names) - 1
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                raise PathOutsideSandbox(
                    f"argument {shown!r} has other hard links, which may be outside")
            if last or not stat.S_ISDIR(st.st_mode):
                return
            child = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                            dir_fd=fd)
            os.close(fd)
            fd = child
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


def check_operands(workspace: Workspace, paths: tuple[str, ...] | list[str],
                   cwd: str = ".") -> None:
    """Refuse paths (relative to `cwd`) that name links, hard-linked files or protected names."""
    cwd_parts = workspace.parse(cwd)
    cwd_fd = workspace.open_dir(cwd)
    try:
        for element in paths:
            if not element or element.startswith("/"):
                raise PathOutsideSandbox(f"argument {element!r} is not a relative path")
            names = [n for n in element.split("/") if n not in ("", ".")]
            if ".." in names:
                raise PathOutsideSandbox(f"argument {element!r} climbs with '..'")
            if workspace.is_protected((*cwd_parts, *names)):
                raise PolicyDenied(f"argument {element!r} names a protected path")
            if names:
                _walk(cwd_fd, names, element)
    finally:
        os.close(cwd_fd)


def protected_below(workspace: Workspace, limit: int = MAX_WALK_ENTRIES) -> list[str]:
    """Absolute paths of every protected name in the workspace (not below one, not links).

    Raises POLICY_DENIED when the workspace holds more than `limit` entries or more
    than MAX_HIDDEN protected names.
    """
    found: list[str] = []
    seen = 0
    stack: list[tuple[str, ...]] = [()]
    while stack:
        parts = stack.pop()
        fd = workspace.open_dir("/".join(parts) or ".")
        try:
            with os.scandir(fd) as scan:
                entries = [(entry.name, entry.is_dir(follow_symlinks=False),
                            entry.is_symlink()) for entry in scan]
        finally:
            os.close(fd)
        seen += len(entries)
        if seen > limit:
            raise PolicyDenied(f"the workspace holds more than {limit} entries: too many to "
                               f"hide protected names from a recursive command")
        for name, is_dir, is_link in entries:
            child = (*parts, name)
            if is_link:
                continue  # recursive commands do not follow links below their operands
            if workspace.is_protected(child):
                found.append(workspace.absolute(child))
                if len(found) > MAX_HIDDEN:
                    raise PolicyDenied(f"the workspace holds more than {MAX_HIDDEN} protected "
                                       f"names: too many to hide from a recursive command")
            elif is_dir:
                stack.append(child)
    return sorted(found)


def check_plan(workspace: Workspace, plan: CommandPlan, cwd: str = ".") -> CommandPlan:
    """`plan` with its paths checked from `cwd`, git's repository inspected, and the
    protected names a recursive command must not see in `hidden`."""
    check_operands(workspace, plan.paths, cwd)
    if plan.name == "git":
        check_repository(workspace, workspace.parse(cwd), plan.binary)
        # git walks the worktree (diff, status -v print file contents): it sees its
        # repositories but no other protected name (`.env` ...), like any recursion.
        hidden = [path for path in protected_below(workspace)
                  if os.path.basename(path).casefold() != ".git"]
        return dataclasses.replace(plan, recursive=True, hidden=tuple(hidden))
    if plan.recursive:
        return dataclasses.replace(plan, hidden=tuple(protected_below(workspace)))
    return plan
