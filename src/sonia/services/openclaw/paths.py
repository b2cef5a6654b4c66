"""The workspace path sandbox: every tool path is opened with the kernel's help.

Tools name files relative to the workspace. `Workspace` opens the workspace root
once as a directory fd and resolves every path below that fd, so no decision ever
rests on comparing path strings (no `startswith`, no `realpath`):

- `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)` where the
  kernel has it (Linux 5.6+; called through ctypes on x86_64 and aarch64);
- otherwise a walk, one name at a time, each opened with
  `O_PATH | O_NOFOLLOW | O_DIRECTORY` relative to the fd of the one before.

`Workspace.mechanism` says which is in force ("openat2" or "walk"); both give the
same answers, and the tests run every case against both.

What is refused, and with which error (DESIGN.md, "Safety of execution"):

    INVALID_PATH 400          empty, NUL, over 4096 bytes, a name over 255 bytes, not
                              encodable; `.`, `..` or a trailing `/` where a file is
                              meant; a FIFO, device, socket or directory where a
                              regular file is meant (and a non-directory where a
                              directory is meant)
    PATH_OUTSIDE_SANDBOX 403  absolute paths, `~` or `~user` first, a `..` that climbs
                              above the workspace root, and a regular file with more
                              than one hard link (its other names may be outside the
                              workspace, so it is neither read nor written)
    SYMLINK_DENIED 403        any name on the way, the final one included, is a
                              symbolic link, dangling or not
    POLICY_DENIED 403         a protected name, whether or not it exists yet
    NOT_FOUND 404             a name on the way does not exist

Choices worth knowing:

- Nothing is decoded: `%2e%2e%2f` and `..%c0%af` are literal file names, and `\\` is
  an ordinary character, as it is to the kernel.
- `..` is resolved on the names before the kernel sees the path: it cancels the name
  before it (`a/../b` is `b`, and `a` is not looked at), and one that would climb
  above the root is PATH_OUTSIDE_SANDBOX without touching the disk. A `..` can
  therefore never take a path out, whatever the directories are doing meanwhile.
- Special files are INVALID_PATH (they are not files a tool reads or writes; reads
  open with O_NONBLOCK and check the type first, so a FIFO never blocks). Hard-linked
  files are PATH_OUTSIDE_SANDBOX, because a second name is how an outside file gets
  into the workspace. Deleting one is allowed: it removes only the workspace's name.
- Protected patterns (`DEFAULT_PROTECTED`, or the constructor's `protected`) are
  `/`-separated, case-insensitive globs matched against consecutive names at any
  depth; a match also covers everything below it. `.git/config` is protected with
  `.git/hooks` because `core.hooksPath` and `core.fsmonitor` run code just the same.
- Limit: a directory that someone else moves out of the workspace *while* a path is
  being resolved through it is followed to its new place. Doing that needs write
  access outside the workspace, which no tool has.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Literal

from sonia.actions.tools import MAX_PATH_BYTES
from sonia.errors import (
    ApiError,
    Forbidden,
    Internal,
    InvalidArgument,
    InvalidPath,
    NotFound,
    PathOutsideSandbox,
    PayloadTooLarge,
    PolicyDenied,
    SymlinkDenied,
    Unavailable,
)

__all__ = [
    "DEFAULT_PROTECTED",
    "MAX_NAME_BYTES",
    "Workspace",
    "WriteMode",
    "WriteResult",
    "open_regular_file",
    "open_subdir",
    "read_up_to",
]

MAX_NAME_BYTES = 255
DEFAULT_PROTECTED: tuple[str, ...] = (".git/hooks", ".git/config", ".env", ".env.*")
"""Names no tool may touch, existing or not."""

WriteMode = Literal["create", "overwrite", "append"]

_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437}.get(platform.machine())
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
_RESOLVE = _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS
_DIR_PATH_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_TEMP_PREFIX = ".sonia-tmp-"


class _OpenHow(ctypes.Structure):
    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    ]


_OpenAt2 = Callable[[int, bytes, int], int]


def _load_openat2() -> tuple[_OpenAt2 | None, str]:
    """The openat2 system call as a function, or None and why not."""
    if _SYS_OPENAT2 is None:
        return None, f"no openat2 syscall number known for {platform.machine()}"
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError as exc:  # pragma: no cover - every glibc/musl system has a libc
        return None, f"libc not loadable: {exc}"
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    number = ctypes.c_long(_SYS_OPENAT2)

    def openat2(dir_fd: int, path: bytes, flags: int) -> int:
        how = _OpenHow(flags, 0, _RESOLVE)
        fd = int(syscall(number, ctypes.c_int(dir_fd), ctypes.c_char_p(path),
                         ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how))))
        if fd < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        return fd

    return openat2, ""


@dataclass(frozen=True)
class WriteResult:
    path: str
    bytes: int
    created: bool


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _translate(exc: OSError, path: str) -> ApiError:
    """The API error an OSError met while resolving `path` stands for."""
    code = exc.errno
    if code == errno.ENOENT:
        return NotFound(f"{path!r} does not exist")
    if code == errno.ELOOP:
        return SymlinkDenied(f"{path!r} goes through a symbolic link")
    if code == errno.EXDEV:
        return PathOutsideSandbox(f"{path!r} resolves outside the workspace")
    if code in (errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.ENXIO):
        return InvalidPath(f"{path!r}: {os.strerror(code or 0).lower()}")
    if code in (errno.EACCES, errno.EPERM):
        return Forbidden(f"{path!r}: the operating system denies access")
    if code in (errno.ENOSPC, errno.EDQUOT):
        return Unavailable("the workspace file system is full")
    if code == errno.EFBIG:
        return PayloadTooLarge(f"{path!r}: file too large")
    return Internal(f"{path!r}: unexpected {errno.errorcode.get(code or 0, code)}")


def _lstat(dir_fd: int, name: str, path: str) -> os.stat_result:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError as exc:
        raise _translate(exc, path) from exc


def _require_regular(st: os.stat_result, path: str) -> None:
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        raise SymlinkDenied(f"{path!r} is a symbolic link")
    if stat.S_ISDIR(mode):
        raise InvalidPath(f"{path!r} is a directory, not a file")
    if not stat.S_ISREG(mode):
        raise InvalidPath(f"{path!r} is a FIFO, device or socket, not a regular file")
    if st.st_nlink > 1:
        raise PathOutsideSandbox(f"{path!r} has other hard links, which may be outside")


def read_up_to(fd: int, limit: int) -> bytes:
    """At most `limit` bytes from `fd`, reading until then or end of file."""
    chunks: list[bytes] = []
    got = 0
    while got < limit:
        chunk = os.read(fd, min(1 << 20, limit - got))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def open_subdir(dir_fd: int, name: str, path: str, *, flags: int = os.O_PATH) -> int:
    """Open directory `name` below `dir_fd` without following a symlink.

    `flags` is O_PATH (to walk through) or O_RDONLY (to list). A symbolic link is
    SYMLINK_DENIED, anything else that is not a directory INVALID_PATH.
    """
    for _attempt in range(3):
        try:
            return os.open(name, flags | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                           dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise _translate(exc, path) from exc
            mode = _lstat(dir_fd, name, path).st_mode
            if stat.S_ISLNK(mode):
                raise SymlinkDenied(f"{path!r} goes through a symbolic link") from exc
            if not stat.S_ISDIR(mode):
                raise InvalidPath(
                    f"{path!r} goes through something that is not a directory") from exc
            # a directory again: it was swapped while we looked; look once more
    raise InvalidPath(f"{path!r} kept changing between a directory and something else")


def open_regular_file(dir_fd: int, name: str, path: str) -> tuple[int, os.stat_result]:
    """Open regular file `name` below `dir_fd` for reading, refusing everything else.

    The type is checked before opening (a device is never opened) and again on the
    open fd (it is the fd that is read, whatever the name points at by then).
    """
    _require_regular(_lstat(dir_fd, name, path), path)
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        raise _translate(exc, path) from exc
    try:
        st = os.fstat(fd)
        _require_regular(st, path)
    except BaseException:
        _close(fd)
        raise
    return fd, st


class Workspace:
    """The workspace directory, held open, and the only way tools reach files in it."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        protected: Iterable[str] = DEFAULT_PROTECTED,
        use_openat2: bool = True,
    ) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self._root_fd = os.open(self.root, _DIR_PATH_FLAGS)
        self._protected = tuple(
            tuple(part.casefold() for part in pattern.split("/") if part)
            for pattern in protected
        )
        self._openat2: _OpenAt2 | None = None
        self.fallback_reason = "openat2 turned off by the caller"
        if use_openat2:
            self._openat2, self.fallback_reason = _load_openat2()
        if self._openat2 is not None:
            try:
                _close(self._openat2(self._root_fd, b".", _DIR_PATH_FLAGS))
            except OSError as exc:
                # ENOSYS: kernel < 5.6; EPERM: a seccomp filter; E2BIG/EINVAL: old ABI.
                self._openat2 = None
                self.fallback_reason = f"openat2 unusable: {os.strerror(exc.errno or 0)}"
            else:
                self.fallback_reason = ""

    @property
    def mechanism(self) -> Literal["openat2", "walk"]:
        return "openat2" if self._openat2 is not None else "walk"

    def close(self) -> None:
        if self._root_fd >= 0:
            _close(self._root_fd)
            self._root_fd = -1

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # path syntax ------------------------------------------------------------
    def parse(self, path: str) -> tuple[str, ...]:
        """The names of `path` below the root after `..` is applied; () is the root.

        Malformed paths are INVALID_PATH, escapes PATH_OUTSIDE_SANDBOX, protected
        names POLICY_DENIED; nothing on disk is consulted.
        """
        if not isinstance(path, str) or path == "":
            raise InvalidPath("the path is empty")
        if "\x00" in path:
            raise InvalidPath("the path contains a NUL byte")
        try:
            encoded = path.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError as exc:
            raise InvalidPath("the path is not valid UTF-8") from exc
        if len(encoded) > MAX_PATH_BYTES:
            raise InvalidPath(f"the path is longer than {MAX_PATH_BYTES} bytes")
        if path[0] == "/":
            raise PathOutsideSandbox(f"{path!r} is absolute; paths are relative to the workspace")
        if path[0] == "~":
            raise PathOutsideSandbox(f"{path!r} names a home directory")
        names: list[str] = []
        for name in path.split("/"):
            if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
                raise InvalidPath(f"a name in {path!r} is longer than {MAX_NAME_BYTES} bytes")
            if name in ("", "."):
                continue
            if name == "..":
                if not names:
                    raise PathOutsideSandbox(f"{path!r} climbs above the workspace")
                names.pop()
                continue
            names.append(name)
        parts = tuple(names)
        if self.is_protected(parts):
            raise PolicyDenied(f"{path!r} is a protected name")
        return parts

    def parse_file(self, path: str) -> tuple[str, ...]:
        """Like `parse`, for a path that must name a file: its last name is a plain one."""
        parts = self.parse(path)
        if path.rsplit("/", 1)[-1] in ("", ".", ".."):
            raise InvalidPath(f"{path!r} does not end in a file name")
        return parts

    def is_protected(self, parts: tuple[str, ...]) -> bool:
        folded = [part.casefold() for part in parts]
        for pattern in self._protected:
            width = len(pattern)
            for start in range(len(folded) - width + 1):
                if all(fnmatchcase(folded[start + i], pattern[i]) for i in range(width)):
                    return True
        return False

    def absolute(self, parts: tuple[str, ...]) -> str:
        """The absolute path of resolved `parts` (for a child process's cwd, never for checks)."""
        return os.path.join(self.root, *parts)

    # resolution ---------------------------------------------------------------
    def _open_parts(self, parts: tuple[str, ...], path: str, *, create: bool = False) -> int:
        """An O_PATH fd of directory `parts`; `create` makes missing ones (walk only)."""
        if self._root_fd < 0:
            raise Unavailable("the workspace is closed")
        if self._openat2 is not None and not create:
            raw = "/".join(parts).encode("utf-8", "surrogateescape") or b"."
            for _attempt in range(8):
                try:
                    return self._openat2(self._root_fd, raw, _DIR_PATH_FLAGS)
                except OSError as exc:
                    if exc.errno == errno.EAGAIN:
                        continue  # a rename raced the lookup; the kernel asks to retry
                    if exc.errno == errno.ENOTDIR:
                        raise InvalidPath(
                            f"{path!r} goes through something that is not a directory"
                        ) from exc
                    raise _translate(exc, path) from exc
            raise Unavailable(f"{path!r} kept changing while it was resolved")
        fd = os.dup(self._root_fd)
        try:
            for name in parts:
                try:
                    child = open_subdir(fd, name, path)
                except NotFound:
                    if not create:
                        raise
                    try:
                        os.mkdir(name, 0o755, dir_fd=fd)
                    except FileExistsError:
                        pass  # made meanwhile; open_subdir checks what it is
                    except OSError as exc:
                        raise _translate(exc, path) from exc
                    child = open_subdir(fd, name, path)
                _close(fd)
                fd = child
        except BaseException:
            _close(fd)
            raise
        return fd

    @contextlib.contextmanager
    def _parent(
        self, path: str, *, create: bool = False
    ) -> Iterator[tuple[int, str]]:
        """(readable fd of the parent directory, final name) of file path `path`."""
        parts = self.parse_file(path)
        parent = self._open_parts(parts[:-1], path, create=create)
        try:
            dir_fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=parent)
        except OSError as exc:
            raise _translate(exc, path) from exc
        finally:
            _close(parent)
        try:
            yield dir_fd, parts[-1]
        finally:
            _close(dir_fd)

    def open_dir(self, path: str) -> int:
        """A readable directory fd of `path` (the caller closes it)."""
        parts = self.parse(path)
        fd = self._open_parts(parts, path)
        try:
            return os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
        except OSError as exc:
            raise _translate(exc, path) from exc
        finally:
            _close(fd)

    def open_file(self, path: str) -> tuple[int, os.stat_result]:
        """A read-only fd of regular file `path` and its stat (the caller closes it)."""
        with self._parent(path) as (dir_fd, name):
            return open_regular_file(dir_fd, name, path)

    def read_bytes(self, path: str, limit: int) -> tuple[bytes, int]:
        """Up to `limit` bytes of file `path`, and its size."""
        fd, st = self.open_file(path)
        try:
            return read_up_to(fd, limit), st.st_size
        finally:
            _close(fd)

    # changes ------------------------------------------------------------------
    def write_file(
        self,
        path: str,
        data: bytes,
        *,
        mode: WriteMode = "overwrite",
        make_parents: bool = False,
        max_bytes: int | None = None,
    ) -> WriteResult:
        """Write `data` to `path` atomically: temp file, fsync, rename, fsync directory.

        `create` fails if the file exists (and never replaces one made meanwhile),
        `overwrite` replaces or creates, `append` writes old content plus `data`.
        Readers see the old file or the new one, never a part.
        """
        if mode not in ("create", "overwrite", "append"):
            raise InvalidArgument(f"unknown write mode {mode!r}")
        with self._parent(path, create=make_parents) as (dir_fd, name):
            try:
                existing: os.stat_result | None = os.stat(
                    name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                existing = None
            except OSError as exc:
                raise _translate(exc, path) from exc
            if existing is not None:
                _require_regular(existing, path)
                if mode == "create":
                    raise InvalidArgument(f"{path!r} already exists; write mode 'create'")
            if mode == "append" and existing is not None:
                fd, st = open_regular_file(dir_fd, name, path)
                try:
                    old = read_up_to(fd, (max_bytes if max_bytes is not None else st.st_size) + 1)
                finally:
                    _close(fd)
                data = old + data
            if max_bytes is not None and len(data) > max_bytes:
                raise PayloadTooLarge(f"{path!r} would be larger than {max_bytes} bytes")
            permissions = stat.S_IMODE(existing.st_mode) if existing is not None else 0o644
            self._replace(dir_fd, name, data, permissions, path, exclusive=mode == "create")
        return WriteResult(path=path, bytes=len(data), created=existing is None)

    def _replace(
        self, dir_fd: int, name: str, data: bytes, permissions: int, path: str,
        *, exclusive: bool,
    ) -> None:
        temp = f"{_TEMP_PREFIX}{secrets.token_hex(8)}"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        except OSError as exc:
            raise _translate(exc, path) from exc
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fchmod(fd, permissions)
                os.fsync(fd)
            finally:
                _close(fd)
            if exclusive:
                # link() refuses an existing name, so a file made meanwhile is kept.
                os.link(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd,
                        follow_symlinks=False)
                os.unlink(temp, dir_fd=dir_fd)
            else:
                os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            os.fsync(dir_fd)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=dir_fd)
            if isinstance(exc, FileExistsError):
                raise InvalidArgument(f"{path!r} already exists; write mode 'create'") from exc
            if isinstance(exc, OSError):
                raise _translate(exc, path) from exc
            raise

    def delete(self, path: str) -> Literal["file", "directory"]:
        """Remove regular file or empty directory `path`; symlinks and special files refused."""
        with self._parent(path) as (dir_fd, name):
            st = _lstat(dir_fd, name, path)
            try:
                if stat.S_ISLNK(st.st_mode):
                    raise SymlinkDenied(f"{path!r} is a symbolic link")
                if stat.S_ISDIR(st.st_mode):
                    try:
                        os.rmdir(name, dir_fd=dir_fd)
                    except OSError as exc:
                        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                            raise InvalidArgument(f"directory {path!r} is not empty") from exc
                        raise
                    kind: Literal["file", "directory"] = "directory"
                elif stat.S_ISREG(st.st_mode):
                    os.unlink(name, dir_fd=dir_fd)
                    kind = "file"
                else:
                    raise InvalidPath(f"{path!r} is a FIFO, device or socket")
                os.fsync(dir_fd)
            except OSError as exc:
                raise _translate(exc, path) from exc
            return kind
