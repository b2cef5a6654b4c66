"""Pinned signers and what `sonia verify` refuses: shared keys, the release key as a role
key, a NO-GO manifest re-signed, an unpinned bundle key, a missing gate, a wrong tag."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sonia.cli import app
from sonia.errors import ReleaseError
from sonia.gates import catalog
from sonia.gates.common.evidence import Check, Verdict
from sonia.release.checklist import ROLES
from sonia.release.manifest import build_bundle
from sonia.release.signers import load_signers, parse_signers, render_signers
from sonia.release.signing import keygen, load_public_key, public_key_b64
from sonia.release.signoff import sign_off
from sonia.release.verify import verify_bundle

COMMIT = "c0ffee" * 6 + "c0ff"


def make_key(folder: Path, name: str) -> tuple[Path, Path]:
    return keygen(folder / f"{name}.pem")


def verdicts(status_of: dict[str, bool] | None = None) -> list[dict[str, object]]:
    status_of = status_of or {}
    return [Verdict.of(g, [Check("ok", True, status_of.get(g, True), status_of.get(g, True))]
                       ).to_dict() for g in catalog.GATES]


def bundle(tmp_path: Path, release_key: Path, name: str = "bundle", *,
           gates: list[dict[str, object]] | None = None) -> Path:
    evidence = tmp_path / "evidence.json"
    evidence.write_text("{}\n")
    return build_bundle(tmp_path / name, {"soak/soak-summary.json": evidence}, commit=COMMIT,
                        tag="release-candidate-1", verdicts=gates or verdicts(),
                        environment={}, signing_key=release_key, require_go=False)


@pytest.fixture()
def keys(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    folder = tmp_path / "keys"
    return {name: make_key(folder, name) for name in ("release", *ROLES)}


def signers_file(tmp_path: Path, keys: dict[str, tuple[Path, Path]], *,
                 with_release: bool = True) -> Path:
    path = tmp_path / "signers.toml"
    roles = {role: load_public_key(keys[role][1]) for role in ROLES}
    release = load_public_key(keys["release"][1]) if with_release else None
    path.write_text(render_signers(release, roles))
    return path


def b64(public: Path) -> str:
    return public_key_b64(load_public_key(public))


def test_the_committed_signers_file_pins_the_release_key_and_every_role() -> None:
    root = Path(__file__).resolve().parents[3]
    signers = load_signers(root / "release" / "signers.toml")  # refuses a shared key
    assert signers.release is not None and signers.missing_roles() == []


def test_the_committed_release_public_key_is_the_pinned_one() -> None:
    """`sonia verify BUNDLE --key release/release_key.pub.pem` and plain `sonia
    verify` (the signers' [release] key) must check against the same key."""
    root = Path(__file__).resolve().parents[3]
    signers = load_signers(root / "release" / "signers.toml")
    assert signers.release is not None
    assert b64(root / "release" / "release_key.pub.pem") == public_key_b64(signers.release)


def test_one_key_may_not_hold_two_roles(keys: dict[str, tuple[Path, Path]]) -> None:
    shared = b64(keys["qa"][1])
    with pytest.raises(ReleaseError, match="pinned for both engineering and qa"):
        parse_signers({"roles": {"engineering": shared, "qa": shared}})


def test_the_release_key_may_not_hold_a_role(keys: dict[str, tuple[Path, Path]]) -> None:
    release = b64(keys["release"][1])
    with pytest.raises(ReleaseError, match="never the release key"):
        parse_signers({"release": {"key": release}, "roles": {"director": release}})


def test_unknown_roles_and_tables_are_refused(keys: dict[str, tuple[Path, Path]]) -> None:
    with pytest.raises(ReleaseError, match="unknown role"):
        parse_signers({"roles": {"janitor": b64(keys["qa"][1])}})
    with pytest.raises(ReleaseError, match="unknown tables"):
        parse_signers({"people": {}})


def test_sign_offs_with_one_key_for_two_roles_fail_verification(
        tmp_path: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    out = bundle(tmp_path, keys["release"][0])
    sign_off(out, "engineering", keys["qa"][0])
    sign_off(out, "qa", keys["qa"][0])
    result = verify_bundle(out, keys["release"][1])
    assert not result.ok and "one key may hold one role only" in result.reason


def test_the_cli_refuses_one_key_for_two_roles_in_sign_offs_and_in_the_signers_file(
        tmp_path: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    out = bundle(tmp_path, keys["release"][0])
    sign_off(out, "engineering", keys["qa"][0])
    sign_off(out, "qa", keys["qa"][0])
    verify = ("verify", "--draft", "--repo", str(checkout(tmp_path)))
    code, output = cli(*verify, str(out), "--signers", str(signers_file(tmp_path, keys)))
    assert code == 1 and "signoffs/engineering.json" in output
    assert "pins" in output and "for engineering" in output  # the qa key is not engineering's
    shared = signers_file(tmp_path, {**keys, "engineering": keys["qa"]})
    code, output = cli(*verify, str(out), "--signers", str(shared))
    assert code == 1 and "pinned for both engineering and qa" in output
    code, output = cli("release", "sign-off", str(out), "--role", "engineering",
                       "--key", str(keys["qa"][0]), "--signers", str(shared))
    assert code == 1 and "pinned for both engineering and qa" in output


def test_a_sign_off_with_the_release_key_fails_verification(
        tmp_path: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    out = bundle(tmp_path, keys["release"][0])
    sign_off(out, "director", keys["release"][0])
    result = verify_bundle(out, keys["release"][1])
    assert not result.ok and result.first_bad_file == "signoffs/director.json"
    assert "never the release key" in result.reason


def test_a_sign_off_by_an_unpinned_key_fails_against_the_signers(
        tmp_path: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    out = bundle(tmp_path, keys["release"][0])
    stranger, _ = make_key(tmp_path, "stranger")
    sign_off(out, "qa", stranger)
    signers = load_signers(signers_file(tmp_path, keys))
    result = verify_bundle(out, signers=signers)
    assert not result.ok and "pins" in result.reason and result.key_pinned


def test_a_no_go_manifest_re_signed_with_the_release_key_fails(
        tmp_path: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    out = bundle(tmp_path, keys["release"][0], gates=verdicts({"soak": False}))
    result = verify_bundle(out, keys["release"][1])
    assert not result.ok and "gate soak is NO-GO" in result.reason
    code, output = cli("verify", str(out), "--draft", "--repo", str(checkout(tmp_path)),
                       "--signers", str(signers_file(tmp_path, keys)))
    assert code == 1 and "gate soak is NO-GO" in output


def test_every_gate_must_be_in_the_release(tmp_path: Path,
                                           keys: dict[str, tuple[Path, Path]]) -> None:
    out = bundle(tmp_path, keys["release"][0], gates=verdicts()[:-1])
    result = verify_bundle(out, keys["release"][1], require_gates=tuple(catalog.GATES))
    assert not result.ok and "gates missing from the release: chaos" in result.reason


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output + str(result.exception or "")


def checkout(tmp_path: Path, *, tag: str | None = None) -> Path:
    """A git checkout of one commit, with `tag` on it if given. Verifying a test bundle
    against a checkout of its own keeps it from meeting the project's real tags (this
    checkout carries `release-candidate-1`, at a commit no test bundle names)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    run = ["git", "-c", "user.email=t@example.invalid", "-c", "user.name=T"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([*run, "commit", "-q", "--allow-empty", "-m", "x"], cwd=repo, check=True)
    if tag is not None:
        subprocess.run([*run, "tag", "-a", tag, "-m", "elsewhere"], cwd=repo, check=True)
    return repo


def test_verify_refuses_an_unpinned_bundle_key_unless_told_to_trust_it(
        tmp_path: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    out = bundle(tmp_path, keys["release"][0])
    unpinned = signers_file(tmp_path, keys, with_release=False)
    verify = ("verify", "--draft", "--repo", str(checkout(tmp_path)))
    code, output = cli(*verify, str(out), "--signers", str(unpinned))
    assert code == 1 and "not pinned" in output and "--trust-bundle-key" in output
    code, output = cli(*verify, str(out), "--signers", str(unpinned), "--trust-bundle-key")
    assert code == 0 and "integrity, not origin" in output
    assert cli(*verify, str(out), "--signers", str(unpinned),
               "--key", str(keys["release"][1]))[0] == 0
    forged, _ = make_key(tmp_path, "forger")
    other = bundle(tmp_path, forged, "forged")
    code, output = cli(*verify, str(other), "--signers", str(signers_file(tmp_path, keys)))
    assert code == 1 and "MANIFEST.json.sig" in output


def test_sign_off_from_the_cli_needs_the_pinned_key_of_the_role(
        tmp_path: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    out = bundle(tmp_path, keys["release"][0])
    signers = str(signers_file(tmp_path, keys))
    code, output = cli("release", "sign-off", str(out), "--role", "qa",
                       "--key", str(keys["operations"][0]), "--signers", signers)
    assert code == 1 and "pins" in output
    assert not (out / "signoffs").exists()
    code, output = cli("release", "sign-off", str(out), "--role", "qa",
                       "--key", str(keys["qa"][0]), "--signers", signers)
    assert code == 0, output
    assert (out / "signoffs" / "qa.json").is_file()
    assert "**DRAFT**, waiting for engineering, operations" in (out / "SIGNOFFS.md").read_text()


def test_verify_checks_the_commit_the_tag_points_at(
        tmp_path: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    repo = checkout(tmp_path, tag="release-candidate-1")
    out = bundle(tmp_path, keys["release"][0])
    result = verify_bundle(out, keys["release"][1], repo=repo)
    assert not result.ok and "tag release-candidate-1 points at" in result.reason
