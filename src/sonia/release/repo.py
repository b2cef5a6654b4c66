"""The git side of a release: the checkout of the code that ran, and its tags.

The checkout is the one that tracks the imported `sonia` package
(`provenance.package_repo`), never the caller's working directory: a release is
of the code that ran the gates. Tags are `release-candidate-N` by default, N one
more than the highest such tag or bundle folder so far; `finalize` makes the
annotated tag only when the bundle verifies with every role signed.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from pathlib import Path

from sonia.errors import ConfigError, ReleaseError
from sonia.gates.common import provenance

__all__ = ["CANDIDATE_PREFIX", "check_tag_name", "code_repo", "create_tag", "git", "head_commit",
           "next_candidate_tag", "tag_exists", "uncommitted"]

CANDIDATE_PREFIX = "release-candidate-"
_CANDIDATE = re.compile(rf"^{re.escape(CANDIDATE_PREFIX)}(\d+)$")


def git(repo: Path, *args: str) -> str:
    try:
        proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ReleaseError(f"git {' '.join(args)} failed: {exc}") from exc
    if proc.returncode != 0:
        raise ReleaseError(f"git {' '.join(args)} failed: {proc.stderr.strip()[:300]}")
    return proc.stdout


def code_repo() -> Path:
    """The checkout tracking the running `sonia` package (ReleaseError when none)."""
    repo = provenance.package_repo()
    if repo is None:
        raise ReleaseError(f"the running sonia ({provenance.package_dir().name} package) is not "
                           "in a git checkout: a release is made from the checkout the gates "
                           "ran from")
    return repo


def head_commit(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD").strip()


def uncommitted(repo: Path) -> list[str]:
    """`git status --porcelain` lines: changed, staged or untracked (not ignored) files."""
    return [line for line in git(repo, "status", "--porcelain").splitlines() if line.strip()]


def tag_exists(repo: Path, tag: str) -> bool:
    proc = subprocess.run(["git", "rev-parse", "-q", "--verify", f"refs/tags/{tag}"],
                          cwd=repo, capture_output=True, text=True, timeout=30)
    return proc.returncode == 0


def check_tag_name(repo: Path, tag: str) -> None:
    proc = subprocess.run(["git", "check-ref-format", f"refs/tags/{tag}"], cwd=repo,
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0 or "/" in tag:
        raise ConfigError(f"{tag!r} is not a usable tag name (letters, digits, '.', '-', '_')",
                          key="tag")


def next_candidate_tag(repo: Path, taken: Iterable[str] = ()) -> str:
    """`release-candidate-N`, N above every such tag in `repo` and every name in `taken`."""
    names = [*git(repo, "tag", "-l", f"{CANDIDATE_PREFIX}*").split(), *taken]
    numbers = [int(m.group(1)) for m in map(_CANDIDATE.match, names) if m]
    return f"{CANDIDATE_PREFIX}{max(numbers, default=0) + 1}"


def create_tag(repo: Path, tag: str, commit: str, message: str) -> None:
    """An annotated tag `tag` at `commit`; refuses an existing tag or an unknown commit."""
    check_tag_name(repo, tag)
    if tag_exists(repo, tag):
        raise ReleaseError(f"tag {tag} already exists in {repo.name}")
    git(repo, "cat-file", "-e", f"{commit}^{{commit}}")
    git(repo, "tag", "-a", tag, "-m", message, commit)
