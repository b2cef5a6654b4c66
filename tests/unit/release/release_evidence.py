"""Finished gate runs built from raw evidence, for release tests that cannot wait for gates.

Each builder writes the raw files a gate writes, in that gate's format (cycle rows,
case results, a metrics CSV, drill timings, JUnit outcomes, a history), so that
the gate's own judge re-derives the verdict from them; then `provenance.json` and
`verdict.json` exactly as `registry.run_gate` writes them. Nothing here decides a
verdict: `registry.judge` does, the same call the release step makes.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sonia.gates import catalog, registry
from sonia.gates.common import provenance
from sonia.gates.common.evidence import Check, Verdict, new_run_dir, write_json
from sonia.gates.security.corpus import corpus_dir, load_payloads
from sonia.gates.soak.load_rows import memory_field, route_field, row_columns
from sonia.gates.waivers import Waiver

ROUTES = ("chat", "actions")
SERVICES = ("gateway", "memory")

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


def _environment(origin: dict[str, Any]) -> dict[str, Any]:
    return {"python": "3.11", "git": origin["git"], "source_sha256": origin["source_sha256"]}


def _cycle(n: int | str, **bad: Any) -> dict[str, Any]:
    return {"cycle": n, "started": True, "time_to_ready_s": {"gateway": 0.5},
            "escalations": [], "leftovers_killed": [], "ports_bound": [], "zombies": [],
            "orphans": [], "wal_not_checkpointed": [], "ok": True, **bad}


def go_no_go(run_dir: Path, params: dict[str, Any], env: dict[str, Any], *,
             bad_cycle: bool = False) -> None:
    rows = [_cycle(n) for n in range(1, params["cycles"] + 1)]
    if bad_cycle:
        rows[0] = _cycle(1, zombies=[4242], ok=True)  # a row that lies "ok" over a zombie
    checks = max(1, int(round(params["health_minutes"] * 60 / params["health_interval"])))
    write_json(run_dir / "go-no-go-summary.json", {
        "gate": "go-no-go", "profile": params, "subreaper": True,
        "cycles": [*rows, _cycle("after-health")],
        "health": {"checks": checks, "passed": checks, "failures": [],
                   "interval_s": params["health_interval"], "minutes": params["health_minutes"]},
        "environment": env,
    })


def security(run_dir: Path, params: dict[str, Any], env: dict[str, Any]) -> None:
    categories = ("auth", "sandbox", "grants", "policy", "input", "config", "traversal", "inj")
    cases = [{"id": f"{c}-{i}", "category": c, "description": "", "sent": {}, "expected": {},
              "got": {}, "passed": True, "why": "", "seconds": 0.01}
             for c in categories for i in range(8)]
    payloads = load_payloads(corpus_dir(), params["corpus_stride"])
    with open(run_dir / "security-corpus.jsonl", "w", encoding="utf-8") as out:
        for p in payloads:
            out.write(json.dumps({"file": p.file, "line": p.line, "kind": "path", "status": 403,
                                  "code": "PATH_OUTSIDE_SANDBOX", "passed": True,
                                  "why": ""}) + "\n")
    write_json(run_dir / "security-tests.json", {
        "gate": "security", "profile": params, "cases": cases,
        "fuzz": {"operations": 12, "requests": 240, "server_errors": 0, "per_service": {},
                 "statuses": {}, "findings": []},
        "corpus": {"rows_file": "security-corpus.jsonl"}, "environment": env,
    })


def soak(run_dir: Path, params: dict[str, Any], env: dict[str, Any]) -> None:
    windows = params["verdict"]["warmup_windows"] + params["verdict"]["min_windows"] + 5
    columns = [*row_columns(ROUTES, SERVICES)]
    rows = []
    for i in range(windows):
        row: dict[str, Any] = dict.fromkeys(columns, 0)
        row.update({"window": i, "start_utc": "", "start_s": 60.0 * i, "end_s": 60.0 * (i + 1)})
        for route in ROUTES:
            row.update({route_field(route, "scheduled"): 500, route_field(route, "count"): 500,
                        route_field(route, "ok"): 500, route_field(route, "p95_ms"): 40.0})
        row.update({"all.count": 1000, "all.errors": 0, "lag_p99_ms": 1.0, "behind": 0})
        for service in SERVICES:
            row[memory_field(service)] = 80 * 1024 * 1024
        rows.append(row)
    with open(run_dir / "soak-metrics.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_json(run_dir / "soak-summary.json", {
        "gate": "soak", "profile": params, "windows": len(rows), "sessions": {"stuck": 0},
        "correlation_trace": {"sampled": 5, "found": 5, "missing": []}, "environment": env,
    })
    (run_dir / "soak-report.html").write_text("<html><body>soak</body></html>\n")


def _recorded(gate: str, names: list[str]) -> dict[str, Any]:
    return Verdict.of(gate, [Check(n, 0, 0, True) for n in names]).to_dict()


def durability(run_dir: Path, params: dict[str, Any], env: dict[str, Any]) -> None:
    write_json(run_dir / "restore-drill.json", {
        "gate": "durability", "profile": params, "rto_s": 12.5,
        "rpo": {"records": 0, "seconds": 0.4},
        "verdict": _recorded("durability", ["databases restored intact",
                                            "restored canaries are a prefix (no holes)"]),
        "environment": env,
    })


def determinism(run_dir: Path, params: dict[str, Any], env: dict[str, Any]) -> None:
    tests = {"tests/integration/test_a.py::test_one": "passed",
             "tests/integration/test_b.py::test_two": "passed"}
    runs = [{"run": n, "exit_code": 0, "seconds": 1.0, "counts": {"passed": 2}, "tests": tests}
            for n in range(1, params["runs"] + 1)]
    write_json(run_dir / "integration-tests.json", {
        "gate": "determinism", "seed": params["seed"], "marker": params["marker"],
        "tests": len(tests), "runs": runs, "differing": [], "not_passed": [],
        "environment": env,
    })


def chaos(run_dir: Path, params: dict[str, Any], env: dict[str, Any]) -> None:
    ops = [{"kind": "memory-write", "ok": True, "n": n} for n in range(3)]
    (run_dir / "chaos-history.jsonl").write_text("".join(json.dumps(o) + "\n" for o in ops))
    write_json(run_dir / "chaos-report.json", {
        "gate": "chaos", "profile": params, "history": {"operations": len(ops)},
        "verdict": _recorded("chaos", ["lost_acknowledged_writes", "double_executions"]),
        "environment": env,
    })


WRITERS: dict[str, Callable[..., None]] = {
    "go-no-go": go_no_go, "security": security, "soak": soak, "durability": durability,
    "determinism": determinism, "chaos": chaos,
}


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
              **raw: Any) -> Path:
    """One finished run of `gate`, its verdict re-derived by the registry's judge."""
    chosen = params if params is not None else release_parameters(gate)
    run_dir = new_run_dir(artifacts, gate)
    WRITERS[gate](run_dir, chosen, _environment(origin), **raw)
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
