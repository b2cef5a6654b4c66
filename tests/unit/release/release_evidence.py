"""Finished gate runs built from raw evidence, for release tests that cannot wait for gates.

The raw files come from the shared good-run builders (`gate_runs`, the ones the
gate owners' judge tests use), written at the parameters the run states; then
`provenance.json` and `verdict.json` exactly as `registry.run_gate` writes them.
Nothing here decides a verdict: `registry.judge` does, the same call the release
step makes.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gate_runs

from sonia.gates import catalog, registry
from sonia.gates.common import provenance
from sonia.gates.common.evidence import new_run_dir, write_json
from sonia.gates.waivers import Waiver

RELEASE_WAIVERS = (
    'go-no-go.cycles=2: test machine',
    'go-no-go.health_minutes=5s: test machine',
    'soak.duration=1m: no 48 h machine for a unit test',
)
"""What a fast release-profile run needs waived (durations and counts only)."""


def release_parameters(gate: str, **changes: Any) -> dict[str, Any]:
    chosen = registry.profile_for(gate, "release", {})
    fast = {"go-no-go": {"cycles": 2, "health_minutes": 5 / 60},
            "soak": {"duration_s": 60.0}}.get(gate, {})
    plain: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(chosen)))
    return plain | fast | changes


def zombie_claimed_ok(summary: dict[str, Any]) -> None:
    """A go-no-go row that says "ok" over a zombie its stop left behind."""
    summary["cycles"][0] = gate_runs.cycle(1, zombies=[4242], ok=True)


def _soak_rows(params: dict[str, Any]) -> list[dict[str, Any]]:
    """Enough windows for the recorded thresholds (the warm-up, the minimum, and a few),
    with memory jitter small enough that under an hour of data can show a flat trend
    at the release's 1 MiB/h."""
    verdict = params["verdict"]
    return gate_runs.synthetic_rows(windows=verdict["warmup_windows"]
                                    + verdict["min_windows"] + 5, memory_noise=64 * 1024)


def _write_raw(gate: str, run_dir: Path, params: dict[str, Any],
               change: Callable[[Any], object] | None) -> None:
    edit: dict[str, Any] = {} if change is None else {"change": change}
    if gate == "soak":
        gate_runs.soak(run_dir, params, _soak_rows(params), **edit)
    else:
        gate_runs.WRITERS[gate](run_dir, profile=params, **edit)


def _record_environment(gate: str, run_dir: Path, origin: dict[str, Any]) -> None:
    """What `capture_environment` adds to a gate's main evidence file."""
    main = run_dir / next(n for n in catalog.load(gate).EVIDENCE_FILES if n.endswith(".json"))
    data = json.loads(main.read_text(encoding="utf-8"))
    data["environment"] = {"python": "3.11", "git": origin["git"],
                           "source_sha256": origin["source_sha256"]}
    write_json(main, data)


def origin_for(commit: str | None = None, *, folder: Path | None = None,
               dirty: bool = False) -> dict[str, Any]:
    """A provenance capture of the running (or `folder`'s) code, optionally renamed to
    another checkout's commit (the temporary repository a unit test releases from)."""
    origin = provenance.capture(folder)
    if commit is not None:
        origin["git"] = {"commit": commit, "dirty": dirty, "repo": "repo"}
    return origin


def build_run(artifacts: Path, gate: str, origin: dict[str, Any], *, profile: str = "release",
              params: dict[str, Any] | None = None, waivers: tuple[Waiver, ...] = (),
              end_origin: dict[str, Any] | None = None, stated_status: str | None = None,
              change: Callable[[Any], object] | None = None) -> Path:
    """One finished run of `gate`, its verdict re-derived by the registry's judge.

    `change` edits the raw evidence before it is written (see `gate_runs`): a bad row.
    `stated_status` hand-edits the verdict.json written afterwards: a forged claim.
    """
    chosen = params if params is not None else release_parameters(gate)
    run_dir = new_run_dir(artifacts, gate)
    _write_raw(gate, run_dir, chosen, change)
    _record_environment(gate, run_dir, origin)
    write_json(run_dir / "provenance.json", {"start": origin, "end": end_origin or origin})
    verdict = registry.judge(gate, run_dir).to_dict()
    if stated_status is not None:  # a hand edit of verdict.json
        verdict["status"] = stated_status
    write_json(run_dir / "verdict.json", {
        "gate": gate, "profile": profile, "parameters": chosen,
        "waivers": [w.to_dict() for w in waivers], "seconds": 1.0, "verdict": verdict,
        "evidence": list(catalog.load(gate).EVIDENCE_FILES),
    })
    return run_dir


def build_all(artifacts: Path, origin: dict[str, Any]) -> dict[str, Path]:
    return {gate: build_run(artifacts, gate, origin) for gate in catalog.GATES}
