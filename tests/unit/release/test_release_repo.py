"""Release tags count up: `release-candidate-N`, N one above every candidate tag there is."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from sonia.errors import ReleaseError
from sonia.release.repo import create_tag, next_candidate_tag

IDENTITY = ["-c", "user.name=t", "-c", "user.email=t@example.invalid"]


def _repo(tmp_path: Path) -> tuple[Path, str]:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", *IDENTITY, "commit", "-q", "--allow-empty", "-m", "x"], cwd=repo,
                   check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True,
                          capture_output=True, text=True).stdout.strip()
    return repo, head


def test_the_first_candidate_is_1_and_each_next_one_counts_up(tmp_path: Path) -> None:
    repo, head = _repo(tmp_path)
    assert next_candidate_tag(repo) == "release-candidate-1"
    create_tag(repo, "release-candidate-1", head, "first")
    assert next_candidate_tag(repo) == "release-candidate-2"
    create_tag(repo, "release-candidate-9", head, "a gap")
    create_tag(repo, "release-candidate-x", head, "not a number")
    assert next_candidate_tag(repo) == "release-candidate-10"
    assert next_candidate_tag(repo, taken=["release-candidate-12"]) == "release-candidate-13"


def test_a_tag_is_never_moved(tmp_path: Path) -> None:
    repo, head = _repo(tmp_path)
    create_tag(repo, "release-candidate-1", head, "first")
    with pytest.raises(ReleaseError, match="already exists"):
        create_tag(repo, "release-candidate-1", head, "again")
