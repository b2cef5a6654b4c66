"""A log file and its rolled-over siblings: `x.log`, then `x.log.1` (newest) ... `x.log.N`.

This is the naming of the standard library's `RotatingFileHandler`, which
writes the JSON logs (kit/logs.py); the supervisor rolls a process's captured
output (`<service>.out`) over the same way when it starts that process again.
Readers see one stream, oldest line first: `sonia logs` and the soak gate's
correlation trace read every sibling, and a `Follower` that was reading when a
file rolled over finishes the old file (now `.1`) before it starts the new one,
so no line is lost or cut across the boundary.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["Follower", "read_lines", "roll_over", "rolled", "siblings", "tail"]


def rolled(path: Path, index: int) -> Path:
    """The `index`-th rolled-over file of `path` (1 is the newest)."""
    return path.with_name(f"{path.name}.{index}")


def roll_over(path: Path, keep: int) -> None:
    """Shift `path` to `.1`, `.1` to `.2` ... and drop what would pass `.keep`."""
    if not path.exists():
        return
    rolled(path, keep).unlink(missing_ok=True)
    for index in range(keep - 1, 0, -1):
        if rolled(path, index).exists():
            os.replace(rolled(path, index), rolled(path, index + 1))
    os.replace(path, rolled(path, 1))


def siblings(path: Path) -> list[Path]:
    """The existing files of this log, oldest first (`.N` ... `.1`, then the live one)."""
    found: list[tuple[int, Path]] = []
    for candidate in path.parent.glob(f"{path.name}.*"):
        suffix = candidate.name[len(path.name) + 1:]
        if suffix.isdigit():
            found.append((int(suffix), candidate))
    ordered = [p for _, p in sorted(found, reverse=True)]
    return ordered + ([path] if path.exists() else [])


def read_lines(path: Path) -> Iterator[str]:
    """Every line of the log, oldest first, across its rolled-over files."""
    for part in siblings(path):
        try:
            with open(part, encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    yield line.rstrip("\n")
        except FileNotFoundError:  # rolled past `keep` while we read
            continue


def tail(path: Path, count: int) -> list[str]:
    """The last `count` lines of the log, reaching into rolled-over files when the live
    one holds fewer (just after a roll-over)."""
    lines: list[str] = []
    for part in reversed(siblings(path)):
        try:
            text = part.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            continue
        lines = text.splitlines() + lines
        if len(lines) >= count:
            break
    return lines[-count:] if count > 0 else []


class Follower:
    """`tail -F` for one log: the whole lines written since the last `poll`."""

    def __init__(self, path: Path) -> None:
        """Start at the current end of `path` (or at its start once it exists)."""
        self.path = path
        self._inode: int | None = None
        self._offset = 0
        self._partial = b""
        try:
            stat = path.stat()
            self._inode, self._offset = stat.st_ino, stat.st_size
        except FileNotFoundError:
            pass

    def poll(self) -> list[str]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return []
        chunks = []
        if self._inode is not None and stat.st_ino != self._inode:
            # Rolled over: the rest of the file we were reading is now `.1`.
            old = rolled(self.path, 1)
            try:
                if old.stat().st_ino == self._inode:
                    chunks.append(self._read_from(old, self._offset))
            except FileNotFoundError:
                pass
            self._offset = 0
        elif stat.st_size < self._offset:  # truncated in place
            self._offset = 0
        self._inode = stat.st_ino
        new = self._read_from(self.path, self._offset)
        self._offset += len(new)
        chunks.append(new)
        *lines, self._partial = (self._partial + b"".join(chunks)).split(b"\n")
        return [line.decode("utf-8", errors="replace") for line in lines]

    @staticmethod
    def _read_from(path: Path, offset: int) -> bytes:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read()
