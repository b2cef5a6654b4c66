"""Provenance: which code produced a piece of evidence, taken from the code itself.

A gate result holds for the code that ran, so evidence names that code, not the
caller's working directory (a gate run from another checkout must still name the
`sonia` it imported). Everything here starts at `sonia.__file__`:

    source     sha256 over every file of the imported package folder (relative
               path and content digest, sorted; caches skipped): the files that
               were imported are among them, and it changes with any edit
    git        the checkout holding that folder, when it is tracked there:
               {commit, dirty, repo}; null for an installed wheel or without git
    packages   "name==version" of every installed distribution, sorted, and
               their sha256 (`packages_sha256`) so two captures compare quickly

A gate captures provenance at the start and the end of its run; `changes`
lists what differs, and any difference makes the run INVALID (the code that
ran is not one thing). No machine path is recorded: `repo` is the checkout's
folder name only.
"""

from __future__ import annotations

import hashlib
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import sonia

__all__ = ["capture", "changes", "package_dir", "package_repo", "source_digest"]

_SKIP_PARTS = frozenset({"__pycache__"})
_SKIP_SUFFIXES = (".pyc", ".pyo")


def package_dir() -> Path:
    """The folder of the `sonia` package this process imported."""
    return Path(sonia.__file__).resolve().parent


def source_digest(folder: Path | None = None) -> str:
    """sha256 over (relative path, sha256) of every source file under `folder`."""
    root = folder or package_dir()
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if _SKIP_PARTS.intersection(rel.parts) or path.name.endswith(_SKIP_SUFFIXES):
            continue
        digest.update(rel.as_posix().encode("utf-8") + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).hexdigest().encode("ascii") + b"\n")
    return digest.hexdigest()


def _git(where: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(["git", *args], cwd=where, capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def package_repo(folder: Path | None = None) -> Path | None:
    """The git checkout that tracks the package's files, or None.

    A package installed into a virtualenv that happens to sit inside some checkout
    is not that checkout's code: the package folder must be tracked by it.
    """
    root = folder or package_dir()
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None or not _git(root, "ls-files", "--", "__init__.py"):
        return None
    return Path(top.strip())


def _git_state(folder: Path) -> dict[str, Any] | None:
    repo = package_repo(folder)
    if repo is None:
        return None
    commit = _git(repo, "rev-parse", "HEAD")
    status = _git(repo, "status", "--porcelain")
    if commit is None or status is None:
        return None
    return {"commit": commit.strip(), "dirty": bool(status.strip()), "repo": repo.name}


def _packages() -> list[str]:
    found = {f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions()
             if d.metadata["Name"]}
    return sorted(found, key=str.lower)


def capture(folder: Path | None = None) -> dict[str, Any]:
    """The provenance of the running code (see the module docstring)."""
    root = folder or package_dir()
    packages = _packages()
    return {
        "source_sha256": source_digest(root),
        "git": _git_state(root),
        "sonia_version": sonia.__version__,
        "packages": packages,
        "packages_sha256": hashlib.sha256("\n".join(packages).encode("utf-8")).hexdigest(),
    }


def changes(start: dict[str, Any], end: dict[str, Any]) -> list[str]:
    """What differs between two captures, in words (empty: the same code ran throughout)."""
    found = []
    if start.get("source_sha256") != end.get("source_sha256"):
        found.append("the sonia source files changed during the run")
    if start.get("git") != end.get("git"):
        found.append(f"the git state changed during the run: {start.get('git')} -> "
                     f"{end.get('git')}")
    if start.get("packages_sha256") != end.get("packages_sha256"):
        added = sorted(set(end.get("packages", [])) - set(start.get("packages", [])))
        found.append(f"installed packages changed during the run (now also {added[:5]})")
    return found
