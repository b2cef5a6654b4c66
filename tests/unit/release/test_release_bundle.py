"""Release bundles: built, signed, signed off, and any changed byte is named."""

from __future__ import annotations

import json
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
import rfc8785

from sonia.errors import ReleaseError
from sonia.gates.common.evidence import Check, Verdict
from sonia.release.manifest import build_bundle
from sonia.release.signing import keygen, load_private_key, public_key_path
from sonia.release.signoff import sign_off
from sonia.release.verify import verify_bundle

COMMIT = "0123456789abcdef0123456789abcdef01234567"
ENVIRONMENT = {"python": "3.11.9", "sqlite": "3.45.1", "platform": "Linux",
               "packages": {"httpx": "0.28.1"}}


@dataclass
class Keys:
    release: Path
    release_public: Path
    people: dict[str, Path]


@pytest.fixture()
def keys(tmp_path: Path) -> Keys:
    release, release_public = keygen(tmp_path / "keys" / "release.pem")
    people = {role: keygen(tmp_path / "keys" / f"{role}.pem")[0]
              for role in ("engineering", "qa", "director")}
    return Keys(release, release_public, people)


def verdicts() -> list[dict[str, object]]:
    soak = Verdict.of("soak", [Check("error rate (all routes)", {"rate_below": 0.005},
                                     {"rate": 0.0001}, True)], {"max_error_rate": 0.005})
    gonogo = Verdict.of("go-no-go", [Check("zombies", 0, 0, True)])
    return [gonogo.to_dict(), soak.to_dict()]


def build(tmp_path: Path, keys: Keys, name: str = "bundle") -> Path:
    evidence = tmp_path / "evidence-src"
    evidence.mkdir(parents=True, exist_ok=True)
    (evidence / "summary.json").write_text('{"status": "GO"}\n')
    (evidence / "metrics.csv").write_text("window,chat.count\n0,60\n1,60\n")
    (evidence / "gng.json").write_text('{"cycles": 10}\n')
    return build_bundle(
        tmp_path / name,
        {"soak/soak-summary.json": evidence / "summary.json",
         "soak/soak-metrics.csv": evidence / "metrics.csv",
         "go-no-go-summary.json": evidence / "gng.json"},
        commit=COMMIT, tag="v0.1.0", verdicts=verdicts(), environment=ENVIRONMENT,
        signing_key=keys.release,
    )


def signed_off(tmp_path: Path, keys: Keys) -> Path:
    bundle = build(tmp_path, keys)
    sign_off(bundle, "engineering", keys.people["engineering"], signer="Eng One")
    sign_off(bundle, "qa", keys.people["qa"])
    return bundle


BUNDLE_FILES = [
    "MANIFEST.json", "MANIFEST.json.sig", "RELEASE_CHECKLIST.md", "SIGNOFFS.md",
    "go-no-go-summary.json", "signoffs/engineering.json", "signoffs/qa.json",
    "soak/soak-metrics.csv", "soak/soak-summary.json",
]


def test_a_fresh_bundle_verifies_with_the_release_key(tmp_path: Path, keys: Keys) -> None:
    bundle = signed_off(tmp_path, keys)
    result = verify_bundle(bundle, keys.release_public, require_roles=("engineering", "qa"))
    assert result.ok, result
    assert result.key_pinned and result.files_checked == 4
    assert result.roles_signed == ("engineering", "qa")
    files = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file())
    assert files == BUNDLE_FILES  # the list the tamper test walks is every file


def test_the_manifest_is_canonical_and_covers_the_checklist(tmp_path: Path, keys: Keys) -> None:
    bundle = build(tmp_path, keys)
    raw = (bundle / "MANIFEST.json").read_bytes()
    manifest = json.loads(raw)
    assert rfc8785.dumps(manifest) == raw
    assert manifest["commit"] == COMMIT and manifest["tag"] == "v0.1.0"
    assert manifest["environment"] == ENVIRONMENT
    assert [g["gate"] for g in manifest["gates"]] == ["go-no-go", "soak"]
    assert "RELEASE_CHECKLIST.md" in {f["path"] for f in manifest["files"]}
    checklist = (bundle / "RELEASE_CHECKLIST.md").read_text()
    assert "| error rate (all routes) | {\"rate_below\": 0.005} | {\"rate\": 0.0001} | pass |" \
        in checklist
    assert "| director | `signoffs/director.json` |" in checklist


@pytest.mark.parametrize("where", ["first", "middle", "last"])
@pytest.mark.parametrize("name", BUNDLE_FILES)
def test_one_changed_byte_anywhere_is_named(tmp_path: Path, keys: Keys, name: str,
                                            where: str) -> None:
    bundle = signed_off(tmp_path, keys)
    path = bundle / name
    data = bytearray(path.read_bytes())
    index = {"first": 0, "middle": len(data) // 2, "last": len(data) - 1}[where]
    data[index] ^= 0x01
    path.write_bytes(bytes(data))

    result = verify_bundle(bundle, keys.release_public)

    assert not result.ok
    assert result.first_bad_file == name, result.reason


def test_a_missing_or_extra_file_is_named(tmp_path: Path, keys: Keys) -> None:
    bundle = build(tmp_path, keys)
    (bundle / "soak" / "soak-metrics.csv").unlink()
    result = verify_bundle(bundle)
    assert (result.ok, result.first_bad_file) == (False, "soak/soak-metrics.csv")

    other = build(tmp_path, keys, "other")
    (other / "soak" / "notes.txt").write_text("slipped in later\n")
    result = verify_bundle(other)
    assert (result.first_bad_file, result.reason) == ("soak/notes.txt",
                                                      "not listed in the manifest")


def test_a_bundle_re_signed_by_another_key_fails_only_when_the_key_is_pinned(
    tmp_path: Path, keys: Keys
) -> None:
    attacker, _ = keygen(tmp_path / "attacker.pem")
    evidence = tmp_path / "forged.json"
    evidence.write_text('{"status": "GO"}\n')
    forged = build_bundle(tmp_path / "forged", {"soak/soak-summary.json": evidence},
                          commit=COMMIT, tag="v0.1.0", verdicts=verdicts(),
                          environment=ENVIRONMENT, signing_key=attacker)
    assert verify_bundle(forged).ok and not verify_bundle(forged).key_pinned
    pinned = verify_bundle(forged, keys.release_public)
    assert pinned.first_bad_file == "MANIFEST.json.sig" and "expected" in pinned.reason


def test_required_roles_must_have_signed(tmp_path: Path, keys: Keys) -> None:
    bundle = signed_off(tmp_path, keys)
    result = verify_bundle(bundle, keys.release_public, require_roles=("qa", "director"))
    assert (result.ok, result.first_bad_file) == (False, "signoffs/director.json")
    assert "has not signed off" in result.reason
    sign_off(bundle, "director", keys.people["director"], bundle_public_key=keys.release_public)
    assert verify_bundle(bundle, keys.release_public, require_roles=("qa", "director")).ok
    assert "| director | signed |" in (bundle / "SIGNOFFS.md").read_text()


def test_a_sign_off_cannot_be_moved_to_another_role_or_bundle(tmp_path: Path,
                                                               keys: Keys) -> None:
    bundle = signed_off(tmp_path, keys)
    shutil.copy(bundle / "signoffs" / "qa.json", bundle / "signoffs" / "director.json")
    result = verify_bundle(bundle, require_roles=("director",))
    assert result.first_bad_file == "signoffs/director.json"

    older = signed_off(tmp_path / "older", keys)
    newer = build(tmp_path, keys, "newer")
    (newer / "signoffs").mkdir()
    shutil.copy(older / "signoffs" / "qa.json", newer / "signoffs" / "qa.json")
    result = verify_bundle(newer)
    assert result.first_bad_file == "signoffs/qa.json" and "another manifest" in result.reason


def test_pinned_role_keys_are_enforced(tmp_path: Path, keys: Keys) -> None:
    bundle = signed_off(tmp_path, keys)
    qa_public = public_key_path(keys.people["qa"])
    assert verify_bundle(bundle, role_keys={"qa": qa_public}).ok
    wrong = public_key_path(keys.people["director"])
    result = verify_bundle(bundle, role_keys={"qa": wrong})
    assert result.first_bad_file == "signoffs/qa.json"


def test_nobody_signs_off_a_broken_bundle(tmp_path: Path, keys: Keys) -> None:
    bundle = build(tmp_path, keys)
    (bundle / "go-no-go-summary.json").write_text('{"cycles": 9}\n')
    with pytest.raises(ReleaseError, match="go-no-go-summary.json"):
        sign_off(bundle, "qa", keys.people["qa"])
    with pytest.raises(ReleaseError, match="unknown role"):
        sign_off(bundle, "intern", keys.people["qa"])


def test_a_release_needs_every_gate_to_pass(tmp_path: Path, keys: Keys) -> None:
    failing = [Verdict.of("soak", [Check("stuck sessions", 0, 2, False)]).to_dict()]
    with pytest.raises(ReleaseError, match="soak=NO-GO"):
        build_bundle(tmp_path / "b", {}, commit=COMMIT, tag="v1", verdicts=failing,
                     environment={}, signing_key=keys.release)


@pytest.mark.parametrize("name", ["../escape.json", "/abs.json", "MANIFEST.json",
                                  "signoffs/qa.json", "RELEASE_CHECKLIST.md", "a/./b.json"])
def test_evidence_cannot_take_reserved_or_escaping_names(tmp_path: Path, keys: Keys,
                                                         name: str) -> None:
    source = tmp_path / "e.json"
    source.write_text("{}\n")
    with pytest.raises(ReleaseError, match="plain path"):
        build_bundle(tmp_path / "b", {name: source}, commit=COMMIT, tag="v1",
                     verdicts=verdicts(), environment={}, signing_key=keys.release)


def test_keys_are_private_and_never_overwritten(tmp_path: Path, keys: Keys) -> None:
    assert stat.S_IMODE(keys.release.stat().st_mode) == 0o600
    assert keys.release_public.name == "release.pub.pem"
    with pytest.raises(ReleaseError, match="already exists"):
        keygen(keys.release)
    os.chmod(keys.release, 0o644)
    with pytest.raises(ReleaseError, match="chmod 600"):
        load_private_key(keys.release)
