"""Role sign-offs: a person in a role signs a verified bundle with their own key.

A sign-off is `signoffs/<role>.json`, a signed statement (signing.py)
`{type, role, manifest_sha256, signed_at, signer?, public_key, signature}`: the
role is inside the signed bytes, so a signature cannot be moved to another role,
and the manifest digest binds it to every covered file of this bundle. Sign-offs
sit outside the manifest so that adding one does not change what the release
signature covers; SIGNOFFS.md is regenerated from them each time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

from sonia import files
from sonia.errors import ReleaseError
from sonia.release.checklist import ROLES
from sonia.release.manifest import MANIFEST_NAME, SIGNOFF_TYPE, SIGNOFFS_DIR, SIGNOFFS_INDEX
from sonia.release.signing import canonical, load_private_key, sign_statement
from sonia.release.verify import (
    PublicKeySource,
    read_signoffs,
    render_signoffs_index,
    verify_bundle,
)

__all__ = ["sign_off"]




def sign_off(bundle: Path, role: str, private_key_path: Path, *,
             bundle_public_key: PublicKeySource | None = None, signer: str | None = None,
             signed_at: dt.datetime | None = None) -> Path:
    """Sign `bundle` off for `role`; return the sign-off file.

    The bundle is verified first (with `bundle_public_key` when given): nobody signs
    off a bundle that does not verify. Signing again for the same role replaces
    that role's earlier sign-off.
    """
    if role not in ROLES:
        raise ReleaseError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    result = verify_bundle(bundle, bundle_public_key)
    if not result.ok:
        raise ReleaseError(
            f"refusing to sign off: {result.first_bad_file}: {result.reason}"
        )
    key = load_private_key(private_key_path)
    manifest_sha256 = hashlib.sha256((bundle / MANIFEST_NAME).read_bytes()).hexdigest()
    statement: dict[str, object] = {
        "type": SIGNOFF_TYPE,
        "role": role,
        "manifest_sha256": manifest_sha256,
        "signed_at": (signed_at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).isoformat(),
    }
    if signer:
        statement["signer"] = signer
    folder = bundle / SIGNOFFS_DIR
    folder.mkdir(exist_ok=True)
    path = folder / f"{role}.json"
    files.write_atomic(path, canonical(sign_statement(key, statement)))
    signoffs = read_signoffs(bundle, manifest_sha256)
    files.write_atomic(bundle / SIGNOFFS_INDEX,
                  render_signoffs_index(manifest_sha256, signoffs).encode("utf-8"))
    return path
