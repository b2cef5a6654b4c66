"""Gate go-no-go: clean start/stop cycles, no leftovers, steady health.

In a fresh home: N cycles of `up` then `down`, each recording time-to-ready per
service and the stop time; after each stop, zero zombies, orphans, bound ports,
SIGKILL escalations and un-checkpointed WAL files are allowed. Then the stack
stays up and every service's /readyz is checked at a fixed interval for the
whole duration: every check must pass. Evidence: `go-no-go-summary.json`.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from sonia import SERVICES
from sonia.errors import SoniaError
from sonia.gates.evidence import Check, Verdict, capture_environment, write_json
from sonia.gates.fresh_stack import FreshStack
from sonia.gates.processes import become_subreaper, orphans, wal_left, zombies_and_reap
from sonia.gates.progress import GateProgress
from sonia.supervisor.process import RUN_MARKER_ENV


@dataclass(frozen=True)
class GoNoGoProfile:
    cycles: int
    health_minutes: float
    health_interval: float


PROFILES = {
    "quick": GoNoGoProfile(cycles=3, health_minutes=0.25, health_interval=1.0),
    "release": GoNoGoProfile(cycles=10, health_minutes=30.0, health_interval=5.0),
}


def _cycle(stack: FreshStack, number: int, marker: str) -> dict[str, Any]:
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
    row["orphans"] = orphans(marker) + report.leftovers_killed
    row["wal_not_checkpointed"] = wal_left(stack.home.data)
    row["ok"] = bool(row["started"] and not row["escalations"] and not row["ports_bound"]
                     and not row["zombies"] and not row["orphans"]
                     and not row["wal_not_checkpointed"])
    return row


def _health(stack: FreshStack, minutes: float, interval: float,
            progress: GateProgress) -> dict[str, Any]:
    total = max(1, int(round(minutes * 60 / interval)))
    failures: list[dict[str, Any]] = []
    passed = 0
    task = progress.task("health checks", total)
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
            if bad:
                failures.append({"check": i, "at_s": round(time.monotonic() - start, 2),
                                 "failed": bad})
            else:
                passed += 1
            progress.advance(task)
    return {"checks": total, "passed": passed, "failures": failures[:100],
            "interval_s": interval, "minutes": minutes}


def run(run_dir: Path, profile: GoNoGoProfile, progress: GateProgress) -> Verdict:
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
            final = _cycle(stack, profile.cycles + 1, marker) | {"cycle": "after-health"}
    finally:
        os.environ.pop(RUN_MARKER_ENV, None)
    all_rows = [*rows, final]
    verdict, totals = _verdict(profile, rows, final, health, subreaper)
    ready = [r["time_to_ready_s"].get("gateway") for r in rows if r.get("time_to_ready_s")]
    write_json(run_dir / "go-no-go-summary.json", {
        "gate": "go-no-go",
        "verdict": verdict.to_dict(),
        "profile": profile.__dict__,
        "cycles": all_rows,
        "health": health,
        "totals": totals,
        "stack_ready_s": {"max": max(ready) if ready else None,
                          "median": sorted(ready)[len(ready) // 2] if ready else None},
        "environment": capture_environment(),
        "subreaper": subreaper,
    })
    return judge(run_dir)


def _row_ok(row: dict[str, Any]) -> bool:
    """A cycle is clean when it started and left nothing behind (re-derived, not read)."""
    return bool(row.get("started") and not row["escalations"] and not row["ports_bound"]
                and not row["zombies"] and not row["orphans"]
                and not row["wal_not_checkpointed"])


def _verdict(profile: GoNoGoProfile, rows: list[dict[str, Any]], final: dict[str, Any],
             health: dict[str, Any], subreaper: bool) -> tuple[Verdict, dict[str, Any]]:
    """The verdict from the raw cycle rows and health record: shared by run and judge."""
    all_rows = [*rows, final]
    expected_checks = max(1, int(round(profile.health_minutes * 60 / profile.health_interval)))
    totals = {
        "cycles": profile.cycles,
        "cycles_ok": sum(1 for r in rows if _row_ok(r)),
        "failed_starts": sum(1 for r in all_rows if not r["started"]),
        "zombies": sum(len(r["zombies"]) for r in all_rows),
        "orphans": sum(len(r["orphans"]) for r in all_rows),
        "ports_left_bound": sum(len(r["ports_bound"]) for r in all_rows),
        "sigkill_escalations": sum(len(r["escalations"]) for r in all_rows),
        "wal_not_checkpointed": sum(len(r["wal_not_checkpointed"]) for r in all_rows),
        "health_checks": health["checks"],
        "health_passed": health["passed"],
    }
    checks = [
        Check("subreaper", True, subreaper, subreaper, kind="validity",
              detail="orphans can only be seen when the gate is their reaper"),
        Check("cycle rows recorded", f"{profile.cycles} (at least 1)", len(rows),
              len(rows) == profile.cycles >= 1, kind="validity"),
        Check("health checks recorded", expected_checks, health["checks"],
              health["checks"] == expected_checks, kind="validity"),
        Check("cycles_ok", profile.cycles, totals["cycles_ok"],
              totals["cycles_ok"] == profile.cycles),
        Check("failed_starts", 0, totals["failed_starts"], totals["failed_starts"] == 0),
        Check("zombies", 0, totals["zombies"], totals["zombies"] == 0),
        Check("orphans", 0, totals["orphans"], totals["orphans"] == 0),
        Check("ports_left_bound", 0, totals["ports_left_bound"], totals["ports_left_bound"] == 0),
        Check("sigkill_escalations", 0, totals["sigkill_escalations"],
              totals["sigkill_escalations"] == 0),
        Check("wal_not_checkpointed", 0, totals["wal_not_checkpointed"],
              totals["wal_not_checkpointed"] == 0),
        Check("health_checks_passed", f"{health['checks']}/{health['checks']}",
              f"{health['passed']}/{health['checks']}",
              health["passed"] == health["checks"] and not health["failures"]),
    ]
    verdict = Verdict.of("go-no-go", checks, {
        "cycles": profile.cycles, "health_minutes": profile.health_minutes,
        "health_interval_s": profile.health_interval,
    })
    return verdict, totals


def judge(run_dir: Path) -> Verdict:
    """Re-derive the verdict from `go-no-go-summary.json`'s cycle rows and health record."""
    summary = json.loads((run_dir / "go-no-go-summary.json").read_text(encoding="utf-8"))
    profile = GoNoGoProfile(**summary["profile"])
    rows = [r for r in summary["cycles"] if r["cycle"] != "after-health"]
    finals = [r for r in summary["cycles"] if r["cycle"] == "after-health"]
    if len(finals) != 1:
        raise ValueError("go-no-go-summary.json needs exactly one after-health cycle row")
    return _verdict(profile, rows, finals[0], summary["health"],
                    summary.get("subreaper") is True)[0]
