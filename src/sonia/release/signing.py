"""Ed25519 keys and signed statements, the only cryptography of a release bundle.

A *signed statement* is a small JSON object, serialized as RFC 8785 canonical
JSON (JCS), whose `signature` member is the base64 Ed25519 signature over the
canonical bytes of all its other members, `public_key` (base64 of the 32-byte
raw key) among them. Both the bundle signature (`MANIFEST.json.sig`, a statement
holding the manifest's sha256) and each role sign-off are statements, so they
are checked by one function. Files holding a statement must be exactly its
canonical bytes: a changed byte anywhere, even one a JSON parser would forgive,
fails verification.

Why a statement over the manifest's SHA-256 rather than a bare signature over
the manifest bytes: the signature file then says which manifest it signed, so a
verifier can tell a tampered signature file (its statement no longer verifies)
from a tampered manifest (the statement verifies, the digest differs) and name
the right file. The security is the same: SHA-256 binds the manifest bytes.

Private keys are PKCS#8 PEM files with mode 0600; public keys SubjectPublicKeyInfo
PEM files beside them (`<name>.pub.pem`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sonia.errors import ReleaseError

__all__ = [
    "canonical",
    "fingerprint",
    "keygen",
    "load_private_key",
    "load_public_key",
    "public_key_b64",
    "public_key_from_b64",
    "public_key_path",
    "sign_statement",
    "verify_statement",
]


def canonical(obj: Any) -> bytes:
    """RFC 8785 canonical JSON bytes of `obj` (ReleaseError when it has no such form)."""
    try:
        return rfc8785.dumps(obj)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise ReleaseError(f"cannot canonicalize for signing: {exc}") from exc


def public_key_path(private_path: Path) -> Path:
    """Where keygen puts the public half: `release.pem` -> `release.pub.pem`."""
    stem = private_path.name.removesuffix(".pem")
    return private_path.with_name(f"{stem}.pub.pem")


def keygen(path: Path) -> tuple[Path, Path]:
    """Make an Ed25519 key pair: private `path` (0600 PEM) and its `.pub.pem` twin.

    Refuses to overwrite an existing key: a lost release key is replaced on purpose.
    """
    public_path = public_key_path(path)
    for existing in (path, public_path):
        if existing.exists():
            raise ReleaseError(f"{existing} already exists; not overwriting a key")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, private_pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    public_path.write_bytes(public_pem)
    return path, public_path


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read a private key, refusing one that other users can read."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        data = path.read_bytes()
    except OSError as exc:
        raise ReleaseError(f"cannot read private key {path}: {exc}") from exc
    if mode & 0o077:
        raise ReleaseError(f"private key {path} has mode {mode:o}: run `chmod 600 {path}`")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ReleaseError(f"{path} is not a PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ReleaseError(f"{path} is not an Ed25519 key")
    return key


def load_public_key(source: Path | bytes | Ed25519PublicKey) -> Ed25519PublicKey:
    """A public key from a PEM file, PEM bytes, or a key object."""
    if isinstance(source, Ed25519PublicKey):
        return source
    try:
        data = source.read_bytes() if isinstance(source, Path) else source
        key = serialization.load_pem_public_key(data)
    except (OSError, ValueError) as exc:
        raise ReleaseError(f"cannot load public key {source!r:.80}: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ReleaseError("the public key is not an Ed25519 key")
    return key


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_b64(key: Ed25519PublicKey) -> str:
    return base64.b64encode(_raw(key)).decode("ascii")


def public_key_from_b64(text: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise ReleaseError(f"not a base64 Ed25519 public key: {exc}") from exc


def fingerprint(key: Ed25519PublicKey) -> str:
    """SHA-256 of the raw key, first 16 hex digits: short enough to read aloud."""
    return hashlib.sha256(_raw(key)).hexdigest()[:16]


def sign_statement(key: Ed25519PrivateKey, statement: Mapping[str, Any]) -> dict[str, Any]:
    """`statement` plus `public_key` and `signature` (over the canonical rest)."""
    if "signature" in statement:
        raise ReleaseError("a statement to sign must not already have a signature")
    body = dict(statement)
    body["public_key"] = public_key_b64(key.public_key())
    signature = key.sign(canonical(body))
    return {**body, "signature": base64.b64encode(signature).decode("ascii")}


def verify_statement(data: bytes, expected_key: Ed25519PublicKey | None = None,
                     ) -> tuple[dict[str, Any] | None, str | None]:
    """Parse and check a statement file: (statement, None) or (None, why it fails).

    The bytes must be exactly the canonical form; the signature must verify with
    the statement's own key, and that key must be `expected_key` when one is given.
    """
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"not valid JSON: {exc}"
    if not isinstance(doc, dict) or not isinstance(doc.get("signature"), str) \
            or not isinstance(doc.get("public_key"), str):
        return None, "not a signed statement (needs public_key and signature)"
    try:
        if canonical(doc) != data:
            return None, "not in canonical form (altered after signing)"
    except ReleaseError as exc:
        return None, str(exc)
    try:
        key = public_key_from_b64(doc["public_key"])
        signature = base64.b64decode(doc["signature"], validate=True)
    except (ReleaseError, binascii.Error, ValueError) as exc:
        return None, f"malformed key or signature: {exc}"
    if expected_key is not None and _raw(key) != _raw(expected_key):
        return None, (f"signed by key {fingerprint(key)}, expected {fingerprint(expected_key)}")
    body = {k: v for k, v in doc.items() if k != "signature"}
    try:
        key.verify(signature, canonical(body))
    except InvalidSignature:
        return None, "signature does not verify"
    return doc, None
