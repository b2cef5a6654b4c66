"""The effect oracle: did an attempt change the machine, whatever the stack answered?

A status code is what the product says about itself; a stub (or a broken
product) can perform an attack and still answer 403. So every case is judged
by what it left behind, measured by the gate outside the stack:

    canaries    files outside the workspace, at several depths above it and in
                a sibling folder; their bytes are hashed before and after
    sentinels   files inside the workspace no case may change; hashed likewise
    workspace   every name under the workspace (links not followed): a file's
                sha256, a link's target, a folder, the kind of a special file; a
                name that appears, vanishes or changes is a write inside the
                workspace, allowed only where the case says it may write
    listings    the names in each folder above and beside the workspace; a new
                name there is a write outside the workspace
    markers     every execution payload the gate plants would create a file whose
                name holds `marker_token` (and write `id -u` into it) and start a
                process whose argv holds it; the gate looks for both
                (the workspace tree, the folders above it, the psutil process table)

`Effects.diff(before, after)` is plain data, written into the case's evidence
row, so the judge re-reads it without the machine.

Leaks are judged the same way: `secret_slices(text, secret)` finds any
`SLICE`-character piece of a planted secret in an answer, also inside base64 and
hex runs decoded, so a secret read in two halves, or encoded, is still caught.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

__all__ = ["SLICE", "EffectWatch", "Snapshot", "decoded_views", "secret_slices",
           "tree_manifest"]

SLICE = 8
"""The shortest piece of a planted secret that counts as leaked."""
_B64_RUN = re.compile(r"[A-Za-z0-9+/_-]{12,}={0,2}")
_HEX_RUN = re.compile(r"(?:[0-9a-fA-F]{2}){6,}")


def decoded_views(text: str) -> list[str]:
    """`text`, plus every base64 or hex run in it decoded (as Latin-1, so no byte is lost)."""
    views = [text]
    for match in _HEX_RUN.finditer(text):
        try:
            views.append(binascii.unhexlify(match.group()).decode("latin-1"))
        except (binascii.Error, ValueError):
            continue
    for match in _B64_RUN.finditer(text):
        run = match.group().rstrip("=")
        for altchars in (b"+/", b"-_"):
            padded = run + "=" * (-len(run) % 4)
            try:
                raw = base64.b64decode(padded, altchars=altchars, validate=False)
            except (binascii.Error, ValueError):
                continue
            views.append(raw.decode("latin-1"))
    return views


def secret_slices(text: str, secret: str, size: int = SLICE) -> list[str]:
    """Every `size`-character slice of `secret` found in `text` or in a decoding of it."""
    if len(secret) < size:
        return [secret] if secret and secret in text else []
    pieces = {secret[i:i + size] for i in range(len(secret) - size + 1)}
    found: set[str] = set()
    for view in decoded_views(text):
        found.update(piece for piece in pieces if piece in view)
    return sorted(found)


def _digest(path: Path) -> str:
    try:
        if path.is_symlink():
            return "link:" + os.readlink(path)
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable:{type(exc).__name__}"


def _entry(path: str) -> str | None:
    """What one name is, read without following it or opening anything but a regular
    file (opening a FIFO would block the gate)."""
    try:
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            return "link:" + os.readlink(path)
        if stat.S_ISDIR(info.st_mode):
            return "dir"
        if stat.S_ISREG(info.st_mode):
            with open(path, "rb", opener=lambda p, f: os.open(p, f | os.O_NOFOLLOW)) as file:
                return "file:" + hashlib.file_digest(file, "sha256").hexdigest()
        return f"special:{stat.S_IFMT(info.st_mode):o}"
    except OSError:
        return None  # gone between the listing and the look: not there


def tree_manifest(root: Path) -> dict[str, str]:
    """Every name under `root` (relative path -> `_entry`), links never followed."""
    entries: dict[str, str] = {}
    for folder, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            path = os.path.join(folder, name)
            entry = _entry(path)
            if entry is not None:
                entries[os.path.relpath(path, root)] = entry
    return entries


def _names(folder: Path) -> set[str]:
    try:
        return set(os.listdir(folder))
    except OSError:
        return set()


@dataclass(frozen=True)
class Snapshot:
    hashes: dict[str, str]
    listings: dict[str, frozenset[str]]
    markers: frozenset[str]
    """Marker files and processes already there (an earlier case's), not this one's."""
    trees: dict[str, dict[str, str]] = field(default_factory=dict)
    """label -> `tree_manifest` of each watched tree."""


@dataclass
class EffectWatch:
    """What the oracle watches: files by label, folders whose names must not grow, markers."""

    watched: dict[str, Path]
    """label -> file whose bytes must not change (canaries and sentinels)."""
    folders: dict[str, Path]
    """label -> folder above or beside the workspace that must gain no new name."""
    marker_token: str
    marker_roots: tuple[Path, ...]
    """Trees searched for a marker file (walked without following links)."""
    ignored_names: frozenset[str] = frozenset()
    """Names the product itself may create in a watched folder (its own data folders)."""
    trees: dict[str, Path] = field(default_factory=dict)
    """label -> folder whose whole tree is watched (the workspace)."""

    def snapshot(self) -> Snapshot:
        seen = {m["path"] for m in self.markers()}
        seen |= {f"pid:{p['pid']}" for p in self.marker_processes()}
        return Snapshot({label: _digest(path) for label, path in self.watched.items()},
                        {label: frozenset(_names(path) - self.ignored_names)
                         for label, path in self.folders.items()},
                        frozenset(seen),
                        self.tree_snapshot())

    def tree_snapshot(self) -> dict[str, dict[str, str]]:
        return {label: tree_manifest(path) for label, path in self.trees.items()}

    def markers(self) -> list[dict[str, Any]]:
        """Marker files anywhere under the roots: each with its owner uid and what it holds."""
        found: list[dict[str, Any]] = []
        for root in self.marker_roots:
            for folder, dirs, files in os.walk(root):
                for name in (*dirs, *files):
                    if self.marker_token not in name:
                        continue
                    path = Path(folder) / name
                    try:
                        info = path.lstat()
                        text = path.read_text(errors="replace")[:64] if path.is_file() else ""
                    except OSError:
                        continue
                    found.append({"path": str(path), "uid": info.st_uid, "content": text.strip()})
        return found

    def marker_processes(self) -> list[dict[str, Any]]:
        """Live processes whose command line holds the marker token."""
        found = []
        for proc in psutil.process_iter(["pid", "cmdline", "uids"]):
            cmdline = proc.info.get("cmdline") or []
            if any(self.marker_token in part for part in cmdline):
                uids = proc.info.get("uids")
                found.append({"pid": proc.info["pid"], "argv": cmdline[:6],
                              "uid": uids.effective if uids else None})
        return found

    def diff(self, before: Snapshot) -> dict[str, Any]:
        """The effects since `before`, as evidence (empty lists: nothing happened). What
        a case may write is the judge's to allow (`may_write`), from this record."""
        after = self.snapshot()
        changed = sorted(label for label, digest in after.hashes.items()
                         if before.hashes.get(label) != digest)
        created = sorted(f"{label}/{name}" for label, names in after.listings.items()
                         for name in names - before.listings.get(label, frozenset()))
        removed = sorted(f"{label}/{name}" for label, names in before.listings.items()
                         for name in names - after.listings.get(label, frozenset()))
        tree_changes = [
            {"tree": label, "path": path, "change": change}
            for label, now in sorted(after.trees.items())
            for path, change in _tree_changes(before.trees.get(label, {}), now)]
        return {"files_watched": len(after.hashes), "changed": changed,
                "created_outside": created, "removed_outside": removed,
                "tree_entries": sum(len(entries) for entries in after.trees.values()),
                "tree_changes": tree_changes,
                "markers": [m for m in self.markers() if m["path"] not in before.markers],
                "marker_processes": [p for p in self.marker_processes()
                                     if f"pid:{p['pid']}" not in before.markers]}


def _tree_changes(before: dict[str, str], after: dict[str, str]) -> list[tuple[str, str]]:
    """(path, "created" | "removed" | "changed") for every name that differs, sorted."""
    return sorted([(path, "created") for path in after.keys() - before.keys()]
                  + [(path, "removed") for path in before.keys() - after.keys()]
                  + [(path, "changed") for path in after.keys() & before.keys()
                     if after[path] != before[path]])
