"""The gates, in the order `sonia gate all` runs them, how one is run, and how its
verdict is re-derived.

Each gate is a module with `PROFILES` (name -> frozen dataclass of numbers),
`run(run_dir, profile, progress) -> Verdict` and a pure `judge(run_dir) -> Verdict`
that re-derives the verdict from the raw evidence files; quick and release
profiles go through the very same code. A run writes its evidence under
`artifacts/<run id>/`, and beside it:

    provenance.json   the code that ran, captured at the start and at the end, and the
                      storage backend its stack ran on (`--storage`; sqlite by default)
    verdict.json      gate, profile, parameters, waivers, seconds, the verdict

`judge(gate, run_dir)` here is the one judge both the gate and the release step
use: the gate module's judge over its raw evidence, plus a validity check that
the provenance did not change during the run. It never reads `verdict.json`'s
verdict, which is only what the run *stated*.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sonia.errors import ConfigError, GateError
from sonia.gates import catalog
from sonia.gates.common import provenance
from sonia.gates.common.evidence import VALIDITY, Check, Verdict, new_run_dir, write_json
from sonia.gates.common.progress import GateProgress
from sonia.gates.common.storage import STORAGES
from sonia.gates.waivers import Waiver, below_minimum

PROVENANCE = "provenance.json"
VERDICT = "verdict.json"


@dataclass
class GateRun:
    gate: str
    profile: str
    verdict: Verdict
    run_dir: Path
    seconds: float


def profile_for(gate: str, profile: str, overrides: dict[str, Any]) -> Any:
    profiles = catalog.load(gate).PROFILES
    if profile not in profiles:
        raise ConfigError(f"unknown profile {profile!r}; use one of {', '.join(profiles)}",
                          key="profile")
    chosen = profiles[profile]
    fields = {f.name for f in dataclasses.fields(chosen)}
    if overrides.get("storage") not in (None, *STORAGES):
        raise ConfigError(f"unknown storage {overrides['storage']!r}; use one of "
                          f"{', '.join(STORAGES)}", key="storage")
    if overrides.get("storage") not in (None, "sqlite") and "storage" not in fields:
        raise ConfigError(f"gate {gate} runs on SQLite only; --storage "
                          f"{overrides['storage']} applies to the gates "
                          f"{', '.join(storage_gates())}", key="storage")
    applicable = {k: v for k, v in overrides.items() if v is not None and k in fields}
    return dataclasses.replace(chosen, **applicable)


def storage_gates() -> list[str]:
    """The gates whose profile takes a `storage` backend (`--storage`)."""
    return [name for name in catalog.available()
            if any(f.name == "storage"
                   for f in dataclasses.fields(next(iter(catalog.load(name).PROFILES.values()))))]


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise GateError(f"{path.name} is missing from {path.parent.name}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise GateError(f"{path.name} in {path.parent.name} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise GateError(f"{path.name} in {path.parent.name} is not a JSON object")
    return data


def read_provenance(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(start, end) provenance of a run; GateError when missing or malformed."""
    data = _read_json(run_dir / PROVENANCE)
    start, end = data.get("start"), data.get("end")
    if not isinstance(start, dict) or not isinstance(end, dict):
        raise GateError(f"{PROVENANCE} in {run_dir.name} lacks its start or end capture")
    return start, end


def read_stated(run_dir: Path) -> dict[str, Any]:
    """What `verdict.json` states (gate, profile, parameters, waivers): a claim to check."""
    return _read_json(run_dir / VERDICT)


def judge(gate: str, run_dir: Path) -> Verdict:
    """Re-derive `gate`'s verdict from the raw evidence in `run_dir` (pure: reads only).

    The gate module's own judge, plus the validity check `provenance unchanged`.
    GateError names the file when evidence is missing or malformed.
    """
    module = catalog.load(gate)
    module_judge = getattr(module, "judge", None)
    if not callable(module_judge):
        raise GateError(f"gate {gate} has no judge: its verdict cannot be re-derived")
    for name in module.EVIDENCE_FILES:
        if not (run_dir / name).is_file():
            raise GateError(f"gate {gate}: evidence file {name} is missing from {run_dir.name}")
    try:
        derived = module_judge(run_dir)
    except (ConfigError, KeyError, TypeError, ValueError, IndexError, AttributeError, OSError,
            csv.Error, ET.ParseError) as exc:  # ConfigError: a judge's own "unreadable" error
        raise GateError(f"gate {gate}: the evidence in {run_dir.name} is malformed: "
                        f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(derived, Verdict):
        raise GateError(f"gate {gate}: its judge returned {type(derived).__name__}")
    start, end = read_provenance(run_dir)
    changed = provenance.changes(start, end)
    same = Check("provenance unchanged", "the same code from start to end",
                 "; ".join(changed) or "unchanged", not changed, VALIDITY,
                 "source digest, git commit and dirty flag, installed packages")
    return Verdict.of(gate, [*derived.checks, same], derived.thresholds)


def check_release_parameters(gate: str, profile: str, parameters: dict[str, Any],
                             waivers: Sequence[Waiver]) -> list[Waiver]:
    """At `--profile release`, refuse (ConfigError, exit 2) parameters below the release
    minimums that no waiver covers; returns the waivers that were needed."""
    if profile != "release":
        return []
    problems, used = below_minimum(gate, parameters, waivers)
    if problems:
        raise ConfigError("below the release profile: " + "; ".join(problems), key=gate)
    return used


def run_gate(gate: str, profile: str, artifacts: Path, overrides: dict[str, Any] | None = None,
             *, show_progress: bool = True, waivers: Sequence[Waiver] = ()) -> GateRun:
    if gate in catalog.GATES and gate not in catalog.available():
        raise ConfigError(f"gate {gate!r} is not part of this build", key="gate")
    module = catalog.load(gate)
    chosen = profile_for(gate, profile, overrides or {})
    parameters = dataclasses.asdict(chosen)
    used = check_release_parameters(gate, profile, parameters, waivers)
    run_dir = new_run_dir(artifacts, gate)
    start_provenance = provenance.capture()
    start = time.monotonic()
    with GateProgress(enabled=show_progress) as progress, catalog.tools_named():
        module.run(run_dir, chosen, progress)
    seconds = time.monotonic() - start
    write_json(run_dir / PROVENANCE, {"start": start_provenance, "end": provenance.capture(),
                                      "storage": parameters.get("storage", "sqlite")})
    verdict = judge(gate, run_dir)
    write_json(run_dir / VERDICT, {
        "gate": gate, "profile": profile, "parameters": parameters,
        "waivers": [w.to_dict() for w in used],
        "seconds": round(seconds, 2), "verdict": verdict.to_dict(),
        "evidence": list(catalog.load(gate).EVIDENCE_FILES),
    })
    return GateRun(gate, profile, verdict, run_dir, seconds)
