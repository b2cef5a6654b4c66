"""The gates, in the order `sonia gate all` runs them, and how one is run.

Each gate is a module with `PROFILES` (name -> frozen dataclass of numbers) and
`run(run_dir, profile, progress) -> Verdict`; quick and release profiles go
through the very same code. A run writes its evidence under
`artifacts/<run id>/` and a `verdict.json` beside it.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sonia.errors import ConfigError
from sonia.gates.evidence import Verdict, new_run_dir, write_json
from sonia.gates.progress import GateProgress

GATES: dict[str, str] = {
    "go-no-go": "sonia.gates.gonogo",
    "security": "sonia.gates.security",
    "soak": "sonia.gates.soak",
    "durability": "sonia.gates.durability",
    "determinism": "sonia.gates.determinism",
    "chaos": "sonia.gates.chaos",
}
"""Every gate, in the order `gate all` runs them."""

EVIDENCE: dict[str, tuple[str, ...]] = {
    "go-no-go": ("go-no-go-summary.json",),
    "security": ("security-tests.json",),
    "soak": ("soak-metrics.csv", "soak-summary.json", "soak-report.html"),
    "durability": ("restore-drill.json",),
    "determinism": ("integration-tests.json", "junit-run1.xml", "junit-run2.xml"),
    "chaos": ("chaos-report.json",),
}
"""The evidence files each gate must leave in its run directory."""


@dataclass
class GateRun:
    gate: str
    profile: str
    verdict: Verdict
    run_dir: Path
    seconds: float


def available() -> list[str]:
    """The gates whose module exists in this build (found without importing them)."""
    return [name for name, module in GATES.items() if importlib.util.find_spec(module)]


def profile_for(gate: str, profile: str, overrides: dict[str, Any]) -> Any:
    module = importlib.import_module(GATES[gate])
    profiles = module.PROFILES
    if profile not in profiles:
        raise ConfigError(f"unknown profile {profile!r}; use one of {', '.join(profiles)}",
                          key="profile")
    chosen = profiles[profile]
    fields = {f.name for f in dataclasses.fields(chosen)}
    applicable = {k: v for k, v in overrides.items() if v is not None and k in fields}
    return dataclasses.replace(chosen, **applicable)


def run_gate(gate: str, profile: str, artifacts: Path, overrides: dict[str, Any] | None = None,
             *, show_progress: bool = True) -> GateRun:
    if gate not in GATES:
        raise ConfigError(f"unknown gate {gate!r}; gates are {', '.join(GATES)}", key="gate")
    if gate not in available():
        raise ConfigError(f"gate {gate!r} is not part of this build", key="gate")
    chosen = profile_for(gate, profile, overrides or {})
    module = importlib.import_module(GATES[gate])
    run_dir = new_run_dir(artifacts, gate)
    start = time.monotonic()
    with GateProgress(enabled=show_progress) as progress:
        verdict: Verdict = module.run(run_dir, chosen, progress)
    seconds = time.monotonic() - start
    write_json(run_dir / "verdict.json", {
        "gate": gate, "profile": profile, "parameters": dataclasses.asdict(chosen),
        "seconds": round(seconds, 2), "verdict": verdict.to_dict(),
        "evidence": list(EVIDENCE[gate]),
    })
    return GateRun(gate, profile, verdict, run_dir, seconds)
