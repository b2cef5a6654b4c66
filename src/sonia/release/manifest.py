"""Building a release bundle: evidence, checklist, manifest, signature.

Layout of a bundle:

    <evidence files>          copied in, at the bundle paths the caller names
    RELEASE_CHECKLIST.md      generated, written before the manifest: covered
    MANIFEST.json             RFC 8785 canonical JSON: files [{path, size, sha256}]
                              (every file above), commit, tag, environment, gates
                              (re-derived verdicts), waivers
    MANIFEST.json.sig         a signed statement of the manifest's sha256 (signing.py)
    SIGNOFFS.md               generated table of sign-offs            } not covered by
    signoffs/<role>.json      one signed statement per role           } the manifest

The manifest covers every file in the bundle except its own signature and the
sign-offs, which are signed separately over the manifest digest (checklist.py
says why). `verify.verify_bundle` checks all of it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sonia import __version__, files
from sonia.errors import ReleaseError
from sonia.release.checklist import render_checklist, render_signoffs
from sonia.release.signing import canonical, load_private_key, sign_statement

__all__ = [
    "CHECKLIST_NAME",
    "FORMAT",
    "MANIFEST_NAME",
    "SIGNATURE_NAME",
    "SIGNATURE_TYPE",
    "SIGNOFFS_DIR",
    "SIGNOFF_TYPE",
    "SIGNOFFS_INDEX",
    "UNCOVERED",
    "build_bundle",
    "is_safe_bundle_path",
    "read_manifest",
]

FORMAT = "sonia-release/1"
SIGNATURE_TYPE = "sonia-release-signature/1"
SIGNOFF_TYPE = "sonia-release-signoff/1"
MANIFEST_NAME = "MANIFEST.json"
SIGNATURE_NAME = "MANIFEST.json.sig"
CHECKLIST_NAME = "RELEASE_CHECKLIST.md"
SIGNOFFS_DIR = "signoffs"
SIGNOFFS_INDEX = "SIGNOFFS.md"
UNCOVERED = frozenset({MANIFEST_NAME, SIGNATURE_NAME, SIGNOFFS_INDEX})
"""Top-level files the manifest does not list (signoffs/ is uncovered as a whole)."""




def is_safe_bundle_path(path: str) -> bool:
    """A plain relative POSIX path that stays inside the bundle."""
    pure = PurePosixPath(path)
    return (
        bool(path) and not pure.is_absolute() and ".." not in pure.parts
        and "\\" not in path and "\x00" not in path and str(pure) == path
    )


def _is_reserved(path: str) -> bool:
    """Names the bundle itself writes; evidence may not take them."""
    return path in UNCOVERED or path == CHECKLIST_NAME \
        or PurePosixPath(path).parts[0] == SIGNOFFS_DIR


def _jsonable(obj: Any) -> Any:
    """Plain JSON values for canonical form: paths as strings, non-finite floats as text."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return _jsonable(to_dict())
    return str(obj)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def build_bundle(
    out_dir: Path,
    evidence_files: Mapping[str, Path],
    *,
    commit: str,
    tag: str,
    verdicts: Sequence[Mapping[str, Any]],
    environment: Mapping[str, Any],
    signing_key: Path | Ed25519PrivateKey,
    require_go: bool = True,
    created_at: dt.datetime | None = None,
    waivers: Sequence[Mapping[str, Any]] = (),
) -> Path:
    """Assemble and sign a bundle in `out_dir` (which must not exist or be empty).

    `evidence_files` maps a bundle path (e.g. "soak/soak-summary.json") to the file
    to copy. `verdicts` are `Verdict.to_dict()` results; with `require_go` (the
    default) any verdict other than GO refuses the release. `waivers` (each
    `{gate, parameter, value, reason}`) go into the manifest and at the top of the
    checklist, where a reader sees them first.
    """
    if not commit or not tag:
        raise ReleaseError("a release needs a commit and a tag")
    if not verdicts:
        raise ReleaseError("a release needs at least one gate verdict")
    if require_go:
        failed = [f"{v.get('gate')}={v.get('status')}" for v in verdicts
                  if v.get("status") != "GO"]
        if failed:
            raise ReleaseError(f"gates did not pass: {', '.join(failed)}")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ReleaseError(f"{out_dir} is not empty; a bundle is built in a fresh folder")
    for name, source in evidence_files.items():
        if not is_safe_bundle_path(name) or _is_reserved(name):
            raise ReleaseError(f"evidence name {name!r} is not a plain path inside the bundle "
                               f"(or is a name the bundle itself uses)")
        if not source.is_file():
            raise ReleaseError(f"evidence file {source} (for {name}) does not exist")
    key = signing_key if isinstance(signing_key, Ed25519PrivateKey) \
        else load_private_key(signing_key)
    moment = (created_at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).isoformat()
    gates = _jsonable([dict(v) for v in verdicts])
    env = _jsonable(dict(environment))
    waived = _jsonable([dict(w) for w in waivers])

    out_dir.mkdir(parents=True, exist_ok=True)
    for name, source in sorted(evidence_files.items()):
        target = out_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    evidence = [files.file_entry(out_dir, out_dir / name) for name in sorted(evidence_files)]
    checklist = render_checklist(commit=commit, tag=tag, created_at=moment, verdicts=gates,
                                 environment=env, files=evidence, waivers=waived)
    _write(out_dir / CHECKLIST_NAME, checklist.encode("utf-8"))

    listed = sorted([*evidence, files.file_entry(out_dir, out_dir / CHECKLIST_NAME)],
                    key=lambda e: e["path"])
    manifest = {
        "format": FORMAT,
        "created_at": moment,
        "sonia_version": __version__,
        "commit": commit,
        "tag": tag,
        "environment": env,
        "gates": gates,
        "waivers": waived,
        "files": listed,
    }
    manifest_bytes = canonical(manifest)
    _write(out_dir / MANIFEST_NAME, manifest_bytes)
    manifest_sha256 = hashlib.sha256(manifest_bytes).hexdigest()
    statement = sign_statement(key, {
        "type": SIGNATURE_TYPE,
        "algorithm": "Ed25519",
        "manifest": MANIFEST_NAME,
        "manifest_sha256": manifest_sha256,
    })
    _write(out_dir / SIGNATURE_NAME, canonical(statement))
    _write(out_dir / SIGNOFFS_INDEX, render_signoffs(manifest_sha256, {}, {}).encode("utf-8"))
    return out_dir


def read_manifest(bundle: Path) -> dict[str, Any]:
    """The parsed manifest (no checks: use verify_bundle for that)."""
    data: dict[str, Any] = json.loads((bundle / MANIFEST_NAME).read_bytes())
    return data
