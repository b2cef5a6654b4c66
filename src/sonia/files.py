"""Files written whole or not at all, and their digests.

Every file Sonia must not lose half of (secrets, API keys, supervisor state,
backup keys, evidence, sign-offs) is written the same way: a temporary file
beside it, created with its final mode, written and fsynced, renamed over the
old one, and the folder fsynced so the rename itself survives a crash. A crash
leaves the old file or the new one, never a torn one.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

__all__ = ["fsync_dir", "sha256_file", "write_atomic", "write_json_atomic"]

_CHUNK = 1 << 20


def fsync_dir(folder: Path) -> None:
    """Make the folder's entries (a rename, a new file) durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> Path:
    """Replace `path` with `data` atomically and durably; the file gets `mode` from birth
    (a secret is never readable by others, not even for an instant)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(3)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return path


def write_json_atomic(path: Path, data: Any, *, mode: int = 0o644, **dumps: Any) -> Path:
    """`data` as JSON (keys sorted, one space indent unless `dumps` says otherwise)."""
    options = {"indent": 1, "sort_keys": True} | dumps
    return write_atomic(path, (json.dumps(data, **options) + "\n").encode(), mode=mode)


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of a file's bytes, read in 1 MiB chunks (any size, flat memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_entry(root: Path, path: Path, digest: str | None = None) -> dict[str, Any]:
    """A manifest's line for `path`: its POSIX path under `root`, size and sha256 (`digest`
    when the caller already has it), the one shape backups and release bundles share."""
    return {"path": path.relative_to(root).as_posix(), "size": path.stat().st_size,
            "sha256": digest or sha256_file(path)}
