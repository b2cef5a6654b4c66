"""The human side of a bundle: RELEASE_CHECKLIST.md and SIGNOFFS.md, both generated.

RELEASE_CHECKLIST.md is written before the manifest and is covered by it and by
its signature: every gate's criteria with threshold, observed value and result,
the evidence files, and the roles that must sign off. It cannot hold the
signatures themselves: adding one would change a covered file and break the
bundle signature. So the sign-offs live beside it, uncovered but each one signed
over the manifest digest (`signoffs/<role>.json`), and SIGNOFFS.md is their table,
regenerated from those files on every sign-off and checked byte for byte by
`verify_bundle` (it must equal what the sign-off files say). Both documents are
pure functions of their inputs: no clock is read here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["ROLES", "render_checklist", "render_signoffs"]

ROLES: tuple[str, ...] = ("engineering", "qa", "operations", "release-manager", "director")
"""Who signs a release off, in the order they usually do."""


def _text(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, dict | list):
        text = json.dumps(value, sort_keys=True, separators=(", ", ": "), default=str)
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def render_checklist(*, commit: str, tag: str, created_at: str,
                     verdicts: Sequence[Mapping[str, Any]], environment: Mapping[str, Any],
                     files: Sequence[Mapping[str, Any]],
                     waivers: Sequence[Mapping[str, Any]] = ()) -> str:
    """The release checklist in Markdown; `files` are the evidence entries (path, sha256).

    Waivers come first, before anything else a reader might stop at.
    """
    overall = "GO" if verdicts and all(v.get("status") == "GO" for v in verdicts) else "NO-GO"
    lines = [f"# Release checklist: {tag}", ""]
    if waivers:
        lines += [
            f"## WAIVERS ({len(waivers)}): this release ran below the release profile",
            "",
            "| gate | parameter | accepted down to | reason |",
            "|---|---|---|---|",
        ]
        lines += [f"| {_text(w.get('gate'))} | {_text(w.get('parameter'))} "
                  f"| {_text(w.get('value'))} | {_text(w.get('reason'))} |" for w in waivers]
        lines += ["", "`sonia verify --strict` refuses this bundle.", ""]
    else:
        lines += ["No waivers: every gate ran at least the release profile.", ""]
    lines += [
        "DRAFT until every role below has signed off and `sonia release finalize` has",
        "made the tag; `sonia verify` says which it is.",
        "",
        f"- commit: `{commit}`",
        f"- tag: `{tag}`",
        f"- created: {created_at}",
        f"- python {environment.get('python', '?')}, sqlite {environment.get('sqlite', '?')}, "
        f"{environment.get('platform', '?')}",
        f"- overall: **{overall}**",
        "",
        "## Gates",
        "",
        "| gate | result |",
        "|---|---|",
    ]
    lines += [f"| {_text(v.get('gate'))} | {_text(v.get('status'))} |" for v in verdicts]
    for verdict in verdicts:
        lines += [
            "",
            f"### {_text(verdict.get('gate'))}: {_text(verdict.get('status'))}",
            "",
            "| criterion | threshold | observed | result |",
            "|---|---|---|---|",
        ]
        for check in verdict.get("checks", []):
            result = "pass" if check.get("passed") else "**FAIL**"
            lines.append(f"| {_text(check.get('name'))} | {_text(check.get('threshold'))} "
                         f"| {_text(check.get('observed'))} | {result} |")
    lines += ["", "## Evidence", "", "| file | size | sha256 |", "|---|---|---|"]
    lines += [f"| `{_text(f['path'])}` | {f['size']} | `{f['sha256']}` |" for f in files]
    lines += [
        "",
        "## Sign-off",
        "",
        "Each role signs with its own Ed25519 key over the SHA-256 of `MANIFEST.json`",
        "(`sonia release sign-off`); the signatures are in `signoffs/<role>.json` and",
        "listed in `SIGNOFFS.md`, outside the manifest so that signing does not change",
        "the signed bundle. `sonia verify BUNDLE` checks every one of them.",
        "",
        "| role | signature file |",
        "|---|---|",
    ]
    lines += [f"| {role} | `signoffs/{role}.json` |" for role in ROLES]
    return "\n".join(lines) + "\n"


def _status(signoffs: Mapping[str, Any]) -> str:
    waiting = [role for role in ROLES if role not in signoffs]
    if waiting:
        return f"Status: **DRAFT**, waiting for {', '.join(waiting)}."
    return "Status: every role has signed; final once `sonia release finalize` has tagged it."


def render_signoffs(manifest_sha256: str, signoffs: Mapping[str, Mapping[str, Any]],
                    fingerprints: Mapping[str, str]) -> str:
    """SIGNOFFS.md: one line per role, signed or pending, for this manifest digest."""
    lines = [
        "# Sign-offs",
        "",
        f"Each signature is over `MANIFEST.json` with sha256 `{manifest_sha256}`.",
        "Generated from `signoffs/`; do not edit.",
        "",
        _status(signoffs),
        "",
        "| role | status | key fingerprint | signed at |",
        "|---|---|---|---|",
    ]
    for role in ROLES:
        doc = signoffs.get(role)
        if doc is None:
            lines.append(f"| {role} | pending | | |")
        else:
            lines.append(f"| {role} | signed | `{fingerprints.get(role, '?')}` "
                         f"| {_text(doc.get('signed_at', ''))} |")
    return "\n".join(lines) + "\n"
