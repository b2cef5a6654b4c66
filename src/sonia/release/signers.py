"""The pinned signers: which Ed25519 key may sign the bundle and each role's sign-off.

Like git's allowed_signers, a committed file says who may sign, so a verifier
trusts the file in the source tree, never the keys a bundle carries. Format
(TOML; keys are the base64 of the raw 32-byte Ed25519 public key, as
`sonia release keygen` prints them):

    [release]
    key = "<base64>"             # the key that signs MANIFEST.json

    [roles]
    engineering = "<base64>"
    qa = "<base64>"
    operations = "<base64>"
    release-manager = "<base64>"
    director = "<base64>"

Rules, checked on load: every role named is a known role; one key holds one role
only (two roles signed with one key are one person's word); no role key is the
release key (the machine that signs bundles is not a person signing off).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sonia.errors import ReleaseError
from sonia.release.checklist import ROLES
from sonia.release.signing import fingerprint, public_key_b64, public_key_from_b64

__all__ = ["SIGNERS_FILE", "Signers", "load_signers", "render_signers"]

SIGNERS_FILE = Path("release") / "signers.toml"
"""Where the signers file lives in the source checkout."""


@dataclass(frozen=True)
class Signers:
    """The pinned release key (if any) and role -> key."""

    release: Ed25519PublicKey | None = None
    roles: Mapping[str, Ed25519PublicKey] = field(default_factory=dict)
    source: str = ""

    def role_key(self, role: str) -> Ed25519PublicKey | None:
        return self.roles.get(role)

    def missing_roles(self) -> list[str]:
        return [role for role in ROLES if role not in self.roles]


def _key(text: Any, where: str) -> Ed25519PublicKey:
    if not isinstance(text, str):
        raise ReleaseError(f"{where}: a key is a base64 string")
    try:
        return public_key_from_b64(text.strip())
    except ReleaseError as exc:
        raise ReleaseError(f"{where}: {exc}") from exc


def parse_signers(data: Mapping[str, Any], source: str = "signers") -> Signers:
    """Signers from parsed TOML, refusing shared keys and the release key as a role key."""
    unknown_tables = sorted(set(data) - {"release", "roles"})
    if unknown_tables:
        raise ReleaseError(f"{source}: unknown tables {unknown_tables} (use [release], [roles])")
    release_table = data.get("release", {})
    roles_table = data.get("roles", {})
    if not isinstance(release_table, Mapping) or not isinstance(roles_table, Mapping):
        raise ReleaseError(f"{source}: [release] and [roles] must be tables")
    release = _key(release_table["key"], f"{source} [release] key") \
        if "key" in release_table else None
    roles: dict[str, Ed25519PublicKey] = {}
    holder: dict[str, str] = {}
    release_print = fingerprint(release) if release is not None else None
    for role, text in roles_table.items():
        if role not in ROLES:
            raise ReleaseError(f"{source}: unknown role {role!r}; roles are {', '.join(ROLES)}")
        key = _key(text, f"{source} [roles] {role}")
        printed = fingerprint(key)
        if printed == release_print:
            raise ReleaseError(f"{source}: role {role} has the release key {printed}; a role "
                               "signs with a person's own key, never the release key")
        if printed in holder:
            raise ReleaseError(f"{source}: key {printed} is pinned for both {holder[printed]} "
                               f"and {role}; one key may hold one role only")
        holder[printed] = role
        roles[role] = key
    return Signers(release, roles, source)


def load_signers(path: Path) -> Signers:
    """Read and check a signers file (ReleaseError naming the file and the problem)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ReleaseError(f"cannot read the signers file {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ReleaseError(f"the signers file {path} is not valid TOML: {exc}") from exc
    return parse_signers(data, str(path.name))


def render_signers(release: Ed25519PublicKey | None,
                   roles: Mapping[str, Ed25519PublicKey]) -> str:
    """A signers file for these keys (what a release manager commits)."""
    lines = ["# Pinned release signers: see docs/operations.md, \"Signing a release\".", ""]
    lines += ["[release]"]
    if release is not None:
        lines.append(f'key = "{public_key_b64(release)}"')
    lines += ["", "[roles]"]
    lines += [f'{role} = "{public_key_b64(roles[role])}"' for role in ROLES if role in roles]
    return "\n".join(lines) + "\n"
