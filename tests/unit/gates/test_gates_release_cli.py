"""`sonia release`, `sonia release sign-off` and `sonia verify` from the command line.

A real git repository in a temporary folder stands in for the source checkout,
and every gate of this build gets a finished run whose evidence names that
repository's HEAD: exactly what `sonia gate` leaves behind, without running the
gates.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from sonia.cli import app
from sonia.cli.gates import release_step
from sonia.cli.release import make_release, newest_runs
from sonia.errors import ReleaseError
from sonia.gates import registry
from sonia.gates.evidence import Check, Verdict, new_run_dir, write_json
from sonia.home import Home


@dataclass
class Setup:
    repo: Path
    home: Home
    head: str


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                          check=True, timeout=30).stdout.strip()


def fake_gate_run(home: Home, gate: str, commit: str, *, status_ok: bool = True) -> Path:
    run_dir = new_run_dir(home.artifacts, gate)
    environment = {"git": {"commit": commit, "dirty": False}, "python": "3"}
    for name in registry.EVIDENCE[gate]:
        if name.endswith(".json"):
            write_json(run_dir / name, {"gate": gate, "environment": environment})
        else:
            (run_dir / name).write_text(f"{gate} evidence {name}\n")
    verdict = Verdict.of(gate, [Check("everything", "ok", "ok" if status_ok else "bad",
                                      status_ok)])
    write_json(run_dir / "verdict.json", {"gate": gate, "profile": "quick",
                                          "verdict": verdict.to_dict()})
    return run_dir


@pytest.fixture()
def setup(tmp_path: Path) -> Setup:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "release@example.invalid")
    git(repo, "config", "user.name", "Release Test")
    (repo / "README.md").write_text("sonia\n")
    git(repo, "add", "README.md")
    git(repo, "commit", "-q", "-m", "initial")
    home = Home.at(tmp_path / "home")
    home.init()
    head = git(repo, "rev-parse", "HEAD")
    for gate in registry.available():
        fake_gate_run(home, gate, head)
    return Setup(repo, home, head)


def sonia(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sonia", *args], capture_output=True,
                          text=True, timeout=120)


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output + (result.stderr or "")


def test_release_bundles_signs_and_tags_and_verify_accepts_it(setup: Setup) -> None:
    proc = sonia("release", "--home", str(setup.home.root), "--tag", "rc-1",
                 "--repo", str(setup.repo))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bundle = setup.home.artifacts / "release" / "rc-1"
    for gate in registry.available():
        for name in registry.EVIDENCE[gate]:
            assert (bundle / gate / name).is_file()
    assert (bundle / "RELEASE_CHECKLIST.md").is_file()
    pub = setup.home.secrets / "release_key.pub.pem"
    assert (setup.home.secrets / "release_key.pem").stat().st_mode & 0o077 == 0

    manifest = json.loads((bundle / "MANIFEST.json").read_text())
    assert manifest["commit"] == setup.head and manifest["tag"] == "rc-1"
    digest = hashlib.sha256((bundle / "MANIFEST.json").read_bytes()).hexdigest()
    assert git(setup.repo, "cat-file", "-t", "rc-1") == "tag", "an annotated tag"
    assert digest in git(setup.repo, "tag", "-l", "--format=%(contents)", "rc-1")

    ok = sonia("verify", str(bundle), "--key", str(pub))
    assert ok.returncode == 0, ok.stderr
    assert "verified" in ok.stdout

    again = sonia("release", "--home", str(setup.home.root), "--tag", "rc-1",
                  "--repo", str(setup.repo))
    assert again.returncode == 1
    assert "tag rc-1 already exists" in again.stderr


@pytest.fixture()
def bundle(setup: Setup) -> tuple[Path, Path]:
    out = make_release(setup.home, setup.repo, "rc-2", newest_runs(setup.home))
    return out, setup.home.secrets / "release_key.pub.pem"


def test_one_changed_byte_in_any_file_or_the_signature_fails_verify(
        bundle: tuple[Path, Path], tmp_path: Path) -> None:
    original, pub = bundle
    files = sorted(p.relative_to(original).as_posix() for p in original.rglob("*")
                   if p.is_file())
    assert "MANIFEST.json.sig" in files and "MANIFEST.json" in files
    for rel in files:
        copy = tmp_path / "tampered" / rel.replace("/", "_")
        shutil.copytree(original, copy)
        target = copy / rel
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0x01
        target.write_bytes(bytes(data))
        code, output = cli("verify", str(copy), "--key", str(pub))
        assert code == 1, f"a changed byte in {rel} was not detected"
        assert rel in output, f"verify did not name {rel}: {output}"


def test_verify_names_the_file_through_the_real_command(bundle: tuple[Path, Path]) -> None:
    out, pub = bundle
    evidence = next(p for p in sorted(out.rglob("*.json")) if p.parent != out)
    evidence.write_bytes(evidence.read_bytes() + b" ")
    proc = sonia("verify", str(out), "--key", str(pub))
    assert proc.returncode == 1
    assert evidence.relative_to(out).as_posix() in proc.stderr


def test_required_roles_fail_until_signed_off(bundle: tuple[Path, Path],
                                              tmp_path: Path) -> None:
    out, pub = bundle
    qa_key = tmp_path / "qa.pem"
    assert cli("release", "keygen", "--out", str(qa_key))[0] == 0
    code, output = cli("verify", str(out), "--key", str(pub), "--require-roles", "qa")
    assert code == 1 and "signoffs/qa.json" in output

    code, output = cli("release", "sign-off", str(out), "--role", "qa", "--key", str(qa_key),
                       "--bundle-key", str(pub))
    assert code == 0, output
    assert cli("verify", str(out), "--key", str(pub), "--require-roles", "qa")[0] == 0
    code, output = cli("verify", str(out), "--require-roles", "qa,director")
    assert code == 1 and "signoffs/director.json" in output

    signoff = out / "signoffs" / "qa.json"
    signoff.write_bytes(signoff.read_bytes().replace(b'"qa"', b'"QA"'))
    code, output = cli("verify", str(out), "--key", str(pub), "--require-roles", "qa")
    assert code == 1 and "signoffs/qa.json" in output


def test_unknown_roles_are_a_usage_error(bundle: tuple[Path, Path]) -> None:
    out, _ = bundle
    code, _ = cli("verify", str(out), "--require-roles", "janitor")
    assert code == 2


def test_release_refuses_a_dirty_tree(setup: Setup) -> None:
    (setup.repo / "stray.txt").write_text("uncommitted\n")
    with pytest.raises(ReleaseError, match="working tree is not clean"):
        make_release(setup.home, setup.repo, "rc-3", newest_runs(setup.home))


def test_release_refuses_a_missing_or_failing_gate(setup: Setup) -> None:
    runs = newest_runs(setup.home)
    first, second = registry.available()[:2]
    del runs[first]
    runs[second] = fake_gate_run(setup.home, second, setup.head, status_ok=False)
    with pytest.raises(ReleaseError) as refused:
        make_release(setup.home, setup.repo, "rc-4", runs)
    assert f"gate {first} has no run" in str(refused.value)
    assert f"gate {second} said NO-GO" in str(refused.value)
    assert not (setup.home.artifacts / "release" / "rc-4").exists()


def test_release_refuses_evidence_from_another_commit(setup: Setup) -> None:
    (setup.repo / "README.md").write_text("sonia, changed\n")
    git(setup.repo, "commit", "-q", "-am", "a later commit")
    with pytest.raises(ReleaseError, match="evidence is from commit"):
        make_release(setup.home, setup.repo, "rc-5", newest_runs(setup.home))
    assert git(setup.repo, "tag", "-l") == ""


def gate_runs(setup: Setup) -> list[registry.GateRun]:
    return [registry.GateRun(gate, "quick", Verdict.from_dict(
        json.loads((run_dir / "verdict.json").read_text())["verdict"]), run_dir, 1.0)
        for gate, run_dir in newest_runs(setup.home).items()]


def test_gate_all_releases_when_every_gate_passed_on_a_clean_tree(
        setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(setup.repo)
    release_step(setup.home, gate_runs(setup), "", passed=True)
    tag = f"rc-{setup.head[:12]}"
    assert (setup.home.artifacts / "release" / tag / "MANIFEST.json").is_file()
    assert git(setup.repo, "tag", "-l") == tag


def test_gate_all_on_a_dirty_tree_notes_the_skip_or_fails_when_a_tag_was_asked(
        setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(setup.repo)
    (setup.repo / "wip.txt").write_text("work in progress\n")
    release_step(setup.home, gate_runs(setup), "", passed=True)  # a note, no failure
    with pytest.raises(typer.Exit) as refused:
        release_step(setup.home, gate_runs(setup), "rc-9", passed=True)
    assert refused.value.exit_code == 1
    assert git(setup.repo, "tag", "-l") == ""
    assert not (setup.home.artifacts / "release").exists()
