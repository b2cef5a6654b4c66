"""The whole release flow from the command line, on a checkout of its own.

The package and corpus are copied into a fresh git repository and every command
runs as `python -m sonia` from that copy, from an unrelated directory that is
itself a git checkout (so anything read from the cwd would show). Gate evidence is
built in the gates' own formats at the release profile with short, waived
durations (release_evidence.py) instead of hours of real gates; everything after
that is real: release, five keys, five sign-offs, finalize, verify.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from release_evidence import (
    RELEASE_WAIVERS,
    build_all,
    build_run,
    origin_for,
    zombie_claimed_ok,
)

from sonia.gates.common import provenance
from sonia.home import Home
from sonia.release.checklist import ROLES
from sonia.release.signers import render_signers
from sonia.release.signing import keygen, load_public_key

SOURCE = Path(__file__).resolve().parents[3]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=rel@example.invalid", "-c", "user.name=Rel",
                           *args], cwd=repo, capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip()


def checkout(root: Path) -> Path:
    """A committed copy of the package (and the corpus its security judge reads)."""
    root.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(provenance.package_dir(), root / "src" / "sonia", ignore=ignore)
    shutil.copytree(SOURCE / "corpus", root / "corpus", ignore=ignore)
    (root / ".gitignore").write_text("__pycache__/\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "the code that ran")
    return root


@pytest.mark.slow
def test_release_sign_off_finalize_verify(tmp_path: Path) -> None:
    repo = checkout(tmp_path / "repo")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    git(elsewhere, "init", "-q")
    git(elsewhere, "commit", "-q", "--allow-empty", "-m", "an unrelated repository")
    env = {**os.environ, "PYTHONPATH": str(repo / "src"), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("SONIA_HOME", None)

    def sonia(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sonia", *args], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=180)

    home = Home.at(tmp_path / "home")
    home.init()
    origin = origin_for(folder=repo / "src" / "sonia")
    assert origin["git"]["commit"] == git(repo, "rev-parse", "HEAD")
    build_all(home.artifacts, origin)
    waive = [arg for w in RELEASE_WAIVERS for arg in ("--waive", w)]

    forged_go = build_run(tmp_path / "forged", "go-no-go", origin, change=zombie_claimed_ok,
                          stated_status="GO")
    forged = sonia("release", "--home", str(home.root), "--run", str(forged_go), *waive)
    assert forged.returncode == 1
    assert "verdict.json says GO but the evidence re-judged says NO-GO" in forged.stderr
    quick = build_run(tmp_path / "forged", "soak", origin, profile="quick")
    refused_quick = sonia("release", "--home", str(home.root), "--run", str(quick), *waive)
    assert refused_quick.returncode == 1 and "profile 'quick'" in refused_quick.stderr
    assert not (home.artifacts / "release").exists()

    unwaived = sonia("release", "--home", str(home.root))
    assert unwaived.returncode == 1, unwaived.stderr
    assert "below the release minimum" in unwaived.stderr
    made = sonia("release", "--home", str(home.root), *waive)
    assert made.returncode == 0, made.stdout + made.stderr
    assert "DRAFT" in made.stdout
    bundle = home.artifacts / "release" / "release-candidate-1"
    assert (bundle / "MANIFEST.json").is_file()
    assert git(repo, "tag", "-l") == "" and git(elsewhere, "tag", "-l") == ""

    made_key = sonia("release", "keygen", "--home", str(home.root), "--role", "engineering")
    assert made_key.returncode == 0 and 'engineering = "' in made_key.stdout
    assert "under [roles]:" in made_key.stdout  # the table to pin it in, not eaten as markup
    private = {"engineering": home.secrets / "signoff-engineering.pem"}
    for role in ROLES[1:]:
        private[role] = keygen(tmp_path / "people" / f"{role}.pem")[0]
    signers = tmp_path / "signers.toml"
    release_public = load_public_key(home.secrets / "release_key.pub.pem")
    signers.write_text(render_signers(release_public, {
        role: load_public_key(path.with_name(path.name.replace(".pem", ".pub.pem")))
        for role, path in private.items()}))

    draft = sonia("verify", str(bundle), "--draft", "--signers", str(signers))
    assert draft.returncode == 0 and "DRAFT" in draft.stdout, draft.stderr
    early = sonia("release", "finalize", str(bundle), "--signers", str(signers))
    assert early.returncode == 1 and "has not signed off" in early.stderr
    for role, key in private.items():
        signed = sonia("release", "sign-off", str(bundle), "--role", role, "--key", str(key),
                       "--signers", str(signers))
        assert signed.returncode == 0, signed.stderr

    final = sonia("release", "finalize", str(bundle), "--signers", str(signers))
    assert final.returncode == 0, final.stdout + final.stderr
    assert git(repo, "tag", "-l") == "release-candidate-1"
    assert git(repo, "rev-parse", "release-candidate-1^{commit}") == origin["git"]["commit"]
    assert git(elsewhere, "tag", "-l") == ""

    strict = sonia("verify", str(bundle), "--strict", "--signers", str(signers))
    assert strict.returncode == 1 and "waiver" in strict.stderr
    verified = sonia("verify", str(bundle), "--signers", str(signers))
    assert verified.returncode == 0, verified.stderr
    assert "FINAL" in verified.stdout and "go-no-go.cycles" in verified.stdout
