"""What `shell.run` arguments may name in the workspace, checked before the command runs.

The allowlist (EVA's `commands`) already refuses absolute paths, `~` and `..` in
operands; but a command such as `cat` opens its operands itself and follows
symbolic links, so a link planted in the workspace would lead it outside (with
bubblewrap the outside is not even mounted; with rlimits alone it is). So every
argument of a plan that names something existing in the workspace is walked
here, one name at a time without following links, and the command is refused
when that thing is, or goes through:

    a symbolic link                    SYMLINK_DENIED 403
    a file with other hard links       PATH_OUTSIDE_SANDBOX 403 (its twin may be outside)
    a protected name (.git, .env, ...) POLICY_DENIED 403, whether or not it exists

Flags (arguments starting with `-`) are not names; an argument that names
nothing existing is fine (`mkdir new`). This is a check before the run, so a
link swapped in between is still possible for someone who can write the
workspace directly; bubblewrap, where it works, is what contains that.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Sequence

from sonia.errors import PathOutsideSandbox, PolicyDenied, SymlinkDenied
from sonia.services.openclaw.paths import Workspace

__all__ = ["check_operands"]


def _walk(root_fd: int, names: list[str], shown: str) -> None:
    fd = os.dup(root_fd)
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


def check_operands(workspace: Workspace, argv: Sequence[str]) -> None:
    """Refuse a plan whose arguments name links, hard-linked files or protected names."""
    root_fd = os.open(workspace.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for element in argv[1:]:
            if not element or element.startswith("-") or element.startswith("/"):
                continue
            names = [n for n in element.split("/") if n not in ("", ".")]
            if not names or ".." in names:
                continue
            if workspace.is_protected(tuple(names)):
                raise PolicyDenied(f"argument {element!r} names a protected path")
            _walk(root_fd, names, element)
    finally:
        os.close(root_fd)
