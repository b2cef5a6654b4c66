"""Gathering a release's evidence: every gate re-judged, never trusted.

For each gate run the release step reads what the run *states* (`verdict.json`:
gate, profile, parameters, waivers) and re-derives the verdict with the same
judge the gate used (`registry.judge`, over the raw evidence files). It refuses,
listing every reason:

- a file missing or malformed (the judge cannot run);
- a re-derived verdict other than GO, or one that differs from the stated verdict
  (a hand-edited `verdict.json` says GO over a NO-GO summary);
- a profile other than `release`;
- parameters in `verdict.json` that differ from those the evidence files recorded
  when they were written;
- parameters below the release minimums that no waiver given to `sonia release`
  covers (`waivers.below_minimum`);
- provenance that is not the code releasing now: evidence from another commit, a
  dirty tree, or a source digest other than the running package's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sonia.errors import SoniaError
from sonia.gates import catalog, registry
from sonia.gates.waivers import Waiver, below_minimum

__all__ = ["GateEvidence", "check_provenance", "read_gate_evidence"]


@dataclass
class GateEvidence:
    """One gate's run as the release sees it: re-derived verdict, files to bundle."""

    gate: str
    run_dir: Path
    verdict: dict[str, Any]
    files: dict[str, Path]
    provenance: dict[str, Any]
    parameters: dict[str, Any]
    waivers: list[Waiver] = field(default_factory=list)


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _parameter_mismatches(gate: str, run_dir: Path, parameters: dict[str, Any]) -> list[str]:
    """Evidence files whose recorded parameters differ from those verdict.json states.

    A file records them as a whole `profile` object, or, when it has none, as
    top-level scalars named like a parameter (the determinism gate's `seed` and
    `marker`). Beside a profile object a top-level scalar is a measurement, not a
    parameter: the durability drill's `seed` is the one it drew when the profile's
    is None.
    """
    stated = _plain(parameters)
    found = []
    for name in catalog.load(gate).EVIDENCE_FILES:
        if not name.endswith(".json"):
            continue
        try:
            data = json.loads((run_dir / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # the judge has already said what is wrong with it
        if not isinstance(data, dict):
            continue
        if isinstance(data.get("profile"), dict):  # the whole profile: nothing else to hold
            if _plain(data["profile"]) != stated:  # (a drawn `seed` beside it is not a claim)
                found.append(name)
            continue
        scalars = {k: v for k, v in data.items() if k in stated
                   and isinstance(v, str | int | float | bool) and v != stated[k]}
        if scalars:
            found.append(f"{name} ({', '.join(sorted(scalars))})")
    return found


def _run_files(gate: str, run_dir: Path) -> dict[str, Path]:
    """Every top-level file of the run, so a verifier can re-judge from the bundle."""
    return {f"{gate}/{p.name}": p for p in sorted(run_dir.iterdir())
            if p.is_file() and not p.is_symlink() and not p.name.startswith(".")}


def read_gate_evidence(gate: str, run_dir: Path, waivers: Sequence[Waiver] = (),
                       ) -> tuple[GateEvidence | None, list[str]]:
    """Re-judge one gate run; (evidence, []) when it may be released, else the reasons."""
    name = run_dir.name
    try:
        stated = registry.read_stated(run_dir)
        derived = registry.judge(gate, run_dir)
        start, _ = registry.read_provenance(run_dir)
    except SoniaError as exc:
        return None, [f"gate {gate} ({name}): {exc}"]
    problems: list[str] = []
    if stated.get("gate") != gate:
        problems.append(f"gate {gate} ({name}): verdict.json is of gate {stated.get('gate')!r}")
    stated_status = (stated.get("verdict") or {}).get("status") \
        if isinstance(stated.get("verdict"), dict) else None
    if derived.status != "GO":
        failed = ", ".join(f"{c.name} (want {c.threshold}, got {c.observed})"
                           for c in derived.failures[:5])
        problems.append(f"gate {gate} ({name}): the evidence says {derived.status}: {failed}")
    if stated_status != derived.status:
        problems.append(f"gate {gate} ({name}): verdict.json says {stated_status} but the "
                        f"evidence re-judged says {derived.status}: verdict.json was not "
                        "written from this evidence")
    profile = stated.get("profile")
    if profile != "release":
        problems.append(f"gate {gate} ({name}): profile {profile!r}; a release needs runs "
                        f"with --profile release")
    parameters = stated.get("parameters")
    if not isinstance(parameters, dict):
        problems.append(f"gate {gate} ({name}): verdict.json records no parameters")
        parameters = {}
    for file in _parameter_mismatches(gate, run_dir, parameters):
        problems.append(f"gate {gate} ({name}): the parameters in verdict.json differ "
                        f"from those {file} recorded")
    used: list[Waiver] = []
    try:
        below, used = below_minimum(gate, parameters, waivers)
    except (SoniaError, TypeError) as exc:
        below = [f"{gate}: parameters cannot be checked: {exc}"]
    problems += [f"gate {gate} ({name}): {p}" for p in below]
    if problems:
        return None, problems
    return GateEvidence(gate, run_dir, derived.to_dict(), _run_files(gate, run_dir), start,
                        _plain(parameters), used), []


def check_provenance(found: GateEvidence, head: str, source_sha256: str) -> list[str]:
    """The run's code must be the code releasing now: this commit, clean, same source."""
    name = f"gate {found.gate} ({found.run_dir.name})"
    git = found.provenance.get("git")
    if not isinstance(git, dict) or not git.get("commit"):
        return [f"{name}: its provenance records no git commit (not run from a checkout)"]
    problems = []
    if git["commit"] != head:
        problems.append(f"{name}: evidence is from commit {str(git['commit'])[:12]}, HEAD is "
                        f"{head[:12]}: run the gate again on this commit")
    if git.get("dirty"):
        problems.append(f"{name}: evidence was produced on a tree with uncommitted changes")
    if found.provenance.get("source_sha256") != source_sha256:
        problems.append(f"{name}: the sonia source that ran differs from the one releasing "
                        "(source digest)")
    return problems
