"""Verifying a release bundle, and naming the first file that is wrong.

Order of checks (the first failure is reported, with the file it concerns):

1. `MANIFEST.json.sig` is a canonical signed statement whose signature verifies
   (with `public_key` when given: then a bundle re-signed with another key fails);
2. `MANIFEST.json` has exactly the sha256 the statement signed;
3. every file the manifest lists is present with its size and sha256, in
   manifest order;
4. no file is in the bundle that the manifest does not list (besides the
   signature, SIGNOFFS.md and signoffs/);
5. every `signoffs/<role>.json` is a canonical signed statement for a known role,
   over this manifest's sha256 (with the key from `role_keys` when given);
6. SIGNOFFS.md is exactly what the sign-off files say;
7. every role in `require_roles` has signed off;
8. every gate in the manifest is GO, and every gate in `require_gates` is there;
9. with `signers` (the pinned signers file): the bundle key is the pinned release
   key when one is pinned and no role's key; every sign-off is by its role's
   pinned key. Always: no two roles signed with one key, and no role signed with
   the bundle key;
10. with `strict`: the manifest carries no waiver;
11. with `repo` and `require_tag`: the manifest's tag exists there and points at
    the manifest's commit.

Without a pinned key (`public_key`, or the release key in `signers`) a passing
result proves the bundle is intact and self-consistent, not who made it:
`key_pinned` says which one you got. `state` is FINAL when every role has signed
and the tag points at the commit, else DRAFT.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sonia import files
from sonia.errors import ReleaseError
from sonia.release.checklist import ROLES, render_signoffs
from sonia.release.manifest import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    SIGNATURE_TYPE,
    SIGNOFF_TYPE,
    SIGNOFFS_DIR,
    SIGNOFFS_INDEX,
    UNCOVERED,
    is_safe_bundle_path,
)
from sonia.release.signers import Signers
from sonia.release.signing import (
    fingerprint,
    load_public_key,
    public_key_from_b64,
    verify_statement,
)

__all__ = ["VerifyResult", "read_signoffs", "render_signoffs_index", "tag_commit",
           "verify_bundle"]

PublicKeySource = Path | bytes | Ed25519PublicKey


@dataclass(frozen=True)
class VerifyResult:
    """`ok`, or the first file that failed and why."""

    ok: bool
    first_bad_file: str | None
    reason: str
    files_checked: int = 0
    signer: str | None = None
    key_pinned: bool = False
    roles_signed: tuple[str, ...] = ()
    state: str = "DRAFT"
    waivers: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "first_bad_file": self.first_bad_file, "reason": self.reason,
                "files_checked": self.files_checked, "signer": self.signer,
                "key_pinned": self.key_pinned, "roles_signed": list(self.roles_signed),
                "state": self.state, "waivers": list(self.waivers)}


class _Bad(Exception):
    def __init__(self, file: str, reason: str) -> None:
        super().__init__(f"{file}: {reason}")
        self.file = file
        self.reason = reason


def _bundle_files(bundle: Path) -> list[str]:
    return sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*")
                  if p.is_file() or p.is_symlink())


def read_signoffs(bundle: Path, manifest_sha256: str,
                  role_keys: Mapping[str, PublicKeySource] | None = None,
                  ) -> dict[str, dict[str, Any]]:
    """Every valid sign-off by role; raises _Bad naming the first file that is not."""
    folder = bundle / SIGNOFFS_DIR
    found: dict[str, dict[str, Any]] = {}
    if not folder.exists():
        return found
    if not folder.is_dir():
        raise _Bad(SIGNOFFS_DIR, "is not a folder")
    for path in sorted(folder.iterdir()):
        rel = f"{SIGNOFFS_DIR}/{path.name}"
        role = path.name.removesuffix(".json")
        if not path.name.endswith(".json") or role not in ROLES:
            raise _Bad(rel, f"not a sign-off: expected <role>.json for a role in {ROLES}")
        if not path.is_file() or path.is_symlink():
            raise _Bad(rel, "not a regular file")
        pinned = role_keys.get(role) if role_keys else None
        doc, why = verify_statement(path.read_bytes(),
                                    load_public_key(pinned) if pinned is not None else None)
        if doc is None:
            raise _Bad(rel, why or "invalid")
        if doc.get("type") != SIGNOFF_TYPE or doc.get("role") != role:
            raise _Bad(rel, f"not a sign-off of role {role}")
        if doc.get("manifest_sha256") != manifest_sha256:
            raise _Bad(rel, "signs another manifest (a sign-off of an earlier bundle?)")
        found[role] = doc
    return found


def render_signoffs_index(manifest_sha256: str, signoffs: Mapping[str, Mapping[str, Any]]
                          ) -> str:
    prints = {role: fingerprint(public_key_from_b64(str(doc["public_key"])))
              for role, doc in signoffs.items()}
    return render_signoffs(manifest_sha256, signoffs, prints)


def _check_signature(bundle: Path, pinned: Ed25519PublicKey | None) -> tuple[str, str]:
    """(manifest sha256, signer fingerprint) from a good signature, else _Bad."""
    sig_path = bundle / SIGNATURE_NAME
    if not sig_path.is_file():
        raise _Bad(SIGNATURE_NAME, "missing: the bundle is not signed")
    statement, why = verify_statement(sig_path.read_bytes(), pinned)
    if statement is None:
        raise _Bad(SIGNATURE_NAME, why or "invalid")
    if statement.get("type") != SIGNATURE_TYPE or statement.get("manifest") != MANIFEST_NAME:
        raise _Bad(SIGNATURE_NAME, "not a release signature statement")
    manifest_path = bundle / MANIFEST_NAME
    if not manifest_path.is_file():
        raise _Bad(MANIFEST_NAME, "missing")
    digest = hashlib.sha256(manifest_path.read_bytes()).hexdigest()
    if digest != statement.get("manifest_sha256"):
        raise _Bad(MANIFEST_NAME, "sha256 differs from the signed digest: altered after signing")
    signer = fingerprint(public_key_from_b64(str(statement["public_key"])))
    return digest, signer


def _check_files(bundle: Path, manifest: Mapping[str, Any]) -> int:
    listed: set[str] = set()
    entries = manifest.get("files")
    if not isinstance(entries, list):
        raise _Bad(MANIFEST_NAME, "has no file list")
    for entry in entries:
        rel = str(entry.get("path", ""))
        if not is_safe_bundle_path(rel):
            raise _Bad(rel or MANIFEST_NAME, "unsafe path in the manifest")
        listed.add(rel)
        path = bundle / rel
        if not path.is_file() or path.is_symlink():
            raise _Bad(rel, "missing")
        size = path.stat().st_size
        if size != entry.get("size"):
            raise _Bad(rel, f"size {size} bytes, the manifest says {entry.get('size')}")
        if files.sha256_file(path) != entry.get("sha256"):
            raise _Bad(rel, "sha256 differs from the manifest")
    for rel in _bundle_files(bundle):
        if rel in listed or rel in UNCOVERED or rel.startswith(f"{SIGNOFFS_DIR}/"):
            continue
        raise _Bad(rel, "not listed in the manifest")
    return len(listed)


def _check_gates(manifest: Mapping[str, Any], require_gates: Sequence[str]) -> None:
    gates = manifest.get("gates")
    if not isinstance(gates, list) or not all(isinstance(g, dict) for g in gates):
        raise _Bad(MANIFEST_NAME, "has no gate list")
    for entry in gates:
        if entry.get("status") != "GO":
            raise _Bad(MANIFEST_NAME, f"gate {entry.get('gate')} is {entry.get('status')}: "
                                      "a release holds only GO verdicts")
    present = {str(g.get("gate")) for g in gates}
    missing = [g for g in require_gates if g not in present]
    if missing:
        raise _Bad(MANIFEST_NAME, f"gates missing from the release: {', '.join(missing)}")


def _check_keys(signer_key: Ed25519PublicKey, signoffs: Mapping[str, Mapping[str, Any]],
                signers: Signers | None) -> None:
    bundle_print = fingerprint(signer_key)
    seen: dict[str, str] = {}
    for role, doc in sorted(signoffs.items()):
        rel = f"{SIGNOFFS_DIR}/{role}.json"
        printed = fingerprint(public_key_from_b64(str(doc["public_key"])))
        if printed == bundle_print:
            raise _Bad(rel, f"signed with the bundle's own key {printed}: a role signs with a "
                            "person's key, never the release key")
        if printed in seen:
            raise _Bad(rel, f"signed with the same key {printed} as {seen[printed]}: one key "
                            "may hold one role only")
        seen[printed] = role
        if signers is not None:
            pinned = signers.role_key(role)
            if pinned is None:
                raise _Bad(rel, f"role {role} has no pinned key in {signers.source}")
            if fingerprint(pinned) != printed:
                raise _Bad(rel, f"signed by key {printed}, {signers.source} pins "
                                f"{fingerprint(pinned)} for {role}")
    if signers is not None:
        for role, key in signers.roles.items():
            if fingerprint(key) == bundle_print:
                raise _Bad(SIGNATURE_NAME, f"the bundle is signed with {role}'s pinned key")


def tag_commit(repo: Path, tag: str) -> str | None:
    """The commit an annotated or light tag points at in `repo`, or None."""
    try:
        proc = subprocess.run(["git", "rev-parse", "-q", "--verify", f"refs/tags/{tag}^{{commit}}"],
                              cwd=repo, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def verify_bundle(bundle: Path, public_key: PublicKeySource | None = None,
                  require_roles: Iterable[str] = (),
                  role_keys: Mapping[str, PublicKeySource] | None = None, *,
                  signers: Signers | None = None, require_gates: Sequence[str] = (),
                  strict: bool = False, repo: Path | None = None,
                  require_tag: bool = False) -> VerifyResult:
    """Check a bundle completely; see the module docstring for the order of checks."""
    required = tuple(require_roles)
    unknown = [r for r in required if r not in ROLES]
    if unknown:
        raise ReleaseError(f"unknown sign-off roles {unknown}; roles are {', '.join(ROLES)}")
    if public_key is not None:
        pinned: Ed25519PublicKey | None = load_public_key(public_key)
    else:
        pinned = signers.release if signers is not None else None
    files_checked = 0
    signer: str | None = None
    signoffs: dict[str, dict[str, Any]] = {}
    waivers: tuple[str, ...] = ()
    tagged = False
    try:
        if not bundle.is_dir():
            raise _Bad(str(bundle), "no such bundle folder")
        manifest_sha256, signer = _check_signature(bundle, pinned)
        try:
            manifest = json.loads((bundle / MANIFEST_NAME).read_bytes())
        except ValueError as exc:
            raise _Bad(MANIFEST_NAME, f"not valid JSON: {exc}") from exc
        files_checked = _check_files(bundle, manifest)
        signoffs = read_signoffs(bundle, manifest_sha256, role_keys)
        index = bundle / SIGNOFFS_INDEX
        expected = render_signoffs_index(manifest_sha256, signoffs).encode("utf-8")
        if not index.is_file():
            raise _Bad(SIGNOFFS_INDEX, "missing")
        if index.read_bytes() != expected:
            raise _Bad(SIGNOFFS_INDEX, "does not match the sign-off files")
        for role in required:
            if role not in signoffs:
                raise _Bad(f"{SIGNOFFS_DIR}/{role}.json", f"role {role} has not signed off")
        _check_gates(manifest, require_gates)
        statement = json.loads((bundle / SIGNATURE_NAME).read_bytes())
        _check_keys(public_key_from_b64(str(statement["public_key"])), signoffs, signers)
        waivers = tuple(f"{w.get('gate')}.{w.get('parameter')}={w.get('value')}: "
                        f"{w.get('reason')}" for w in manifest.get("waivers") or [])
        if strict and waivers:
            raise _Bad(MANIFEST_NAME, f"carries {len(waivers)} waiver(s) ({'; '.join(waivers)})"
                                      ": --strict accepts no waiver")
        if require_tag and repo is None:
            raise _Bad(MANIFEST_NAME, "no git checkout to check the tag in (pass the "
                                      "checkout of the release)")
        if repo is not None:
            tag, commit = str(manifest.get("tag")), str(manifest.get("commit"))
            at = tag_commit(repo, tag)
            if at is not None and at != commit:
                raise _Bad(MANIFEST_NAME, f"tag {tag} points at {at[:12]}, the manifest's "
                                          f"commit is {commit[:12]}")
            tagged = at == commit
            if require_tag and not tagged:
                raise _Bad(MANIFEST_NAME, f"tag {tag} does not exist in {repo.name}: the "
                                          "release is a DRAFT until `sonia release finalize`")
    except _Bad as bad:
        return VerifyResult(False, bad.file, bad.reason, files_checked, signer,
                            pinned is not None, tuple(sorted(signoffs)), "DRAFT", waivers)
    how = "with the pinned key" if pinned is not None else \
        "with the key inside the bundle (not pinned: pass the release public key to trust it)"
    state = "FINAL" if tagged and all(r in signoffs for r in ROLES) else "DRAFT"
    return VerifyResult(True, None, f"signature valid {how}; {files_checked} files match",
                        files_checked, signer, pinned is not None, tuple(sorted(signoffs)),
                        state, waivers)
