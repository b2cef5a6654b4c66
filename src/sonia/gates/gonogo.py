"""Gate go-no-go: clean start/stop cycles, no leftovers, steady health, no restarts.

In a fresh home: N cycles of `up` then `down`, each recording time-to-ready per
service and the stop time, and what is left after the stop: zombies, orphans,
bound ports, SIGKILL escalations, un-checkpointed WAL files. Then the stack
stays up and every service's /readyz is probed at a fixed interval for the
whole duration. With each probe the gate also reads the supervisor's state (pid
and restart count of every service): a service that crashed and was restarted
between two probes answers ready again, but its pid and restart count give it
away. Then one more stop, checked like the others.

`run()` records only raw rows in `go-no-go-summary.json` and returns
`judge(run_dir)`, which re-derives the verdict from those rows alone (never
from a stated verdict or total):

- INVALID: the gate was not its processes' reaper (orphans invisible), no
  start/stop cycle was measured (`--cycles 0`) or fewer than planned, fewer
  probes than planned, or a probe without the supervisor's state (a restart
  could have gone unseen);
- NO-GO: any cycle that failed to start or left a zombie, an orphan, a bound
  port, a SIGKILL escalation or a WAL file; any failed probe; any service whose
  pid or restart count at a probe differs from the start of the health phase;
- GO otherwise.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from sonia import SERVICES
from sonia.errors import GateError, SoniaError
from sonia.gates.common.evidence import (
    VALIDITY,
    Check,
    Verdict,
    capture_environment,
    read_evidence,
    write_json,
)
from sonia.gates.common.processes import become_subreaper, orphans, wal_left, zombies_and_reap
from sonia.gates.common.progress import GateProgress
from sonia.supervisor.process import RUN_MARKER_ENV
from sonia.supervisor.state import read_json, state_file
from sonia.testing import FreshStack

__all__ = ["EVIDENCE_FILES", "EVIDENCE", "PROFILES", "GoNoGoProfile", "judge", "run", "supervision"]

EVIDENCE = "go-no-go-summary.json"
EVIDENCE_FILES: tuple[str, ...] = (EVIDENCE,)
"""What a run leaves in its run directory (the registry checks for each)."""
LEFTOVERS = ("escalations", "ports_bound", "zombies", "orphans", "leftovers_killed",
             "wal_not_checkpointed")
"""The lists a cycle row records after its stop; each must be empty."""


@dataclass(frozen=True)
class GoNoGoProfile:
    cycles: int
    health_minutes: float
    health_interval: float


PROFILES = {
    "quick": GoNoGoProfile(cycles=3, health_minutes=0.25, health_interval=1.0),
    "release": GoNoGoProfile(cycles=10, health_minutes=30.0, health_interval=5.0),
}


def supervision(stack: FreshStack) -> dict[str, dict[str, Any]] | None:
    """service -> {pid, restarts} from the supervisor's state file; None when unreadable."""
    state = read_json(state_file(stack.home))
    services = state.get("services") if isinstance(state, dict) else None
    if not isinstance(services, dict):
        return None
    return {name: {"pid": (services.get(name) or {}).get("pid"),
                   "restarts": (services.get(name) or {}).get("restarts")}
            for name in SERVICES}


def _cycle(stack: FreshStack, number: int | str, marker: str) -> dict[str, Any]:
    """One start and stop, and the raw lists of what the stop left behind."""
    row: dict[str, Any] = {"cycle": number}
    start = time.monotonic()
    try:
        row["time_to_ready_s"] = {k: round(v, 3) for k, v in stack.up().items()}
        row["start_seconds"] = round(time.monotonic() - start, 3)
        row["started"] = True
    except SoniaError as exc:
        row["started"] = False
        row["error"] = str(exc)[:2000]
    report = stack.down()
    row["stop_seconds"] = round(report.seconds, 3)
    row["escalations"] = report.escalations
    row["leftovers_killed"] = report.leftovers_killed
    row["ports_bound"] = report.ports_bound
    row["zombies"] = zombies_and_reap()
    row["orphans"] = orphans(marker)
    row["wal_not_checkpointed"] = wal_left(stack.home.data)
    return row


def _health(stack: FreshStack, minutes: float, interval: float,
            progress: GateProgress) -> dict[str, Any]:
    """Probe every service's /readyz `total` times, each probe with the supervisor's view."""
    total = max(1, int(round(minutes * 60 / interval)))
    probes: list[dict[str, Any]] = []
    task = progress.task("health checks", total)
    baseline = supervision(stack)
    start = time.monotonic()
    # A fresh connection per probe, as an orchestrator's probe makes: a kept-alive one
    # idles exactly as long as the interval and races the server closing it.
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(timeout=min(interval, 2.0), limits=limits) as client:
        for i in range(total):
            due = start + i * interval
            while (delay := due - time.monotonic()) > 0:
                time.sleep(min(delay, 0.5))
            bad = {}
            for name in SERVICES:
                try:
                    r = client.get(stack.url(name) + "/readyz")
                    if r.status_code != 200:
                        bad[name] = f"status {r.status_code}"
                except httpx.HTTPError as exc:
                    bad[name] = type(exc).__name__
            probes.append({"check": i, "at_s": round(time.monotonic() - start, 2),
                           "failed": bad, "services": supervision(stack)})
            progress.advance(task)
    return {"planned": total, "interval_s": interval, "minutes": minutes,
            "baseline": baseline, "probes": probes}


def run(run_dir: Path, profile: GoNoGoProfile, progress: GateProgress) -> Verdict:
    """Run the cycles and the health phase, write the raw rows, return `judge`'s verdict."""
    subreaper = become_subreaper()
    marker = f"go-no-go-{uuid.uuid4().hex}"
    os.environ[RUN_MARKER_ENV] = marker
    rows: list[dict[str, Any]] = []
    try:
        with FreshStack(run_dir / "stack-home") as stack:
            task = progress.task("start/stop cycles", profile.cycles)
            for n in range(1, profile.cycles + 1):
                rows.append(_cycle(stack, n, marker))
                progress.advance(task)
            stack.up()
            health = _health(stack, profile.health_minutes, profile.health_interval, progress)
            rows.append(_cycle(stack, "after-health", marker))
    finally:
        os.environ.pop(RUN_MARKER_ENV, None)
    ready = [r["time_to_ready_s"].get("gateway") for r in rows if r.get("time_to_ready_s")]
    write_json(run_dir / EVIDENCE, {
        "gate": "go-no-go",
        "profile": asdict(profile),
        "subreaper": subreaper,
        "cycles": rows,
        "health": health,
        "stack_ready_s": {"max": max(ready) if ready else None,
                          "median": sorted(ready)[len(ready) // 2] if ready else None},
        "environment": capture_environment(),
    })
    return judge(run_dir)


# --- the judge -------------------------------------------------------------------------------
def _load(run_dir: Path) -> dict[str, Any]:
    data = read_evidence(run_dir, EVIDENCE)
    profile = data.get("profile")
    health = data.get("health")
    if not (isinstance(profile, dict) and isinstance(profile.get("cycles"), int)
            and isinstance(data.get("cycles"), list)
            and all(isinstance(r, dict) for r in data["cycles"])
            and isinstance(health, dict) and isinstance(health.get("planned"), int)
            and isinstance(health.get("probes"), list)
            and all(isinstance(p, dict) for p in health["probes"])):
        raise GateError(f"{EVIDENCE} lacks its raw rows: profile.cycles, cycles, "
                        "health.planned, health.probes")
    summary: dict[str, Any] = data
    return summary


def _listed(row: Mapping[str, Any], field: str) -> list[Any]:
    value = row.get(field)
    if not isinstance(value, list):
        raise GateError(f"{EVIDENCE}: cycle {row.get('cycle')!r} has no list {field!r}")
    return value


def _restarts(baseline: Mapping[str, Any] | None,
              probes: list[dict[str, Any]]) -> tuple[list[str], list[int]]:
    """(restarts seen: "service at probe i: pid a -> b, restarts m -> n", probes that had
    no supervisor state to compare)."""
    seen: list[str] = []
    unsampled: list[int] = []
    reported: set[str] = set()
    for probe in probes:
        services = probe.get("services")
        if not isinstance(baseline, Mapping) or not isinstance(services, Mapping):
            unsampled.append(int(probe.get("check", -1)))
            continue
        for name in SERVICES:
            before, now = baseline.get(name) or {}, services.get(name) or {}
            if before.get("pid") is None or before.get("restarts") is None:
                unsampled.append(int(probe.get("check", -1)))
                break
            changed = (now.get("pid"), now.get("restarts")) != (before["pid"],
                                                                before["restarts"])
            if changed and name not in reported:
                reported.add(name)
                seen.append(f"{name} at probe {probe.get('check')}: pid {before['pid']} -> "
                            f"{now.get('pid')}, restarts {before['restarts']} -> "
                            f"{now.get('restarts')}")
    return seen, unsampled


def judge(run_dir: Path) -> Verdict:
    """The verdict from `go-no-go-summary.json`'s raw rows alone (see the module doc)."""
    data = _load(run_dir)
    planned_cycles = int(data["profile"]["cycles"])
    rows: list[dict[str, Any]] = data["cycles"]
    measured = [r for r in rows if isinstance(r.get("cycle"), int)]
    left = {field: sum(len(_listed(r, field)) for r in rows) for field in LEFTOVERS}
    clean = [r for r in measured if r.get("started") is True
             and not any(_listed(r, field) for field in LEFTOVERS)]
    failed_starts = [str(r.get("cycle")) for r in rows if r.get("started") is not True]
    health = data["health"]
    probes: list[dict[str, Any]] = health["probes"]
    planned_probes = int(health["planned"])
    failed_probes = [p for p in probes if p.get("failed")]
    restarts, unsampled = _restarts(health.get("baseline"), probes)
    checks = [
        Check("subreaper", True, data.get("subreaper"), data.get("subreaper") is True,
              kind=VALIDITY, detail="orphans can only be seen when the gate is their reaper"),
        Check("cycles_measured", f"{planned_cycles}, at least 1", len(measured),
              len(measured) == planned_cycles >= 1, kind=VALIDITY,
              detail="" if planned_cycles >= 1 else "no start/stop cycle was asked for"),
        Check("health_probes", planned_probes, len(probes),
              len(probes) == planned_probes >= 1, kind=VALIDITY),
        Check("probes_with_supervisor_state", len(probes), len(probes) - len(unsampled),
              not unsampled, kind=VALIDITY,
              detail=f"no pid/restart count at probes {unsampled[:10]}" if unsampled else ""),
        Check("cycles_ok", planned_cycles, len(clean), len(clean) == len(measured)),
        Check("failed_starts", 0, len(failed_starts), not failed_starts,
              detail=", ".join(failed_starts)),
        Check("zombies", 0, left["zombies"], left["zombies"] == 0),
        Check("orphans", 0, left["orphans"] + left["leftovers_killed"],
              left["orphans"] + left["leftovers_killed"] == 0,
              detail="found after the stop, or killed by `down` as leftovers"),
        Check("ports_left_bound", 0, left["ports_bound"], left["ports_bound"] == 0),
        Check("sigkill_escalations", 0, left["escalations"], left["escalations"] == 0),
        Check("wal_not_checkpointed", 0, left["wal_not_checkpointed"],
              left["wal_not_checkpointed"] == 0),
        Check("health_checks_passed", f"{len(probes)}/{len(probes)}",
              f"{len(probes) - len(failed_probes)}/{len(probes)}", not failed_probes,
              detail="; ".join(f"probe {p.get('check')}: {p.get('failed')}"
                               for p in failed_probes[:5])),
        Check("restarts_during_health", 0, len(restarts), not restarts,
              detail="; ".join(restarts)),
    ]
    return Verdict.of("go-no-go", checks, {
        "cycles": planned_cycles, "health_minutes": health.get("minutes"),
        "health_interval_s": health.get("interval_s")})
